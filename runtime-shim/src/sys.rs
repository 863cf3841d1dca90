//! What runm needs from the system beyond std, on rustix: descriptor I/O
//! (shared with the guest agent, [`guest_agent::fdio`]), signal masks
//! ([`guest_agent::sigset`]), locks, pseudo terminals and raw mode, passing
//! a descriptor over a Unix socket (SCM_RIGHTS), Unix sockets at paths longer
//! than a socket address holds, waiting for a child without reaping it, and
//! how a spawned child is set up (new session, parent-death signal,
//! descriptors moved into place).
//!
//! runm's `unsafe` lives here: taking ownership of a descriptor number it
//! was handed, and the code a child runs between fork and exec.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub use guest_agent::fdio::{pipe, poll_readable, read, write_all};
pub use guest_agent::sigset::SigSet;
use rustix::fs::FlockOperation;
use rustix::io::{retry_on_intr, FdFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use rustix::termios::{OptionalActions, Termios};

/// What a terminal's size change sends its session's foreground: the
/// sandbox and the exec relay turn it into a `Resize` of the guest's
/// terminal instead of forwarding it.
pub const RESIZE_SIGNAL: i32 = libc::SIGWINCH;

/// [`FORWARDED_SIGNALS`] and [`RESIZE_SIGNAL`]: what a process relaying a
/// terminal waits for.
pub fn relayed_signals() -> Vec<i32> {
    let mut s = FORWARDED_SIGNALS.to_vec();
    s.push(RESIZE_SIGNAL);
    s
}

/// The size of the terminal `fd` as (rows, columns), if it is one.
pub fn terminal_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let w = rustix::termios::tcgetwinsize(fd).ok()?;
    (w.ws_row > 0 && w.ws_col > 0).then_some((w.ws_row, w.ws_col))
}

/// Makes the terminal `fd` the calling session leader's controlling
/// terminal, so that its size changes reach us (SIGWINCH).
pub fn take_controlling_terminal(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::process::ioctl_tiocsctty(fd)?)
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
    rustix::process::getuid().as_raw()
}

/// A pid runm signals or waits for: a process of its own, never 0 or
/// negative (a process group, or every process), whatever a state file says.
fn one_pid(pid: i32) -> io::Result<Pid> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{pid} is not a process id"),
        )
    };
    // Pid::from_raw refuses only 0 (and asserts against negatives in debug
    // builds): check the sign first.
    if pid <= 0 {
        return Err(bad());
    }
    Pid::from_raw(pid).ok_or_else(bad)
}

/// `sig` as a named signal: runm sends no real-time ones.
fn named_signal(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{sig} is not a signal runm sends"),
        )
    })
}

/// Sends `sig` (a named signal) to process `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process(
        one_pid(pid)?,
        named_signal(sig)?,
    )?)
}

/// Sends `sig` to every process of the process group `pgid` (a child
/// started with `setsid`: its pid).
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process_group(
        one_pid(pgid)?,
        named_signal(sig)?,
    )?)
}

/// Blocks `signals` in the calling thread (and threads it spawns later);
/// returns the set to [`SigSet::wait`] on. std's `Command` clears the mask
/// in children.
pub fn block_signals(signals: &[i32]) -> io::Result<SigSet> {
    let set = SigSet::of(signals)?;
    set.block()?;
    Ok(set)
}

/// Takes an exclusive `flock` on `fd`, waiting for it.
pub fn flock_exclusive(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    Ok(retry_on_intr(|| {
        rustix::fs::flock(fd, FlockOperation::LockExclusive)
    })?)
}

/// Takes an exclusive `flock` on `fd` if it comes within `timeout`;
/// `Ok(false)` if someone else held it all that time.
pub fn flock_exclusive_within(fd: impl AsFd, timeout: std::time::Duration) -> io::Result<bool> {
    let fd = fd.as_fd();
    let until = std::time::Instant::now() + timeout;
    loop {
        match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if std::time::Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Marks `fd` close-on-exec.
pub fn set_cloexec(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC)?)
}

/// Takes ownership of a descriptor number handed to this process (e.g. by
/// `--ready-fd`), if it is open.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // A number is all there is to check: only the C call takes one.
    // SAFETY: F_GETFD reads a descriptor's flags, failing (EBADF) for a
    // number that is not an open descriptor; no memory involved.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and was handed to us to own; nothing
    // else in this process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Longest path a Unix socket address holds (`sun_path` less its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Runs `f` with an address for the socket at `path` that fits in a Unix
/// socket address: `path` itself, or, when it is longer, the same file
/// reached through a descriptor of its directory
/// (`/proc/self/fd/N/<name>`). Engines give runm long roots: Docker's
/// `<exec-root>/runtime-runc/moby/<64-hex id>/` leaves room for no name.
fn at_socket_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SOCKET_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let short = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string())
        .join(name);
    // `dir` stays open until `f` has bound or connected.
    f(&short)
}

/// Connects to the Unix socket at `path`, however long the path.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    at_socket_path(path, |p| UnixStream::connect(p))
}

/// Listens on a new Unix socket at `path`, however long the path.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    at_socket_path(path, |p| UnixListener::bind(p))
}

/// A new pseudo terminal from /dev/ptmx: (master, slave, slave path).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd, String)> {
    let (master, slave) = guest_agent::fdio::open_pty(Path::new("/dev/ptmx"))?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    Ok((master, slave, name.to_string_lossy().into_owned()))
}

/// Puts the terminal `fd` into raw mode; returns what to restore.
pub fn make_raw(fd: impl AsFd) -> io::Result<Termios> {
    let fd = fd.as_fd();
    let saved = rustix::termios::tcgetattr(fd)?;
    let mut raw = saved.clone();
    raw.make_raw();
    rustix::termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
    Ok(saved)
}

/// Restores attributes saved by [`make_raw`].
pub fn restore_termios(fd: impl AsFd, saved: &Termios) {
    let _ = rustix::termios::tcsetattr(fd, OptionalActions::Now, saved);
}

/// Sends `fd` over a Unix socket with `name` as the message (runc's console
/// socket protocol: the name is the pty's path).
pub fn send_fd(sock: &UnixStream, name: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let iov = [io::IoSlice::new(name)];
    retry_on_intr(|| rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::empty()))?;
    Ok(())
}

/// Waits until child `pid` has exited without reaping it (so its pid stays
/// ours until `wait`), returning `Ok(())` once it has.
pub fn wait_exited_no_reap(pid: i32) -> io::Result<()> {
    let pid = one_pid(pid)?;
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
    retry_on_intr(|| rustix::process::waitid(WaitId::Pid(pid), options))?;
    Ok(())
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
    /// A network namespace to enter (an open nsfs descriptor), so that
    /// the child is in it from its first instruction.
    pub netns: Option<RawFd>,
}

/// Applies `setup` to `cmd`.
pub fn configure_child(cmd: &mut Command, setup: ChildSetup) {
    // Converted here, where a bad number can still be reported (by spawn).
    let death_signal = setup.parent_death_signal.map(Signal::from_named_raw);
    let pairs = setup.dup2;
    let netns = setup.netns;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, prctl, close_range, setns,
    // dup2, fcntl, chdir) on values captured by copy; it allocates nothing.
    // setns, dup2 and fcntl take the raw numbers `netns` and `pairs` name,
    // which the caller keeps open until spawn returns (the targets need not
    // be open: dup2 opens them).
    unsafe {
        cmd.pre_exec(move || {
            if setup.setsid {
                rustix::process::setsid()?;
            }
            match death_signal {
                None => {}
                Some(None) => return Err(io::ErrorKind::InvalidInput.into()),
                Some(signal) => rustix::process::set_parent_process_death_signal(signal)?,
            }
            // First: the dup2 targets below come out without the flag.
            guest_agent::fdio::cloexec_from(3)?;
            // Before the descriptors are placed: placing may reuse its number.
            if let Some(ns) = netns {
                // An open descriptor the caller keeps (see above).
                let ns = BorrowedFd::borrow_raw(ns);
                rustix::thread::move_into_link_name_space(
                    ns,
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
            }
            for &(from, to) in &pairs {
                let ret = if from == to {
                    // dup2 onto itself keeps close-on-exec: clear it instead.
                    libc::fcntl(to, libc::F_SETFD, 0)
                } else {
                    libc::dup2(from, to)
                };
                if ret == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if setup.chdir_root {
                rustix::process::chdir(c"/")?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Receives one descriptor sent by [`send_fd`]; returns it and the message.
    fn recv_fd(sock: &UnixStream) -> (OwnedFd, Vec<u8>) {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut data = vec![0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut data)];
        let msg =
            rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).unwrap();
        let n = msg.bytes;
        let fd = control
            .drain()
            .find_map(|m| match m {
                RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                _ => None,
            })
            .expect("a descriptor");
        data.truncate(n);
        (fd, data)
    }

    #[test]
    fn fd_passing_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_fd(&a, b"/dev/pts/9", w.as_fd()).unwrap();
        drop(w);
        let (got, name) = recv_fd(&b);
        assert_eq!(name, b"/dev/pts/9");
        write_all(&got, b"via passed fd").unwrap();
        drop(got);
        let mut buf = [0u8; 64];
        let n = read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"via passed fd");
        assert_eq!(read(&r, &mut buf).unwrap(), 0, "all writers closed");
    }

    #[test]
    fn sockets_at_paths_longer_than_an_address() {
        use std::os::unix::fs::FileTypeExt;
        let tmp = tempfile::tempdir().unwrap();
        // As Docker's: <exec-root>/runtime-runc/moby/<64 hex>/control.sock.
        let dir = tmp
            .path()
            .join("exec-root/runtime-runc/moby")
            .join("0123456789abcdef".repeat(4));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        assert!(
            path.as_os_str().len() > SOCKET_PATH_MAX,
            "{}",
            path.display()
        );
        assert!(
            UnixListener::bind(&path).is_err(),
            "the address cannot hold it"
        );
        let listener = bind_unix(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let mut client = connect_unix(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // A short path is used as it is; a missing socket is still an error.
        let short = tmp.path().join("s.sock");
        let _l = bind_unix(&short).unwrap();
        assert!(connect_unix(&short).is_ok());
        assert!(connect_unix(&dir.join("missing.sock")).is_err());
        assert!(connect_unix(&tmp.path().join("missing.sock")).is_err());
    }

    #[test]
    fn pty_and_raw_mode() {
        let (master, slave, name) = open_pty().unwrap();
        assert!(name.starts_with("/dev/pts/"), "{name}");
        assert!(rustix::termios::isatty(&slave));
        let saved = make_raw(&slave).unwrap();
        // Raw: a newline written on the slave arrives unchanged (no \r\n).
        write_all(&slave, b"a\n").unwrap();
        assert!(poll_readable(&master, Duration::from_secs(5)).unwrap());
        let mut buf = [0u8; 8];
        let n = read(&master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\n");
        restore_termios(&slave, &saved);
        // Restored: the line discipline turns \n into \r\n again.
        write_all(&slave, b"b\n").unwrap();
        assert!(poll_readable(&master, Duration::from_secs(5)).unwrap());
        let n = read(&master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"b\r\n");
    }

    #[test]
    fn adopting_needs_an_open_descriptor() {
        assert!(adopt_fd(-1).is_err());
        let (r, _w) = pipe().unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&r, 100).unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        let owned = adopt_fd(raw).unwrap();
        assert_eq!(owned.as_raw_fd(), raw);
        drop(owned);
        assert!(adopt_fd(raw).is_err(), "closed with its owner");
    }

    #[test]
    fn kill_refuses_groups_and_unnamed_signals() {
        for pid in [0, -1, -5] {
            let e = kill(pid, libc::SIGTERM).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "pid {pid}");
        }
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            kill(me, 40).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // Signal 0 is no signal either; a real one to ourselves that does
        // nothing (SIGCHLD's default is to ignore it) goes through.
        assert!(kill(me, 0).is_err());
        kill(me, libc::SIGCHLD).unwrap();
        assert!(wait_exited_no_reap(0).is_err());
    }

    /// Descriptors of this process open without close-on-exec (as an
    /// engine may hand runm) do not reach a child; the `dup2` targets do.
    #[test]
    fn children_get_only_stdio_and_what_is_placed() {
        let (r, w) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        rustix::io::fcntl_setfd(&r, FdFlags::empty()).unwrap();
        rustix::io::fcntl_setfd(&r2, FdFlags::empty()).unwrap();
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
    fn child_setup_moves_a_descriptor_into_place() {
        let (r, w) = pipe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo through-fd-3 >&3; pwd"])
            .stdout(std::process::Stdio::piped())
            .current_dir("/tmp");
        configure_child(
            &mut cmd,
            ChildSetup {
                setsid: true,
                dup2: vec![(w.as_raw_fd(), 3)],
                chdir_root: true,
                ..ChildSetup::default()
            },
        );
        let out = cmd.output().unwrap();
        drop(w);
        assert!(out.status.success());
        assert_eq!(out.stdout, b"/\n");
        let mut buf = [0u8; 64];
        let n = read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"through-fd-3\n");
        // A signal number that is no signal fails the spawn, not the child.
        let mut bad = Command::new("true");
        configure_child(
            &mut bad,
            ChildSetup {
                parent_death_signal: Some(99),
                ..ChildSetup::default()
            },
        );
        assert!(bad.status().is_err());
    }
}
