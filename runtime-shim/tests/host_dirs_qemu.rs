//! Host directories in the guest, end to end under the QEMU backend: the
//! root file system and bind mounts reach the container through virtio-fs
//! (one real virtiofsd per VM), writes land in the host's directories, `ro`
//! holds, and nothing of it shows in the host's mount table or outlives
//! `delete`.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use std::time::{Duration, Instant};

    use crate::common::{bundle, s, vm_runm};

    /// Lines of the host's mount table that name `needle`.
    fn host_mounts_naming(needle: &Path) -> Vec<String> {
        let needle = needle.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn root_and_bind_mounts_are_the_hosts_directories() {
        let (_g, r) = vm_runm();
        let host = r.tmp.path().join("host");
        fs::create_dir_all(host.join("ro-dir")).unwrap();
        fs::create_dir_all(host.join("volume")).unwrap();
        fs::write(host.join("hosts"), "10.1.2.3 from-the-host\n").unwrap();
        fs::write(host.join("ro-dir/file"), "read me\n").unwrap();
        let b = r.tmp.path().join("b");
        let script = "echo written > /new-file; \
             cat /etc/hosts; cat /ro/file; \
             (echo x > /ro/file) 2>/dev/null && echo ro-broken || echo ro-holds; \
             (echo x > /etc/hosts) 2>/dev/null && echo file-ro-broken || echo file-ro-holds; \
             echo from-the-guest > /vol/out; \
             while [ ! -f /vol/in ]; do sleep 0.1; done; cat /vol/in";
        bundle(&b, &["sh", "-c", script], true, |c| {
            let mounts = c["mounts"].as_array_mut().unwrap();
            mounts.push(
                serde_json::json!({"destination": "/etc/hosts", "type": "bind",
                "source": host.join("hosts"), "options": ["rbind", "ro"]}),
            );
            mounts.push(serde_json::json!({"destination": "/ro", "type": "bind",
                "source": host.join("ro-dir"), "options": ["bind", "ro", "nosuid"]}));
            mounts.push(serde_json::json!({"destination": "/vol", "type": "bind",
                "source": host.join("volume"), "options": ["rbind", "rprivate"]}));
        });
        let r = std::sync::Arc::new(r);
        let run = {
            let (r, b) = (std::sync::Arc::clone(&r), b.clone());
            std::thread::spawn(move || {
                r.run(&["--hypervisor", "qemu", "run", "v1", "--bundle", s(&b)])
            })
        };
        // A read-write volume carries files both ways while it runs.
        let from_guest = host.join("volume/out");
        wait_for(
            "the guest's file in the volume",
            Duration::from_secs(120),
            || fs::read_to_string(&from_guest).is_ok_and(|t| t == "from-the-guest\n"),
        );
        // The binds are in the sandbox's mount namespace, not the host's
        // (which has only the network namespace runm made for it).
        let shares = || {
            let mut m = host_mounts_naming(&host);
            m.extend(host_mounts_naming(&b));
            m.extend(host_mounts_naming(Path::new("/share")));
            m
        };
        assert_eq!(shares(), Vec::<String>::new());
        fs::write(host.join("volume/in"), "from-the-host\n").unwrap();
        let out = run.join().unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (
                0,
                "10.1.2.3 from-the-host\nread me\nro-holds\nfile-ro-holds\nfrom-the-host\n"
            ),
            "{out:?}"
        );
        // Writes in / land in the root file system the bundle names, as
        // under runc; the read-only sources are untouched.
        assert_eq!(
            fs::read_to_string(b.join("rootfs/new-file")).unwrap(),
            "written\n"
        );
        assert_eq!(
            fs::read_to_string(host.join("ro-dir/file")).unwrap(),
            "read me\n"
        );
        assert_eq!(host_mounts_naming(r.tmp.path()), Vec::<String>::new());
        assert_eq!(shares(), Vec::<String>::new());
        r.assert_clean();
        assert!(host.join("volume/in").exists(), "the volume is the host's");
    }

    #[test]
    fn a_daemon_that_fails_or_is_missing_is_an_error_with_nothing_left() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], true, |_| {});
        let create_with = |id: &str, virtiofsd: &str| {
            let mut cmd = r.command(&["--hypervisor", "qemu", "create", id, "--bundle", s(&b)]);
            cmd.env("RUNM_VIRTIOFSD", virtiofsd);
            r.run_cmd(cmd)
        };
        // A daemon that exits at once: the VM cannot connect, create fails.
        create_with("f1", "/bin/false").fails_with("virtiofs.sock");
        r.assert_clean();
        create_with("f2", "/nonexistent/virtiofsd").fails_with("RUNM_VIRTIOFSD");
        r.assert_clean();
        // A bind source that is a symlink to a device node is the node.
        let link = r.tmp.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        bundle(&b, &["true"], true, |c| {
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/x", "type": "bind", "source": link, "options": ["bind"]}
            ));
        });
        r.run(&["--hypervisor", "qemu", "create", "f3", "--bundle", s(&b)])
            .fails_with("device node");
        r.assert_clean();
        assert_eq!(host_mounts_naming(r.tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn a_read_only_root_refuses_writes_and_the_image_option_copies() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &[
                "sh",
                "-c",
                "(echo x > /x) 2>/dev/null && echo root-writable || echo root-ro",
            ],
            true,
            |c| c["root"]["readonly"] = true.into(),
        );
        let out = r.run(&["--hypervisor", "qemu", "run", "ro1", "--bundle", s(&b)]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "root-ro\n"), "{out:?}");
        assert!(!b.join("rootfs/x").exists());
        r.assert_clean();
        // io.runm.rootfs=image: a copy on a block device; writes stay in it.
        bundle(&b, &["sh", "-c", "echo x > /x && echo wrote"], true, |c| {
            c["annotations"] = serde_json::json!({"io.runm.rootfs": "image"});
        });
        let out = r.run(&["--hypervisor", "qemu", "run", "img1", "--bundle", s(&b)]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "wrote\n"), "{out:?}");
        assert!(!b.join("rootfs/x").exists(), "the image is a copy");
        r.assert_clean();
    }
}
