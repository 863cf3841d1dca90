//! The pod scenario: what a kubelet asks of a CRI runtime for one pod of
//! three containers, under a runtime handler chosen by the caller, each
//! step checked, then the check that nothing of the pod is left. The
//! images must be in the runtime already (no registry is assumed): `image`
//! a busybox with every applet, and the runtime's own `sandbox_image`.
//!
//! Steps: `RunPodSandbox` (name, uid, namespace, hostname, log directory,
//! the PID namespace per container as kubelet asks by default) and its
//! status with the pod's IP; a "server" container (busybox httpd on port
//! 8080) and a "client" that fetches its page over `localhost`; both see
//! the pod's IP on eth0 and the pod's hostname, and only their own
//! processes; a host directory mounted in both carries files each way (and
//! to the host); `ExecSync` (stdout, stderr, exit code); the streaming
//! `Exec` (WebSocket); a peer in the runtime's network namespace reaches
//! the pod's httpd on the pod IP; a container that exits 3 is reported
//! with that code and its log, and a second attempt of it (what a restart
//! is in Kubernetes) runs in the same pod; then every container is stopped
//! and removed, and the pod too; afterwards no process, mount, network
//! namespace file or runtime state of the pod is left.
//!
//! On failure the pod is stopped and removed (best effort) before the
//! error is returned.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api;
use crate::client::{image_spec, Cri, CriError};
use crate::stream::{self, StreamError};

/// The port the server container's httpd listens on, in the pod.
pub const HTTP_PORT: u16 = 8080;
/// The page it serves.
const PAGE: &str = "pod-httpd-ok";
/// The pod's hostname.
const HOSTNAME: &str = "runm-cri-pod";
/// Where the shared host directory appears in the containers.
const SHARED: &str = "/shared";

/// What the scenario needs to know of the runtime it drives.
#[derive(Debug, Clone)]
pub struct PodScenario {
    /// The CRI socket (containerd's `grpc.address`).
    pub socket: PathBuf,
    /// The runtime handler (`RunPodSandbox`'s `runtime_handler`, a runtime
    /// name in containerd's configuration).
    pub handler: String,
    /// A busybox image with every applet, already in the runtime.
    pub image: String,
    /// A directory of the caller's for the pod's volume (`shared/`) and its
    /// log directory (`logs/`); it must be absolute.
    pub work_dir: PathBuf,
    /// The network namespace the runtime (and its CNI bridge) lives in,
    /// where the peer and the streaming client run; `None`: this process's.
    pub netns: Option<PathBuf>,
    /// The handler's state directory (runc's `--root` for containerd's
    /// `k8s.io` namespace), if known: afterwards nothing of the pod may be
    /// left in it.
    pub handler_root: Option<PathBuf>,
    /// Directories (containerd's root and state, say) under which no mount
    /// may be left afterwards.
    pub no_mounts_under: Vec<PathBuf>,
    /// How long one CRI call may take (a create may boot a VM).
    pub call_timeout: Duration,
    /// How long one wait (a container to run, a file to appear, something
    /// to go away) may take.
    pub wait_timeout: Duration,
}

/// What a passed scenario measured.
#[derive(Debug)]
pub struct ScenarioReport {
    /// The pod sandbox's id.
    pub pod_id: String,
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// Each step and its time.
    pub steps: Vec<(&'static str, Duration)>,
    /// What the pod's kernel offers its containers: MemTotal (KiB) and
    /// online CPUs.
    pub kernel_view: (u64, u32),
}

/// Why the scenario failed: the step, and what went wrong there.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A CRI call failed.
    #[error("{step}: {source}")]
    Cri {
        /// The step.
        step: &'static str,
        /// The call's error.
        #[source]
        source: CriError,
    },
    /// The streaming exec failed.
    #[error("{step}: {source}")]
    Stream {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: StreamError,
    },
    /// A file of the scenario could not be made or read.
    #[error("{step}: {}: {source}", path.display())]
    Io {
        /// The step.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something the step checks did not hold.
    #[error("{step}: {detail}")]
    Check {
        /// The step.
        step: &'static str,
        /// What was expected and what was found.
        detail: String,
    },
}

/// Runs the scenario against `s.socket` with handler `s.handler`; each
/// step's progress goes to stderr.
pub fn run_pod_scenario(s: &PodScenario) -> Result<ScenarioReport, ScenarioError> {
    let cri = Cri::connect(&s.socket, s.call_timeout).map_err(|source| ScenarioError::Cri {
        step: "connect",
        source,
    })?;
    let mut run = Run {
        cri,
        s,
        step: "connect",
        step_started: Instant::now(),
        steps: Vec::new(),
        pod: None,
        containers: Vec::new(),
        kernel_view: None,
    };
    let result = run.all();
    if result.is_err() {
        run.teardown_after_failure();
    }
    result
}

/// A running scenario: what it made so far (to tear down after a failure).
struct Run<'a> {
    cri: Cri,
    s: &'a PodScenario,
    step: &'static str,
    step_started: Instant,
    steps: Vec<(&'static str, Duration)>,
    pod: Option<String>,
    containers: Vec<String>,
    /// MemTotal (KiB) and CPUs the server container sees.
    kernel_view: Option<(u64, u32)>,
}

/// Host processes and files that must be gone once the pod is removed.
struct Traces {
    ids: Vec<String>,
    pids: Vec<i64>,
    netns: Option<String>,
}

impl Run<'_> {
    fn begin(&mut self, step: &'static str) {
        self.step = step;
        self.step_started = Instant::now();
    }

    fn done(&mut self) {
        let took = self.step_started.elapsed();
        eprintln!("[cri-pod] {}: ok ({:.1} s)", self.step, took.as_secs_f64());
        self.steps.push((self.step, took));
    }

    fn check(&self, ok: bool, detail: impl FnOnce() -> String) -> Result<(), ScenarioError> {
        if ok {
            Ok(())
        } else {
            Err(ScenarioError::Check {
                step: self.step,
                detail: detail(),
            })
        }
    }

    fn cri<T>(&self, r: Result<T, CriError>) -> Result<T, ScenarioError> {
        r.map_err(|source| ScenarioError::Cri {
            step: self.step,
            source,
        })
    }

    fn io<T>(&self, path: &Path, r: std::io::Result<T>) -> Result<T, ScenarioError> {
        r.map_err(|source| ScenarioError::Io {
            step: self.step,
            path: path.to_path_buf(),
            source,
        })
    }

    /// Polls `f` until it gives a value, at most the wait timeout; the
    /// error names `what` and the last thing `f` saw.
    fn wait_for<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Result<Result<T, String>, ScenarioError>,
    ) -> Result<T, ScenarioError> {
        let until = Instant::now() + self.s.wait_timeout;
        loop {
            match f()? {
                Ok(v) => return Ok(v),
                Err(last) if Instant::now() >= until => {
                    return Err(ScenarioError::Check {
                        step: self.step,
                        detail: format!(
                            "{what}: not within {:?}; last seen: {last}",
                            self.s.wait_timeout
                        ),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn all(&mut self) -> Result<ScenarioReport, ScenarioError> {
        let s = self.s;
        self.begin("version and image");
        let v = self.cri(self.cri.version())?;
        self.check(v.runtime_api_version == "v1", || {
            format!("the runtime does not serve CRI v1: {v:?}")
        })?;
        let has = self.cri(self.cri.has_image(&s.image))?;
        self.check(has, || {
            format!("the runtime has no image {}: import it first", s.image)
        })?;
        eprintln!(
            "[cri-pod] {} {} (CRI {}), handler {}",
            v.runtime_name, v.runtime_version, v.runtime_api_version, s.handler
        );
        self.done();

        self.begin("RunPodSandbox");
        self.check(s.work_dir.is_absolute(), || {
            format!("work_dir {} is not absolute", s.work_dir.display())
        })?;
        let shared = s.work_dir.join("shared");
        let logs = s.work_dir.join("logs");
        for d in [&shared, &logs] {
            self.io(d, std::fs::create_dir_all(d))?;
        }
        let pod_config = pod_config(&logs);
        let pod = self.cri(self.cri.run_pod_sandbox(&pod_config, &s.handler))?;
        self.pod = Some(pod.clone());
        let st = self.cri(self.cri.pod_sandbox_status(&pod))?;
        let status = st.status.clone().unwrap_or_default();
        self.check(
            status.state == api::PodSandboxState::SandboxReady as i32,
            || format!("pod not ready: {status:?}"),
        )?;
        self.check(
            status.runtime_handler.is_empty() || status.runtime_handler == s.handler,
            || format!("pod runs under handler {:?}", status.runtime_handler),
        )?;
        let ip_text = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let pod_ip: Ipv4Addr = ip_text.parse().map_err(|_| ScenarioError::Check {
            step: self.step,
            detail: format!("no IPv4 pod IP in the status: {:?}", status.network),
        })?;
        let info = verbose_info(&st.info);
        let mut traces = Traces {
            ids: vec![pod.clone()],
            pids: info["pid"].as_i64().into_iter().collect(),
            netns: info["runtimeSpec"]["linux"]["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["type"] == "network")
                .and_then(|n| n["path"].as_str())
                .map(str::to_string),
        };
        eprintln!(
            "[cri-pod] pod {pod}: IP {pod_ip}, sandbox pid {:?}, netns {:?}",
            traces.pids, traces.netns
        );
        self.done();

        self.begin("server and client containers");
        let server_script = format!(
            "mkdir -p /tmp/www && echo {PAGE} > /tmp/www/index.html && \
             exec httpd -f -p {HTTP_PORT} -h /tmp/www"
        );
        let server = self.start(&pod, &pod_config, "server", 0, &server_script, &mut traces)?;
        let client_script = format!(
            "until wget -q -O {SHARED}/client-got http://127.0.0.1:{HTTP_PORT}/; do sleep 0.2; done; \
             exec sleep 1000000"
        );
        let client = self.start(&pod, &pod_config, "client", 0, &client_script, &mut traces)?;
        let got = shared.join("client-got");
        self.wait_for("the client's page from the server over localhost", || {
            let text = std::fs::read_to_string(&got).unwrap_or_default();
            Ok(if text.trim() == PAGE {
                Ok(())
            } else {
                Err(format!("{text:?}"))
            })
        })?;
        self.done();

        self.begin("hostname, pod IP and PID namespaces");
        for c in [&server, &client] {
            let h = self.exec_ok(c, &["hostname"])?;
            self.check(h.trim() == HOSTNAME, || format!("{c}: hostname {h:?}"))?;
            let a = self.exec_ok(c, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
            self.check(a.contains(&format!("inet {pod_ip}/")), || {
                format!("{c}: eth0 has not {pod_ip}: {a:?}")
            })?;
        }
        let comm = |r: &Self, c: &str| r.exec_ok(c, &["sh", "-c", "cat /proc/[0-9]*/comm"]);
        let (in_server, in_client) = (comm(self, &server)?, comm(self, &client)?);
        self.check(
            in_server.lines().any(|l| l == "httpd") && !in_client.lines().any(|l| l == "httpd"),
            || format!("PID namespaces are not per container: server sees {in_server:?}, client sees {in_client:?}"),
        )?;
        self.done();

        self.begin("each container's memory limit");
        let limit_of = "cat /sys/fs/cgroup/memory.max 2>/dev/null \
             || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
        for c in [&server, &client] {
            let l = self.exec_ok(c, &["sh", "-c", limit_of])?;
            self.check(l.trim() == CONTAINER_MEMORY.to_string(), || {
                format!("{c}: memory limit {l:?} (expected {CONTAINER_MEMORY})")
            })?;
        }
        // What the pod's kernel offers (the VM's size under a VM runtime,
        // the host's under runc): for the caller to judge.
        let mem = self.exec_ok(&server, &["sh", "-c", "grep MemTotal /proc/meminfo"])?;
        let cpus = self.exec_ok(&server, &["nproc"])?;
        self.kernel_view = Some((
            mem.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse().ok())
                .unwrap_or(0),
            cpus.trim().parse().unwrap_or(0),
        ));
        self.done();

        self.begin("volume shared both ways");
        self.exec_ok(
            &server,
            &["sh", "-c", &format!("echo from-server > {SHARED}/s")],
        )?;
        self.exec_ok(
            &client,
            &["sh", "-c", &format!("echo from-client > {SHARED}/c")],
        )?;
        let s_in_client = self.exec_ok(&client, &["cat", &format!("{SHARED}/s")])?;
        let c_in_server = self.exec_ok(&server, &["cat", &format!("{SHARED}/c")])?;
        let on_host = [shared.join("s"), shared.join("c")]
            .map(|p| std::fs::read_to_string(p).unwrap_or_default());
        self.check(
            s_in_client == "from-server\n"
                && c_in_server == "from-client\n"
                && on_host == ["from-server\n", "from-client\n"],
            || format!("client read {s_in_client:?}, server read {c_in_server:?}, host read {on_host:?}"),
        )?;
        self.done();

        self.begin("ExecSync");
        let r = self.cri(self.cri.exec_sync(
            &client,
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            60,
        ))?;
        self.check(
            r.stdout == b"out\n" && r.stderr == b"err\n" && r.exit_code == 7,
            || format!("expected out/err/7, got {r:?}"),
        )?;
        self.done();

        self.begin("streaming Exec");
        let url = self.cri(self.cri.exec_url(
            &client,
            &["sh", "-c", "echo streamed; echo to-stderr >&2; exit 5"],
        ))?;
        let timeout = s.call_timeout;
        let streamed = self
            .in_netns(move || stream::exec(&url, timeout))?
            .map_err(|source| ScenarioError::Stream {
                step: self.step,
                source,
            })?;
        self.check(
            streamed.stdout == b"streamed\n"
                && streamed.stderr == b"to-stderr\n"
                && streamed.exit_code == 5,
            || format!("expected streamed/to-stderr/5, got {streamed:?}"),
        )?;
        self.done();

        self.begin("a peer reaches the pod IP");
        let body = self.wait_for(
            "the pod's httpd from the runtime's network namespace",
            || self.in_netns(move || http_get(pod_ip, HTTP_PORT)),
        )?;
        self.check(body.contains(PAGE), || format!("page {body:?}"))?;
        self.done();

        self.begin("exit code, then a restart in the pod");
        let exiter = self.start(
            &pod,
            &pod_config,
            "exiter",
            0,
            "echo exiting; exit 3",
            &mut traces,
        )?;
        let st = self.wait_for("the exiter to exit", || {
            let st = self.cri(self.cri.container_status(&exiter))?;
            let status = st.status.unwrap_or_default();
            Ok(
                if status.state == api::ContainerState::ContainerExited as i32 {
                    Ok(status)
                } else {
                    Err(format!("{status:?}"))
                },
            )
        })?;
        self.check(st.exit_code == 3, || {
            format!("exit code {} (3 expected): {st:?}", st.exit_code)
        })?;
        let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
        self.check(log.contains(" stdout F exiting"), || {
            format!("its log {} holds {log:?}", st.log_path)
        })?;
        let again = self.start(
            &pod,
            &pod_config,
            "exiter",
            1,
            &format!("echo restarted > {SHARED}/restarted; exec sleep 1000000"),
            &mut traces,
        )?;
        let restarted = shared.join("restarted");
        self.wait_for("the restarted container's file", || {
            let text = std::fs::read_to_string(&restarted).unwrap_or_default();
            Ok(if text == "restarted\n" {
                Ok(())
            } else {
                Err(format!("{text:?}"))
            })
        })?;
        self.cri(self.cri.remove_container(&exiter))?;
        self.containers.retain(|c| *c != exiter);
        self.done();

        self.begin("StopContainer, RemoveContainer");
        for c in [&server, &client, &again] {
            self.cri(self.cri.stop_container(c, 2))?;
            let st = self
                .cri(self.cri.container_status(c))?
                .status
                .unwrap_or_default();
            self.check(
                st.state == api::ContainerState::ContainerExited as i32,
                || format!("{c} after StopContainer: {st:?}"),
            )?;
            self.cri(self.cri.remove_container(c))?;
        }
        self.containers.clear();
        let left = self.cri(self.cri.list_containers(&pod))?;
        self.check(left.is_empty(), || {
            format!("containers left in the pod: {left:?}")
        })?;
        self.done();

        self.begin("StopPodSandbox, RemovePodSandbox");
        self.cri(self.cri.stop_pod_sandbox(&pod))?;
        let st = self
            .cri(self.cri.pod_sandbox_status(&pod))?
            .status
            .unwrap_or_default();
        self.check(
            st.state == api::PodSandboxState::SandboxNotready as i32,
            || format!("pod after StopPodSandbox: {st:?}"),
        )?;
        self.cri(self.cri.remove_pod_sandbox(&pod))?;
        self.pod = None;
        let pods = self.cri(self.cri.list_pod_sandbox())?;
        self.check(pods.iter().all(|p| p.id != pod), || {
            format!("pod still listed: {pods:?}")
        })?;
        self.done();

        self.begin("nothing of the pod is left");
        self.wait_for("no process, mount, netns or state of the pod", || {
            Ok(self.traces_left(&traces))
        })?;
        self.done();

        Ok(ScenarioReport {
            pod_id: pod,
            pod_ip,
            steps: std::mem::take(&mut self.steps),
            kernel_view: self.kernel_view.unwrap_or_default(),
        })
    }

    /// Creates and starts container `name` (attempt `attempt`) running
    /// `sh -c script`, waits until it runs (or already exited) and records
    /// its id and pid.
    fn start(
        &mut self,
        pod: &str,
        pod_config: &api::PodSandboxConfig,
        name: &str,
        attempt: u32,
        script: &str,
        traces: &mut Traces,
    ) -> Result<String, ScenarioError> {
        let config = container_config(&self.s.image, name, attempt, script, &self.s.work_dir);
        let id = self.cri(self.cri.create_container(pod, &config, pod_config))?;
        self.containers.push(id.clone());
        traces.ids.push(id.clone());
        self.cri(self.cri.start_container(&id))?;
        let st = self.cri(self.cri.container_status(&id))?;
        let status = st.status.clone().unwrap_or_default();
        self.check(
            status.state == api::ContainerState::ContainerRunning as i32
                || status.state == api::ContainerState::ContainerExited as i32,
            || format!("{name} after StartContainer: {status:?}"),
        )?;
        traces.pids.extend(verbose_info(&st.info)["pid"].as_i64());
        Ok(id)
    }

    /// `ExecSync` that must exit 0 with nothing on stderr: its stdout.
    fn exec_ok(&self, id: &str, cmd: &[&str]) -> Result<String, ScenarioError> {
        let r = self.cri(self.cri.exec_sync(id, cmd, 60))?;
        self.check(r.exit_code == 0 && r.stderr.is_empty(), || {
            format!(
                "{cmd:?} in {id}: exit {}, stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            )
        })?;
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    }

    /// Runs `f` on a thread in the runtime's network namespace.
    fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, ScenarioError> {
        let Some(path) = &self.s.netns else {
            return Ok(f());
        };
        let ns = self.io(path, std::fs::File::open(path))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns(2) on an open namespace descriptor, for
                    // this thread only (which ends with the scope).
                    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
        .map_err(|source| ScenarioError::Io {
            step: self.step,
            path: path.clone(),
            source,
        })
    }

    /// What of the pod is still there: `Ok` when nothing.
    fn traces_left(&self, t: &Traces) -> Result<(), String> {
        let mut left = Vec::new();
        for pid in &t.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie is gone but for its parent's wait.
            if !stat.is_empty()
                && !stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                left.push(format!("process {pid}"));
            }
        }
        left.extend(processes_naming(&t.ids));
        if let Some(ns) = &t.netns {
            if Path::new(ns).exists() {
                left.push(format!("network namespace file {ns}"));
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
            let under = self
                .s
                .no_mounts_under
                .iter()
                .any(|d| Path::new(m).starts_with(d));
            if under || t.ids.iter().any(|id| m.contains(id.as_str())) {
                left.push(format!("mount {m}"));
            }
        }
        if let Some(root) = &self.s.handler_root {
            for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if t.ids.contains(&name) {
                    left.push(format!("state {}", e.path().display()));
                }
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join(", "))
        }
    }

    /// After a failure: stops and removes what the scenario made, ignoring
    /// errors (the first error is the one reported).
    fn teardown_after_failure(&mut self) {
        for c in std::mem::take(&mut self.containers).iter().rev() {
            let _ = self.cri.stop_container(c, 0);
            let _ = self.cri.remove_container(c);
        }
        if let Some(pod) = self.pod.take() {
            let _ = self.cri.stop_pod_sandbox(&pod);
            if let Err(e) = self.cri.remove_pod_sandbox(&pod) {
                eprintln!("[cri-pod] after the failure, the pod {pod} could not be removed: {e}");
            }
        }
    }
}

/// The pod's configuration, as kubelet makes it for a pod with default
/// settings.
fn pod_config(log_dir: &Path) -> api::PodSandboxConfig {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "runm-cri-pod".into(),
            uid: format!("runm-cri-{}-{nanos}", std::process::id()),
            namespace: "runm-test".into(),
            attempt: 0,
        }),
        hostname: HOSTNAME.into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: HashMap::from([("app".into(), "runm-cri-pod".into())]),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            // kubelet's sums of the containers' limits (two containers).
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 2 * CONTAINER_MEMORY,
                cpu_quota: 2 * CONTAINER_CPU_QUOTA,
                cpu_period: CPU_PERIOD,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Each container's memory limit (bytes).
const CONTAINER_MEMORY: i64 = 96 << 20;
/// Each container's CPU quota per [`CPU_PERIOD`] (0.75 CPU).
const CONTAINER_CPU_QUOTA: i64 = 75_000;
/// The CPU period (µs).
const CPU_PERIOD: i64 = 100_000;

/// kubelet's default: network and IPC per pod, PID per container.
fn namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A container of the pod running `sh -c script`, with the work
/// directory's `shared/` at [`SHARED`] and its log at `NAME_ATTEMPT.log`
/// in the pod's log directory (kubelet's layout).
fn container_config(
    image: &str,
    name: &str,
    attempt: u32,
    script: &str,
    work_dir: &Path,
) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt,
        }),
        image: Some(image_spec(image)),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}_{attempt}.log"),
        mounts: vec![api::Mount {
            container_path: SHARED.into(),
            host_path: work_dir.join("shared").to_string_lossy().into_owned(),
            ..Default::default()
        }],
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: CONTAINER_MEMORY,
                cpu_quota: CONTAINER_CPU_QUOTA,
                cpu_period: CPU_PERIOD,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The runtime's verbose `info` (containerd: one JSON document under
/// `info`), or `null`.
fn verbose_info(info: &HashMap<String, String>) -> serde_json::Value {
    info.get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Live processes (not zombies) whose command line names one of `ids`.
fn processes_naming(ids: &[String]) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if ids.iter().any(|id| cmd.contains(id.as_str())) {
            found.push(format!("process {pid} {cmd}"));
        }
    }
    found
}

/// `GET /` from `ip:port`: the whole reply, or why not.
fn http_get(ip: Ipv4Addr, port: u16) -> Result<String, String> {
    let addr = (ip, port).into();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}
