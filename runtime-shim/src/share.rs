//! The host directories a container's guest sees: one virtio-fs share.
//!
//! Owns the share of a container, `<root>/<id>/share`, served by one
//! virtiofsd per VM: its layout (the root file system at
//! [`SHARE_ROOTFS`], bind mount `N`'s source at [`SHARE_MOUNTS`]`/N`, and
//! the same for each further container of a pod at
//! [`SHARE_CONTAINERS`]`/<id>/`), checking bind sources before anything is
//! made, making the binds inside the sandbox's own mount namespace (so the
//! host's mount table never sees them, and they go when the sandbox and its
//! children do), starting and stopping the daemon, and removing the layout
//! without ever descending into something still mounted there.
//!
//! Every source is opened once, in the mount namespace where the bundle's
//! paths mean what the engine meant, and cloned there as a detached mount
//! tree (`open_tree`), which is then moved into the share, in whichever
//! namespace that is: a path swapped for a symlink after the check changes
//! nothing, and a pod member's mounts reach its pod's share although they
//! were made after the pod's sandbox left the host's namespace. The host
//! side of every bind is `nosuid,nodev` (virtiofsd never opens a host device
//! node for a guest), and `ro` where the bundle asks for it, which a hostile
//! guest kernel cannot undo. The share itself is a shared mount, so what a
//! pod member adds after virtiofsd started reaches the daemon's own (slave)
//! mount namespace.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use guest_agent::proto::{ContainerSpec, MountSpec, SHARE_MOUNTS, SHARE_ROOTFS};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};

use crate::state::ContainerDir;
use crate::sys;

/// Where virtiofsd finds its listening socket.
const DAEMON_SOCKET_FD: i32 = 3;

/// The directory of the share holding one entry per further container of
/// the pod (its root at `<id>/`[`SHARE_ROOTFS`], its binds at
/// `<id>/`[`SHARE_MOUNTS`]).
pub const SHARE_CONTAINERS: &str = "containers";

/// Points a pod member's root and bind sources at its entry of the pod's
/// share ([`SHARE_CONTAINERS`]`/<id>/...`).
pub fn in_pod_share(spec: &mut ContainerSpec) {
    let prefix = format!("{SHARE_CONTAINERS}/{}", spec.id);
    spec.root.source = format!("{prefix}/{}", spec.root.source);
    for m in &mut spec.mounts {
        if matches!(m.fstype.as_str(), "bind" | "rbind") {
            m.source = format!("{prefix}/{}", m.source);
        }
    }
}

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

/// A detached copy of the mount tree at the open `source` (with the mounts
/// below it when `recursive`), made in the caller's mount namespace and
/// movable into another.
fn clone_tree(source: &OwnedFd, recursive: bool, what: &Path) -> Result<OwnedFd, ShareError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(source, "", flags)
        .map_err(|e| io_err("cannot clone the mount of", what)(e.into()))
}

/// Moves the detached `tree` onto `target`, then sets the host side's
/// flags: `nosuid,nodev` always, `ro` when asked.
fn attach(tree: &OwnedFd, target: &Path, readonly: bool) -> Result<(), ShareError> {
    let err = |e: rustix::io::Errno| io_err("cannot bind-mount onto", target)(e.into());
    rustix::mount::move_mount(
        tree,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(err)?;
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

/// A share's sources, opened, checked and cloned as detached mount trees.
struct Trees {
    /// The root directory (kept open for its mount points) and its tree.
    root: Option<(crate::bundle::RootDir, OwnedFd)>,
    /// Each bind's tree, and whether its source is a directory.
    binds: Vec<(OwnedFd, bool)>,
}

impl Trees {
    /// Opens what `plan` shares, in the caller's mount namespace.
    fn open(plan: &SharePlan) -> Result<Trees, ShareError> {
        let root = match &plan.root {
            Some((bundle, path)) => {
                let dir =
                    crate::bundle::open_root(bundle, path).map_err(|e| ShareError::Source {
                        source_path: bundle.join(path),
                        destination: "/".into(),
                        why: e.to_string(),
                    })?;
                // Recursive: the root directory may hold mounts of its own.
                let tree = clone_tree(dir.fd(), true, &bundle.join(path))?;
                Some((dir, tree))
            }
            None => None,
        };
        let binds = plan
            .binds
            .iter()
            .map(|b| {
                let fd = open_source(b)?;
                let is_dir = rustix::fs::fstat(&fd)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                Ok((clone_tree(&fd, b.recursive, &b.source)?, is_dir))
            })
            .collect::<Result<Vec<_>, ShareError>>()?;
        Ok(Trees { root, binds })
    }

    /// Lays the trees out in the directory `at`: the root at
    /// [`SHARE_ROOTFS`], bind `N` at [`SHARE_MOUNTS`]`/N`, with a read-only
    /// root's mount points made in it first.
    fn lay_out(self, at: &Path, plan: &SharePlan) -> Result<(), ShareError> {
        let mounts = at.join(SHARE_MOUNTS);
        mkdir(&mounts, 0o700)?;
        if let Some((dir, tree)) = &self.root {
            if plan.root_readonly {
                for m in &plan.mount_points {
                    let file = m
                        .bind
                        .and_then(|n| self.binds.get(n))
                        .is_some_and(|(_, is_dir)| !is_dir);
                    make_mount_point(dir.fd(), &m.destination, file)?;
                }
            }
            let target = at.join(SHARE_ROOTFS);
            mkdir(&target, 0o755)?;
            attach(tree, &target, plan.root_readonly)?;
        }
        for (i, (b, (tree, is_dir))) in plan.binds.iter().zip(&self.binds).enumerate() {
            let target = mounts.join(i.to_string());
            if *is_dir {
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
            attach(tree, &target, b.readonly)?;
        }
        Ok(())
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<(), ShareError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(io_err("cannot create", p))
}

impl Share {
    /// Makes the share of `dir` as `plan` says, in a mount namespace of the
    /// calling process's own, and starts virtiofsd on it.
    pub fn start(dir: &ContainerDir, plan: &SharePlan) -> Result<Share, ShareError> {
        own_mount_namespace()?;
        let share = dir.share_dir();
        // The share is a mount of its own, shared: the daemon's namespace,
        // made from ours, receives what pod members add to it later.
        mkdir(&share, 0o700)?;
        let err = |e: rustix::io::Errno| io_err("cannot make a shared mount of", &share)(e.into());
        rustix::mount::mount_bind(&share, &share).map_err(err)?;
        rustix::mount::mount_change(&share, MountPropagationFlags::SHARED).map_err(err)?;
        mkdir(&share.join(SHARE_CONTAINERS), 0o700)?;
        let trees = Trees::open(plan)?;
        trees.lay_out(&share, plan)?;
        let daemon = spawn_daemon(dir, &plan.virtiofsd)?;
        Ok(Share { daemon })
    }
}

/// Shares a pod member's root and binds with its pod's guest: opens them
/// here (the caller's namespace, where the bundle's paths are the engine's),
/// enters the mount namespace of the pod's sandbox `pod_pid` (the caller
/// must have one thread) and lays them out in the pod's `share` at
/// [`SHARE_CONTAINERS`]`/<id>`, whence they reach the pod's virtiofsd. The
/// pod's sandbox removes them ([`remove_member`]).
pub fn attach_member(
    pod_pid: i32,
    share: &Path,
    id: &str,
    plan: &SharePlan,
) -> Result<(), ShareError> {
    let trees = Trees::open(plan)?;
    let ns_path = PathBuf::from(format!("/proc/{pod_pid}/ns/mnt"));
    let ns = fs::File::open(&ns_path).map_err(io_err("cannot open", &ns_path))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    )
    .map_err(|e| io_err("cannot enter the mount namespace", &ns_path)(e.into()))?;
    let at = share.join(SHARE_CONTAINERS).join(id);
    mkdir(&at, 0o700)?;
    trees.lay_out(&at, plan)
}

/// Removes a pod member's entry from the pod's `share` (from the pod's
/// sandbox, in whose mount namespace it is mounted): its mounts detached,
/// then its layout removed entry by entry.
pub fn remove_member(share: &Path, id: &str) -> Result<(), ShareError> {
    let at = share.join(SHARE_CONTAINERS).join(id);
    let detach = |p: &Path| {
        let _ = rustix::mount::unmount(p, UnmountFlags::DETACH);
    };
    detach(&at.join(SHARE_ROOTFS));
    if let Ok(entries) = fs::read_dir(at.join(SHARE_MOUNTS)) {
        for entry in entries.flatten() {
            detach(&entry.path());
        }
    }
    remove_layout(&at)
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
    // A pod's: its members' entries (left by members that did not end
    // cleanly), each the same layout.
    let members = share.join(SHARE_CONTAINERS);
    if let Ok(entries) = fs::read_dir(&members) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_layout(&entry.path())?;
            }
        }
    }
    gone(fs::remove_dir(&members), &members)?;
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
