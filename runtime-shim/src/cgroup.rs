//! Host cgroups for a container's host processes (cgroup v1).
//!
//! Owns where `linux.cgroupsPath` lands on the host, creating those cgroups,
//! writing the host-side limits into them, moving a process in, changing the
//! limits later (`runm update`) and removing what runm created (`delete`).
//!
//! Under runc the workload's processes live in the container's cgroup. Under
//! runm the workload lives in a VM; on the host the container is its sandbox
//! process and the VM process (a child of the sandbox, so it is placed with
//! it). They go into the cgroups named by `linux.cgroupsPath`, so that
//! containerd's shim, which reads metrics and OOM events from the cgroup of
//! the pid it was given, sees the VM's use of host memory and CPU.
//!
//! Which hierarchies: `memory` (the host-side limit, usage, OOM events),
//! `cpu` (CFS quota and shares), `cpuacct` and `pids` (usage only). A path is
//! resolved as runc resolves it: an absolute path below each hierarchy's
//! mount point, a relative one below the cgroup runm itself is in (per
//! hierarchy). Paths with `..` are refused. Only cgroup v1 hierarchies are
//! handled; where a host has only the unified (v2) hierarchy, or a path is in
//! systemd's `slice:prefix:name` form, the caller reports the cgroup as not
//! applied.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The v1 hierarchies a container's host processes join.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];

/// Errors with host cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path cannot be used.
    #[error("linux.cgroupsPath '{path}': {why}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// No cgroup v1 hierarchy runm can use.
    #[error(
        "no cgroup v1 hierarchy for {0} is mounted (cgroup v2-only hosts are not supported yet)"
    )]
    NoHierarchy(String),
    /// A form of path runm does not handle (systemd's).
    #[error("linux.cgroupsPath '{0}': systemd's slice:prefix:name form is not supported (use the cgroupfs driver)")]
    SystemdPath(String),
    /// A cgroup file operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its controllers (`cpu`, `cpuacct` when co-mounted, ...).
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup at the mount point (mountinfo's root field; `/` unless
    /// a cgroup namespace or bind mount shows a subtree).
    pub root: PathBuf,
}

/// The cgroup v1 hierarchies in `/proc/self/mountinfo` text.
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 || r[0] != "cgroup" {
            continue;
        }
        let controllers: Vec<String> = r[2]
            .split(',')
            .filter(|o| CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        out.push(Hierarchy {
            controllers,
            mount: PathBuf::from(unescape_mountinfo(l[4])),
            root: PathBuf::from(unescape_mountinfo(l[3])),
        });
    }
    out
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|oct| u8::from_str_radix(oct, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup of this process per v1 controller, from `/proc/self/cgroup` text.
pub fn own_cgroups(proc_cgroup: &str) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for c in ctrls.split(',').filter(|c| !c.is_empty()) {
            out.insert(c.to_string(), PathBuf::from(path));
        }
    }
    out
}

/// The directory for `cgroups_path` in hierarchy `h`, where this process's
/// own cgroup there is `own` (for relative paths).
pub fn resolve(
    cgroups_path: &str,
    h: &Hierarchy,
    own: Option<&Path>,
) -> Result<PathBuf, CgroupError> {
    let bad = |why: &str| CgroupError::BadPath {
        path: cgroups_path.to_string(),
        why: why.to_string(),
    };
    if cgroups_path.contains(':') && !cgroups_path.starts_with('/') {
        return Err(CgroupError::SystemdPath(cgroups_path.to_string()));
    }
    let p = Path::new(cgroups_path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad("'..' is not allowed"));
    }
    let inner: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if inner.as_os_str().is_empty() {
        return Err(bad("names no cgroup below the hierarchy's root"));
    }
    let full = if p.is_absolute() {
        Path::new("/").join(&inner)
    } else {
        own.unwrap_or(Path::new("/")).join(&inner)
    };
    // What the mount point shows is the subtree at `h.root`.
    let below = full.strip_prefix(&h.root).map_err(|_| {
        bad(&format!(
            "{} is outside what {} shows",
            full.display(),
            h.mount.display()
        ))
    })?;
    Ok(h.mount.join(below))
}

/// One cgroup directory runm placed a container in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// Its controllers.
    pub controllers: Vec<String>,
    /// The directory.
    pub path: PathBuf,
    /// The directories runm created for it, outermost first (empty if the
    /// cgroup was there before): only these are removed on delete.
    pub created: Vec<PathBuf>,
}

/// The cgroups of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cgroups {
    /// `linux.cgroupsPath` as given.
    pub path: String,
    /// One directory per hierarchy.
    pub dirs: Vec<CgroupDir>,
}

/// Host-side limits runm writes into the cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostLimits {
    /// `memory.limit_in_bytes`.
    pub memory_bytes: Option<u64>,
    /// `cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// `cpu.cfs_quota_us` (-1: unlimited).
    pub cpu_quota: Option<i64>,
    /// `cpu.cfs_period_us`.
    pub cpu_period: Option<u64>,
}

impl CgroupError {
    /// True for hosts and paths runm does not handle at all (reported as
    /// not applied), false for failures of something that should work.
    pub fn unsupported(&self) -> bool {
        matches!(
            self,
            CgroupError::NoHierarchy(_) | CgroupError::SystemdPath(_)
        )
    }
}

impl Cgroups {
    /// Creates (or finds) the cgroups for `cgroups_path` in every hierarchy
    /// of [`CONTROLLERS`] mounted here and writes `limits`. On failure
    /// nothing runm created is left.
    pub fn create(cgroups_path: &str, limits: &HostLimits) -> Result<Self, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(io_err("read", Path::new("/proc/self/cgroup")))?;
        Self::create_in(
            cgroups_path,
            &hierarchies(&mountinfo),
            &own_cgroups(&own),
            limits,
        )
    }

    /// [`Cgroups::create`] with the host's hierarchies and this process's
    /// cgroups given.
    pub fn create_in(
        cgroups_path: &str,
        hs: &[Hierarchy],
        own: &HashMap<String, PathBuf>,
        limits: &HostLimits,
    ) -> Result<Self, CgroupError> {
        if !hs
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == "memory"))
        {
            return Err(CgroupError::NoHierarchy("memory".into()));
        }
        let mut cg = Cgroups {
            path: cgroups_path.to_string(),
            dirs: Vec::new(),
        };
        let result = (|| {
            for h in hs {
                let own_path = h
                    .controllers
                    .iter()
                    .find_map(|c| own.get(c))
                    .map(PathBuf::as_path);
                let path = resolve(cgroups_path, h, own_path)?;
                let created = mkdir_p(&path, &h.mount)?;
                cg.dirs.push(CgroupDir {
                    controllers: h.controllers.clone(),
                    path,
                    created,
                });
            }
            cg.apply(limits)
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    fn dir(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
    }

    /// Writes `limits` (only the ones given).
    pub fn apply(&self, limits: &HostLimits) -> Result<(), CgroupError> {
        if let Some(m) = limits.memory_bytes {
            if let Some(d) = self.dir("memory") {
                write_file(&d.path.join("memory.limit_in_bytes"), &m.to_string())?;
            }
        }
        if let Some(d) = self.dir("cpu") {
            if let Some(s) = limits.cpu_shares {
                write_file(&d.path.join("cpu.shares"), &s.to_string())?;
            }
            // The period first: the kernel checks the quota against it.
            if let Some(p) = limits.cpu_period {
                write_file(&d.path.join("cpu.cfs_period_us"), &p.to_string())?;
            }
            if let Some(q) = limits.cpu_quota {
                write_file(&d.path.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
        }
        Ok(())
    }

    /// True if a `cpu` hierarchy is among them.
    pub fn has_cpu(&self) -> bool {
        self.dir("cpu").is_some()
    }

    /// Moves process `pid` (all its threads) into every cgroup.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            write_file(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the directories runm created, innermost first. The cgroup
    /// itself must be empty by now; a process that just exited may still be
    /// counted for a moment, so its removal is retried briefly. A parent
    /// runm created that another container's cgroup now uses is left.
    pub fn remove(&self) {
        for d in &self.dirs {
            for (i, dir) in d.created.iter().rev().enumerate() {
                let leaf = i == 0;
                let until = Instant::now() + Duration::from_secs(if leaf { 2 } else { 0 });
                loop {
                    match fs::remove_dir(dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                        Err(e) if Instant::now() < until => {
                            log::debug!("rmdir {}: {e}; retrying", dir.display());
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            if leaf {
                                log::warn!("cannot remove cgroup {}: {e}", dir.display());
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// `mkdir -p path` below `mount`; returns the directories it created,
/// outermost first.
fn mkdir_p(path: &Path, mount: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut missing = Vec::new();
    let mut p = path;
    while !p.exists() {
        if p == mount {
            break;
        }
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    missing.reverse();
    let mut created = Vec::new();
    for dir in missing {
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir),
            // Another container made it meanwhile: it is theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                for d in created.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
                return Err(io_err("create cgroup", &dir)(e));
            }
        }
    }
    Ok(created)
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:39 /sub /mnt/cg\\040x rw - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn finds_v1_hierarchies() {
        let hs = hierarchies(MOUNTINFO);
        let names: Vec<String> = hs.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "pids", "cpu,cpuacct"]);
        assert_eq!(hs[2].mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(hs[4].mount, Path::new("/mnt/cg x"));
        assert_eq!(hs[4].root, Path::new("/sub"));
    }

    #[test]
    fn own_cgroups_per_controller() {
        let own = own_cgroups("9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/\n0::/\n");
        assert_eq!(own["memory"], Path::new("/a/b"));
        assert_eq!(own["cpuacct"], Path::new("/"));
        assert!(!own.contains_key(""));
    }

    #[test]
    fn paths_resolve_like_runc() {
        let h = &hierarchies(MOUNTINFO)[2];
        let own = Path::new("/a/b");
        assert_eq!(
            resolve("/default/c1", h, Some(own)).unwrap(),
            Path::new("/sys/fs/cgroup/memory/default/c1")
        );
        assert_eq!(
            resolve("test/c1", h, Some(own)).unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/b/test/c1")
        );
        for bad in ["../x", "/a/../../x", "/", "kubepods.slice:cri:c1"] {
            assert!(resolve(bad, h, Some(own)).is_err(), "{bad}");
        }
        let sub = &hierarchies(MOUNTINFO)[4];
        assert_eq!(
            resolve("/sub/c", sub, None).unwrap(),
            Path::new("/mnt/cg x/c")
        );
        assert!(resolve("/other/c", sub, None).is_err());
    }

    #[test]
    fn creates_applies_joins_and_removes_in_a_fake_hierarchy() {
        // A plain directory stands in for the hierarchy: the logic is the
        // same, the kernel's files are just files here.
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("memory");
        fs::create_dir_all(mount.join("own")).unwrap();
        let hs = vec![Hierarchy {
            controllers: vec!["memory".into()],
            mount: mount.clone(),
            root: "/".into(),
        }];
        let own: HashMap<String, PathBuf> = [("memory".to_string(), PathBuf::from("/own"))].into();
        let limits = HostLimits {
            memory_bytes: Some(512 << 20),
            ..HostLimits::default()
        };
        let cg = Cgroups::create_in("x/c1", &hs, &own, &limits).unwrap();
        let dir = mount.join("own/x/c1");
        assert_eq!(cg.dirs[0].path, dir);
        assert_eq!(cg.dirs[0].created, vec![mount.join("own/x"), dir.clone()]);
        assert_eq!(
            fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "536870912"
        );
        cg.join(42).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "42");
        assert!(!cg.has_cpu());
        // Real cgroup directories hold only kernel files, which rmdir
        // ignores; here the stand-in files must go first.
        for f in ["memory.limit_in_bytes", "cgroup.procs"] {
            fs::remove_file(dir.join(f)).unwrap();
        }
        cg.remove();
        assert!(!mount.join("own/x").exists());
        assert!(mount.join("own").exists(), "what was there is kept");
        let e = Cgroups::create_in("x/c1", &[], &own, &limits).unwrap_err();
        assert!(e.to_string().contains("no cgroup v1 hierarchy"), "{e}");
    }
}
