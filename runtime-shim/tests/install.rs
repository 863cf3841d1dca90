//! `scripts/install.sh` into a temporary prefix: the files it puts there, a
//! second run that changes nothing, the installed runm finding its guest
//! kernel and initramfs with no `RUNM_KERNEL`/`RUNM_INITRD` and running a
//! busybox container in a microVM (QEMU backend: software emulation where
//! KVM cannot run guest user space), and `--uninstall` leaving nothing.
//!
//! The script builds what it installs: release binaries (minutes the first
//! time), the guest kernel and the agent initramfs (cached by their scripts).
//! Needs what the install itself needs (cargo, the kernel's build packages,
//! qemu-system-x86_64, mkfs.ext4) and a static busybox.

mod common;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, SystemTime};

    use crate::common::{bundle, wait_bounded, Runm};
    use test_support::repo_root;

    /// What `install.sh ARGS` did: exit status and stderr.
    fn install(tmp: &Path, args: &[&str]) -> (i32, String) {
        let err = tmp.join("install.err");
        let mut child = Command::new("bash")
            .arg(repo_root().join("scripts/install.sh"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        // The first run builds release binaries (and, uncached, the kernel).
        let code = wait_bounded(&mut child, Duration::from_secs(3600)).expect("install.sh ends");
        (code, fs::read_to_string(&err).unwrap_or_default())
    }

    /// Every file and symbolic link under `dir`, with its modification time.
    fn files(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
        let mut found = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let meta = fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    todo.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                    found.insert(rel, meta.modified().unwrap());
                }
            }
        }
        found
    }

    #[test]
    fn install_twice_run_a_container_from_the_prefix_and_uninstall() {
        let r = Runm::new();
        let prefix = r.tmp.path().join("prefix");
        let p = prefix.to_str().unwrap();

        let (code, err) = install(r.tmp.path(), &["--prefix", p]);
        assert_eq!(code, 0, "install.sh: {err}");
        let installed = files(&prefix);
        let names: Vec<&str> = installed.keys().map(|k| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "bin/runm",
                "bin/runm-vmm",
                "bin/virtiofsd",
                "share/runm/agent.cpio",
                "share/runm/vmlinux"
            ],
            "{err}"
        );
        for (f, mode) in [
            ("bin/runm", 0o755),
            ("bin/runm-vmm", 0o755),
            ("bin/virtiofsd", 0o755),
            ("share/runm/vmlinux", 0o644),
            ("share/runm/agent.cpio", 0o644),
        ] {
            let m = fs::metadata(prefix.join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o7777, mode, "{f}");
        }
        let head = |f: &str| fs::read(prefix.join(f)).unwrap()[..6].to_vec();
        assert_eq!(head("share/runm/vmlinux")[..4], *b"\x7fELF");
        assert_eq!(head("share/runm/agent.cpio"), b"070701", "newc cpio");
        let version = Command::new(prefix.join("bin/runm"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&version.stdout).starts_with("runm "),
            "{version:?}"
        );
        let vmm = Command::new(prefix.join("bin/runm-vmm"))
            .arg("--help")
            .output()
            .unwrap();
        assert!(vmm.status.success(), "{vmm:?}");
        let virtiofsd = Command::new(prefix.join("bin/virtiofsd"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(virtiofsd.status.success(), "{virtiofsd:?}");

        // Again: nothing is rewritten.
        let (code, err) = install(r.tmp.path(), &["--prefix", p]);
        assert_eq!(code, 0, "second install.sh: {err}");
        assert_eq!(files(&prefix), installed, "{err}");
        assert_eq!(err.matches("up to date: ").count(), 5, "{err}");

        // The installed runm finds the installed guest images by itself, and
        // says which ones it boots in its debug log.
        let b = r.tmp.path().join("bundle");
        bundle(&b, &["echo", "hello from the installed runm"], true, |_| {});
        let log = r.tmp.path().join("runm.log");
        let mut cmd = Command::new(prefix.join("bin/runm"));
        cmd.args(["--root", r.root.to_str().unwrap()])
            .args(["--debug", "--log", log.to_str().unwrap()])
            .args(["--hypervisor", "qemu", "run", "--bundle"])
            .arg(&b)
            .arg("inst")
            .env_remove("RUNM_KERNEL")
            .env_remove("RUNM_INITRD")
            .env("RUNM_BOOT_TIMEOUT", "180");
        let out = r.run_cmd(cmd).ok();
        assert_eq!(out.stdout, "hello from the installed runm\n", "{out:?}");
        assert_eq!(out.stderr, "", "quiet on success");
        let text = fs::read_to_string(&log).unwrap();
        let share = fs::canonicalize(prefix.join("share/runm")).unwrap();
        for f in ["vmlinux", "agent.cpio"] {
            let path = share.join(f);
            assert!(
                text.contains(path.to_str().unwrap()),
                "the VM boots {}: {text}",
                path.display()
            );
        }
        r.assert_clean();

        // Uninstall leaves nothing of runm; again, it has nothing to do.
        let (code, err) = install(r.tmp.path(), &["--uninstall", "--prefix", p]);
        assert_eq!(code, 0, "uninstall: {err}");
        assert_eq!(files(&prefix), BTreeMap::new(), "{err}");
        assert!(!prefix.join("share/runm").exists(), "{err}");
        let (code, err) = install(r.tmp.path(), &["--uninstall", "--prefix", p]);
        assert_eq!(code, 0, "second uninstall: {err}");
        assert!(!err.contains("removed"), "{err}");

        // Bad input names what is wrong and installs nothing.
        let (code, err) = install(r.tmp.path(), &["--prefx", p]);
        assert_ne!(code, 0);
        assert!(err.contains("unknown argument '--prefx'"), "{err}");
        let (code, err) = install(r.tmp.path(), &["--prefix"]);
        assert_ne!(code, 0);
        assert!(err.contains("--prefix needs a directory"), "{err}");
        assert_eq!(files(&prefix), BTreeMap::new());
    }
}
