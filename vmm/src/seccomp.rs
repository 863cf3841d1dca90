//! The seccomp filters of runm-vmm's threads: one allowlist per kind of
//! thread, everything else kills the process.
//!
//! Each thread installs its own filter just before it starts the work a guest
//! drives: a vCPU thread before its first `KVM_RUN`, the event loop before it
//! serves devices, the main thread once everything is built and started (a
//! thread inherits its creator's filter, so the main thread installs its own
//! last). The lists below say why each call is there; a device that needs a
//! new call adds it to the list of the thread it runs on, next to its reason.
//!
//! What the threads run:
//! - vCPU: `KVM_RUN` and its exits, i.e. the port and MMIO devices (serial
//!   console writes, the i8042 reset eventfd, virtio-mmio register accesses,
//!   which activate or reset a device and so duplicate and signal eventfds,
//!   and for virtio-fs talk vhost-user to its backend);
//! - event loop: every virtio device's queue work (block: positioned reads and
//!   writes, fsync; net: tap reads and writes; vsock: Unix sockets; rng:
//!   getrandom) and the controller (signalfd, eventfds);
//! - main: waits for the event loop, kicks the vCPUs out of `KVM_RUN`, joins
//!   them and frees the VM;
//! - vhost-user watchdog (one per virtio-fs device, started once the VMM is
//!   jailed): shuts a backend's socket down when a request overruns.

use std::collections::BTreeMap;
use std::str::FromStr;

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen as ArgLen, SeccompCmpOp as Op, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules did not compile (a bug in the lists below).
    #[error("cannot build the seccomp filter of the {kind} thread: {source}")]
    Build {
        kind: ThreadKind,
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        kind: ThreadKind,
        #[source]
        source: seccompiler::Error,
    },
    /// `--seccomp` got something else than on, off or log.
    #[error("seccomp mode '{0}': expected on, off or log")]
    Mode(String),
}

/// Whether filters are installed, and what a call outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Installed; a call outside the list kills the process (SIGSYS).
    #[default]
    On,
    /// Installed; a call outside the list is allowed and logged by the kernel
    /// (for finding what a list lacks; never for production).
    Log,
    /// Not installed (debugging only).
    Off,
}

impl FromStr for SeccompMode {
    type Err = SeccompError;
    fn from_str(s: &str) -> Result<Self, SeccompError> {
        match s {
            "on" => Ok(Self::On),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            _ => Err(SeccompError::Mode(s.to_string())),
        }
    }
}

/// The kinds of thread runm-vmm runs, each with its own allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once the VM runs.
    Main,
    /// The thread serving the devices.
    EventLoop,
    /// A vCPU thread.
    Vcpu,
    /// The parent a jailed VMM leaves in the host's PID namespace: it only
    /// forwards signals and waits ([`crate::jail::spawn_in_new_pid_ns`]).
    Waiter,
    /// A virtio-fs device's vhost-user watchdog: it waits on a condition
    /// variable and shuts the backend's socket down when a request overruns.
    VhostUserWatchdog,
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThreadKind::Main => "main",
            ThreadKind::EventLoop => "event loop",
            ThreadKind::Vcpu => "vCPU",
            ThreadKind::Waiter => "jail parent",
            ThreadKind::VhostUserWatchdog => "vhost-user watchdog",
        })
    }
}

// The KVM ioctls a running VM needs (linux/kvm.h; KVMIO is 0xAE).
vmm_sys_util::ioctl_io_nr!(KVM_RUN, 0xAE, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, 0xAE, 0x81, kvm_bindings::kvm_regs);

type Rules = Vec<(i64, Vec<SeccompRule>)>;

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    // Only fails for an empty list, which no caller passes.
    SeccompRule::new(conditions).unwrap_or_else(|_| unreachable!("a rule with conditions"))
}

fn cond(arg: u8, len: ArgLen, op: Op, value: u64) -> SeccompCondition {
    // Only fails for an argument index above 5, which no caller passes.
    SeccompCondition::new(arg, len, op, value)
        .unwrap_or_else(|_| unreachable!("argument index below 6"))
}

/// The call with any arguments.
fn any(nr: i64) -> (i64, Vec<SeccompRule>) {
    (nr, Vec::new())
}

/// The call when argument `arg` (a 32-bit value) is one of `values`.
fn arg_in(nr: i64, arg: u8, values: &[u64]) -> (i64, Vec<SeccompRule>) {
    let rules = values
        .iter()
        .map(|&v| rule(vec![cond(arg, ArgLen::Dword, Op::Eq, v)]))
        .collect();
    (nr, rules)
}

/// The call when the bits `mask` of argument `arg` are all clear.
fn arg_clear(nr: i64, arg: u8, mask: u64) -> (i64, Vec<SeccompRule>) {
    (
        nr,
        vec![rule(vec![cond(arg, ArgLen::Qword, Op::MaskedEq(mask), 0)])],
    )
}

fn as_u64(v: libc::c_int) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// What every thread of a Rust program needs: memory, locks, time, signals
/// (the vCPU kick's handler returns through rt_sigreturn), logging to stderr,
/// closing what it drops, and ending.
fn common() -> Rules {
    let prot_exec = as_u64(libc::PROT_EXEC);
    vec![
        any(libc::SYS_brk),
        // No new executable memory: nothing of runm-vmm loads code at run time.
        arg_clear(libc::SYS_mmap, 2, prot_exec),
        arg_clear(libc::SYS_mprotect, 2, prot_exec),
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_madvise),
        any(libc::SYS_futex),
        any(libc::SYS_sched_yield),
        any(libc::SYS_clock_gettime),
        any(libc::SYS_clock_nanosleep),
        any(libc::SYS_nanosleep),
        any(libc::SYS_restart_syscall),
        any(libc::SYS_rt_sigreturn),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_sigaltstack),
        any(libc::SYS_getpid),
        any(libc::SYS_gettid),
        // Log lines (stderr), eventfd signals, console output.
        any(libc::SYS_write),
        any(libc::SYS_writev),
        any(libc::SYS_close),
        // std checks that an fd is open before closing it (debug builds).
        arg_in(libc::SYS_fcntl, 1, &[as_u64(libc::F_GETFD)]),
        any(libc::SYS_exit),
        any(libc::SYS_exit_group),
    ]
}

/// A vCPU thread: KVM_RUN, and the devices its exits reach.
fn vcpu() -> Rules {
    vec![
        // KVM_RUN; KVM_GET_REGS names the guest's RIP when the vCPU fails.
        arg_in(libc::SYS_ioctl, 1, &[KVM_RUN(), KVM_GET_REGS()]),
        // Activating a virtio device duplicates its queue eventfds for the
        // event loop (std's try_clone: F_DUPFD_CLOEXEC) and reads them when
        // it resets.
        any(libc::SYS_dup),
        arg_in(libc::SYS_fcntl, 1, &[as_u64(libc::F_DUPFD_CLOEXEC)]),
        any(libc::SYS_read),
        // virtio-fs: activating or resetting the device sends vhost-user
        // requests (with fds) to its backend and reads the replies.
        any(libc::SYS_sendmsg),
        any(libc::SYS_recvmsg),
        any(libc::SYS_sendto),
        any(libc::SYS_recvfrom),
        // The console file: its size cap keeps the tail (console.rs).
        any(libc::SYS_pread64),
        any(libc::SYS_ftruncate),
        any(libc::SYS_lseek),
        any(libc::SYS_fstat),
    ]
}

/// The event loop: epoll and every device's backend.
fn event_loop() -> Rules {
    let af_unix = as_u64(libc::AF_UNIX);
    vec![
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_epoll_ctl),
        // Eventfds, signalfd, timerfds, taps, sockets.
        any(libc::SYS_read),
        any(libc::SYS_readv),
        any(libc::SYS_dup),
        // vsock: retry and watch timers.
        any(libc::SYS_timerfd_settime),
        any(libc::SYS_timerfd_gettime),
        // block: positioned reads and writes, flush.
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_preadv),
        any(libc::SYS_pwritev),
        any(libc::SYS_preadv2),
        any(libc::SYS_pwritev2),
        any(libc::SYS_lseek),
        any(libc::SYS_fsync),
        any(libc::SYS_fdatasync),
        any(libc::SYS_fstat),
        any(libc::SYS_ftruncate),
        // vsock: host connections to the listener, guest connections out to
        // `<uds>_<port>` (Unix sockets only), and their traffic.
        arg_in(libc::SYS_socket, 0, &[af_unix]),
        any(libc::SYS_connect),
        any(libc::SYS_accept4),
        any(libc::SYS_recvfrom),
        any(libc::SYS_sendto),
        any(libc::SYS_recvmsg),
        any(libc::SYS_sendmsg),
        any(libc::SYS_shutdown),
        any(libc::SYS_getsockopt),
        arg_in(
            libc::SYS_fcntl,
            1,
            &[
                as_u64(libc::F_GETFL),
                as_u64(libc::F_SETFL),
                as_u64(libc::F_GETFD),
                as_u64(libc::F_SETFD),
                as_u64(libc::F_DUPFD_CLOEXEC),
            ],
        ),
        // std's set_nonblocking on accepted streams.
        arg_in(libc::SYS_ioctl, 1, &[libc::FIONBIO]),
        // rng: the host's entropy; also std's hash map seeds.
        any(libc::SYS_getrandom),
    ]
}

/// The main thread while the VM runs: it waits for the event loop, kicks the
/// vCPUs (tgkill with the kick signal only), joins them and frees the VM.
fn main_thread() -> Rules {
    let kick = as_u64(crate::vcpu::kick_signal());
    vec![
        arg_in(libc::SYS_tgkill, 2, &[kick]),
        // A clean teardown may flush a console file it caps.
        any(libc::SYS_pread64),
        any(libc::SYS_ftruncate),
        any(libc::SYS_lseek),
        any(libc::SYS_fstat),
    ]
}

/// The jailed VMM's waiting parent: poll its pidfd and the signalfd, forward
/// SIGINT/SIGTERM, turn SIGTSTP into SIGSTOP and pass SIGCONT on (pausing),
/// reap it.
fn waiter() -> Rules {
    vec![
        any(libc::SYS_poll),
        any(libc::SYS_ppoll),
        any(libc::SYS_read),
        arg_in(
            libc::SYS_kill,
            1,
            &[
                as_u64(libc::SIGINT),
                as_u64(libc::SIGTERM),
                as_u64(libc::SIGSTOP),
                as_u64(libc::SIGCONT),
            ],
        ),
        any(libc::SYS_wait4),
        any(libc::SYS_waitid),
    ]
}

/// A vhost-user watchdog (devices' `virtio::fs` frontend): past a request's
/// deadline it shuts the backend's socket down; the rest is [`common`]
/// (futex waits with a timeout, the clock).
fn vhost_user_watchdog() -> Rules {
    vec![any(libc::SYS_shutdown)]
}

/// Dropping the devices: the vsock device removes its listening socket if it
/// is still the one it bound (on whichever thread drops it last).
fn device_teardown() -> Rules {
    vec![
        any(libc::SYS_statx),
        any(libc::SYS_newfstatat),
        any(libc::SYS_unlink),
        any(libc::SYS_unlinkat),
    ]
}

/// The rules of `kind`: its own list on top of [`common`].
fn rules(kind: ThreadKind) -> BTreeMap<i64, Vec<SeccompRule>> {
    let own = match kind {
        ThreadKind::Main => [main_thread(), device_teardown()].concat(),
        ThreadKind::EventLoop => [event_loop(), device_teardown()].concat(),
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::Waiter => waiter(),
        ThreadKind::VhostUserWatchdog => vhost_user_watchdog(),
    };
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut outright = std::collections::BTreeSet::new();
    for (nr, conds) in common().into_iter().chain(own) {
        // An empty rule list means "any arguments" to seccompiler: a call
        // allowed outright by one list stays so, whatever another adds.
        if conds.is_empty() {
            outright.insert(nr);
        }
        map.entry(nr).or_default().extend(conds);
    }
    for nr in outright {
        map.insert(nr, Vec::new());
    }
    map
}

/// The compiled filter of `kind` in `mode`, or `None` when filters are off.
pub fn filter(kind: ThreadKind, mode: SeccompMode) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match mode {
        SeccompMode::Off => return Ok(None),
        SeccompMode::On => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|source| SeccompError::Build { kind, source })?;
    let build = |source| SeccompError::Build { kind, source };
    let f = SeccompFilter::new(rules(kind), mismatch, SeccompAction::Allow, arch).map_err(build)?;
    let prog: BpfProgram = f.try_into().map_err(build)?;
    Ok(Some(prog))
}

/// Installs `prog` (from [`filter`]) on the calling thread, for good. Sets
/// no_new_privs first, as seccomp requires of an unprivileged thread.
pub fn install(kind: ThreadKind, prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|source| SeccompError::Install { kind, source })
}

/// Builds and installs the filter of `kind` in `mode` on the calling thread.
pub fn apply(kind: ThreadKind, mode: SeccompMode) -> Result<(), SeccompError> {
    match filter(kind, mode)? {
        Some(prog) => install(kind, &prog),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles_and_off_builds_nothing() {
        for kind in [
            ThreadKind::Main,
            ThreadKind::EventLoop,
            ThreadKind::Vcpu,
            ThreadKind::Waiter,
            ThreadKind::VhostUserWatchdog,
        ] {
            assert!(filter(kind, SeccompMode::On).unwrap().is_some());
            assert!(filter(kind, SeccompMode::Log).unwrap().is_some());
            assert!(filter(kind, SeccompMode::Off).unwrap().is_none());
        }
    }

    #[test]
    fn modes_parse_or_explain() {
        assert_eq!("on".parse::<SeccompMode>().unwrap(), SeccompMode::On);
        assert_eq!("log".parse::<SeccompMode>().unwrap(), SeccompMode::Log);
        assert_eq!("off".parse::<SeccompMode>().unwrap(), SeccompMode::Off);
        let e = "yes".parse::<SeccompMode>().unwrap_err().to_string();
        assert!(e.contains("'yes'") && e.contains("on, off or log"), "{e}");
    }

    #[test]
    fn a_call_allowed_outright_somewhere_stays_outright() {
        // ioctl is conditional in both lists that name it; write is outright.
        let v = rules(ThreadKind::Vcpu);
        assert_eq!(v[&libc::SYS_ioctl].len(), 2);
        assert!(v[&libc::SYS_write].is_empty());
        assert!(!v.contains_key(&libc::SYS_socket));
        let e = rules(ThreadKind::EventLoop);
        assert_eq!(e[&libc::SYS_socket].len(), 1);
        assert!(!rules(ThreadKind::Main).contains_key(&libc::SYS_ioctl));
        let w = rules(ThreadKind::VhostUserWatchdog);
        assert!(w[&libc::SYS_shutdown].is_empty());
        assert!(!w.contains_key(&libc::SYS_ioctl) && !w.contains_key(&libc::SYS_sendmsg));
    }
}
