//! runm end to end: busybox bundles run in real microVMs with the real guest
//! agent, under the QEMU backend (`--hypervisor qemu`: software emulation
//! where KVM cannot run guest user space, as on PVM hosts; KVM elsewhere).
//!
//! The guest kernel and the agent initramfs come from `$RUNM_KERNEL` and
//! `$RUNM_INITRD`, else from the project's build scripts
//! (`guest-kernel-config/build.sh`, `guest-agent/build-initramfs.sh`), which
//! cache their results (the first kernel build takes minutes). Needs
//! `qemu-system-x86_64`, `mkfs.ext4` and a static busybox. Tests run one at a
//! time (each boots at least one emulated machine); every runm call and wait
//! is bounded, and whatever a failed test leaves running is killed by pid.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use crate::common::{bundle, guest_images, s, vm_runm, Runm};

    #[test]
    fn run_prints_what_the_workload_prints_and_exits_with_its_status() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &[
                "sh",
                "-c",
                "echo hello from the guest; echo to-stderr >&2; exit 7",
            ],
            true,
            |_| {},
        );
        let out = r.run(&["--hypervisor", "qemu", "run", "r1", "--bundle", s(&b)]);
        assert_eq!(out.code, 7, "{out:?}");
        assert_eq!(out.stdout, "hello from the guest\n", "{out:?}");
        // Quiet on success, as runc: stderr is the workload's alone.
        assert_eq!(out.stderr, "to-stderr\n", "{out:?}");
        r.assert_clean();
        // A clean exit is 0; with --log the backend notice is in the log
        // (as engines read it), and nothing of runm's is on stdout or stderr.
        bundle(&b, &["true"], true, |_| {});
        let log = r.tmp.path().join("run.log");
        let out = r
            .run(&[
                "--log",
                s(&log),
                "--hypervisor",
                "qemu",
                "run",
                "r2",
                "--bundle",
                s(&b),
            ])
            .ok();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
        let text = fs::read_to_string(&log).unwrap();
        let said: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("container r2: backend qemu"))
            .collect();
        assert_eq!(said.len(), 1, "{text}");
        assert!(said[0].contains("level=info"), "{text}");
        r.assert_clean();
    }

    #[test]
    fn env_cwd_user_groups_rlimits_and_hostname_follow_config_json() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        let script = "echo \"FOO=$FOO\"; pwd; id -u; id -g; id -G; hostname; ulimit -n; cat /proc/self/status | grep NoNewPrivs";
        bundle(&b, &["sh", "-c", script], true, |c| {
            c["process"]["env"] = serde_json::json!(["PATH=/bin", "FOO=bar baz"]);
            c["process"]["cwd"] = "/tmp".into();
            c["process"]["user"] =
                serde_json::json!({"uid": 1000, "gid": 100, "additionalGids": [10, 20]});
            c["process"]["rlimits"] =
                serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}]);
            c["process"]["noNewPrivileges"] = true.into();
            c["hostname"] = "box".into();
        });
        let out = r
            .run(&["--hypervisor", "qemu", "run", "cfg", "--bundle", s(&b)])
            .ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines,
            vec![
                "FOO=bar baz",
                "/tmp",
                "1000",
                "100",
                "100 10 20",
                "box",
                "512",
                "NoNewPrivs:\t1"
            ],
            "{out:?}"
        );
        r.assert_clean();
    }

    #[test]
    fn stdin_reaches_the_workload() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &["sh", "-c", "read line; echo \"got $line\"; cat | wc -l"],
            true,
            |_| {},
        );
        let input = r.tmp.path().join("input");
        fs::write(&input, "first\na\nb\nc\n").unwrap();
        let mut cmd = r.command(&["--hypervisor", "qemu", "run", "in1", "--bundle", s(&b)]);
        let out_path = r.tmp.path().join("stdin.out");
        cmd.stdin(fs::File::open(&input).unwrap())
            .stdout(fs::File::create(&out_path).unwrap());
        let mut child = cmd.spawn().unwrap();
        let code = crate::common::wait_bounded(&mut child, Duration::from_secs(240));
        assert_eq!(code, Some(0));
        assert_eq!(fs::read_to_string(&out_path).unwrap(), "got first\n3\n");
        r.assert_clean();
    }

    #[test]
    fn lifecycle_create_start_exec_kill_delete_with_bad_inputs_on_the_way() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &[
                "sh",
                "-c",
                "trap 'echo got-term; exit 0' TERM; echo ready; sleep 1000 & wait",
            ],
            true,
            |c| c["annotations"] = serde_json::json!({"purpose": "lifecycle"}),
        );
        let pid_file = r.tmp.path().join("c1.pid");
        let log = r.tmp.path().join("c1.log.json");
        let out = r.run(&[
            "--log",
            s(&log),
            "--log-format",
            "json",
            "--hypervisor",
            "qemu",
            "create",
            "c1",
            "--bundle",
            s(&b),
            "--pid-file",
            s(&pid_file),
        ]);
        let out = out.ok();
        assert!(out.stdout.is_empty(), "nothing runs before start: {out:?}");
        // Engines hand create the container's stdio: runm's notice is in the
        // log, in the format asked for, and not on stderr.
        assert!(out.stderr.is_empty(), "{out:?}");
        let notice = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["msg"].as_str().unwrap().contains("c1: backend qemu"))
            .expect("the backend notice is in the log");
        assert_eq!(notice["level"], "info");

        let st = r.state("c1");
        assert_eq!(st["ociVersion"], "1.2.0");
        assert_eq!(st["id"], "c1");
        assert_eq!(st["status"], "created");
        assert_eq!(st["bundle"], s(&fs::canonicalize(&b).unwrap()));
        assert_eq!(st["annotations"]["purpose"], "lifecycle");
        let pid = st["pid"].as_i64().unwrap();
        assert!(pid > 0);
        assert_eq!(
            fs::read_to_string(&pid_file).unwrap().trim(),
            pid.to_string()
        );
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the container's pid is a live process"
        );

        // Bad inputs while it is created.
        r.run(&["--hypervisor", "qemu", "create", "c1", "--bundle", s(&b)])
            .fails_with("container 'c1' already exists");
        r.run(&["create", "../x", "--bundle", s(&b)])
            .fails_with("invalid container id '../x'");
        assert_eq!(
            r.state("c1")["status"],
            "created",
            "refused commands change nothing"
        );

        let out = r.run(&["start", "c1"]).ok();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
        let st = r.state("c1");
        assert_eq!(st["status"], "running");
        assert_eq!(st["pid"].as_i64().unwrap(), pid);
        r.run(&["start", "c1"])
            .fails_with("container 'c1' is running");
        r.run(&["delete", "c1"])
            .fails_with("container 'c1' is running: cannot delete it");
        r.run(&["kill", "c1", "NOPE"])
            .fails_with("unknown signal 'NOPE'");

        let out = r.run(&[
            "exec",
            "c1",
            "--",
            "sh",
            "-c",
            "echo exec-out; echo exec-err >&2; exit 3",
        ]);
        assert_eq!(out.code, 3, "{out:?}");
        assert_eq!(out.stdout, "exec-out\n");
        assert!(out.stderr.contains("exec-err"), "{out:?}");
        let out = r
            .run(&[
                "exec",
                "--env",
                "X=y",
                "--cwd",
                "/etc",
                "c1",
                "sh",
                "-c",
                "echo $X; pwd",
            ])
            .ok();
        assert_eq!(out.stdout, "y\n/etc\n");

        let out = r.run(&["ps", "c1", "--format", "json"]).ok();
        let pids: Vec<u32> = serde_json::from_str(out.stdout.trim()).unwrap();
        assert!(!pids.is_empty(), "{out:?}");
        let list = r.run(&["list", "--format", "json"]).ok();
        let l: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(l[0]["id"], "c1");
        assert_eq!(l[0]["status"], "running");

        r.run(&["kill", "c1", "SIGTERM"]).ok();
        let st = r.wait_status("c1", "stopped", Duration::from_secs(60));
        assert_eq!(st["pid"], 0);
        r.run(&["kill", "c1", "KILL"])
            .fails_with("container 'c1' is stopped");
        r.run(&["start", "c1"])
            .fails_with("container 'c1' is stopped");
        r.run(&["exec", "c1", "true"]).fails_with("is stopped");
        r.run(&["delete", "c1"]).ok();
        r.run(&["state", "c1"]).fails_with("does not exist");
        r.assert_clean();
    }

    #[test]
    fn two_containers_at_once() {
        let (_g, r) = vm_runm();
        // Each VM as a uid of its own, from a range of two.
        fs::write(
            r.tmp.path().join("runm-config.json"),
            r#"{"vm_uid_range": "301000-301001"}"#,
        )
        .unwrap();
        let mut handles = Vec::new();
        let r = std::sync::Arc::new(r);
        for id in ["twin-a", "twin-b"] {
            let b = r.tmp.path().join(id);
            bundle(&b, &["sh", "-c", "sleep 1000 & wait"], true, |c| {
                c["hostname"] = id.into()
            });
            let r = std::sync::Arc::clone(&r);
            handles.push(std::thread::spawn(move || {
                r.run(&[
                    "--hypervisor",
                    "qemu",
                    "run",
                    "--detach",
                    id,
                    "--bundle",
                    s(&b),
                ])
                .ok();
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        for id in ["twin-a", "twin-b"] {
            assert_eq!(r.state(id)["status"], "running");
            let out = r.run(&["exec", id, "hostname"]).ok();
            assert_eq!(out.stdout.trim(), id);
        }
        let pa = r.state("twin-a")["pid"].as_i64().unwrap();
        let pb = r.state("twin-b")["pid"].as_i64().unwrap();
        assert_ne!(pa, pb);
        let vm_uid = |sandbox: i64| -> String {
            let children = fs::read_to_string(format!("/proc/{sandbox}/task/{sandbox}/children"))
                .unwrap_or_default();
            let qemu = children
                .split_whitespace()
                .find(|c| read_comm(c) == "qemu-system-x86")
                .unwrap_or_else(|| panic!("no QEMU below sandbox {sandbox}: {children:?}"))
                .to_string();
            let status = fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
            uid.split_whitespace().nth(1).unwrap().to_string()
        };
        let mut uids = [vm_uid(pa), vm_uid(pb)];
        uids.sort();
        assert_eq!(uids, ["301000", "301001"], "a uid of its own for each VM");
        // The range is used up: a third VM is refused, with nothing left.
        let third = r.tmp.path().join("third");
        bundle(&third, &["true"], true, |_| {});
        r.run(&[
            "--hypervisor",
            "qemu",
            "create",
            "third",
            "--bundle",
            s(&third),
        ])
        .fails_with("in use by a running VM");
        assert!(!r.root.join("third").exists());
        r.run(&["delete", "--force", "twin-a"]).ok();
        assert_eq!(
            r.state("twin-b")["status"],
            "running",
            "deleting one leaves the other"
        );
        r.run(&["delete", "twin-b", "--force"]).ok();
        r.assert_clean();
    }

    /// The command name of process `pid`.
    fn read_comm(pid: &str) -> String {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The host cgroup file `v1`/`v2` of process `pid`'s cgroup for
    /// `controller` (v1 hierarchies, else the unified one).
    fn cgroup_file(pid: i64, controller: &str, v1: &str, v2: &str) -> PathBuf {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            if ctrls.split(',').any(|c| c == controller) {
                return Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(path.trim_start_matches('/'))
                    .join(v1);
            }
        }
        let path = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line");
        Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join(v2)
    }

    #[test]
    fn a_bundle_without_a_cgroup_runs_bounded_and_through_an_inner_symlink() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        // root.path through a symlink that stays in the bundle: allowed.
        bundle(&b, &["sh", "-c", "sleep 1000 & wait"], true, |c| {
            c["root"]["path"] = "root-link".into();
            c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
        });
        std::os::unix::fs::symlink("rootfs", b.join("root-link")).unwrap();
        r.run(&[
            "--hypervisor",
            "qemu",
            "run",
            "--detach",
            "bounded",
            "--bundle",
            s(&b),
        ])
        .ok();
        let pid = r.state("bounded")["pid"].as_i64().unwrap();
        let procs = cgroup_file(pid, "memory", "cgroup.procs", "cgroup.procs");
        let dir = procs.parent().unwrap().to_path_buf();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("bounded-"), "{}", dir.display());
        assert_eq!(dir.parent().unwrap().file_name().unwrap(), "runm");
        let members = fs::read_to_string(&procs).unwrap();
        // The sandbox, its VM and virtiofsd (which forks into its own
        // sandbox): none of them outside the bounded cgroup.
        let comm = |pid: &str| read_comm(pid);
        let mut names: Vec<String> = members.lines().map(comm).collect();
        names.sort();
        assert_eq!(
            names,
            ["qemu-system-x86", "runm", "virtiofsd", "virtiofsd"],
            "the sandbox, its VM and its virtio-fs daemon: {members:?}"
        );
        // QEMU and virtiofsd run under seccomp filters (virtiofsd's serving
        // process: the one it forks into its namespaces); QEMU as nobody,
        // without capabilities, chrooted into an empty directory.
        let mut filtered_virtiofsd = 0;
        for pid in members.lines() {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                    .unwrap_or_default()
            };
            match read_comm(pid).as_str() {
                "qemu-system-x86" => {
                    assert_eq!(field("Seccomp:"), "2", "{status}");
                    assert_eq!(field("Uid:"), "65534", "{status}");
                    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
                    // Its root: the container's empty directory.
                    let root = fs::read_link(format!("/proc/{pid}/root")).unwrap();
                    assert!(root.ends_with("vmm-jail"), "{}", root.display());
                    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
                }
                "virtiofsd" if field("Seccomp:") == "2" => filtered_virtiofsd += 1,
                _ => {}
            }
        }
        assert_eq!(filtered_virtiofsd, 1, "{members:?}");
        let read = |p: PathBuf| fs::read_to_string(&p).unwrap().trim().to_string();
        // Guest RAM (256 MiB) plus QEMU TCG's overhead (256 MiB).
        assert_eq!(
            read(cgroup_file(
                pid,
                "memory",
                "memory.limit_in_bytes",
                "memory.max"
            )),
            (512u64 << 20).to_string()
        );
        assert_eq!(
            read(cgroup_file(pid, "pids", "pids.max", "pids.max")),
            "4096"
        );
        let cpu = read(cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max"));
        assert!(
            cpu == "200000" || cpu == "200000 100000",
            "1 vCPU + 1: {cpu}"
        );
        let out = r.run(&["exec", "bounded", "cat", "/etc/passwd"]).ok();
        assert!(out.stdout.starts_with("root:"), "{out:?}");
        r.run(&["delete", "--force", "bounded"]).ok();
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
        assert!(
            !dir.parent().unwrap().exists()
                || fs::read_dir(dir.parent().unwrap()).unwrap().any(|e| e
                    .unwrap()
                    .file_type()
                    .unwrap()
                    .is_dir()),
            "runm's parent goes with its last container"
        );
        r.assert_clean();
    }

    #[test]
    fn detached_exec_leaves_a_relay_whose_pid_is_in_the_pid_file() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(&b, &["sh", "-c", "sleep 1000 & wait"], true, |_| {});
        r.run(&["--hypervisor", "qemu", "run", "-d", "d1", "--bundle", s(&b)])
            .ok();
        let pid_file = r.tmp.path().join("exec.pid");
        r.run(&[
            "exec",
            "--detach",
            "--pid-file",
            s(&pid_file),
            "d1",
            "--",
            "sh",
            "-c",
            "sleep 2; exit 5",
        ])
        .ok();
        let pid: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("exec-relay"),
            "pid {pid} is the relay"
        );
        let until = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(Instant::now() < until, "the relay outlived its process");
            std::thread::sleep(Duration::from_millis(100));
        }
        r.run(&["delete", "-f", "d1"]).ok();
        r.assert_clean();
    }

    /// A terminal size.
    fn winsize(rows: u16, cols: u16) -> rustix::termios::Winsize {
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }

    /// What a terminal's master has shown so far, read by a thread of its own.
    struct Screen(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Screen {
        fn watch(mut master: fs::File) -> Self {
            let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
            let theirs = std::sync::Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    theirs.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            Screen(seen)
        }

        /// Waits (at most 90 s) until `what` shows; returns all shown so far.
        fn wait_for(&self, what: &str) -> String {
            let until = Instant::now() + Duration::from_secs(90);
            loop {
                let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
                if text.contains(what) {
                    return text;
                }
                assert!(
                    Instant::now() < until,
                    "no {what:?} in the terminal: {text:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Receives the pty master runm sends over the console socket.
    fn recv_fd(sock: &UnixStream) -> OwnedFd {
        use std::os::fd::AsRawFd;
        let space = 64usize;
        let mut cbuf = vec![0u8; space];
        let mut data = [0u8; 256];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: recvmsg writes only into the buffers `msg` describes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
        assert!(
            String::from_utf8_lossy(&data[..usize::try_from(n).unwrap()]).starts_with("/dev/pts/")
        );
        // SAFETY: recvmsg filled the control buffer; CMSG_FIRSTHDR checks its length.
        let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        assert!(!c.is_null());
        // SAFETY: `c` points at a complete SCM_RIGHTS header inside `cbuf`,
        // followed by the descriptor the kernel installed for us.
        let fd: RawFd = unsafe {
            assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>())
        };
        // SAFETY: the descriptor is new and ours alone.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn a_terminal_process_works_through_the_console_socket() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &[
                "sh",
                "-c",
                "tty; stty size; read x; echo \"term-ok $x\"; \
                 i=0; while [ $i -lt 100 ]; do stty size; sleep 0.2; i=$((i+1)); done",
            ],
            true,
            |c| {
                c["process"]["terminal"] = true.into();
            },
        );
        let sock_path = r.tmp.path().join("console.sock");
        let listener = UnixListener::bind(&sock_path).unwrap();
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            recv_fd(&conn)
        });
        r.run(&[
            "--hypervisor",
            "qemu",
            "create",
            "t1",
            "--bundle",
            s(&b),
            "--console-socket",
            s(&sock_path),
        ])
        .ok();
        let master = receiver.join().unwrap();
        // The engine's terminal size is the guest's from the start.
        rustix::termios::tcsetwinsize(&master, winsize(30, 100)).unwrap();
        let master = fs::File::from(master);
        let mut writer = master.try_clone().unwrap();
        let screen = Screen::watch(master);
        r.run(&["start", "t1"]).ok();
        let text = screen.wait_for("30 100");
        assert!(text.contains("/dev/pts/"), "tty names a pty: {text:?}");
        use std::io::Write;
        writer.write_all(b"typed\r").unwrap();
        screen.wait_for("term-ok typed");
        // A resize of the engine's terminal reaches the guest's (SIGWINCH
        // to the sandbox, a Resize to the agent).
        rustix::termios::tcsetwinsize(&writer, winsize(40, 120)).unwrap();
        screen.wait_for("40 120");
        // `exec -t` as engines run it (detached, through a console socket):
        // its relay follows the resizes of its own pty.
        let exec_sock = r.tmp.path().join("exec-console.sock");
        let listener = UnixListener::bind(&exec_sock).unwrap();
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            recv_fd(&conn)
        });
        r.run(&[
            "exec",
            "--detach",
            "--tty",
            "--console-socket",
            s(&exec_sock),
            "t1",
            "sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do stty size; sleep 0.2; i=$((i+1)); done",
        ])
        .ok();
        let exec_master = fs::File::from(receiver.join().unwrap());
        let exec_screen = Screen::watch(exec_master.try_clone().unwrap());
        rustix::termios::tcsetwinsize(&exec_master, winsize(33, 111)).unwrap();
        exec_screen.wait_for("33 111");
        r.run(&["kill", "t1", "KILL"]).ok();
        r.wait_status("t1", "stopped", Duration::from_secs(60));
        r.run(&["delete", "t1"]).ok();
        r.assert_clean();
    }

    /// An initramfs whose `/init` never answers the host (it sleeps).
    fn silent_initramfs(dir: &Path) -> PathBuf {
        let cpio = dir.join("silent.cpio");
        let image = test_support::images::busybox_initramfs(
            "#!/bin/busybox sh\nexec /bin/busybox sleep 100000\n",
        )
        .expect("the silent initramfs");
        fs::write(&cpio, image).unwrap();
        cpio
    }

    #[test]
    fn run_in_a_terminal_follows_its_size() {
        use std::os::unix::process::CommandExt;
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 150 ]; do stty size; sleep 0.2; i=$((i+1)); done",
            ],
            true,
            |c| c["process"]["terminal"] = true.into(),
        );
        // A terminal of our own, as a shell's: runm run in the foreground of
        // its session, the terminal its controlling one.
        let master =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
                .unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        rustix::termios::tcsetwinsize(&master, winsize(30, 100)).unwrap();
        let mut cmd = r.command(&["--hypervisor", "qemu", "run", "tt1", "--bundle", s(&b)]);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let screen = Screen::watch(fs::File::from(master.try_clone().unwrap()));
        screen.wait_for("30 100");
        rustix::termios::tcsetwinsize(&master, winsize(45, 132)).unwrap();
        screen.wait_for("45 132");
        r.run(&["kill", "tt1", "KILL"]).ok();
        let status = crate::common::wait_bounded(&mut child, Duration::from_secs(60));
        assert_eq!(status, Some(137), "runm run ends with the container");
        r.assert_clean();
    }

    #[test]
    fn a_vm_that_does_not_come_up_is_torn_down() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], true, |_| {});
        let (kernel, initrd) = guest_images();
        // The guest boots but nothing answers: the boot timeout ends it.
        let silent = silent_initramfs(r.tmp.path());
        let r1 = Runm::new()
            .with_env("RUNM_KERNEL", &kernel)
            .with_env("RUNM_INITRD", &silent)
            .with_env("RUNM_BOOT_TIMEOUT", "5");
        r1.run(&["--hypervisor", "qemu", "create", "mute", "--bundle", s(&b)])
            .fails_with("the guest agent did not answer Hello in time");
        r1.assert_clean();
        // A kernel QEMU cannot load: the VM exits at once, and the error
        // says so, with what QEMU said.
        let bad = r.tmp.path().join("bad-kernel");
        fs::write(&bad, "not a kernel").unwrap();
        let r2 = Runm::new()
            .with_env("RUNM_KERNEL", &bad)
            .with_env("RUNM_INITRD", &initrd);
        let out = r2
            .run(&["--hypervisor", "qemu", "create", "bad", "--bundle", s(&b)])
            .fails_with("the VM exited");
        assert!(out.stderr.contains("the VM process said"), "{out:?}");
        r2.assert_clean();
        // The workload cannot be started: the agent's error comes back, and
        // the container is gone.
        bundle(&b, &["/no/such/program"], true, |_| {});
        let out = r.run(&["--hypervisor", "qemu", "run", "noexec", "--bundle", s(&b)]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("/no/such/program"), "{out:?}");
        r.assert_clean();
    }

    #[test]
    fn delete_force_and_kill_all_end_a_running_container() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
            true,
            |_| {},
        );
        r.run(&["--hypervisor", "qemu", "run", "-d", "k1", "--bundle", s(&b)])
            .ok();
        r.run(&["kill", "--all", "k1", "KILL"]).ok();
        r.wait_status("k1", "stopped", Duration::from_secs(60));
        r.run(&["delete", "k1"]).ok();
        r.assert_clean();
        r.run(&["--hypervisor", "qemu", "run", "-d", "k2", "--bundle", s(&b)])
            .ok();
        assert_eq!(r.state("k2")["status"], "running");
        r.run(&["delete", "--force", "k2"]).ok();
        r.assert_clean();
        // A created container is deleted without --force (its VM is torn down).
        r.run(&["--hypervisor", "qemu", "create", "k3", "--bundle", s(&b)])
            .ok();
        r.run(&["delete", "k3"]).ok();
        r.assert_clean();
    }
}
