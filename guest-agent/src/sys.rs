//! Thin wrappers over the system calls the agent makes.
//!
//! This module owns the agent's `unsafe` FFI: every wrapper checks the return
//! value and turns it into an `io::Result`. The wrappers used by a freshly
//! forked child (see [`crate::exec`]) neither allocate nor lock: an error is
//! `io::Error::last_os_error()`, which only stores the errno.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use libc::{c_char, c_int, c_ulong};

/// Turns a `-1`-on-error return into an `io::Result`.
fn check(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string; a NUL byte inside is an `InvalidInput` error.
pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// A `Path` as a C string.
pub fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// mount(2).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    };
    check(ret).map(drop)
}

/// Lazily unmounts `target` and everything mounted below it.
pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: `target` is a NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Creates a character device node.
pub fn mknod_char(path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is a NUL-terminated string.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, dev) }).map(drop)
}

/// sethostname(2).
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// kill(2).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: plain system call on integers.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// kill(-1, signal): every process but the caller. Only PID 1 of a guest
/// may do this (there it means "every container process"); anywhere else,
/// tests included, it is refused with EPERM instead of signalling a host.
pub fn kill_all(signal: i32) -> io::Result<()> {
    if std::process::id() != 1 {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    kill(-1, signal)
}

/// sync(2): flushes every file system.
pub fn sync() {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::sync() }
}

/// reboot(2); returns only on failure.
pub fn reboot(cmd: c_int) -> io::Error {
    // SAFETY: plain system call; the agent is PID 1 with CAP_SYS_BOOT.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits until `fd` is readable (or hung up); `Ok(false)` on timeout.
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        match check(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all zeroes is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid utsname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates every field it fills.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// What [`fork`] returned in this process.
pub enum Fork {
    /// This is the new child.
    Child,
    /// This is the parent; the child's pid.
    Parent(i32),
}

/// fork(2).
///
/// # Safety
/// The agent is multi-threaded: in the child, only async-signal-safe calls
/// (the non-allocating wrappers below) may be made, and the child must end in
/// `execve` or [`exit`], never return into the agent.
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: the caller upholds the child's restrictions.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// _exit(2): ends the process without running anything of the agent's.
pub fn exit(status: c_int) -> ! {
    // SAFETY: _exit is async-signal-safe and does not return.
    unsafe { libc::_exit(status) }
}

/// Writes all of `buf` to `fd` (async-signal-safe).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = buf.get(n.unsigned_abs()..).unwrap_or_default();
    }
    Ok(())
}

/// Reads into `buf` once, retrying on EINTR (async-signal-safe).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Empties the calling thread's signal mask.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the old mask is not asked for.
    let ret = unsafe {
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Resets every signal's disposition to the default (the agent ignores
/// SIGPIPE; a workload must not inherit that).
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        // SAFETY: setting SIG_DFL installs no handler; errors (SIGKILL,
        // SIGSTOP, signals reserved by the C library) are harmless.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Blocks SIGCHLD in the calling thread (and in every thread it spawns later).
pub fn block_sigchld() -> io::Result<()> {
    let set = sigchld_set();
    // SAFETY: `set` is a valid sigset_t.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset and sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Waits for a (blocked) SIGCHLD to be pending and takes it.
pub fn wait_sigchld() -> io::Result<()> {
    let set = sigchld_set();
    loop {
        // SAFETY: `set` is a valid sigset_t; the siginfo is not asked for.
        match check(unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reaps one terminated child without blocking: `Some((pid, raw status))`,
/// or `None` when no child has terminated (or there are no children).
pub fn reap_one() -> Option<(i32, c_int)> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid int to fill.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Makes the terminal on `fd` the calling process's controlling terminal.
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// dup2(2); the new descriptor is not close-on-exec.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain system call on descriptors.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Marks every descriptor from `first` up close-on-exec, so nothing of the
/// agent's (its channel above all) leaks into a workload.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags.
    check(unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) })
        .map(drop)
}

/// unshare(2).
pub fn unshare(flags: c_int) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// setns(2).
pub fn setns(fd: RawFd, nstype: c_int) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor.
    check(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// chdir(2).
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// fchdir(2).
pub fn fchdir(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor.
    check(unsafe { libc::fchdir(fd) }).map(drop)
}

/// chroot(2).
pub fn chroot(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string.
    check(unsafe { libc::chroot(path.as_ptr()) }).map(drop)
}

/// setrlimit(2).
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// setgroups(2).
pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).map(drop)
}

/// setgid(2).
pub fn setgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::setgid(gid) }).map(drop)
}

/// setuid(2).
pub fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::setuid(uid) }).map(drop)
}

/// prctl(PR_SET_NO_NEW_PRIVS, 1).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: plain system call on integers.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// execve(2); returns only on failure.
///
/// `argv` and `envp` must be NULL-terminated arrays of pointers to
/// NUL-terminated strings (see `exec::Prepared`).
pub fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> io::Error {
    if argv.last().is_some_and(|p| !p.is_null()) || envp.last().is_some_and(|p| !p.is_null()) {
        return io::Error::from_raw_os_error(libc::EINVAL);
    }
    // SAFETY: both arrays end in NULL (checked above) and point to strings
    // owned by the caller for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Opens a new pseudo terminal from the `ptmx` node at `ptmx`: `(master, slave)`,
/// both close-on-exec, with a 24x80 window (the protocol carries no size).
pub fn open_pty(ptmx: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    let path = cpath(ptmx)?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `path` is a NUL-terminated string.
    let master = check(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: open succeeded; the descriptor is ours alone.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // TIOCGPTPEER opens the slave through the master, with no path lookup
    // (so no race with whatever is mounted where the slave's name would be).
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new descriptor.
    let slave = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the ioctl succeeded; the descriptor is ours alone.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    Ok((master, slave))
}

/// A listening AF_VSOCK stream socket on `port`, any CID.
pub fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket succeeded; the descriptor is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; all zeroes is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a sockaddr_vm of `len` bytes.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    // SAFETY: plain system call on a descriptor.
    check(unsafe { libc::listen(fd.as_raw_fd(), 1) })?;
    Ok(fd)
}

/// Accepts one connection on a listening socket (close-on-exec).
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: the peer address is not asked for.
        let ret = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        match check(ret) {
            // SAFETY: accept4 succeeded; the descriptor is ours alone.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether descriptor `fd` is open.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}
