//! runm-vmm with a virtio-fs device served by the real virtiofsd: the guest
//! kernel's driver finds the device and activates it (its queues handed to
//! the daemon, guest memory shared with it), on this host's KVM; and the
//! binary's answers to a backend that is missing or does not answer.
//!
//! Like guest_boot.rs, it runs the runm-vmm binary the test command built and
//! the cached guest kernel; virtiofsd comes from `scripts/virtiofsd.sh`. On a
//! PVM host guest user space cannot run, so the boot ends with init's death
//! there; the device is activated by the kernel's driver before that.

#[cfg(test)]
mod boot {
    use std::time::Duration;

    use test_support::*;
    use vm_spec::HostKvm;

    /// The guest kernel's virtio-fs driver probes the device and sets
    /// DRIVER_OK, which hands its queues to virtiofsd (the VMM logs the
    /// activation; the driver itself prints nothing). When the VMM ends, the
    /// daemon sees its frontend go and exits: nothing is left running.
    #[test]
    fn guest_kernel_activates_the_virtio_fs_device() {
        let _one = one_guest_at_a_time();
        let vmlinux = guest_kernel().expect("the guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let initrd = initramfs(dir.path());
        let mut vfs = Virtiofsd::spawn(dir.path());
        let log = dir.path().join("console.log");
        let console = format!("file:{}", log.display());
        let fs_arg = format!("share,{}", vfs.socket().display());
        let mut vmm = Vmm::spawn(
            dir.path(),
            &[
                "--kernel",
                vmlinux.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "--mem-mib",
                "128",
                "--console",
                &console,
                "--fs",
                &fs_arg,
                "--log-level",
                "info",
            ],
        );
        let bound = secs_from_env("RUNM_BOOT_TIMEOUT_SECS", 600);
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
            "runm-vmm ended with {status}\nstderr:\n{}\nconsole (end):\n{}\nvirtiofsd:\n{}",
            tail(&stderr, 20),
            tail(&text, 25),
            tail(&vfs.log(), 10)
        );
        assert!(
            stderr.contains("fs:share: virtio-mmio at"),
            "the device was not created\n{context}"
        );
        assert_eq!(
            text.matches("virtio-mmio: Registering device").count(),
            1,
            "the kernel did not see the virtio-mmio device\n{context}"
        );
        assert!(
            stderr.contains("virtio-mmio fs: driver activated the device"),
            "the guest's virtio-fs driver did not activate the device\n{context}"
        );
        assert!(!stderr.contains(RUST_PANIC), "{context}");
        assert!(
            !stderr.contains("connection to the backend"),
            "the backend went away during the boot\n{context}"
        );
        if HostKvm::detect().is_pvm() {
            assert_eq!(status.code(), Some(2), "init dies on PVM\n{context}");
        } else {
            assert!(text.contains(INIT_MARKER), "{context}");
            assert_eq!(status.code(), Some(0), "{context}");
        }
        assert!(
            vfs.exits_within(Duration::from_secs(10)),
            "virtiofsd still runs after runm-vmm ended\n{context}"
        );
    }
}

#[cfg(test)]
mod bad_input {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use test_support::*;

    /// A junk kernel (never loaded: the device fails first) and the console
    /// file runm-vmm must not leave behind.
    fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
        let kernel = dir.join("input-kernel");
        std::fs::write(&kernel, vec![0x5a; 4096]).unwrap();
        (kernel, dir.join("console.log"))
    }

    /// Runs runm-vmm with `args`; expects exit 1, one error line containing
    /// each of `expect`, and no console file created. Returns how long it took.
    fn refused(dir: &Path, args: &[&str], expect: &[&str]) -> Duration {
        let started = Instant::now();
        let mut vmm = Vmm::spawn(dir, args);
        let status = vmm
            .wait_for(Duration::from_secs(30))
            .expect("runm-vmm did not end within 30 s");
        let took = started.elapsed();
        let stderr = vmm.stderr();
        assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
        assert!(!stderr.contains(RUST_PANIC), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line expected:\n{stderr}");
        assert!(lines[0].starts_with("runm-vmm: error: "), "{}", lines[0]);
        for e in expect {
            assert!(lines[0].contains(e), "expected '{e}' in: {}", lines[0]);
        }
        assert!(
            !dir.join("console.log").exists(),
            "the console file was left behind"
        );
        took
    }

    fn fs_args<'a>(kernel: &'a str, console: &'a str, fs: &'a str) -> [&'a str; 6] {
        ["--kernel", kernel, "--console", console, "--fs", fs]
    }

    #[test]
    fn a_missing_backend_socket_is_refused_before_boot() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, console) = inputs(dir.path());
        let console = format!("file:{}", console.display());
        let fs = format!("share,{}", dir.path().join("no-such.sock").display());
        refused(
            dir.path(),
            &fs_args(kernel.to_str().unwrap(), &console, &fs),
            &["fs share", "no-such.sock", "No such file"],
        );
    }

    #[test]
    fn a_backend_that_does_not_answer_is_refused_within_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, console) = inputs(dir.path());
        let console = format!("file:{}", console.display());
        let socket = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // Accepts the connection, reads the requests and answers none, until
        // runm-vmm gives up and closes it.
        let holder = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = [0u8; 256];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        });
        let fs = format!("share,{}", socket.display());
        let took = refused(
            dir.path(),
            &fs_args(kernel.to_str().unwrap(), &console, &fs),
            &[
                "fs share",
                "silent.sock",
                "did not answer GET_FEATURES within 5s",
            ],
        );
        assert!(took < Duration::from_secs(10), "took {took:?}");
        holder.join().unwrap();
    }

    #[test]
    fn a_bad_tag_in_the_config_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, console) = inputs(dir.path());
        let socket = dir.path().join("vfs.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let cfg = dir.path().join("input-vm.json");
        let json = format!(
            r#"{{"kernel": "{}", "console": {{"file": "{}"}}, "fs": [{{"tag": "{}", "socket": "{}"}}]}}"#,
            kernel.display(),
            console.display(),
            "t".repeat(37),
            socket.display()
        );
        std::fs::write(&cfg, json).unwrap();
        refused(
            dir.path(),
            &["--config", cfg.to_str().unwrap()],
            &["tag", "1 to 36 bytes"],
        );
    }
}
