//! Descriptors and their I/O as the agent and the runtime share them, on
//! rustix: a close-on-exec pipe, whole writes, reads and waits that ride out
//! EINTR, opening a pseudo terminal, and keeping descriptors from a program
//! about to be exec'd. Both sides use these, so they behave the same on
//! both: a write that makes no progress is an error, never a spin, and a
//! wait takes a `Duration`.
//!
//! [`pipe`], [`write_all`], [`read`] and [`cloexec_from`] neither allocate
//! nor lock (an error is only an errno), so code between fork and exec may
//! call them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::{retry_on_intr, Errno};
use rustix::pipe::PipeFlags;
use rustix::pty::OpenptFlags;

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?)
}

/// Writes all of `buf` to `fd`. A write that takes no byte (a full device,
/// a closed terminal) is [`io::ErrorKind::WriteZero`], as `std::io::Write`
/// has it, rather than a retry for ever.
pub fn write_all(fd: impl AsFd, buf: &[u8]) -> io::Result<()> {
    let fd = fd.as_fd();
    write_all_by(|b| rustix::io::write(fd, b), buf)
}

/// [`write_all`]'s loop over one `write` call.
fn write_all_by(
    mut write: impl FnMut(&[u8]) -> rustix::io::Result<usize>,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match retry_on_intr(|| write(buf))? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf = buf.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}

/// Reads once into `buf`; 0 at end of file.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    Ok(retry_on_intr(|| rustix::io::read(fd, &mut *buf))?)
}

/// Waits until `fd` is readable or hung up: `Ok(false)` once `timeout` has
/// passed without. An interrupted wait goes on for what is left of it.
pub fn poll_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // A timeout too large for a timespec waits without one.
        let ts = left.and_then(|l| Timespec::try_from(l).ok());
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens a new pseudo terminal from the `ptmx` node at `ptmx`:
/// `(master, slave)`, both close-on-exec and neither becoming the caller's
/// controlling terminal. The slave is opened through the master
/// (TIOCGPTPEER), not by name, so nothing mounted where its name would be
/// can stand in for it.
pub fn open_pty(ptmx: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
    let master = rustix::fs::open(ptmx, flags, Mode::empty())?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    Ok((master, slave))
}

/// Marks every descriptor from `first` up close-on-exec, so that the program
/// exec'd next gets none of them: not the agent's channel, not whatever an
/// engine left open in runm.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // The raw system call: glibc has a wrapper only from 2.34 on.
    // SAFETY: with CLOSE_RANGE_CLOEXEC, close_range(2) only sets descriptor
    // flags; it closes nothing and touches no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one descriptor at a time, up to the limit on them.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let last = limit.map_or(1 << 16, |l| l.min(1 << 16));
    for fd in u64::from(first)..last {
        let fd = libc::c_int::try_from(fd).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETFD on a descriptor number sets one flag, or fails
        // with EBADF for a number that is not open; no memory involved.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn pipe_round_trip_and_end_of_file() {
        let (r, w) = pipe().unwrap();
        for fd in [&r, &w] {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        write_all(&w, b"hello").unwrap();
        drop(w);
        let mut buf = [0u8; 16];
        assert_eq!(read(&r, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(read(&r, &mut buf).unwrap(), 0, "all writers closed");
    }

    #[test]
    fn write_all_writes_more_than_a_pipe_holds() {
        let (r, w) = pipe().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match read(&r, &mut buf).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        write_all(&w, &data).unwrap();
        drop(w);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_write_without_progress_is_write_zero() {
        // A write(2) that takes nothing of a non-empty buffer: an error, once.
        let mut calls = 0;
        let e = write_all_by(
            |_| {
                calls += 1;
                Ok(0)
            },
            b"x",
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        assert_eq!(calls, 1);
        // Interrupted and short writes go on from where they stopped.
        let mut got = Vec::new();
        let mut interrupted = false;
        write_all_by(
            |b| {
                if !interrupted {
                    interrupted = true;
                    return Err(Errno::INTR);
                }
                got.push(b[0]);
                Ok(1)
            },
            b"abc",
        )
        .unwrap();
        assert_eq!(got, b"abc");
        // Nothing to write: no call at all.
        write_all_by(|_| unreachable!(), b"").unwrap();
        // A real errno comes back as it is.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let e = write_all(&full, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn write_to_a_closed_pipe_fails() {
        let (r, w) = pipe().unwrap();
        drop(r);
        // The test harness ignores SIGPIPE (as Rust programs do), so EPIPE
        // comes back as an error.
        let e = write_all(&w, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn poll_times_out_then_sees_data_and_hangup() {
        let (r, w) = pipe().unwrap();
        let start = Instant::now();
        assert!(!poll_readable(&r, Duration::from_millis(50)).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(50));
        write_all(&w, b"x").unwrap();
        assert!(poll_readable(&r, Duration::from_secs(5)).unwrap());
        let mut b = [0u8; 1];
        assert_eq!(read(&r, &mut b).unwrap(), 1);
        drop(w);
        assert!(poll_readable(&r, Duration::from_secs(5)).unwrap(), "hangup");
        assert!(poll_readable(&r, Duration::MAX).unwrap(), "no deadline");
    }

    #[test]
    fn pty_carries_bytes_both_ways() {
        let (master, slave) = open_pty(Path::new("/dev/ptmx")).unwrap();
        assert!(rustix::termios::isatty(&slave));
        assert_ne!(master.as_raw_fd(), slave.as_raw_fd());
        write_all(&master, b"ping\n").unwrap();
        assert!(poll_readable(&slave, Duration::from_secs(5)).unwrap());
        let mut buf = [0u8; 16];
        let n = read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping\n");
        assert!(open_pty(Path::new("/nonexistent/ptmx")).is_err());
    }
}
