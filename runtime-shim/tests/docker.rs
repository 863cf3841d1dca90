//! Docker drives runm: Debian's docker.io (20.10), started by this test in a
//! network namespace of the test's own, with its own data root, exec root,
//! socket, pid file and containerd namespace under a temporary directory,
//! and with runm added as a runtime by the `daemon.json` snippet of
//! runm's README (read from there verbatim; only the binary's path is this
//! build's). The containers run with nothing but `--runtime runm` added to
//! ordinary `docker run` command lines.
//!
//! Shown, each with its real output and exit status: on the default bridge
//! network eth0 has a 172.17.x address and the container pings the
//! bridge's gateway; `exit 3` gives 3; `-e` reaches the process; a `-v`
//! volume carries files both ways; `docker run -d` then `docker exec`
//! (output and status), `docker stop -t 2` of a workload that ignores
//! SIGTERM (killed after 2 s: 137), `docker kill` (137) and `docker rm -f`
//! of a running container; `--pid host --uts host` runs in the guest's own
//! namespaces with a warning in runm's log; `-p` publishes a busybox httpd, reached from the
//! test's namespace through docker-proxy (127.0.0.1) and through
//! iptables' DNAT (the bridge's address). After every scenario nothing of
//! its containers is left: no runm, QEMU or virtiofsd process, no shim, no
//! runm state, no mount beyond dockerd's own, no tap, no shim socket.
//! dockerd is stopped by its pid and its containerd must exit with it; a
//! guard kills everything the test started if it fails.
//!
//! All traffic stays in the test's namespace (docker0, its iptables rules
//! and docker-proxy exist only there). dockerd is started there with
//! `nsenter --net` (`ip netns exec` would remount /sys, hiding the cgroup
//! mounts dockerd needs). The image is a busybox tree imported with
//! `docker import`: no registry.
//!
//! Needs root, `dockerd` and `docker` (Debian's `docker.io`, installed by
//! `scripts/setup.sh`), `nsenter`, `ip`, `qemu-system-x86_64`, virtiofsd
//! and a static busybox. Every command and wait is bounded.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use crate::common::{
        eventually, fenced_block, guest_images, mounts_under, need, pids_in_netns,
        processes_mentioning, readme_section, run_tool, sha256_hex, wait_bounded, wait_for_daemon,
        DaemonProbe, Out, RUNM,
    };

    /// How long one `docker` call may take (a container's create boots its VM).
    const DOCKER_TIMEOUT: Duration = Duration::from_secs(240);
    /// The image the test imports.
    const IMAGE: &str = "runm-busybox:test";
    /// The runtime's name in `daemon.json`, the one thing `docker run` changes.
    const RUNTIME: &str = "runm";
    /// The path the README's snippet names; the test puts this build's there.
    const README_RUNM: &str = "/usr/local/bin/runm";
    /// containerd 1.6 (which dockerd starts) puts shim sockets here, whatever
    /// its configuration says.
    const SHIM_SOCKET_DIRS: &[&str] = &["/run/containerd/s", "/run/containerd"];
    /// dockerd 20.10 writes its identity key here (only `daemon.json` could
    /// move it, and the test uses the README's as it is): removed
    /// afterwards if the test made it.
    const TRUST_KEY: &str = "/etc/docker/key.json";
    /// The port the httpd scenario publishes (in the test's namespace only).
    const HOST_PORT: u16 = 8080;

    /// The `daemon.json` of runm's README, section "Docker": its first JSON
    /// block, verbatim, with this build's runm in place of the installed one.
    fn daemon_json_from_readme() -> String {
        let block = fenced_block(&readme_section("Docker"), "json");
        assert!(
            block.contains(README_RUNM),
            "the snippet names {README_RUNM}: {block}"
        );
        let json = block.replace(README_RUNM, RUNM);
        let v: serde_json::Value = serde_json::from_str(&json).expect("the snippet is JSON");
        assert_eq!(v["runtimes"][RUNTIME]["path"], RUNM, "{json}");
        json
    }

    /// The Docker client of the docker.io package (a newer client elsewhere
    /// on PATH would talk to dockerd too, but it is not what is tested).
    fn docker_client() -> PathBuf {
        let debian = Path::new("/usr/bin/docker");
        if debian.is_file() {
            return debian.to_path_buf();
        }
        need("docker", "apt-get install docker.io (scripts/setup.sh)")
    }

    /// The inode of a network namespace file.
    fn netns_inode(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn kill(pid: i32, sig: i32) {
        // SAFETY: kill(2) on a pid found just before; no memory involved.
        unsafe { libc::kill(pid, sig) };
    }

    /// dockerd started by the test, with everything it uses under `tmp`, in
    /// the network namespace `netns`. Dropping it stops dockerd by pid and,
    /// after a failure, kills and removes whatever is left.
    struct Docker {
        tmp: tempfile::TempDir,
        netns: String,
        netns_ino: u64,
        client: PathBuf,
        child: Option<Child>,
        /// containerd as dockerd started it (its pid), once seen.
        containerd: Option<i32>,
        /// Whether `/run/containerd/s` and its parent were there before.
        socket_dirs_existed: Vec<bool>,
        /// Mounts naming the test directory once dockerd was up (its own).
        baseline_mounts: Vec<String>,
        /// Whether [`TRUST_KEY`] and its directory were there before.
        trust_key_existed: [bool; 2],
    }

    impl Docker {
        fn start() -> Self {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            assert_eq!(unsafe { libc::geteuid() }, 0, "dockerd needs root");
            let dockerd = need("dockerd", "apt-get install docker.io (scripts/setup.sh)");
            need("nsenter", "apt-get install util-linux");
            need("ip", "apt-get install iproute2");
            need("qemu-system-x86_64", "apt-get install qemu-system-x86");
            let client = docker_client();
            let (kernel, initrd) = guest_images();
            let tmp = tempfile::Builder::new()
                .prefix("runm-docker-")
                .tempdir()
                .unwrap();
            let t = tmp.path();
            let netns = format!("runm-docker-{}", std::process::id());
            run_tool("ip", &["netns", "add", &netns]);
            run_tool("ip", &["-n", &netns, "link", "set", "lo", "up"]);
            let netns_path = Path::new("/var/run/netns").join(&netns);
            let netns_ino = netns_inode(&netns_path);
            fs::write(t.join("daemon.json"), daemon_json_from_readme()).unwrap();
            let socket_dirs_existed = SHIM_SOCKET_DIRS
                .iter()
                .map(|d| Path::new(d).exists())
                .collect();
            let key = Path::new(TRUST_KEY);
            let trust_key_existed = [key.exists(), key.parent().unwrap().exists()];
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", netns_path.display()))
                .arg(&dockerd)
                .arg("--config-file")
                .arg(t.join("daemon.json"))
                .arg("--data-root")
                .arg(t.join("data"))
                .arg("--exec-root")
                .arg(t.join("exec"))
                .arg("-H")
                .arg(format!("unix://{}", t.join("docker.sock").display()))
                .arg("--pidfile")
                .arg(t.join("docker.pid"))
                .args(["--containerd-namespace", &netns])
                .args([
                    "--containerd-plugins-namespace",
                    &format!("{netns}-plugins"),
                ])
                .stdin(Stdio::null())
                .stdout(fs::File::create(t.join("dockerd.log")).unwrap())
                .stderr(fs::File::create(t.join("dockerd.err")).unwrap())
                // What containerd, its shims and runm inherit: where the guest
                // images are, runm's default configuration whatever the host's
                // /etc/runm says, and boot time for emulation on a busy host.
                .env("RUNM_KERNEL", &kernel)
                .env("RUNM_INITRD", &initrd)
                .env("RUNM_CONFIG", t.join("runm-config.json"))
                .env("RUNM_BOOT_TIMEOUT", "180");
            let child = cmd.spawn().expect("dockerd starts");
            let mut d = Docker {
                tmp,
                netns,
                netns_ino,
                client,
                child: Some(child),
                containerd: None,
                socket_dirs_existed,
                baseline_mounts: Vec::new(),
                trust_key_existed,
            };
            wait_for_daemon("dockerd", || {
                let out = d.docker_timeout(&["version"], Duration::from_secs(10));
                if out.code == 0 && out.stdout.contains("Server:") {
                    DaemonProbe::Answers
                } else if let Ok(Some(e)) = d.child.as_mut().unwrap().try_wait() {
                    DaemonProbe::Exited(format!("{e}\n{}", d.log()))
                } else {
                    DaemonProbe::Not(format!("{out:?}\n{}", d.log()))
                }
            });
            let config = d.path("exec/containerd/containerd.toml");
            let found = processes_mentioning(&config.to_string_lossy());
            assert_eq!(found.len(), 1, "dockerd's containerd: {found:?}");
            d.containerd = found[0].split(' ').next().and_then(|p| p.parse().ok());
            d
        }

        fn path(&self, p: &str) -> PathBuf {
            self.tmp.path().join(p)
        }

        fn log(&self) -> String {
            let s = fs::read_to_string(self.path("dockerd.err")).unwrap_or_default();
            test_support::tail(&s, 30)
        }

        /// runm's `--root` as dockerd's runc shim gives it.
        fn runm_root(&self) -> PathBuf {
            self.path("exec/runtime-runc").join(&self.netns)
        }

        /// What runm wrote to the log the shim gave it (`--log`) for a
        /// container that exists.
        fn runm_log(&self, id: &str) -> String {
            let log = self
                .path("exec/containerd/daemon/io.containerd.runtime.v2.task")
                .join(&self.netns)
                .join(id)
                .join("log.json");
            fs::read_to_string(log).unwrap_or_default()
        }

        /// `docker ARGS` against this dockerd, bounded; printed with its
        /// output and time.
        fn docker(&self, args: &[&str]) -> Out {
            let started = Instant::now();
            let out = self.docker_timeout(args, DOCKER_TIMEOUT);
            eprintln!(
                "$ docker {}   # {:.1} s, exit {}\n{}{}",
                args.join(" "),
                started.elapsed().as_secs_f64(),
                out.code,
                indent(&out.stdout),
                indent(&out.stderr)
            );
            out
        }

        fn docker_timeout(&self, args: &[&str], timeout: Duration) -> Out {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (o, e) = (
                self.path(&format!("out.{n}")),
                self.path(&format!("err.{n}")),
            );
            let mut cmd = Command::new(&self.client);
            cmd.args(args)
                .env(
                    "DOCKER_HOST",
                    format!("unix://{}", self.path("docker.sock").display()),
                )
                // Not ~/.docker.
                .env("DOCKER_CONFIG", self.path("client"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(&o).unwrap())
                .stderr(fs::File::create(&e).unwrap());
            let mut child = cmd.spawn().expect("docker runs");
            let code = wait_bounded(&mut child, timeout)
                .unwrap_or_else(|| panic!("docker {args:?} did not finish in {timeout:?}"));
            Out {
                code,
                stdout: fs::read_to_string(&o).unwrap_or_default(),
                stderr: fs::read_to_string(&e).unwrap_or_default(),
            }
        }

        /// `docker run --rm --runtime runm EXTRA IMAGE sh -c SCRIPT`.
        fn run_sh(&self, extra: &[&str], script: &str) -> Out {
            let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
            self.docker(&args)
        }

        /// Runs `f` on a thread inside the test's network namespace.
        fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let ns = fs::File::open(Path::new("/var/run/netns").join(&self.netns)).unwrap();
            std::thread::spawn(move || {
                // SAFETY: setns(2) on an open nsfs descriptor, for this
                // thread only.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        }

        /// Ids of the containers created since `since` (Unix seconds).
        fn created_since(&self, since: u64) -> Vec<String> {
            let until = (now_secs() + 1).to_string();
            let out = self.docker_timeout(
                &[
                    "events",
                    "--since",
                    &since.to_string(),
                    "--until",
                    &until,
                    "--filter",
                    "type=container",
                    "--filter",
                    "event=create",
                    "--format",
                    "{{.ID}}",
                ],
                Duration::from_secs(30),
            );
            assert_eq!(out.code, 0, "{out:?}");
            out.stdout.lines().map(str::to_string).collect()
        }

        /// containerd's shim socket for container `id` (containerd 1.6:
        /// sha256 of `<address>/<namespace>/<id>`).
        fn shim_socket(&self, id: &str) -> PathBuf {
            let key = format!(
                "{}/{}/{id}",
                self.path("exec/containerd/containerd.sock").display(),
                self.netns
            );
            Path::new(SHIM_SOCKET_DIRS[0]).join(sha256_hex(key.as_bytes()))
        }

        /// Asserts that nothing of the containers created since `since` is
        /// left: no runm, QEMU, virtiofsd or shim process, no runm state,
        /// no mount beyond dockerd's own (Docker's network namespaces
        /// included), no tap, no shim socket. Returns how many containers that was.
        fn assert_nothing_left(&self, since: u64) -> usize {
            let ids = self.created_since(since);
            assert!(!ids.is_empty(), "no container was created");
            let root = self.runm_root();
            let root_s = root.to_string_lossy().into_owned();
            eventually(
                "no runm sandbox, exec relay, QEMU or virtiofsd is left",
                Duration::from_secs(30),
                || processes_mentioning(&root_s).is_empty(),
            );
            let t = self.tmp.path().to_string_lossy().into_owned();
            eventually("no shim is left", Duration::from_secs(30), || {
                processes_mentioning("containerd-shim")
                    .iter()
                    .all(|p| !p.contains(&t))
            });
            let state: Vec<_> = fs::read_dir(&root)
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(state.is_empty(), "runm state left: {state:?}");
            eventually("only dockerd's own mounts", Duration::from_secs(30), || {
                self.mounts() == self.baseline_mounts
            });
            for ns in ["", self.netns.as_str()] {
                let links = if ns.is_empty() {
                    run_tool("ip", &["-o", "link", "show"])
                } else {
                    run_tool("ip", &["-n", ns, "-o", "link", "show"])
                };
                assert!(!links.contains("runmtap"), "a tap is left: {links}");
            }
            // Docker's namespace files (exec/netns/<sandbox>) are unmounted
            // when the container goes (the mounts above) and removed by
            // libnetwork's collector a minute later, runc or not.
            for id in &ids {
                let sock = self.shim_socket(id);
                assert!(!sock.exists(), "shim socket of {id} left");
            }
            assert!(
                self.docker(&["ps", "-aq"]).stdout.trim().is_empty(),
                "containers left"
            );
            ids.len()
        }

        /// Every line of /proc/self/mountinfo that names the test directory.
        fn mounts(&self) -> Vec<String> {
            let t = self.tmp.path().to_string_lossy().into_owned();
            let mut m: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&t))
                .map(|l| l.split(' ').skip(3).take(2).collect::<Vec<_>>().join(" "))
                .collect();
            m.sort();
            m
        }

        /// Stops dockerd by its pid (SIGTERM, at most 30 s) and waits for its
        /// containerd to exit; returns dockerd's status.
        fn stop(&mut self) -> Option<i32> {
            let mut child = self.child.take()?;
            kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM);
            let code = wait_bounded(&mut child, Duration::from_secs(30));
            if let Some(pid) = self.containerd {
                let until = Instant::now() + Duration::from_secs(15);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            code
        }
    }

    impl Drop for Docker {
        fn drop(&mut self) {
            self.stop();
            // Whatever a failure left: processes naming the test directory
            // (containerd, shims, runm, QEMU, virtiofsd) or living in the
            // test's namespace (docker-proxy names neither).
            let t = self.tmp.path().to_string_lossy().into_owned();
            let mut shims = Vec::new();
            for _ in 0..3 {
                let mut pids: Vec<i32> = processes_mentioning(&t)
                    .iter()
                    .filter_map(|p| {
                        if p.contains("containerd-shim") {
                            shims.push(p.clone());
                        }
                        p.split(' ').next()?.parse().ok()
                    })
                    .collect();
                pids.extend(pids_in_netns(self.netns_ino));
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    kill(pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            // Their shim sockets (named by `-id` on the shim's command line).
            for shim in shims {
                let mut words = shim.split(' ');
                if let Some(id) = words.by_ref().skip_while(|w| *w != "-id").nth(1) {
                    let _ = fs::remove_file(self.shim_socket(id));
                }
            }
            for (dir, existed) in SHIM_SOCKET_DIRS.iter().zip(&self.socket_dirs_existed) {
                if !existed {
                    // Only if empty: another containerd may be using it now.
                    let _ = fs::remove_dir(dir);
                }
            }
            // Mounts dockerd left (overlays, namespace files), deepest
            // first, before the directory is removed.
            let mut left = mounts_under(self.tmp.path());
            left.reverse();
            for m in left {
                if let Ok(c) = std::ffi::CString::new(m) {
                    // SAFETY: umount2(2) with a valid C string; no memory kept.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
            let key = Path::new(TRUST_KEY);
            if !self.trust_key_existed[0] {
                let _ = fs::remove_file(key);
            }
            if !self.trust_key_existed[1] {
                let _ = fs::remove_dir(key.parent().unwrap());
            }
        }
    }

    fn indent(s: &str) -> String {
        s.lines().map(|l| format!("    {l}\n")).collect()
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// One scenario: its name, its time, and afterwards the check that
    /// nothing of its containers is left.
    fn scenario(d: &Docker, name: &str, f: impl FnOnce()) {
        eprintln!("\n=== {name}");
        // Seconds: `docker events` counts whole ones.
        let since = now_secs().saturating_sub(1);
        let started = Instant::now();
        f();
        let took = started.elapsed();
        let n = d.assert_nothing_left(since);
        eprintln!(
            "=== {name}: {:.1} s ({n} container(s); nothing left)",
            took.as_secs_f64()
        );
    }

    /// `GET /` on `addr` from the test's namespace: the body, or why not.
    fn http_get(addr: String) -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        Ok(reply)
    }

    #[test]
    fn docker_runs_containers_in_runm_microvms() {
        let _one = test_support::one_guest_at_a_time();
        let started = Instant::now();
        let mut d = Docker::start();
        eprintln!(
            "[docker] dockerd up in {:.1} s in namespace {}, everything under {}",
            started.elapsed().as_secs_f64(),
            d.netns,
            d.tmp.path().display()
        );

        let tar = d.path("busybox.tar");
        test_support::images::busybox_tar(&d.path("busybox"), &tar).expect("a busybox tar");
        let out = d.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert_eq!(out.code, 0, "{out:?}");
        d.baseline_mounts = d.mounts();
        let gateway = run_tool(
            "ip",
            &["-n", &d.netns, "-4", "-o", "addr", "show", "docker0"],
        );
        let gateway = gateway
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .expect("docker0 has an address")
            .to_string();
        assert!(gateway.starts_with("172.17."), "{gateway}");

        scenario(&d, "bridge network: address and ping", || {
            let out = d.run_sh(
                &[],
                "ip -4 addr show eth0; gw=$(ip route | awk '/^default/ {print $3}'); \
                 echo gateway=$gw; ping -c 1 -W 10 $gw",
            );
            assert_eq!(out.code, 0, "{out:?}\n{}", d.log());
            assert!(out.stdout.contains("inet 172.17."), "{out:?}");
            assert!(
                out.stdout.contains(&format!("gateway={gateway}")),
                "{out:?}"
            );
            assert!(out.stdout.contains("1 packets received"), "{out:?}");
        });

        scenario(&d, "exit status", || {
            let out = d.run_sh(&[], "echo before exit; exit 3");
            assert_eq!(out.code, 3, "{out:?}");
            assert_eq!(out.stdout, "before exit\n");
            assert!(!out.stderr.contains("runm"), "runm kept quiet: {out:?}");
        });

        scenario(&d, "environment (-e)", || {
            let out = d.run_sh(&["-e", "GREETING=hello from docker"], "echo \"$GREETING\"");
            assert_eq!(out.code, 0, "{out:?}");
            assert_eq!(out.stdout, "hello from docker\n");
        });

        scenario(&d, "volume (-v) both ways", || {
            let vol = d.path("volume");
            fs::create_dir_all(&vol).unwrap();
            fs::write(vol.join("from-host"), "written on the host\n").unwrap();
            let spec = format!("{}:/data", vol.display());
            let out = d.run_sh(
                &["-v", &spec],
                "cat /data/from-host; echo written in the VM > /data/from-guest",
            );
            assert_eq!(out.code, 0, "{out:?}");
            assert_eq!(out.stdout, "written on the host\n");
            assert_eq!(
                fs::read_to_string(vol.join("from-guest")).unwrap(),
                "written in the VM\n"
            );
        });

        scenario(&d, "run -d, exec, stop -t 2", || {
            let out = d.docker(&[
                "run",
                "-d",
                "--name",
                "stubborn",
                "--runtime",
                RUNTIME,
                IMAGE,
                "sh",
                "-c",
                "trap '' TERM; echo ready; while true; do sleep 1; done",
            ]);
            assert_eq!(out.code, 0, "{out:?}\n{}", d.log());
            let id = out.stdout.trim().to_string();
            assert_eq!(id.len(), 64, "{out:?}");
            // runm's notices in the log the shim gave it, for the record.
            for line in d.runm_log(&id).lines() {
                eprintln!("    runm log: {line}");
            }
            let out = d.docker(&[
                "exec",
                "stubborn",
                "sh",
                "-c",
                "echo exec in $(hostname); exit 4",
            ]);
            assert_eq!(out.code, 4, "{out:?}");
            assert_eq!(out.stdout, format!("exec in {}\n", &id[..12]));
            let out = d.docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.HostConfig.Runtime}}",
                "stubborn",
            ]);
            assert_eq!(out.stdout.trim(), "running runm", "{out:?}");
            let t = Instant::now();
            let out = d.docker(&["stop", "-t", "2", "stubborn"]);
            let took = t.elapsed();
            assert_eq!(out.code, 0, "{out:?}");
            assert!(
                took >= Duration::from_secs(2),
                "SIGTERM is ignored: stop waits 2 s, took {took:?}"
            );
            let out = d.docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                "stubborn",
            ]);
            assert_eq!(out.stdout.trim(), "exited 137", "{out:?}");
            let out = d.docker(&["logs", "stubborn"]);
            assert_eq!(out.stdout, "ready\n", "{out:?}");
            assert_eq!(d.docker(&["rm", "stubborn"]).code, 0);
        });

        scenario(&d, "kill", || {
            let out = d.docker(&[
                "run",
                "-d",
                "--name",
                "victim",
                "--runtime",
                RUNTIME,
                IMAGE,
                "sleep",
                "600",
            ]);
            assert_eq!(out.code, 0, "{out:?}");
            let out = d.docker(&["kill", "victim"]);
            assert_eq!(out.code, 0, "{out:?}");
            let out = d.docker(&["wait", "victim"]);
            assert_eq!(out.stdout.trim(), "137", "{out:?}");
            assert_eq!(d.docker(&["rm", "victim"]).code, 0);
        });

        scenario(&d, "rm -f of a running container", || {
            let out = d.docker(&[
                "run",
                "-d",
                "--name",
                "doomed",
                "--runtime",
                RUNTIME,
                IMAGE,
                "sleep",
                "600",
            ]);
            assert_eq!(out.code, 0, "{out:?}");
            let out = d.docker(&["inspect", "-f", "{{.State.Status}}", "doomed"]);
            assert_eq!(out.stdout.trim(), "running", "{out:?}");
            let out = d.docker(&["rm", "-f", "doomed"]);
            assert_eq!(out.code, 0, "{out:?}");
            assert_eq!(out.stdout.trim(), "doomed");
        });

        scenario(
            &d,
            "--pid host, --uts host: the guest's own, with a warning",
            || {
                let out = d.docker(&[
                    "run",
                    "-d",
                    "--name",
                    "hostns",
                    "--pid",
                    "host",
                    "--uts",
                    "host",
                    "--runtime",
                    RUNTIME,
                    IMAGE,
                    "sleep",
                    "600",
                ]);
                assert_eq!(out.code, 0, "{out:?}\n{}", d.log());
                let id = out.stdout.trim().to_string();
                let log = d.runm_log(&id);
                let warning = log
                    .lines()
                    .find(|l| l.contains("the host's pid, uts namespace"))
                    .unwrap_or_else(|| panic!("no warning in runm's log: {log}"));
                eprintln!("    runm log: {warning}");
                assert!(warning.contains("\"level\":\"warning\""), "{warning}");
                // PID 1 is the container's own process, not the host's init.
                let out = d.docker(&["exec", "hostns", "cat", "/proc/1/cmdline"]);
                assert_eq!(out.code, 0, "{out:?}");
                assert_eq!(out.stdout, "sleep\x00600\x00", "{out:?}");
                assert_eq!(d.docker(&["rm", "-f", "hostns"]).code, 0);
            },
        );

        scenario(&d, "published port (-p)", || {
            let publish = format!("{HOST_PORT}:80");
            let out = d.docker(&[
                "run",
                "-d",
                "--name",
                "web",
                "-p",
                &publish,
                "--runtime",
                RUNTIME,
                IMAGE,
                "sh",
                "-c",
                "mkdir -p /www && echo served from a runm microVM > /www/index.html && \
                 exec httpd -f -p 80 -h /www",
            ]);
            assert_eq!(out.code, 0, "{out:?}\n{}", d.log());
            let out = d.docker(&["port", "web", "80"]);
            assert!(
                out.stdout.contains(&format!("0.0.0.0:{HOST_PORT}")),
                "{out:?}"
            );
            // docker-proxy on 127.0.0.1, iptables' DNAT on the bridge's address.
            for host in ["127.0.0.1".to_string(), gateway.clone()] {
                let addr = format!("{host}:{HOST_PORT}");
                let until = Instant::now() + Duration::from_secs(60);
                let reply = loop {
                    let a = addr.clone();
                    let r = d.within(move || http_get(a));
                    match r {
                        Ok(body) if body.contains("served from") => break body,
                        other => assert!(
                            Instant::now() < until,
                            "no answer through {addr}: {other:?}"
                        ),
                    }
                    std::thread::sleep(Duration::from_millis(500));
                };
                eprintln!(
                    "    GET http://{addr}/ from the test's namespace: {:?}",
                    reply.lines().next().unwrap_or_default()
                );
                assert!(
                    reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
                    "{reply}"
                );
                assert!(reply.ends_with("served from a runm microVM\n"), "{reply}");
            }
            assert_eq!(d.docker(&["rm", "-f", "web"]).code, 0);
        });

        // dockerd stops by its pid, and its containerd with it; nothing
        // naming the test directory is left.
        let code = d.stop();
        assert_eq!(code, Some(0), "dockerd did not stop cleanly\n{}", d.log());
        let t = d.tmp.path().to_string_lossy().into_owned();
        eventually(
            "nothing of dockerd is left",
            Duration::from_secs(15),
            || processes_mentioning(&t).is_empty() && pids_in_netns(d.netns_ino).is_empty(),
        );
        assert_eq!(
            mounts_under(d.tmp.path()),
            Vec::<String>::new(),
            "mounts left"
        );
        eprintln!(
            "[docker] all done under QEMU ({}), {:.1} s",
            if vm_spec::HostKvm::detect().is_pvm() {
                "software emulation: this host's KVM is PVM"
            } else {
                "see runm's log"
            },
            started.elapsed().as_secs_f64()
        );
    }
}
