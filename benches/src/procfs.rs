//! Reading a process's memory from procfs: `status` (VmRSS, VmHWM),
//! `smaps_rollup` (RSS and PSS by kind) and `smaps` (one mapping: the guest's
//! RAM, so the VMM's own memory is the rest).

/// The value in kB of the first `Key:` line of `text`.
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// Whether it is anonymous (inode 0, no path or a bracketed name).
    pub anonymous: bool,
    /// `Size:` in kB.
    pub size_kb: u64,
    /// `Rss:` in kB.
    pub rss_kb: u64,
}

/// Parses `/proc/PID/smaps` into its mappings.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, _end)) = first.split_once('-') {
            // A header: "start-end perms offset dev inode [path]".
            if let Ok(start) = u64::from_str_radix(start, 16) {
                let fields: Vec<&str> = words.collect();
                let inode = fields.get(3).copied().unwrap_or("0");
                let path = fields.get(4).copied().unwrap_or("");
                out.push(Mapping {
                    start,
                    anonymous: inode == "0" && (path.is_empty() || path.starts_with('[')),
                    size_kb: 0,
                    rss_kb: 0,
                });
                continue;
            }
        }
        if let Some(m) = out.last_mut() {
            if let Some(v) = kb_field(line, "Size") {
                m.size_kb = v;
            } else if let Some(v) = kb_field(line, "Rss") {
                m.rss_kb = v;
            }
        }
    }
    out
}

/// The guest RAM mapping: the anonymous mapping of exactly `guest_kb`, or
/// failing that the largest anonymous mapping at least that large.
pub fn guest_mapping(maps: &[Mapping], guest_kb: u64) -> Option<&Mapping> {
    maps.iter()
        .find(|m| m.anonymous && m.size_kb == guest_kb)
        .or_else(|| {
            maps.iter()
                .filter(|m| m.anonymous && m.size_kb >= guest_kb)
                .max_by_key(|m| m.size_kb)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0c00000 r-xp 00000000 08:01 1234   /usr/bin/runm-vmm
Size:               2048 kB
Rss:                1500 kB
Pss:                1500 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
KernelPageSize:        4 kB
Rss:               20480 kB
Pss:               20480 kB
7f0008000000-7f0008800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                  16 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
Size:                132 kB
Rss:                  24 kB
";

    #[test]
    fn status_fields_are_read_in_kb() {
        let status = "Name:\trunm-vmm\nVmHWM:\t   30000 kB\nVmRSS:\t   29500 kB\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(29500));
        assert_eq!(kb_field(status, "VmHWM"), Some(30000));
        assert_eq!(kb_field(status, "VmSwap"), None);
        assert_eq!(kb_field("Rss: x kB", "Rss"), None);
    }

    #[test]
    fn prefix_keys_do_not_match_longer_ones() {
        let rollup = "Pss_Anon:   100 kB\nPss:   300 kB\n";
        assert_eq!(kb_field(rollup, "Pss"), Some(300));
        assert_eq!(kb_field(rollup, "Pss_Anon"), Some(100));
    }

    #[test]
    fn smaps_mappings_with_sizes_and_kinds() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 4);
        assert!(!maps[0].anonymous, "the binary is file-backed");
        assert_eq!((maps[1].size_kb, maps[1].rss_kb), (131072, 20480));
        assert!(maps[1].anonymous);
        assert!(maps[3].anonymous, "[stack] counts as anonymous");
    }

    #[test]
    fn guest_ram_is_the_mapping_of_its_size() {
        let maps = parse_smaps(SMAPS);
        let g = guest_mapping(&maps, 128 * 1024).unwrap();
        assert_eq!(g.start, 0x7f00_0000_0000);
        assert_eq!(g.rss_kb, 20480);
        // No exact match: the largest anonymous mapping that can hold it.
        let g = guest_mapping(&maps, 100 * 1024).unwrap();
        assert_eq!(g.size_kb, 131072);
        assert!(guest_mapping(&maps, 256 * 1024).is_none());
    }
}
