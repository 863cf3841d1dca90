//! The project's guest kernel booted by the `runm-vmm` binary on this host's
//! KVM, and the binary's answers to bad input.
//!
//! Builds nothing of the workspace: it runs the runm-vmm found at `$RUNM_VMM`,
//! else `target/<profile>/runm-vmm` (the test command builds it first). The
//! guest kernel comes from `guest-kernel-config/build.sh` (cached; minutes the
//! first time). The initramfs is made here: a static busybox (`/bin/busybox`,
//! Debian's busybox-static, which the setup installs) and an `/init` that
//! prints a marker and reboots.
//!
//! On a PVM host (`/sys/module/kvm_pvm`) a stock guest kernel runs through
//! KVM's instruction emulator: it reaches `Run /init` after a minute or more,
//! and its first user-space `syscall` faults, so init dies and the kernel
//! panics. There the boot test asserts exactly that outcome; on hardware KVM
//! it asserts the marker from init and a clean exit.

#[cfg(test)]
mod common {
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// What a Rust panic prints ("thread 'main' panicked at src/..."), unlike
    /// runm-vmm's report of a guest kernel panic ("guest kernel panicked: ...").
    pub const RUST_PANIC: &str = "panicked at";

    /// Guest boots are slow on PVM and use both cores: one at a time.
    pub static ONE_GUEST: Mutex<()> = Mutex::new(());

    pub fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace")
            .to_path_buf()
    }

    /// `$RUNM_VMM`, else `target/<this profile>/runm-vmm`, else the other
    /// profile's; fails with the command that builds it.
    pub fn runm_vmm() -> PathBuf {
        if let Some(p) = std::env::var_os("RUNM_VMM") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "RUNM_VMM={} is not a file", p.display());
            return p;
        }
        let root = repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| root.join(d))
            .unwrap_or_else(|| root.join("target"));
        let (mine, other) = if cfg!(debug_assertions) {
            ("debug", "release")
        } else {
            ("release", "debug")
        };
        for profile in [mine, other] {
            let p = target.join(profile).join("runm-vmm");
            if p.is_file() {
                return p;
            }
        }
        panic!(
            "no runm-vmm binary under {}/{{debug,release}}: build it first with \
             `cargo build -p vmm --bin runm-vmm` (or set RUNM_VMM)",
            target.display()
        );
    }

    /// The guest kernel's `vmlinux`, built or taken from the cache once per run.
    pub fn guest_vmlinux() -> &'static Path {
        static VMLINUX: OnceLock<PathBuf> = OnceLock::new();
        VMLINUX.get_or_init(|| {
            let script = repo_root().join("guest-kernel-config/build.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}): the guest kernel could not be built",
                script.display(),
                out.status
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .expect("build.sh prints the kernel directory as its last line");
            let vmlinux = PathBuf::from(dir.trim()).join("vmlinux");
            assert!(
                vmlinux.is_file(),
                "build.sh named {}, which has no vmlinux",
                dir.trim()
            );
            vmlinux
        })
    }

    /// Whether this host's KVM is PVM.
    pub fn host_is_pvm() -> bool {
        Path::new("/sys/module/kvm_pvm").is_dir()
    }

    /// A newc ("070701") cpio archive, built in memory: device nodes need no
    /// privilege this way, and nothing outside the test is needed.
    #[derive(Default)]
    pub struct Cpio {
        data: Vec<u8>,
        ino: u32,
    }

    impl Cpio {
        fn pad4(&mut self) {
            self.data.resize(self.data.len().next_multiple_of(4), 0);
        }

        fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
            self.ino += 1;
            let namesize = u32::try_from(name.len() + 1).expect("short name");
            let filesize = u32::try_from(body.len()).expect("file under 4 GiB");
            let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
            let fields = [
                self.ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
            ];
            self.data.extend_from_slice(b"070701");
            for f in fields {
                self.data.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            self.data.extend_from_slice(name.as_bytes());
            self.data.push(0);
            self.pad4();
            self.data.extend_from_slice(body);
            self.pad4();
        }

        pub fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name, 0o040755, (0, 0), &[]);
            self
        }

        pub fn file(&mut self, name: &str, mode: u32, body: &[u8]) -> &mut Self {
            self.entry(name, 0o100000 | mode, (0, 0), body);
            self
        }

        pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
            self.entry(name, 0o020600, (major, minor), &[]);
            self
        }

        pub fn finish(mut self) -> Vec<u8> {
            self.entry("TRAILER!!!", 0, (0, 0), &[]);
            // The kernel reads the archive in 512-byte blocks, as cpio writes it.
            self.data.resize(self.data.len().next_multiple_of(512), 0);
            self.data
        }
    }

    /// What the guest's init prints when it runs.
    pub const INIT_MARKER: &str = "runm-guest-init: hello from user space";

    /// An uncompressed initramfs whose /init (a busybox shell script) prints
    /// [`INIT_MARKER`] and reboots at once.
    pub fn initramfs(dir: &Path) -> PathBuf {
        let busybox = Path::new("/bin/busybox");
        let bin = std::fs::read(busybox).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): the guest's init needs a static busybox; \
                 install Debian's busybox-static (the setup script does)",
                busybox.display()
            )
        });
        assert!(
            bin.starts_with(b"\x7fELF"),
            "{} is not an ELF binary",
            busybox.display()
        );
        let init = format!(
            "#!/bin/busybox sh\n/bin/busybox echo '{INIT_MARKER}'\n/bin/busybox reboot -f\n"
        );
        let mut cpio = Cpio::default();
        cpio.dir("bin")
            .dir("dev")
            .dir("proc")
            .dir("sys")
            .char_dev("dev/console", 5, 1)
            .file("bin/busybox", 0o755, &bin)
            .file("init", 0o755, init.as_bytes());
        let path = dir.join("initramfs.cpio");
        std::fs::write(&path, cpio.finish()).expect("write the initramfs");
        path
    }

    /// A runm-vmm process whose stderr goes to a file (no pipe to fill up) and
    /// that is killed, by its own pid, if the test ends before it does.
    pub struct Vmm {
        pub child: Child,
        pub stderr_path: PathBuf,
        status: Option<ExitStatus>,
    }

    impl Vmm {
        pub fn spawn(dir: &Path, args: &[&str]) -> Self {
            let stderr_path = dir.join("runm-vmm.stderr");
            let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
            let child = Command::new(runm_vmm())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn runm-vmm");
            Vmm {
                child,
                stderr_path,
                status: None,
            }
        }

        /// The exit status if it has ended.
        pub fn poll(&mut self) -> Option<ExitStatus> {
            if self.status.is_none() {
                self.status = self.child.try_wait().expect("wait for runm-vmm");
            }
            self.status
        }

        /// Waits up to `timeout` for it to end by itself.
        pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(s) = self.poll() {
                    return Some(s);
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        pub fn stderr(&self) -> String {
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        }

        /// Sends `sig` to this process only.
        pub fn signal(&self, sig: i32) {
            let pid = i32::try_from(self.child.id()).expect("pid fits");
            // SAFETY: kill(2) on our own child's pid; it has not been reaped
            // (poll() has not seen it end), so the pid is still ours.
            let rc = unsafe { libc::kill(pid, sig) };
            assert_eq!(
                rc,
                0,
                "kill({pid}, {sig}): {}",
                std::io::Error::last_os_error()
            );
        }
    }

    impl Drop for Vmm {
        fn drop(&mut self) {
            if self.poll().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// The console file's text so far (empty if not there yet).
    pub fn read_console(path: &Path) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            let _ = f.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// The last `n` lines of `text`, for failure messages.
    pub fn tail(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A bound from the environment in seconds, or `default`.
    pub fn secs_from_env(var: &str, default: u64) -> Duration {
        Duration::from_secs(
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    }

    #[test]
    fn cpio_entries_follow_the_newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"abc");
        let a = c.finish();
        assert_eq!(&a[..6], b"070701");
        // ino 1, mode 0100755, uid, gid, nlink 1, mtime, filesize 3
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[38..46], b"00000001");
        assert_eq!(&a[54..62], b"00000003");
        assert_eq!(&a[94..102], b"00000005", "namesize counts the NUL");
        // 110-byte header + "init\0" = 115, padded to 116, then the body.
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..119], b"abc");
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert_eq!(trailer, 120 + 110, "the trailer follows the padded body");
        assert_eq!(a.len() % 512, 0);
    }
}

#[cfg(test)]
mod boot {
    use std::time::{Duration, Instant};

    use super::common::*;

    /// How long the guest may take to get to init and end. Generous: on PVM a
    /// stock kernel takes one to two minutes to `Run /init`, more on a busy host.
    fn boot_bound() -> Duration {
        secs_from_env("RUNM_BOOT_TIMEOUT_SECS", 600)
    }

    #[test]
    fn guest_kernel_boots_to_init_with_two_cpus() {
        let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
        let vmlinux = guest_vmlinux();
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
                "2",
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
            text.contains("smp: Brought up 1 node, 2 CPUs"),
            "the guest did not bring up the 2 vCPUs it was given\n{context}"
        );
        assert!(
            text.contains("Run /init as init process"),
            "the kernel did not start /init\n{context}"
        );
        assert!(!stderr.contains(RUST_PANIC), "{context}");

        if host_is_pvm() {
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

    #[test]
    fn sigterm_tears_the_vm_down() {
        let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
        let vmlinux = guest_vmlinux();
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
        let bound = Duration::from_secs(120);
        let deadline = Instant::now() + bound;
        while !read_console(&log).contains("Linux version 6.12") {
            if let Some(s) = vmm.poll() {
                panic!(
                    "runm-vmm ended ({s}) before the banner\nstderr:\n{}",
                    vmm.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no kernel banner within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
}

#[cfg(test)]
mod bad_input {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use super::common::*;

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
        let w = Work::new();
        let cfg = w.path("input-vm.json");
        let json = format!(
            r#"{{"kernel": "{}", "console": {{"file": "{}"}}, "memory_mb": 64}}"#,
            w.s("input-junk-kernel"),
            w.s("console.log")
        );
        std::fs::write(&cfg, json).unwrap();
        refuses(
            w.dir.path(),
            &["--config", cfg.to_str().unwrap()],
            "unknown field `memory_mb`",
        );
        w.assert_clean();
    }

    #[test]
    fn invalid_value_in_config_file() {
        // Valid JSON, a valid field, a value validation refuses: the console
        // named in the same file must not be created.
        let w = Work::new();
        let cfg = w.path("input-vm.json");
        let json = format!(
            r#"{{"kernel": "{}", "console": {{"file": "{}"}}, "vcpus": 0}}"#,
            w.s("input-junk-kernel"),
            w.s("console.log")
        );
        std::fs::write(&cfg, json).unwrap();
        refuses(
            w.dir.path(),
            &["--config", cfg.to_str().unwrap()],
            "vcpu count is 0",
        );
        w.assert_clean();
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
}
