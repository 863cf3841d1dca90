//! The sandbox: the one host process per container that owns its VM.
//!
//! `runm create` starts it (`runm sandbox ID --ready-fd N`, a re-execution of
//! runm in its own session, with create's stdio or the console pty as its
//! own). The sandbox:
//! 1. joins the container's host cgroups (`linux.cgroupsPath`, see
//!    [`crate::cgroup`]) and starts the VM process (runm-vmm or QEMU) as its
//!    child, which is placed with it and dies with it;
//! 2. connects to the agent, checks the protocol version, sends `Create`;
//! 3. writes its own pid to `--pid-file` (the container's pid: what `state`
//!    reports and containerd waits on), marks the container `created`, and
//!    tells `create` on the ready pipe (or tells it what failed, after
//!    tearing its VM down);
//! 4. serves `<root>/<id>/control.sock` for `start`, `kill`, `exec`, `ps`,
//!    `pause`, `resume` and `delete` ([`crate::control`]);
//! 5. relays stdio between its own descriptors and the agent's data frames
//!    for the container's process, and between exec clients and theirs;
//! 6. forwards the signals it receives (TERM, INT, HUP, ...) to the
//!    container's process, like an init would;
//! 7. writes `running` on `Started` and `stopped` on `Exited` of the
//!    container's process, and exits with the workload's exit status once
//!    that process has exited and the VM is gone.
//!
//! While it lives, the sandbox is the only writer of `state.json`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guest_agent::proto::{self, ContainerSpec, Frame, Message, ProcessSpec, Stream, INIT_PROCESS};
use serde::{Deserialize, Serialize};

use crate::agent_client::{self, AgentWriter};
use crate::backend::{self, BackendError, Choice, GuestImages, VmSpec};
use crate::bundle::VmSizing;
use crate::control::{self, HostProcess, HostRole, Request, Response};
use crate::state::{ContainerDir, ProcessRef, State, StateError, Status};
use crate::sys;
use crate::vmctl::VmControl;

/// How long an agent request (start, exec, ps) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// After the container's process exited and the agent was told to power
/// the guest off, how long before the VM is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// Exit status when the VM ended without the agent reporting one.
const STATUS_UNKNOWN: i32 = 255;

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The plan from `create` is unreadable.
    #[error("cannot read the sandbox plan {path}: {why}")]
    Plan {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Preparing the VM failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// State could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The VM process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The VM did not come up: the agent channel failed or the VM exited.
    #[error("{what}{context}")]
    Boot {
        /// What failed.
        what: String,
        /// The end of the VM's own output and of the guest console.
        context: String,
    },
    /// The host cgroups could not be joined.
    #[error("cannot join the container's cgroups: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The sandbox process could not be started or did not report.
    #[error("the sandbox {0}")]
    Start(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

/// What `create` decided, handed to the sandbox in `<root>/<id>/plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// What the agent builds.
    pub container: ContainerSpec,
    /// VM size.
    pub sizing: VmSizing,
    /// Backend and accelerator.
    pub choice: Choice,
    /// The VM program.
    pub program: PathBuf,
    /// Guest kernel and initramfs.
    pub images: GuestImages,
    /// Where to write the container's pid (absolute).
    pub pid_file: Option<PathBuf>,
    /// Seconds the VM gets to boot and prepare the container.
    pub boot_timeout_secs: u64,
    /// Host cgroups to join before the VM starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<crate::cgroup::Cgroups>,
    /// Host memory the VM process may use beyond guest RAM (MiB), part of
    /// the host cgroup's memory limit.
    #[serde(default)]
    pub host_overhead_mib: u64,
}

/// What the sandbox tells `create` on the ready pipe (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReadyMessage {
    /// The sandbox's pid on success.
    #[serde(default)]
    pub pid: i32,
    /// What failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last non-empty lines of `path`, joined, or `None`.
fn tail(path: &Path, lines: usize) -> Option<String> {
    let text = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if all.is_empty() {
        return None;
    }
    Some(all[all.len().saturating_sub(lines)..].join(" | "))
}

/// The end of the VM process's output and of the guest console, as context
/// for a boot failure.
fn console_tail(dir: &ContainerDir) -> String {
    let mut out = String::new();
    if let Some(t) = tail(&dir.vmm_log(), 3) {
        out.push_str(&format!("; the VM process said: {t}"));
    }
    if let Some(t) = tail(&dir.console_log(), 5) {
        out.push_str(&format!(
            "; guest console ({}) ends with: {t}",
            dir.console_log().display()
        ));
    }
    out
}

/// Entry point of `runm sandbox`: returns the exit status.
pub fn main(root: &Path, id: &str, ready_fd: RawFd) -> i32 {
    let ready = match sys::adopt_fd(ready_fd) {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("sandbox {id}: no ready descriptor {ready_fd}: {e}");
            return 1;
        }
    };
    // The VM process must not inherit the ready pipe: create waits for it.
    let _ = sys::set_cloexec(ready.as_raw_fd());
    let dir = match ContainerDir::new(root, id) {
        Ok(d) => d,
        Err(e) => {
            report_ready(&ready, Err(&e.to_string()));
            return 1;
        }
    };
    // Signals meant for the workload are forwarded, not fatal to us; block
    // them before any thread exists so every thread inherits the mask.
    let sigset = sys::block_signals(sys::FORWARDED_SIGNALS).ok();
    match setup(&dir) {
        Ok(sandbox) => {
            report_ready(&ready, Ok(sandbox.own.pid));
            drop(ready);
            sandbox.serve(sigset)
        }
        Err(e) => {
            log::error!("sandbox {id}: {e}");
            report_ready(&ready, Err(&e.to_string()));
            1
        }
    }
}

/// Tells whoever waits on `fd` that the process is ready (its pid) or what failed.
pub fn report_ready(fd: &OwnedFd, result: Result<i32, &str>) {
    let msg = match result {
        Ok(pid) => ReadyMessage { pid, error: None },
        Err(e) => ReadyMessage {
            pid: 0,
            error: Some(e.to_string()),
        },
    };
    let mut line = serde_json::to_vec(&msg).unwrap_or_default();
    line.push(b'\n');
    let _ = sys::write_all(fd.as_raw_fd(), &line);
}

/// A VM child that is killed unless set-up completes.
struct VmGuard {
    child: Option<Child>,
}

impl VmGuard {
    /// How the VM process ended, if it did within `wait` (a VM whose
    /// channel just failed is often on its way out).
    fn exited(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + wait;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// The error for a boot that failed with `what`.
    fn boot_error(&mut self, dir: &ContainerDir, what: String) -> SandboxError {
        let what = match self.exited(Duration::from_secs(1)) {
            Some(status) => {
                format!("the VM exited ({status}) before the guest agent answered ({what})")
            }
            None => what,
        };
        SandboxError::Boot {
            what,
            context: console_tail(dir),
        }
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sandbox after set-up.
struct Sandbox {
    shared: Arc<Shared>,
    vm: Child,
    agent_reader: UnixStream,
    listener: UnixListener,
    own: ProcessRef,
}

fn setup(dir: &ContainerDir) -> Result<Sandbox, SandboxError> {
    let plan_path = dir.plan_file();
    let plan: SandboxPlan = fs::read(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
        .map_err(|why| SandboxError::Plan {
            path: plan_path.clone(),
            why,
        })?;
    let own = ProcessRef::current();
    // Before the VM process exists: it is placed in our cgroups by being
    // forked from us, with none of its memory charged elsewhere.
    if let Some(cg) = &plan.cgroups {
        cg.join(own.pid)?;
    }
    let mut state = dir.load()?;
    state.runm.sandbox = Some(own);
    state.runm.backend = plan.choice.to_string();
    dir.save(&state)?;

    let vm_spec = VmSpec {
        images: &plan.images,
        sizing: plan.sizing,
        dir,
        readonly: plan.container.root.readonly,
    };
    let launch = backend::prepare(&plan.choice, &plan.program, &vm_spec)?;
    let vmm_log = fs::File::create(dir.vmm_log()).map_err(io_err("cannot create the VM log"))?;
    let vmm_log2 = vmm_log
        .try_clone()
        .map_err(io_err("cannot create the VM log"))?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .stdin(Stdio::null())
        .stdout(vmm_log)
        .stderr(vmm_log2);
    sys::configure_child(
        &mut cmd,
        sys::ChildSetup {
            // The VM must not outlive its sandbox, whatever kills the sandbox.
            parent_death_signal: Some(libc::SIGKILL),
            chdir_root: true,
            ..sys::ChildSetup::default()
        },
    );
    log::debug!(
        "sandbox {}: {} {:?}",
        dir.id,
        launch.program.display(),
        launch.args
    );
    let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        program: launch.program.display().to_string(),
        source,
    })?;
    let mut guard = VmGuard { child: Some(child) };
    let vm_ref = guard
        .child
        .as_ref()
        .and_then(|c| ProcessRef::of(i32::try_from(c.id()).unwrap_or(0)));

    let deadline = Instant::now() + Duration::from_secs(plan.boot_timeout_secs);
    let mut vm_running = || {
        guard
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    };
    let connected = backend::connect_agent(&launch.channel, deadline, &mut vm_running);
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => return Err(guard.boot_error(dir, e.to_string())),
    };
    let kernel = match agent_client::handshake(&mut stream, deadline) {
        Ok(k) => k,
        Err(e) => return Err(guard.boot_error(dir, e.to_string())),
    };
    log::info!(
        "container {}: guest agent ready, guest kernel {kernel}",
        dir.id
    );
    if let Err(e) = agent_client::create(&mut stream, plan.container.clone(), deadline) {
        return Err(guard.boot_error(dir, e.to_string()));
    }

    let sock = dir.control_socket();
    let _ = fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(io_err("cannot listen on the control socket"))?;
    if let Some(pid_file) = &plan.pid_file {
        crate::state::write_atomic(pid_file, format!("{}", own.pid).as_bytes())?;
    }
    state.status = Status::Created;
    state.pid = own.pid;
    state.runm.vm = vm_ref;
    dir.save(&state)?;

    let writer = AgentWriter::new(
        stream
            .try_clone()
            .map_err(io_err("cannot clone the agent channel"))?,
    );
    let vm = guard
        .child
        .take()
        .ok_or_else(|| SandboxError::Start("lost its VM".into()))?;
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        agent: writer,
        inner: Mutex::new(Inner {
            state,
            init_started: false,
            init_exit: None,
            killed_status: None,
            vm_exited: false,
            channel_closed: false,
            waiting: None,
            reply: None,
            execs: HashMap::new(),
            exec_hosts: HashMap::new(),
            next_exec: INIT_PROCESS + 1,
            paused: false,
        }),
        changed: Condvar::new(),
        request: Mutex::new(()),
        vm_pid: i32::try_from(vm.id()).unwrap_or(0),
        own_pid: own.pid,
        control: launch.control.clone(),
    });
    Ok(Sandbox {
        shared,
        vm,
        agent_reader: stream,
        listener,
        own,
    })
}

/// What a pending agent request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// `Started` of this process (after `Start` or `Exec`).
    Started(u32),
    /// `Processes` (after `Ps`).
    Processes,
}

/// The agent's answer to a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Started { pid: u32 },
    Processes(Vec<u32>),
    Error(String),
    Gone,
}

/// Where an exec'd process's output goes: its client's connection, once
/// that client has its answer; frames arriving earlier wait in `pending`.
struct ExecSink {
    stream: UnixStream,
    active: bool,
    pending: Vec<Frame>,
    done: bool,
}

impl ExecSink {
    fn forward(&mut self, frame: Frame) {
        if self.active {
            if proto::write_frame(&mut self.stream, &frame).is_err() {
                // The client went away; the process runs on, its output is dropped.
                self.done = true;
            }
        } else {
            self.pending.push(frame);
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if self.active {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

struct Inner {
    state: State,
    init_started: bool,
    init_exit: Option<i32>,
    /// The status to report when runm killed the VM before the process exited.
    killed_status: Option<i32>,
    vm_exited: bool,
    channel_closed: bool,
    waiting: Option<Waiting>,
    reply: Option<Reply>,
    execs: HashMap<u32, Arc<Mutex<ExecSink>>>,
    /// Running exec'd processes: (host pid of their relay, guest pid).
    exec_hosts: HashMap<u32, (i32, u32)>,
    next_exec: u32,
    /// The VM's vCPUs are stopped.
    paused: bool,
}

struct Shared {
    dir: ContainerDir,
    agent: AgentWriter,
    inner: Mutex<Inner>,
    changed: Condvar,
    /// One agent request with an answer at a time, so answers (and `Error`s)
    /// belong to the request that is waiting.
    request: Mutex<()>,
    vm_pid: i32,
    own_pid: i32,
    control: VmControl,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked thread cannot leave these structures half-updated in a way
    // that matters more than stopping the sandbox would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn save(&self, inner: &Inner) {
        if let Err(e) = self.dir.save(&inner.state) {
            log::error!("container {}: {e}", self.dir.id);
        }
    }

    /// Kills the VM now (if it still runs); `status` is reported unless the
    /// process's own status arrives first.
    fn terminate(&self, status: i32) {
        let mut inner = lock(&self.inner);
        if inner.init_exit.is_none() && inner.killed_status.is_none() {
            inner.killed_status = Some(status);
        }
        // Checked under the lock the main thread takes before reaping the VM,
        // so the pid is still our child's.
        if !inner.vm_exited {
            let _ = sys::kill(self.vm_pid, libc::SIGKILL);
        }
    }

    /// Sends `m` and waits for the answer `waiting` describes.
    fn ask(&self, m: Message, waiting: Waiting) -> Reply {
        let _one = lock(&self.request);
        {
            let mut inner = lock(&self.inner);
            if inner.channel_closed {
                return Reply::Gone;
            }
            inner.waiting = Some(waiting);
            inner.reply = None;
        }
        if let Err(e) = self.agent.send(m) {
            lock(&self.inner).waiting = None;
            return Reply::Error(e.to_string());
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut inner = lock(&self.inner);
        loop {
            if let Some(r) = inner.reply.take() {
                inner.waiting = None;
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.waiting = None;
                return Reply::Error("the guest agent did not answer in time".into());
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn answer(&self, inner: &mut Inner, r: Reply) {
        if inner.waiting.is_some() {
            inner.reply = Some(r);
            self.changed.notify_all();
        }
    }

    /// Handles one frame from the agent (the reader thread).
    fn on_frame(self: &Arc<Self>, frame: Frame) {
        match frame {
            Frame::Data {
                process_id: INIT_PROCESS,
                stream,
                data,
            } => {
                let fd = if stream == Stream::Stderr { 2 } else { 1 };
                if let Err(e) = sys::write_all(fd, &data) {
                    log::debug!("container {}: dropping output: {e}", self.dir.id);
                }
            }
            Frame::Data { process_id, .. } => {
                let sink = lock(&self.inner).execs.get(&process_id).cloned();
                if let Some(sink) = sink {
                    lock(&sink).forward(frame);
                }
            }
            Frame::Control(m) => self.on_message(*m),
        }
    }

    fn on_message(self: &Arc<Self>, m: Message) {
        let mut inner = lock(&self.inner);
        match m {
            Message::Started { process_id, pid } => {
                if process_id == INIT_PROCESS && !inner.init_started {
                    inner.init_started = true;
                    inner.state.status = Status::Running;
                    // Saved before `start` is answered: when it returns,
                    // `runm state` says running.
                    self.save(&inner);
                    let me = Arc::clone(self);
                    std::thread::spawn(move || me.relay_stdin());
                }
                if inner.waiting == Some(Waiting::Started(process_id)) {
                    self.answer(&mut inner, Reply::Started { pid });
                }
            }
            Message::Exited { process_id, status } if process_id == INIT_PROCESS => {
                if inner.init_exit.is_none() {
                    inner.init_exit = Some(status);
                    inner.state.status = Status::Stopped;
                    inner.state.runm.exit_status = Some(status);
                    self.save(&inner);
                    log::info!(
                        "container {}: process exited with status {status}",
                        self.dir.id
                    );
                    let me = Arc::clone(self);
                    std::thread::spawn(move || me.poweroff_watchdog());
                }
            }
            Message::Exited { process_id, status } => {
                inner.exec_hosts.remove(&process_id);
                if let Some(sink) = inner.execs.remove(&process_id) {
                    let mut sink = lock(&sink);
                    sink.forward(Frame::Control(Box::new(Message::Exited {
                        process_id,
                        status,
                    })));
                    sink.finish();
                }
            }
            Message::Processes { pids } => {
                if inner.waiting == Some(Waiting::Processes) {
                    self.answer(&mut inner, Reply::Processes(pids));
                }
            }
            Message::Error { message } => {
                if inner.waiting.is_some() {
                    self.answer(&mut inner, Reply::Error(message));
                } else {
                    log::warn!("container {}: guest agent: {message}", self.dir.id);
                }
            }
            other => log::debug!(
                "container {}: ignoring {other:?} from the agent",
                self.dir.id
            ),
        }
    }

    /// The container's stdin (our fd 0) to the agent, once its process runs.
    fn relay_stdin(&self) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sys::read(0, &mut buf).unwrap_or(0);
            let frame = Frame::Data {
                process_id: INIT_PROCESS,
                stream: Stream::Stdin,
                data: buf[..n].to_vec(),
            };
            if self.agent.send_frame(&frame).is_err() || n == 0 {
                return;
            }
        }
    }

    /// The container's process has exited: the agent waits for `Shutdown`
    /// to reset the guest (it gives up waiting after a second by itself).
    /// If the VM is still there after a grace period, it is killed.
    fn poweroff_watchdog(&self) {
        let _ = self.agent.send(Message::Shutdown);
        let deadline = Instant::now() + POWEROFF_GRACE;
        let mut inner = lock(&self.inner);
        while !inner.vm_exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(inner);
                log::warn!(
                    "container {}: the guest did not power off; killing the VM",
                    self.dir.id
                );
                self.terminate(STATUS_UNKNOWN);
                return;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Serves one control connection.
    fn serve_client(self: &Arc<Self>, mut conn: UnixStream) {
        let req: Request = match control::read_line(&mut conn) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = control::write_line(&mut conn, &Response::error(e.to_string()));
                return;
            }
        };
        log::debug!("container {}: control request {req:?}", self.dir.id);
        let resp = match req {
            Request::Start => self.start(),
            Request::Kill {
                signal,
                all,
                process_id: None,
            } => self.kill(signal, all),
            Request::Kill {
                signal,
                process_id: Some(process_id),
                ..
            } => match self.agent.send(Message::Signal {
                process_id,
                signal,
                all: false,
            }) {
                Ok(()) => Response::default(),
                Err(e) => Response::error(e.to_string()),
            },
            Request::Ps if lock(&self.inner).paused => Response::error(format!(
                "container '{}' is paused: its guest cannot answer",
                self.dir.id
            )),
            Request::Ps => match self.ask(Message::Ps, Waiting::Processes) {
                Reply::Processes(pids) => Response {
                    pids: Some(pids),
                    ..Response::default()
                },
                r => reply_error(r),
            },
            Request::HostPids => Response {
                host: Some(self.host_processes()),
                ..Response::default()
            },
            Request::Pause => self.pause(),
            Request::Resume => self.resume(),
            Request::Destroy => {
                self.terminate(128 + libc::SIGKILL);
                Response::default()
            }
            Request::Exec {
                process,
                client_pid,
            } => return self.exec(conn, process, client_pid),
        };
        let _ = control::write_line(&mut conn, &resp);
    }

    fn start(&self) -> Response {
        {
            let inner = lock(&self.inner);
            if inner.init_started {
                return Response::error(format!("container '{}' was already started", self.dir.id));
            }
            if inner.init_exit.is_some() || inner.killed_status.is_some() || inner.vm_exited {
                return Response::error(format!("container '{}' is stopped", self.dir.id));
            }
        }
        match self.ask(Message::Start, Waiting::Started(INIT_PROCESS)) {
            Reply::Started { pid } => Response {
                guest_pid: Some(pid),
                ..Response::default()
            },
            r => reply_error(r),
        }
    }

    fn kill(&self, signal: i32, all: bool) -> Response {
        let (started, stopped) = {
            let inner = lock(&self.inner);
            (
                inner.init_started,
                inner.init_exit.is_some() || inner.killed_status.is_some() || inner.vm_exited,
            )
        };
        if stopped {
            return Response::error(format!("container '{}' is stopped", self.dir.id));
        }
        if !started {
            // The process never ran: whatever the signal, the container ends
            // here, as a created runc container's init would on a fatal signal.
            self.terminate(128 + signal);
            return Response::default();
        }
        if signal == libc::SIGKILL && lock(&self.inner).paused {
            // A stopped guest cannot act on it; SIGKILL cannot be ignored,
            // so its outcome is known: the VM goes, as a frozen cgroup's
            // processes would be killed.
            self.terminate(128 + libc::SIGKILL);
            return Response::default();
        }
        match self.agent.send(Message::Signal {
            process_id: INIT_PROCESS,
            signal,
            all,
        }) {
            Ok(()) => Response::default(),
            Err(e) => Response::error(e.to_string()),
        }
    }

    /// The container's host processes: this sandbox, the VM, exec relays.
    fn host_processes(&self) -> Vec<HostProcess> {
        let inner = lock(&self.inner);
        let mut out = vec![HostProcess {
            pid: self.own_pid,
            role: HostRole::Sandbox,
            guest_pid: None,
        }];
        if !inner.vm_exited {
            out.push(HostProcess {
                pid: self.vm_pid,
                role: HostRole::Vm,
                guest_pid: None,
            });
        }
        let mut execs: Vec<(i32, u32)> = inner.exec_hosts.values().copied().collect();
        execs.sort_unstable();
        out.extend(execs.into_iter().map(|(pid, guest)| HostProcess {
            pid,
            role: HostRole::Exec,
            guest_pid: Some(guest),
        }));
        out
    }

    fn pause(&self) -> Response {
        let mut inner = lock(&self.inner);
        if inner.paused {
            return Response::error(format!("container '{}' is already paused", self.dir.id));
        }
        if !inner.init_started
            || inner.init_exit.is_some()
            || inner.killed_status.is_some()
            || inner.vm_exited
        {
            return Response::error(format!("container '{}' is not running", self.dir.id));
        }
        // Under the lock: the VM cannot be reaped meanwhile, so the pid is
        // still our child's.
        if let Err(e) = self.control.pause(self.vm_pid) {
            return Response::error(e.to_string());
        }
        inner.paused = true;
        inner.state.status = Status::Paused;
        self.save(&inner);
        log::info!("container {}: paused", self.dir.id);
        Response::default()
    }

    fn resume(&self) -> Response {
        let mut inner = lock(&self.inner);
        if !inner.paused {
            return Response::error(format!("container '{}' is not paused", self.dir.id));
        }
        if inner.vm_exited {
            return Response::error(format!("container '{}' is stopped", self.dir.id));
        }
        if let Err(e) = self.control.resume(self.vm_pid) {
            return Response::error(e.to_string());
        }
        inner.paused = false;
        if inner.state.status == Status::Paused {
            inner.state.status = Status::Running;
            self.save(&inner);
        }
        log::info!("container {}: resumed", self.dir.id);
        Response::default()
    }

    fn exec(self: &Arc<Self>, mut conn: UnixStream, process: ProcessSpec, client_pid: Option<i32>) {
        let Ok(out) = conn.try_clone() else { return };
        let sink = Arc::new(Mutex::new(ExecSink {
            stream: out,
            active: false,
            pending: Vec::new(),
            done: false,
        }));
        let process_id = {
            let mut inner = lock(&self.inner);
            if inner.init_exit.is_some() || inner.vm_exited || inner.channel_closed {
                drop(inner);
                let _ = control::write_line(
                    &mut conn,
                    &Response::error(format!("container '{}' is stopped", self.dir.id)),
                );
                return;
            }
            if inner.paused {
                drop(inner);
                let _ = control::write_line(
                    &mut conn,
                    &Response::error(format!(
                        "container '{}' is paused: resume it first",
                        self.dir.id
                    )),
                );
                return;
            }
            let id = inner.next_exec;
            inner.next_exec += 1;
            inner.execs.insert(id, Arc::clone(&sink));
            id
        };
        let reply = self.ask(
            Message::Exec {
                process_id,
                process,
            },
            Waiting::Started(process_id),
        );
        let Reply::Started { pid } = reply else {
            lock(&self.inner).execs.remove(&process_id);
            let _ = control::write_line(&mut conn, &reply_error(reply));
            return;
        };
        if let Some(host) = client_pid {
            let mut inner = lock(&self.inner);
            // Unless it has already exited (its Exited came first).
            if inner.execs.contains_key(&process_id) {
                inner.exec_hosts.insert(process_id, (host, pid));
            }
        }
        {
            let mut s = lock(&sink);
            let resp = Response {
                process_id: Some(process_id),
                guest_pid: Some(pid),
                ..Response::default()
            };
            if control::write_line(&mut s.stream, &resp).is_err() {
                s.done = true;
            }
            s.active = true;
            for f in std::mem::take(&mut s.pending) {
                s.forward(f);
            }
            if s.done {
                let _ = s.stream.shutdown(Shutdown::Both);
            }
        }
        // The client's stdin until it ends; then its connection until it
        // closes (after the process exited, we close it ourselves).
        let mut stdin_open = true;
        loop {
            match proto::read_frame(&mut conn) {
                Ok(Some(Frame::Data {
                    stream: Stream::Stdin,
                    data,
                    ..
                })) if stdin_open => {
                    stdin_open = !data.is_empty();
                    let frame = Frame::Data {
                        process_id,
                        stream: Stream::Stdin,
                        data,
                    };
                    if self.agent.send_frame(&frame).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        if stdin_open {
            let _ = self.agent.send_frame(&Frame::Data {
                process_id,
                stream: Stream::Stdin,
                data: Vec::new(),
            });
        }
        // The client hung up while the process runs: its relay is gone
        // (containerd's shim sends signals for an exec'd process to the
        // relay's pid, so SIGKILL lands there). The pid containerd was given
        // has ended; the process it stands for ends too, rather than run on
        // with nobody to report it.
        if lock(&self.inner).execs.contains_key(&process_id) {
            log::debug!(
                "container {}: exec client of process {process_id} went away; killing it",
                self.dir.id
            );
            let _ = self.agent.send(Message::Signal {
                process_id,
                signal: libc::SIGKILL,
                all: false,
            });
        }
    }
}

fn reply_error(r: Reply) -> Response {
    Response::error(match r {
        Reply::Error(m) => format!("the guest agent failed: {m}"),
        Reply::Gone => "the container's VM is gone".to_string(),
        other => format!("unexpected answer from the guest agent: {other:?}"),
    })
}

impl Sandbox {
    fn serve(self, sigset: Option<sys::SigSet>) -> i32 {
        let Sandbox {
            shared,
            mut vm,
            mut agent_reader,
            listener,
            own: _,
        } = self;

        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                loop {
                    match proto::read_frame(&mut agent_reader) {
                        Ok(Some(frame)) => shared.on_frame(frame),
                        Ok(None) => break,
                        Err(e) => {
                            log::debug!("container {}: agent channel: {e}", shared.dir.id);
                            break;
                        }
                    }
                }
                let mut inner = lock(&shared.inner);
                inner.channel_closed = true;
                shared.answer(&mut inner, Reply::Gone);
            })
        };
        {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => {
                            let shared = Arc::clone(&shared);
                            std::thread::spawn(move || shared.serve_client(c));
                        }
                        Err(e) => log::debug!("container {}: accept: {e}", shared.dir.id),
                    }
                }
            });
        }
        if let Some(set) = sigset {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || loop {
                let sig = sys::sigwait(&set);
                log::debug!(
                    "container {}: forwarding {}",
                    shared.dir.id,
                    crate::signal::signal_name(sig)
                );
                let _ = shared.kill(sig, false);
            });
        }

        // The VM's end is the container's end.
        let _ = sys::wait_exited_no_reap(shared.vm_pid);
        {
            let mut inner = lock(&shared.inner);
            inner.vm_exited = true;
            shared.changed.notify_all();
        }
        let vm_status = vm.wait().ok();
        log::debug!("container {}: VM exited: {vm_status:?}", shared.dir.id);
        // The channel ends with the VM; give the reader a moment to write the
        // last output before we exit.
        let until = Instant::now() + Duration::from_secs(3);
        while !reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = {
            let mut inner = lock(&shared.inner);
            let status = inner
                .init_exit
                .or(inner.killed_status)
                .unwrap_or(STATUS_UNKNOWN);
            if inner.init_exit.is_none() && inner.killed_status.is_none() {
                log::warn!(
                    "container {}: the VM ended without an exit status from the agent{}",
                    shared.dir.id,
                    console_tail(&shared.dir)
                );
            }
            inner.state.status = Status::Stopped;
            inner.state.runm.exit_status = Some(status);
            shared.save(&inner);
            for (_, sink) in inner.execs.drain() {
                lock(&sink).finish();
            }
            status
        };
        for sock in [
            shared.dir.control_socket(),
            shared.dir.agent_socket(),
            shared.dir.vsock_socket(),
            shared.dir.qmp_socket(),
        ] {
            remove_socket(&sock);
        }
        status
    }
}

fn remove_socket(p: &Path) {
    if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(p);
    }
}

/// Reads the sandbox's [`ReadyMessage`] from `fd` (create's end of the ready
/// pipe), waiting at most `timeout`.
pub fn wait_ready(fd: &OwnedFd, timeout: Duration) -> Result<i32, SandboxError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !sys::poll_readable(fd.as_raw_fd(), left)
                .map_err(io_err("cannot wait for the sandbox"))?
        {
            return Err(SandboxError::Start(format!(
                "did not report within {} s",
                timeout.as_secs()
            )));
        }
        let n = sys::read(fd.as_raw_fd(), &mut chunk)
            .map_err(io_err("cannot read from the sandbox"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') {
            break;
        }
    }
    if buf.is_empty() {
        return Err(SandboxError::Start(
            "exited before the container was created".into(),
        ));
    }
    let msg: ReadyMessage =
        serde_json::from_slice(buf.split(|b| *b == b'\n').next().unwrap_or_default())
            .map_err(|e| SandboxError::Start(format!("sent a malformed ready message: {e}")))?;
    match msg.error {
        Some(e) => Err(SandboxError::Start(format!("failed: {e}"))),
        None => Ok(msg.pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_messages() {
        let (r, w) = sys::pipe().unwrap();
        report_ready(&w, Ok(42));
        assert_eq!(wait_ready(&r, Duration::from_secs(5)).unwrap(), 42);
        report_ready(&w, Err("no kernel"));
        let e = wait_ready(&r, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the sandbox failed: no kernel");
        let e = wait_ready(&r, Duration::from_millis(20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not report"), "{e}");
        drop(w);
        let e = wait_ready(&r, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exited before"), "{e}");
    }

    #[test]
    fn exec_sink_holds_frames_until_active() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut sink = ExecSink {
            stream: a,
            active: false,
            pending: Vec::new(),
            done: false,
        };
        let f = Frame::Data {
            process_id: 1,
            stream: Stream::Stdout,
            data: b"x".to_vec(),
        };
        sink.forward(f.clone());
        assert_eq!(sink.pending.len(), 1);
        sink.active = true;
        for p in std::mem::take(&mut sink.pending) {
            sink.forward(p);
        }
        sink.finish();
        assert_eq!(proto::read_frame(&mut b).unwrap(), Some(f));
        assert_eq!(proto::read_frame(&mut b).unwrap(), None);
    }
}
