//! The host directories a container's guest sees: one virtio-fs share.
//!
//! Owns the share of a container, `<root>/<id>/share`, served by one
//! virtiofsd per VM: its layout (the root file system at
//! [`SHARE_ROOTFS`], bind mount `N`'s source at [`SHARE_MOUNTS`]`/N`),
//! checking bind sources before anything is made, making the binds inside
//! the sandbox's own mount namespace (so the host's mount table never sees
//! them, and they go when the sandbox and its children do), starting and
//! stopping the daemon, and removing the layout without ever descending
//! into something still mounted there.
//!
//! Every source is opened once and bound from that descriptor, so a path
//! swapped for a symlink after the check changes nothing; the host side of
//! every bind is `nosuid,nodev` (virtiofsd never opens a host device node
//! for a guest), and `ro` where the bundle asks for it, which a hostile
//! guest kernel cannot undo.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use guest_agent::proto::{MountSpec, SHARE_MOUNTS, SHARE_ROOTFS};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use serde::{Deserialize, Serialize};

use crate::state::ContainerDir;
use crate::sys;

/// Where virtiofsd finds its listening socket.
const DAEMON_SOCKET_FD: i32 = 3;

/// Errors sharing host directories with the guest.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// A bind mount's source cannot be shared.
    #[error("bind mount of {source_path} at {destination}: {why}")]
    Source {
        /// The host path.
        source_path: PathBuf,
        /// Where the container wanted it.
        destination: String,
        /// What is wrong with it.
        why: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// virtiofsd did not start serving the share.
    #[error("virtiofsd ({program}) did not serve {share}: {why}")]
    Daemon {
        /// The daemon.
        program: PathBuf,
        /// The shared directory.
        share: PathBuf,
        /// What happened, with the end of its log.
        why: String,
    },
    /// Something left mounted where the layout is removed.
    #[error("{0} is still mounted: refusing to remove it")]
    StillMounted(PathBuf),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ShareError {
    let path = path.to_path_buf();
    move |source| ShareError::Io { what, path, source }
}

/// One bind mount, as the host makes it in the share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBind {
    /// The host file or directory (absolute).
    pub source: PathBuf,
    /// Where the container sees it (for errors).
    pub destination: String,
    /// `rbind`: the mounts below the source come with it.
    pub recursive: bool,
    /// `ro`: read-only on the host side too.
    pub readonly: bool,
}

/// A mount point the guest cannot make in a read-only root: made in
/// `root.path` on the host before it is shared read-only, as runc makes
/// its mount points before it remounts the root read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// The mount's destination (absolute, in the container).
    pub destination: String,
    /// For a bind mount, its number: a file source needs a file.
    pub bind: Option<usize>,
}

/// The mount points of `mounts` (the guest's list, in order) that lie in
/// the root itself: a destination below an earlier mount's is made inside
/// that mount by the guest.
pub fn root_mount_points(mounts: &[MountSpec]) -> Vec<MountPoint> {
    let below = |dest: &str, parent: &str| {
        let parent = parent.trim_end_matches('/');
        dest == parent
            || dest
                .strip_prefix(parent)
                .is_some_and(|r| r.starts_with('/'))
    };
    mounts
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            m.destination != "/"
                && !mounts[..*i]
                    .iter()
                    .any(|e| below(&m.destination, &e.destination))
        })
        .map(|(_, m)| MountPoint {
            destination: m.destination.clone(),
            bind: matches!(m.fstype.as_str(), "bind" | "rbind")
                .then(|| {
                    m.source
                        .strip_prefix(SHARE_MOUNTS)
                        .and_then(|n| n.strip_prefix('/'))
                        .and_then(|n| n.parse().ok())
                })
                .flatten(),
        })
        .collect()
}

/// Makes `dest` inside the open root directory `root` where it is missing
/// (a directory, or an empty file when `file`), with its missing parents;
/// every lookup stays inside the root (`RESOLVE_IN_ROOT`), whatever
/// symbolic links the root holds.
fn make_mount_point(root: &OwnedFd, dest: &str, file: bool) -> Result<(), ShareError> {
    use rustix::fs::ResolveFlags;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |p: &Path| {
        rustix::fs::openat2(
            root,
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    let parts: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    let mut at = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let here = at.join(part);
        let err = |e: rustix::io::Errno| {
            io_err("cannot make the mount point", &Path::new("/").join(&here))(e.into())
        };
        match open(&here) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => {
                let parent = open(if i == 0 { Path::new(".") } else { &at }).map_err(err)?;
                let made = if i + 1 == parts.len() && file {
                    rustix::fs::openat(
                        &parent,
                        *part,
                        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o644),
                    )
                    .map(drop)
                } else {
                    rustix::fs::mkdirat(&parent, *part, Mode::from_raw_mode(0o755))
                };
                match made {
                    Ok(()) => {}
                    // A dangling symbolic link: left as it is; the guest
                    // says what it finds there.
                    Err(rustix::io::Errno::EXIST) => return Ok(()),
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) => return Err(err(e)),
        }
        at = here;
    }
    Ok(())
}

/// What the sandbox shares: the root file system (unless it is a block
/// device image) and the bind mounts, in the order of their numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePlan {
    /// The bundle (absolute) and its `root.path`, when the root is shared.
    pub root: Option<(PathBuf, PathBuf)>,
    /// `root.readonly`.
    pub root_readonly: bool,
    /// With a read-only root: the mount points made in it first.
    pub mount_points: Vec<MountPoint>,
    /// Bind mount `N` is `binds[N]`.
    pub binds: Vec<HostBind>,
    /// The virtiofsd binary.
    pub virtiofsd: PathBuf,
}

/// Opens a bind source (following symbolic links, as mount(2) does) and
/// checks that it is a directory or a regular file. The descriptor is
/// what gets bound.
pub fn open_source(bind: &HostBind) -> Result<OwnedFd, ShareError> {
    let fail = |why: String| ShareError::Source {
        source_path: bind.source.clone(),
        destination: bind.destination.clone(),
        why,
    };
    if !bind.source.is_absolute() {
        return Err(fail("the source is not an absolute path".into()));
    }
    let fd = rustix::fs::open(&bind.source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| match e {
            rustix::io::Errno::NOENT => fail("the source does not exist".into()),
            e => fail(format!("cannot open the source: {}", io::Error::from(e))),
        })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| fail(io::Error::from(e).to_string()))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory | FileType::RegularFile => Ok(fd),
        FileType::CharacterDevice | FileType::BlockDevice => Err(fail(
            "the source is a device node: a VM's devices are its own (use linux.devices)".into(),
        )),
        FileType::Socket => Err(fail(
            "the source is a Unix socket, which cannot cross into a VM".into(),
        )),
        FileType::Fifo => Err(fail(
            "the source is a FIFO, which cannot cross into a VM".into(),
        )),
        _ => Err(fail("the source is neither a file nor a directory".into())),
    }
}

/// The path through which a descriptor of ours is bound.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Bind-mounts the open `source` at `target`, then sets the host side's
/// flags: `nosuid,nodev` always, `ro` when asked.
fn bind(
    source: &OwnedFd,
    target: &Path,
    recursive: bool,
    readonly: bool,
) -> Result<(), ShareError> {
    let from = fd_path(source);
    let err = |e: rustix::io::Errno| io_err("cannot bind-mount onto", target)(e.into());
    if recursive {
        rustix::mount::mount_bind_recursive(&from, target).map_err(err)?;
    } else {
        rustix::mount::mount_bind(&from, target).map_err(err)?;
    }
    let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
    if readonly {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount_remount(target, flags, "").map_err(err)
}

/// Gives this process a mount namespace of its own, into which nothing of
/// the host propagates back (the host's unmounts still reach it). Must be
/// called while the process has one thread.
fn own_mount_namespace() -> Result<(), ShareError> {
    let err = |e: rustix::io::Errno| {
        io_err("cannot make a mount namespace for", Path::new("/"))(e.into())
    };
    // SAFETY: only NEWNS (and the CLONE_FS it implies) is unshared, never
    // the descriptor table, so no thread can lose a descriptor; the sandbox
    // calls this during its single-threaded set-up.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(err)?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(err)
}

/// The share, mounted and served: the daemon is stopped when this is dropped.
#[derive(Debug)]
pub struct Share {
    daemon: Child,
}

impl Share {
    /// Makes the share of `dir` as `plan` says, in a mount namespace of the
    /// calling process's own, and starts virtiofsd on it.
    pub fn start(dir: &ContainerDir, plan: &SharePlan) -> Result<Share, ShareError> {
        // First: a mount of another namespace cannot be bound, so the
        // sources are opened (and checked again) in ours.
        own_mount_namespace()?;
        let root = match &plan.root {
            Some((bundle, path)) => {
                Some(
                    crate::bundle::open_root(bundle, path).map_err(|e| ShareError::Source {
                        source_path: bundle.join(path),
                        destination: "/".into(),
                        why: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let sources = plan
            .binds
            .iter()
            .map(open_source)
            .collect::<Result<Vec<_>, _>>()?;
        let share = dir.share_dir();
        let mkdir = |p: &Path, mode| {
            fs::DirBuilder::new()
                .mode(mode)
                .create(p)
                .map_err(io_err("cannot create", p))
        };
        mkdir(&share, 0o700)?;
        let mounts = share.join(SHARE_MOUNTS);
        mkdir(&mounts, 0o700)?;
        if let (Some(root), true) = (&root, plan.root_readonly) {
            for m in &plan.mount_points {
                let file = m.bind.and_then(|n| sources.get(n)).is_some_and(|fd| {
                    rustix::fs::fstat(fd)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::Directory)
                });
                make_mount_point(root.fd(), &m.destination, file)?;
            }
        }
        if let Some(root) = &root {
            let target = share.join(SHARE_ROOTFS);
            mkdir(&target, 0o755)?;
            // Recursive: the root directory may hold mounts of its own.
            bind(root.fd(), &target, true, plan.root_readonly)?;
        }
        for (i, (b, fd)) in plan.binds.iter().zip(&sources).enumerate() {
            let target = mounts.join(i.to_string());
            let is_dir = rustix::fs::fstat(fd)
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                .unwrap_or(false);
            if is_dir {
                mkdir(&target, 0o755)?;
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io_err("cannot create", &target))?;
            }
            bind(fd, &target, b.recursive, b.readonly)?;
        }
        drop(sources);
        drop(root);
        let daemon = spawn_daemon(dir, &plan.virtiofsd)?;
        Ok(Share { daemon })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        // Its sandbox forks; the group takes that child too.
        if let Ok(None) = self.daemon.try_wait() {
            if let Ok(pid) = i32::try_from(self.daemon.id()) {
                let _ = sys::kill_group(pid, libc::SIGKILL);
            }
        }
        let _ = self.daemon.wait();
    }
}

/// Starts virtiofsd on `dir`'s share with its own sandboxing (a mount, PID
/// and network namespace of its own, rooted in the share; seccomp). Its
/// socket is made and listening before it starts (`--fd`): the VM can
/// connect at once, nobody waits for the daemon to get there, and if it
/// dies the VM's connection fails instead of hanging.
fn spawn_daemon(dir: &ContainerDir, program: &Path) -> Result<Child, ShareError> {
    let share = dir.share_dir();
    let socket = dir.virtiofs_socket();
    let log_path = dir.virtiofsd_log();
    let log = fs::File::create(&log_path).map_err(io_err("cannot create", &log_path))?;
    // However long the container directory's path (see sys::bind_unix).
    let listener = sys::bind_unix(&socket).map_err(io_err("cannot listen on", &socket))?;
    let mut cmd = Command::new(program);
    cmd.args(["--fd", &DAEMON_SOCKET_FD.to_string()])
        .arg("--shared-dir")
        .arg(&share)
        .args(["--sandbox", "namespace", "--seccomp", "kill"])
        // Each bind is a mount of its own in the share: the guest sees
        // them as such, and their inode numbers cannot collide.
        .arg("--announce-submounts")
        .args(["--cache", "auto", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    sys::configure_child(
        &mut cmd,
        sys::ChildSetup {
            setsid: true,
            parent_death_signal: Some(libc::SIGKILL),
            chdir_root: true,
            dup2: vec![(listener.as_raw_fd(), DAEMON_SOCKET_FD)],
            ..sys::ChildSetup::default()
        },
    );
    let child = cmd.spawn().map_err(|e| ShareError::Daemon {
        program: program.to_path_buf(),
        share: share.clone(),
        why: format!("cannot start it: {e}"),
    });
    // Ours closed: the daemon holds the only listening end.
    drop(listener);
    if child.is_err() {
        let _ = fs::remove_file(&socket);
    }
    child
}

/// Removes the share's layout from `share` without descending into
/// anything: every entry is removed on its own (rmdir, unlink), which fails
/// on a mount point rather than deleting what is mounted there.
pub fn remove_layout(share: &Path) -> Result<(), ShareError> {
    let gone = |r: io::Result<()>, p: &Path| match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            Err(ShareError::StillMounted(p.to_path_buf()))
        }
        Err(e) => Err(io_err("cannot remove", p)(e)),
    };
    let mounts = share.join(SHARE_MOUNTS);
    if let Ok(entries) = fs::read_dir(&mounts) {
        for entry in entries.flatten() {
            let p = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                gone(fs::remove_dir(&p), &p)?;
            } else {
                gone(fs::remove_file(&p), &p)?;
            }
        }
    }
    gone(fs::remove_dir(&mounts), &mounts)?;
    let root = share.join(SHARE_ROOTFS);
    gone(fs::remove_dir(&root), &root)?;
    gone(fs::remove_dir(share), share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_of(source: &Path) -> HostBind {
        HostBind {
            source: source.to_path_buf(),
            destination: "/data".into(),
            recursive: false,
            readonly: false,
        }
    }

    #[test]
    fn sources_must_be_files_or_directories() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("hosts");
        fs::write(&file, "127.0.0.1 localhost\n").unwrap();
        assert!(open_source(&bind_of(&file)).is_ok());
        assert!(open_source(&bind_of(d.path())).is_ok());
        let why = |p: &Path| open_source(&bind_of(p)).unwrap_err().to_string();
        let e = why(&d.path().join("missing"));
        assert!(e.contains("does not exist") && e.contains("/data"), "{e}");
        assert!(why(Path::new("/dev/null")).contains("device node"));
        assert!(why(Path::new("relative/path")).contains("not an absolute path"));
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(why(&sock).contains("Unix socket"));
    }

    fn spec(destination: &str, fstype: &str, source: &str) -> MountSpec {
        MountSpec {
            destination: destination.into(),
            fstype: fstype.into(),
            source: source.into(),
            options: Vec::new(),
        }
    }

    #[test]
    fn mount_points_in_the_root_are_those_below_no_earlier_mount() {
        let mounts = [
            spec("/dev", "tmpfs", "tmpfs"),
            spec("/run", "tmpfs", "tmpfs"),
            spec("/data", "rbind", "mounts/0"),
            spec("/dev/pts", "devpts", "devpts"),
            spec("/etc/hosts", "bind", "mounts/1"),
            spec("/run/.containerenv", "bind", "mounts/2"),
            spec("/devices", "tmpfs", "tmpfs"),
        ];
        let got: Vec<(String, Option<usize>)> = root_mount_points(&mounts)
            .into_iter()
            .map(|m| (m.destination, m.bind))
            .collect();
        let want = [
            ("/dev", None),
            ("/run", None),
            ("/data", Some(0)),
            ("/etc/hosts", Some(1)),
            ("/devices", None),
        ];
        assert_eq!(
            got,
            want.map(|(d, b)| (d.to_string(), b)).to_vec(),
            "/dev/pts and /run/.containerenv are made in their tmpfs by the guest"
        );
    }

    #[test]
    fn mount_points_are_made_inside_the_root_only() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // A link pointing out of the root resolves inside it instead.
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        fs::write(root.join("etc/hostname"), "kept\n").unwrap();
        let fd = rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        make_mount_point(&fd, "/var/tmp", false).unwrap();
        make_mount_point(&fd, "/etc/hosts", true).unwrap();
        make_mount_point(&fd, "/etc/hostname", true).unwrap();
        make_mount_point(&fd, "/escape/x", false).unwrap();
        fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        make_mount_point(&fd, "/escape/x", false).unwrap();
        assert!(root.join("var/tmp").is_dir());
        assert!(root.join("etc/hosts").is_file());
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "kept\n"
        );
        assert!(!outside.join("x").exists(), "nothing made outside the root");
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x")
            .is_dir());
        let e = make_mount_point(&fd, "/etc/hosts/x", false).unwrap_err();
        assert!(e.to_string().contains("/etc/hosts"), "{e}");
    }

    #[test]
    fn the_layout_is_removed_entry_by_entry() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        fs::create_dir_all(share.join(SHARE_MOUNTS).join("0")).unwrap();
        fs::write(share.join(SHARE_MOUNTS).join("1"), "").unwrap();
        fs::create_dir_all(share.join(SHARE_ROOTFS)).unwrap();
        remove_layout(&share).unwrap();
        assert!(!share.exists());
        remove_layout(&share).unwrap();
        // Something that is not the empty layout (what a mount would show)
        // is never deleted.
        fs::create_dir_all(share.join(SHARE_ROOTFS).join("etc")).unwrap();
        assert!(remove_layout(&share).is_err());
        assert!(share.join(SHARE_ROOTFS).join("etc").exists());
    }
}
