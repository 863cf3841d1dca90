//! Network namespaces named by path (`/var/run/netns/NAME`,
//! `/proc/PID/ns/net`): opening one, checking that it is one, and running
//! code inside it on a thread of its own, so that the rest of the process
//! stays where it is; and the namespaces runm makes itself for a container
//! that asks for a new one, kept alive by a bind mount of their nsfs file
//! (as `ip netns add` does) until runm unbinds them.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{mount_bind, unmount, UnmountFlags};
use rustix::thread::{move_into_link_name_space, unshare_unsafe, LinkNameSpaceType, UnshareFlags};

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

    /// Opens the namespace a container names, refusing the host's own
    /// (runm's, or PID 1's): its interfaces are the host's.
    pub fn open_for_container(path: &Path) -> Result<Self, NetworkError> {
        let ns = Self::open(path)?;
        let id = |f: &File| {
            f.metadata().ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
        };
        let mine = id(&ns.file);
        for host in ["/proc/self/ns/net", "/proc/1/ns/net"] {
            if let Ok(f) = File::open(host) {
                if mine.is_some() && id(&f) == mine {
                    return Err(NetworkError::HostNamespace(path.to_owned()));
                }
            }
        }
        Ok(ns)
    }

    /// Makes a new network namespace and binds it at `path`, a file made
    /// here (it must not exist). On an error nothing is left.
    pub fn create_bound(path: &Path) -> Result<Self, NetworkError> {
        let err = |source: io::Error| NetworkError::NetnsCreate {
            path: path.to_owned(),
            source,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(err)?;
        let bound = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("runm-netns-new".into())
                .spawn_scoped(s, || -> io::Result<()> {
                    // SAFETY: only CLONE_NEWNET, and on a thread of its own
                    // that ends here: no descriptor table is unshared.
                    unsafe { unshare_unsafe(UnshareFlags::NEWNET) }?;
                    mount_bind("/proc/thread-self/ns/net", path)?;
                    Ok(())
                })
                .map_err(err)?
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
                .map_err(err)
        });
        if let Err(e) = bound {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Self::open(path).inspect_err(|_| {
            let _ = Self::unbind(path);
        })
    }

    /// Undoes [`NetNs::create_bound`]: unmounts the namespace (it ends once
    /// nothing else holds it) and removes the file. A file that is not
    /// there, or not mounted, is fine: it may run twice.
    pub fn unbind(path: &Path) -> Result<(), NetworkError> {
        let err = |source: io::Error| NetworkError::NetnsCreate {
            path: path.to_owned(),
            source,
        };
        match unmount(path, UnmountFlags::DETACH) {
            Ok(()) => {}
            // Not a mount point (EINVAL) or not there (ENOENT).
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
            Err(e) => return Err(err(e.into())),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// The open namespace (for `setns` in a child process).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
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
