//! `runm spec [--bundle DIR]`: write a default `config.json`, like `runc
//! spec`: `sh` on a terminal, root file system `rootfs` (read-only), the
//! usual kernel file system mounts, runc's default capabilities and masked
//! and read-only paths. Unlike runc's, it leaves out what runm does not
//! apply (device cgroup rules), so a fresh bundle gives no warnings.

use std::io::Write;
use std::path::Path;

use crate::error::RunmError;

/// The default configuration.
pub fn default_config() -> serde_json::Value {
    let mount = |dest: &str, typ: &str, src: &str, opts: &[&str]| serde_json::json!({"destination": dest, "type": typ, "source": src, "options": opts});
    serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runm",
        "mounts": [
            mount("/proc", "proc", "proc", &[]),
            mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The command.
pub fn run(bundle: &Path) -> Result<i32, RunmError> {
    let path = bundle.join("config.json");
    // Through oci-spec's type: its field order is the specification's.
    let spec: oci_spec::runtime::Spec = serde_json::from_value(default_config())
        .map_err(|e| RunmError::Usage(format!("default config: {e}")))?;
    let mut text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(RunmError::io("cannot create", &path))?;
    f.write_all(text.as_bytes())
        .map_err(RunmError::io("cannot write", &path))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_fully_honoured() {
        let v = default_config();
        let spec: oci_spec::runtime::Spec = serde_json::from_value(v.clone()).unwrap();
        let config = crate::config::Config::default();
        let limits = config.limits(1, 1024);
        let plan = crate::bundle::plan(&spec, &v, Path::new("/b"), "c", &config, &limits).unwrap();
        assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
        assert!(
            plan.host_namespaces.is_empty(),
            "{:?}",
            plan.host_namespaces
        );
        assert!(plan.container.process.terminal);
        assert_eq!(plan.container.process.args, vec!["sh"]);
        assert_eq!(plan.rootfs, Path::new("/b/rootfs"));
    }
}
