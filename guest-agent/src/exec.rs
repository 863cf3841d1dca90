//! Starting a container process, from a [`ProcessSpec`] to `execve`.
//!
//! Owns the fork and everything the child does before it becomes the
//! workload. All allocation and validation happen in the agent before the
//! fork ([`Prepared`]); the child (a fork of a multi-threaded process) only
//! makes async-signal-safe system calls on that prepared data:
//!
//! 1. signal mask and dispositions back to defaults, new session, stdio (or
//!    the terminal as controlling terminal) on 0-2, every other descriptor
//!    close-on-exec;
//! 2. the container's root: for the init process a private mount namespace
//!    whose root is the container's file system moved onto `/` (switch_root
//!    style: pivot_root cannot leave an initramfs); for `exec` processes the
//!    init process's mount namespace and root;
//! 3. cwd, rlimits, supplementary groups, gid, uid, no_new_privs;
//! 4. a one-byte "ready" (or a failure report) on the sync pipe; the init
//!    process then waits on its start pipe until `Start`;
//! 5. `execve` along `PATH`; if that fails, a message on the process's own
//!    stderr and exit status 127 (not found) or 126 (not executable), as
//!    shells and runc do.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use guest_agent::fdio;
use guest_agent::sigset::SigSet;
use libc::c_char;
use rustix::mount::MountPropagationFlags;
use rustix::process::{Resource, Rlimit};
use rustix::thread::{Gid, LinkNameSpaceType, Uid, UnshareFlags};

use crate::proto::{ProcessSpec, Stream};
use crate::sys;

/// `PATH` used when the process's environment has none (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long the agent waits for a child to report its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit status of a child whose setup failed (it never became the workload).
const SETUP_FAILED: i32 = 127;

/// Length of a setup failure report: `[1, stage, index, errno (4 bytes, LE)]`.
const REPORT_LEN: usize = 7;

/// Errors preparing or starting a process.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `args` is empty or `args[0]` is.
    #[error("process has no command (args is empty)")]
    NoCommand,
    /// A string with a NUL byte in it.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// `cwd` is relative.
    #[error("cwd {0:?} is not an absolute path")]
    RelativeCwd(String),
    /// A uid or gid of -1, which the id system calls read as "no change".
    #[error("{what} {id} is not an id (it means \"unchanged\" to the kernel)")]
    BadId {
        /// `uid`, `gid` or `additional gid`.
        what: &'static str,
        /// The number.
        id: u32,
    },
    /// An rlimit name this kernel interface does not have.
    #[error("unknown rlimit {0:?}")]
    UnknownRlimit(String),
    /// soft > hard.
    #[error("rlimit {name}: soft limit {soft} is above hard limit {hard}")]
    RlimitOrder {
        /// Which.
        name: String,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// Preparing descriptors in the agent failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step of the child's setup failed.
    #[error("process setup: {what}: {source}")]
    Setup {
        /// Which step.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child did not report in time.
    #[error("process setup did not finish within {} s", SETUP_TIMEOUT.as_secs())]
    SetupTimeout,
    /// The child ended without a report.
    #[error("process ended during setup without saying why")]
    SetupVanished,
}

fn io_err<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io {
        what,
        source: source.into(),
    }
}

/// The `RLIMIT_*` resource named `name` (OCI spells them `RLIMIT_NOFILE`, ...).
pub fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_STACK" => Resource::Stack,
        _ => return None,
    })
}

/// The paths `execve` is tried on for `argv0`, in order: `argv0` itself if it
/// has a slash, else each `PATH` entry (from `env`, else [`DEFAULT_PATH`])
/// joined with it; an empty entry means the working directory. The bool says
/// whether `PATH` was searched.
pub fn exec_candidates(argv0: &str, env: &[String]) -> (Vec<String>, bool) {
    if argv0.contains('/') {
        return (vec![argv0.to_owned()], false);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let list = path
        .split(':')
        .map(|dir| match dir {
            "" => argv0.to_owned(),
            d if d.ends_with('/') => format!("{d}{argv0}"),
            d => format!("{d}/{argv0}"),
        })
        .collect();
    (list, true)
}

/// Everything the child needs, allocated before the fork.
pub struct Prepared {
    argv0: String,
    // The strings the pointer arrays point into: moving a CString does not
    // move its buffer, so the pointers stay valid as long as `self` lives.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    candidates: Vec<CString>,
    searched: bool,
    cwd_text: String,
    cwd: CString,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    rlimits: Vec<(Resource, Rlimit)>,
    rlimit_names: Vec<String>,
    no_new_privs: bool,
    /// Whether the process runs on a terminal.
    pub terminal: bool,
    exec_prefix: Vec<u8>,
}

fn cstrings(v: &[String], what: &'static str) -> Result<Vec<CString>, ExecError> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| ExecError::Nul(what)))
        .collect()
}

fn null_terminated(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Prepared {
    /// Validates `spec` and builds the child's data. Rejects what would
    /// otherwise fail in the child with a vaguer message.
    pub fn new(spec: &ProcessSpec) -> Result<Self, ExecError> {
        let argv0 = spec
            .args
            .first()
            .filter(|a| !a.is_empty())
            .ok_or(ExecError::NoCommand)?
            .clone();
        let argv = cstrings(&spec.args, "args")?;
        let envp = cstrings(&spec.env, "env")?;
        let (cands, searched) = exec_candidates(&argv0, &spec.env);
        let candidates = cstrings(&cands, "args[0]")?;
        if !spec.cwd.starts_with('/') {
            return Err(ExecError::RelativeCwd(spec.cwd.clone()));
        }
        let cwd = CString::new(spec.cwd.as_bytes()).map_err(|_| ExecError::Nul("cwd"))?;
        let mut rlimits = Vec::new();
        let mut rlimit_names = Vec::new();
        for r in &spec.rlimits {
            let res =
                rlimit_resource(&r.kind).ok_or_else(|| ExecError::UnknownRlimit(r.kind.clone()))?;
            if r.soft > r.hard {
                return Err(ExecError::RlimitOrder {
                    name: r.kind.clone(),
                    soft: r.soft,
                    hard: r.hard,
                });
            }
            // rustix spells RLIM_INFINITY (all ones) as None; passing the
            // number itself means the same to the kernel.
            let limit = Rlimit {
                current: Some(r.soft),
                maximum: Some(r.hard),
            };
            rlimits.push((res, limit));
            rlimit_names.push(r.kind.clone());
        }
        let id = |what, id: u32| {
            if id == u32::MAX {
                Err(ExecError::BadId { what, id })
            } else {
                Ok(id)
            }
        };
        let uid = Uid::from_raw(id("uid", spec.uid)?);
        let gid = Gid::from_raw(id("gid", spec.gid)?);
        let groups = spec
            .additional_gids
            .iter()
            .map(|&g| id("additional gid", g).map(Gid::from_raw))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            exec_prefix: format!("runm: exec {argv0:?}: ").into_bytes(),
            argv0,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            envp_ptrs: null_terminated(&envp),
            _envp: envp,
            candidates,
            searched,
            cwd_text: spec.cwd.clone(),
            cwd,
            uid,
            gid,
            groups,
            rlimits,
            rlimit_names,
            no_new_privs: spec.no_new_privileges,
            terminal: spec.terminal,
        })
    }

    /// `args[0]`, for logs.
    pub fn command(&self) -> &str {
        &self.argv0
    }
}

/// How the child gets to the container's root.
pub enum RootSetup {
    /// The init process: a private copy of the agent's mount namespace, with
    /// the container's root (mounted at this path) moved onto `/`.
    Fresh {
        /// The container root in the agent's view.
        rootfs: CString,
    },
    /// An `exec` process: the init process's mount namespace and root.
    Join {
        /// `/proc/<init>/ns/mnt`.
        mnt_ns: OwnedFd,
        /// `/proc/<init>/root`.
        root: OwnedFd,
    },
}

impl RootSetup {
    /// For the init process.
    pub fn fresh(rootfs: &Path) -> Result<Self, ExecError> {
        Ok(RootSetup::Fresh {
            rootfs: sys::cpath(rootfs).map_err(|_| ExecError::Nul("rootfs"))?,
        })
    }

    /// For a process joining the init process `init_pid`.
    pub fn join(init_pid: i32) -> Result<Self, ExecError> {
        let open = |what: &str, flags| -> Result<OwnedFd, ExecError> {
            let path = format!("/proc/{init_pid}/{what}");
            OpenOptions::new()
                .read(true)
                .custom_flags(flags | libc::O_CLOEXEC)
                .open(&path)
                .map(OwnedFd::from)
                .map_err(io_err(format!("opening {path}")))
        };
        Ok(RootSetup::Join {
            mnt_ns: open("ns/mnt", 0)?,
            root: open("root", libc::O_PATH | libc::O_DIRECTORY)?,
        })
    }
}

/// The child's ends of its stdio.
pub enum ChildStdio {
    /// Three pipes.
    Pipes {
        /// Read end of stdin.
        stdin: OwnedFd,
        /// Write end of stdout.
        stdout: OwnedFd,
        /// Write end of stderr.
        stderr: OwnedFd,
    },
    /// A terminal's slave side for all three.
    Terminal {
        /// The slave.
        slave: OwnedFd,
    },
}

/// The agent's ends of a process's stdio.
pub struct ParentStdio {
    /// Where host stdin data goes (the terminal's master with a terminal).
    pub stdin: File,
    /// What to relay to the host, and as which stream.
    pub outputs: Vec<(Stream, File)>,
}

/// Makes the stdio of a new process: pipes, or a terminal opened from `ptmx`.
pub fn make_stdio(terminal: bool, ptmx: &Path) -> Result<(ParentStdio, ChildStdio), ExecError> {
    if terminal {
        let what = || format!("opening a terminal from {}", ptmx.display());
        let (master, slave) = fdio::open_pty(ptmx).map_err(io_err(what()))?;
        // The protocol carries no window size: the usual 24x80.
        let size = rustix::termios::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, size).map_err(io_err(what()))?;
        let master = File::from(master);
        let input = master
            .try_clone()
            .map_err(io_err("duplicating the terminal"))?;
        return Ok((
            ParentStdio {
                stdin: input,
                outputs: vec![(Stream::Stdout, master)],
            },
            ChildStdio::Terminal { slave },
        ));
    }
    let (in_r, in_w) = fdio::pipe().map_err(io_err("stdin pipe"))?;
    let (out_r, out_w) = fdio::pipe().map_err(io_err("stdout pipe"))?;
    let (err_r, err_w) = fdio::pipe().map_err(io_err("stderr pipe"))?;
    Ok((
        ParentStdio {
            stdin: File::from(in_w),
            outputs: vec![
                (Stream::Stdout, File::from(out_r)),
                (Stream::Stderr, File::from(err_r)),
            ],
        },
        ChildStdio::Pipes {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

/// A step of the child's setup, as reported on the sync pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Signals = 1,
    Session,
    Terminal,
    Stdio,
    Unshare,
    Propagation,
    EnterRoot,
    MoveRoot,
    Chroot,
    JoinNamespace,
    Cwd,
    Rlimit,
    Groups,
    Gid,
    Uid,
    NoNewPrivs,
}

impl Stage {
    const ALL: [Stage; 16] = [
        Stage::Signals,
        Stage::Session,
        Stage::Terminal,
        Stage::Stdio,
        Stage::Unshare,
        Stage::Propagation,
        Stage::EnterRoot,
        Stage::MoveRoot,
        Stage::Chroot,
        Stage::JoinNamespace,
        Stage::Cwd,
        Stage::Rlimit,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::NoNewPrivs,
    ];

    fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// Names the step for the host, with the values it involved.
    fn describe(self, p: &Prepared, index: u8) -> String {
        match self {
            Stage::Signals => "resetting the signal mask".into(),
            Stage::Session => "setsid".into(),
            Stage::Terminal => "making the terminal the controlling terminal".into(),
            Stage::Stdio => "setting up stdio".into(),
            Stage::Unshare => "unsharing the mount namespace".into(),
            Stage::Propagation => "making mounts private".into(),
            Stage::EnterRoot => "entering the container root".into(),
            Stage::MoveRoot => "moving the container root onto /".into(),
            Stage::Chroot => "chroot to the container root".into(),
            Stage::JoinNamespace => "joining the container's mount namespace".into(),
            Stage::Cwd => format!("chdir to {}", p.cwd_text),
            Stage::Rlimit => format!(
                "setrlimit {}",
                p.rlimit_names
                    .get(usize::from(index))
                    .map_or("?", String::as_str)
            ),
            Stage::Groups => format!(
                "setgroups {:?}",
                p.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
            ),
            Stage::Gid => format!("setgid {}", p.gid.as_raw()),
            Stage::Uid => format!("setuid {}", p.uid.as_raw()),
            Stage::NoNewPrivs => "setting no_new_privs".into(),
        }
    }
}

/// A failed child step: which, which item (rlimits), the error.
type StepError = (Stage, u8, io::Error);

fn at<E: Into<io::Error>>(stage: Stage) -> impl Fn(E) -> StepError {
    move |e| (stage, 0, e.into())
}

/// The child's setup, steps 1-3 of the module docs. Async-signal-safe.
fn child_setup(p: &Prepared, root: &RootSetup, stdio: &ChildStdio) -> Result<(), StepError> {
    SigSet::empty().set_mask().map_err(at(Stage::Signals))?;
    sys::reset_signal_dispositions();
    rustix::process::setsid().map_err(at(Stage::Session))?;
    let (i, o, e) = match stdio {
        ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => (stdin.as_fd(), stdout.as_fd(), stderr.as_fd()),
        ChildStdio::Terminal { slave } => {
            rustix::process::ioctl_tiocsctty(slave).map_err(at(Stage::Terminal))?;
            (slave.as_fd(), slave.as_fd(), slave.as_fd())
        }
    };
    // The agent keeps 0-2 open (init::mount_basics), so these are all >= 3
    // and dup2 never has to move a descriptor onto itself.
    rustix::stdio::dup2_stdin(i).map_err(at(Stage::Stdio))?;
    rustix::stdio::dup2_stdout(o).map_err(at(Stage::Stdio))?;
    rustix::stdio::dup2_stderr(e).map_err(at(Stage::Stdio))?;
    // The agent opens everything close-on-exec; this is the safety net.
    let _ = fdio::cloexec_from(3);

    let slash = c"/";
    match root {
        RootSetup::Fresh { rootfs } => {
            // SAFETY: a mount namespace only; the descriptor table stays
            // shared (it is this single-threaded child's alone anyway).
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
                .map_err(at(Stage::Unshare))?;
            // MS_MOVE refuses to move a mount whose parent is shared; and
            // nothing the container mounts should show up in the agent's view.
            let private = MountPropagationFlags::REC | MountPropagationFlags::PRIVATE;
            rustix::mount::mount_change(slash, private).map_err(at(Stage::Propagation))?;
            rustix::process::chdir(rootfs.as_c_str()).map_err(at(Stage::EnterRoot))?;
            rustix::mount::mount_move(c".", slash).map_err(at(Stage::MoveRoot))?;
            rustix::process::chroot(c".").map_err(at(Stage::Chroot))?;
        }
        RootSetup::Join { mnt_ns, root } => {
            rustix::thread::move_into_link_name_space(
                mnt_ns.as_fd(),
                Some(LinkNameSpaceType::Mount),
            )
            .map_err(at(Stage::JoinNamespace))?;
            rustix::process::fchdir(root).map_err(at(Stage::EnterRoot))?;
            rustix::process::chroot(c".").map_err(at(Stage::Chroot))?;
        }
    }
    rustix::process::chdir(slash).map_err(at(Stage::Chroot))?;
    rustix::process::chdir(p.cwd.as_c_str()).map_err(at(Stage::Cwd))?;
    // Before the uid change: raising a hard limit needs the privilege the
    // container's user may not have (runc orders it the same way).
    for (n, &(res, limit)) in p.rlimits.iter().enumerate() {
        rustix::process::setrlimit(res, limit)
            .map_err(|e| (Stage::Rlimit, u8::try_from(n).unwrap_or(u8::MAX), e.into()))?;
    }
    // rustix's id calls are the raw per-thread system calls; this child is
    // the one thread of its process, so they change the whole process.
    rustix::thread::set_thread_groups(&p.groups).map_err(at(Stage::Groups))?;
    rustix::thread::set_thread_gid(p.gid).map_err(at(Stage::Gid))?;
    rustix::thread::set_thread_uid(p.uid).map_err(at(Stage::Uid))?;
    if p.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(at(Stage::NoNewPrivs))?;
    }
    Ok(())
}

/// Static text for the errors `execve` gives (async-signal-safe `strerror`).
fn errno_text(errno: i32) -> &'static [u8] {
    match errno {
        libc::ENOENT => b"no such file or directory",
        libc::EACCES => b"permission denied",
        libc::ENOEXEC => b"exec format error",
        libc::ENOTDIR => b"not a directory",
        libc::EISDIR => b"is a directory",
        libc::ELOOP => b"too many levels of symbolic links",
        libc::ENAMETOOLONG => b"file name too long",
        libc::E2BIG => b"argument list too long",
        libc::ENOMEM => b"cannot allocate memory",
        libc::ETXTBSY => b"text file busy",
        libc::EPERM => b"operation not permitted",
        libc::EINVAL => b"invalid argument",
        libc::ELIBBAD => b"accessing a corrupted shared library",
        _ => b"cannot execute",
    }
}

/// Step 5: becomes the workload, or says why not on stderr and exits.
fn exec_workload(p: &Prepared) -> ! {
    let mut denied = false;
    let mut fatal = None;
    for path in &p.candidates {
        let err = sys::execve(path, &p.argv_ptrs, &p.envp_ptrs);
        match err.raw_os_error().unwrap_or(libc::ENOENT) {
            // Not here: try the next PATH entry (as execvp does).
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            other => {
                fatal = Some(other);
                break;
            }
        }
    }
    let errno = fatal.unwrap_or(if denied { libc::EACCES } else { libc::ENOENT });
    let reason: &[u8] = if errno == libc::ENOENT && p.searched {
        b"executable file not found in $PATH"
    } else {
        errno_text(errno)
    };
    let stderr = rustix::stdio::stderr();
    let _ = fdio::write_all(stderr, &p.exec_prefix);
    let _ = fdio::write_all(stderr, reason);
    let _ = fdio::write_all(stderr, b"\n");
    sys::exit(if errno == libc::ENOENT { 127 } else { 126 })
}

/// The child, from fork to exec. Never returns.
fn child_main(
    p: &Prepared,
    root: &RootSetup,
    stdio: &ChildStdio,
    sync_w: BorrowedFd<'_>,
    start_r: Option<BorrowedFd<'_>>,
) -> ! {
    if let Err((stage, index, err)) = child_setup(p, root, stdio) {
        let errno = err.raw_os_error().unwrap_or(0).to_le_bytes();
        let report: [u8; REPORT_LEN] = [
            1,
            stage as u8,
            index,
            errno[0],
            errno[1],
            errno[2],
            errno[3],
        ];
        let _ = fdio::write_all(sync_w, &report);
        sys::exit(SETUP_FAILED);
    }
    let _ = fdio::write_all(sync_w, &[0]);
    if let Some(fd) = start_r {
        let mut byte = [0u8; 1];
        // End of file: the agent dropped the start pipe without starting us
        // (it is shutting down); leave without running anything.
        if !matches!(fdio::read(fd, &mut byte), Ok(1)) {
            sys::exit(0);
        }
    }
    exec_workload(p)
}

/// A forked, set-up child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the guest.
    pub pid: i32,
    /// With `hold`: the pipe whose one byte lets it exec.
    pub start: Option<OwnedFd>,
}

/// Reads the child's setup report.
fn read_report(sync_r: &OwnedFd, p: &Prepared) -> Result<(), ExecError> {
    let ready = fdio::poll_readable(sync_r, SETUP_TIMEOUT)
        .map_err(io_err("waiting for the process setup"))?;
    if !ready {
        return Err(ExecError::SetupTimeout);
    }
    let mut buf = [0u8; REPORT_LEN];
    let n = fdio::read(sync_r, &mut buf).map_err(io_err("reading the process setup report"))?;
    match buf {
        _ if n == 0 => Err(ExecError::SetupVanished),
        [0, ..] => Ok(()),
        [1, stage, index, e0, e1, e2, e3] if n == REPORT_LEN => {
            let what = Stage::from_u8(stage)
                .map_or_else(|| format!("step {stage}"), |s| s.describe(p, index));
            Err(ExecError::Setup {
                what,
                source: io::Error::from_raw_os_error(i32::from_le_bytes([e0, e1, e2, e3])),
            })
        }
        _ => Err(ExecError::SetupVanished),
    }
}

/// Forks a child that sets itself up as `p` says and then, unless `hold`,
/// execs at once. With `hold` it waits on [`Spawned::start`] first. Returns
/// once the child reported its setup: a setup failure is an error here.
pub fn spawn(
    p: &Prepared,
    root: &RootSetup,
    stdio: ChildStdio,
    hold: bool,
) -> Result<Spawned, ExecError> {
    let (sync_r, sync_w) = fdio::pipe().map_err(io_err("sync pipe"))?;
    let (start_r, start_w) = if hold {
        let (r, w) = fdio::pipe().map_err(io_err("start pipe"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    // SAFETY: the child runs only `child_main`, which makes async-signal-safe
    // system calls on data prepared before the fork and ends in execve or _exit.
    let fork = unsafe { sys::fork() }.map_err(io_err("fork"))?;
    let pid = match fork {
        sys::Fork::Child => child_main(
            p,
            root,
            &stdio,
            sync_w.as_fd(),
            start_r.as_ref().map(AsFd::as_fd),
        ),
        sys::Fork::Parent(pid) => pid,
    };
    // The parent's copies of the child's ends: closing them is what makes
    // end of file reach the agent when the child is done.
    drop(sync_w);
    drop(start_r);
    drop(stdio);
    match read_report(&sync_r, p) {
        Ok(()) => Ok(Spawned {
            pid,
            start: start_w,
        }),
        Err(e) => {
            if matches!(e, ExecError::SetupTimeout) {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            Err(e)
        }
    }
}

/// Lets a held child exec.
pub fn release(start: OwnedFd) -> Result<(), ExecError> {
    fdio::write_all(start, &[1]).map_err(io_err("releasing the process"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Rlimit;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_lookup() {
        assert_eq!(
            exec_candidates("sh", &env(&["HOME=/", "PATH=/bin:/usr/bin/:"])),
            (
                vec!["/bin/sh".to_string(), "/usr/bin/sh".into(), "sh".into()],
                true
            )
        );
        assert_eq!(
            exec_candidates("./run", &env(&["PATH=/bin"])),
            (vec!["./run".to_string()], false)
        );
        assert_eq!(
            exec_candidates("/bin/echo", &[]),
            (vec!["/bin/echo".to_string()], false)
        );
        let (default, searched) = exec_candidates("ls", &env(&["TERM=xterm"]));
        assert!(searched);
        assert_eq!(default.len(), DEFAULT_PATH.split(':').count());
        assert_eq!(default[0], "/usr/local/sbin/ls");
        // The first PATH wins, as getenv would find it.
        assert_eq!(
            exec_candidates("x", &env(&["PATH=/a", "PATH=/b"])).0,
            vec!["/a/x".to_string()]
        );
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(Resource::Nofile));
        assert_eq!(rlimit_resource("RLIMIT_CORE"), Some(Resource::Core));
        assert_eq!(rlimit_resource("RLIMIT_RTTIME"), Some(Resource::Rttime));
        assert_eq!(rlimit_resource("NOFILE"), None);
        assert_eq!(rlimit_resource("rlimit_nofile"), None);
    }

    fn spec(args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: env(args),
            env: env(&["PATH=/bin"]),
            cwd: "/".into(),
            ..ProcessSpec::default()
        }
    }

    #[test]
    fn prepare_validates_before_the_fork() {
        assert!(matches!(
            Prepared::new(&spec(&[])),
            Err(ExecError::NoCommand)
        ));
        assert!(matches!(
            Prepared::new(&spec(&[""])),
            Err(ExecError::NoCommand)
        ));
        assert!(matches!(
            Prepared::new(&spec(&["a\0b"])),
            Err(ExecError::Nul("args"))
        ));
        let mut s = spec(&["sh"]);
        s.cwd = "tmp".into();
        assert!(matches!(Prepared::new(&s), Err(ExecError::RelativeCwd(_))));
        let mut s = spec(&["sh"]);
        s.rlimits = vec![Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            soft: 1,
            hard: 1,
        }];
        assert_eq!(
            Prepared::new(&s).err().map(|e| e.to_string()),
            Some("unknown rlimit \"RLIMIT_BOGUS\"".into())
        );
        s.rlimits[0].kind = "RLIMIT_NOFILE".into();
        s.rlimits[0].soft = 2;
        assert!(matches!(
            Prepared::new(&s),
            Err(ExecError::RlimitOrder { .. })
        ));
        s.rlimits[0].hard = 2;
        for (uid, gid, groups) in [
            (u32::MAX, 0, vec![]),
            (0, u32::MAX, vec![]),
            (0, 0, vec![1, u32::MAX]),
        ] {
            let mut bad = s.clone();
            (bad.uid, bad.gid, bad.additional_gids) = (uid, gid, groups);
            assert!(matches!(Prepared::new(&bad), Err(ExecError::BadId { .. })));
        }
        let p = Prepared::new(&s).unwrap();
        assert_eq!(p.command(), "sh");
        assert_eq!(p.argv_ptrs.len(), 2);
        assert!(p.argv_ptrs[1].is_null());
        assert!(p.envp_ptrs.last().unwrap().is_null());
    }

    #[test]
    fn setup_failures_are_described() {
        let mut s = spec(&["sh"]);
        s.cwd = "/nowhere".into();
        s.rlimits = vec![Rlimit {
            kind: "RLIMIT_NPROC".into(),
            soft: 1,
            hard: 1,
        }];
        let p = Prepared::new(&s).unwrap();
        assert_eq!(Stage::Cwd.describe(&p, 0), "chdir to /nowhere");
        assert_eq!(Stage::Rlimit.describe(&p, 0), "setrlimit RLIMIT_NPROC");
        assert_eq!(Stage::Rlimit.describe(&p, 9), "setrlimit ?");
        for s in Stage::ALL {
            assert_eq!(Stage::from_u8(s as u8), Some(s));
        }
        assert_eq!(Stage::from_u8(0), None);
    }
}
