//! The jail runm-vmm runs a guest in ([`JailConfig`]): what a guest that
//! breaks out of the device models finds around it.
//!
//! The VMM first opens everything the VM needs as the user that started it
//! (`/dev/kvm`, kernel, initrd, disks, taps, console; it binds the vsock
//! socket), then [`enter`] puts it, still single-threaded, into:
//! - its own mount namespace, whose root is a fresh tmpfs mounted on
//!   [`JailConfig::root`] (so the host's directory stays empty and nothing is
//!   left behind) holding only the paths the VM still reaches by name: the
//!   vsock socket's directory, bind-mounted at the same path; then read-only.
//!   A relative socket path (runm names its sockets relative to the VMM's
//!   working directory, to keep long paths within a socket address's
//!   limit) is resolved against that directory, which is then bound and
//!   stays the jailed VMM's working directory;
//! - the resource limits `RLIMIT_NOFILE` and `RLIMIT_FSIZE`;
//! - the unprivileged uid/gid, no supplementary groups, every capability set
//!   empty (bounding and ambient included) and no_new_privs.
//!
//! The PID namespace is made one step earlier ([`spawn_in_new_pid_ns`]), before
//! KVM is opened: a KVM VM belongs to the process that created it, so the
//! process that becomes PID 1 of the new namespace must build the VM itself.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use crate::config::{Console, JailConfig, VmConfig};

/// The hidden flag telling runm-vmm it is the jailed child in the new PID
/// namespace (its parent added it, with the descriptor of [`PARENT_ALIVE`]'s
/// pipe as its value).
pub const CHILD_FLAG: &str = "--jail-pid-ns-child";

/// In the jailed child: the read end of a pipe whose only write end its
/// waiting parent holds, so that it hangs up when the parent is gone.
/// Changing uid clears the parent-death signal; re-armed after that, it
/// would miss a parent that died in between, which this pipe shows.
static PARENT_ALIVE: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Errors entering the jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A step of entering the jail failed.
    #[error("jail: cannot {what}: {source}")]
    Step {
        what: String,
        #[source]
        source: Errno,
    },
    /// Entering a jail needs root (CAP_SYS_ADMIN, CAP_SETUID, ...).
    #[error("jail: runm-vmm must start as root to build a jail (it runs as uid {0})")]
    NotRoot(u32),
    /// Other threads would keep the privileges this thread drops.
    #[error("jail: {0} threads run; the jail is entered before any thread starts")]
    Threads(usize),
    /// After dropping, a capability or id was still there.
    #[error("jail: privileges remain after dropping them: {0}")]
    Remains(String),
    /// The waiting parent's seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The waiting parent in the host's PID namespace.
    #[error("jail: the VMM in its PID namespace: {what}: {source}")]
    Child {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(Errno) -> JailError {
    let what = what.into();
    move |source| JailError::Step { what, source }
}

/// What entering the jail does for one VM, worked out from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPlan {
    /// The jail's options.
    pub config: JailConfig,
    /// Host directories bind-mounted at the same path inside the jail.
    pub binds: Vec<PathBuf>,
    /// The working directory to keep inside the jail (bound too), when a
    /// path the VM reaches by name is relative to it.
    pub cwd: Option<PathBuf>,
    /// `RLIMIT_FSIZE`.
    pub max_file_size: u64,
}

impl JailPlan {
    /// The plan for `config`'s jail, if it has one.
    pub fn of(config: &VmConfig) -> Result<Option<Self>, JailError> {
        let Some(jail) = config.jail.clone() else {
            return Ok(None);
        };
        // The vsock device connects to `<uds>_<port>` when the guest dials
        // the host: that directory must stay reachable by its path.
        let mut binds = Vec::new();
        let mut cwd = None;
        for uds in config.vsock.iter().map(|v| &v.uds) {
            let dir = uds.parent().unwrap_or(Path::new(""));
            if uds.is_absolute() {
                binds.push(dir.to_path_buf());
                continue;
            }
            let here = std::env::current_dir().map_err(|e| JailError::Step {
                what: format!(
                    "find the working directory the socket {} is relative to",
                    uds.display()
                ),
                source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })?;
            binds.push(here.clone());
            cwd = Some(here);
        }
        binds.sort();
        binds.dedup();
        let max_file_size = jail.max_file_size.unwrap_or_else(|| {
            let console = match config.console {
                Console::File(_) => config.console_max_bytes,
                _ => 0,
            };
            let disks = config
                .disks
                .iter()
                .filter(|d| !d.read_only)
                .filter_map(|d| std::fs::metadata(&d.path).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            console.max(disks).max(stdio_limit(config)).max(1)
        });
        Ok(Some(JailPlan {
            config: jail,
            binds,
            cwd,
            max_file_size,
        }))
    }
}

/// What the VMM's stdout and stderr may grow to when they are regular files
/// (a console on stdout, a log the caller redirected): their size now plus a
/// console's and a log's worth, so RLIMIT_FSIZE never cuts them short.
fn stdio_limit(config: &VmConfig) -> u64 {
    let size = |st: rustix::fs::Stat| {
        (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
            .then(|| u64::try_from(st.st_size).unwrap_or(0))
    };
    let out = rustix::fs::fstat(std::io::stdout()).ok().and_then(size);
    let err = rustix::fs::fstat(std::io::stderr()).ok().and_then(size);
    match out.max(err) {
        Some(now) => now
            .saturating_add(config.console_max_bytes)
            .saturating_add(crate::logger::DEFAULT_MAX_BYTES),
        None => 0,
    }
}

/// What can be checked before anything is created: that this process may
/// build a jail at all.
pub fn precheck() -> Result<(), JailError> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        return Err(JailError::NotRoot(euid));
    }
    Ok(())
}

fn thread_count() -> Result<usize, JailError> {
    std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .map_err(|e| JailError::Step {
            what: "count this process's threads in /proc/self/task".into(),
            source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })
}

/// Checks the process has one thread. A thread joined a moment ago (the
/// virtio-fs handshake's watchdog) is listed until the kernel finishes its
/// exit, which comes after the join returns: allow it a moment.
fn single_threaded() -> Result<(), JailError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let n = thread_count()?;
        if n == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(JailError::Threads(n));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Enters the jail of `plan`. Call once the VM is built and before any other
/// thread starts; on success the process is jailed for good.
pub fn enter(plan: &JailPlan) -> Result<(), JailError> {
    single_threaded()?;
    let last_cap = last_capability()?;
    enter_mount_namespace(plan)?;
    set_limits(plan)?;
    drop_privileges(&plan.config, last_cap)?;
    rearm_parent_death()
}

/// The parent-death signal again (the uid change cleared it), then whether
/// the waiting parent died before it was armed: then this process ends too.
fn rearm_parent_death() -> Result<(), JailError> {
    let Some(pipe) = PARENT_ALIVE.get() else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(step("set the parent-death signal again"))?;
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(pipe, PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default()));
    if fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR) {
        return Err(JailError::Child {
            what: "stay with its waiting parent",
            source: std::io::Error::other("the parent is gone"),
        });
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_capability() -> Result<u32, JailError> {
    let text =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").map_err(|e| JailError::Step {
            what: "read /proc/sys/kernel/cap_last_cap".into(),
            source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
    text.trim().parse().map_err(|_| JailError::Step {
        what: format!("parse cap_last_cap '{}'", text.trim()),
        source: Errno::INVAL,
    })
}

fn inside(root: &Path, host_path: &Path) -> PathBuf {
    root.join(host_path.strip_prefix("/").unwrap_or(host_path))
}

fn enter_mount_namespace(plan: &JailPlan) -> Result<(), JailError> {
    let root = &plan.config.root;
    // SAFETY: CLONE_NEWNS only gives this process its own copy of the mount
    // table; no file descriptor table is unshared (the caller is
    // single-threaded anyway).
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(step("make a mount namespace"))?;
    // Nothing done from here on may reach the host's mount table.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(step("make every mount private"))?;
    let hardened = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(
        "runm-jail",
        root,
        "tmpfs",
        hardened,
        c"size=64k,nr_inodes=64,mode=0755",
    )
    .map_err(step(format!("mount a tmpfs on {}", root.display())))?;
    for dir in &plan.binds {
        let target = inside(root, dir);
        std::fs::create_dir_all(&target).map_err(|e| JailError::Step {
            what: format!("create {}", target.display()),
            source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
        rustix::mount::mount_bind(dir, &target)
            .map_err(step(format!("bind {} into the jail", dir.display())))?;
        rustix::mount::mount_remount(&target, MountFlags::BIND | hardened, c"")
            .map_err(step(format!("harden the bind of {}", dir.display())))?;
    }
    // pivot_root(".", ".") stacks the old root on the new one; detaching it
    // leaves only the jail.
    rustix::process::chdir(root).map_err(step(format!("enter {}", root.display())))?;
    match rustix::process::pivot_root(".", ".") {
        Ok(()) => {
            rustix::mount::unmount(".", UnmountFlags::DETACH)
                .map_err(step("detach the old root"))?;
        }
        // The host's root is the initramfs (rootfs), which cannot be pivoted
        // away: move the jail over / and chroot into it, as switch_root does.
        // The old root stays shadowed below it, out of reach of a process
        // without CAP_SYS_CHROOT and CAP_SYS_ADMIN, which this one is about
        // to be.
        Err(Errno::INVAL) => {
            rustix::mount::mount_move(".", "/").map_err(step("move the jail over /"))?;
            rustix::process::chroot(".").map_err(step("chroot into the jail"))?;
        }
        Err(e) => return Err(step("pivot_root into the jail")(e)),
    }
    rustix::process::chdir("/").map_err(step("chdir to the jail's /"))?;
    rustix::mount::mount_remount("/", MountFlags::BIND | MountFlags::RDONLY | hardened, c"")
        .map_err(step("make the jail's root read-only"))?;
    // Relative socket paths keep meaning what they meant outside.
    if let Some(cwd) = &plan.cwd {
        rustix::process::chdir(cwd).map_err(step(format!("chdir to {}", cwd.display())))?;
    }
    Ok(())
}

fn set_limits(plan: &JailPlan) -> Result<(), JailError> {
    for (resource, name, value) in [
        (
            Resource::Nofile,
            "RLIMIT_NOFILE",
            plan.config.max_open_files,
        ),
        (Resource::Fsize, "RLIMIT_FSIZE", plan.max_file_size),
    ] {
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        rustix::process::setrlimit(resource, limit).map_err(step(format!("set {name}")))?;
    }
    Ok(())
}

fn drop_privileges(jail: &JailConfig, last_cap: u32) -> Result<(), JailError> {
    // The bounding set needs CAP_SETPCAP, so it goes while this is still root.
    for cap in 0..=last_cap.min(63) {
        let set = CapabilitySet::from_bits_retain(1 << cap);
        rustix::thread::remove_capability_from_bounding_set(set)
            .map_err(step(format!("drop capability {cap} from the bounding set")))?;
    }
    rustix::thread::clear_ambient_capability_set().map_err(step("clear the ambient set"))?;
    // The process is single-threaded (checked), so the per-thread id calls
    // cover all of it.
    let uid = rustix::process::Uid::from_raw(jail.uid);
    let gid = rustix::process::Gid::from_raw(jail.gid);
    rustix::thread::set_thread_groups(&[]).map_err(step("drop supplementary groups"))?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(step(format!("set gid {}", jail.gid)))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(step(format!("set uid {}", jail.uid)))?;
    // Leaving uid 0 emptied the permitted and effective sets; the inheritable
    // one is cleared here.
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(step("clear the capability sets"))?;
    rustix::thread::set_no_new_privs(true).map_err(step("set no_new_privs"))?;

    let now = rustix::thread::capabilities(None).map_err(step("read the capability sets"))?;
    if now != none {
        return Err(JailError::Remains(format!("{now:?}")));
    }
    if rustix::process::getuid() != uid || rustix::process::geteuid() != uid {
        return Err(JailError::Remains("the uid".into()));
    }
    if rustix::process::getgid() != gid || rustix::process::getegid() != gid {
        return Err(JailError::Remains("the gid".into()));
    }
    Ok(())
}

/// Runs this runm-vmm again as PID 1 of a new PID namespace, with `args`
/// (its own arguments) and [`CHILD_FLAG`], and waits for it: SIGINT and
/// SIGTERM are forwarded, and its exit status becomes this process's. The
/// child is killed if this process dies (it sets its parent-death signal).
///
/// Pausing: SIGSTOP cannot be caught, and stopping this process would not
/// stop the VM. So SIGTSTP pauses the VM (the child gets SIGSTOP) and
/// SIGCONT continues it (passed on). Whoever pauses a jailed VMM sends
/// those to this process (runm does); both are blocked here, so they never
/// stop this process itself, in whatever process group it runs.
pub fn spawn_in_new_pid_ns(
    args: &[OsString],
    seccomp: crate::seccomp::SeccompMode,
) -> Result<i32, JailError> {
    precheck()?;
    let waiter = crate::seccomp::ThreadKind::Waiter;
    let filter = crate::seccomp::filter(waiter, seccomp)?;
    let child_err = |what| move |source| JailError::Child { what, source };
    // Block SIGINT/SIGTERM first: one arriving while the child starts is
    // still forwarded. The child's mask is reset by the spawn.
    let signals = crate::signal::TermSignals::of(&[
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGTSTP,
        libc::SIGCONT,
    ])
    .map_err(|e| JailError::Child {
        what: "watch SIGINT, SIGTERM, SIGTSTP and SIGCONT",
        source: std::io::Error::other(e),
    })?;
    // SAFETY: CLONE_NEWPID only decides the namespace of this process's
    // future children; nothing about its own threads or fds changes.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
        .map_err(step("make a PID namespace"))?;
    let exe = std::env::current_exe().map_err(child_err("find its own executable"))?;
    // The child inherits the read end; the write end is this process's only.
    let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(step("make the parent-alive pipe"))?;
    rustix::io::fcntl_setfd(&alive_r, rustix::io::FdFlags::empty())
        .map_err(step("pass the parent-alive pipe on"))?;
    let spawned = Command::new(exe)
        .arg(format!("{CHILD_FLAG}={}", alive_r.as_raw_fd()))
        .args(args)
        .spawn();
    drop(alive_r);
    let mut child = spawned.map_err(child_err("start it"))?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1)).ok_or_else(
        || JailError::Child {
            what: "read its pid",
            source: std::io::Error::other("pid out of range"),
        },
    )?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(step("open a pidfd for the jailed VMM"))?;
    // From here on this process only waits and forwards signals.
    if let Some(f) = &filter {
        crate::seccomp::install(waiter, f)?;
    }
    loop {
        use rustix::event::{PollFd, PollFlags};
        let mut fds = [
            PollFd::new(&pidfd, PollFlags::IN),
            PollFd::from_borrowed_fd(signals.as_fd(), PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(step("wait for the jailed VMM")(e)),
        }
        let child_done = !fds[0].revents().is_empty();
        let signalled = !fds[1].revents().is_empty();
        if signalled {
            if let Some(sig) = signals.read() {
                let sig = if sig == libc::SIGTSTP {
                    libc::SIGSTOP
                } else {
                    sig
                };
                if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        }
        if child_done {
            drop(alive_w);
            let status = child.wait().map_err(child_err("collect its status"))?;
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1));
        }
    }
}

/// In the child: checks it is PID 1 of its namespace and makes it die with
/// its waiting parent, whose pipe it got as descriptor `parent_alive`.
pub fn child_setup(parent_alive: i32) -> Result<(), JailError> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(step("set the parent-death signal"))?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if parent_alive < 3 || unsafe { libc::fcntl(parent_alive, libc::F_GETFD) } < 0 {
        return Err(JailError::Child {
            what: "find the parent-alive pipe",
            source: std::io::Error::other(format!("descriptor {parent_alive} is not open")),
        });
    }
    // SAFETY: the descriptor is open (checked) and was inherited for this
    // alone, before runm-vmm opened anything of its own.
    let pipe = unsafe { std::os::fd::OwnedFd::from_raw_fd(parent_alive) };
    rustix::io::fcntl_setfd(&pipe, rustix::io::FdFlags::CLOEXEC)
        .map_err(step("keep the parent-alive pipe to itself"))?;
    let _ = PARENT_ALIVE.set(pipe);
    // Outside a new PID namespace the flag was passed by hand.
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        return Err(JailError::Child {
            what: "check it is PID 1",
            source: std::io::Error::other(format!(
                "{CHILD_FLAG} is for the process runm-vmm starts itself"
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_binds_the_vsock_directory_and_sizes_fsize() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.img");
        std::fs::write(&disk, vec![0u8; 3 << 20]).unwrap();
        let mut cfg = VmConfig::new("/k");
        assert!(JailPlan::of(&cfg).unwrap().is_none());
        cfg.jail = Some(JailConfig::new(dir.path(), 1000, 1000));
        cfg.vsock = Some(
            format!("3,{}/s/v.sock", dir.path().display())
                .parse()
                .unwrap(),
        );
        cfg.disks
            .push(format!("{},rw", disk.display()).parse().unwrap());
        cfg.console = Console::File("/c".into());
        let plan = JailPlan::of(&cfg).unwrap().unwrap();
        assert_eq!(plan.binds, vec![dir.path().join("s")]);
        assert_eq!(plan.cwd, None);
        // At least the disk; more if this test's stdout or stderr is a file.
        assert_eq!(plan.max_file_size, (3 << 20u64).max(stdio_limit(&cfg)));
        cfg.disks[0].read_only = true;
        assert_eq!(
            JailPlan::of(&cfg).unwrap().unwrap().max_file_size,
            cfg.console_max_bytes.max(stdio_limit(&cfg))
        );
        cfg.jail.as_mut().unwrap().max_file_size = Some(77);
        assert_eq!(JailPlan::of(&cfg).unwrap().unwrap().max_file_size, 77);
    }

    #[test]
    fn a_relative_socket_binds_and_keeps_the_working_directory() {
        // As runm names it: relative to the VMM's working directory.
        let mut cfg = VmConfig::new("/k");
        cfg.jail = Some(JailConfig::new("/j", 1000, 1000));
        cfg.vsock = Some("3,vsock.sock".parse().unwrap());
        let here = std::env::current_dir().unwrap();
        let plan = JailPlan::of(&cfg).unwrap().unwrap();
        assert_eq!(plan.binds, vec![here.clone()]);
        assert_eq!(plan.cwd, Some(here));
    }

    #[test]
    fn paths_inside_the_jail_mirror_the_host() {
        assert_eq!(
            inside(Path::new("/j"), Path::new("/run/x/s")),
            PathBuf::from("/j/run/x/s")
        );
    }
}
