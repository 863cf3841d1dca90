//! Thin, safe wrappers over the system calls runm needs that std does not
//! offer: flock, kill, pipes and poll, pseudo terminals and raw mode, passing
//! a descriptor over a Unix socket (SCM_RIGHTS), signal masks, waiting for a
//! child without reaping it, and how a spawned child is set up (new session,
//! parent-death signal, descriptors moved into place). All of runm's
//! `unsafe` lives here, each block small and explained.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Signals runm passes on to a container's process: by `run` and `exec`
/// (through the sandbox) and by the sandbox itself (to the guest).
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The real user id.
pub fn getuid() -> u32 {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) touches no memory.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Takes an exclusive `flock` on `fd`, waiting for it.
pub fn flock_exclusive(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor the caller owns; no memory involved.
        match check(unsafe { libc::flock(fd, libc::LOCK_EX) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Marks `fd` close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor; no memory involved.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(|_| ())
}

/// Takes ownership of a descriptor number handed to this process (e.g. by
/// `--ready-fd`), if it is open.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only checks that the descriptor is open.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open and was handed to us to own; nothing
    // else in this process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes all of `data` to `fd` (which the caller keeps open).
pub fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: write(2) reads `data.len()` bytes from a live slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[usize::try_from(n).unwrap_or(0)..];
    }
    Ok(())
}

/// Reads from `fd` into `buf`; 0 at end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: read(2) writes at most `buf.len()` bytes into a live slice.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until `fd` is readable (or hung up); false on timeout.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: poll(2) on one pollfd we own.
        match check(unsafe { libc::poll(&mut p, 1, ms) }) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// True if `fd` is a terminal.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty(3) only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// A new pseudo terminal: (master, slave, slave path).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd, String)> {
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let m = check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: `m` is new and ours.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: grantpt/unlockpt on the master we own.
    check(unsafe { libc::grantpt(m) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(m) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes a NUL-terminated name of at most `name.len()` bytes.
    let r = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: open(2) with a NUL-terminated path; returns a new descriptor or -1.
    let s = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `s` is new and ours.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    Ok((master, slave, path.to_string_lossy().into_owned()))
}

/// Saved terminal attributes.
#[derive(Clone, Copy)]
pub struct Termios(libc::termios);

/// Puts the terminal `fd` into raw mode; returns what to restore.
pub fn make_raw(fd: RawFd) -> io::Result<Termios> {
    // SAFETY: an all-zero termios is a valid value for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr fills the struct we own.
    check(unsafe { libc::tcgetattr(fd, &mut t) })?;
    let saved = Termios(t);
    // SAFETY: cfmakeraw edits the struct we own.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: tcsetattr reads the struct we own.
    check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })?;
    Ok(saved)
}

/// Restores attributes saved by [`make_raw`].
pub fn restore_termios(fd: RawFd, t: &Termios) {
    // SAFETY: tcsetattr reads the struct we own.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t.0) };
}

/// Sends `fd` over a Unix socket with `name` as the message (runc's console
/// socket protocol: the name is the pty's path).
pub fn send_fd(sock: &UnixStream, name: &[u8], fd: RawFd) -> io::Result<()> {
    let space = cmsg_space_for_one_fd();
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: name.as_ptr().cast_mut().cast(),
        iov_len: name.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` bytes, room for one header and
    // one descriptor; CMSG_FIRSTHDR returns a pointer inside that buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as libc::c_uint) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: sendmsg reads the message, iovec and control buffer set up above.
        match check(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) } as libc::c_int) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Receives one descriptor sent by [`send_fd`]; returns it and the message.
#[cfg(test)]
pub fn recv_fd(sock: &UnixStream) -> io::Result<(OwnedFd, Vec<u8>)> {
    let space = cmsg_space_for_one_fd();
    let mut cbuf = vec![0u8; space];
    let mut data = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: recvmsg writes into the buffers described by `msg`, which live
    // until it returns.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    data.truncate(usize::try_from(n).unwrap_or(0));
    // SAFETY: recvmsg filled the control buffer; CMSG_FIRSTHDR checks its length.
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: `c`, when not null, points at a complete header inside `cbuf`.
    if c.is_null() || unsafe { (*c).cmsg_type } != libc::SCM_RIGHTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no descriptor received",
        ));
    }
    // SAFETY: an SCM_RIGHTS message carries a descriptor after the header;
    // the kernel installed it in this process and nobody else owns it.
    let fd = unsafe {
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()))
    };
    Ok((fd, data))
}

fn cmsg_space_for_one_fd() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as libc::c_uint) as usize }
}

/// A set of signals.
pub struct SigSet(libc::sigset_t);

/// Blocks `signals` in the calling thread (and threads it spawns later);
/// returns the set for [`sigwait`]. std's `Command` clears the mask in children.
pub fn block_signals(signals: &[i32]) -> io::Result<SigSet> {
    // SAFETY: an all-zero sigset_t is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset/sigaddset edit the set we own.
    unsafe { libc::sigemptyset(&mut set) };
    for s in signals {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut set, *s) };
    }
    // SAFETY: pthread_sigmask reads the set we own.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(SigSet(set))
}

/// Waits for one of the (blocked) signals in `set`.
pub fn sigwait(set: &SigSet) -> i32 {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigwait reads the set and writes the signal number we own.
        if unsafe { libc::sigwait(&set.0, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Waits until child `pid` has exited without reaping it (so its pid stays
/// ours until `wait`), returning `Ok(())` once it has.
pub fn wait_exited_no_reap(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid storage for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id =
            libc::id_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: waitid fills the siginfo we own.
        match check(unsafe {
            libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
        }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// How a spawned child is set up between fork and exec.
///
/// Whatever the setup, the child keeps only descriptors 0, 1, 2 and the
/// `dup2` targets: every other one is marked close-on-exec before the exec.
/// runm's own descriptors are close-on-exec already (std opens them so);
/// this is for what runm inherited from whoever started it (an engine's
/// shim, a shell), which the VMM, QEMU or mkfs.ext4 must not get.
#[derive(Debug, Default, Clone)]
pub struct ChildSetup {
    /// Start a new session (detach from the caller's terminal and signals).
    pub setsid: bool,
    /// Signal the child gets when the spawning thread exits.
    pub parent_death_signal: Option<i32>,
    /// Descriptors to place: (source, target) with `dup2`.
    pub dup2: Vec<(RawFd, RawFd)>,
    /// Change to `/` (so the child pins no directory).
    pub chdir_root: bool,
}

/// Marks every descriptor from 3 up close-on-exec. Runs between fork and
/// exec: system calls only, no allocation.
fn cloexec_from_3(fallback_max: libc::c_int) -> io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only changes
    // descriptor flags; no memory involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one descriptor at a time, up to the limit.
    for fd in 3..fallback_max {
        // SAFETY: fcntl(2) on a descriptor number; EBADF for unused ones.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Applies `setup` to `cmd`.
pub fn configure_child(cmd: &mut Command, setup: ChildSetup) {
    let pairs = setup.dup2;
    let root = c"/";
    // SAFETY: sysconf(3) only reads a limit.
    let open_max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let fallback_max = libc::c_int::try_from(open_max.clamp(3, 1 << 16)).unwrap_or(1 << 16);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, prctl, close_range, fcntl,
    // dup2, chdir) on values captured by copy; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if setup.setsid {
                check(libc::setsid())?;
            }
            if let Some(sig) = setup.parent_death_signal {
                check(libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::c_ulong::try_from(sig).unwrap_or(9),
                ))?;
            }
            // First: the dup2 targets below come out without the flag.
            cloexec_from_3(fallback_max)?;
            for &(from, to) in &pairs {
                if from == to {
                    // dup2 onto itself keeps close-on-exec: clear it instead.
                    check(libc::fcntl(to, libc::F_SETFD, 0))?;
                } else {
                    check(libc::dup2(from, to))?;
                }
            }
            if setup.chdir_root {
                check(libc::chdir(root.as_ptr()))?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_passing_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_fd(&a, b"/dev/pts/9", w.as_raw_fd()).unwrap();
        drop(w);
        let (got, name) = recv_fd(&b).unwrap();
        assert_eq!(name, b"/dev/pts/9");
        write_all(got.as_raw_fd(), b"via passed fd").unwrap();
        drop(got);
        let mut buf = [0u8; 64];
        let n = read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"via passed fd");
        assert_eq!(
            read(r.as_raw_fd(), &mut buf).unwrap(),
            0,
            "all writers closed"
        );
    }

    #[test]
    fn pty_and_raw_mode() {
        let (master, slave, name) = open_pty().unwrap();
        assert!(name.starts_with("/dev/pts/"), "{name}");
        assert!(isatty(slave.as_raw_fd()));
        let saved = make_raw(slave.as_raw_fd()).unwrap();
        // Raw: a newline written on the slave arrives unchanged (no \r\n).
        write_all(slave.as_raw_fd(), b"a\n").unwrap();
        assert!(poll_readable(master.as_raw_fd(), Duration::from_secs(5)).unwrap());
        let mut buf = [0u8; 8];
        let n = read(master.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\n");
        restore_termios(slave.as_raw_fd(), &saved);
    }

    /// Descriptors of this process open without close-on-exec (as an
    /// engine may hand runm) do not reach a child; the `dup2` targets do.
    #[test]
    fn children_get_only_stdio_and_what_is_placed() {
        let (r, w) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        // SAFETY: fcntl(2) on descriptors we own; no memory involved.
        unsafe {
            libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0);
            libc::fcntl(r2.as_raw_fd(), libc::F_SETFD, 0);
        }
        let (leaked, placed, kept) = (r.as_raw_fd(), 7, r2.as_raw_fd());
        // `test` is a shell builtin: /proc/self is the shell itself.
        let script = format!(
            "for f in {leaked} {placed} {kept}; do [ -e /proc/self/fd/$f ] && echo $f; done; true"
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdout(std::process::Stdio::piped());
        configure_child(
            &mut cmd,
            ChildSetup {
                dup2: vec![(w2.as_raw_fd(), placed), (kept, kept)],
                ..ChildSetup::default()
            },
        );
        let out = cmd.output().unwrap();
        let open: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        assert_eq!(open, vec![placed, kept], "{out:?}");
        drop((w, w2));
    }

    #[test]
    fn poll_times_out() {
        let (r, _w) = pipe().unwrap();
        assert!(!poll_readable(r.as_raw_fd(), Duration::from_millis(10)).unwrap());
        assert!(adopt_fd(-1).is_err());
    }
}
