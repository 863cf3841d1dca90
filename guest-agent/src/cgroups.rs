//! The containers' cgroups inside the guest (cgroup v2).
//!
//! Owns `/sys/fs/cgroup/runm/<id>`: one cgroup per container, with the
//! memory, CPU and pids controllers enabled above it and the container's
//! limits written into it, so that several containers of one guest are
//! limited separately. The agent stays in the root cgroup; a container's
//! processes are moved into its cgroup before they run anything.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::proto::ResourcesSpec;

/// Where the agent mounts the cgroup v2 hierarchy at boot.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The controllers containers get.
const CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// Errors making a container's cgroup; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A container id that cannot name a directory.
    #[error("container id {0:?} cannot name a cgroup")]
    BadId(String),
    /// A write or directory operation failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
}

/// The file lines for `r`: (file, value).
pub fn limit_files(r: &ResourcesSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = r.memory_max {
        out.push(("memory.max", m.to_string()));
    }
    if let Some((quota, period)) = r.cpu_max {
        out.push(("cpu.max", format!("{quota} {period}")));
    }
    if let Some(w) = r.cpu_weight {
        out.push(("cpu.weight", w.clamp(1, 10_000).to_string()));
    }
    if let Some(p) = r.pids_max {
        out.push(("pids.max", p.to_string()));
    }
    out
}

impl Cgroup {
    /// Makes the cgroup of container `id` under `root` with limits `r`.
    pub fn create(root: &Path, id: &str, r: &ResourcesSpec) -> Result<Cgroup, CgroupError> {
        if id.is_empty() || id.len() > 255 || id.contains('/') || id == "." || id == ".." {
            return Err(CgroupError::BadId(id.to_owned()));
        }
        let parent = root.join("runm");
        // Controllers the kernel lacks are refused here; that matters only
        // if a limit needs them, which the limit's own write then reports.
        enable_controllers(root);
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&parent)(e)),
        }
        enable_controllers(&parent);
        let dir = parent.join(id);
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let cg = Cgroup { dir };
        for (file, value) in limit_files(r) {
            let path = cg.dir.join(file);
            if let Err(e) = fs::write(&path, &value) {
                cg.remove();
                return Err(io_err(&path)(e));
            }
        }
        Ok(cg)
    }

    /// Its `cgroup.procs`: writing a pid there moves that process in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Stops (or continues) every process in it (`cgroup.freeze`), and
    /// waits, a little, until the kernel says it is so (`cgroup.events`).
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let path = self.dir.join("cgroup.freeze");
        fs::write(&path, if frozen { "1" } else { "0" }).map_err(io_err(&path))?;
        let events = self.dir.join("cgroup.events");
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..100 {
            match fs::read_to_string(&events) {
                Ok(t) if t.lines().any(|l| l == want) => return Ok(()),
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Err(io_err(&events)(e)),
            }
        }
        Err(io_err(&events)(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("not '{want}' after 2 s"),
        )))
    }

    /// Removes it, waiting a little for processes just killed to leave it
    /// (a failed `Create` is retried with the same id). Errors are ignored:
    /// the guest goes away with its container.
    pub fn remove(&self) {
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => return,
            }
        }
    }
}

fn enable_controllers(dir: &Path) {
    let control = dir.join("cgroup.subtree_control");
    for c in CONTROLLERS {
        let _ = fs::write(&control, format!("+{c}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_cgroup_files() {
        let r = ResourcesSpec {
            memory_max: Some(1 << 20),
            cpu_max: Some((50_000, 100_000)),
            cpu_weight: Some(0),
            pids_max: Some(20),
        };
        assert_eq!(
            limit_files(&r),
            vec![
                ("memory.max", "1048576".to_string()),
                ("cpu.max", "50000 100000".into()),
                ("cpu.weight", "1".into()),
                ("pids.max", "20".into()),
            ]
        );
        assert!(limit_files(&ResourcesSpec::default()).is_empty());
    }

    #[test]
    fn create_writes_limits_and_refuses_bad_ids() {
        // A plain directory stands in for the cgroup file system: the
        // layout and the writes are what is checked here.
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "..", "a/b"] {
            assert!(matches!(
                Cgroup::create(root.path(), bad, &ResourcesSpec::default()),
                Err(CgroupError::BadId(_))
            ));
        }
        let r = ResourcesSpec {
            pids_max: Some(7),
            ..ResourcesSpec::default()
        };
        let cg = Cgroup::create(root.path(), "c1", &r).unwrap();
        assert_eq!(cg.procs(), root.path().join("runm/c1/cgroup.procs"));
        assert_eq!(
            fs::read_to_string(root.path().join("runm/c1/pids.max")).unwrap(),
            "7"
        );
        assert!(Cgroup::create(root.path(), "c1", &r).is_err(), "exists");
        fs::remove_file(root.path().join("runm/c1/pids.max")).unwrap();
        cg.remove();
        assert!(!root.path().join("runm/c1").exists());
    }
}
