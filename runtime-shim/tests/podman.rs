//! Podman drives runm: Debian's podman 4.3 (conmon 2.1.6, netavark) runs
//! busybox containers with runm as its OCI runtime and nothing else changed
//! (`podman --runtime runm ...`), configured by the `containers.conf` of
//! runm's README (section "Podman"), read from there, with only the binary's
//! path put in.
//!
//! Podman is isolated: its own `--root`, `--runroot`, `--tmpdir` and network
//! configuration directory under a temporary directory, `CONTAINERS_CONF`
//! naming the test's file, the cgroupfs manager and the file events
//! backend; and every podman command runs inside a network namespace the
//! test makes (`nsenter --net`), so the bridge and iptables rules netavark
//! makes for the default network exist only there. runm is installed under
//! a prefix in the temporary directory (`bin/runm`, `share/runm/vmlinux`,
//! `share/runm/agent.cpio`), because conmon hands the runtime an
//! environment of its own: runm must find its guest images the way an
//! installed runm does. The image is a busybox tree imported with `podman
//! import`: no registry. Podman 4.3 still keeps two files of its own outside
//! those directories, whatever its flags say: netavark's address allocations
//! (`/run/containers/networks/ipam.db`, released when a container goes) and
//! the image blob cache (`/var/lib/containers/cache`).
//!
//! Shown, each scenario with its real output and exit status: `run --rm`
//! output and `exit 3`; `-e`, `-w`, `-u`, `--umask`; a read-write volume (the guest's
//! file appears on the host) and a read-only one (writes refused);
//! `--read-only` (with tmpcopyup); `/etc/hosts` and `/etc/hostname` as podman wrote them;
//! `run -d` then `ps`, `inspect` (running, `State.Pid` is runm's pid),
//! `exec`, `logs`, `pause`/`unpause`, `stop -t 2` of a workload that ignores
//! SIGTERM (SIGKILL after 2 s: 137), `kill`, `rm -f` of a running container;
//! the default network (eth0 in 10.88.0.0/16, the bridge's gateway answers
//! ping); `-it` through script(1); a pod (`pod create` with a busybox infra
//! container, two `run --pod` containers in its one VM talking over localhost,
//! `pod rm -f`). After every scenario: no process of runm,
//! QEMU, virtiofsd or conmon naming the test directory or the container, no
//! runm state for it, no mount naming the test directory.
//!
//! Needs root, Debian's `podman`, `conmon`, `netavark` and `iptables`
//! (installed by `scripts/setup.sh`), `qemu-system-x86_64`, `unshare`,
//! `nsenter` and `script` (util-linux) and a static busybox. The VMs run
//! under runm's automatic choice: QEMU with software emulation where KVM
//! cannot run guest user space (PVM), runm-vmm on real KVM.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::common::{
        fenced_block, guest_images, processes_mentioning, readme_section, wait_bounded, Out, RUNM,
    };

    /// How long one podman command may take (`run` boots a VM).
    const PODMAN_TIMEOUT: Duration = Duration::from_secs(240);
    /// The image the test imports.
    const IMAGE: &str = "localhost/runm-busybox:test";
    /// Where runm keeps its state when podman gives it no `--root`.
    const RUNM_ROOT: &str = "/run/runm";
    /// The path the README's configuration names.
    const README_RUNM: &str = "/usr/local/bin/runm";

    /// A program on PATH, or a clear failure.
    fn need(program: &str, how: &str) -> PathBuf {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{program} is needed for this test: {how}"))
    }

    /// The `containers.conf` of runm's README, section "Podman".
    fn readme_containers_conf() -> String {
        let block = fenced_block(&readme_section("Podman"), "toml");
        assert!(
            block.contains(&format!("runm = [\"{README_RUNM}\"]")),
            "the README's containers.conf names runm: {block}"
        );
        block.to_string()
    }

    /// Hard-links `from` at `to`, or copies it (another file system).
    fn install_file(from: &Path, to: &Path) {
        if fs::hard_link(from, to).is_err() {
            fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }

    /// Podman, isolated under a temporary directory, run inside a network
    /// namespace the test made. Dropping it removes every container (podman
    /// `rm -fa`), kills what names the directory and ends the namespace.
    struct Podman {
        tmp: tempfile::TempDir,
        /// Holds the network namespace (`unshare --net sleep`).
        holder: Child,
        /// Every container id seen, for the leftover checks.
        ids: std::cell::RefCell<Vec<String>>,
    }

    impl Podman {
        fn start() -> Self {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            assert_eq!(unsafe { libc::geteuid() }, 0, "podman tests need root");
            let how = "apt-get install podman conmon netavark iptables (scripts/setup.sh)";
            for p in [
                "podman", "conmon", "iptables", "nsenter", "unshare", "script",
            ] {
                need(p, how);
            }
            need("qemu-system-x86_64", "apt-get install qemu-system-x86");
            let (kernel, initrd) = guest_images();
            let tmp = tempfile::Builder::new()
                .prefix("runm-podman-")
                .tempdir()
                .unwrap();
            let t = tmp.path();
            for d in ["prefix/bin", "prefix/share/runm", "tmp", "networks"] {
                fs::create_dir_all(t.join(d)).unwrap();
            }
            let runm = t.join("prefix/bin/runm");
            install_file(Path::new(RUNM), &runm);
            install_file(&kernel, &t.join("prefix/share/runm/vmlinux"));
            install_file(&initrd, &t.join("prefix/share/runm/agent.cpio"));
            let conf = readme_containers_conf().replace(README_RUNM, runm.to_str().unwrap());
            fs::write(t.join("containers.conf"), conf).unwrap();
            let holder = Command::new("unshare")
                .args(["--net", "--", "sleep", "3600"])
                .stdin(Stdio::null())
                .spawn()
                .expect("unshare --net");
            let p = Podman {
                tmp,
                holder,
                ids: Default::default(),
            };
            // The namespace exists once the holder runs sleep in it.
            let own = fs::read_link("/proc/self/ns/net").unwrap();
            let until = Instant::now() + Duration::from_secs(10);
            while fs::read_link(p.netns()).ok().as_ref() == Some(&own)
                || fs::read_link(p.netns()).is_err()
            {
                assert!(Instant::now() < until, "unshare --net did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            p
        }

        fn path(&self, p: &str) -> PathBuf {
            self.tmp.path().join(p)
        }

        fn netns(&self) -> PathBuf {
            PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
        }

        /// The podman command line (inside the namespace), as one list.
        fn argv(&self, args: &[&str]) -> Vec<String> {
            let t = self.tmp.path().display().to_string();
            let mut v: Vec<String> = vec![
                "nsenter".into(),
                format!("--net={}", self.netns().display()),
                "podman".into(),
                "--root".into(),
                format!("{t}/storage"),
                "--runroot".into(),
                format!("{t}/run"),
                "--tmpdir".into(),
                format!("{t}/tmp"),
                "--network-config-dir".into(),
                format!("{t}/networks"),
                "--cgroup-manager".into(),
                "cgroupfs".into(),
                "--events-backend".into(),
                "file".into(),
                "--storage-driver".into(),
                "vfs".into(),
            ];
            v.extend(args.iter().map(|a| a.to_string()));
            v
        }

        fn podman(&self, args: &[&str]) -> Out {
            let argv = self.argv(args);
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            self.run(cmd)
        }

        fn run(&self, mut cmd: Command) -> Out {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (o, e) = (
                self.path(&format!("out.{n}")),
                self.path(&format!("err.{n}")),
            );
            cmd.env("CONTAINERS_CONF", self.path("containers.conf"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(&o).unwrap())
                .stderr(fs::File::create(&e).unwrap());
            let desc = format!("{cmd:?}");
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{desc}: {e}"));
            let code = wait_bounded(&mut child, PODMAN_TIMEOUT)
                .unwrap_or_else(|| panic!("{desc} did not finish in {PODMAN_TIMEOUT:?}"));
            Out {
                code,
                stdout: fs::read_to_string(&o).unwrap_or_default(),
                stderr: fs::read_to_string(&e).unwrap_or_default(),
            }
        }

        /// `podman --runtime runm run --cidfile F ARGS`: the result and
        /// the container's id.
        fn run_runm(&self, args: &[&str]) -> (Out, String) {
            let cid = self.path(&format!("cid.{}", self.ids.borrow().len()));
            let cid_s = cid.to_str().unwrap().to_string();
            let mut v = vec!["--runtime", "runm", "run", "--cidfile", &cid_s];
            v.extend_from_slice(args);
            let out = self.podman(&v);
            let id = fs::read_to_string(&cid)
                .unwrap_or_default()
                .trim()
                .to_string();
            if !id.is_empty() {
                self.ids.borrow_mut().push(id.clone());
            }
            (out, id)
        }

        /// `podman inspect --format F ID`.
        fn inspect(&self, id: &str, format: &str) -> String {
            let out = self.podman(&["inspect", "--format", format, id]);
            assert_eq!(out.code, 0, "{out:?}");
            out.stdout.trim().to_string()
        }

        /// Nothing of container `id` (or of any container) is left: no
        /// process naming the test directory or the id, no runm state, no
        /// mount naming the test directory, no container in podman's list.
        fn assert_clean(&self, id: &str) {
            let dir = self.tmp.path().to_string_lossy().into_owned();
            eventually("no process is left", Duration::from_secs(20), || {
                processes_mentioning(&dir).is_empty()
                    && (id.is_empty() || processes_mentioning(id).is_empty())
            });
            assert!(
                !Path::new(RUNM_ROOT).join(id).exists() || id.is_empty(),
                "runm state left for {id}"
            );
            let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&dir) || (!id.is_empty() && l.contains(id)))
                .map(str::to_string)
                .collect();
            assert_eq!(mounts, Vec::<String>::new(), "mounts left");
            // The host cgroups runm made for it (podman's cgroupfs path is
            // /libpod_parent/libpod-<id>, in every v1 hierarchy).
            if !id.is_empty() {
                let left: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.path().join(format!("libpod_parent/libpod-{id}")))
                            .filter(|p| p.exists())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(left, Vec::<PathBuf>::new(), "cgroups left");
            }
            let ps = self.podman(&["ps", "-a", "-q"]);
            assert_eq!((ps.code, ps.stdout.trim()), (0, ""), "{ps:?}");
        }
    }

    impl Drop for Podman {
        fn drop(&mut self) {
            let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
            let dir = self.tmp.path().to_string_lossy().into_owned();
            let mut needles = vec![dir.clone()];
            needles.extend(self.ids.borrow().iter().cloned());
            for needle in needles {
                for p in processes_mentioning(&needle) {
                    if let Some(pid) = p.split(' ').next().and_then(|s| s.parse::<i32>().ok()) {
                        // SAFETY: kill(2) on a pid we just found; no memory involved.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = self.holder.kill();
            let _ = self.holder.wait();
            std::thread::sleep(Duration::from_millis(300));
            let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| m.starts_with(&dir))
                .collect();
            for m in mounts.iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }

    /// Waits until `f` holds, or fails with `what`.
    fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < until, "{what}: not within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Logs one scenario: the podman command, what it printed, its time.
    fn report(what: &str, out: &Out, took: Duration) {
        eprintln!(
            "[podman] {what}: exit {} in {:.1} s; stdout {:?}",
            out.code,
            took.as_secs_f64(),
            out.stdout
        );
    }

    #[test]
    fn podman_runs_containers_on_runm() {
        let _guard = test_support::one_guest_at_a_time();
        let started = Instant::now();
        let p = Podman::start();
        let host_kind = if vm_spec::HostKvm::detect().is_pvm() {
            "QEMU with software emulation (this host's KVM is PVM)"
        } else {
            "runm's automatic backend choice"
        };
        eprintln!("[podman] under {}; {host_kind}", p.tmp.path().display());

        let tar = p.path("busybox.tar");
        test_support::images::busybox_tar(&p.path("image-tree"), &tar).unwrap();
        // A file in the image's /tmp, for --read-only's tmpcopyup.
        let extra = p.path("image-extra");
        fs::create_dir_all(extra.join("tmp")).unwrap();
        fs::write(extra.join("tmp/seed"), "seeded in the image\n").unwrap();
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&extra)
            .arg("-rf")
            .arg(&tar)
            .arg("./tmp/seed")
            .status()
            .unwrap();
        assert!(ok.success(), "tar -r");
        let out = p.podman(&["import", tar.to_str().unwrap(), IMAGE]);
        assert_eq!(out.code, 0, "podman import: {out:?}");

        // 1. Output and exit status; the kernel is the guest's own.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo hello from podman on runm; uname -r; exit 3",
        ]);
        report("run --rm ... exit 3", &out, t.elapsed());
        assert_eq!(out.code, 3, "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"hello from podman on runm"), "{out:?}");
        let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_ne!(
            lines.get(1).copied(),
            Some(host_kernel.trim()),
            "the container runs on its own kernel: {out:?}"
        );
        p.assert_clean(&id);

        // 1b. What a VM cannot do is refused with runm's own error, through
        // the JSON log conmon gives runm, and leaves nothing behind.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            "-v",
            "/dev/null:/x",
            IMAGE,
            "true",
        ]);
        report("run -v /dev/null:/x (refused)", &out, t.elapsed());
        assert_eq!(out.code, 126, "{out:?}");
        assert!(
            out.stderr.contains(
                "OCI runtime error: runm: bind mount of /dev/null at /x: the source is a device node"
            ),
            "{out:?}"
        );
        p.assert_clean(&id);

        // 2. Environment, working directory, user.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            "-e",
            "GREETING=from-podman",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "--umask",
            "0077",
            IMAGE,
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u; umask",
        ]);
        report("run -e -w -u 1000 --umask 0077", &out, t.elapsed());
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "from-podman\n/tmp\n1000\n0077\n"),
            "{out:?}"
        );
        p.assert_clean(&id);

        // 3. Volumes: read-write (the guest's file lands on the host) and
        // read-only (the write is refused, the host file unchanged).
        let (vol, ro) = (p.path("volume"), p.path("ro-volume"));
        fs::create_dir_all(&vol).unwrap();
        fs::create_dir_all(&ro).unwrap();
        fs::write(ro.join("file"), "read me\n").unwrap();
        let (vol_arg, ro_arg) = (
            format!("{}:/data", vol.display()),
            format!("{}:/ro:ro", ro.display()),
        );
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            "-v",
            &vol_arg,
            "-v",
            &ro_arg,
            IMAGE,
            "sh",
            "-c",
            "echo written in the guest > /data/out; cat /ro/file; \
             (echo x > /ro/file) 2>/dev/null && echo ro-broken || echo ro-holds",
        ]);
        report("run -v DIR:/data -v DIR:/ro:ro", &out, t.elapsed());
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "read me\nro-holds\n"),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(vol.join("out")).unwrap(),
            "written in the guest\n"
        );
        assert_eq!(fs::read_to_string(ro.join("file")).unwrap(), "read me\n");
        p.assert_clean(&id);

        // 4. --read-only: the root refuses writes; /tmp, /var/tmp and /run
        // are tmpfs (the last two missing in the image: made as runc makes
        // them), /tmp starting with a copy of the image's (tmpcopyup).
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            "--read-only",
            IMAGE,
            "sh",
            "-c",
            "(echo x > /x) 2>/dev/null && echo root-writable || echo root-ro; \
             echo y > /tmp/y && echo tmp-writable; cat /tmp/seed; \
             for d in /tmp /var/tmp /run; do grep -c \" $d tmpfs \" /proc/mounts; done",
        ]);
        report("run --read-only", &out, t.elapsed());
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "root-ro\ntmp-writable\nseeded in the image\n1\n1\n1\n"),
            "{out:?}"
        );
        p.assert_clean(&id);

        // 5. /etc/hosts and /etc/hostname are the files podman wrote.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            "--network",
            "none",
            "--hostname",
            "pm-guest",
            "--add-host",
            "db.example:10.1.2.3",
            IMAGE,
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo; grep db.example /etc/hosts; \
             grep -c pm-guest /etc/hosts",
        ]);
        report("run --hostname --add-host", &out, t.elapsed());
        assert_eq!(out.code, 0, "{out:?}");
        // (podman writes /etc/hostname without a newline)
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[..2], ["pm-guest", "pm-guest"], "{out:?}");
        assert!(
            lines[2].starts_with("10.1.2.3") && lines[2].contains("db.example"),
            "{out:?}"
        );
        assert_eq!(lines.get(3), Some(&"1"), "{out:?}");
        p.assert_clean(&id);

        // 6. A detached container: ps, inspect, exec, logs, pause, stop.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "-d",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "trap '' TERM; echo started; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ]);
        report("run -d", &out, t.elapsed());
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.trim(), id);
        let ps = p.podman(&["ps", "--format", "{{.ID}} {{.Status}}"]);
        eprintln!("[podman] ps: {}", ps.stdout.trim());
        assert!(
            ps.stdout.starts_with(&id[..12]) && ps.stdout.contains("Up"),
            "{ps:?}"
        );
        let state = p.inspect(&id, "{{.State.Running}} {{.State.Pid}} {{.OCIRuntime}}");
        eprintln!("[podman] inspect: {state}");
        let runm_state: serde_json::Value = serde_json::from_slice(
            &fs::read(Path::new(RUNM_ROOT).join(&id).join("state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state,
            format!("true {} runm", runm_state["pid"]),
            "State.Pid is runm's pid"
        );
        assert_eq!(runm_state["status"], "running");

        let t = Instant::now();
        let out = p.podman(&["exec", &id, "sh", "-c", "echo in exec; exit 4"]);
        report("exec", &out, t.elapsed());
        assert_eq!((out.code, out.stdout.as_str()), (4, "in exec\n"), "{out:?}");

        eventually("logs show the ticks", Duration::from_secs(30), || {
            let l = p.podman(&["logs", &id]).stdout;
            l.starts_with("started\ntick 1\n") && l.contains("tick 3\n")
        });

        let out = p.podman(&["pause", &id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(p.inspect(&id, "{{.State.Status}}"), "paused");
        std::thread::sleep(Duration::from_millis(500));
        let held = p.podman(&["logs", &id]).stdout.lines().count();
        std::thread::sleep(Duration::from_secs(2));
        let after = p.podman(&["logs", &id]).stdout.lines().count();
        assert_eq!(held, after, "output went on while paused");
        let out = p.podman(&["unpause", &id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");
        eventually("ticks resume", Duration::from_secs(30), || {
            p.podman(&["logs", &id]).stdout.lines().count() > after + 2
        });
        eprintln!("[podman] pause held the output at {held} lines; unpause continued it");

        // The workload ignores SIGTERM: podman kills it after 2 s.
        let t = Instant::now();
        let out = p.podman(&["stop", "-t", "2", &id]);
        let took = t.elapsed();
        report("stop -t 2 (TERM ignored)", &out, took);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(took >= Duration::from_secs(2), "stopped before the timeout");
        assert!(out.stderr.contains("resorting to SIGKILL"), "{out:?}");
        assert_eq!(
            p.inspect(&id, "{{.State.Status}} {{.State.ExitCode}}"),
            "exited 137"
        );
        let out = p.podman(&["rm", &id]);
        assert_eq!(out.code, 0, "{out:?}");
        p.assert_clean(&id);

        // 7. kill: SIGKILL by default, 137.
        let (out, id) = p.run_runm(&["-d", "--network", "none", IMAGE, "sleep", "600"]);
        assert_eq!(out.code, 0, "{out:?}");
        let out = p.podman(&["kill", &id]);
        assert_eq!(out.code, 0, "{out:?}");
        let out = p.podman(&["wait", &id]);
        assert_eq!((out.code, out.stdout.trim()), (0, "137"), "{out:?}");
        assert_eq!(p.inspect(&id, "{{.State.Status}}"), "exited");
        let out = p.podman(&["rm", &id]);
        assert_eq!(out.code, 0, "{out:?}");
        p.assert_clean(&id);

        // 8. rm -f of a running container.
        let (out, id) = p.run_runm(&["-d", "--network", "none", IMAGE, "sleep", "600"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(p.inspect(&id, "{{.State.Running}}"), "true");
        let t = Instant::now();
        let out = p.podman(&["rm", "-f", "-t", "0", &id]);
        report("rm -f -t 0 (running)", &out, t.elapsed());
        assert_eq!((out.code, out.stdout.trim()), (0, id.as_str()), "{out:?}");
        p.assert_clean(&id);

        // 9. The default network: netavark's bridge in the test's namespace;
        // the guest's eth0 has the veth's address and reaches the gateway.
        let t = Instant::now();
        let (out, id) = p.run_runm(&[
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "ip -4 -o addr show eth0; ip route; ping -c 1 -W 10 10.88.0.1 >/dev/null && echo gateway-answers",
        ]);
        report("run (default network)", &out, t.elapsed());
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains("eth0") && out.stdout.contains("inet 10.88."),
            "{out:?}"
        );
        assert!(out.stdout.contains("default via 10.88.0.1"), "{out:?}");
        assert!(out.stdout.ends_with("gateway-answers\n"), "{out:?}");
        assert!(
            !Path::new("/sys/class/net/podman0").exists(),
            "the bridge is not in the host's namespace"
        );
        p.assert_clean(&id);

        // 10. -it: conmon's terminal, through script(1) for podman's own.
        // (Podman's attach writes one NUL byte to the terminal, which the
        // container's tty echoes as "^@": so it does under runc too.)
        let cid = p.path("cid.tty");
        let line = p
            .argv(&[
                "--runtime",
                "runm",
                "run",
                "--rm",
                "-it",
                "--cidfile",
                cid.to_str().unwrap(),
                "--network",
                "none",
                IMAGE,
                "sh",
                "-c",
                "tty; exit 5",
            ])
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        let t = Instant::now();
        let out = p.run(cmd);
        report("run -it (script)", &out, t.elapsed());
        assert_eq!(out.code, 5, "{out:?}");
        assert!(out.stdout.contains("/dev/pts/0\r\n"), "{out:?}");
        let id = fs::read_to_string(&cid)
            .unwrap_or_default()
            .trim()
            .to_string();
        p.assert_clean(&id);

        // 11. A pod: its infra container (busybox sleep) boots the pod's
        // VM, two containers run in that VM, on the pod's network, and
        // reach each other over localhost.
        let t = Instant::now();
        let out = p.podman(&[
            "--runtime",
            "runm",
            "pod",
            "create",
            "--name",
            "runm-pod",
            "--infra-image",
            IMAGE,
            "--infra-command",
            "sleep 100000",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let (out, server) = p.run_runm(&[
            "-d",
            "--pod",
            "runm-pod",
            IMAGE,
            "sh",
            "-c",
            "echo served-in-the-pod > /www; exec nc -ll -p 9000 -e cat /www",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let (out, _) = p.run_runm(&[
            "--rm",
            "--pod",
            "runm-pod",
            IMAGE,
            "sh",
            "-c",
            "test -e /www || echo own-root; nc 127.0.0.1 9000; ip -4 -o addr show eth0",
        ]);
        report("pod: two containers over localhost", &out, t.elapsed());
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.starts_with("own-root\nserved-in-the-pod\n"),
            "{out:?}"
        );
        assert!(out.stdout.contains("inet 10.88."), "{out:?}");
        let dir = p.tmp.path().to_string_lossy().into_owned();
        let vms: Vec<String> = processes_mentioning(&dir)
            .into_iter()
            .filter(|l| l.contains("qemu-system"))
            .collect();
        assert_eq!(vms.len(), 1, "one VM for the pod: {vms:?}");
        assert_eq!(p.inspect(&server, "{{.State.Running}}"), "true");
        // One container of the pod paused and unpaused, the pod's VM running on.
        let out = p.podman(&["pause", &server]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(p.inspect(&server, "{{.State.Status}}"), "paused");
        let out = p.podman(&["unpause", &server]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(p.inspect(&server, "{{.State.Status}}"), "running");
        let out = p.podman(&["pod", "rm", "-f", "-t", "0", "runm-pod"]);
        assert_eq!(out.code, 0, "{out:?}");
        p.assert_clean(&server);

        eprintln!(
            "[podman] all scenarios passed in {:.1} s ({host_kind})",
            started.elapsed().as_secs_f64()
        );
    }
}
