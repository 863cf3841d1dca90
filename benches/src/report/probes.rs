//! The isolation probes' answers: the workload's `probe` lines parsed, and
//! compared with the host's own view into the facts of the isolation table.
//!
//! The probes only read (see the workload program); the one probe that
//! acts, crashing the guest kernel, is run by [`super::measure`] inside a
//! microVM only, and the program itself refuses it on the host's kernel.

use std::collections::{BTreeMap, BTreeSet};

use super::marks::{self, TimedLine, WorkloadLine};
use super::model::{Backend, IsolationFacts};

/// What one `probe` run printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeOutput {
    /// Single-valued keys.
    pub values: BTreeMap<String, String>,
    /// `mount` lines: `source point type`.
    pub mounts: Vec<String>,
    /// `dev` lines: names in /dev.
    pub devs: Vec<String>,
    /// `netdev` lines: network interfaces.
    pub netdevs: Vec<String>,
}

impl ProbeOutput {
    /// A single value, or `-`.
    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map_or("-", String::as_str)
    }
}

/// Collects the `probe` lines of a run's output.
pub fn parse(lines: &[TimedLine]) -> ProbeOutput {
    let mut out = ProbeOutput::default();
    for l in lines {
        if let Some(WorkloadLine::Probe(k, v)) = marks::workload_line(&l.text) {
            match k {
                "mount" => out.mounts.push(v.to_string()),
                "dev" => out.devs.push(v.to_string()),
                "netdev" => out.netdevs.push(v.to_string()),
                _ => {
                    out.values.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    out
}

/// The host's view at probe time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostView {
    /// Process count.
    pub processes: usize,
    /// Mounts as `source point type`.
    pub mounts: Vec<String>,
    /// Names in /dev.
    pub devs: Vec<String>,
    /// Block devices (from /sys/block).
    pub block_devices: Vec<String>,
    /// Boot id.
    pub boot_id: String,
}

/// The facts of the isolation table for one backend's probe.
pub fn facts(backend: Backend, p: &ProbeOutput, host: &HostView) -> IsolationFacts {
    let host_mounts: BTreeSet<&str> = host.mounts.iter().map(String::as_str).collect();
    // A mount counts as the host's when the same source is mounted at the
    // same point with the same type; pseudo file systems every namespace
    // has (proc on /proc, ...) are the workload's own instance and count
    // only where nothing separates the workload from the host (the bare
    // process sees the very same list).
    let identical_list = {
        let mut a = p.mounts.clone();
        let mut b = host.mounts.clone();
        a.sort();
        b.sort();
        a == b
    };
    // Another kernel (another boot id) has its own devices and mounts: the
    // same names there (`/dev/vda` on `/`) are the guest's, not the host's.
    let same_kernel = !host.boot_id.is_empty() && p.get("boot_id") == host.boot_id;
    let host_mounts_seen = if !same_kernel {
        0
    } else if identical_list {
        p.mounts.len()
    } else {
        p.mounts
            .iter()
            .filter(|m| host_mounts.contains(m.as_str()) && !is_pseudo(m))
            .count()
    };
    let num = |k: &str| p.get(k).parse::<usize>().unwrap_or(0);
    IsolationFacts {
        backend,
        kernel_release: p.get("kernel_release").to_string(),
        same_kernel_as_host: same_kernel,
        pid1_comm: p.get("pid1_comm").to_string(),
        own_pid: p.get("own_pid").to_string(),
        processes_seen: num("pid_count"),
        host_processes: host.processes,
        mounts_seen: p.mounts.len(),
        host_mounts_seen,
        host_mounts: host.mounts.len(),
        dev_entries: p.devs.len(),
        host_dev_entries: host.devs.len(),
        host_block_devices_seen: host
            .block_devices
            .iter()
            .filter(|b| same_kernel && p.devs.contains(b))
            .cloned()
            .collect(),
        host_block_devices: host.block_devices.len(),
        hostname: p.get("hostname").to_string(),
        mem_total_kib: p.get("mem_total_kib").parse().unwrap_or(0),
        cpus: p.get("cpus").to_string(),
        cap_eff: p.get("cap_eff").to_string(),
        cgroup_memory_limit: p.get("cgroup_memory_limit").to_string(),
        netdevs: p.netdevs.clone(),
        sysrq_exists: p.get("sysrq_exists") == "yes",
        sysrq_mount: p.get("sysrq_mount").to_string(),
        sysrq_access: p.get("sysrq_access").to_string(),
        proc_sys_mount: p.get("proc_sys_mount").to_string(),
        memory_limit: None,
        crash: None,
    }
}

/// Whether a `source point type` mount is a per-namespace pseudo file
/// system whose equality of names says nothing about sharing.
fn is_pseudo(m: &str) -> bool {
    let fstype = m.rsplit(' ').next().unwrap_or("");
    matches!(
        fstype,
        "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2" | "devtmpfs"
    )
}

/// Whether a mount's flags (`point flags` from the probe) say read-only.
pub fn mount_is_readonly(mount: &str) -> bool {
    mount
        .split_whitespace()
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == "ro"))
}

/// A cgroup memory limit in bytes as people read it ("32 MiB", "none").
pub fn limit_text(limit: &str) -> String {
    match limit.parse::<u64>() {
        // cgroup v1's "unlimited" is the largest page-aligned i64.
        Ok(n) if n >= (1 << 60) => "none".into(),
        Ok(n) => format!("{} MiB", n >> 20),
        Err(_) if limit == "max" => "none".into(),
        Err(_) => "not visible".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> Vec<TimedLine> {
        text.lines().map(|l| TimedLine::new(0.0, l)).collect()
    }

    const RUNC: &str = "\
runm-bench: start mode=probe
runm-bench: probe kernel_release 6.18.44-host
runm-bench: probe pid1_comm runm-bench-work
runm-bench: probe own_pid 1
runm-bench: probe pid_count 1
runm-bench: probe hostname runm-bench
runm-bench: probe boot_id 4b87ca3f
runm-bench: probe mem_total_kib 24684084
runm-bench: probe cpus 2
runm-bench: probe cap_eff 00000000a80425fb
runm-bench: probe cgroup_memory_limit 9223372036854771712
runm-bench: probe mount /dev/vda / ext4
runm-bench: probe mount proc /proc proc
runm-bench: probe mount tmpfs /dev tmpfs
runm-bench: probe dev null
runm-bench: probe dev zero
runm-bench: probe netdev lo
runm-bench: probe sysrq_exists yes
runm-bench: probe sysrq_mount /proc/sysrq-trigger ro,relatime
runm-bench: probe proc_sys_mount /proc/sys ro,relatime
runm-bench: probe sysrq_access EROFS (read-only mount)
runm-bench: end
";

    fn host() -> HostView {
        HostView {
            processes: 80,
            mounts: vec![
                "/dev/vda / ext4".into(),
                "proc /proc proc".into(),
                "tmpfs /dev tmpfs".into(),
                "tmpfs /run tmpfs".into(),
            ],
            devs: vec!["null".into(), "vda".into(), "zero".into(), "kvm".into()],
            block_devices: vec!["vda".into()],
            boot_id: "4b87ca3f".into(),
        }
    }

    #[test]
    fn probe_lines_parse() {
        let p = parse(&out(RUNC));
        assert_eq!(p.get("kernel_release"), "6.18.44-host");
        assert_eq!(p.get("nothing"), "-");
        assert_eq!(p.mounts.len(), 3);
        assert_eq!(p.devs, vec!["null", "zero"]);
        assert_eq!(p.netdevs, vec!["lo"]);
        assert_eq!(p.get("sysrq_access"), "EROFS (read-only mount)");
    }

    #[test]
    fn container_facts_against_the_host() {
        let f = facts(Backend::Runc, &parse(&out(RUNC)), &host());
        assert!(f.same_kernel_as_host);
        assert_eq!((f.processes_seen, f.host_processes), (1, 80));
        // The root file system shares the host's disk device: one real mount.
        assert_eq!(
            (f.mounts_seen, f.host_mounts_seen, f.host_mounts),
            (3, 1, 4)
        );
        assert_eq!((f.dev_entries, f.host_dev_entries), (2, 4));
        assert!(f.host_block_devices_seen.is_empty());
        assert!(f.sysrq_exists);
        assert!(mount_is_readonly(&f.sysrq_mount));
        assert!(mount_is_readonly(&f.proc_sys_mount));
        assert_eq!(limit_text(&f.cgroup_memory_limit), "none");
    }

    #[test]
    fn a_bare_process_sees_the_host_itself() {
        let h = host();
        let mut text = String::from("runm-bench: probe boot_id 4b87ca3f\n");
        for m in &h.mounts {
            text.push_str(&format!("runm-bench: probe mount {m}\n"));
        }
        for d in &h.devs {
            text.push_str(&format!("runm-bench: probe dev {d}\n"));
        }
        let f = facts(Backend::Bare, &parse(&out(&text)), &h);
        assert_eq!(f.host_mounts_seen, 4, "every host mount, pseudo ones too");
        assert_eq!(f.host_block_devices_seen, vec!["vda".to_string()]);
    }

    #[test]
    fn a_vm_shares_nothing() {
        let text = "runm-bench: probe boot_id other\nrunm-bench: probe mount /dev/vda / ext4\n\
                    runm-bench: probe dev vda\nrunm-bench: probe sysrq_access writable\n";
        let f = facts(Backend::RunmQemu, &parse(&out(text)), &host());
        assert!(!f.same_kernel_as_host);
        // Same names, but the guest kernel's own disk and mount.
        assert_eq!(f.host_mounts_seen, 0);
        assert!(f.host_block_devices_seen.is_empty());
        assert_eq!(f.dev_entries, 1);
        assert!(!mount_is_readonly("/proc rw,relatime"));
        assert_eq!(f.sysrq_access, "writable");
    }

    #[test]
    fn memory_limits_read_for_people() {
        assert_eq!(limit_text("33554432"), "32 MiB");
        assert_eq!(limit_text("max"), "none");
        assert_eq!(limit_text("-"), "not visible");
    }
}
