//! The one socket call std cannot make: a non-blocking connect to a Unix
//! socket. std's `UnixStream::connect` blocks while the listener's backlog is
//! full, and a guest can cause that by connecting faster than a host service
//! accepts; the VMM's event loop (and every device on it) would stall. A
//! non-blocking connect fails with `EAGAIN` instead, and the guest gets a
//! reset it may retry.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects a non-blocking stream socket to the Unix socket at `path`.
/// Completes at once or fails: Unix sockets have no connect in progress.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    let invalid = |what: &'static str| io::Error::new(io::ErrorKind::InvalidInput, what);
    let mut addr = libc::sockaddr_un {
        sun_family: libc::sa_family_t::try_from(libc::AF_UNIX)
            .map_err(|_| invalid("AF_UNIX does not fit sa_family_t"))?,
        sun_path: [0; 108],
    };
    // Keep a terminating NUL, and no NUL inside (it would cut the path short).
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path does not fit a Unix socket address",
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and nothing else owns; the
    // OwnedFd closes it on every path from here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>())
        .map_err(|_| invalid("sockaddr_un does not fit socklen_t"))?;
    // SAFETY: `addr` is a valid, initialised sockaddr_un that outlives the
    // call, `len` is its size, and connect(2) only reads it.
    let ret = unsafe { libc::connect(fd, std::ptr::from_ref(&addr).cast::<libc::sockaddr>(), len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(sock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_refuses_and_rejects_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        assert!(connect_nonblocking(&path).is_err());
        let listener = UnixListener::bind(&path).unwrap();
        let mut ours = connect_nonblocking(&path).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        ours.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        theirs.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        // Non-blocking: nothing to read is "would block", not a hang.
        assert_eq!(
            ours.read(&mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let long = dir.path().join("l".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
