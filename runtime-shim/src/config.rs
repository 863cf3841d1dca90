//! runm's own configuration: what the host's administrator lets a bundle ask
//! for. The bundle is not trusted (whoever controls an image or a pod spec
//! may write its annotations and resources); this file is.
//!
//! Read from [`DEFAULT_PATH`] (JSON), or from the file named by
//! `$RUNM_CONFIG`; a missing file means the defaults. Unknown keys are
//! errors, so a misspelt limit is not silently ignored. Every field is
//! optional:
//!
//! ```json
//! {
//!   "enable_annotations": ["io.runm.vm.memory_mib", "io.runm.vm.vcpus"],
//!   "max_memory_mib": 8192,
//!   "max_vcpus": 4,
//!   "max_host_overhead_mib": 4096,
//!   "cgroup": {
//!     "allowed_parents": ["/k8s.io", "/default", "/kubepods", "/kubepods.slice"],
//!     "default_parent": "runm",
//!     "pids_max": 4096
//!   }
//! }
//! ```
//!
//! - `enable_annotations`: the `io.runm.*` annotations a bundle may set (an
//!   exact name, or a prefix ending in `*`), like Kata's
//!   `enable_annotations`. Default: the VM size ones, within the limits
//!   below, and `io.runm.rootfs` (the root as an ext4 image, whose copy
//!   the bundle's own size bounds); not `io.runm.hypervisor` (the backend) nor
//!   `io.runm.vm.host_overhead_mib` (how much host memory beyond guest RAM
//!   the VM's cgroup may use), which only the host should choose. A bundle
//!   that sets one not enabled is refused.
//! - `max_memory_mib`: the most guest RAM a VM gets (default: the host's
//!   memory). An annotation above it is refused; a
//!   `linux.resources.memory.limit` above it is a limit the smaller VM
//!   already keeps, so the VM gets the maximum.
//! - `max_vcpus`: the most vCPUs (default and ceiling: the host's CPUs).
//! - `max_host_overhead_mib`: the most `io.runm.vm.host_overhead_mib` may
//!   ask for, where it is enabled.
//! - `cgroup.allowed_parents`: an absolute `linux.cgroupsPath` (or the
//!   cgroup a systemd path maps to) must lie strictly below one of these;
//!   relative paths are below runm's own cgroup and always allowed.
//! - `cgroup.default_parent`: where a container without `linux.cgroupsPath`
//!   gets its cgroup (`<default_parent>/<id>-<hash of the runtime root>`;
//!   relative: below runm's own cgroup, on cgroup v2 below its parent).
//! - `cgroup.pids_max`: the host `pids.max` of a container's cgroup.
//! - `vm_user` (also read under its old name `qemu_user`): the user the VM
//!   process runs the guest as, a name from `/etc/passwd` (default
//!   `nobody`). QEMU drops to it once it has opened its files and sockets
//!   (`-runas`); runm-vmm runs jailed as its uid and primary gid: its own
//!   mount namespace whose root is an empty tmpfs, its own PID namespace, no
//!   capabilities, resource limits (runm must run as root for that). `""`
//!   keeps the VM process root and runm-vmm unjailed (debugging only). QEMU
//!   also runs with its seccomp filter (`-sandbox on`), runm-vmm with its
//!   per-thread filters, always.
//! - `vm_uid_range` (`"FIRST-LAST"`, default off): each VM process runs as a
//!   uid and gid of its own from the range instead of `vm_user`'s (the
//!   sandbox holds a lock on its uid for its life, see `vm_uid`); pick a
//!   range no account uses. virtiofsd stays root in its own namespaces: it
//!   must act as the shared files' owners.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where runm's configuration lives.
pub const DEFAULT_PATH: &str = "/etc/runm/config.json";
/// The environment variable naming another configuration file.
pub const ENV_PATH: &str = "RUNM_CONFIG";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read runm's configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not valid.
    #[error("malformed runm configuration {path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// runm's configuration (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `io.runm.*` annotations a bundle may set.
    pub enable_annotations: Vec<String>,
    /// Most guest RAM (MiB); `None`: the host's memory.
    pub max_memory_mib: Option<u64>,
    /// Most vCPUs; never more than the host's CPUs.
    pub max_vcpus: Option<u32>,
    /// Most host memory beyond guest RAM a bundle may ask for (MiB).
    pub max_host_overhead_mib: u64,
    /// Host cgroups.
    pub cgroup: CgroupConfig,
    /// The user the VM process runs as (empty: root, and runm-vmm unjailed).
    #[serde(alias = "qemu_user")]
    pub vm_user: String,
    /// `FIRST-LAST`: each VM process runs as a uid (and gid) of its own
    /// from this range instead of `vm_user`'s; empty: off.
    pub vm_uid_range: String,
    /// Where it was read from (for error messages).
    #[serde(skip)]
    pub source: PathBuf,
}

/// The `cgroup` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// Absolute cgroups a container's cgroup may be below.
    pub allowed_parents: Vec<String>,
    /// Parent of the cgroup of a container that names none.
    pub default_parent: String,
    /// `pids.max` of a container's cgroup.
    pub pids_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable_annotations: vec![
                crate::bundle::ANNOTATION_MEMORY.into(),
                crate::bundle::ANNOTATION_VCPUS.into(),
                crate::bundle::ANNOTATION_ROOTFS.into(),
            ],
            max_memory_mib: None,
            max_vcpus: None,
            max_host_overhead_mib: 4096,
            vm_user: "nobody".into(),
            vm_uid_range: String::new(),
            cgroup: CgroupConfig::default(),
            source: PathBuf::from(DEFAULT_PATH),
        }
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            // Where the engines runm is used with put their containers:
            // containerd's namespaces (`/k8s.io`, `/default`), kubelet's
            // cgroupfs and systemd drivers, Docker, Podman, systemd's slices
            // for services and machines, and runm's own.
            allowed_parents: [
                "/k8s.io",
                "/default",
                "/kubepods",
                "/kubepods.slice",
                "/docker",
                "/libpod_parent",
                "/machine.slice",
                "/system.slice",
                "/runm",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            default_parent: "runm".into(),
            pids_max: 4096,
        }
    }
}

impl Config {
    /// Reads the configuration from `$RUNM_CONFIG` or [`DEFAULT_PATH`].
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(ENV_PATH)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        Self::load_from(&path)
    }

    /// Reads `path`; defaults if it does not exist.
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Config {
                    source: path.to_path_buf(),
                    ..Config::default()
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let malformed = |why: String| ConfigError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let mut c: Config = serde_json::from_slice(&text).map_err(|e| malformed(e.to_string()))?;
        c.source = path.to_path_buf();
        if c.max_memory_mib == Some(0) || c.max_vcpus == Some(0) {
            return Err(malformed(
                "max_memory_mib and max_vcpus must be at least 1".into(),
            ));
        }
        if c.cgroup.pids_max == 0 {
            return Err(malformed("cgroup.pids_max must be at least 1".into()));
        }
        for p in &c.cgroup.allowed_parents {
            if !p.starts_with('/') || p.split('/').any(|s| s == "..") {
                return Err(malformed(format!(
                    "cgroup.allowed_parents: '{p}' is not an absolute cgroup path"
                )));
            }
        }
        if c.cgroup.default_parent.split('/').any(|s| s == "..") {
            return Err(malformed(
                "cgroup.default_parent must not contain '..'".into(),
            ));
        }
        c.vm_uids().map_err(malformed)?;
        Ok(c)
    }

    /// `vm_uid_range` as its first and last uid, `None` when it is off.
    pub fn vm_uids(&self) -> Result<Option<(u32, u32)>, String> {
        let r = self.vm_uid_range.trim();
        if r.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| format!("vm_uid_range '{r}': {why}");
        let (first, last) = r
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| bad("give FIRST-LAST, two uids"))?;
        if first == 0 || first > last || last == u32::MAX {
            return Err(bad(
                "the range must be non-empty, without uid 0 or 4294967295",
            ));
        }
        if self.vm_user.is_empty() {
            return Err(bad(
                "vm_user is \"\" (VMs run as root): a per-VM uid needs it set",
            ));
        }
        Ok(Some((first, last)))
    }

    /// True if the bundle may set annotation `name`.
    pub fn annotation_enabled(&self, name: &str) -> bool {
        self.enable_annotations
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            })
    }

    /// The limits a bundle is held to on a host with `host_cpus` CPUs and
    /// `host_mem_mib` of memory.
    pub fn limits(&self, host_cpus: u32, host_mem_mib: u64) -> Limits {
        let host_cpus = host_cpus.max(1);
        Limits {
            max_vcpus: self
                .max_vcpus
                .unwrap_or(host_cpus)
                .min(host_cpus)
                .min(u32::from(crate::bundle::MAX_VCPUS)),
            max_memory_mib: self.max_memory_mib.unwrap_or(host_mem_mib).max(1),
            max_host_overhead_mib: self.max_host_overhead_mib,
        }
    }

    /// [`Config::limits`] for this host.
    pub fn host_limits(&self) -> Limits {
        self.limits(host_cpus(), host_memory_mib())
    }

    /// Checks an absolute host cgroup path (`/a/b`) against
    /// `cgroup.allowed_parents`; the error says why, for people.
    pub fn check_cgroup_parent(&self, path: &str) -> Result<(), String> {
        let under = |parent: &str| {
            let parent = parent.trim_end_matches('/');
            path.strip_prefix(parent)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
        };
        if self.cgroup.allowed_parents.iter().any(|p| under(p)) {
            return Ok(());
        }
        Err(format!(
            "{path} is not below any of the cgroups runm's configuration allows ({}: \
             cgroup.allowed_parents = [{}])",
            self.source.display(),
            self.cgroup.allowed_parents.join(", ")
        ))
    }
}

/// What a bundle may ask for on this host (from [`Config::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most vCPUs.
    pub max_vcpus: u32,
    /// Most guest RAM (MiB).
    pub max_memory_mib: u64,
    /// Most host memory beyond guest RAM (MiB).
    pub max_host_overhead_mib: u64,
}

/// The CPUs this process may run on.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// The host's memory (MiB), from `/proc/meminfo`; 0 if unknown, which
/// leaves only guest RAM's lower bound (the VM then cannot start, and says so).
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_allow_size_annotations_only() {
        let c = Config::default();
        assert!(c.annotation_enabled("io.runm.vm.memory_mib"));
        assert!(c.annotation_enabled("io.runm.vm.vcpus"));
        assert!(!c.annotation_enabled("io.runm.hypervisor"));
        assert!(!c.annotation_enabled("io.runm.vm.host_overhead_mib"));
        let c = Config {
            enable_annotations: vec!["io.runm.vm.*".into()],
            ..Config::default()
        };
        assert!(c.annotation_enabled("io.runm.vm.host_overhead_mib"));
        assert!(!c.annotation_enabled("io.runm.hypervisor"));
    }

    #[test]
    fn limits_never_exceed_the_host() {
        let c = Config::default();
        let l = c.limits(4, 8192);
        assert_eq!((l.max_vcpus, l.max_memory_mib), (4, 8192));
        let c = Config {
            max_vcpus: Some(64),
            max_memory_mib: Some(1024),
            ..Config::default()
        };
        let l = c.limits(2, 8192);
        assert_eq!((l.max_vcpus, l.max_memory_mib), (2, 1024));
        assert_eq!(c.limits(0, 0).max_vcpus, 1);
        assert!(host_memory_mib() > 0);
    }

    #[test]
    fn file_is_read_checked_and_optional() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let c = Config::load_from(&p).unwrap();
        assert_eq!(c.enable_annotations, Config::default().enable_annotations);
        std::fs::write(
            &p,
            r#"{"enable_annotations": ["io.runm.*"], "max_memory_mib": 512,
                "cgroup": {"allowed_parents": ["/x"], "pids_max": 10}}"#,
        )
        .unwrap();
        let c = Config::load_from(&p).unwrap();
        assert!(c.annotation_enabled("io.runm.hypervisor"));
        assert_eq!(c.max_memory_mib, Some(512));
        assert_eq!(c.cgroup.pids_max, 10);
        assert_eq!(c.cgroup.default_parent, "runm", "section defaults kept");
        assert_eq!(c.vm_user, "nobody");
        for (text, user) in [
            (r#"{"vm_user": "runm-vm"}"#, "runm-vm"),
            (r#"{"qemu_user": "qemu"}"#, "qemu"),
            (r#"{"vm_user": ""}"#, ""),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(Config::load_from(&p).unwrap().vm_user, user, "{text}");
        }
        for (bad, why) in [
            (r#"{"max_memory": 5}"#, "unknown field"),
            (r#"{"max_vcpus": 0}"#, "at least 1"),
            (r#"{"cgroup": {"allowed_parents": ["x"]}}"#, "'x'"),
            (r#"{"cgroup": {"default_parent": "../x"}}"#, ".."),
            ("{", "malformed"),
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = Config::load_from(&p).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("config.json"), "{bad}: {e}");
        }
    }
    #[test]
    fn the_per_vm_uid_range_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load_from(&p)
        };
        assert_eq!(load("{}").unwrap().vm_uids(), Ok(None));
        let c = load(r#"{"vm_uid_range": "200000-200999"}"#).unwrap();
        assert_eq!(c.vm_uids(), Ok(Some((200000, 200999))));
        for bad in ["0-5", "9-3", "x-y", "7", "1-4294967295"] {
            let e = load(&format!(r#"{{"vm_uid_range": "{bad}"}}"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains("vm_uid_range"), "{bad}: {e}");
        }
        let e = load(r#"{"vm_uid_range": "100-200", "vm_user": ""}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs it set"), "{e}");
    }

    #[test]
    fn cgroup_parents_are_checked_by_component() {
        let c = Config {
            cgroup: CgroupConfig {
                allowed_parents: vec!["/k8s.io".into(), "/a/b/".into()],
                ..CgroupConfig::default()
            },
            ..Config::default()
        };
        c.check_cgroup_parent("/k8s.io/c1").unwrap();
        c.check_cgroup_parent("/a/b/c/d").unwrap();
        for bad in [
            "/k8s.io",
            "/k8s.io/",
            "/k8s.iox/c",
            "/a/bc",
            "/",
            "/system.slice/x",
        ] {
            let e = c.check_cgroup_parent(bad).unwrap_err();
            assert!(e.contains("allowed_parents"), "{bad}: {e}");
        }
    }
}
