//! The container's file system tree inside the guest.
//!
//! Owns `Create`'s mount work: the root (a block device, or the host's
//! directory through the virtio-fs share mounted at [`SHARE`]) at
//! [`rootfs_dir`] (one directory per container below [`ROOTFS`]),
//! the container's mounts inside it (mount(8)-style options parsed into flags
//! and data; bind mounts of the share's entries, which the host made of its
//! own files and directories), the default device nodes and `linux.devices`. The mounts are made
//! in the agent's own mount namespace; the container's init process then
//! takes a copy of it in its new namespaces, moves the root onto `/` (see
//! [`crate::exec`]) and makes there the mounts that belong to those
//! namespaces ([`DeferredMount`]).

use std::collections::VecDeque;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::console::log;
use crate::proto::{ContainerSpec, DeviceSpec, IdMapping, MountSpec, RootSpec, SHARE_TAG};
use crate::sys;

/// Where the containers' root file systems are mounted in the agent's view,
/// each in its own directory ([`rootfs_dir`]).
pub const ROOTFS: &str = "/run/rootfs";

/// Where container `id`'s root is mounted in the agent's view. The id is
/// one path component (the agent checks it before anything is mounted).
pub fn rootfs_dir(id: &str) -> PathBuf {
    Path::new(ROOTFS).join(id)
}

/// Where the host's virtio-fs share is mounted in the agent's view.
pub const SHARE: &str = "/run/share";

/// How long `Create` waits for a block device to show up in /dev.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Symbolic links followed while resolving one mount point (as the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// Errors building the container's tree; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount type the guest does not do.
    #[error("mount {destination}: unsupported type {fstype:?}{hint}")]
    UnsupportedType {
        /// Where.
        destination: String,
        /// The type asked for.
        fstype: String,
        /// Extra advice.
        hint: &'static str,
    },
    /// A block device that is not in the guest's /dev.
    #[error("device {0} did not appear in the guest")]
    NoDevice(String),
    /// A destination that cannot be made safe.
    #[error("mount point {destination}: {reason}")]
    BadDestination {
        /// Where.
        destination: String,
        /// Why.
        reason: String,
    },
    /// A mount(2) call failed.
    #[error("mount {fstype} {source_path} on {target}: {source}")]
    Mount {
        /// File system type.
        fstype: String,
        /// Device or pseudo source.
        source_path: String,
        /// Mount point (in the agent's view).
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Setting the hostname failed.
    #[error("hostname {name:?}: {source}")]
    Hostname {
        /// The name asked for.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Some other file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// mount(8)-style options split into what mount(2) takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags for the mount itself.
    pub flags: MountFlags,
    /// Propagation flags (`MS_PRIVATE`, `MS_SHARED`, ... with `MS_REC`),
    /// applied by a second call as mount(2) requires.
    pub propagation: MountPropagationFlags,
    /// File-system-specific options, comma-separated (`mode=755,size=64k`).
    pub data: String,
    /// `tmpcopyup` (runc's extension, which Podman sets on the tmpfs mounts
    /// of `--read-only`): the new tmpfs starts with a copy of what the
    /// directory under it held.
    pub copy_up: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MountFlags::empty(),
            propagation: MountPropagationFlags::empty(),
            data: String::new(),
            copy_up: false,
        }
    }
}

/// Parses mount options. Each entry may itself be a comma-separated list.
/// Unknown options are file-system data, as mount(8) treats them.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    let mut data = Vec::new();
    use MountFlags as M;
    use MountPropagationFlags as P;
    let none = M::empty();
    for opt in options.iter().flat_map(|o| o.as_ref().split(',')) {
        // (set, clear) for plain flags.
        let flag = match opt {
            "" | "defaults" => Some((none, none)),
            "ro" => Some((M::RDONLY, none)),
            "rw" => Some((none, M::RDONLY)),
            "nosuid" => Some((M::NOSUID, none)),
            "suid" => Some((none, M::NOSUID)),
            "nodev" => Some((M::NODEV, none)),
            "dev" => Some((none, M::NODEV)),
            "noexec" => Some((M::NOEXEC, none)),
            "exec" => Some((none, M::NOEXEC)),
            "sync" => Some((M::SYNCHRONOUS, none)),
            "async" => Some((none, M::SYNCHRONOUS)),
            "dirsync" => Some((M::DIRSYNC, none)),
            "mand" => Some((M::PERMIT_MANDATORY_FILE_LOCKING, none)),
            "nomand" => Some((none, M::PERMIT_MANDATORY_FILE_LOCKING)),
            "noatime" => Some((M::NOATIME, none)),
            "atime" => Some((none, M::NOATIME)),
            "nodiratime" => Some((M::NODIRATIME, none)),
            "diratime" => Some((none, M::NODIRATIME)),
            "relatime" => Some((M::RELATIME, none)),
            "norelatime" => Some((none, M::RELATIME)),
            "strictatime" => Some((M::STRICTATIME, none)),
            "nostrictatime" => Some((none, M::STRICTATIME)),
            "lazytime" => Some((M::LAZYTIME, none)),
            "nolazytime" => Some((none, M::LAZYTIME)),
            "silent" => Some((M::SILENT, none)),
            "loud" => Some((none, M::SILENT)),
            "bind" => Some((M::BIND, none)),
            "rbind" => Some((M::BIND | M::REC, none)),
            _ => None,
        };
        if let Some((set, clear)) = flag {
            out.flags = (out.flags | set) & !clear;
            continue;
        }
        if opt == "tmpcopyup" {
            out.copy_up = true;
            continue;
        }
        let propagation = match opt {
            "private" => Some(P::PRIVATE),
            "rprivate" => Some(P::PRIVATE | P::REC),
            "shared" => Some(P::SHARED),
            "rshared" => Some(P::SHARED | P::REC),
            // rustix calls MS_SLAVE "downstream".
            "slave" => Some(P::DOWNSTREAM),
            "rslave" => Some(P::DOWNSTREAM | P::REC),
            "unbindable" => Some(P::UNBINDABLE),
            "runbindable" => Some(P::UNBINDABLE | P::REC),
            _ => None,
        };
        match propagation {
            Some(p) => out.propagation = p,
            None => data.push(opt),
        }
    }
    out.data = data.join(",");
    out
}

/// What the guest does for a mount type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// A kernel pseudo file system (no device); the kernel's type name.
    Pseudo(&'static str),
    /// A file system on a block device of the guest; the kernel's type name.
    Block(&'static str),
    /// A bind mount of an entry of the host's share (`rbind`: recursive).
    Bind {
        /// Submounts included.
        recursive: bool,
    },
}

/// Maps an OCI mount type to what the guest kernel mounts.
pub fn fs_kind(mount: &MountSpec) -> Result<FsKind, MountError> {
    let unsupported = |hint| MountError::UnsupportedType {
        destination: mount.destination.clone(),
        fstype: mount.fstype.clone(),
        hint,
    };
    Ok(match mount.fstype.as_str() {
        "proc" => FsKind::Pseudo("proc"),
        "sysfs" => FsKind::Pseudo("sysfs"),
        "tmpfs" => FsKind::Pseudo("tmpfs"),
        "devpts" => FsKind::Pseudo("devpts"),
        "mqueue" => FsKind::Pseudo("mqueue"),
        // Less common kernel file systems: whether this guest kernel has
        // them is its to say (ENODEV names the type in the error).
        "devtmpfs" => FsKind::Pseudo("devtmpfs"),
        "ramfs" => FsKind::Pseudo("ramfs"),
        "securityfs" => FsKind::Pseudo("securityfs"),
        "debugfs" => FsKind::Pseudo("debugfs"),
        "tracefs" => FsKind::Pseudo("tracefs"),
        "hugetlbfs" => FsKind::Pseudo("hugetlbfs"),
        "binfmt_misc" => FsKind::Pseudo("binfmt_misc"),
        "configfs" => FsKind::Pseudo("configfs"),
        "pstore" => FsKind::Pseudo("pstore"),
        "fusectl" => FsKind::Pseudo("fusectl"),
        // The guest is the container's machine: its one cgroup hierarchy is
        // the container's, whichever version the bundle names.
        "cgroup" | "cgroup2" => FsKind::Pseudo("cgroup2"),
        "ext4" | "ext3" | "ext2" => FsKind::Block("ext4"),
        "erofs" => FsKind::Block("erofs"),
        "bind" => FsKind::Bind { recursive: false },
        "rbind" => FsKind::Bind { recursive: true },
        "none" | "" => {
            return Err(unsupported(
                " (host paths reach the guest as bind mounts of the runtime's share)",
            ))
        }
        _ => return Err(unsupported("")),
    })
}

/// Resolves `dest` inside `root` the way it would resolve with `root` as `/`:
/// `..` stops at `root`, symbolic links are followed relative to `root`. With
/// `create`, missing directories are made (mode 0755). The result is a path
/// below `root` that names no symbolic link, so a mount there lands inside
/// the container's tree whatever its links say.
pub fn resolve_in_root(root: &Path, dest: &str, create: bool) -> Result<PathBuf, MountError> {
    let bad = |reason: String| MountError::BadDestination {
        destination: dest.to_owned(),
        reason,
    };
    let mut pending: VecDeque<std::ffi::OsString> = Path::new(dest)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsStr::new("..").to_owned()),
            _ => None,
        })
        .collect();
    // Components below `root` resolved so far.
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&resolved);
        here.push(&name);
        match fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(bad("too many symbolic links".into()));
                }
                let target = fs::read_link(&here).map_err(|e| bad(e.to_string()))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push_front(n.to_owned()),
                        Component::ParentDir => pending.push_front(OsStr::new("..").to_owned()),
                        _ => {}
                    }
                }
            }
            Ok(meta) => {
                if !meta.is_dir() && !pending.is_empty() {
                    return Err(bad(format!("{} is not a directory", here.display())));
                }
                resolved.push(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&here)
                    .map_err(|e| bad(format!("creating {}: {e}", here.display())))?;
                resolved.push(name);
            }
            Err(e) => return Err(bad(format!("{}: {e}", here.display()))),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn mount_err(fstype: &str, source: &str, target: &Path, e: std::io::Error) -> MountError {
    MountError::Mount {
        fstype: fstype.to_owned(),
        source_path: source.to_owned(),
        target: target.display().to_string(),
        source: e,
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MountError {
    let what = what.into();
    move |source| MountError::Io { what, source }
}

/// Waits for a device node (the kernel may still be probing the disk).
fn wait_for_device(path: &str) -> Result<(), MountError> {
    if !path.starts_with("/dev/") || path.contains("/../") {
        return Err(MountError::NoDevice(format!(
            "{path} (not a path under /dev)"
        )));
    }
    let deadline = Instant::now() + DEVICE_WAIT;
    while !Path::new(path).exists() {
        if Instant::now() >= deadline {
            return Err(MountError::NoDevice(path.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Mounts `fstype` from `source` at `target` with `opts`, then applies the
/// propagation, as mount(8) would.
fn do_mount(
    fstype: &str,
    source: &str,
    target: &Path,
    opts: &MountOptions,
) -> Result<(), MountError> {
    let err = |e| mount_err(fstype, source, target, e);
    let c_target = sys::cpath(target).map_err(err)?;
    let data = (!opts.data.is_empty())
        .then(|| sys::cstr(&opts.data))
        .transpose()
        .map_err(err)?;
    rustix::mount::mount(
        sys::cstr(source).map_err(err)?.as_c_str(),
        c_target.as_c_str(),
        sys::cstr(fstype).map_err(err)?.as_c_str(),
        opts.flags,
        data.as_deref(),
    )
    .map_err(|e| err(e.into()))?;
    if !opts.propagation.is_empty() {
        rustix::mount::mount_change(c_target.as_c_str(), opts.propagation)
            .map_err(|e| err(e.into()))?;
    }
    Ok(())
}

/// Mounts the host's share (tag `tag`) at [`SHARE`], once per guest.
fn mount_share(tag: &str) -> Result<(), MountError> {
    let share = Path::new(SHARE);
    let dev = |p: &Path| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(share)
        .map_err(io_err(format!("creating {SHARE}")))?;
    // Already mounted by an earlier `Create` in this guest.
    if dev(share).ok() != dev(Path::new("/run")).ok() {
        return Ok(());
    }
    do_mount(
        "virtiofs",
        tag,
        share,
        &MountOptions {
            flags: MountFlags::NOSUID | MountFlags::NODEV,
            ..MountOptions::default()
        },
    )
}

/// The share's entry `rel` (relative, no `..`), or the error naming `what`.
fn share_entry(rel: &str, what: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(MountError::BadDestination {
            destination: what.to_owned(),
            reason: format!("source {rel:?} is not an entry of the host's share"),
        });
    }
    Ok(Path::new(SHARE).join(p))
}

/// Bind-mounts `source` at `target`, then applies `opts`' flags (a bind
/// mount takes `ro`, `nosuid`, ... only on a remount) and propagation.
fn bind(
    source: &Path,
    target: &Path,
    recursive: bool,
    opts: &MountOptions,
) -> Result<(), MountError> {
    let err =
        |e: rustix::io::Errno| mount_err("bind", &source.display().to_string(), target, e.into());
    if recursive {
        rustix::mount::mount_bind_recursive(source, target).map_err(err)?;
    } else {
        rustix::mount::mount_bind(source, target).map_err(err)?;
    }
    let flags = opts.flags & !(MountFlags::BIND | MountFlags::REC);
    if !flags.is_empty() {
        rustix::mount::mount_remount(target, MountFlags::BIND | flags, "").map_err(err)?;
    }
    if !opts.propagation.is_empty() {
        rustix::mount::mount_change(target, opts.propagation).map_err(err)?;
    }
    Ok(())
}

/// Mounts the root at `rootfs`: the block device, or the share's root
/// file system directory.
fn mount_root(root: &RootSpec, rootfs: &Path) -> Result<(), MountError> {
    let opts = MountOptions {
        flags: if root.readonly {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        },
        ..MountOptions::default()
    };
    let mount_point = || {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(rootfs)
            .map_err(io_err(format!("creating {}", rootfs.display())))
    };
    if root.fstype == "virtiofs" {
        mount_share(&root.device)?;
        mount_point()?;
        // Recursive: the host's root directory may hold mounts of its own.
        return bind(&share_entry(&root.source, "/")?, rootfs, true, &opts);
    }
    let kind = fs_kind(&MountSpec {
        destination: "/".into(),
        fstype: root.fstype.clone(),
        source: root.device.clone(),
        options: Vec::new(),
    })?;
    let FsKind::Block(fstype) = kind else {
        return Err(MountError::UnsupportedType {
            destination: "/".into(),
            fstype: root.fstype.clone(),
            hint: " (the root must be a block file system)",
        });
    };
    wait_for_device(&root.device)?;
    mount_point()?;
    do_mount(fstype, &root.device, rootfs, &opts)
}

/// A mount the container's init process makes itself, after it moved into
/// its root: proc (it shows the mounter's PID namespace), mqueue (its IPC
/// namespace), cgroup2 (its cgroup namespace), and any mount below one of
/// them. All strings are ready for the forked child.
#[derive(Debug)]
pub struct DeferredMount {
    /// Where, inside the container (for errors).
    pub destination: String,
    /// The same, for mount(2).
    pub target: CString,
    /// Source.
    pub source: CString,
    /// Kernel type name.
    pub fstype: CString,
    /// `MS_*` flags.
    pub flags: MountFlags,
    /// Propagation flags, applied by a second call.
    pub propagation: MountPropagationFlags,
    /// File-system data.
    pub data: Option<CString>,
}

/// Whether mounts of this kernel type belong to the mounter's namespaces.
fn namespaced(fstype: &str) -> bool {
    matches!(fstype, "proc" | "mqueue" | "cgroup2")
}

/// Whether `dest` is `parent` or below it (lexically).
fn is_below(dest: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    dest == parent
        || dest
            .strip_prefix(parent)
            .is_some_and(|r| r.starts_with('/'))
}

/// Performs one container mount inside `rootfs`, or returns it for the
/// container's init process (see [`DeferredMount`]).
fn mount_in_root(
    m: &MountSpec,
    rootfs: &Path,
    deferred: &[DeferredMount],
) -> Result<Option<DeferredMount>, MountError> {
    let kind = fs_kind(m)?;
    let opts = parse_options(&m.options);
    let nested = deferred
        .iter()
        .any(|d| is_below(&m.destination, &d.destination));
    let (fstype, source) = match kind {
        FsKind::Pseudo(_) | FsKind::Block(_) if opts.flags.contains(MountFlags::BIND) => {
            return Err(MountError::UnsupportedType {
                destination: m.destination.clone(),
                fstype: m.fstype.clone(),
                hint: " with the bind option (the runtime passes host paths as type bind)",
            })
        }
        FsKind::Pseudo(t) => (t, if m.source.is_empty() { t } else { &m.source }),
        FsKind::Block(t) => {
            wait_for_device(&m.source)?;
            (t, m.source.as_str())
        }
        FsKind::Bind { recursive } => {
            if nested {
                return Err(MountError::BadDestination {
                    destination: m.destination.clone(),
                    reason: "a bind mount below proc, mqueue or cgroup is not supported".into(),
                });
            }
            // Also where the root is a block device: binds still come
            // from the host.
            mount_share(SHARE_TAG)?;
            let source = share_entry(&m.source, &m.destination)?;
            let is_dir = fs::metadata(&source)
                .map_err(io_err(format!("bind source {}", source.display())))?
                .is_dir();
            let target = bind_target(rootfs, &m.destination, is_dir)?;
            bind(&source, &target, recursive, &opts)?;
            return Ok(None);
        }
    };
    if !namespaced(fstype) && !nested {
        let target = resolve_in_root(rootfs, &m.destination, true)?;
        if opts.copy_up && fstype == "tmpfs" {
            // Opened before the mount hides it: the descriptor keeps
            // reaching the directory underneath.
            let under = fs::File::open(&target)
                .map_err(io_err(format!("opening {} for tmpcopyup", m.destination)))?;
            do_mount(fstype, source, &target, &opts)?;
            let from = PathBuf::from(format!("/proc/self/fd/{}", under.as_raw_fd()));
            copy_tree(&from, &target).map_err(io_err(format!("tmpcopyup of {}", m.destination)))?;
            return Ok(None);
        }
        do_mount(fstype, source, &target, &opts)?;
        return Ok(None);
    }
    // The child resolves the target itself, inside its root (where no link
    // can escape); a mount point not below another deferred mount is
    // made now, while the agent can still write there.
    let inside = if nested {
        m.destination.clone()
    } else {
        let target = resolve_in_root(rootfs, &m.destination, true)?;
        let rel = target.strip_prefix(rootfs).unwrap_or(Path::new(""));
        format!("/{}", rel.display())
    };
    let err = |e| mount_err(fstype, source, Path::new(&m.destination), e);
    let data = (!opts.data.is_empty())
        .then(|| sys::cstr(&opts.data))
        .transpose()
        .map_err(err)?;
    Ok(Some(DeferredMount {
        destination: m.destination.clone(),
        target: sys::cstr(&inside).map_err(err)?,
        source: sys::cstr(source).map_err(err)?,
        fstype: sys::cstr(fstype).map_err(err)?,
        flags: opts.flags,
        propagation: opts.propagation,
        data,
    }))
}

/// Copies the contents of directory `from` into the existing directory
/// `to`: directories, files, symbolic links and special files, with their
/// modes and owners, as runc's `tmpcopyup` does (`to` itself keeps its own:
/// a new tmpfs is world-writable and sticky, as under runc).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&dst)?;
            copy_tree(&src, &dst)?;
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            continue;
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            let t = FileType::from_raw_mode(meta.mode());
            rustix::fs::mknodat(CWD, &dst, t, Mode::from_raw_mode(meta.mode()), meta.rdev())?;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() {
            // After the owner: chown clears set-id bits.
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// The mount point for a bind mount at `dest` inside `rootfs`: a directory,
/// or for a file source a file, made where missing (as runc does).
fn bind_target(rootfs: &Path, dest: &str, is_dir: bool) -> Result<PathBuf, MountError> {
    if is_dir {
        return resolve_in_root(rootfs, dest, true);
    }
    let bad = |reason: String| MountError::BadDestination {
        destination: dest.to_owned(),
        reason,
    };
    let path = Path::new(dest);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(bad("a file cannot be bound over the root".into()));
    };
    let parent = resolve_in_root(rootfs, &parent.to_string_lossy(), true)?;
    let target = parent.join(name);
    match fs::symlink_metadata(&target) {
        // A link is followed inside the root, as any mount point.
        Ok(m) if m.file_type().is_symlink() => resolve_in_root(rootfs, dest, false),
        Ok(_) => Ok(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            rustix::fs::open(
                &target,
                rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| bad(format!("creating {}: {e}", target.display())))?;
            Ok(target)
        }
        Err(e) => Err(bad(format!("{}: {e}", target.display()))),
    }
}

/// Device nodes every container gets, as runc gives them: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links every container's /dev gets: (name, target).
const DEFAULT_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Fills the container's /dev with the standard nodes and links where they
/// are missing. Failures are logged, not fatal: a read-only root without a
/// /dev mount cannot take them, and runc's image may already have them.
fn populate_dev(rootfs: &Path) {
    let dev = match resolve_in_root(rootfs, "/dev", true) {
        Ok(d) => d,
        Err(e) => {
            log!("container /dev: {e}");
            return;
        }
    };
    for &(name, major, minor) in DEFAULT_DEVICES {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let (kind, mode) = (FileType::CharacterDevice, Mode::from_raw_mode(0o666));
        let dev = rustix::fs::makedev(major, minor);
        let made = rustix::fs::mknodat(CWD, &path, kind, mode, dev)
            .map_err(std::io::Error::from)
            // mknod's mode is cut by the umask; set it as meant.
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o666)));
        if let Err(e) = made {
            log!("creating {}: {e}", path.display());
        }
    }
    let mut links: Vec<(&str, &str)> = DEFAULT_LINKS.to_vec();
    let ptmx = dev.join("pts/ptmx");
    if fs::symlink_metadata(&ptmx).is_ok_and(|m| m.file_type().is_char_device()) {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, target) in links {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        if let Err(e) = std::os::unix::fs::symlink(target, &path) {
            log!("creating {}: {e}", path.display());
        }
    }
}

/// Checks a hostname (set by the container's init process in its own UTS
/// namespace) and makes it ready for the child.
pub fn check_hostname(name: &str) -> Result<CString, MountError> {
    let err = |source| MountError::Hostname {
        name: name.to_owned(),
        source,
    };
    if name.is_empty() || name.len() > 64 || name.contains('\0') {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "must be 1 to 64 bytes without NUL",
        )));
    }
    sys::cstr(name).map_err(err)
}

/// `id` inside the container as the guest sees it, through `mappings`
/// (unchanged without mappings or outside them).
pub fn map_id(id: u32, mappings: &[IdMapping]) -> u32 {
    mappings
        .iter()
        .find(|m| id >= m.container_id && id - m.container_id < m.size)
        .map_or(id, |m| m.host_id.saturating_add(id - m.container_id))
}

/// Creates a `linux.devices` node inside `rootfs` (an existing one is kept,
/// as runc keeps it), owned as asked through the user namespace's mappings.
fn make_device(
    d: &DeviceSpec,
    rootfs: &Path,
    uid_map: &[IdMapping],
    gid_map: &[IdMapping],
) -> Result<(), MountError> {
    use rustix::fs::{FileType, Mode};
    let bad = |reason: String| MountError::BadDestination {
        destination: d.path.clone(),
        reason,
    };
    let file_type = match d.kind {
        'c' | 'u' => FileType::CharacterDevice,
        'b' => FileType::BlockDevice,
        'p' => FileType::Fifo,
        other => return Err(bad(format!("device type {other:?} is not c, b, u or p"))),
    };
    let path = Path::new(&d.path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(bad("not a path to a file".into()));
    };
    if name == ".." {
        return Err(bad("not a path to a file".into()));
    }
    let dir = resolve_in_root(rootfs, &parent.to_string_lossy(), true)?;
    let node = dir.join(name);
    if fs::symlink_metadata(&node).is_ok() {
        return Ok(());
    }
    let io = |what: &str| {
        let what = format!("{what} {}", node.display());
        move |e: rustix::io::Errno| MountError::Io {
            what,
            source: e.into(),
        }
    };
    let mode = Mode::from_bits_truncate(d.mode & 0o7777);
    let dev = rustix::fs::makedev(d.major, d.minor);
    rustix::fs::mknodat(rustix::fs::CWD, &node, file_type, mode, dev)
        .map_err(io("creating device"))?;
    // mknod's mode is cut by the umask; set it as meant, then the owner.
    rustix::fs::chmod(&node, mode).map_err(io("setting the mode of"))?;
    let uid = rustix::fs::Uid::from_raw(map_id(d.uid, uid_map));
    let gid = rustix::fs::Gid::from_raw(map_id(d.gid, gid_map));
    rustix::fs::chown(&node, Some(uid), Some(gid)).map_err(io("setting the owner of"))
}

/// Builds the container's tree at `rootfs`: root device, mounts in order,
/// default devices, `linux.devices`. Returns the mounts left to the
/// container's init process. On failure everything mounted so far is
/// detached, so a later `Create` starts clean.
pub fn build_rootfs(spec: &ContainerSpec, rootfs: &Path) -> Result<Vec<DeferredMount>, MountError> {
    let result = mount_root(&spec.root, rootfs).and_then(|()| {
        let mut deferred = Vec::new();
        for m in &spec.mounts {
            if let Some(d) = mount_in_root(m, rootfs, &deferred)? {
                deferred.push(d);
            }
        }
        populate_dev(rootfs);
        for d in &spec.linux.devices {
            make_device(
                d,
                rootfs,
                &spec.linux.uid_mappings,
                &spec.linux.gid_mappings,
            )?;
        }
        Ok(deferred)
    });
    if result.is_err() {
        teardown(rootfs);
    }
    result
}

/// Detaches the container's tree (root and everything below it) and removes
/// its mount point, so that the same id can be built again. The container's
/// own mount namespace keeps its copy while its processes live.
pub fn teardown(rootfs: &Path) {
    // EINVAL (nothing mounted there) is the common, harmless case.
    let _ = rustix::mount::unmount(rootfs, UnmountFlags::DETACH);
    if let Err(e) = fs::remove_dir(rootfs) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log!("removing {}: {e}", rootfs.display());
        }
    }
}

/// The `ptmx` to open a terminal for the container from: its own devpts
/// instance if it has one at /dev/pts (so the slave's name exists in the
/// container), else the guest's.
pub fn container_ptmx(rootfs: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dev_of = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    let theirs = rootfs.join("dev/pts/ptmx");
    // A file system of its own at /dev/pts (not a stray node in the image).
    let mounted = dev_of(&rootfs.join("dev/pts")) != dev_of(&rootfs.join("dev"));
    if mounted && fs::symlink_metadata(&theirs).is_ok_and(|m| m.file_type().is_char_device()) {
        theirs
    } else {
        PathBuf::from("/dev/pts/ptmx")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(&["nosuid,nodev,mode=755"]);
        assert_eq!(o.flags, MountFlags::NOSUID | MountFlags::NODEV);
        assert_eq!(o.propagation, MountPropagationFlags::empty());
        assert_eq!(o.data, "mode=755");

        let o = parse_options(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(o.flags, MountFlags::NOSUID | MountFlags::NOEXEC);
        assert_eq!(o.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    }

    #[test]
    fn tmpcopyup_is_ours_not_the_kernels() {
        let o = parse_options(&["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]);
        assert!(o.copy_up);
        assert_eq!(o.data, "", "tmpfs refuses an unknown option");
        assert_eq!(o.flags, MountFlags::NOSUID | MountFlags::NODEV);
        assert!(!parse_options(&["mode=755"]).copy_up);
    }

    #[test]
    fn copy_up_copies_the_tree_with_modes_and_links() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        fs::create_dir_all(from.join("sub/deeper")).unwrap();
        fs::write(from.join("sub/deeper/file"), "content").unwrap();
        fs::set_permissions(from.join("sub"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::set_permissions(
            from.join("sub/deeper/file"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/deeper/file", from.join("link")).unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o751)).unwrap();
        fs::create_dir(&to).unwrap();
        copy_tree(&from, &to).unwrap();
        assert_eq!(
            fs::read_to_string(to.join("sub/deeper/file")).unwrap(),
            "content"
        );
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_ne!(mode(&to), 0o751, "the top keeps its own mode");
        assert_eq!(mode(&to.join("sub")), 0o1777);
        assert_eq!(mode(&to.join("sub/deeper/file")), 0o640);
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/deeper/file")
        );
        // An empty directory copies to nothing.
        let empty = t.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let to2 = t.path().join("to2");
        fs::create_dir(&to2).unwrap();
        copy_tree(&empty, &to2).unwrap();
        assert_eq!(fs::read_dir(&to2).unwrap().count(), 0);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = parse_options(&["ro", "rw", "noatime", "atime", "relatime"]);
        assert_eq!(o.flags, MountFlags::RELATIME);
        let o = parse_options(&["defaults,ro", ""]);
        assert_eq!(o.flags, MountFlags::RDONLY);
        assert_eq!(o.data, "");
    }

    #[test]
    fn propagation_is_separate() {
        let o = parse_options(&["rbind", "rprivate", "ro"]);
        assert_eq!(
            o.flags,
            MountFlags::BIND | MountFlags::REC | MountFlags::RDONLY
        );
        assert_eq!(
            o.propagation,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC
        );
        assert_eq!(
            parse_options(&["shared"]).propagation,
            MountPropagationFlags::SHARED
        );
    }

    fn mount(fstype: &str) -> MountSpec {
        MountSpec {
            destination: "/x".into(),
            fstype: fstype.into(),
            source: String::new(),
            options: Vec::new(),
        }
    }

    #[test]
    fn mount_types() {
        assert_eq!(fs_kind(&mount("proc")).unwrap(), FsKind::Pseudo("proc"));
        assert_eq!(
            fs_kind(&mount("cgroup")).unwrap(),
            FsKind::Pseudo("cgroup2")
        );
        assert_eq!(fs_kind(&mount("ext4")).unwrap(), FsKind::Block("ext4"));
        let e = fs_kind(&mount("nfs")).unwrap_err().to_string();
        assert!(e.contains("/x") && e.contains("nfs"), "{e}");
        assert_eq!(
            fs_kind(&mount("rbind")).unwrap(),
            FsKind::Bind { recursive: true }
        );
        let e = fs_kind(&mount("none")).unwrap_err().to_string();
        assert!(e.contains("share"), "{e}");
    }

    #[test]
    fn share_entries_stay_in_the_share() {
        assert_eq!(
            share_entry("mounts/3", "/x").unwrap(),
            Path::new(SHARE).join("mounts/3")
        );
        for bad in ["", "/etc", "mounts/../..", "../x", "./x"] {
            let e = share_entry(bad, "/x").unwrap_err().to_string();
            assert!(e.contains("not an entry of the host's share"), "{bad}: {e}");
        }
    }

    #[test]
    fn bind_targets_are_made_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/real", root.join("etc/hosts")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        // A file source: the file is made, its directories too.
        let t = bind_target(root, "/run/secrets/token", false).unwrap();
        assert_eq!(t, root.join("run/secrets/token"));
        assert!(t.is_file());
        // A link is followed inside the root, never out of it.
        let t = bind_target(root, "/etc/hosts", false);
        assert!(t.is_err() || t.unwrap().starts_with(root));
        let t = bind_target(root, "/up/data", true).unwrap();
        assert_eq!(t, root.join("data"));
        assert!(t.is_dir());
        assert!(bind_target(root, "/", false).is_err());
    }

    #[test]
    fn resolve_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
        fs::write(root.join("file"), b"").unwrap();

        assert_eq!(
            resolve_in_root(root, "/abs/x", false)
                .unwrap_err()
                .to_string(),
            format!(
                "mount point /abs/x: {}: No such file or directory (os error 2)",
                root.join("etc/x").display()
            )
        );
        assert_eq!(
            resolve_in_root(root, "/abs", false).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, "/../../etc", false).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, "/up/etc", false).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, "/", false).unwrap(),
            root.to_path_buf()
        );
        assert!(resolve_in_root(root, "/loop1", false)
            .unwrap_err()
            .to_string()
            .contains("too many symbolic links"));
        assert!(resolve_in_root(root, "/file/x", true)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));

        let made = resolve_in_root(root, "/abs/new/deeper", true).unwrap();
        assert_eq!(made, root.join("etc/new/deeper"));
        assert!(made.is_dir());
        assert!(resolve_in_root(root, "dev/pts", true).unwrap().is_dir());
    }

    #[test]
    fn hostname_is_validated_before_the_call() {
        assert!(check_hostname("").is_err());
        assert!(check_hostname(&"a".repeat(65)).is_err());
        assert!(check_hostname("a\0b").is_err());
        assert_eq!(check_hostname("box").unwrap().as_bytes(), b"box");
    }

    #[test]
    fn namespaced_mounts_and_what_is_below_them_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let spec = |dest: &str, t: &str| MountSpec {
            destination: dest.into(),
            fstype: t.into(),
            source: String::new(),
            options: vec!["nosuid".into(), "ro".into()],
        };
        let proc_ = mount_in_root(&spec("/proc", "proc"), root, &[])
            .unwrap()
            .unwrap();
        assert_eq!(proc_.target.as_bytes(), b"/proc");
        assert_eq!(proc_.flags, MountFlags::NOSUID | MountFlags::RDONLY);
        assert!(root.join("proc").is_dir(), "the mount point is made now");
        let deferred = [proc_];
        let below = mount_in_root(&spec("/proc/sys/fs/x", "tmpfs"), root, &deferred)
            .unwrap()
            .unwrap();
        assert_eq!(below.target.as_bytes(), b"/proc/sys/fs/x");
        assert!(!root.join("proc/sys").exists());
        assert!(is_below("/dev/mqueue", "/dev"));
        assert!(!is_below("/procfs", "/proc"));
    }

    #[test]
    fn ids_map_through_the_user_namespace() {
        let m = [IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 10,
        }];
        assert_eq!(map_id(0, &m), 100_000);
        assert_eq!(map_id(9, &m), 100_009);
        assert_eq!(map_id(10, &m), 10);
        assert_eq!(map_id(5, &[]), 5);
    }

    #[test]
    fn devices_are_made_with_mode_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = DeviceSpec {
            path: "/dev/sub/fifo".into(),
            kind: 'p',
            major: 0,
            minor: 0,
            mode: 0o640,
            uid: 0,
            gid: 0,
        };
        // A fifo needs no privilege; owner 0 may fail for an unprivileged
        // test run, which then says so.
        match make_device(&fifo, dir.path(), &[], &[]) {
            Ok(()) => {
                let meta = fs::metadata(dir.path().join("dev/sub/fifo")).unwrap();
                assert!(meta.file_type().is_fifo());
                assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
            }
            Err(e) => assert!(e.to_string().contains("owner"), "{e}"),
        }
        let bad = DeviceSpec {
            kind: 'x',
            ..fifo.clone()
        };
        assert!(make_device(&bad, dir.path(), &[], &[])
            .unwrap_err()
            .to_string()
            .contains("not c, b, u or p"));
    }

    #[test]
    fn devices_outside_dev_are_refused() {
        assert!(wait_for_device("/etc/passwd").is_err());
        assert!(wait_for_device("/dev/../etc/passwd").is_err());
    }
}
