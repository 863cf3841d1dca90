//! End to end: the real guest kernel boots the agent's initramfs under QEMU's
//! software emulation (`-M microvm -accel tcg`, never KVM: these tests must
//! mean the same on every host), with a busybox root file system on
//! virtio-blk and the agent's channel on a virtio-serial port whose other end
//! is a Unix socket the test speaks the protocol on.
//!
//! Needs `qemu-system-x86_64`, `busybox` (static), `mkfs.ext4` and `cpio`.
//! The guest kernel and the initramfs are `$RUNM_KERNEL` and `$RUNM_INITRD`,
//! else built on first use by `guest-kernel-config/build.sh` and
//! `guest-agent/build-initramfs.sh` (both cached). A missing tool fails the
//! test with the reason: it never passes by skipping.

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::ErrorKind;
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use guest_agent::proto::{
        self, ContainerSpec, Frame, Message, MountSpec, ProcessSpec, Rlimit, RootSpec, Stream,
        INIT_PROCESS, PROTOCOL_VERSION,
    };
    use test_support::images::{self, Applets};
    use vm_spec::{AgentPort, Console, DiskConfig, QemuAccel, QemuMicrovm};

    /// Time for one reply, guest boot included (software emulation, shared cores).
    const REPLY_TIMEOUT: Duration = Duration::from_secs(40);
    /// Time for QEMU to exit after the container ended.
    const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

    /// What every VM boots from.
    struct Artifacts {
        vmlinux: PathBuf,
        initrd: PathBuf,
        rootfs: PathBuf,
        _dir: tempfile::TempDir,
    }

    const APPLETS: &[&str] = &[
        "sh", "echo", "cat", "hostname", "id", "pwd", "sleep", "grep", "tty", "stty", "ls", "true",
        "false", "readlink",
    ];

    /// The guest kernel, the agent's initramfs and a busybox root file
    /// system as an ext4 image, made once.
    fn artifacts() -> &'static Artifacts {
        static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
        ARTIFACTS.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let tree = dir.path().join("tree");
            images::busybox_tree(&tree, Applets::Only(APPLETS)).expect("the root file system");
            let rootfs = dir.path().join("rootfs.img");
            images::ext4_image(&tree, &rootfs, "16M", "root").expect("the root image");
            Artifacts {
                vmlinux: test_support::guest_kernel().expect("the guest kernel"),
                initrd: test_support::agent_initramfs().expect("the agent initramfs"),
                rootfs,
                _dir: dir,
            }
        })
    }

    /// Everything a test saw from its processes.
    #[derive(Default, Debug)]
    struct Seen {
        stdout: HashMap<u32, Vec<u8>>,
        stderr: HashMap<u32, Vec<u8>>,
        exited: HashMap<u32, i32>,
        /// The container each exit named (set for a container's init).
        stopped: HashMap<u32, Option<String>>,
    }

    impl Seen {
        fn out(&self, id: u32) -> String {
            String::from_utf8_lossy(self.stdout.get(&id).map_or(&[][..], |v| v)).into_owned()
        }
        fn err(&self, id: u32) -> String {
            String::from_utf8_lossy(self.stderr.get(&id).map_or(&[][..], |v| v)).into_owned()
        }
    }

    /// A running guest and the test's end of its agent channel.
    struct Vm {
        qemu: Child,
        sock: UnixStream,
        dir: tempfile::TempDir,
        seen: Seen,
        _one: std::sync::MutexGuard<'static, ()>,
    }

    impl Vm {
        fn boot() -> Vm {
            Vm::boot_with_disks(1)
        }

        /// A guest with `disks` copies of the root image (vda, vdb, ...).
        fn boot_with_disks(disks: usize) -> Vm {
            let art = artifacts();
            let one = test_support::one_guest_at_a_time();
            let dir = tempfile::tempdir().expect("temporary directory");
            // Each guest writes to its roots: give it its own copies.
            let disks = (0..disks)
                .map(|n| {
                    let disk = dir.path().join(format!("rootfs{n}.img"));
                    std::fs::copy(&art.rootfs, &disk).expect("copying the root image");
                    DiskConfig {
                        path: disk,
                        read_only: false,
                    }
                })
                .collect();
            let sock_path = dir.path().join("agent.sock");
            let console = dir.path().join("console.log");
            let qemu_log = std::fs::File::create(dir.path().join("qemu.log")).expect("qemu log");
            // Always TCG: these tests must mean the same on every host.
            let mut vm = QemuMicrovm::new(QemuAccel::Tcg, &art.vmlinux);
            vm.mem_mib = 256;
            vm.initrd = Some(art.initrd.clone());
            vm.console = Console::File(console);
            vm.disks = disks;
            vm.agent = Some(AgentPort {
                socket: sock_path.clone(),
                name: proto::AGENT_SERIAL_PORT_NAME.into(),
            });
            let qemu = Command::new("qemu-system-x86_64")
                .args(vm.args())
                .stdin(Stdio::null())
                .stdout(qemu_log.try_clone().expect("qemu log"))
                .stderr(qemu_log)
                .spawn()
                .expect("starting qemu-system-x86_64 (apt-get install qemu-system-x86)");
            let mut vm_qemu = Some(qemu);
            let start = Instant::now();
            let sock = loop {
                match UnixStream::connect(&sock_path) {
                    Ok(s) => break s,
                    Err(_) if start.elapsed() < Duration::from_secs(15) => {
                        if let Some(Ok(Some(status))) = vm_qemu.as_mut().map(Child::try_wait) {
                            panic!(
                                "qemu exited early ({status}): {}",
                                std::fs::read_to_string(dir.path().join("qemu.log"))
                                    .unwrap_or_default()
                            );
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("connecting to {}: {e}", sock_path.display()),
                }
            };
            Vm {
                qemu: vm_qemu.take().expect("qemu was started"),
                sock,
                dir,
                seen: Seen::default(),
                _one: one,
            }
        }

        /// The end of the guest console and QEMU's own output, for failures.
        fn logs(&self) -> String {
            let console =
                std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
            let tail = test_support::tail(&console, 40);
            let qemu =
                std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default();
            format!("\n--- guest console (last 40 lines) ---\n{tail}\n--- qemu ---\n{qemu}")
        }

        fn fail(&self, what: &str) -> ! {
            panic!("{what}{}", self.logs())
        }

        fn send(&mut self, m: Message) {
            if let Err(e) = proto::send(&mut self.sock, m) {
                self.fail(&format!("sending to the agent: {e}"));
            }
        }

        fn send_stdin(&mut self, process_id: u32, data: &[u8]) {
            let f = Frame::Data {
                process_id,
                stream: Stream::Stdin,
                data: data.to_vec(),
            };
            if let Err(e) = proto::write_frame(&mut self.sock, &f) {
                self.fail(&format!("sending stdin: {e}"));
            }
        }

        /// The next control message; data frames on the way are collected.
        fn recv(&mut self) -> Message {
            let deadline = Instant::now() + REPLY_TIMEOUT;
            loop {
                if let Some(m) = self.next_frame(deadline) {
                    return m;
                }
            }
        }

        /// Collects output until `process_id` wrote `lines` lines; no
        /// control message may come meanwhile.
        fn wait_output(&mut self, process_id: u32, lines: usize) {
            let deadline = Instant::now() + REPLY_TIMEOUT;
            while self.seen.out(process_id).lines().count() < lines {
                if let Some(m) = self.next_frame(deadline) {
                    self.fail(&format!(
                        "waiting for the output of {process_id}: got {m:?}"
                    ));
                }
            }
        }

        /// Reads one frame: a control message is returned, data collected.
        fn next_frame(&mut self, deadline: Instant) -> Option<Message> {
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.fail("no message from the agent in time");
                }
                self.sock
                    .set_read_timeout(Some(left))
                    .expect("socket timeout");
                match proto::read_frame(&mut self.sock) {
                    Ok(Some(Frame::Control(m))) => {
                        if let Message::Exited {
                            process_id,
                            status,
                            ref container,
                        } = *m
                        {
                            self.seen.exited.insert(process_id, status);
                            self.seen.stopped.insert(process_id, container.clone());
                        }
                        Some(*m)
                    }
                    Ok(Some(Frame::Data {
                        process_id,
                        stream,
                        data,
                    })) => {
                        let buf = match stream {
                            Stream::Stdout => &mut self.seen.stdout,
                            Stream::Stderr => &mut self.seen.stderr,
                            Stream::Stdin => self.fail("the agent sent stdin data"),
                        };
                        buf.entry(process_id).or_default().extend_from_slice(&data);
                        None
                    }
                    Ok(None) => self.fail("the agent closed the channel"),
                    Err(proto::ProtoError::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        self.fail("no message from the agent in time")
                    }
                    Err(e) => self.fail(&format!("reading from the agent: {e}")),
                }
            }
        }

        /// Sends `m` and returns the reply.
        fn request(&mut self, m: Message) -> Message {
            self.send(m);
            self.recv()
        }

        fn expect(&mut self, m: Message, want: &Message) {
            let what = format!("{m:?}");
            let got = self.request(m);
            if &got != want {
                self.fail(&format!("{what}: expected {want:?}, got {got:?}"));
            }
        }

        fn hello(&mut self) {
            match self.request(Message::Hello {
                version: PROTOCOL_VERSION,
            }) {
                Message::Ready { version, kernel } if version == PROTOCOL_VERSION => {
                    assert!(kernel.starts_with("6."), "kernel release {kernel:?}");
                }
                other => self.fail(&format!("hello: got {other:?}")),
            }
        }

        /// Expects `Started` for `process_id`; returns the guest pid.
        fn started(&mut self, m: Message, process_id: u32) -> u32 {
            match self.request(m) {
                Message::Started {
                    process_id: id,
                    pid,
                } if id == process_id && pid > 1 => pid,
                other => self.fail(&format!("expected Started for {process_id}, got {other:?}")),
            }
        }

        /// Reads messages until `process_id` has exited; returns its status.
        fn wait_exited(&mut self, process_id: u32) -> i32 {
            while !self.seen.exited.contains_key(&process_id) {
                let m = self.recv();
                if !matches!(m, Message::Exited { .. }) {
                    self.fail(&format!("waiting for exit of {process_id}: got {m:?}"));
                }
            }
            self.seen.exited[&process_id]
        }

        /// QEMU must end by itself (the guest resets, -no-reboot exits).
        fn wait_qemu_exit(mut self) {
            let start = Instant::now();
            loop {
                match self.qemu.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            self.fail(&format!("qemu exited with {status}"));
                        }
                        let console = std::fs::read_to_string(self.dir.path().join("console.log"))
                            .unwrap_or_default();
                        assert!(
                            console.contains("reboot: Restarting system"),
                            "the guest did not reset by itself{}",
                            self.logs()
                        );
                        return;
                    }
                    Ok(None) if start.elapsed() < EXIT_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok(None) => self.fail(&format!(
                        "qemu still running {} s after the container ended",
                        EXIT_TIMEOUT.as_secs()
                    )),
                    Err(e) => self.fail(&format!("waiting for qemu: {e}")),
                }
            }
        }
    }

    impl Drop for Vm {
        fn drop(&mut self) {
            // Kill by pid (the Child's own), never by name.
            if let Ok(None) = self.qemu.try_wait() {
                let _ = self.qemu.kill();
                let _ = self.qemu.wait();
            }
        }
    }

    fn process(args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "HOME=/".into()],
            cwd: "/".into(),
            ..ProcessSpec::default()
        }
    }

    fn mount(destination: &str, fstype: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            destination: destination.into(),
            fstype: fstype.into(),
            source: fstype.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The id of the one container of most tests.
    const ID: &str = "e2e";

    /// `Create` of the one container of a guest, as runm sends it.
    fn create(container: Box<ContainerSpec>) -> Message {
        Message::Create {
            container,
            init_process: INIT_PROCESS,
            share_namespaces_with: None,
        }
    }

    fn start() -> Message {
        Message::Start {
            container: ID.into(),
        }
    }

    fn container(process: ProcessSpec) -> Box<ContainerSpec> {
        Box::new(ContainerSpec {
            id: ID.into(),
            hostname: Some("runm-e2e".into()),
            root: RootSpec {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
                source: String::new(),
            },
            mounts: vec![mount("/proc", "proc", &["nosuid", "noexec", "nodev"])],
            process,
            linux: Default::default(),
        })
    }

    #[test]
    fn runs_the_container_process_and_resets_the_guest() {
        let mut vm = Vm::boot();
        vm.hello();
        let mut p = process(&[
            "sh",
            "-c",
            "echo hello; echo err >&2; hostname; id -u; id -G; pwd; echo \"$GREETING\"; \
             ulimit -n; grep NoNewPrivs /proc/self/status; exit 7",
        ]);
        p.uid = 1000;
        p.gid = 1000;
        p.additional_gids = vec![10, 20];
        p.cwd = "/tmp".into();
        p.env.push("GREETING=hi there".into());
        p.rlimits = vec![Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 123,
            hard: 456,
        }];
        p.no_new_privileges = true;
        vm.expect(create(container(p)), &Message::Created);
        vm.started(start(), 0);
        assert_eq!(vm.wait_exited(0), 7, "{:?}{}", vm.seen, vm.logs());
        assert_eq!(
            vm.seen.out(0),
            "hello\nrunm-e2e\n1000\n1000 10 20\n/tmp\nhi there\n123\nNoNewPrivs:\t1\n",
            "{}",
            vm.logs()
        );
        assert_eq!(vm.seen.err(0), "err\n", "{}", vm.logs());
        // No Shutdown: the agent resets the guest by itself after a second.
        vm.wait_qemu_exit();
    }

    #[test]
    fn exec_ps_and_signal_in_a_running_container() {
        let mut vm = Vm::boot();
        vm.hello();
        vm.expect(
            create(container(process(&["sleep", "30"]))),
            &Message::Created,
        );
        let init = vm.started(start(), 0);

        vm.started(
            Message::Exec {
                container: ID.into(),
                process_id: 1,
                process: process(&["sh", "-c", "echo second; hostname; cat /proc/1/comm"]),
            },
            1,
        );
        assert_eq!(vm.wait_exited(1), 0);
        // The container's namespaces: its hostname, and /proc/1 is its own
        // process, not the agent.
        assert_eq!(vm.seen.out(1), "second\nrunm-e2e\nsleep\n", "{}", vm.logs());

        match vm.request(Message::Ps {
            container: ID.into(),
        }) {
            Message::Processes { pids } => assert!(
                pids.contains(&init) && !pids.contains(&1),
                "ps: {pids:?}, init {init}"
            ),
            other => vm.fail(&format!("ps: got {other:?}")),
        }

        vm.started(
            Message::Exec {
                container: ID.into(),
                process_id: 2,
                process: process(&["no-such-command"]),
            },
            2,
        );
        assert_eq!(vm.wait_exited(2), 127);
        assert!(
            vm.seen
                .err(2)
                .contains("executable file not found in $PATH"),
            "stderr: {:?}",
            vm.seen.err(2)
        );

        // Found but not executable: 126, as shells say it.
        vm.started(
            Message::Exec {
                container: ID.into(),
                process_id: 3,
                process: process(&["/tmp"]),
            },
            3,
        );
        assert_eq!(vm.wait_exited(3), 126);
        assert!(
            vm.seen.err(3).contains("\"/tmp\": permission denied"),
            "stderr: {:?}",
            vm.seen.err(3)
        );

        // An unknown id, an id in use: errors, and the agent carries on.
        match vm.request(Message::Signal {
            container: ID.into(),
            process_id: 9,
            signal: 15,
            all: false,
        }) {
            Message::Error { message } => assert!(message.contains("no process"), "{message}"),
            other => vm.fail(&format!("signal to nobody: got {other:?}")),
        }
        vm.started(
            Message::Exec {
                container: ID.into(),
                process_id: 4,
                process: process(&["sleep", "30"]),
            },
            4,
        );
        match vm.request(Message::Exec {
            container: ID.into(),
            process_id: 4,
            process: process(&["true"]),
        }) {
            Message::Error { message } => assert!(message.contains("in use"), "{message}"),
            other => vm.fail(&format!("exec with an id in use: got {other:?}")),
        }

        // One process by id; then every process of the container.
        vm.send(Message::Signal {
            container: ID.into(),
            process_id: 4,
            signal: libc::SIGKILL,
            all: false,
        });
        assert_eq!(vm.wait_exited(4), 137);
        vm.started(
            Message::Exec {
                container: ID.into(),
                process_id: 5,
                process: process(&["sleep", "30"]),
            },
            5,
        );
        vm.send(Message::Signal {
            container: ID.into(),
            process_id: 0,
            signal: libc::SIGTERM,
            all: true,
        });
        assert_eq!(vm.wait_exited(5), 143);
        // The container's process is PID 1 of its namespace: without a
        // handler it ignores SIGTERM, as under runc; SIGKILL ends it.
        vm.send(Message::Signal {
            container: ID.into(),
            process_id: 0,
            signal: libc::SIGKILL,
            all: true,
        });
        assert_eq!(vm.wait_exited(0), 137);
        vm.send(Message::Shutdown);
        vm.wait_qemu_exit();
    }

    #[test]
    fn terminal_process_gets_a_pty_and_stdin() {
        let mut vm = Vm::boot();
        vm.hello();
        let mut p = process(&[
            "sh",
            "-c",
            "tty; echo x > /f; read line; echo \"got $line\"",
        ]);
        p.terminal = true;
        let mut c = container(p);
        // A read-only root: the mounts still go on (their points exist).
        c.root.readonly = true;
        c.mounts
            .push(mount("/dev", "tmpfs", &["nosuid", "mode=755"]));
        c.mounts.push(mount(
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ));
        vm.expect(create(c), &Message::Created);
        vm.started(start(), 0);
        vm.send_stdin(0, b"typed\n");
        assert_eq!(vm.wait_exited(0), 0);
        let out = vm.seen.out(0);
        assert!(out.contains("/dev/pts/0\r\n"), "terminal output {out:?}");
        assert!(out.contains("got typed\r\n"), "terminal output {out:?}");
        assert!(
            out.contains("Read-only file system"),
            "terminal output {out:?}"
        );
        assert!(
            vm.seen.err(0).is_empty(),
            "a terminal has no separate stderr"
        );
        vm.wait_qemu_exit();
    }

    #[test]
    fn host_hang_up_resets_the_guest() {
        let mut vm = Vm::boot();
        vm.hello();
        vm.expect(
            create(container(process(&["sleep", "30"]))),
            &Message::Created,
        );
        vm.started(start(), 0);
        vm.sock
            .shutdown(std::net::Shutdown::Both)
            .expect("closing the channel");
        vm.wait_qemu_exit();
    }

    #[test]
    fn failed_create_is_reported_and_can_be_retried() {
        let mut vm = Vm::boot();
        vm.hello();

        let mut bad = container(process(&["true"]));
        bad.mounts.push(mount("/mnt", "nfs", &[]));
        match vm.request(create(bad)) {
            Message::Error { message } => {
                assert!(
                    message.contains("nfs") && message.contains("/mnt"),
                    "{message}"
                )
            }
            other => vm.fail(&format!("create with nfs: got {other:?}")),
        }

        let mut bad_cwd = process(&["true"]);
        bad_cwd.cwd = "/nowhere".into();
        match vm.request(create(container(bad_cwd))) {
            Message::Error { message } => {
                assert!(message.contains("chdir to /nowhere"), "{message}")
            }
            other => vm.fail(&format!("create with a bad cwd: got {other:?}")),
        }

        match vm.request(start()) {
            Message::Error { .. } => {}
            other => vm.fail(&format!("start without a container: got {other:?}")),
        }

        vm.expect(
            create(container(process(&["/bin/missing"]))),
            &Message::Created,
        );
        vm.started(start(), 0);
        assert_eq!(vm.wait_exited(0), 127);
        assert!(
            vm.seen
                .err(0)
                .contains("\"/bin/missing\": no such file or directory"),
            "stderr: {:?}",
            vm.seen.err(0)
        );
        vm.wait_qemu_exit();
    }

    /// What a container's shell says about itself, one line each: its pid,
    /// hostname, and network, IPC, UTS, PID and mount namespaces.
    const SELF: &str =
        "echo $$; hostname; for n in net ipc uts pid mnt; do readlink /proc/self/ns/$n; done";

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// A pod in one guest: a sandbox container and a member that shares its
    /// network, IPC and UTS namespaces but has its own PID and mount
    /// namespaces and root (another disk). The member ends while the sandbox
    /// runs on, is deleted, and a new one takes its place under the same
    /// id. In a pod the guest waits for the host's `Shutdown`.
    #[test]
    fn pod_members_share_the_sandbox_namespaces_and_are_replaced() {
        let mut vm = Vm::boot_with_disks(2);
        vm.hello();
        let mut sandbox = container(process(&[
            "sh",
            "-c",
            &format!("echo sandbox > /whoami; {SELF}; exec sleep 600"),
        ]));
        sandbox.id = "pod".into();
        sandbox.hostname = Some("runm-pod".into());
        vm.expect(
            Message::Create {
                container: sandbox,
                init_process: INIT_PROCESS,
                share_namespaces_with: None,
            },
            &Message::Created,
        );
        vm.started(
            Message::Start {
                container: "pod".into(),
            },
            INIT_PROCESS,
        );
        vm.wait_output(INIT_PROCESS, 7);

        let member = |init_process: u32, share: &str, script: &str| {
            let mut c = container(process(&["sh", "-c", script]));
            c.id = "m1".into();
            c.hostname = None;
            c.root.device = "/dev/vdb".into();
            Message::Create {
                container: c,
                init_process,
                share_namespaces_with: Some(share.into()),
            }
        };
        match vm.request(member(100, "nope", "true")) {
            Message::Error { message } => assert!(
                message.contains("container \"nope\", which does not exist"),
                "{message}"
            ),
            other => vm.fail(&format!("a member of no sandbox: got {other:?}")),
        }
        vm.expect(
            member(
                100,
                "pod",
                &format!("{SELF}; cat /whoami || echo no-whoami; echo member > /whoami; exit 3"),
            ),
            &Message::Created,
        );
        vm.started(
            Message::Start {
                container: "m1".into(),
            },
            100,
        );
        assert_eq!(vm.wait_exited(100), 3, "{:?}{}", vm.seen, vm.logs());
        assert_eq!(vm.seen.stopped[&100], Some("m1".to_string()));
        let pod = lines(&vm.seen.out(INIT_PROCESS));
        let m1 = lines(&vm.seen.out(100));
        assert_eq!(pod.len(), 7, "sandbox said {pod:?}{}", vm.logs());
        assert_eq!(m1.len(), 8, "member said {m1:?}{}", vm.logs());
        // Each is PID 1 of its own PID namespace, with the pod's hostname.
        assert_eq!(pod[..2], ["1", "runm-pod"]);
        assert_eq!(m1[..2], ["1", "runm-pod"]);
        assert!(
            pod[2].starts_with("net:[") && pod[5].starts_with("pid:["),
            "{pod:?}"
        );
        assert_eq!(
            pod[2..5],
            m1[2..5],
            "network, IPC and UTS namespaces are shared"
        );
        assert_ne!(pod[5], m1[5], "PID namespaces differ");
        assert_ne!(pod[6], m1[6], "mount namespaces differ");
        // Its own root: the sandbox's file is not there.
        assert_eq!(m1[7], "no-whoami");

        // The sandbox runs on, in its own root and PID namespace.
        vm.started(
            Message::Exec {
                container: "pod".into(),
                process_id: 1,
                process: process(&["sh", "-c", "cat /whoami; readlink /proc/1/ns/pid"]),
            },
            1,
        );
        assert_eq!(vm.wait_exited(1), 0);
        assert_eq!(vm.seen.out(1), format!("sandbox\n{}\n", pod[5]));
        assert_eq!(
            vm.seen.stopped[&1], None,
            "an exec process stops no container"
        );

        // The stopped member: nothing runs in it, its id is taken until
        // Delete; the running sandbox is not deleted.
        for (m, says) in [
            (
                Message::Ps {
                    container: "m1".into(),
                },
                "not running",
            ),
            (
                member(101, "pod", "true"),
                "delete it before creating it again",
            ),
            (
                Message::Delete {
                    container: "pod".into(),
                },
                "not stopped",
            ),
        ] {
            match vm.request(m) {
                Message::Error { message } => assert!(message.contains(says), "{message}"),
                other => vm.fail(&format!("expected an error saying {says:?}, got {other:?}")),
            }
        }
        vm.expect(
            Message::Delete {
                container: "m1".into(),
            },
            &Message::Deleted,
        );

        // A new member in its place: the same id, root and namespaces.
        vm.expect(
            member(
                101,
                "pod",
                "echo $$; cat /whoami; hostname; readlink /proc/self/ns/net",
            ),
            &Message::Created,
        );
        vm.started(
            Message::Start {
                container: "m1".into(),
            },
            101,
        );
        assert_eq!(vm.wait_exited(101), 0, "{:?}{}", vm.seen, vm.logs());
        assert_eq!(
            vm.seen.out(101),
            format!("1\nmember\nrunm-pod\n{}\n", pod[2]),
            "{}",
            vm.logs()
        );

        // The sandbox ends too; the guest stays for the host to end it.
        vm.send(Message::Signal {
            container: "pod".into(),
            process_id: INIT_PROCESS,
            signal: libc::SIGKILL,
            all: true,
        });
        assert_eq!(vm.wait_exited(INIT_PROCESS), 137);
        assert_eq!(vm.seen.stopped[&INIT_PROCESS], Some("pod".to_string()));
        std::thread::sleep(Duration::from_secs(3));
        match vm.request(Message::Ps {
            container: "pod".into(),
        }) {
            Message::Error { message } => assert!(message.contains("not running"), "{message}"),
            other => vm.fail(&format!("ps of a stopped sandbox: got {other:?}")),
        }
        vm.send(Message::Shutdown);
        vm.wait_qemu_exit();
    }
}
