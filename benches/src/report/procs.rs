//! Host processes as procfs shows them: process trees (an instance is the
//! command the harness started plus everything it started, including a
//! runtime's daemonized sandbox found through `state`), their PSS, the guest
//! RAM a VMM touched, killing by pid, and the host's own view (process
//! count, mounts, /dev, block devices) that the isolation probes are
//! compared with.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use crate::procfs;

/// The parent pid from the text of `/proc/PID/stat`. The command name in
/// parentheses may hold spaces and parentheses itself, so the fields are
/// read after its last `)`.
pub fn stat_ppid(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after the name: state, ppid, ...
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every process's parent: pid -> ppid.
pub fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(stat_ppid)
        {
            out.insert(pid, ppid);
        }
    }
    out
}

/// `roots` and all their descendants in the `parents` map (roots that no
/// longer exist are left out).
pub fn tree_of(parents: &HashMap<i32, i32>, roots: &[i32]) -> BTreeSet<i32> {
    let mut set: BTreeSet<i32> = roots
        .iter()
        .copied()
        .filter(|p| parents.contains_key(p))
        .collect();
    loop {
        let before = set.len();
        for (&pid, ppid) in parents {
            if set.contains(ppid) {
                set.insert(pid);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// The live process tree under `roots`.
pub fn descendants(roots: &[i32]) -> BTreeSet<i32> {
    tree_of(&parents(), roots)
}

/// A process's `comm`.
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `pid` is a VM process (QEMU or runm-vmm).
pub fn is_vmm(pid: i32) -> bool {
    let c = comm(pid);
    c.starts_with("qemu-system") || c == "runm-vmm"
}

/// PSS of a process in KiB (smaps_rollup), `None` if it is gone.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    procfs::kb_field(&text, "Pss")
}

/// Guest RAM a VMM process has touched, KiB: the RSS of its anonymous
/// mapping of the guest's size.
pub fn guest_touched_kib(pid: i32, mem_mib: u64) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let maps = procfs::parse_smaps(&text);
    procfs::guest_mapping(&maps, mem_mib * 1024).map(|m| m.rss_kb)
}

/// Memory of a set of processes: (summed PSS, summed guest RAM touched by
/// the VMMs among them), KiB.
pub fn memory_of(pids: &BTreeSet<i32>, vm_mem_mib: u64) -> (u64, u64) {
    let pss = pids.iter().filter_map(|&p| pss_kib(p)).sum();
    let guest = pids
        .iter()
        .filter(|&&p| is_vmm(p))
        .filter_map(|&p| guest_touched_kib(p, vm_mem_mib))
        .sum();
    (pss, guest)
}

/// Sends `signal` to `pid` (one process, by its id). Errors (it is gone)
/// are ignored: callers kill what may already have exited.
pub fn kill(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a specific positive pid (never 0, -1 or 1,
        // which would reach groups or every process) and a signal number.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st != "Z"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// How many processes the host has.
pub fn host_process_count() -> usize {
    parents().len()
}

/// The host's mounts as `source point type` (the probe's format).
pub fn host_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| format!("{} {} {}", f[0], f[1], f[2]))
        })
        .collect()
}

/// The names in the host's /dev.
pub fn host_dev_names() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The host's block devices (names in /sys/block), e.g. `vda`.
pub fn host_block_devices() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The host's boot id and uptime in seconds.
pub fn host_boot() -> (String, f64) {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let up = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (id, up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        assert_eq!(stat_ppid("42 (sleep) S 7 42 7 0 -1"), Some(7));
        assert_eq!(stat_ppid("43 (a) b (c) R 12 43 0"), Some(12));
        assert_eq!(stat_ppid("garbage"), None);
    }

    #[test]
    fn trees_hold_roots_and_descendants_only() {
        let parents: HashMap<i32, i32> = [(10, 1), (11, 10), (12, 11), (13, 1), (20, 13), (21, 20)]
            .into_iter()
            .collect();
        let t = tree_of(&parents, &[10]);
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![10, 11, 12]);
        let t = tree_of(&parents, &[11, 20, 99]);
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![11, 12, 20, 21]);
    }

    #[test]
    fn our_own_process_is_seen() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(alive(me));
        assert!(pss_kib(me).unwrap_or(0) > 0);
        assert!(descendants(&[me]).contains(&me));
        assert!(!is_vmm(me));
        assert!(host_process_count() >= 1);
    }
}
