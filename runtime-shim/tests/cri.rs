//! Kubernetes' CRI drives a pod: Debian's containerd 1.6 with its CRI
//! plugin, started by this test in a network namespace of the test's own
//! (`nsenter --net`: the CNI bridge and the pods' addresses exist only
//! there), with its own configuration, root, state and socket under a
//! temporary directory, CNI from containernetworking-plugins (a bridge
//! with host-local addresses in 10.214.77.0/24, its address store in the
//! temporary directory), and a busybox image and a busybox `sleep` pause
//! image the test writes as an OCI archive and imports (no registry).
//!
//! The pod scenario itself is `cri_client::run_pod_scenario` (the same
//! code the `cri-pod` binary runs in the test host image): a pod of a
//! server, a client and a container that exits and is restarted, sharing
//! localhost, the pod IP, the hostname and a volume; `ExecSync` and the
//! streaming `Exec`; a peer in the test's namespace reaching the pod IP;
//! stop and removal of everything, then no process, mount, netns file or
//! runtime state of the pod left (see its module for each check).
//!
//! - `cri_pod_runc`: handler `runc`, the system runc: proves the harness.
//! - `cri_pod_runm`: handler `runm`, the runtime entry of runm's README
//!   (section "Kubernetes (containerd's CRI)", read verbatim; only the
//!   binary's path is this build's), under runm's QEMU backend.
//!
//! containerd is stopped by its pid; a guard stops it and kills and
//! removes whatever names the temporary directory or lives in the test's
//! namespace if the test fails, then removes the namespace.
//!
//! Needs root, `containerd` and `ctr` (Debian's `containerd`), the CNI
//! plugins in `/usr/lib/cni` (`containernetworking-plugins`), `runc`,
//! `nsenter`, `ip`, `tar`, `sha256sum` and a static busybox, all installed
//! by `scripts/setup.sh`; for runm also `qemu-system-x86_64` and
//! virtiofsd. Every call and wait is bounded.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use cri_client::{run_pod_scenario, PodScenario};
    use test_support::images::{oci_archive, OciImage};

    use crate::common::{
        fenced_block, guest_images, mounts_under, need, pids_in_netns, processes_mentioning,
        readme_section, run_tool, sha256_hex, wait_bounded, wait_for_daemon, DaemonProbe, Out,
        RUNM,
    };

    /// The busybox image the pod's containers run.
    const IMAGE: &str = "localhost/runm-busybox:cri";
    /// containerd's `sandbox_image`: busybox sleeping.
    const PAUSE_IMAGE: &str = "localhost/runm-pause:cri";
    /// The pods' subnet, inside the test's namespace only.
    const SUBNET: &str = "10.214.77.0/24";
    /// The path the README's runtime entry names; the test puts this
    /// build's there.
    const README_RUNM: &str = "/usr/local/bin/runm";
    /// Where the CNI plugins of containernetworking-plugins are.
    const CNI_BIN: &str = "/usr/lib/cni";
    /// containerd 1.6 puts shim sockets here, whatever its configuration says.
    const SHIM_SOCKET_DIRS: &[&str] = &["/run/containerd/s", "/run/containerd"];
    /// The runc shim's default state directory for containerd's `k8s.io`
    /// namespace (a handler without `Root`), and its parents.
    const SHIM_DEFAULT_ROOTS: &[&str] = &[
        "/run/containerd/runc/k8s.io",
        "/run/containerd/runc",
        "/run/containerd",
    ];
    /// Where containerd's CRI plugin binds pod network namespaces.
    const NETNS_DIR: &str = "/var/run/netns";
    /// The CNI library's cache (containerd 1.6 cannot move it); each entry
    /// goes when its pod's network is torn down.
    const CNI_CACHE_DIRS: &[&str] = &["/var/lib/cni/results", "/var/lib/cni"];
    /// How long one CRI call may take (a create may boot a VM).
    const CALL_TIMEOUT: Duration = Duration::from_secs(240);

    /// The runtime entry of runm's README, section "Kubernetes (containerd's
    /// CRI)": the TOML block between its markers, verbatim, with this
    /// build's runm in place of the installed one.
    fn runtime_entry_from_readme() -> String {
        let section = readme_section("Kubernetes (containerd's CRI)");
        let marked = section
            .split("<!-- cri-runtime-entry: begin -->\n")
            .nth(1)
            .and_then(|b| b.split("<!-- cri-runtime-entry: end -->").next())
            .expect("the section marks the runtime entry");
        assert!(
            marked.starts_with("```toml\n") && marked.trim_end().ends_with("```"),
            "the marked part is one ```toml block: {marked}"
        );
        let block = fenced_block(marked, "toml");
        assert!(
            block.contains(&format!("BinaryName = \"{README_RUNM}\"")),
            "the entry names {README_RUNM}: {block}"
        );
        assert!(
            block.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runm]"),
            "the entry is the runtime \"runm\": {block}"
        );
        block.replace(README_RUNM, RUNM)
    }

    /// The entry for handler `runc`: the system runc, its state under `root`.
    fn runc_entry(runc: &Path, root: &Path) -> String {
        format!(
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    BinaryName = "{}"
    Root = "{}"
"#,
            runc.display(),
            root.display()
        )
    }

    fn kill(pid: i32, sig: i32) {
        // SAFETY: kill(2) on a pid found just before; no memory involved.
        unsafe { libc::kill(pid, sig) };
    }

    fn cni_netns_files() -> Vec<String> {
        fs::read_dir(NETNS_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("cni-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// containerd with the CRI plugin, started by the test in its own
    /// network namespace, everything under `tmp`. Dropping it stops it by
    /// pid and, after a failure, kills and removes whatever is left.
    struct Containerd {
        tmp: tempfile::TempDir,
        netns: String,
        netns_ino: u64,
        child: Option<Child>,
        /// Whether the shim socket and CNI cache directories were there before.
        existed: Vec<(&'static str, bool)>,
        /// The pods' namespace files there were before.
        cni_netns_before: Vec<String>,
    }

    impl Containerd {
        /// Starts containerd with the runtime `runc` (the system runc, the
        /// default) and the runtime entries (TOML) `runtimes` in its
        /// configuration and `env` in its environment (its shims and
        /// runtimes inherit it), and imports the images.
        fn start(runtimes: &str, env: &[(&str, PathBuf)]) -> Self {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            assert_eq!(unsafe { libc::geteuid() }, 0, "containerd needs root");
            let containerd = need(
                "containerd",
                "apt-get install containerd (scripts/setup.sh)",
            );
            need("ctr", "apt-get install containerd (scripts/setup.sh)");
            need("nsenter", "apt-get install util-linux");
            need("ip", "apt-get install iproute2");
            for plugin in ["bridge", "host-local", "loopback"] {
                assert!(
                    Path::new(CNI_BIN).join(plugin).is_file(),
                    "the CNI plugin {CNI_BIN}/{plugin} is needed for this test: \
                     apt-get install containernetworking-plugins (scripts/setup.sh)"
                );
            }
            let tmp = tempfile::Builder::new()
                .prefix("runm-cri-")
                .tempdir()
                .unwrap();
            let t = tmp.path();
            for d in ["root", "state", "opt", "cni", "work"] {
                fs::create_dir_all(t.join(d)).unwrap();
            }
            let existed = SHIM_SOCKET_DIRS
                .iter()
                .chain(SHIM_DEFAULT_ROOTS)
                .chain(CNI_CACHE_DIRS)
                .map(|d| (*d, Path::new(d).exists()))
                .collect();
            let netns = format!("runm-cri-{}", std::process::id());
            run_tool("ip", &["netns", "add", &netns]);
            let netns_path = Path::new(NETNS_DIR).join(&netns);
            let mut c = Containerd {
                netns_ino: fs::metadata(&netns_path).unwrap().ino(),
                netns: netns.clone(),
                tmp,
                child: None,
                existed,
                cni_netns_before: cni_netns_files(),
            };
            run_tool("ip", &["-n", &netns, "link", "set", "lo", "up"]);
            let t = c.tmp.path().to_path_buf();
            let runc = need("runc", "apt-get install runc (scripts/setup.sh)");
            let runc = runc_entry(&runc, &t.join("runc"));
            fs::write(
                t.join("cni/10-runm-cri.conflist"),
                serde_json::json!({
                    "cniVersion": "1.0.0",
                    "name": "runm-cri",
                    "plugins": [{
                        "type": "bridge",
                        "bridge": "runmcri0",
                        "isGateway": true,
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": SUBNET}]],
                            "dataDir": t.join("cni-ipam"),
                        },
                    }],
                })
                .to_string(),
            )
            .unwrap();
            let config = format!(
                r#"version = 2
root = "{t}/root"
state = "{t}/state"
# Snapshotters other than native and overlayfs probe the host.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
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
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # In the test's namespace: the streaming exec is reached from there.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # No lower oom_score_adj than containerd's own (the pause container's
  # -998 is refused where the test itself runs with a raised one).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{t}/cni"
    max_conf_num = 1
{runc}
{runtimes}"#,
                t = t.display()
            );
            fs::write(t.join("config.toml"), &config).unwrap();
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", netns_path.display()))
                .arg(&containerd)
                .arg("--config")
                .arg(t.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(t.join("containerd.log")).unwrap())
                .stderr(fs::File::create(t.join("containerd.err")).unwrap())
                .envs(env.iter().map(|(k, v)| (*k, v)));
            c.child = Some(cmd.spawn().expect("containerd starts"));
            wait_for_daemon("containerd", || {
                let out = c.ctr(&["version"], Duration::from_secs(10));
                if out.code == 0 && out.stdout.contains("Server:") {
                    DaemonProbe::Answers
                } else if let Ok(Some(e)) = c.child.as_mut().unwrap().try_wait() {
                    DaemonProbe::Exited(format!("{e}\n{}", c.log()))
                } else {
                    DaemonProbe::Not(format!("{out:?}\n{}", c.log()))
                }
            });
            let archive = t.join("images.tar");
            oci_archive(
                &t.join("image-build"),
                &archive,
                &[
                    OciImage {
                        name: IMAGE,
                        cmd: &["sh"],
                    },
                    OciImage {
                        name: PAUSE_IMAGE,
                        cmd: &["sleep", "2147483647"],
                    },
                ],
            )
            .expect("the OCI image archive");
            let out = c.ctr(
                &[
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    archive.to_str().unwrap(),
                ],
                Duration::from_secs(120),
            );
            assert_eq!(out.code, 0, "ctr images import: {out:?}\n{}", c.log());
            c
        }

        fn path(&self, p: &str) -> PathBuf {
            self.tmp.path().join(p)
        }

        fn netns_path(&self) -> PathBuf {
            Path::new(NETNS_DIR).join(&self.netns)
        }

        fn log(&self) -> String {
            let s = fs::read_to_string(self.path("containerd.err")).unwrap_or_default();
            test_support::tail(&s, 40)
        }

        /// `ctr --address <ours> ARGS`, bounded.
        fn ctr(&self, args: &[&str], timeout: Duration) -> Out {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (o, e) = (
                self.path(&format!("ctr.{n}.out")),
                self.path(&format!("ctr.{n}.err")),
            );
            let mut child = Command::new("ctr")
                .arg("--address")
                .arg(self.path("containerd.sock"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(fs::File::create(&o).unwrap())
                .stderr(fs::File::create(&e).unwrap())
                .spawn()
                .expect("ctr runs");
            let code = wait_bounded(&mut child, timeout)
                .unwrap_or_else(|| panic!("ctr {args:?} did not finish in {timeout:?}"));
            Out {
                code,
                stdout: fs::read_to_string(&o).unwrap_or_default(),
                stderr: fs::read_to_string(&e).unwrap_or_default(),
            }
        }

        /// The scenario's parameters for `handler`, whose state is under
        /// `handler_root`.
        fn scenario(&self, handler: &str, handler_root: &Path) -> PodScenario {
            PodScenario {
                socket: self.path("containerd.sock"),
                handler: handler.into(),
                image: IMAGE.into(),
                work_dir: self.path("work"),
                netns: Some(self.netns_path()),
                handler_root: Some(handler_root.to_path_buf()),
                no_mounts_under: vec![self.path("root"), self.path("state")],
                call_timeout: CALL_TIMEOUT,
                wait_timeout: Duration::from_secs(120),
            }
        }

        /// Stops containerd by its pid (SIGTERM, at most 30 s); its status.
        fn stop(&mut self) -> Option<i32> {
            let mut child = self.child.take()?;
            kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM);
            wait_bounded(&mut child, Duration::from_secs(30))
        }
    }

    impl Containerd {
        /// Ids of the pods and containers containerd still knows (its CRI
        /// store and its tasks' bundles), read from its directories.
        fn known_ids(&self) -> Vec<String> {
            let mut ids = Vec::new();
            for d in [
                "root/io.containerd.grpc.v1.cri/sandboxes",
                "root/io.containerd.grpc.v1.cri/containers",
                "state/io.containerd.runtime.v2.task/k8s.io",
            ] {
                for e in fs::read_dir(self.path(d)).into_iter().flatten().flatten() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            ids
        }
    }

    impl Drop for Containerd {
        fn drop(&mut self) {
            let ids = self.known_ids();
            self.stop();
            // What a failed scenario left of its pods outside the
            // temporary directory: processes naming them (runm's sandboxes
            // and VMs under the shim's default root), the handler's state
            // (`delete --force` by runm, which also removes its taps and
            // cgroups; then the directory), shim sockets, CNI cache entries.
            for id in &ids {
                for p in processes_mentioning(id) {
                    if let Some(pid) = p.split(' ').next().and_then(|s| s.parse().ok()) {
                        kill(pid, libc::SIGKILL);
                    }
                }
                let state = Path::new(SHIM_DEFAULT_ROOTS[0]).join(id);
                if state.exists() {
                    let _ = Command::new(RUNM)
                        .args(["--root", SHIM_DEFAULT_ROOTS[0], "delete", "--force", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let _ = fs::remove_dir_all(&state);
                }
                let key = format!("{}/k8s.io/{id}", self.path("containerd.sock").display());
                let _ = fs::remove_file(
                    Path::new(SHIM_SOCKET_DIRS[0]).join(sha256_hex(key.as_bytes())),
                );
                for e in fs::read_dir(CNI_CACHE_DIRS[0])
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if e.file_name().to_string_lossy().contains(id.as_str()) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            // Whatever a failure left: shims, runc or runm, VMs (each names
            // the temporary directory or the handler's root with the
            // container id) and anything living in the test's namespace.
            let t = self.tmp.path().to_string_lossy().into_owned();
            for _ in 0..3 {
                let mut pids: Vec<i32> = processes_mentioning(&t)
                    .iter()
                    .filter_map(|p| p.split(' ').next()?.parse().ok())
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
            // Pod namespaces a failure left (new since the start), then
            // the mounts under the temporary directory, deepest first.
            for name in cni_netns_files() {
                if !self.cni_netns_before.contains(&name) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
            for m in mounts_under(self.tmp.path()).into_iter().rev() {
                if let Ok(c) = std::ffi::CString::new(m) {
                    // SAFETY: umount2(2) with a valid C string; no memory kept.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
            for (dir, existed) in &self.existed {
                if !existed {
                    // Only if empty: another containerd may be using it now.
                    let _ = fs::remove_dir(dir);
                }
            }
        }
    }

    /// Starts containerd with the runtime entries `runtimes` (beside
    /// `runc`), runs the scenario with `handler`, whose state
    /// `handler_root` says where (given the temporary directory), then
    /// stops containerd. A handler
    /// root in the temporary directory must be empty afterwards; a shared
    /// one (containerd's default) must hold nothing of the pod.
    fn pod_scenario(
        handler: &str,
        runtimes: &str,
        handler_root: impl FnOnce(&Path) -> PathBuf,
        env: &[(&str, PathBuf)],
    ) -> cri_client::ScenarioReport {
        // One containerd at a time: they share the host's shim socket and
        // CNI cache directories, whose leftovers each run checks.
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let mut c = Containerd::start(runtimes, env);
        let root = handler_root(c.tmp.path());
        eprintln!(
            "[cri] containerd up in {:.1} s in namespace {}, everything under {}",
            started.elapsed().as_secs_f64(),
            c.netns,
            c.tmp.path().display()
        );
        let s = c.scenario(handler, &root);
        let report = run_pod_scenario(&s)
            .unwrap_or_else(|e| panic!("the pod scenario failed: {e}\ncontainerd:\n{}", c.log()));
        if root.starts_with(c.tmp.path()) {
            let state: Vec<_> = fs::read_dir(&root)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(
                state.is_empty(),
                "the handler's state directory {}: {state:?}",
                root.display()
            );
        }
        let code = c.stop();
        assert_eq!(code, Some(0), "containerd's exit:\n{}", c.log());
        eprintln!(
            "[cri] {handler}: pod {} ({}) passed; {:.1} s with containerd's start and stop",
            report.pod_id,
            report.pod_ip,
            started.elapsed().as_secs_f64()
        );
        report
    }

    /// The pod under the system runc: shows the harness and the scenario
    /// hold where pods are known to work.
    #[test]
    fn cri_pod_runc() {
        let _ = pod_scenario(
            "runc",
            "",
            // The runc shim adds containerd's namespace to `Root`.
            |t| t.join("runc/k8s.io"),
            &[],
        );
    }

    /// The pod under runm, configured as its README says.
    #[test]
    fn cri_pod_runm() {
        let _one = test_support::one_guest_at_a_time();
        need("qemu-system-x86_64", "apt-get install qemu-system-x86");
        let entry = runtime_entry_from_readme();
        let (kernel, initrd) = guest_images();
        let config = tempfile::tempdir().unwrap();
        let report = pod_scenario(
            "runm",
            &entry,
            // The README's entry sets no `Root`: the runc shim's default.
            |_| PathBuf::from("/run/containerd/runc/k8s.io"),
            // What runm gets through containerd and its shim: the guest
            // images, its default configuration whatever the host's
            // /etc/runm says (the file does not exist), and boot time for
            // emulation on a busy host.
            &[
                ("RUNM_KERNEL", kernel),
                ("RUNM_INITRD", initrd),
                ("RUNM_CONFIG", config.path().join("runm-config.json")),
                ("RUNM_BOOT_TIMEOUT", "180".into()),
            ],
        );
        // The pod's VM is sized from the sandbox's resources (kubelet's
        // sums: 2 x 96 MiB, 2 x 0.75 CPU): 128 MiB + 192 MiB of RAM, more
        // than the 256 MiB a VM gets by default, and 2 vCPUs, not 1.
        let (mem_kib, cpus) = report.kernel_view;
        assert!(
            mem_kib > 256 << 10 && mem_kib <= 320 << 10,
            "the pod's guest has MemTotal {mem_kib} KiB (expected 256 to 320 MiB)"
        );
        assert_eq!(cpus, 2, "the pod's guest's CPUs");
    }
}
