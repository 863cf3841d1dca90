//! Starting a container process, from a [`ProcessSpec`] to `execve`.
//!
//! Owns the fork and everything the child does before it becomes the
//! workload, in runc's order. All allocation and validation happen in the
//! agent before the fork ([`Prepared`], [`RootSetup`]); the child (a fork of
//! a multi-threaded process) only makes async-signal-safe system calls on
//! that prepared data. The child first waits for the agent's "go", sent once
//! the agent has written its user namespace's id maps, moved it into the
//! container's cgroup and set its OOM score. Then:
//!
//! 1. the container's init process is cloned into new PID, mount, IPC and
//!    UTS namespaces (and user ones on request; a cgroup namespace is
//!    unshared after the move into its cgroup), so it is PID 1 of its own
//!    PID namespace and sees nothing of the agent; a pod member's init
//!    process instead shares the network, IPC and UTS namespaces of another
//!    container's init: the agent's thread enters them just for the clone
//!    (a clone starts in its caller's namespaces; these three may be
//!    entered by one thread of a multi-threaded process); an `exec` process joins
//!    the init process's namespaces and root (setns), then clones itself
//!    into its PID namespace as a child of the agent (`CLONE_PARENT`) and
//!    that child goes on, its pid reported first;
//! 2. signal mask and dispositions back to defaults, new session, stdio (or
//!    the terminal as controlling terminal) on 0-2, every other descriptor
//!    close-on-exec;
//! 3. for the init process: every mount private, a bind of the container's
//!    root moved onto `/` and chroot (switch_root style: pivot_root cannot
//!    leave an initramfs), the root's propagation, the mounts of its own
//!    namespaces (proc, mqueue, cgroup2), hostname, sysctls, read-only paths
//!    (read-only binds), masked paths (`/dev/null` over files, a read-only
//!    tmpfs over directories);
//! 4. cwd, rlimits; the seccomp filter here without no_new_privs (loading
//!    it then needs CAP_SYS_ADMIN); the bounding set, keep-caps, groups,
//!    gid, uid, the effective, permitted and inheritable sets, the ambient
//!    set, no_new_privs;
//! 5. a "ready" record (or a failure report) on the sync pipe; the init
//!    process then waits on its start pipe until `Start`;
//! 6. with no_new_privs the seccomp filter, as late as possible; `execve`
//!    along `PATH`; if that fails, a message on the process's own stderr
//!    and exit status 127 (not found) or 126 (not executable), as shells
//!    and runc do.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_agent::fdio;
use guest_agent::sigset::SigSet;
use libc::c_char;
use rustix::fs::Mode;
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets, Gid, LinkNameSpaceType, Uid, UnshareFlags};

use crate::console::log;
use crate::mounts::DeferredMount;
use crate::proto::{Capabilities, IdMapping, LinuxSpec, ProcessSpec, SeccompSpec, Stream};
use crate::sys;

/// `PATH` used when the process's environment has none (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long the agent waits for a child to report its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit status of a child whose setup failed (it never became the workload).
const SETUP_FAILED: i32 = 127;

/// Length of a record on the sync pipe: `[kind, stage, index, value (4
/// bytes, LE)]`; kind [`READY`], [`FAILED`] (value: errno) or [`PID`]
/// (value: the pid of an `exec` process, from the process that cloned it).
const RECORD_LEN: usize = 7;
const READY: u8 = 0;
const FAILED: u8 = 1;
const PID: u8 = 2;

/// Largest BPF program the kernel takes (`BPF_MAXINSNS`).
const MAX_BPF_LEN: usize = 4096;

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
    /// A value of the container's Linux configuration the agent refuses.
    #[error("{0}")]
    Invalid(String),
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

/// A container's seccomp filters as the kernel takes them.
pub struct SeccompProgram {
    flags: u32,
    filters: Vec<Vec<libc::sock_filter>>,
}

impl SeccompProgram {
    /// Checks and converts the host's compiled filters.
    pub fn new(spec: &SeccompSpec) -> Result<Self, ExecError> {
        let mut filters = Vec::new();
        for (i, f) in spec.filters.iter().enumerate() {
            if f.is_empty() || f.len() > MAX_BPF_LEN {
                return Err(ExecError::Invalid(format!(
                    "seccomp filter {i} has {} instructions (1 to {MAX_BPF_LEN})",
                    f.len()
                )));
            }
            filters.push(
                f.iter()
                    .map(|i| libc::sock_filter {
                        code: i.0,
                        jt: i.1,
                        jf: i.2,
                        k: i.3,
                    })
                    .collect(),
            );
        }
        Ok(SeccompProgram {
            flags: spec.flags,
            filters,
        })
    }

    /// Loads every filter, in order (async-signal-safe).
    fn load(&self) -> io::Result<()> {
        for f in &self.filters {
            sys::load_seccomp_filter(self.flags, f)?;
        }
        Ok(())
    }
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
    caps: Capabilities,
    seccomp: Option<Arc<SeccompProgram>>,
    oom_score_adj: Option<i32>,
    umask: Option<Mode>,
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
    /// otherwise fail in the child with a vaguer message. A process without
    /// capabilities of its own gets `inherited` (the container's for `exec`,
    /// none for the container's process); every process of a container gets
    /// its `seccomp` filter.
    pub fn new(
        spec: &ProcessSpec,
        inherited: Capabilities,
        seccomp: Option<Arc<SeccompProgram>>,
    ) -> Result<Self, ExecError> {
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
            caps: spec.capabilities.unwrap_or(inherited),
            seccomp,
            oom_score_adj: spec.oom_score_adj,
            umask: spec.umask.map(|m| Mode::from_raw_mode(m & 0o777)),
            terminal: spec.terminal,
        })
    }

    /// `args[0]`, for logs.
    pub fn command(&self) -> &str {
        &self.argv0
    }

    /// The capability sets it gets.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }
}

/// What the container's init process sets up in its new namespaces, all
/// prepared for the forked child.
pub struct FreshRoot {
    /// The container root in the agent's view.
    rootfs: CString,
    user_namespace: bool,
    cgroup_namespace: bool,
    /// `uid_map` and `gid_map` text, written by the agent.
    uid_map: String,
    gid_map: String,
    hostname: Option<CString>,
    /// Propagation of the container's root (empty: left private).
    propagation: MountPropagationFlags,
    /// For a pod member: the other container's network, IPC and UTS
    /// namespaces that differ from the agent's (entered for the clone);
    /// `None`: new IPC and UTS namespaces, the agent's network.
    shared: Option<Vec<Namespace>>,
    mounts: Vec<DeferredMount>,
    /// (`/proc/sys/...` path, value, key).
    sysctl: Vec<(CString, Vec<u8>, String)>,
    readonly: Vec<(CString, String)>,
    masked: Vec<(CString, String)>,
}

/// An open namespace: (fd, `CLONE_NEW*`, name).
type Namespace = (OwnedFd, LinkNameSpaceType, &'static str);

/// How the child gets to the container's root.
pub enum RootSetup {
    /// The init process: new namespaces, the container's root (mounted at
    /// this path by the agent) moved onto `/`.
    Fresh(Box<FreshRoot>),
    /// An `exec` process: the init process's namespaces and root.
    Join {
        /// Namespaces that differ from the agent's, in the order to join
        /// them.
        namespaces: Vec<Namespace>,
        /// `/proc/<init>/root`.
        root: OwnedFd,
    },
}

/// Namespaces an `exec` process joins, in order: the user namespace first
/// (its owner's rights are needed for the others), the mount one last.
const JOIN_ORDER: &[(&str, LinkNameSpaceType)] = &[
    ("user", LinkNameSpaceType::User),
    ("cgroup", LinkNameSpaceType::ControlGroup),
    ("net", LinkNameSpaceType::Network),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("pid", LinkNameSpaceType::ProcessID),
    ("mnt", LinkNameSpaceType::Mount),
];

/// What a pod member shares with the container it names.
const SHARED_NAMESPACES: &[(&str, LinkNameSpaceType)] = &[
    ("net", LinkNameSpaceType::Network),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
];

fn open_ns(path: String, flags: i32) -> Result<OwnedFd, ExecError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(io_err(format!("opening {path}")))
}

/// The namespaces of `pid` among `which` that are not the agent's, opened.
fn namespaces_of(
    pid: i32,
    which: &[(&'static str, LinkNameSpaceType)],
) -> Result<Vec<Namespace>, ExecError> {
    let mut out = Vec::new();
    for &(name, flag) in which {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let link = std::fs::read_link(&theirs).map_err(io_err(format!("reading {theirs}")))?;
        if std::fs::read_link(format!("/proc/self/ns/{name}")).ok() == Some(link) {
            continue;
        }
        out.push((open_ns(theirs, 0)?, flag, name));
    }
    Ok(out)
}

/// Moves the calling thread into `namespaces`; returns its own ones to come
/// back to with [`leave_namespaces`]. On failure it is back in its own.
fn enter_namespaces(namespaces: &[Namespace]) -> Result<Vec<Namespace>, ExecError> {
    let mut own = Vec::new();
    for (_, flag, name) in namespaces {
        own.push((
            open_ns(format!("/proc/thread-self/ns/{name}"), 0)?,
            *flag,
            *name,
        ));
    }
    for (n, (fd, flag, name)) in namespaces.iter().enumerate() {
        if let Err(e) = rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*flag)) {
            let _ = leave_namespaces(&own[..n]);
            return Err(io_err(format!("entering the shared {name} namespace"))(e));
        }
    }
    Ok(own)
}

/// Moves the calling thread back into its own namespaces.
fn leave_namespaces(own: &[Namespace]) -> Result<(), ExecError> {
    for (fd, flag, name) in own {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*flag))
            .map_err(io_err(format!("returning to the agent's {name} namespace")))?;
    }
    Ok(())
}

/// `/proc/<pid>/uid_map` text for `mappings`.
pub fn id_map_text(mappings: &[IdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Propagation flags for a propagation name (`rslave`, ...).
pub fn propagation_flags(name: &str) -> Option<MountPropagationFlags> {
    use MountPropagationFlags as P;
    let (rec, base) = match name.strip_prefix('r') {
        Some(b) if !b.is_empty() => (P::REC, b),
        _ => (P::empty(), name),
    };
    let flag = match base {
        "shared" => P::SHARED,
        // rustix calls MS_SLAVE "downstream".
        "slave" => P::DOWNSTREAM,
        "private" => P::PRIVATE,
        "unbindable" => P::UNBINDABLE,
        _ => return None,
    };
    Some(flag | rec)
}

/// `/proc/sys/...` for a sysctl key (dots are slashes, as runc writes it).
pub fn sysctl_path(key: &str) -> Option<String> {
    let rel = key.replace('.', "/");
    if key.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "..") {
        return None;
    }
    Some(format!("/proc/sys/{rel}"))
}

impl RootSetup {
    /// For the init process: `linux` checked and made ready for the child;
    /// with `share_with`, the network, IPC and UTS namespaces of that
    /// (running) init process are the new one's.
    pub fn fresh(
        rootfs: &Path,
        linux: &LinuxSpec,
        hostname: Option<CString>,
        mounts: Vec<DeferredMount>,
        share_with: Option<i32>,
    ) -> Result<Self, ExecError> {
        let invalid = ExecError::Invalid;
        let propagation = match &linux.rootfs_propagation {
            Some(p) => propagation_flags(p)
                .ok_or_else(|| invalid(format!("rootfs propagation {p:?} is not known")))?,
            None => MountPropagationFlags::empty(),
        };
        let mut sysctl = Vec::new();
        for (k, v) in &linux.sysctl {
            let path = sysctl_path(k)
                .ok_or_else(|| invalid(format!("sysctl {k:?} is not a kernel parameter name")))?;
            sysctl.push((
                sys::cstr(&path).map_err(|_| ExecError::Nul("sysctl"))?,
                v.as_bytes().to_vec(),
                k.clone(),
            ));
        }
        let paths = |list: &[String], what: &'static str| {
            list.iter()
                .map(|p| {
                    if !p.starts_with('/') {
                        return Err(invalid(format!("{what} {p:?} is not absolute")));
                    }
                    Ok((sys::cstr(p).map_err(|_| ExecError::Nul(what))?, p.clone()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if linux.user_namespace && (linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty())
        {
            return Err(invalid(
                "a user namespace needs uid and gid mappings".into(),
            ));
        }
        let shared = share_with
            .map(|pid| namespaces_of(pid, SHARED_NAMESPACES))
            .transpose()?;
        Ok(RootSetup::Fresh(Box::new(FreshRoot {
            shared,
            rootfs: sys::cpath(rootfs).map_err(|_| ExecError::Nul("rootfs"))?,
            user_namespace: linux.user_namespace,
            cgroup_namespace: linux.cgroup_namespace,
            uid_map: id_map_text(&linux.uid_mappings),
            gid_map: id_map_text(&linux.gid_mappings),
            hostname,
            propagation,
            mounts,
            sysctl,
            readonly: paths(&linux.readonly_paths, "read-only path")?,
            masked: paths(&linux.masked_paths, "masked path")?,
        })))
    }

    /// For a process joining the init process `init_pid`: its namespaces
    /// that are not the agent's, and its root.
    pub fn join(init_pid: i32) -> Result<Self, ExecError> {
        Ok(RootSetup::Join {
            namespaces: namespaces_of(init_pid, JOIN_ORDER)?,
            root: open_ns(
                format!("/proc/{init_pid}/root"),
                libc::O_PATH | libc::O_DIRECTORY,
            )?,
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
    /// The terminal's master, to resize it (with a terminal).
    pub terminal: Option<File>,
    /// What to relay to the host, and as which stream.
    pub outputs: Vec<(Stream, File)>,
}

/// Makes the stdio of a new process: pipes, or a terminal opened from `ptmx`.
pub fn make_stdio(terminal: bool, ptmx: &Path) -> Result<(ParentStdio, ChildStdio), ExecError> {
    if terminal {
        let what = || format!("opening a terminal from {}", ptmx.display());
        let (master, slave) = fdio::open_pty(ptmx).map_err(io_err(what()))?;
        // The usual 24x80 until the host says its size (`Resize`).
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
        let sizing = master
            .try_clone()
            .map_err(io_err("duplicating the terminal"))?;
        return Ok((
            ParentStdio {
                stdin: input,
                terminal: Some(sizing),
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
            terminal: None,
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
    CgroupNamespace,
    Propagation,
    BindRoot,
    EnterRoot,
    MoveRoot,
    Chroot,
    RootPropagation,
    Mount,
    Hostname,
    Sysctl,
    ReadonlyPath,
    MaskedPath,
    JoinNamespace,
    Clone,
    Cwd,
    Rlimit,
    Seccomp,
    Bounding,
    KeepCaps,
    Groups,
    Gid,
    Uid,
    Capabilities,
    NoNewPrivs,
}

impl Stage {
    const ALL: [Stage; 28] = [
        Stage::Signals,
        Stage::Session,
        Stage::Terminal,
        Stage::Stdio,
        Stage::CgroupNamespace,
        Stage::Propagation,
        Stage::BindRoot,
        Stage::EnterRoot,
        Stage::MoveRoot,
        Stage::Chroot,
        Stage::RootPropagation,
        Stage::Mount,
        Stage::Hostname,
        Stage::Sysctl,
        Stage::ReadonlyPath,
        Stage::MaskedPath,
        Stage::JoinNamespace,
        Stage::Clone,
        Stage::Cwd,
        Stage::Rlimit,
        Stage::Seccomp,
        Stage::Bounding,
        Stage::KeepCaps,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::Capabilities,
        Stage::NoNewPrivs,
    ];

    fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// Names the step for the host, with the values it involved.
    fn describe(self, p: &Prepared, root: &RootSetup, index: u8) -> String {
        let i = usize::from(index);
        let fresh = match root {
            RootSetup::Fresh(f) => Some(f.as_ref()),
            RootSetup::Join { .. } => None,
        };
        let nth = |list: Option<&[(CString, String)]>| {
            list.and_then(|l| l.get(i))
                .map_or("?", |(_, s)| s.as_str())
                .to_owned()
        };
        match self {
            Stage::Signals => "resetting the signal mask".into(),
            Stage::Session => "setsid".into(),
            Stage::Terminal => "making the terminal the controlling terminal".into(),
            Stage::Stdio => "setting up stdio".into(),
            Stage::CgroupNamespace => "unsharing the cgroup namespace".into(),
            Stage::Propagation => "making mounts private".into(),
            Stage::BindRoot => "binding the container root".into(),
            Stage::EnterRoot => "entering the container root".into(),
            Stage::MoveRoot => "moving the container root onto /".into(),
            Stage::Chroot => "chroot to the container root".into(),
            Stage::RootPropagation => "setting the root's propagation".into(),
            Stage::Mount => format!(
                "mounting {}",
                fresh
                    .and_then(|f| f.mounts.get(i))
                    .map_or("?", |m| m.destination.as_str())
            ),
            Stage::Hostname => "setting the hostname".into(),
            Stage::Sysctl => format!(
                "writing sysctl {}",
                fresh
                    .and_then(|f| f.sysctl.get(i))
                    .map_or("?", |s| s.2.as_str())
            ),
            Stage::ReadonlyPath => format!(
                "making {} read-only",
                nth(fresh.map(|f| f.readonly.as_slice()))
            ),
            Stage::MaskedPath => format!("masking {}", nth(fresh.map(|f| f.masked.as_slice()))),
            Stage::JoinNamespace => format!(
                "joining the container's {} namespace",
                match root {
                    RootSetup::Join { namespaces, .. } => namespaces.get(i).map_or("?", |n| n.2),
                    RootSetup::Fresh(_) => "?",
                }
            ),
            Stage::Clone => "cloning into the container's PID namespace".into(),
            Stage::Cwd => format!("chdir to {}", p.cwd_text),
            Stage::Rlimit => format!(
                "setrlimit {}",
                p.rlimit_names.get(i).map_or("?", String::as_str)
            ),
            Stage::Seccomp => "loading the seccomp filter".into(),
            Stage::Bounding => format!("dropping capability {index} from the bounding set"),
            Stage::KeepCaps => "setting keep-caps".into(),
            Stage::Groups => format!(
                "setgroups {:?}",
                p.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
            ),
            Stage::Gid => format!("setgid {}", p.gid.as_raw()),
            Stage::Uid => format!("setuid {}", p.uid.as_raw()),
            Stage::Capabilities => format!(
                "setting capabilities (effective {:#x}, permitted {:#x}, inheritable {:#x})",
                p.caps.effective, p.caps.permitted, p.caps.inheritable
            ),
            Stage::NoNewPrivs => "setting no_new_privs".into(),
        }
    }
}

/// A failed child step: which, which item (rlimits, mounts, ...), the error.
type StepError = (Stage, u8, io::Error);

fn at<E: Into<io::Error>>(stage: Stage) -> impl Fn(E) -> StepError {
    move |e| (stage, 0, e.into())
}

fn at_item<E: Into<io::Error>>(stage: Stage, n: usize) -> impl Fn(E) -> StepError {
    move |e| (stage, u8::try_from(n).unwrap_or(u8::MAX), e.into())
}

/// Step 2 of the module docs.
fn child_stdio(stdio: &ChildStdio) -> Result<(), StepError> {
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
    Ok(())
}

/// A read-only bind of `path` onto itself, keeping its other flags (which
/// a user namespace may not clear); a missing path is skipped, as runc does.
fn readonly_path(path: &std::ffi::CStr) -> io::Result<()> {
    match rustix::mount::mount_bind_recursive(path, path) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        other => other?,
    }
    // ST_* and MS_* share their values for these flags.
    let kept = MountFlags::from_bits_truncate(
        u32::try_from(rustix::fs::statvfs(path)?.f_flag.bits()).unwrap_or(0),
    ) & (MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC
        | MountFlags::NOATIME
        | MountFlags::NODIRATIME
        | MountFlags::RELATIME);
    rustix::mount::mount_remount(
        path,
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::REC | kept,
        c"",
    )?;
    Ok(())
}

/// `/dev/null` over a file, a read-only tmpfs over a directory; a missing
/// path is skipped, as runc does.
fn mask_path(path: &std::ffi::CStr) -> io::Result<()> {
    match rustix::mount::mount_bind(c"/dev/null", path) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::NOTDIR) => Ok(rustix::mount::mount(
            c"tmpfs",
            path,
            c"tmpfs",
            MountFlags::RDONLY,
            None,
        )?),
        other => Ok(other?),
    }
}

/// Step 3: the init process's root and what lives in its namespaces.
fn fresh_root(f: &FreshRoot) -> Result<(), StepError> {
    let slash = c"/";
    // MS_MOVE refuses to move a mount whose parent is shared; and nothing
    // the container mounts should show up in the agent's view.
    let private = MountPropagationFlags::REC | MountPropagationFlags::PRIVATE;
    rustix::mount::mount_change(slash, private).map_err(at(Stage::Propagation))?;
    // A bind made here is this namespace's own: in a user namespace the
    // copied mounts are locked in place and could not be moved.
    rustix::mount::mount_bind_recursive(f.rootfs.as_c_str(), f.rootfs.as_c_str())
        .map_err(at(Stage::BindRoot))?;
    rustix::process::chdir(f.rootfs.as_c_str()).map_err(at(Stage::EnterRoot))?;
    rustix::mount::mount_move(c".", slash).map_err(at(Stage::MoveRoot))?;
    rustix::process::chroot(c".").map_err(at(Stage::Chroot))?;
    rustix::process::chdir(slash).map_err(at(Stage::Chroot))?;
    if !f.propagation.is_empty() {
        rustix::mount::mount_change(slash, f.propagation).map_err(at(Stage::RootPropagation))?;
    }
    for (n, m) in f.mounts.iter().enumerate() {
        let err = at_item(Stage::Mount, n);
        rustix::mount::mount(
            m.source.as_c_str(),
            m.target.as_c_str(),
            m.fstype.as_c_str(),
            m.flags,
            m.data.as_deref(),
        )
        .map_err(&err)?;
        if !m.propagation.is_empty() {
            rustix::mount::mount_change(m.target.as_c_str(), m.propagation).map_err(&err)?;
        }
    }
    if let Some(name) = &f.hostname {
        rustix::system::sethostname(name.as_bytes()).map_err(at(Stage::Hostname))?;
    }
    for (n, (path, value, _)) in f.sysctl.iter().enumerate() {
        let fd = rustix::fs::open(
            path.as_c_str(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(at_item(Stage::Sysctl, n))?;
        fdio::write_all(&fd, value).map_err(at_item(Stage::Sysctl, n))?;
    }
    for (n, (path, _)) in f.readonly.iter().enumerate() {
        readonly_path(path).map_err(at_item(Stage::ReadonlyPath, n))?;
    }
    for (n, (path, _)) in f.masked.iter().enumerate() {
        mask_path(path).map_err(at_item(Stage::MaskedPath, n))?;
    }
    Ok(())
}

/// Step 4's capabilities and user, in runc's order: the bounding set while
/// still privileged, keep-caps across the uid change, then the sets.
fn capabilities_and_user(p: &Prepared) -> Result<(), StepError> {
    for n in 0..64u32 {
        if p.caps.bounding & (1 << n) != 0 {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << n,
        )) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(at_item(Stage::Bounding, n as usize)(e)),
        }
    }
    rustix::thread::set_keep_capabilities(true).map_err(at(Stage::KeepCaps))?;
    // rustix's id calls are the raw per-thread system calls; this child is
    // the one thread of its process, so they change the whole process.
    rustix::thread::set_thread_groups(&p.groups).map_err(at(Stage::Groups))?;
    rustix::thread::set_thread_gid(p.gid).map_err(at(Stage::Gid))?;
    rustix::thread::set_thread_uid(p.uid).map_err(at(Stage::Uid))?;
    rustix::thread::set_keep_capabilities(false).map_err(at(Stage::KeepCaps))?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::from_bits_retain(p.caps.effective),
            permitted: CapabilitySet::from_bits_retain(p.caps.permitted),
            inheritable: CapabilitySet::from_bits_retain(p.caps.inheritable),
        },
    )
    .map_err(at(Stage::Capabilities))?;
    let _ = rustix::thread::clear_ambient_capability_set();
    for n in 0..64u32 {
        if p.caps.ambient & (1 << n) != 0 {
            // As runc: an ambient capability the permitted and inheritable
            // sets do not both hold cannot be raised, and is skipped.
            let _ = rustix::thread::configure_capability_in_ambient_set(
                CapabilitySet::from_bits_retain(1 << n),
                true,
            );
        }
    }
    Ok(())
}

/// The child's setup, steps 2-4 of the module docs (after any namespace
/// joining). Async-signal-safe.
fn child_setup(p: &Prepared, root: &RootSetup, stdio: &ChildStdio) -> Result<(), StepError> {
    if let RootSetup::Fresh(f) = root {
        if f.cgroup_namespace {
            // Now that the agent moved us into the container's cgroup, so
            // that it is the namespace's root.
            // SAFETY: a cgroup namespace only; the descriptor table stays
            // shared (it is this single-threaded child's alone anyway).
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWCGROUP) }
                .map_err(at(Stage::CgroupNamespace))?;
        }
    }
    child_stdio(stdio)?;
    if let RootSetup::Fresh(f) = root {
        fresh_root(f)?;
    }
    rustix::process::chdir(p.cwd.as_c_str()).map_err(at(Stage::Cwd))?;
    if let Some(mask) = p.umask {
        rustix::process::umask(mask);
    }
    // Before the uid change: raising a hard limit needs the privilege the
    // container's user may not have (runc orders it the same way).
    for (n, &(res, limit)) in p.rlimits.iter().enumerate() {
        rustix::process::setrlimit(res, limit).map_err(at_item(Stage::Rlimit, n))?;
    }
    if let Some(filter) = p.seccomp.as_ref().filter(|_| !p.no_new_privs) {
        filter.load().map_err(at(Stage::Seccomp))?;
    }
    capabilities_and_user(p)?;
    if p.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(at(Stage::NoNewPrivs))?;
    }
    Ok(())
}

/// Step 1 for an `exec` process: joins the container's namespaces and root,
/// then clones the process that goes on. `Some(pid)` in the joining
/// process (which then reports and leaves), `None` in the clone.
fn join_container(root: &RootSetup) -> Result<Option<i32>, StepError> {
    let RootSetup::Join { namespaces, root } = root else {
        return Ok(None);
    };
    for (n, (fd, kind, _)) in namespaces.iter().enumerate() {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*kind))
            .map_err(at_item(Stage::JoinNamespace, n))?;
    }
    rustix::process::fchdir(root).map_err(at(Stage::EnterRoot))?;
    rustix::process::chroot(c".").map_err(at(Stage::Chroot))?;
    // SAFETY: the clone only goes on with this child's async-signal-safe
    // code; CLONE_PARENT makes it the agent's child, reaped by the agent.
    match unsafe { sys::clone_process(libc::CLONE_PARENT) }.map_err(at(Stage::Clone))? {
        sys::Fork::Child => Ok(None),
        sys::Fork::Parent(pid) => Ok(Some(pid)),
    }
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

fn record(kind: u8, stage: u8, index: u8, value: i32) -> [u8; RECORD_LEN] {
    let v = value.to_le_bytes();
    [kind, stage, index, v[0], v[1], v[2], v[3]]
}

/// The child, from fork to exec. Never returns.
fn child_main(
    p: &Prepared,
    root: &RootSetup,
    stdio: &ChildStdio,
    go_r: BorrowedFd<'_>,
    sync_w: BorrowedFd<'_>,
    start_r: Option<BorrowedFd<'_>>,
) -> ! {
    let mut byte = [0u8; 1];
    // End of file: the agent gave up on us before we started.
    if !matches!(fdio::read(go_r, &mut byte), Ok(1)) {
        sys::exit(SETUP_FAILED);
    }
    let fail = |(stage, index, err): StepError| -> ! {
        let errno = err.raw_os_error().unwrap_or(0);
        let _ = fdio::write_all(sync_w, &record(FAILED, stage as u8, index, errno));
        sys::exit(SETUP_FAILED)
    };
    match join_container(root) {
        Ok(Some(pid)) => {
            let _ = fdio::write_all(sync_w, &record(PID, 0, 0, pid));
            sys::exit(0);
        }
        Ok(None) => {}
        Err(e) => fail(e),
    }
    if let Err(e) = child_setup(p, root, stdio) {
        fail(e);
    }
    let _ = fdio::write_all(sync_w, &record(READY, 0, 0, 0));
    if let Some(fd) = start_r {
        // End of file: the agent dropped the start pipe without starting us
        // (it is shutting down); leave without running anything.
        if !matches!(fdio::read(fd, &mut byte), Ok(1)) {
            sys::exit(0);
        }
    }
    if let Some(filter) = p.seccomp.as_ref().filter(|_| p.no_new_privs) {
        // As close to execve as possible, as runc does: fewer calls of ours
        // need the profile's permission.
        if let Err(e) = filter.load() {
            let stderr = rustix::stdio::stderr();
            let _ = fdio::write_all(stderr, b"runm: loading the seccomp filter: ");
            let _ = fdio::write_all(stderr, errno_text(e.raw_os_error().unwrap_or(0)));
            let _ = fdio::write_all(stderr, b"\n");
            sys::exit(SETUP_FAILED);
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

/// Reads one record from the sync pipe, `None` at end of file.
fn read_record(fd: &OwnedFd, deadline: Instant) -> Result<Option<[u8; RECORD_LEN]>, ExecError> {
    let mut buf = [0u8; RECORD_LEN];
    let mut got = 0;
    while got < RECORD_LEN {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready =
            fdio::poll_readable(fd, left).map_err(io_err("waiting for the process setup"))?;
        if !ready {
            return Err(ExecError::SetupTimeout);
        }
        let n =
            fdio::read(fd, &mut buf[got..]).map_err(io_err("reading the process setup report"))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ExecError::SetupVanished)
            };
        }
        got += n;
    }
    Ok(Some(buf))
}

/// What the agent does between the clone and the child's "go".
fn parent_setup(
    pid: i32,
    p: &Prepared,
    root: &RootSetup,
    cgroup_procs: Option<&Path>,
) -> Result<(), ExecError> {
    if let RootSetup::Fresh(f) = root {
        if f.user_namespace {
            // gid_map first is not needed: the agent is privileged in the
            // parent namespace, so setgroups stays allowed.
            for (file, text) in [("uid_map", &f.uid_map), ("gid_map", &f.gid_map)] {
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, text).map_err(io_err(format!("writing {path}")))?;
            }
        }
    }
    if let Some(procs) = cgroup_procs {
        std::fs::write(procs, pid.to_string())
            .map_err(io_err(format!("moving pid {pid} into {}", procs.display())))?;
    }
    if let Some(adj) = p.oom_score_adj {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, adj.to_string()).map_err(io_err(format!("writing {path}")))?;
    }
    Ok(())
}

/// Clones a child that sets itself up as `p` and `root` say and then,
/// unless `hold`, execs at once. With `hold` it waits on [`Spawned::start`]
/// first. The child is moved into `cgroup_procs` before it does anything.
/// Returns once the child reported its setup: a setup failure is an error
/// here.
pub fn spawn(
    p: &Prepared,
    root: &RootSetup,
    stdio: ChildStdio,
    hold: bool,
    cgroup_procs: Option<&Path>,
) -> Result<Spawned, ExecError> {
    let (sync_r, sync_w) = fdio::pipe().map_err(io_err("sync pipe"))?;
    let (go_r, go_w) = fdio::pipe().map_err(io_err("go pipe"))?;
    let (start_r, start_w) = if hold {
        let (r, w) = fdio::pipe().map_err(io_err("start pipe"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (flags, shared) = match root {
        RootSetup::Fresh(f) => (
            libc::CLONE_NEWPID
                | libc::CLONE_NEWNS
                | if f.shared.is_some() {
                    0
                } else {
                    libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
                }
                | if f.user_namespace {
                    libc::CLONE_NEWUSER
                } else {
                    0
                },
            f.shared.as_deref().unwrap_or_default(),
        ),
        RootSetup::Join { .. } => (0, &[][..]),
    };
    let own = enter_namespaces(shared)?;
    // SAFETY: the child runs only `child_main`, which makes async-signal-safe
    // system calls on data prepared before the clone and ends in execve or _exit.
    let fork = unsafe { sys::clone_process(flags) };
    if let Ok(sys::Fork::Child) = fork {
        child_main(
            p,
            root,
            &stdio,
            go_r.as_fd(),
            sync_w.as_fd(),
            start_r.as_ref().map(AsFd::as_fd),
        )
    }
    // Only the parent gets here: back to the agent's own namespaces first,
    // whatever the clone did.
    let back = leave_namespaces(&own);
    let child = match (fork, back) {
        (Ok(sys::Fork::Parent(pid)), Ok(())) => pid,
        (Ok(sys::Fork::Parent(pid)), Err(e)) => {
            log!("{e}: the agent's thread stays in a container's namespaces");
            // It waits for a go that never comes: it must not run.
            let _ = sys::kill(pid, libc::SIGKILL);
            return Err(e);
        }
        (Ok(sys::Fork::Child), _) => unreachable!("the child never leaves child_main"),
        (Err(e), _) => return Err(io_err("clone")(e)),
    };
    // The parent's copies of the child's ends: closing them is what makes
    // end of file reach the agent when the child is done.
    drop(sync_w);
    drop(start_r);
    drop(go_r);
    drop(stdio);
    let result = parent_setup(child, p, root, cgroup_procs)
        .and_then(|()| fdio::write_all(&go_w, &[1]).map_err(io_err("starting the process setup")))
        .and_then(|()| {
            drop(go_w);
            read_reports(&sync_r, p, root, child)
        });
    if result.is_err() {
        // It may be waiting for a go that never comes, or stuck: either way
        // it must not run. A cloned exec process has no pid here yet and
        // ends by itself when its parent reported a failure.
        let _ = sys::kill(child, libc::SIGKILL);
    }
    result.map(|pid| Spawned {
        pid,
        start: start_w,
    })
}

/// Reads the child's records: for an `exec` process first its clone's pid,
/// then the ready record (or a failure). Returns the pid that runs.
fn read_reports(
    sync_r: &OwnedFd,
    p: &Prepared,
    root: &RootSetup,
    child: i32,
) -> Result<i32, ExecError> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let joining = matches!(root, RootSetup::Join { .. });
    let mut pid = child;
    // Both the joining process and its clone write here: the clone's
    // ready record can come before its parent's pid record.
    let mut ready = false;
    loop {
        let Some(rec) = read_record(sync_r, deadline).inspect_err(|e| {
            if matches!(e, ExecError::SetupTimeout) && pid != child {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        })?
        else {
            return Err(ExecError::SetupVanished);
        };
        let value = i32::from_le_bytes([rec[3], rec[4], rec[5], rec[6]]);
        match rec[0] {
            READY if !joining || pid != child => return Ok(pid),
            READY => ready = true,
            PID if joining && pid == child && value > 0 => {
                pid = value;
                if ready {
                    return Ok(pid);
                }
            }
            FAILED => {
                let what = Stage::from_u8(rec[1]).map_or_else(
                    || format!("step {}", rec[1]),
                    |s| s.describe(p, root, rec[2]),
                );
                return Err(ExecError::Setup {
                    what,
                    source: io::Error::from_raw_os_error(value),
                });
            }
            _ => return Err(ExecError::SetupVanished),
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
            Prepared::new(&spec(&[]), Capabilities::default(), None),
            Err(ExecError::NoCommand)
        ));
        assert!(matches!(
            Prepared::new(&spec(&[""]), Capabilities::default(), None),
            Err(ExecError::NoCommand)
        ));
        assert!(matches!(
            Prepared::new(&spec(&["a\0b"]), Capabilities::default(), None),
            Err(ExecError::Nul("args"))
        ));
        let mut s = spec(&["sh"]);
        s.cwd = "tmp".into();
        assert!(matches!(
            Prepared::new(&s, Capabilities::default(), None),
            Err(ExecError::RelativeCwd(_))
        ));
        let mut s = spec(&["sh"]);
        s.rlimits = vec![Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            soft: 1,
            hard: 1,
        }];
        assert_eq!(
            Prepared::new(&s, Capabilities::default(), None)
                .err()
                .map(|e| e.to_string()),
            Some("unknown rlimit \"RLIMIT_BOGUS\"".into())
        );
        s.rlimits[0].kind = "RLIMIT_NOFILE".into();
        s.rlimits[0].soft = 2;
        assert!(matches!(
            Prepared::new(&s, Capabilities::default(), None),
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
            assert!(matches!(
                Prepared::new(&bad, Capabilities::default(), None),
                Err(ExecError::BadId { .. })
            ));
        }
        let p = Prepared::new(&s, Capabilities::default(), None).unwrap();
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
        let p = Prepared::new(&s, Capabilities::default(), None).unwrap();
        let linux = LinuxSpec {
            sysctl: vec![("kernel.shmmax".into(), "1".into())],
            masked_paths: vec!["/proc/kcore".into()],
            ..LinuxSpec::default()
        };
        let root = RootSetup::fresh(Path::new("/r"), &linux, None, Vec::new(), None).unwrap();
        assert_eq!(Stage::Cwd.describe(&p, &root, 0), "chdir to /nowhere");
        assert_eq!(
            Stage::Rlimit.describe(&p, &root, 0),
            "setrlimit RLIMIT_NPROC"
        );
        assert_eq!(Stage::Rlimit.describe(&p, &root, 9), "setrlimit ?");
        assert_eq!(
            Stage::Sysctl.describe(&p, &root, 0),
            "writing sysctl kernel.shmmax"
        );
        assert_eq!(
            Stage::MaskedPath.describe(&p, &root, 0),
            "masking /proc/kcore"
        );
        for s in Stage::ALL {
            assert_eq!(Stage::from_u8(s as u8), Some(s));
        }
        assert_eq!(Stage::from_u8(0), None);
    }

    #[test]
    fn linux_settings_are_checked_before_the_fork() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").as_deref(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(sysctl_path("kernel..x"), None);
        assert_eq!(sysctl_path("../etc"), None);
        assert_eq!(
            propagation_flags("rslave"),
            Some(MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
        );
        assert_eq!(
            propagation_flags("private"),
            Some(MountPropagationFlags::PRIVATE)
        );
        assert_eq!(propagation_flags("r"), None);
        let bad = |linux: LinuxSpec| {
            RootSetup::fresh(Path::new("/r"), &linux, None, Vec::new(), None)
                .err()
                .map(|e| e.to_string())
        };
        assert!(bad(LinuxSpec {
            rootfs_propagation: Some("sideways".into()),
            ..LinuxSpec::default()
        })
        .is_some());
        assert!(bad(LinuxSpec {
            readonly_paths: vec!["proc".into()],
            ..LinuxSpec::default()
        })
        .is_some());
        assert!(bad(LinuxSpec {
            user_namespace: true,
            ..LinuxSpec::default()
        })
        .is_some());
        assert_eq!(
            id_map_text(&[
                IdMapping {
                    container_id: 0,
                    host_id: 1000,
                    size: 1
                },
                IdMapping {
                    container_id: 1,
                    host_id: 100_000,
                    size: 65_535
                }
            ]),
            "0 1000 1\n1 100000 65535\n"
        );
        let huge = SeccompSpec {
            flags: 0,
            filters: vec![vec![
                crate::proto::BpfInstruction(6, 0, 0, 0);
                MAX_BPF_LEN + 1
            ]],
        };
        assert!(SeccompProgram::new(&huge).is_err());
        let empty = SeccompSpec {
            flags: 0,
            filters: vec![vec![]],
        };
        assert!(SeccompProgram::new(&empty).is_err());
    }

    fn ns_inode(name: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/thread-self/ns/{name}"))
            .unwrap()
            .ino()
    }

    /// A pod member's clone happens in the sandbox's namespaces and the
    /// agent's thread comes back to its own. Only threads of this test move
    /// (namespaces are per thread); the hostname is set in a UTS namespace
    /// of the test's own. Needs root, as the network tests.
    #[test]
    fn shared_namespaces_are_entered_and_left() {
        let names = ["net", "ipc", "uts"];
        // A thread in namespaces of its own stands in for the sandbox.
        let (sandbox, inodes) = std::thread::spawn(move || {
            let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            // SAFETY: flags only; moves just this thread.
            let unshared = unsafe { libc::unshare(flags) };
            assert_eq!(
                unshared,
                0,
                "unshare: {} (this test needs root)",
                io::Error::last_os_error()
            );
            rustix::system::sethostname(b"runm-pod-test").unwrap();
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let ns = namespaces_of(tid, SHARED_NAMESPACES).unwrap();
            (ns, names.map(ns_inode))
        })
        .join()
        .unwrap();
        assert_eq!(
            sandbox.iter().map(|n| n.2).collect::<Vec<_>>(),
            names,
            "all three differ from the agent's"
        );
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        assert!(namespaces_of(me, SHARED_NAMESPACES).unwrap().is_empty());

        std::thread::spawn(move || {
            let before = names.map(ns_inode);
            let own = enter_namespaces(&sandbox).unwrap();
            assert_eq!(names.map(ns_inode), inodes);
            assert_eq!(
                rustix::system::uname().nodename().to_bytes(),
                b"runm-pod-test"
            );
            leave_namespaces(&own).unwrap();
            assert_eq!(names.map(ns_inode), before);
            assert_ne!(
                rustix::system::uname().nodename().to_bytes(),
                b"runm-pod-test"
            );
        })
        .join()
        .unwrap();
    }
}
