//! Per-VM uids: each VM process runs as a uid of its own, taken from the
//! range runm's configuration gives (`vm_uid_range`), so that a guest
//! breaking out of one VMM finds no other VM's process, memory or files
//! owned by its uid.
//!
//! Owns choosing the uid: the sandbox takes the first uid of the range (from
//! a point that depends on the container's id) whose lock file under
//! [`LOCK_DIR`] it can lock, and holds the lock for its life. The kernel
//! drops the lock when the sandbox ends, however it ends, so a uid is never
//! given twice at a time, across runm roots and engines, and nothing needs
//! cleaning up.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// Where the locks live: one directory for the whole host.
pub const LOCK_DIR: &str = "/run/runm-vm-uids";

/// Errors choosing a VM's uid.
#[derive(Debug, thiserror::Error)]
pub enum VmUidError {
    /// Every uid of the range is taken.
    #[error(
        "every uid of vm_uid_range {first}-{last} (runm's configuration) is in use by a running VM"
    )]
    Exhausted {
        /// First uid.
        first: u32,
        /// Last uid.
        last: u32,
    },
    /// A lock file could not be made or locked.
    #[error("per-VM uid lock {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A uid held for one VM until this is dropped (or its process ends).
#[derive(Debug)]
pub struct VmUid {
    /// The uid (also the VM process's gid).
    pub uid: u32,
    _lock: File,
}

impl VmUid {
    /// `uid:gid` as the VM's user (QEMU's `-runas`, runm-vmm's jail).
    pub fn user(&self) -> String {
        format!("{0}:{0}", self.uid)
    }
}

/// Takes a free uid of `first..=last` for container `id`, locking under `dir`.
pub fn take(dir: &Path, first: u32, last: u32, id: &str) -> Result<VmUid, VmUidError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VmUidError::Io { path, source }
    };
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let count = u64::from(last - first) + 1;
    // Spread the starting points: containers started together then rarely
    // try the same files.
    let start = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) % count;
    for i in 0..count {
        let uid = first + u32::try_from((start + i) % count).unwrap_or(0);
        let path = dir.join(uid.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(&path))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(VmUid { uid, _lock: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(io_err(&path)(e.into())),
        }
    }
    Err(VmUidError::Exhausted { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_gets_a_uid_of_its_own_until_it_ends() {
        let d = tempfile::tempdir().unwrap();
        let a = take(d.path(), 5000, 5002, "a").unwrap();
        let b = take(d.path(), 5000, 5002, "a").unwrap();
        let c = take(d.path(), 5000, 5002, "b").unwrap();
        let mut uids = vec![a.uid, b.uid, c.uid];
        uids.sort_unstable();
        assert_eq!(uids, [5000, 5001, 5002], "three VMs, three uids");
        assert_eq!(a.user(), format!("{0}:{0}", a.uid));
        let e = take(d.path(), 5000, 5002, "c").unwrap_err().to_string();
        assert!(e.contains("5000-5002") && e.contains("in use"), "{e}");
        let freed = b.uid;
        drop(b);
        assert_eq!(take(d.path(), 5000, 5002, "d").unwrap().uid, freed);
    }
}
