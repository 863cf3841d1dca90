//! The system calls the agent makes that rustix has no safe call for, and
//! the C strings the others take.
//!
//! Everything else goes through rustix directly (and [`guest_agent::fdio`],
//! [`guest_agent::sigset`]). What is left here needs the C library or a raw
//! address: signals by number, including real-time ones and `kill(-1)`;
//! a fork-style `clone` into new namespaces, `execve` and `_exit`; loading
//! a seccomp filter; signal dispositions; and binding an AF_VSOCK address.
//! Each wrapper turns the result into an `io::Result`; the ones a cloned
//! child calls neither allocate nor lock.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use libc::{c_char, c_int, c_ulong};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// Turns a `-1`-on-error return into an `io::Result`.
fn check(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A string as a C string; a NUL byte inside is an `InvalidInput` error.
pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// A `Path` as a C string.
pub fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// kill(2) with any signal number the host may ask for: rustix's `Signal`
/// cannot name the real-time signals (`SIGRTMIN+n`).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory.
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

/// What [`clone_process`] returned in this process.
pub enum Fork {
    /// This is the new child.
    Child,
    /// This is the parent; the child's pid.
    Parent(i32),
}

/// clone(2) used like fork(2), with `flags` (`CLONE_NEW*`, `CLONE_PARENT`):
/// the child starts on a copy of the caller's stack, in the new namespaces.
/// rustix has no fork-style clone, and the C library's `clone` wants a new
/// stack.
///
/// # Safety
/// The agent is multi-threaded: in the child, only async-signal-safe calls
/// may be made, and the child must end in `execve` or [`exit`], never return
/// into the agent. The C library does not know about this child (no atfork
/// handlers run), which such a child does not need.
pub unsafe fn clone_process(flags: c_int) -> io::Result<Fork> {
    let flags = c_ulong::from(flags.unsigned_abs()) | c_ulong::from(libc::SIGCHLD.unsigned_abs());
    // SAFETY: no new stack (NULL: the child runs on a copy of this one, as
    // after fork), no thread-id or TLS pointers; the caller upholds the
    // child's restrictions.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as c_ulong,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => {
            Ok(Fork::Parent(i32::try_from(pid).map_err(|_| {
                io::Error::from_raw_os_error(libc::EOVERFLOW)
            })?))
        }
    }
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, program) (async-signal-safe);
/// rustix has no seccomp call.
pub fn load_seccomp_filter(flags: u32, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the filter.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::from_ref(&prog),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// _exit(2): ends the process without running anything of the agent's.
pub fn exit(status: c_int) -> ! {
    // SAFETY: _exit is async-signal-safe and does not return.
    unsafe { libc::_exit(status) }
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

/// Resets every signal's disposition to the default (the agent ignores
/// SIGPIPE; a workload must not inherit that).
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        // SAFETY: setting SIG_DFL installs no handler; errors (SIGKILL,
        // SIGSTOP, signals reserved by the C library) are harmless.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// A listening AF_VSOCK stream socket on `port`, any CID, close-on-exec.
pub fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: libc::VMADDR_CID_ANY,
        svm_zero: [0; 4],
    };
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // rustix has no vsock address type: bind takes the C one.
    // SAFETY: `addr` is a sockaddr_vm of `len` bytes that outlives the call.
    check(unsafe {
        libc::bind(
            fd.as_fd().as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    rustix::net::listen(&fd, 1)?;
    Ok(fd)
}
