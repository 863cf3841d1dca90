//! Signal masks and synchronous signal waits, for the agent (SIGCHLD, taken
//! by its reaper thread) and the runtime (the signals it forwards). rustix
//! leaves these to the C library (glibc keeps signals of its own out of
//! every mask), so this module holds the `unsafe` they need.

use std::io;
use std::mem::MaybeUninit;

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// No signal (async-signal-safe).
    pub fn empty() -> Self {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given (it fails only
        // on a NULL pointer).
        SigSet(unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            set.assume_init()
        })
    }

    /// The set of `signals`; a number that is no signal is an `InvalidInput` error.
    pub fn of(signals: &[i32]) -> io::Result<Self> {
        let mut set = Self::empty();
        for &sig in signals {
            // SAFETY: `set.0` is an initialised sigset_t of ours.
            if unsafe { libc::sigaddset(&mut set.0, sig) } != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{sig} is not a signal number"),
                ));
            }
        }
        Ok(set)
    }

    /// Blocks these signals in the calling thread, and so in every thread it
    /// starts afterwards (std's `Command` clears the mask in children).
    pub fn block(&self) -> io::Result<()> {
        self.apply(libc::SIG_BLOCK)
    }

    /// Makes this set the calling thread's whole mask (async-signal-safe).
    pub fn set_mask(&self) -> io::Result<()> {
        self.apply(libc::SIG_SETMASK)
    }

    fn apply(&self, how: libc::c_int) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised sigset_t; the old mask is not asked for.
        match unsafe { libc::pthread_sigmask(how, &self.0, std::ptr::null_mut()) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Waits for one of these (blocked) signals to be pending, takes it, and
    /// returns its number.
    pub fn wait(&self) -> io::Result<i32> {
        loop {
            // SAFETY: `self.0` is an initialised sigset_t; the siginfo is not asked for.
            match unsafe { libc::sigwaitinfo(&self.0, std::ptr::null_mut()) } {
                -1 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                sig => return Ok(sig),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_taken_by_wait() {
        // In a thread of its own, so the mask change stays there.
        std::thread::spawn(|| {
            let set = SigSet::of(&[libc::SIGUSR2]).unwrap();
            set.block().unwrap();
            // SAFETY: a thread-directed signal to this thread, which blocks it.
            let r = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
            assert_eq!(r, 0);
            assert_eq!(set.wait().unwrap(), libc::SIGUSR2);
            SigSet::empty().set_mask().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(SigSet::of(&[0]).is_err());
        assert!(SigSet::of(&[1000]).is_err());
        assert!(SigSet::of(&[libc::SIGTERM, libc::SIGHUP]).is_ok());
    }
}
