//! The project's guest kernel booted by the `runm-vmm` binary on this host's
//! KVM, and the binary's answers to bad input.
//!
//! Builds nothing of the workspace: it runs the runm-vmm found at `$RUNM_VMM`,
//! else `target/<profile>/runm-vmm` (the test command builds it first). The
//! guest kernel is `$RUNM_KERNEL`, else `guest-kernel-config/build.sh`'s
//! (cached; minutes the first time). The initramfs is made here: a static
//! busybox (Debian's busybox-static, which the setup installs) and an `/init`
//! that prints a marker and reboots (`test_support::vmm`).
//!
//! On a PVM host (`/sys/module/kvm_pvm`) a stock guest kernel runs through
//! KVM's instruction emulator: it reaches `Run /init` after a minute or more,
//! and its first user-space `syscall` faults, so init dies and the kernel
//! panics. There the boot test asserts exactly that outcome; on hardware KVM
//! it asserts the marker from init and a clean exit.

#[cfg(test)]
mod boot {
    use std::time::{Duration, Instant};

    use test_support::*;
    use vm_spec::HostKvm;

    /// How long the guest may take to get to init and end. Generous: on PVM a
    /// stock kernel takes one to two minutes to `Run /init`, more on a busy host.
    fn boot_bound() -> Duration {
        secs_from_env("RUNM_BOOT_TIMEOUT_SECS", 600)
    }

    /// On hardware KVM: 2 vCPUs, banner, both CPUs up, init runs. On PVM, 2-vCPU
    /// guests sometimes stall for good after bringing both CPUs up (an RCU
    /// stall on CPU 0 around "sched_clock: Marking stable", seen in about one
    /// boot in three under PVM's instruction emulation, never on hardware KVM),
    /// so there this boot uses 1 vCPU to reach `Run /init`, and
    /// `sigterm_tears_the_vm_down` asserts that 2 vCPUs come up.
    #[test]
    fn guest_kernel_boots_to_init() {
        let _one = one_guest_at_a_time();
        let vcpus = if HostKvm::detect().is_pvm() { 1 } else { 2 };
        let vcpus_arg = vcpus.to_string();
        let smp_line = if vcpus == 1 {
            "smp: Brought up 1 node, 1 CPU".to_string()
        } else {
            format!("smp: Brought up 1 node, {vcpus} CPUs")
        };
        let vmlinux = guest_kernel().expect("the guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let initrd = initramfs(dir.path());
        let log = dir.path().join("console.log");
        let console = format!("file:{}", log.display());
        let started = Instant::now();
        let mut vmm = Vmm::spawn(
            dir.path(),
            &[
                "--kernel",
                vmlinux.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "--vcpus",
                &vcpus_arg,
                "--mem-mib",
                "128",
                "--console",
                &console,
            ],
        );
        let bound = boot_bound();
        let Some(status) = vmm.wait_for(bound) else {
            let text = read_console(&log);
            drop(vmm); // kills it
            panic!(
                "runm-vmm did not end within {bound:?} (RUNM_BOOT_TIMEOUT_SECS); \
                 console so far:\n{}",
                tail(&text, 30)
            );
        };
        let elapsed = started.elapsed();
        let text = read_console(&log);
        let stderr = vmm.stderr();
        let context = format!(
            "runm-vmm ended with {status} after {elapsed:?}\nstderr:\n{stderr}\nconsole (end):\n{}",
            tail(&text, 25)
        );
        assert!(text.contains("Linux version 6.12"), "no banner\n{context}");
        assert!(
            text.contains(&smp_line),
            "the guest did not bring up the {vcpus} vCPU(s) it was given\n{context}"
        );
        assert!(
            text.contains("Run /init as init process"),
            "the kernel did not start /init\n{context}"
        );
        assert!(!stderr.contains(RUST_PANIC), "{context}");

        if HostKvm::detect().is_pvm() {
            // Guest user space cannot run on PVM: init dies at its first
            // syscall, the kernel panics, and runm-vmm says so with status 2.
            assert!(
                text.contains("Kernel panic - not syncing: Attempted to kill init!"),
                "expected init to die on this PVM host\n{context}"
            );
            assert_eq!(status.code(), Some(2), "{context}");
            assert!(
                stderr.contains(
                    "runm-vmm: guest kernel panicked: Kernel panic - not syncing: Attempted to kill init!"
                ),
                "{context}"
            );
            assert!(
                !text.contains(INIT_MARKER),
                "init printed its marker: user space ran on PVM, update this test\n{context}"
            );
            eprintln!("booted to init in {elapsed:?} (PVM-emulated, not a performance figure)");
        } else {
            assert!(
                text.contains(INIT_MARKER),
                "init did not print its marker\n{context}"
            );
            assert_eq!(status.code(), Some(0), "{context}");
        }
    }

    /// All four virtio devices under the real guest drivers: the kernel
    /// probes them, configures eth0 from `ip=`, and mounts its root from the
    /// virtio-blk ext4 image; the VMM logs each driver's activation (the only
    /// trace of vsock and rng, whose drivers print nothing). The tap lives in
    /// a network namespace of the test's own.
    #[test]
    fn guest_kernel_probes_virtio_devices_and_mounts_its_root_disk() {
        let _one = one_guest_at_a_time();
        let vmlinux = guest_kernel().expect("the guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let disk = ext4_root(dir.path());
        let uds = dir.path().join("vsock.sock");
        let log = dir.path().join("console.log");
        let console = format!("file:{}", log.display());
        let disk_arg = disk.to_str().unwrap().to_string();
        let vsock_arg = format!("3,{}", uds.display());
        let cmdline = format!(
            "{} root=/dev/vda rw ip=10.0.2.15::10.0.2.1:255.255.255.0::eth0:off",
            vm_spec::cmdline::default_cmdline()
        );
        let mut vmm = Vmm::spawn_in_new_netns(
            dir.path(),
            &[
                "--kernel",
                vmlinux.to_str().unwrap(),
                "--cmdline",
                &cmdline,
                "--mem-mib",
                "128",
                "--disk",
                &disk_arg,
                "--net",
                "tap0,02:00:00:00:00:05",
                "--vsock",
                &vsock_arg,
                "--rng",
                "--console",
                &console,
                "--log-level",
                "info",
            ],
        );
        let bound = boot_bound();
        let Some(status) = vmm.wait_for(bound) else {
            let text = read_console(&log);
            drop(vmm);
            panic!(
                "runm-vmm did not end within {bound:?}; console so far:\n{}",
                tail(&text, 30)
            );
        };
        let text = read_console(&log);
        let stderr = vmm.stderr();
        let context = format!(
            "runm-vmm ended with {status}\nstderr:\n{}\nconsole (end):\n{}",
            tail(&stderr, 20),
            tail(&text, 25)
        );
        assert_eq!(
            text.matches("virtio-mmio: Registering device").count(),
            4,
            "the kernel did not see four virtio-mmio devices\n{context}"
        );
        assert!(
            text.contains("[vda] 65536 512-byte logical blocks"),
            "no vda\n{context}"
        );
        assert!(
            text.contains(
                "device=eth0, hwaddr=02:00:00:00:00:05, ipaddr=10.0.2.15, mask=255.255.255.0"
            ),
            "eth0 not configured by ip=\n{context}"
        );
        assert!(
            text.contains("VFS: Mounted root (ext4 filesystem)"),
            "root not mounted from the virtio-blk disk\n{context}"
        );
        assert!(text.contains("Run /sbin/init as init process"), "{context}");
        for dev in ["block", "net", "vsock", "rng"] {
            assert!(
                stderr.contains(&format!("virtio-mmio {dev}: driver activated the device")),
                "the guest's {dev} driver did not activate its device\n{context}"
            );
        }
        assert!(!stderr.contains(RUST_PANIC), "{context}");
        assert!(!uds.exists(), "the vsock socket was left behind\n{context}");
        if HostKvm::detect().is_pvm() {
            assert_eq!(status.code(), Some(2), "init dies on PVM\n{context}");
        } else {
            assert!(text.contains(INIT_MARKER), "{context}");
            assert_eq!(status.code(), Some(0), "{context}");
        }
    }

    /// A 2-vCPU guest brings both CPUs up (the MP table and the APs' start-up
    /// work), then SIGTERM tears the busy VM down: exit 128 + 15, said on stderr.
    #[test]
    fn sigterm_tears_the_vm_down() {
        let _one = one_guest_at_a_time();
        let vmlinux = guest_kernel().expect("the guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let initrd = initramfs(dir.path());
        let log = dir.path().join("console.log");
        let console = format!("file:{}", log.display());
        let mut vmm = Vmm::spawn(
            dir.path(),
            &[
                "--kernel",
                vmlinux.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "--vcpus",
                "2",
                "--console",
                &console,
            ],
        );
        // Both vCPUs up: on PVM that takes 10-60 s of emulated boot.
        let bound = boot_bound();
        let deadline = Instant::now() + bound;
        while !read_console(&log).contains("smp: Brought up 1 node, 2 CPUs") {
            if let Some(s) = vmm.poll() {
                panic!(
                    "runm-vmm ended ({s}) before the banner\nstderr:\n{}",
                    vmm.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "2 CPUs not brought up within {bound:?}; console:\n{}",
                tail(&read_console(&log), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            read_console(&log).contains("Linux version 6.12"),
            "no banner"
        );
        vmm.signal(libc::SIGTERM);
        let teardown = Duration::from_secs(15);
        let sent = Instant::now();
        let status = vmm
            .wait_for(teardown)
            .unwrap_or_else(|| panic!("runm-vmm did not end within {teardown:?} of SIGTERM"));
        let stderr = vmm.stderr();
        assert_eq!(
            status.code(),
            Some(143),
            "exit status 128 + 15 (an exit, not a death by the signal): {status}\n{stderr}"
        );
        assert!(
            stderr.contains("runm-vmm: stopped by signal 15"),
            "stderr: {stderr}"
        );
        assert!(!stderr.contains(RUST_PANIC), "stderr: {stderr}");
        eprintln!("SIGTERM to exit: {:?}", sent.elapsed());
    }

    /// `/proc/<pid>/status` as (key, value) pairs.
    fn status_of(path: &std::path::Path) -> std::collections::HashMap<String, String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Every path under `root`, relative to it.
    fn tree(root: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let e = e.unwrap();
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
                if e.file_type().unwrap().is_dir() {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// The jail as the host sees it while a guest boots: the VMM runs as PID 1
    /// of its own PID namespace under a waiting parent, as the jail's uid/gid
    /// with no capabilities, no_new_privs and a seccomp filter on every
    /// thread, in its own mount namespace whose root holds only the vsock
    /// socket's directory, with its resource limits; SIGTERM to the parent
    /// tears it down with the usual status and leaves the jail directory empty.
    #[test]
    fn jailed_vmm_runs_unprivileged_filtered_and_alone() {
        const UID: u32 = 4242;
        let _one = one_guest_at_a_time();
        let vmlinux = guest_kernel().expect("the guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let initrd = initramfs(dir.path());
        let jail = dir.path().join("jail");
        std::fs::create_dir(&jail).unwrap();
        // The socket's directory belongs to the jail's user, as runm would
        // arrange, so the VMM can connect to and remove sockets there.
        let vsock_dir = dir.path().join("vsock");
        std::fs::create_dir(&vsock_dir).unwrap();
        std::os::unix::fs::chown(&vsock_dir, Some(UID), Some(UID)).unwrap();
        let uds = vsock_dir.join("v.sock");
        let log = dir.path().join("console.log");
        let console = format!("file:{}", log.display());
        let vsock = format!("3,{}", uds.display());
        let id = UID.to_string();
        let mut vmm = Vmm::spawn(
            dir.path(),
            &[
                "--kernel",
                vmlinux.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "--console",
                &console,
                "--vsock",
                &vsock,
                "--rng",
                "--jail-root",
                jail.to_str().unwrap(),
                "--jail-uid",
                &id,
                "--jail-gid",
                &id,
            ],
        );
        let parent = vmm.child.id();
        // Wait for the jailed child to run the guest: its threads filtered
        // and the kernel's banner on the console.
        let deadline = Instant::now() + boot_bound();
        let child = loop {
            if let Some(s) = vmm.poll() {
                panic!("runm-vmm ended ({s}) early\nstderr:\n{}", vmm.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the jailed guest did not print its banner in time; console:\n{}\nstderr:\n{}",
                tail(&read_console(&log), 20),
                vmm.stderr()
            );
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                let tasks = std::path::PathBuf::from(format!("/proc/{pid}/task"));
                let names: Vec<String> = std::fs::read_dir(&tasks)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| {
                                std::fs::read_to_string(e.path().join("comm")).unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let running = names.iter().any(|n| n.trim() == "event-loop");
                if running && read_console(&log).contains("Linux version") {
                    break pid.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let proc_dir = std::path::PathBuf::from(format!("/proc/{child}"));
        let st = status_of(&proc_dir.join("status"));
        let ids = format!("{UID}\t{UID}\t{UID}\t{UID}");
        assert_eq!(st["Uid"], ids, "{st:?}");
        assert_eq!(st["Gid"], ids, "{st:?}");
        assert_eq!(st["Groups"], "", "no supplementary groups");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(st[cap], "0000000000000000", "{cap}: {st:?}");
        }
        assert_eq!(st["NoNewPrivs"], "1");
        let nspid: Vec<&str> = st["NSpid"].split_whitespace().collect();
        assert_eq!(nspid.len(), 2, "a PID namespace of its own: {nspid:?}");
        assert_eq!(nspid[1], "1", "PID 1 there: {nspid:?}");
        // Every thread, vCPUs and event loop included, runs under a filter.
        let mut threads = Vec::new();
        for t in std::fs::read_dir(proc_dir.join("task")).unwrap() {
            let t = t.unwrap().path();
            let comm = std::fs::read_to_string(t.join("comm")).unwrap();
            let ts = status_of(&t.join("status"));
            if comm.trim().starts_with("kvm-") {
                continue; // KVM's own kernel worker, not a user thread
            }
            assert_eq!(ts["Seccomp"], "2", "thread {}: {ts:?}", comm.trim());
            threads.push(comm.trim().to_string());
        }
        threads.sort();
        assert_eq!(threads, ["event-loop", "runm-vmm", "vcpu0"]);
        for ns in ["mnt", "pid"] {
            let theirs = std::fs::read_link(proc_dir.join("ns").join(ns)).unwrap();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert_ne!(theirs, ours, "its own {ns} namespace");
        }
        let limits = std::fs::read_to_string(proc_dir.join("limits")).unwrap();
        let limit = |name: &str| {
            limits
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().rev().nth(1).unwrap_or("").to_string())
                .unwrap_or_default()
        };
        assert_eq!(limit("Max open files"), "1024", "{limits}");
        // RLIMIT_FSIZE: room for the 1 MiB console file and for the stderr
        // file this test gives it (its size, a console's and a log's worth).
        let fsize: u64 = limit("Max file size")
            .parse()
            .unwrap_or_else(|_| panic!("RLIMIT_FSIZE is set, not unlimited: {limits}"));
        assert!(
            (1 << 20..=4 << 20).contains(&fsize),
            "RLIMIT_FSIZE {fsize}: {limits}"
        );
        // The jail's root holds the way to the vsock socket and nothing else.
        let inside = tree(&proc_dir.join("root"));
        let rel = uds.strip_prefix("/").unwrap();
        let expected: Vec<std::path::PathBuf> = rel
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(std::path::Path::to_path_buf)
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(inside, expected, "the jail holds only the listed paths");
        assert!(
            std::fs::read_dir(&jail).unwrap().next().is_none(),
            "the host's jail directory stays empty"
        );

        vmm.signal(libc::SIGTERM);
        let status = vmm
            .wait_for(Duration::from_secs(30))
            .expect("the jailed VMM ended after SIGTERM to its parent");
        let stderr = vmm.stderr();
        assert_eq!(status.code(), Some(143), "{status}\n{stderr}");
        assert!(stderr.contains("stopped by signal 15"), "{stderr}");
        assert!(!stderr.contains(RUST_PANIC), "{stderr}");
        assert!(
            !std::path::Path::new(&format!("/proc/{child}")).exists(),
            "the jailed child is gone"
        );
        assert!(std::fs::read_dir(&jail).unwrap().next().is_none());
        assert!(!uds.exists(), "the VMM removed its socket on the way out");
    }
}

#[cfg(test)]
mod bad_input {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use test_support::*;

    /// Runs runm-vmm with `args` in `dir` and checks the common promise of bad
    /// input: a non-zero exit within seconds, no panic, and exactly one line on
    /// stderr, `runm-vmm: error: ...`, that contains `expect`. Returns the line.
    fn refuses(dir: &Path, args: &[&str], expect: &str) -> String {
        let mut vmm = Vmm::spawn(dir, args);
        let status = vmm
            .wait_for(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("runm-vmm {args:?} did not end within 20 s"));
        let stderr = vmm.stderr();
        assert_eq!(
            status.code(),
            Some(1),
            "runm-vmm {args:?}: {status}\n{stderr}"
        );
        assert!(!stderr.contains(RUST_PANIC), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "runm-vmm {args:?}: expected one error line, got:\n{stderr}"
        );
        assert!(
            lines[0].starts_with("runm-vmm: error: "),
            "{args:?}: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(expect),
            "{args:?}: expected '{expect}' in: {}",
            lines[0]
        );
        lines[0].to_string()
    }

    /// A work directory with a file that is not a kernel, a console path that
    /// must never be created, and nothing else.
    struct Work {
        dir: tempfile::TempDir,
    }

    impl Work {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // 64 KiB of pseudo-random bytes: not ELF, no bzImage header.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let junk: Vec<u8> = (0..65536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(dir.path().join("input-junk-kernel"), junk).unwrap();
            Work { dir }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn s(&self, name: &str) -> String {
            self.path(name).display().to_string()
        }
        fn console_arg(&self) -> String {
            format!("file:{}", self.s("console.log"))
        }
        /// Asserts the failed run left nothing but what the test put there
        /// (its inputs are named `input-*`).
        fn assert_clean(&self) {
            let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "runm-vmm.stderr" && !n.starts_with("input-"))
                .collect();
            names.sort();
            assert!(names.is_empty(), "left behind: {names:?}");
        }
        /// `--config` with a file naming the junk kernel and the console
        /// plus the JSON member `member`, refused with `expect` in the error
        /// line, leaving nothing behind.
        fn config_refused(&self, member: &str, expect: &str) {
            let cfg = self.path("input-vm.json");
            let json = format!(
                r#"{{"kernel": "{}", "console": {{"file": "{}"}}, {member}}}"#,
                self.s("input-junk-kernel"),
                self.s("console.log")
            );
            std::fs::write(&cfg, json).unwrap();
            refuses(
                self.dir.path(),
                &["--config", cfg.to_str().unwrap()],
                expect,
            );
            self.assert_clean();
        }
        /// `--kernel KERNEL --console file:...` plus `extra`, refused
        /// with `expect` in the error line, leaving nothing behind.
        fn run_with(&self, kernel: &str, extra: &[&str], expect: &str) -> String {
            let console = self.console_arg();
            let mut args = vec!["--kernel", kernel, "--console", &console];
            args.extend_from_slice(extra);
            let line = refuses(self.dir.path(), &args, expect);
            self.assert_clean();
            line
        }
    }

    #[test]
    fn missing_kernel() {
        let w = Work::new();
        let k = w.s("no-such-vmlinux");
        let line = w.run_with(&k, &[], "kernel");
        assert!(line.contains("no-such-vmlinux"), "{line}");
        assert!(line.contains("No such file"), "{line}");
    }

    #[test]
    fn kernel_that_is_not_a_kernel() {
        // Found only when loading: after KVM, memory and the console were set up.
        let w = Work::new();
        let line = w.run_with(&w.s("input-junk-kernel"), &[], "kernel");
        assert!(line.contains("input-junk-kernel"), "names the file: {line}");
    }

    #[test]
    fn kernel_that_is_a_directory() {
        let w = Work::new();
        std::fs::create_dir(w.path("input-vmlinux.d")).unwrap();
        w.run_with(&w.s("input-vmlinux.d"), &[], "not a regular file");
        std::fs::remove_dir(w.path("input-vmlinux.d")).unwrap();
    }

    #[test]
    fn zero_memory() {
        let w = Work::new();
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--mem-mib", "0"],
            "memory size is 0",
        );
    }

    #[test]
    fn memory_beyond_the_host() {
        let w = Work::new();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib = |key: &str| -> u64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
        };
        let host_mib = (kib("MemTotal:") + kib("SwapTotal:")) / 1024;
        let just_over = (host_mib + 1024).to_string();
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--mem-mib", &just_over],
            "more than this host has",
        );
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--mem-mib", &u64::MAX.to_string()],
            "more than this host has",
        );
    }

    #[test]
    fn zero_vcpus() {
        let w = Work::new();
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--vcpus", "0"],
            "vcpu count is 0",
        );
    }

    #[test]
    fn too_many_vcpus() {
        let w = Work::new();
        // 255 is beyond what runm-vmm's MP table and IOAPIC layout describe
        // (254); KVM on x86 allows more, so that is the limit met first.
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--vcpus", "255"],
            "vcpu count 255",
        );
    }

    #[test]
    fn vcpu_count_that_is_not_a_u8_is_a_usage_error() {
        let w = Work::new();
        let console = w.console_arg();
        let mut vmm = Vmm::spawn(
            w.dir.path(),
            &["--kernel", "k", "--vcpus", "256", "--console", &console],
        );
        let status = vmm.wait_for(Duration::from_secs(20)).expect("ends");
        let stderr = vmm.stderr();
        assert_eq!(status.code(), Some(2), "clap's usage error: {stderr}");
        assert!(stderr.contains("--vcpus"), "{stderr}");
        assert!(!stderr.contains(RUST_PANIC), "{stderr}");
        w.assert_clean();
    }

    #[test]
    fn missing_or_unreadable_initrd() {
        let w = Work::new();
        let missing = w.s("no-such-initrd");
        let line = w.run_with(&w.s("input-junk-kernel"), &["--initrd", &missing], "initrd");
        assert!(line.contains("no-such-initrd"), "{line}");
        std::fs::create_dir(w.path("input-initrd.d")).unwrap();
        w.run_with(
            &w.s("input-junk-kernel"),
            &["--initrd", &w.s("input-initrd.d")],
            "not a regular file",
        );
        std::fs::remove_dir(w.path("input-initrd.d")).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Permission bits only stop a non-root user.
            use std::os::unix::fs::PermissionsExt;
            let p = w.path("input-secret-initrd");
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
            w.run_with(
                &w.s("input-junk-kernel"),
                &["--initrd", &w.s("input-secret-initrd")],
                "Permission denied",
            );
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn malformed_config_file() {
        let w = Work::new();
        let cfg = w.path("input-vm.json");
        std::fs::write(&cfg, "{ \"kernel\": ").unwrap();
        let line = refuses(
            w.dir.path(),
            &["--config", cfg.to_str().unwrap()],
            "malformed config file",
        );
        assert!(line.contains("input-vm.json"), "{line}");
        w.assert_clean();
    }

    #[test]
    fn unknown_config_field() {
        Work::new().config_refused(r#""memory_mb": 64"#, "unknown field `memory_mb`");
    }

    #[test]
    fn invalid_value_in_config_file() {
        // Valid JSON, a valid field, a value validation refuses: the console
        // named in the same file must not be created.
        Work::new().config_refused(r#""vcpus": 0"#, "vcpu count is 0");
    }

    #[test]
    fn missing_config_file() {
        let w = Work::new();
        let line = refuses(
            w.dir.path(),
            &["--config", &w.s("no-such.json")],
            "cannot read config file",
        );
        assert!(line.contains("no-such.json"), "{line}");
        w.assert_clean();
    }

    #[test]
    fn not_a_kernel_in_an_existing_console_file_keeps_that_file() {
        // A console file that was there before the run is the caller's: a
        // failed run must not delete it (only one it created itself).
        let w = Work::new();
        std::fs::write(w.path("console.log"), b"earlier run\n").unwrap();
        let console = w.console_arg();
        refuses(
            w.dir.path(),
            &[
                "--kernel",
                &w.s("input-junk-kernel"),
                "--mem-mib",
                "64",
                "--console",
                &console,
            ],
            "kernel",
        );
        assert_eq!(
            std::fs::read(w.path("console.log")).unwrap(),
            b"earlier run\n"
        );
    }

    #[test]
    fn binary_is_found() {
        // The other tests spawn it; this one says plainly where it came from.
        let p = runm_vmm();
        let out = Command::new(&p).arg("--version").output().unwrap();
        assert!(out.status.success(), "{} --version", p.display());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("runm-vmm "));
    }

    #[test]
    fn bad_jail_options_are_refused_before_anything_is_made() {
        let w = Work::new();
        std::fs::create_dir(w.path("input-jail")).unwrap();
        let jail = w.s("input-jail");
        let k = w.s("input-junk-kernel");
        let with = |root: &str, uid: &str, gid: &str| -> Vec<String> {
            ["--jail-root", root, "--jail-uid", uid, "--jail-gid", gid]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let run = |extra: Vec<String>, expect: &str| {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            w.run_with(&k, &extra, expect);
        };
        run(with(&jail, "0", "1000"), "must not run as root");
        run(with(&jail, "1000", "0"), "must not run as root");
        run(
            with("relative/jail", "1000", "1000"),
            "not an absolute path",
        );
        run(with(&w.s("no-such-jail"), "1000", "1000"), "no-such-jail");
        run(with(&k, "1000", "1000"), "not a directory");
        let mut few = with(&jail, "1000", "1000");
        few.extend(["--jail-max-open-files".into(), "3".into()]);
        run(few, "too few");
        std::fs::write(w.path("input-jail/stray"), b"").unwrap();
        run(with(&jail, "1000", "1000"), "is not empty");
        assert_eq!(
            std::fs::read_dir(w.path("input-jail")).unwrap().count(),
            1,
            "the jail directory was left as it was"
        );
    }
}
