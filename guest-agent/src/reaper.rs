//! PID 1's child reaping, and the exit status encoding the host sees.
//!
//! Owns SIGCHLD: it is blocked in every agent thread (and reset in each
//! workload before exec) and taken by one reaper thread, which reaps every
//! terminated child, the agent's own and orphans re-parented to PID 1 alike,
//! and hands each `(pid, status)` to the agent's event loop.

use std::io;
use std::thread::JoinHandle;

use guest_agent::sigset::SigSet;
use rustix::process::WaitOptions;

use crate::console::log;

/// Errors starting the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// SIGCHLD could not be blocked.
    #[error("blocking SIGCHLD: {0}")]
    Block(#[source] io::Error),
    /// The thread could not be started.
    #[error("starting the reaper thread: {0}")]
    Thread(#[source] io::Error),
}

/// The status reported for a raw wait status: the exit code, or 128 + the
/// signal number for a process killed by a signal (as shells report it).
pub fn exit_status(raw: libc::c_int) -> i32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw)
    } else {
        // waitpid without WUNTRACED/WCONTINUED reports only terminations;
        // anything else is not an exit.
        255
    }
}

/// Blocks SIGCHLD in the calling thread. Call it in the main thread before
/// any other thread exists, so that every thread inherits the mask and the
/// signal can only be taken by the reaper's `sigwaitinfo`.
pub fn block_sigchld() -> Result<(), ReaperError> {
    sigchld()
        .and_then(|s| s.block())
        .map_err(ReaperError::Block)
}

fn sigchld() -> io::Result<SigSet> {
    SigSet::of(&[libc::SIGCHLD])
}

/// Reaps one terminated child without blocking: `Some((pid, raw status))`,
/// or `None` when no child has terminated (or there are no children).
fn reap_one() -> Option<(i32, i32)> {
    // wait(2) is waitpid(-1): any child. (rustix's waitpid(None) is
    // waitpid(0), only our process group: a workload has a session of its own.)
    let reaped = rustix::io::retry_on_intr(|| rustix::process::wait(WaitOptions::NOHANG));
    let (pid, status) = reaped.ok()??;
    Some((pid.as_raw_nonzero().get(), status.as_raw()))
}

/// Starts the reaper thread; `on_exit(pid, status)` is called for every
/// reaped child, in the order they were reaped.
pub fn spawn<F>(mut on_exit: F) -> Result<JoinHandle<()>, ReaperError>
where
    F: FnMut(i32, i32) + Send + 'static,
{
    let sigchld = sigchld().map_err(ReaperError::Block)?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            // SIGCHLDs coalesce: after each one, reap until nothing is left.
            while let Some((pid, raw)) = reap_one() {
                on_exit(pid, exit_status(raw));
            }
            if let Err(e) = sigchld.wait() {
                log!("waiting for SIGCHLD: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
        .map_err(ReaperError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals() {
        // Raw wait statuses as the kernel encodes them.
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(7 << 8), 7);
        assert_eq!(exit_status(255 << 8), 255);
        assert_eq!(exit_status(libc::SIGTERM), 143);
        assert_eq!(exit_status(libc::SIGKILL), 137);
        // Killed with a core dump (0x80 set).
        assert_eq!(exit_status(0x80 | libc::SIGSEGV), 128 + libc::SIGSEGV);
    }

    #[test]
    fn reaps_a_child_in_another_session() {
        // As a workload is: setsid(1) execs its command in a new session
        // (no fork: the child std starts is no group leader). No other test
        // of this crate starts children, so nothing else is reaped here.
        #[expect(clippy::zombie_processes, reason = "reap_one is what reaps it")]
        let child = std::process::Command::new("setsid")
            .args(["sh", "-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some((reaped, raw)) = reap_one() {
                assert_eq!(reaped, pid);
                break exit_status(raw);
            }
            assert!(std::time::Instant::now() < deadline, "never reaped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status, 7);
        assert_eq!(reap_one(), None, "no children left");
    }
}
