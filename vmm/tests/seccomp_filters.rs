//! The seccomp filters as the kernel applies them: a child process installs
//! the filter of one thread kind and makes one call; a call outside the list
//! kills it with SIGSYS, a call on the list lets it exit normally.
//!
//! The filters are compiled before the fork, so the child does nothing but
//! install one (prctl and seccomp, no allocation) and make raw calls.

#[cfg(test)]
mod tests {
    use vmm::seccomp::{filter, install, BpfProgram, SeccompMode, ThreadKind};

    /// One raw system call with up to three arguments.
    #[derive(Debug, Clone, Copy)]
    struct Call {
        name: &'static str,
        nr: libc::c_long,
        args: [libc::c_long; 3],
    }

    const fn call(name: &'static str, nr: libc::c_long, args: [libc::c_long; 3]) -> Call {
        Call { name, nr, args }
    }

    /// How a child that made `c` under `kind`'s filter ended: `Ok(code)` for
    /// an exit, `Err(signal)` for a kill.
    fn run_in_child(kind: ThreadKind, prog: &BpfProgram, c: Call) -> Result<i32, i32> {
        // SAFETY: the child only installs an already built filter and makes
        // raw system calls before `_exit`; it touches no lock or allocator
        // another thread of the test harness could hold.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if install(kind, prog).is_err() {
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(100) };
            }
            // SAFETY: the calls below take no pointers into memory they could
            // corrupt (null paths fail with EFAULT if allowed at all).
            unsafe {
                libc::syscall(c.nr, c.args[0], c.args[1], c.args[2]);
                libc::_exit(0)
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(libc::WTERMSIG(status))
        }
    }

    fn check(kind: ThreadKind, allowed: &[Call], forbidden: &[Call]) {
        let prog = filter(kind, SeccompMode::On)
            .expect("the filter builds")
            .expect("mode on has a filter");
        for &c in allowed {
            assert_eq!(
                run_in_child(kind, &prog, c),
                Ok(0),
                "{kind} thread: {} is on its list and must not kill",
                c.name
            );
        }
        for &c in forbidden {
            assert_eq!(
                run_in_child(kind, &prog, c),
                Err(libc::SIGSYS),
                "{kind} thread: {} is not on its list and must kill the process with SIGSYS",
                c.name
            );
        }
    }

    const KVM_RUN: libc::c_long = 0xae80;
    const KVM_CREATE_VM: libc::c_long = 0xae01;

    fn common_forbidden() -> Vec<Call> {
        vec![
            call("openat", libc::SYS_openat, [libc::AT_FDCWD as _, 0, 0]),
            call("execve", libc::SYS_execve, [0, 0, 0]),
            call("ptrace", libc::SYS_ptrace, [0, 0, 0]),
            call("mount", libc::SYS_mount, [0, 0, 0]),
            call("setuid", libc::SYS_setuid, [0, 0, 0]),
            call(
                "mmap with PROT_EXEC",
                libc::SYS_mmap,
                [0, 4096, (libc::PROT_READ | libc::PROT_EXEC) as _],
            ),
            call("kill", libc::SYS_kill, [1, libc::SIGKILL as _, 0]),
        ]
    }

    #[test]
    fn vcpu_thread_runs_kvm_and_nothing_else() {
        let mut forbidden = common_forbidden();
        forbidden.extend([
            call(
                "ioctl KVM_CREATE_VM",
                libc::SYS_ioctl,
                [-1, KVM_CREATE_VM, 0],
            ),
            call("socket", libc::SYS_socket, [libc::AF_UNIX as _, 1, 0]),
            call("connect", libc::SYS_connect, [-1, 0, 0]),
            call("pwrite64", libc::SYS_pwrite64, [-1, 0, 0]),
            call("accept4", libc::SYS_accept4, [-1, 0, 0]),
        ]);
        check(
            ThreadKind::Vcpu,
            &[
                call("ioctl KVM_RUN", libc::SYS_ioctl, [-1, KVM_RUN, 0]),
                call("write", libc::SYS_write, [-1, 0, 0]),
                call("getpid", libc::SYS_getpid, [0, 0, 0]),
            ],
            &forbidden,
        );
    }

    #[test]
    fn event_loop_serves_devices_over_unix_sockets_only() {
        let mut forbidden = common_forbidden();
        forbidden.extend([
            call(
                "socket AF_INET",
                libc::SYS_socket,
                [libc::AF_INET as _, 1, 0],
            ),
            call(
                "socket AF_NETLINK",
                libc::SYS_socket,
                [libc::AF_NETLINK as _, 3, 0],
            ),
            call("ioctl KVM_RUN", libc::SYS_ioctl, [-1, KVM_RUN, 0]),
            call("bind", libc::SYS_bind, [-1, 0, 0]),
        ]);
        check(
            ThreadKind::EventLoop,
            &[
                call("epoll_wait", libc::SYS_epoll_wait, [-1, 0, 0]),
                call("pwrite64", libc::SYS_pwrite64, [-1, 0, 0]),
                call("fsync", libc::SYS_fsync, [-1, 0, 0]),
                call("getrandom", libc::SYS_getrandom, [0, 0, 0]),
                call("connect", libc::SYS_connect, [-1, 0, 0]),
            ],
            &forbidden,
        );
        // An allowed socket(AF_UNIX) really opens one (a new fd), and exits 0.
        let prog = filter(ThreadKind::EventLoop, SeccompMode::On)
            .unwrap()
            .unwrap();
        assert_eq!(
            run_in_child(
                ThreadKind::EventLoop,
                &prog,
                call(
                    "socket AF_UNIX",
                    libc::SYS_socket,
                    [libc::AF_UNIX as _, 1, 0]
                )
            ),
            Ok(0)
        );
    }

    #[test]
    fn main_thread_only_kicks_joins_and_frees() {
        let mut forbidden = common_forbidden();
        forbidden.extend([
            call(
                "tgkill SIGKILL",
                libc::SYS_tgkill,
                [0, 0, libc::SIGKILL as _],
            ),
            call("ioctl KVM_RUN", libc::SYS_ioctl, [-1, KVM_RUN, 0]),
            call("read", libc::SYS_read, [-1, 0, 0]),
            call("socket", libc::SYS_socket, [libc::AF_UNIX as _, 1, 0]),
        ]);
        let kick = libc::c_long::from(vmm::vcpu::kick_signal());
        check(
            ThreadKind::Main,
            // pid 0 does not exist: the allowed kick fails with ESRCH, unkilled.
            &[
                call(
                    "tgkill with the kick signal",
                    libc::SYS_tgkill,
                    [0, 0, kick],
                ),
                call("futex", libc::SYS_futex, [0, 0, 0]),
            ],
            &forbidden,
        );
    }

    #[test]
    fn log_mode_allows_and_off_installs_nothing() {
        let prog = filter(ThreadKind::Vcpu, SeccompMode::Log).unwrap().unwrap();
        assert_eq!(
            run_in_child(
                ThreadKind::Vcpu,
                &prog,
                call("socket", libc::SYS_socket, [libc::AF_INET as _, 1, 0])
            ),
            Ok(0),
            "log mode lets a call outside the list through"
        );
        assert!(filter(ThreadKind::Vcpu, SeccompMode::Off)
            .unwrap()
            .is_none());
    }

    #[test]
    fn jail_parent_only_waits_and_forwards() {
        let mut forbidden = common_forbidden();
        forbidden.extend([
            call(
                "kill SIGKILL",
                libc::SYS_kill,
                [0x7fff_fff0, libc::SIGKILL as _, 0],
            ),
            call("ioctl", libc::SYS_ioctl, [-1, KVM_RUN, 0]),
            call("socket", libc::SYS_socket, [libc::AF_UNIX as _, 1, 0]),
        ]);
        check(
            ThreadKind::Waiter,
            &[
                // A pid that does not exist: allowed, fails with ESRCH.
                call(
                    "kill SIGTERM",
                    libc::SYS_kill,
                    [0x7fff_fff0, libc::SIGTERM as _, 0],
                ),
                call(
                    "kill SIGSTOP (a pause)",
                    libc::SYS_kill,
                    [0x7fff_fff0, libc::SIGSTOP as _, 0],
                ),
                call(
                    "kill SIGCONT",
                    libc::SYS_kill,
                    [0x7fff_fff0, libc::SIGCONT as _, 0],
                ),
                call("wait4", libc::SYS_wait4, [-1, 0, libc::WNOHANG as _]),
                call("poll", libc::SYS_poll, [0, 0, 0]),
            ],
            &forbidden,
        );
    }

    #[test]
    fn vhost_user_watchdog_only_shuts_sockets_down() {
        let mut forbidden = common_forbidden();
        forbidden.extend([
            call("ioctl", libc::SYS_ioctl, [-1, KVM_RUN, 0]),
            call("socket", libc::SYS_socket, [libc::AF_UNIX as _, 1, 0]),
            call("sendmsg", libc::SYS_sendmsg, [-1, 0, 0]),
            call("read", libc::SYS_read, [-1, 0, 0]),
        ]);
        check(
            ThreadKind::VhostUserWatchdog,
            &[
                // A bad descriptor: allowed, fails with EBADF.
                call(
                    "shutdown",
                    libc::SYS_shutdown,
                    [-1, libc::SHUT_RDWR as _, 0],
                ),
                call("futex", libc::SYS_futex, [0, 0, 0]),
            ],
            &forbidden,
        );
    }
}
