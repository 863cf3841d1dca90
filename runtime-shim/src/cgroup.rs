//! Host cgroups for a container's host processes: cgroup v1 and v2, paths in
//! the cgroupfs form and in systemd's `slice:prefix:name` form.
//!
//! Owns where a container's cgroup lands on the host, creating it, writing
//! the host-side limits into it, moving a process in, changing the limits
//! later (`runm update`) and removing what runm created (`delete`).
//!
//! Under runc the workload's processes live in the container's cgroup. Under
//! runm the workload lives in a VM; on the host the container is its sandbox
//! process and the VM process (a child of the sandbox, so it is placed with
//! it). Every container gets a cgroup, bounded in memory (guest RAM plus the
//! VM process's overhead), pids and CPU, whether or not the bundle names one
//! (`linux.cgroupsPath`): a guest must not be able to make its VM process
//! use the host without bound. Where no such cgroup can be made (no
//! hierarchy with these controllers, a v2 tree that does not hand them
//! down), `create` fails and says why; it never runs the VM unbounded.
//! containerd's shim reads metrics and OOM events from the cgroup of the pid
//! it was given, so it sees the VM's use of host memory and CPU.
//!
//! Where a path lands ([`placement`], then [`resolve`]):
//! - cgroupfs form, as runc resolves it: an absolute path below each
//!   hierarchy's root, a relative one below the cgroup runm itself is in (on
//!   v2, below that cgroup's parent: runm's own cgroup has processes, and v2
//!   passes controllers only through cgroups without processes). `..` is
//!   refused. An absolute path must lie below one of the parents runm's
//!   configuration allows ([`crate::config`]), so a bundle cannot place its
//!   VM, or write limits, into somebody else's cgroup; and an existing
//!   cgroup is used only if it is empty (no processes, no children).
//! - systemd form (`--systemd-cgroup`): mapped to the cgroupfs path systemd
//!   gives that unit (`kubepods-burstable.slice:cri:abc` is
//!   `/kubepods.slice/kubepods-burstable.slice/cri-abc.scope`) and created
//!   there directly: runm does not ask a systemd to make the scope (none
//!   runs on the hosts runm is tested on), so the unit is not in systemd's
//!   books, but the limits are the same.
//! - no `linux.cgroupsPath`: `<cgroup.default_parent>/<name>` (cgroupfs),
//!   or `system.slice:runm:<name>` (systemd), where the name is the id and a
//!   hash of the runtime root ([`default_name`]).
//!
//! Which controllers: v1 `memory`, `cpu`, `pids` (required) and `cpuacct`
//! (usage only, where mounted); v2 `memory`, `cpu`, `pids`, enabled down the
//! tree as needed. A hybrid host (v1 controllers plus an empty unified
//! hierarchy) is handled as v1.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The v1 hierarchies a container's host processes join.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];
/// The controllers every container's cgroup has, v1 or v2: without them
/// its VM would be unbounded on the host.
pub const REQUIRED: &[&str] = &["memory", "cpu", "pids"];
/// The CFS period runm uses where the bundle gives none (µs; the kernel's
/// default).
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

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
    /// No hierarchy has a controller runm needs.
    #[error(
        "no cgroup hierarchy with the {0} controller is mounted: runm does not run a VM without a \
         bounded host cgroup"
    )]
    NoHierarchy(String),
    /// A cgroup v2 controller is not available where the container's cgroup goes.
    #[error(
        "the cgroup v2 controller {controller} is not available in {dir} (cgroup.controllers: \
         '{available}'): runm does not run a VM without a bounded host cgroup"
    )]
    NoController {
        /// The controller.
        controller: String,
        /// The cgroup lacking it.
        dir: PathBuf,
        /// What it has.
        available: String,
    },
    /// Controllers cannot be passed down through a cgroup v2 directory.
    #[error("cannot enable the {controllers} controllers below {dir}: {source}{hint}")]
    Enable {
        /// The cgroup.
        dir: PathBuf,
        /// Which controllers.
        controllers: String,
        /// Why.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The cgroup exists and is somebody's.
    #[error(
        "cgroup {0} already exists and is in use (it has processes or child cgroups): a \
         container needs a cgroup of its own"
    )]
    InUse(PathBuf),
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

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its v1 controllers (`cpu`, `cpuacct` when co-mounted, ...); empty for
    /// the v2 (unified) hierarchy.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup at the mount point (mountinfo's root field; `/` unless
    /// a cgroup namespace or bind mount shows a subtree).
    pub root: PathBuf,
}

/// How this host's cgroups are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 hierarchies (a hybrid host's unified hierarchy, which has
    /// no controllers of its own, is left aside).
    V1(Vec<Hierarchy>),
    /// The unified hierarchy only.
    V2(Hierarchy),
}

/// The layout in `/proc/self/mountinfo` text: v1 if a v1 hierarchy has the
/// memory controller, else the first cgroup2 mount; `None` if neither.
pub fn layout(mountinfo: &str) -> Option<Layout> {
    let v1 = hierarchies(mountinfo);
    if v1
        .iter()
        .any(|h| h.controllers.iter().any(|c| c == "memory"))
    {
        return Some(Layout::V1(v1));
    }
    mounts(mountinfo)
        .find(|(fstype, _, _)| *fstype == "cgroup2")
        .map(|(_, mount, root)| {
            Layout::V2(Hierarchy {
                controllers: Vec::new(),
                mount,
                root,
            })
        })
}

/// (fstype, mount point, root, super options) of each mount.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, PathBuf, PathBuf)> + '_ {
    mountinfo.lines().filter_map(|line| {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next()?;
        if l.len() < 5 {
            return None;
        }
        Some((
            fstype,
            PathBuf::from(unescape_mountinfo(l[4])),
            PathBuf::from(unescape_mountinfo(l[3])),
        ))
    })
}

/// The cgroup v1 hierarchies of [`CONTROLLERS`] in `/proc/self/mountinfo` text.
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
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

/// The cgroup of this process per v1 controller, and under `""` in the v2
/// hierarchy, from `/proc/self/cgroup` text.
pub fn own_cgroups(proc_cgroup: &str) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            out.insert(String::new(), PathBuf::from(path));
        }
        for c in ctrls.split(',').filter(|c| !c.is_empty()) {
            out.insert(c.to_string(), PathBuf::from(path));
        }
    }
    out
}

/// Where a container's cgroup goes, as a cgroup path, before this host's
/// mounts are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `linux.cgroupsPath` as given, or what runm chose.
    pub given: String,
    /// Absolute (from a hierarchy's root) or relative (below runm's own
    /// cgroup), of plain names only.
    pub path: PathBuf,
    /// runm chose it (the bundle named none): the parents on the way are
    /// runm's too, removed with the last container in them.
    pub runm_owned: bool,
}

/// The name runm gives the cgroup of container `id` of the runtime root
/// `root` when the bundle names none: the id is unique only within its
/// root, so a short hash of the root tells two runm roots' `c1` apart.
pub fn default_name(id: &str, root: &Path) -> String {
    // FNV-1a: stable across builds, which std's hasher does not promise.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{id}-{:08x}", h as u32)
}

/// Where the cgroup of container `id` goes: `cgroups_path` (the bundle's
/// `linux.cgroupsPath`, `None` if it names none) in the systemd form if
/// `systemd`, held to `config`; `root` is the runtime root (for
/// [`default_name`]).
pub fn placement(
    cgroups_path: Option<&str>,
    id: &str,
    root: &Path,
    systemd: bool,
    config: &Config,
) -> Result<Placement, CgroupError> {
    let from_bundle = cgroups_path.is_some();
    let name = default_name(id, root);
    let given = match cgroups_path {
        Some(p) => p.to_string(),
        None if systemd => format!("system.slice:runm:{name}"),
        None => {
            let parent = config.cgroup.default_parent.trim_end_matches('/');
            if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            }
        }
    };
    let bad = |why: String| CgroupError::BadPath {
        path: given.clone(),
        why,
    };
    let raw = if systemd {
        systemd_path(&given).map_err(bad)?
    } else if given.contains(':') && !given.starts_with('/') {
        return Err(bad(
            "this is systemd's slice:prefix:name form; it needs --systemd-cgroup".into(),
        ));
    } else {
        PathBuf::from(&given)
    };
    if raw.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad("'..' is not allowed".into()));
    }
    let inner: PathBuf = raw
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if inner.as_os_str().is_empty() {
        return Err(bad("names no cgroup below the hierarchy's root".into()));
    }
    let path = if raw.is_absolute() {
        Path::new("/").join(&inner)
    } else {
        inner
    };
    if from_bundle && path.is_absolute() {
        config
            .check_cgroup_parent(&path.to_string_lossy())
            .map_err(bad)?;
    }
    Ok(Placement {
        given,
        path,
        runm_owned: !from_bundle,
    })
}

/// The cgroupfs path systemd gives `slice:prefix:name`: the slice expanded
/// into its ancestors (`a-b.slice` is `/a.slice/a-b.slice`, `-.slice` the
/// root, an empty slice `system.slice`), then the unit: `prefix-name.scope`,
/// or `name` itself if it is a slice.
pub fn systemd_path(s: &str) -> Result<PathBuf, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err("with --systemd-cgroup it must be slice:prefix:name".into());
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let base = slice
        .strip_suffix(".slice")
        .ok_or_else(|| format!("the slice '{slice}' does not end in .slice"))?;
    let mut path = PathBuf::from("/");
    if base != "-" {
        if base.is_empty()
            || base.contains('/')
            || base.starts_with('-')
            || base.ends_with('-')
            || base.contains("--")
        {
            return Err(format!("'{slice}' is not a valid slice name"));
        }
        let mut ancestor = String::new();
        for part in base.split('-') {
            ancestor.push_str(part);
            path.push(format!("{ancestor}.slice"));
            ancestor.push('-');
        }
    }
    if name.is_empty() || name.contains('/') || prefix.contains('/') {
        return Err(format!(
            "'{prefix}' and '{name}' are not a valid unit prefix and name"
        ));
    }
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(unit);
    Ok(path)
}

/// The directory for placement `p` in hierarchy `h`, where relative paths
/// are below `base` (a cgroup path).
pub fn resolve(p: &Placement, h: &Hierarchy, base: Option<&Path>) -> Result<PathBuf, CgroupError> {
    let full = if p.path.is_absolute() {
        p.path.clone()
    } else {
        base.unwrap_or(Path::new("/")).join(&p.path)
    };
    // What the mount point shows is the subtree at `h.root`.
    let below = full
        .strip_prefix(&h.root)
        .map_err(|_| CgroupError::BadPath {
            path: p.given.clone(),
            why: format!(
                "{} is outside what {} shows",
                full.display(),
                h.mount.display()
            ),
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
    /// In the v2 (unified) hierarchy: v2's file names.
    #[serde(default)]
    pub unified: bool,
}

/// The cgroups of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cgroups {
    /// `linux.cgroupsPath` as given, or what runm chose.
    pub path: String,
    /// One directory per hierarchy.
    pub dirs: Vec<CgroupDir>,
}

/// Host-side limits runm writes into the cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostLimits {
    /// v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_bytes: Option<u64>,
    /// v1 `cpu.shares`; v2 `cpu.weight`, converted.
    pub cpu_shares: Option<u64>,
    /// v1 `cpu.cfs_quota_us`, v2 `cpu.max`'s first field (negative:
    /// unlimited).
    pub cpu_quota: Option<i64>,
    /// v1 `cpu.cfs_period_us`, v2 `cpu.max`'s second field.
    pub cpu_period: Option<u64>,
    /// `pids.max`.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

/// Host memory for a VM of `mem_mib` guest RAM and `overhead_mib` beyond it,
/// in bytes; `None` if that does not fit in 64 bits.
pub fn vm_memory_bytes(mem_mib: u64, overhead_mib: u64) -> Option<u64> {
    mem_mib.checked_add(overhead_mib)?.checked_mul(1 << 20)
}

/// v1 `cpu.shares` as v2 `cpu.weight` (the mapping runc and the kernel
/// documentation use: 2..=262144 onto 1..=10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl Cgroups {
    /// Creates the cgroups for `p` in this host's layout and writes
    /// `limits`. On failure nothing runm created is left.
    pub fn create(p: &Placement, limits: &HostLimits) -> Result<Self, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(io_err("read", Path::new("/proc/self/cgroup")))?;
        let layout = layout(&mountinfo).ok_or_else(|| CgroupError::NoHierarchy("memory".into()))?;
        Self::create_in(p, &layout, &own_cgroups(&own), limits)
    }

    /// [`Cgroups::create`] with the host's layout and this process's cgroups
    /// given.
    pub fn create_in(
        p: &Placement,
        layout: &Layout,
        own: &HashMap<String, PathBuf>,
        limits: &HostLimits,
    ) -> Result<Self, CgroupError> {
        let mut cg = Cgroups {
            path: p.given.clone(),
            dirs: Vec::new(),
        };
        let result = (|| {
            match layout {
                Layout::V1(hs) => {
                    for c in REQUIRED {
                        if !hs.iter().any(|h| h.controllers.iter().any(|x| x == c)) {
                            return Err(CgroupError::NoHierarchy((*c).to_string()));
                        }
                    }
                    for h in hs {
                        let base = h
                            .controllers
                            .iter()
                            .find_map(|c| own.get(c))
                            .map(PathBuf::as_path);
                        let path = resolve(p, h, base)?;
                        let created = owned(p, &path, mkdir_p(&path, &h.mount)?);
                        cg.dirs.push(CgroupDir {
                            controllers: h.controllers.clone(),
                            path,
                            created,
                            unified: false,
                        });
                    }
                }
                Layout::V2(h) => {
                    // runm's own cgroup has processes (runm), so controllers
                    // cannot pass through it: relative paths go below its parent.
                    let base = own.get("").map(|o| o.parent().unwrap_or(o));
                    let path = resolve(p, h, base)?;
                    let created = owned(p, &path, mkdir_p(&path, &h.mount)?);
                    cg.dirs.push(CgroupDir {
                        controllers: REQUIRED.iter().map(|c| (*c).to_string()).collect(),
                        path: path.clone(),
                        created,
                        unified: true,
                    });
                    enable_controllers(&h.mount, &path)?;
                }
            }
            for d in &cg.dirs {
                if d.created.last() != Some(&d.path) && in_use(&d.path)? {
                    return Err(CgroupError::InUse(d.path.clone()));
                }
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
        if let Some(d) = self.dir("memory") {
            if let Some(m) = limits.memory_bytes {
                let file = if d.unified {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                write_file(&d.path.join(file), &m.to_string())?;
            }
        }
        if let Some(d) = self.dir("pids") {
            if let Some(n) = limits.pids_max {
                write_file(&d.path.join("pids.max"), &n.to_string())?;
            }
        }
        if let Some(d) = self.dir("cpu") {
            if d.unified {
                if let Some(s) = limits.cpu_shares {
                    write_file(&d.path.join("cpu.weight"), &shares_to_weight(s).to_string())?;
                }
                if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
                    let quota = match limits.cpu_quota {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".to_string(),
                    };
                    let period = limits.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
                    write_file(&d.path.join("cpu.max"), &format!("{quota} {period}"))?;
                }
            } else {
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
        }
        Ok(())
    }

    /// True if a `cpu` controller is among them.
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

/// What of `leaf` (placed by `p`) is runm's to remove: what it `created`,
/// and for a placement runm chose, the parents it named too, whoever made
/// them (another container's create may have; the last one out removes
/// them, and removing one still in use fails harmlessly).
fn owned(p: &Placement, leaf: &Path, mut created: Vec<PathBuf>) -> Vec<PathBuf> {
    if p.runm_owned {
        let names = p.path.components().count();
        for parent in leaf.ancestors().skip(1).take(names.saturating_sub(1)) {
            if !created.iter().any(|c| c == parent) {
                created.push(parent.to_path_buf());
            }
        }
        // Outermost first: the longest path is the innermost.
        created.sort_by_key(|c| c.components().count());
    }
    created
}

/// True if the cgroup at `dir` has processes or child cgroups.
fn in_use(dir: &Path) -> Result<bool, CgroupError> {
    let procs = fs::read_to_string(dir.join("cgroup.procs"));
    match procs {
        Ok(p) if !p.trim().is_empty() => return Ok(true),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read", &dir.join("cgroup.procs"))(e)),
    }
    let entries = fs::read_dir(dir).map_err(io_err("read", dir))?;
    for e in entries {
        let e = e.map_err(io_err("read", dir))?;
        if e.file_type().map_err(io_err("read", dir))?.is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The space-separated names in a cgroup v2 list file (missing: none).
fn read_list(path: &Path) -> Result<Vec<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(t.split_whitespace().map(str::to_string).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Enables [`REQUIRED`] in `cgroup.subtree_control` of every cgroup from
/// `mount` down to `leaf`'s parent, where not yet enabled; each must have
/// them available (`cgroup.controllers`).
fn enable_controllers(mount: &Path, leaf: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return Ok(());
    };
    let mut dir = mount.to_path_buf();
    let mut chain = vec![dir.clone()];
    let names: Vec<_> = rel.components().collect();
    for c in names.iter().take(names.len().saturating_sub(1)) {
        dir.push(c);
        chain.push(dir.clone());
    }
    for dir in chain {
        let enabled = read_list(&dir.join("cgroup.subtree_control"))?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !enabled.iter().any(|e| e == c))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let available = read_list(&dir.join("cgroup.controllers"))?;
        if let Some(c) = missing.iter().find(|c| !available.iter().any(|a| a == *c)) {
            return Err(CgroupError::NoController {
                controller: (*c).to_string(),
                dir,
                available: available.join(" "),
            });
        }
        let text: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
        if let Err(source) = fs::write(dir.join("cgroup.subtree_control"), text.join(" ")) {
            let hint = if source.raw_os_error() == Some(libc::EBUSY) {
                " (it has processes of its own, and cgroup v2 passes controllers only through \
                 cgroups without processes: give a linux.cgroupsPath elsewhere, or set \
                 cgroup.default_parent in runm's configuration)"
            } else {
                ""
            };
            return Err(CgroupError::Enable {
                dir,
                controllers: missing.join(", "),
                source,
                hint,
            });
        }
    }
    Ok(())
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
    use crate::config::CgroupConfig;

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

    const MOUNTINFO_V2: &str = "\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 24 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    fn config() -> Config {
        Config {
            cgroup: CgroupConfig {
                allowed_parents: vec!["/default".into(), "/kubepods.slice".into()],
                ..CgroupConfig::default()
            },
            ..Config::default()
        }
    }

    fn place(path: Option<&str>, systemd: bool) -> Result<Placement, CgroupError> {
        placement(path, "c1", Path::new("/run/runm"), systemd, &config())
    }

    #[test]
    fn finds_hierarchies_and_the_layout() {
        let hs = hierarchies(MOUNTINFO);
        let names: Vec<String> = hs.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "pids", "cpu,cpuacct"]);
        assert_eq!(hs[2].mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(hs[4].mount, Path::new("/mnt/cg x"));
        assert_eq!(hs[4].root, Path::new("/sub"));
        assert!(
            matches!(layout(MOUNTINFO), Some(Layout::V1(h)) if h == hs),
            "hybrid is v1"
        );
        assert_eq!(
            layout(MOUNTINFO_V2),
            Some(Layout::V2(Hierarchy {
                controllers: vec![],
                mount: "/sys/fs/cgroup".into(),
                root: "/".into()
            }))
        );
        assert_eq!(layout("24 1 0:22 / /sys rw - sysfs sysfs rw\n"), None);
    }

    #[test]
    fn own_cgroups_per_controller_and_unified() {
        let own = own_cgroups("9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/\n0::/u/v\n");
        assert_eq!(own["memory"], Path::new("/a/b"));
        assert_eq!(own["cpuacct"], Path::new("/"));
        assert_eq!(own[""], Path::new("/u/v"));
    }

    #[test]
    fn placements_are_checked_against_the_configuration() {
        let p = place(Some("/default/c1"), false).unwrap();
        assert_eq!(p.path, Path::new("/default/c1"));
        assert_eq!(
            place(Some("/default//x/./c1"), false).unwrap().path,
            Path::new("/default/x/c1")
        );
        assert_eq!(
            place(Some("test/c1"), false).unwrap().path,
            Path::new("test/c1")
        );
        let p = place(None, false).unwrap();
        let name = default_name("c1", Path::new("/run/runm"));
        assert!(name.starts_with("c1-") && name.len() == 11, "{name}");
        assert_ne!(name, default_name("c1", Path::new("/run/runm2")));
        assert_eq!(p.given, format!("runm/{name}"));
        assert_eq!(p.path, Path::new("runm").join(&name));
        for (bad, why) in [
            (
                "/system.slice/sshd.service",
                "not below any of the cgroups runm's configuration allows",
            ),
            ("/", "names no cgroup"),
            ("/default", "not below any"),
            ("../x", "'..'"),
            ("/default/../x", "'..'"),
            ("kubepods.slice:cri:c1", "needs --systemd-cgroup"),
        ] {
            let e = place(Some(bad), false).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("linux.cgroupsPath '{bad}': ")) && e.contains(why),
                "{e}"
            );
        }
        // runm's own choice is not the bundle's, and not held to the list.
        let c = Config {
            cgroup: CgroupConfig {
                default_parent: "/elsewhere".into(),
                ..config().cgroup
            },
            ..config()
        };
        assert_eq!(
            placement(None, "c", Path::new("/r"), false, &c)
                .unwrap()
                .path,
            Path::new("/elsewhere").join(default_name("c", Path::new("/r")))
        );
    }

    #[test]
    fn systemd_paths_map_to_what_systemd_would_create() {
        for (given, path) in [
            ("kubepods-burstable-pod1.slice:cri-containerd:abc",
             "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"),
            ("kubepods.slice::x", "/kubepods.slice/x.scope"),
            ("kubepods.slice:p:sub.slice", "/kubepods.slice/sub.slice"),
            ("-.slice:p:n", "/p-n.scope"),
            (":runm:c1", "/system.slice/runm-c1.scope"),
        ] {
            assert_eq!(systemd_path(given).unwrap(), Path::new(path), "{given}");
        }
        for bad in [
            "a:b",
            "a.slice:b:c:d",
            "nodot:p:n",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "a.slice:p:",
            "a.slice:p:x/y",
            "a/b.slice:p:n",
        ] {
            assert!(systemd_path(bad).is_err(), "{bad}");
        }
        // Mapped paths are held to the allowed parents too.
        let p = place(Some("kubepods-besteffort.slice:cri:c1"), true).unwrap();
        assert_eq!(
            p.path,
            Path::new("/kubepods.slice/kubepods-besteffort.slice/cri-c1.scope")
        );
        let e = place(Some("system.slice:x:sshd"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not below any"), "{e}");
        let e = place(Some("/default/c1"), true).unwrap_err().to_string();
        assert!(e.contains("slice:prefix:name"), "{e}");
        let name = default_name("c1", Path::new("/run/runm"));
        assert_eq!(
            place(None, true).unwrap().path,
            Path::new("/system.slice").join(format!("runm-{name}.scope"))
        );
    }

    #[test]
    fn paths_resolve_like_runc() {
        let h = &hierarchies(MOUNTINFO)[2];
        let own = Path::new("/a/b");
        let abs = place(Some("/default/c1"), false).unwrap();
        assert_eq!(
            resolve(&abs, h, Some(own)).unwrap(),
            Path::new("/sys/fs/cgroup/memory/default/c1")
        );
        let rel = place(Some("test/c1"), false).unwrap();
        assert_eq!(
            resolve(&rel, h, Some(own)).unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/b/test/c1")
        );
        let sub = &hierarchies(MOUNTINFO)[4];
        assert!(resolve(&abs, sub, None)
            .unwrap_err()
            .to_string()
            .contains("outside what /mnt/cg x shows"));
        let c = Config {
            cgroup: CgroupConfig {
                allowed_parents: vec!["/sub".into()],
                ..CgroupConfig::default()
            },
            ..Config::default()
        };
        let p = placement(Some("/sub/c"), "c", Path::new("/r"), false, &c).unwrap();
        assert_eq!(resolve(&p, sub, None).unwrap(), Path::new("/mnt/cg x/c"));
    }

    fn limits() -> HostLimits {
        HostLimits {
            memory_bytes: Some(512 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(200_000),
            cpu_period: Some(100_000),
            pids_max: Some(4096),
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Real cgroup directories hold only kernel files, which rmdir ignores;
    /// in a stand-in hierarchy they are plain files and go first.
    fn clear_files(dir: &Path) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }

    #[test]
    fn v1_creates_bounds_joins_and_removes_in_a_stand_in_hierarchy() {
        // Plain directories stand in for the hierarchies: the logic is the
        // same, the kernel's files are just files here.
        let t = tempfile::tempdir().unwrap();
        let hs: Vec<Hierarchy> = ["memory", "cpu", "pids"]
            .iter()
            .map(|c| {
                let mount = t.path().join(c);
                fs::create_dir_all(mount.join("own")).unwrap();
                Hierarchy {
                    controllers: vec![(*c).into()],
                    mount,
                    root: "/".into(),
                }
            })
            .collect();
        let own: HashMap<String, PathBuf> = ["memory", "cpu", "pids"]
            .iter()
            .map(|c| ((*c).to_string(), PathBuf::from("/own")))
            .collect();
        let p = place(Some("x/c1"), false).unwrap();
        let cg = Cgroups::create_in(&p, &Layout::V1(hs.clone()), &own, &limits()).unwrap();
        let dir = |c: &str| t.path().join(c).join("own/x/c1");
        assert_eq!(cg.dirs[0].path, dir("memory"));
        assert_eq!(
            cg.dirs[0].created,
            vec![t.path().join("memory/own/x"), dir("memory")]
        );
        assert_eq!(
            read(&dir("memory").join("memory.limit_in_bytes")),
            "536870912"
        );
        assert_eq!(read(&dir("pids").join("pids.max")), "4096");
        assert_eq!(read(&dir("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&dir("cpu").join("cpu.cfs_quota_us")), "200000");
        assert_eq!(read(&dir("cpu").join("cpu.shares")), "1024");
        cg.join(42).unwrap();
        assert_eq!(read(&dir("pids").join("cgroup.procs")), "42");
        assert!(cg.has_cpu());
        // The same cgroup, now in use, is not anybody's to take.
        let e = Cgroups::create_in(&p, &Layout::V1(hs.clone()), &own, &limits()).unwrap_err();
        assert!(
            e.to_string().contains("already exists and is in use"),
            "{e}"
        );
        assert!(dir("memory").exists(), "somebody's cgroup is left alone");
        for c in ["memory", "cpu", "pids"] {
            clear_files(&dir(c));
        }
        cg.remove();
        assert!(!t.path().join("memory/own/x").exists());
        assert!(
            t.path().join("memory/own").exists(),
            "what was there is kept"
        );
        // runm's own placement: its parent is runm's, whoever made it.
        for c in ["memory", "cpu", "pids"] {
            fs::create_dir_all(t.path().join(c).join("own/runm")).unwrap();
        }
        let mine = place(None, false).unwrap();
        let cg = Cgroups::create_in(&mine, &Layout::V1(hs.clone()), &own, &limits()).unwrap();
        let runm = t.path().join("memory/own/runm");
        assert_eq!(cg.dirs[0].created[0], runm);
        for d in &cg.dirs {
            clear_files(&d.path);
        }
        cg.remove();
        assert!(!runm.exists() && t.path().join("memory/own").exists());
        // No pids hierarchy: refused, nothing left.
        let e = Cgroups::create_in(&p, &Layout::V1(hs[..2].to_vec()), &own, &limits()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no cgroup hierarchy with the pids controller"),
            "{e}"
        );
        assert!(!t.path().join("memory/own/x").exists());
    }

    #[test]
    fn v2_enables_controllers_and_bounds_in_a_stand_in_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("unified");
        let pod = mount.join("kubepods.slice");
        fs::create_dir_all(&pod).unwrap();
        fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .unwrap();
        fs::write(mount.join("cgroup.subtree_control"), "memory\n").unwrap();
        fs::write(pod.join("cgroup.controllers"), "memory\n").unwrap();
        let h = Hierarchy {
            controllers: vec![],
            mount: mount.clone(),
            root: "/".into(),
        };
        let own: HashMap<String, PathBuf> = [(String::new(), PathBuf::from("/"))].into();
        let p = place(Some("kubepods.slice::c1"), true).unwrap();
        // The pod's cgroup does not offer cpu and pids (its parent does not
        // pass them down yet, and a stand-in does not follow): refused.
        let e = Cgroups::create_in(&p, &Layout::V2(h.clone()), &own, &limits()).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "the cgroup v2 controller cpu is not available in {} (cgroup.controllers: 'memory')",
                pod.display()
            )),
            "{e}"
        );
        assert!(!pod.join("c1.scope").exists(), "nothing left");
        assert_eq!(
            read(&mount.join("cgroup.subtree_control")),
            "+cpu +pids",
            "only what was missing"
        );
        fs::write(pod.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let cg = Cgroups::create_in(&p, &Layout::V2(h.clone()), &own, &limits()).unwrap();
        let leaf = pod.join("c1.scope");
        assert_eq!(cg.dirs.len(), 1);
        assert_eq!(cg.dirs[0].created, vec![leaf.clone()]);
        assert_eq!(
            read(&pod.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(read(&leaf.join("memory.max")), "536870912");
        assert_eq!(read(&leaf.join("pids.max")), "4096");
        assert_eq!(read(&leaf.join("cpu.max")), "200000 100000");
        assert_eq!(read(&leaf.join("cpu.weight")), "39");
        cg.apply(&HostLimits {
            cpu_quota: Some(-1),
            ..HostLimits::default()
        })
        .unwrap();
        assert_eq!(read(&leaf.join("cpu.max")), "max 100000");
        cg.join(7).unwrap();
        assert_eq!(read(&leaf.join("cgroup.procs")), "7");
        clear_files(&leaf);
        cg.remove();
        assert!(!leaf.exists() && pod.exists());
        // Relative paths go below the parent of runm's own cgroup.
        fs::create_dir(pod.join("runm")).unwrap();
        fs::write(pod.join("runm/cgroup.controllers"), "cpu memory pids\n").unwrap();
        let own: HashMap<String, PathBuf> =
            [(String::new(), PathBuf::from("/kubepods.slice/runm.scope"))].into();
        let cg = Cgroups::create_in(
            &place(None, false).unwrap(),
            &Layout::V2(h),
            &own,
            &limits(),
        )
        .unwrap();
        let leaf = pod
            .join("runm")
            .join(default_name("c1", Path::new("/run/runm")));
        assert_eq!(cg.dirs[0].path, leaf);
        assert_eq!(
            read(&pod.join("runm/cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        clear_files(&leaf);
        cg.remove();
        assert!(!leaf.exists() && pod.join("runm").exists());
    }

    #[test]
    fn weights_and_memory_arithmetic() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        assert_eq!(vm_memory_bytes(256, 64), Some(320 << 20));
        assert_eq!(vm_memory_bytes(u64::MAX, 1), None);
        assert_eq!(vm_memory_bytes(u64::MAX >> 10, 0), None);
    }

    /// On a real cgroup2 file system, mounted in a mount namespace of this
    /// test's own thread: the kernel decides which controllers there are.
    /// On a v2 host the limits land; on a hybrid host (memory, cpu and pids
    /// bound to v1) creation is refused, naming the controller, and nothing
    /// is left.
    #[test]
    fn v2_on_a_real_cgroup2_mount() {
        let t = tempfile::tempdir().unwrap();
        let at = t.path().to_path_buf();
        std::thread::spawn(move || {
            use rustix::mount::{
                mount, mount_change, unmount, MountFlags, MountPropagationFlags, UnmountFlags,
            };
            use rustix::thread::UnshareFlags;
            // SAFETY: only this thread's file system context and mount
            // namespace are unshared; no descriptor table is (no FILES flag).
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
                .expect("unshare(CLONE_FS|CLONE_NEWNS) (runs as root)");
            // Private first, so the mount below stays in this namespace.
            mount_change(
                "/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .unwrap();
            mount("none", &at, "cgroup2", MountFlags::empty(), None).expect("mount cgroup2");
            let h = Hierarchy {
                controllers: vec![],
                mount: at.clone(),
                root: "/".into(),
            };
            let c = Config {
                cgroup: CgroupConfig {
                    allowed_parents: vec!["/runm-unit-test".into()],
                    ..CgroupConfig::default()
                },
                ..Config::default()
            };
            let name = format!("/runm-unit-test/{}", std::process::id());
            let p = placement(Some(&name), "c", Path::new("/r"), false, &c).unwrap();
            let root_has = read_list(&at.join("cgroup.controllers")).unwrap();
            let result = Cgroups::create_in(&p, &Layout::V2(h), &HashMap::new(), &limits());
            let leaf = at.join(name.trim_start_matches('/'));
            if REQUIRED.iter().all(|c| root_has.iter().any(|r| r == c)) {
                let cg = result.expect("a v2 host offers memory, cpu and pids");
                assert_eq!(read(&leaf.join("memory.max")), "536870912");
                assert_eq!(read(&leaf.join("pids.max")), "4096");
                assert_eq!(read(&leaf.join("cpu.max")), "200000 100000");
                cg.remove();
            } else {
                let e = result.unwrap_err().to_string();
                let first_missing = REQUIRED
                    .iter()
                    .find(|c| !root_has.iter().any(|r| r == *c))
                    .unwrap();
                assert!(
                    e.contains(&format!(
                        "the cgroup v2 controller {first_missing} is not available in {}",
                        at.display()
                    )),
                    "{e}"
                );
                eprintln!("hybrid host: v2 refused as it should be: {e}");
            }
            assert!(!leaf.exists(), "nothing left");
            assert!(!at.join("runm-unit-test").exists(), "nothing left");
            unmount(&at, UnmountFlags::DETACH).unwrap();
        })
        .join()
        .unwrap();
    }
}
