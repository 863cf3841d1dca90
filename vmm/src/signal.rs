//! SIGINT and SIGTERM as events: blocked in every thread and read from a
//! signalfd by the event loop, so tearing the VM down happens in one place.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Errors setting up signal handling.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// sigprocmask or signalfd failed.
    #[error("cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A signalfd for SIGINT and SIGTERM.
pub struct TermSignals {
    fd: OwnedFd,
}

impl TermSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread (threads spawned later
    /// inherit the mask) and opens a signalfd for them.
    pub fn new() -> Result<Self, SignalError> {
        Self::of(&[libc::SIGINT, libc::SIGTERM])
    }

    /// Like [`TermSignals::new`] for the given signals (the jail's waiting
    /// parent also takes SIGTSTP and SIGCONT, to pass them on).
    pub fn of(signals: &[libc::c_int]) -> Result<Self, SignalError> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the calls only modify it and the
        // thread's signal mask.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            for &sig in signals {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(SignalError::Setup {
                what: "the signal mask",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: `set` is initialised; -1 asks for a new fd.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(SignalError::Setup {
                what: "a signalfd",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TermSignals { fd })
    }

    /// Reads one pending signal number, if any.
    pub fn read(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`, which is that large.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::addr_of_mut!(info).cast(),
                size,
            )
        };
        (usize::try_from(n).ok() == Some(size)).then(|| i32::try_from(info.ssi_signo).unwrap_or(0))
    }
}

impl AsRawFd for TermSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TermSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
