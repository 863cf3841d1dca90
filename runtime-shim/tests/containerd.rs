//! containerd drives runm: Debian's containerd 1.6, started by this test with
//! its own configuration, root, state and socket under a temporary
//! directory (CRI plugin off), runs busybox containers through its own runc
//! shim (`io.containerd.runc.v2`) with runm as the runc binary, the way a
//! Kubernetes RuntimeClass would send them to runm:
//! `ctr run --runtime io.containerd.runc.v2 --runc-binary <runm>`.
//!
//! The image is built here (an OCI image layout with one layer holding a
//! static busybox) and imported with `ctr image import`: no registry. The
//! VMs run under runm's QEMU backend with software emulation where this
//! host's KVM cannot run guest user space (PVM), under KVM elsewhere.
//!
//! Shown: output arrives; `exit 3` gives 3; the pid containerd got is the
//! sandbox, a child of the shim, in the container's host cgroup with the
//! host-side memory limit; `ctr task exec` runs a second process (its exit
//! status too; with a terminal as well); `ctr task ps` lists host pids and names the exec; `ctr task
//! kill` ends the exec'd process and then the container (137 for SIGKILL);
//! pause stops the workload's output, resume continues it; `runm update`
//! accepts what a VM can change and refuses the rest; after `ctr task rm`
//! and `ctr container rm` no process, mount, state directory, disk image or
//! cgroup of the container is left. containerd is stopped by its own pid at
//! the end; a guard stops it, and everything that names the temporary
//! directory, if the test fails.
//!
//! Needs root, `containerd` and `ctr` (Debian's `containerd`, installed by
//! `scripts/setup.sh`), `qemu-system-x86_64`, `mkfs.ext4`, `tar`,
//! `sha256sum`, `script` (util-linux) and a static busybox. Every command
//! and wait is bounded.
//!
//! containerd 1.6 puts its shims' sockets in `/run/containerd/s/` whatever
//! its configuration says; the test removes those directories afterwards if
//! it was the one that made them (and they are empty).

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::common::{
        eventually, guest_images, mounts_under, need, processes_mentioning, sha256_hex,
        wait_bounded, Out, RUNM,
    };

    /// How long one `ctr` call may take (a container's create boots its VM).
    const CTR_TIMEOUT: Duration = Duration::from_secs(180);
    /// The image the test builds and imports.
    const IMAGE: &str = "localhost/runm-busybox:test";
    /// The controllers runm places a container's host processes in.
    const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];
    /// containerd 1.6's fixed directory for shim sockets.
    const SHIM_SOCKET_DIRS: &[&str] = &["/run/containerd/s", "/run/containerd"];

    /// containerd started by the test, with everything it uses under `tmp`.
    /// Dropping it stops containerd by pid and cleans up after a failure.
    struct Containerd {
        tmp: tempfile::TempDir,
        child: Option<Child>,
        /// The test's own cgroup name for containers (relative: below the
        /// cgroup runm runs in, in each hierarchy).
        cgroup: String,
        /// Whether `/run/containerd/s` and its parent were there before.
        socket_dirs_existed: Vec<bool>,
        /// The container ids used (to find their shims' sockets).
        ids: std::cell::RefCell<Vec<String>>,
        env: Vec<(String, PathBuf)>,
    }

    impl Containerd {
        fn start() -> Self {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            let euid = unsafe { libc::geteuid() };
            assert_eq!(euid, 0, "containerd needs root: run this test as root");
            let containerd = need(
                "containerd",
                "apt-get install containerd (scripts/setup.sh)",
            );
            need("ctr", "apt-get install containerd (scripts/setup.sh)");
            need("qemu-system-x86_64", "apt-get install qemu-system-x86");
            let (kernel, initrd) = guest_images();
            let tmp = tempfile::Builder::new()
                .prefix("runm-containerd-")
                .tempdir()
                .unwrap();
            let t = tmp.path();
            for d in ["root", "state", "opt", "fifo", "runm"] {
                fs::create_dir_all(t.join(d)).unwrap();
            }
            let config = format!(
                r#"version = 2
root = "{t}/root"
state = "{t}/state"
# The CRI plugin would set up Kubernetes networking and state of its own;
# snapshotters other than native and overlayfs probe the host (btrfs, zfs,
# devmapper, aufs).
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{t}/containerd.sock"
[ttrpc]
  address = "{t}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{t}/opt"
"#,
                t = t.display()
            );
            fs::write(t.join("config.toml"), config).unwrap();
            let socket_dirs_existed = SHIM_SOCKET_DIRS
                .iter()
                .map(|d| Path::new(d).exists())
                .collect();
            let env = vec![
                ("RUNM_KERNEL".to_string(), kernel.clone()),
                ("RUNM_INITRD".to_string(), initrd.clone()),
            ];
            let mut cmd = Command::new(containerd);
            cmd.arg("--config")
                .arg(t.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(t.join("containerd.log")).unwrap())
                .stderr(fs::File::create(t.join("containerd.err")).unwrap());
            // What the shim and runm inherit: where the guest images are, and
            // more boot time than the default under software emulation on a
            // busy host.
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.env("RUNM_BOOT_TIMEOUT", "150");
            let child = cmd.spawn().expect("containerd starts");
            let c = Containerd {
                cgroup: format!("runm-containerd-test-{}", std::process::id()),
                tmp,
                child: Some(child),
                socket_dirs_existed,
                ids: Default::default(),
                env,
            };
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let out = c.ctr_timeout(&["version"], Duration::from_secs(10));
                if out.code == 0 && out.stdout.contains("Server:") {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "containerd did not answer within 30 s: {out:?}\n{}",
                    c.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            c
        }

        fn path(&self, p: &str) -> PathBuf {
            self.tmp.path().join(p)
        }

        /// The runc root the shim passes to runm (`--runc-root`); runm's
        /// state for namespace `default` is below it.
        fn runm_root(&self) -> PathBuf {
            self.path("runm")
        }

        fn log(&self) -> String {
            let mut s = fs::read_to_string(self.path("containerd.err")).unwrap_or_default();
            s.push_str(&fs::read_to_string(self.path("containerd.log")).unwrap_or_default());
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }

        /// `ctr --address <ours> ARGS`, bounded.
        fn ctr(&self, args: &[&str]) -> Out {
            self.ctr_timeout(args, CTR_TIMEOUT)
        }

        fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Out {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address")
                .arg(self.path("containerd.sock"))
                .args(args);
            self.run(cmd, timeout)
        }

        fn run(&self, mut cmd: Command, timeout: Duration) -> Out {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (o, e) = (
                self.path(&format!("out.{n}")),
                self.path(&format!("err.{n}")),
            );
            cmd.stdin(Stdio::null())
                .stdout(fs::File::create(&o).unwrap())
                .stderr(fs::File::create(&e).unwrap());
            let desc = format!("{cmd:?}");
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{desc}: {e}"));
            let code = wait_bounded(&mut child, timeout)
                .unwrap_or_else(|| panic!("{desc} did not finish in {timeout:?}"));
            Out {
                code,
                stdout: fs::read_to_string(&o).unwrap_or_default(),
                stderr: fs::read_to_string(&e).unwrap_or_default(),
            }
        }

        /// `ctr run` with runm as the runc binary of containerd's runc shim.
        fn ctr_run(&self, extra: &[&str], id: &str, args: &[&str]) -> Out {
            self.ids.borrow_mut().push(id.to_string());
            let (runm_root, fifo) = (self.runm_root(), self.path("fifo"));
            let mut v: Vec<&str> = vec![
                "run",
                "--runtime",
                "io.containerd.runc.v2",
                "--runc-binary",
                RUNM,
                "--runc-root",
                runm_root.to_str().unwrap(),
                "--fifo-dir",
                fifo.to_str().unwrap(),
                "--snapshotter",
                "native",
            ];
            v.extend_from_slice(extra);
            v.push(IMAGE);
            v.push(id);
            v.extend_from_slice(args);
            self.ctr(&v)
        }

        /// `runm --root <the shim's root for namespace default> ARGS`.
        fn runm(&self, args: &[&str], stdin: Option<&str>) -> Out {
            let mut cmd = Command::new(RUNM);
            cmd.arg("--root")
                .arg(self.runm_root().join("default"))
                .args(args);
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let Some(input) = stdin else {
                return self.run(cmd, CTR_TIMEOUT);
            };
            let (o, e) = (self.path("runm.out"), self.path("runm.err"));
            cmd.stdin(Stdio::piped())
                .stdout(fs::File::create(&o).unwrap())
                .stderr(fs::File::create(&e).unwrap());
            let mut child = cmd.spawn().unwrap();
            {
                use std::io::Write;
                let mut sin = child.stdin.take().unwrap();
                sin.write_all(input.as_bytes()).unwrap();
            }
            let code = wait_bounded(&mut child, CTR_TIMEOUT).expect("runm finishes");
            Out {
                code,
                stdout: fs::read_to_string(&o).unwrap_or_default(),
                stderr: fs::read_to_string(&e).unwrap_or_default(),
            }
        }

        /// The task's status in `ctr task ls` (empty if it is not listed).
        fn task_status(&self, id: &str) -> String {
            let out = self.ctr(&["task", "ls"]);
            assert_eq!(out.code, 0, "{out:?}");
            out.stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id))
                .and_then(|l| l.split_whitespace().nth(2))
                .unwrap_or_default()
                .to_string()
        }

        fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) {
            let until = Instant::now() + timeout;
            loop {
                let s = self.task_status(id);
                if s == status {
                    return;
                }
                assert!(
                    Instant::now() < until,
                    "{id} never became {status} (is '{s}')"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        /// The container's cgroup directory in `controller`'s hierarchy, if
        /// that hierarchy is a v1 mount here.
        fn cgroup_dir(&self, controller: &str) -> Option<PathBuf> {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mount = mountinfo.lines().find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let r: Vec<&str> = right.split(' ').collect();
                let l: Vec<&str> = left.split(' ').collect();
                (r.first() == Some(&"cgroup")
                    && r.get(2)?.split(',').any(|o| o == controller)
                    && l.get(3) == Some(&"/"))
                .then(|| PathBuf::from(l[4]))
            })?;
            let own = fs::read_to_string("/proc/self/cgroup").unwrap();
            let own = own.lines().find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                c.split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_string())
            })?;
            Some(mount.join(own.trim_start_matches('/')).join(&self.cgroup))
        }

        /// Stops containerd by its pid: SIGTERM, then SIGKILL after 15 s.
        fn stop(&mut self) -> Option<i32> {
            let mut child = self.child.take()?;
            let pid = i32::try_from(child.id()).unwrap();
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            wait_bounded(&mut child, Duration::from_secs(15))
        }
    }

    impl Drop for Containerd {
        fn drop(&mut self) {
            self.stop();
            // A failed test may leave shims, sandboxes, VMs and relays: each
            // names the temporary directory on its command line.
            let needle = self.tmp.path().to_string_lossy().into_owned();
            for p in processes_mentioning(&needle) {
                if let Some(pid) = p.split(' ').next().and_then(|s| s.parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a pid we just found; no memory involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            for m in mounts_under(self.tmp.path()).into_iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
            for c in CONTROLLERS {
                if let Some(d) = self.cgroup_dir(c) {
                    // rmdir only: a cgroup with processes stays, and says so.
                    if d.exists() {
                        if let Err(e) = fs::remove_dir(&d) {
                            eprintln!("cannot remove test cgroup {}: {e}", d.display());
                        }
                    }
                }
            }
            // A shim killed above left its socket: containerd 1.6 names it
            // sha256("<containerd address>/<namespace>/<id>").
            for id in self.ids.borrow().iter() {
                let key = self.path("containerd.sock").join("default").join(id);
                let name = sha256_hex(key.to_string_lossy().as_bytes());
                let sock = Path::new(SHIM_SOCKET_DIRS[0]).join(name);
                if fs::symlink_metadata(&sock)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = fs::remove_file(&sock);
                }
            }
            for (dir, existed) in SHIM_SOCKET_DIRS.iter().zip(&self.socket_dirs_existed) {
                if !existed {
                    // Only if empty: another containerd may be using it now.
                    let _ = fs::remove_dir(dir);
                }
            }
        }
    }

    /// Builds an OCI image archive holding one busybox layer, named
    /// [`IMAGE`] for `ctr image import`.
    fn busybox_image(dir: &Path) -> PathBuf {
        let tarball = dir.join("image.tar");
        let image = test_support::images::OciImage {
            name: IMAGE,
            cmd: &["sh"],
        };
        test_support::images::oci_archive(&dir.join("build"), &tarball, &[image])
            .expect("the OCI image archive");
        tarball
    }

    /// The parent pid of `pid`.
    fn ppid(pid: i32) -> i32 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    fn cmdline(pid: i32) -> String {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    }

    fn line_count(p: &Path) -> usize {
        fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn containerd_runs_busybox_in_runm_microvms() {
        let started = Instant::now();
        let mut c = Containerd::start();
        eprintln!(
            "[containerd] started with root, state and socket under {}",
            c.tmp.path().display()
        );

        let image = busybox_image(&c.path("image"));
        let out = c.ctr(&[
            "image",
            "import",
            "--snapshotter",
            "native",
            image.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "image import: {out:?}");

        // 1. Output arrives and the exit status is the workload's.
        let out = c.ctr_run(
            &["--rm", "--cgroup", ""],
            "runm-exit",
            &["sh", "-c", "echo hello from a runm microVM; exit 3"],
        );
        assert_eq!(out.code, 3, "{out:?}\n{}", c.log());
        assert_eq!(
            out.stdout.trim_end(),
            "hello from a runm microVM",
            "{out:?}"
        );
        assert!(
            !out.stderr.contains("runm:"),
            "runm's own notices stay in its log: {out:?}"
        );
        eprintln!(
            "[containerd] ctr run: output and exit status 3 ({:?})",
            started.elapsed()
        );

        // 2. A long-running container, in the test's own cgroup, with a
        // memory limit and its output in a file (to watch pause).
        let id = "runm-main";
        let out_file = c.path("main.out");
        let log_uri = format!("file://{}", out_file.display());
        let cgroup = c.cgroup.clone();
        let out = c.ctr_run(
            &[
                "-d",
                "--cgroup",
                &cgroup,
                "--memory-limit",
                "268435456",
                "--log-uri",
                &log_uri,
            ],
            id,
            &[
                "sh",
                "-c",
                "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
            ],
        );
        assert_eq!(out.code, 0, "{out:?}\n{}", c.log());
        c.wait_task_status(id, "RUNNING", Duration::from_secs(30));
        eventually("ticks arrive", Duration::from_secs(60), || {
            line_count(&out_file) >= 3
        });

        // The pid containerd got is runm's sandbox, a child of the shim.
        let bundle = c.path(&format!("state/io.containerd.runtime.v2.task/default/{id}"));
        let pid: i32 = fs::read_to_string(bundle.join("init.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(cmdline(pid).contains(" sandbox "), "{}", cmdline(pid));
        let shim = ppid(pid);
        assert!(
            cmdline(shim).contains("containerd-shim-runc-v2"),
            "parent: {}",
            cmdline(shim)
        );
        let state = c.runm(&["state", id], None);
        let state: serde_json::Value = serde_json::from_str(&state.stdout).unwrap();
        assert_eq!(state["status"], "running");
        assert_eq!(state["pid"], pid);

        // Sandbox and VM are in the container's host cgroup, with guest RAM
        // (256 MiB) plus the QEMU overhead (256 MiB) as the host limit.
        let memcg = c.cgroup_dir("memory");
        match &memcg {
            Some(dir) => {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
                let procs: Vec<i32> = procs.lines().map(|l| l.parse().unwrap()).collect();
                assert!(procs.contains(&pid), "{procs:?}");
                assert!(
                    procs
                        .iter()
                        .any(|p| ppid(*p) == pid && cmdline(*p).contains("qemu")),
                    "the VM process is in the cgroup too: {procs:?}"
                );
                let limit = fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
                assert_eq!(limit.trim(), (512u64 << 20).to_string());
                eprintln!(
                    "[containerd] sandbox {pid} and its VM are in {}",
                    dir.display()
                );
                // containerd's metrics come from that cgroup.
                let out = c.ctr(&["task", "metrics", id]);
                assert_eq!(out.code, 0, "{out:?}");
                assert!(
                    out.stdout
                        .lines()
                        .any(|l| l.starts_with("memory.limit_in_bytes")
                            && l.contains(&(512u64 << 20).to_string())),
                    "{out:?}"
                );
            }
            None => {
                eprintln!("[containerd] no cgroup v1 memory hierarchy here: cgroup checks skipped")
            }
        }

        // 3. exec: a second process, attached (output, status) and detached.
        let exec_root = c.path("fifo");
        let fifo = exec_root.to_str().unwrap();
        let out = c.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            fifo,
            "--exec-id",
            "e1",
            id,
            "sh",
            "-c",
            "echo exec says hi; exit 5",
        ]);
        assert_eq!(out.code, 5, "{out:?}");
        assert_eq!(out.stdout.trim_end(), "exec says hi", "{out:?}");
        // With a terminal: the shim passes --console-socket and relays the
        // pty master; ctr wants a terminal of its own, which script(1) gives.
        let ctr_line = format!(
            "ctr --address {} task exec -t --fifo-dir {fifo} --exec-id t1 {id} sh -c 'tty; exit 4'",
            c.path("containerd.sock").display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &ctr_line, "/dev/null"]);
        let out = c.run(cmd, CTR_TIMEOUT);
        assert_eq!(out.code, 4, "{out:?}");
        assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
        let out = c.ctr(&[
            "task",
            "exec",
            "-d",
            "--fifo-dir",
            fifo,
            "--exec-id",
            "e2",
            id,
            "sleep",
            "600",
        ]);
        assert_eq!(out.code, 0, "{out:?}");

        // 4. ps: host pids; the exec's relay is named by its exec id.
        let out = c.ctr(&["task", "ps", id]);
        assert_eq!(out.code, 0, "{out:?}");
        eprintln!("[containerd] ctr task ps:\n{}", out.stdout.trim_end());
        assert!(
            out.stdout.lines().any(|l| l.starts_with(&pid.to_string())),
            "{out:?}"
        );
        assert!(out.stdout.contains("ExecID:e2"), "{out:?}");
        let e2: i32 = fs::read_to_string(bundle.join("e2.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(ppid(e2), shim, "the exec relay is the shim's child too");

        // 5. kill ends the exec'd process. The shim signals an exec's pid
        // itself: with SIGKILL that is its relay, and the process inside
        // the VM must go with it.
        let table = c.runm(&["ps", id], None);
        assert_eq!(table.code, 0, "{table:?}");
        eprintln!("[containerd] runm ps:\n{}", table.stdout.trim_end());
        let guest_pid = table
            .stdout
            .lines()
            .find(|l| l.starts_with(&e2.to_string()))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no relay {e2} in {table:?}"))
            .to_string();
        let out = c.ctr(&["task", "kill", "--signal", "SIGKILL", "--exec-id", "e2", id]);
        assert_eq!(out.code, 0, "{out:?}");
        eventually("e2 is gone from ps", Duration::from_secs(60), || {
            !c.ctr(&["task", "ps", id]).stdout.contains("ExecID:e2")
        });
        eventually(
            "e2's process is gone from the guest",
            Duration::from_secs(60),
            || {
                let t = c.runm(&["ps", id], None).stdout;
                !t.lines().any(|l| {
                    l.split_whitespace().next() == Some(guest_pid.as_str()) && l.contains("guest")
                })
            },
        );

        // 6. pause stops the workload (no more ticks), resume continues it.
        let out = c.ctr(&["task", "pause", id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(c.task_status(id), "PAUSED");
        let st: serde_json::Value =
            serde_json::from_str(&c.runm(&["state", id], None).stdout).unwrap();
        assert_eq!(st["status"], "paused");
        std::thread::sleep(Duration::from_secs(1));
        let before = line_count(&out_file);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(line_count(&out_file), before, "output went on while paused");
        let out = c.ctr(&["task", "resume", id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(c.task_status(id), "RUNNING");
        eventually("ticks resume", Duration::from_secs(60), || {
            line_count(&out_file) > before + 2
        });
        eprintln!("[containerd] pause held the output at {before} lines; resume continued it");

        // 7. update, as the shim calls it (resources as JSON on stdin).
        let out = c.runm(
            &["update", "--resources", "-", id],
            Some(r#"{"memory":{"limit":268435456}}"#),
        );
        assert_eq!(out.code, 0, "same guest RAM is accepted: {out:?}");
        let log = c.path("update.log.json");
        let logs = log.to_str().unwrap();
        let out = c.runm(
            &[
                "--log",
                logs,
                "--log-format",
                "json",
                "update",
                "--resources",
                "-",
                id,
            ],
            Some(r#"{"memory":{"limit":1073741824},"pids":{"limit":10}}"#),
        );
        assert_eq!(out.code, 1, "{out:?}");
        let last = fs::read_to_string(&log).unwrap();
        let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        let msg = last["msg"].as_str().unwrap();
        assert!(
            msg.contains("guest RAM is fixed at 256 MiB")
                && msg.contains("pids.limit")
                && msg.contains("nothing was changed"),
            "{msg}"
        );
        if let Some(cpu) = c.cgroup_dir("cpu") {
            let out = c.runm(
                &["update", "--resources", "-", id],
                Some(r#"{"cpu":{"quota":50000,"period":100000}}"#),
            );
            assert_eq!(out.code, 0, "{out:?}");
            let q = fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(q.trim(), "50000");
        }
        if let Some(dir) = &memcg {
            let limit = fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
            assert_eq!(
                limit.trim(),
                (512u64 << 20).to_string(),
                "the refused update changed nothing"
            );
        }

        // 8. kill ends the container: SIGKILL gives 137.
        let out = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        assert_eq!(out.code, 0, "{out:?}");
        c.wait_task_status(id, "STOPPED", Duration::from_secs(60));
        let out = c.ctr(&["task", "rm", id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("exit code 137"), "{out:?}");
        let out = c.ctr(&["container", "rm", id]);
        assert_eq!(out.code, 0, "{out:?}");

        // 9. Nothing of the containers is left.
        let runm_root = c.runm_root();
        let left: Vec<_> = fs::read_dir(runm_root.join("default"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "runm state or images left: {left:?}");
        let tasks = c.path("state/io.containerd.runtime.v2.task/default");
        eventually(
            "the task state directories go",
            Duration::from_secs(30),
            || fs::read_dir(&tasks).map(|d| d.count() == 0).unwrap_or(true),
        );
        let root_s = runm_root.to_string_lossy().into_owned();
        eventually(
            "no sandbox, VM or relay is left",
            Duration::from_secs(30),
            || processes_mentioning(&root_s).is_empty(),
        );
        eventually("no shim is left", Duration::from_secs(30), || {
            processes_mentioning("containerd-shim-runc-v2")
                .iter()
                .all(|p| !p.contains(&*c.tmp.path().to_string_lossy()))
        });
        assert_eq!(
            mounts_under(c.tmp.path()),
            Vec::<String>::new(),
            "mounts left"
        );
        for ctl in CONTROLLERS {
            if let Some(d) = c.cgroup_dir(ctl) {
                assert!(!d.exists(), "cgroup left: {}", d.display());
            }
        }
        assert!(c.ctr(&["container", "ls", "-q"]).stdout.trim().is_empty());

        // 10. containerd stops by its own pid.
        let code = c.stop();
        assert!(code.is_some(), "containerd did not stop within 15 s");
        eprintln!(
            "[containerd] all done under QEMU ({}), {:?}",
            if vm_spec::HostKvm::detect().is_pvm() {
                "software emulation: this host's KVM is PVM"
            } else {
                "see runm's log"
            },
            started.elapsed()
        );
    }
}
