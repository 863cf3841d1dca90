//! Network namespaces named by path (`/var/run/netns/NAME`,
//! `/proc/PID/ns/net`): opening one, checking that it is one, and running
//! code inside it on a thread of its own, so that the rest of the process
//! stays where it is.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use super::NetworkError;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path`; refuses anything that is not a
    /// network namespace.
    pub fn open(path: &Path) -> Result<Self, NetworkError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => NetworkError::NetnsMissing(path.to_owned()),
            _ => NetworkError::NetnsOpen {
                path: path.to_owned(),
                source,
            },
        })?;
        let fs = rustix::fs::fstatfs(&file).map_err(|e| NetworkError::NetnsOpen {
            path: path.to_owned(),
            source: e.into(),
        })?;
        if fs.f_type != libc::NSFS_MAGIC {
            return Err(NetworkError::NotANamespace(path.to_owned()));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and returns the
        // namespace's CLONE_NEW* type; `file` is an open nsfs descriptor.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(NetworkError::NetnsOpen {
                path: path.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        if kind != libc::CLONE_NEWNET {
            return Err(NetworkError::NotANetworkNamespace {
                path: path.to_owned(),
                kind: namespace_kind(kind),
            });
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Where it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread that has entered the namespace (and ends
    /// with `f`). Sockets and taps opened there stay in the namespace and
    /// may be used from any thread afterwards.
    pub fn run<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, NetworkError> + Send,
    ) -> Result<T, NetworkError> {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("runm-netns".into())
                .spawn_scoped(s, || {
                    move_into_link_name_space(self.file.as_fd(), Some(LinkNameSpaceType::Network))
                        .map_err(|e| NetworkError::Enter {
                            path: self.path.clone(),
                            source: e.into(),
                        })?;
                    f()
                })
                .map_err(NetworkError::Thread)?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

fn namespace_kind(kind: libc::c_int) -> &'static str {
    match kind {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}
