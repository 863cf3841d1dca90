//! The sandbox: the one host process per container that owns its VM.
//!
//! `runm create` starts it (`runm sandbox ID --ready-fd N`, a re-execution of
//! runm in its own session, with create's stdio or the console pty as its
//! own). The sandbox:
//! 1. joins the container's host cgroups (`linux.cgroupsPath`, see
//!    [`crate::cgroup`]), waits for `create`'s hooks if it has any, plumbs
//!    the interfaces of the network namespace it was started in
//!    ([`network`]), shares the root file system and bind mounts with
//!    the guest ([`crate::share`]) and starts the VM process (runm-vmm or QEMU) as its
//!    child, which inherits the taps, is placed with it and dies with it;
//! 2. connects to the agent, checks the protocol version, sends
//!    `ConfigureNetwork` (loopback only when there is no interface), then
//!    `Create`;
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
//!
//! A container of a pod (not its sandbox) has no VM of its own: its sandbox
//! does all of the above but 1, attaching instead to the VM of its pod's
//! sandbox, which relays its agent channel ([`pod`]).
//!
//! Its parts, one concern each: [`vm`] (VM supervision: spawn, boot, exit,
//! kill, power-off watchdog, teardown), [`pod`] (a pod's containers in one
//! VM, both ends), [`network`] (the namespace's
//! interfaces plumbed to taps for the VM, and their teardown),
//! [`control_server`] (the control
//! socket and the requests it puts to the agent), [`stdio`] (exec/stdio
//! multiplexing: data frames to and from host descriptors, exec sinks).
//! Where the container is in its life, and what each event does to it, is
//! [`crate::lifecycle`]'s to decide. This file wires them: set-up, the
//! threads, the one lock over what they share, the agent reader's
//! dispatch, and [`Shared::apply`], which feeds the lifecycle its events,
//! commits its state and performs its actions.

mod control_server;
mod network;
mod pod;
mod stdio;
mod vm;

pub use pod::PodPlan;

use std::fs;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guest_agent::proto::{self, ContainerSpec, Frame, Message, INIT_PROCESS};
use serde::{Deserialize, Serialize};

use crate::agent_client::AgentWriter;
use crate::backend::{BackendError, Choice, GuestImages};
use crate::bundle::VmSizing;
use crate::lifecycle::{self, Action, Event, Refusal};
use crate::share::{Share, ShareError, SharePlan};
use crate::state::{ContainerDir, ProcessRef, State, StateError};
use crate::sys;
use crate::vmctl::VmControl;

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
    /// The host directories could not be shared with the guest.
    #[error("cannot share host directories with the guest: {0}")]
    Share(#[from] ShareError),
    /// The network namespace could not be plumbed.
    #[error("cannot give the container its network: {0}")]
    Network(#[from] crate::network::NetworkError),
    /// No uid of its own for the VM.
    #[error(transparent)]
    VmUid(#[from] crate::vm_uid::VmUidError),
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
    /// The network namespace the sandbox was started in, whose interfaces
    /// become the guest's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The host directories the guest sees through virtio-fs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<SharePlan>,
    /// The user the VM process runs as (runm's configuration, `vm_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_user: Option<String>,
    /// `vm_uid_range`: the VM runs as a uid of its own from it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uids: Option<(u32, u32)>,
    /// A container of a pod: the VM it runs in is its pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPlan>,
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

/// Entry point of `runm sandbox`: returns the exit status.
pub fn main(root: &Path, id: &str, ready_fd: RawFd, gate_fd: Option<RawFd>) -> i32 {
    let ready = match sys::adopt_fd(ready_fd) {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("sandbox {id}: no ready descriptor {ready_fd}: {e}");
            return 1;
        }
    };
    // The VM process must not inherit the ready pipe: create waits for it.
    let _ = sys::set_cloexec(&ready);
    let gate = match gate_fd.map(sys::adopt_fd).transpose() {
        Ok(g) => g,
        Err(e) => {
            report_ready(&ready, Err(&format!("no gate descriptor: {e}")));
            return 1;
        }
    };
    if let Some(g) = &gate {
        let _ = sys::set_cloexec(g);
    }
    let dir = match ContainerDir::new(root, id) {
        Ok(d) => d,
        Err(e) => {
            report_ready(&ready, Err(&e.to_string()));
            return 1;
        }
    };
    // Signals meant for the workload are forwarded, not fatal to us; block
    // them before any thread exists so every thread inherits the mask.
    let sigset = sys::block_signals(&sys::relayed_signals()).ok();
    match setup(&dir, gate) {
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
    let _ = sys::write_all(fd, &line);
}

/// What the sandbox's threads share, under one lock.
struct Inner {
    /// Where the container is in its life.
    life: lifecycle::State,
    /// What `state.json` holds; written on [`Action::Save`].
    state: State,
    /// The agent request waiting for its answer.
    pending: control_server::Pending,
    /// The exec'd processes.
    execs: stdio::Execs,
    /// The pod's further containers attached to this VM.
    members: pod::Members,
}

/// What runs the container's guest side.
enum Machine {
    /// A VM of its own, the sandbox's child.
    Vm {
        /// Its pid.
        pid: i32,
        /// How it is paused and resumed.
        control: VmControl,
    },
    /// The VM of its pod, reached through the pod's sandbox.
    Pod {
        /// The relayed agent channel.
        channel: UnixStream,
    },
}

impl Machine {
    /// Ends it for the container. Only while the lifecycle says the VM has
    /// not exited: until then it is the sandbox's unreaped child, so the
    /// pid is still its.
    fn kill(&self) {
        match self {
            Machine::Vm { pid, .. } => vm::kill(*pid),
            // The pod's sandbox ends the container in the guest.
            Machine::Pod { channel } => {
                let _ = channel.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The VM process and how it is paused, when it is the container's own.
    fn vm(&self) -> Option<(i32, &VmControl)> {
        match self {
            Machine::Vm { pid, control } => Some((*pid, control)),
            Machine::Pod { .. } => None,
        }
    }

    /// The VM process, when it is the container's own.
    fn vm_pid(&self) -> Option<i32> {
        self.vm().map(|(pid, _)| pid)
    }
}

/// The sandbox after set-up, shared by its threads.
struct Shared {
    dir: ContainerDir,
    agent: AgentWriter,
    inner: Mutex<Inner>,
    /// Notified on every change of `inner` someone may wait for (a new
    /// state, an agent answer).
    changed: Condvar,
    /// One agent request with an answer at a time, so answers (and `Error`s)
    /// belong to the request that is waiting.
    one_request: Mutex<()>,
    machine: Machine,
    own_pid: i32,
    /// The share, when this sandbox serves one (pod members join it).
    share_dir: Option<PathBuf>,
    /// The container's process has a terminal: ours (fd 0), whose size
    /// the guest's follows.
    terminal: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked thread cannot leave these structures half-updated in a way
    // that matters more than stopping the sandbox would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Puts the lifecycle state's status (and exit status, once there is one)
/// into what `state.json` holds.
fn write_status(state: &mut State, life: lifecycle::State) {
    state.status = life.status();
    if let Some(status) = life.exit_status() {
        state.runm.exit_status = Some(status);
    }
}

impl Shared {
    fn save(&self, inner: &mut Inner) {
        write_status(&mut inner.state, inner.life);
        if let Err(e) = self.dir.save(&inner.state) {
            log::error!("container {}: {e}", self.dir.id);
        }
    }

    /// Feeds `event` to the lifecycle: commits the new state and performs
    /// the actions the sandbox does by itself. Returns those only the
    /// caller can do (they answer a request: [`Action::StartProcess`],
    /// [`Action::SendSignal`], [`Action::PauseVm`], [`Action::ResumeVm`]).
    fn apply(self: &Arc<Self>, inner: &mut Inner, event: Event) -> Result<Vec<Action>, Refusal> {
        let t = lifecycle::transition(inner.life, event)?;
        if t.next != inner.life {
            log::debug!(
                "container {}: {:?} -> {:?} on {event:?}",
                self.dir.id,
                inner.life,
                t.next
            );
        }
        inner.life = t.next;
        self.changed.notify_all();
        let mut left = Vec::new();
        for action in t.actions {
            match action {
                Action::Save => self.save(inner),
                // The transition gives it only while the VM has not exited:
                // it is still our unreaped child.
                Action::KillVm => self.machine.kill(),
                Action::RelayStdin => {
                    let me = Arc::clone(self);
                    std::thread::spawn(move || stdio::relay_stdin(&me));
                }
                Action::PowerOff => {
                    let me = Arc::clone(self);
                    std::thread::spawn(move || vm::poweroff_watchdog(&me));
                }
                Action::CloseExecs => inner.execs.close_all(),
                Action::WarnNoExitStatus => log::warn!(
                    "container {}: the VM ended without an exit status from the agent{}",
                    self.dir.id,
                    vm::console_tail(&self.dir)
                ),
                Action::StartProcess
                | Action::SendSignal { .. }
                | Action::PauseVm
                | Action::ResumeVm => left.push(action),
            }
        }
        Ok(left)
    }

    /// [`Shared::apply`] for what the VM, the agent or the sandbox itself
    /// reports: a refusal (a report out of order) is noted, not answered.
    fn feed(self: &Arc<Self>, inner: &mut Inner, event: Event) {
        match self.apply(inner, event) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => log::error!("container {}: {left:?} left undone", self.dir.id),
            Err(r) => log::debug!("container {}: {r}", self.dir.id),
        }
    }

    /// Handles one frame from the agent (the reader thread); errs on
    /// protocol abuse.
    fn on_frame(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        let Some(frame) = pod::route(self, frame) else {
            return Ok(());
        };
        match frame {
            Frame::Control(m) => {
                self.on_message(*m);
                Ok(())
            }
            data => stdio::on_data(self, data),
        }
    }

    /// The guest broke the protocol: its VM ends (a reader that stopped
    /// would leave a VM nobody listens to).
    fn abused(self: &Arc<Self>, why: &str) {
        log::warn!(
            "container {}: the guest broke the agent protocol ({why}): killing its VM",
            self.dir.id
        );
        self.feed(
            &mut lock(&self.inner),
            Event::Terminate {
                status: lifecycle::STATUS_UNKNOWN,
            },
        );
    }

    fn on_message(self: &Arc<Self>, m: Message) {
        let mut inner = lock(&self.inner);
        match m {
            Message::Started {
                process_id: INIT_PROCESS,
                ..
            } => {
                // Saved before `start` is answered: when it returns,
                // `runm state` says running.
                self.feed(&mut inner, Event::ProcessStarted);
                if inner.pending.answer(&m) {
                    self.changed.notify_all();
                }
            }
            Message::Exited {
                process_id: INIT_PROCESS,
                status,
                ..
            } => {
                let before = inner.life;
                self.feed(&mut inner, Event::ProcessExited { status });
                if inner.life != before {
                    log::info!(
                        "container {}: process exited with status {status}",
                        self.dir.id
                    );
                }
            }
            Message::Exited {
                process_id, status, ..
            } => inner.execs.exited(process_id, status),
            Message::Started { .. }
            | Message::Processes { .. }
            | Message::Created
            | Message::Deleted
            | Message::Frozen => {
                if inner.pending.answer(&m) {
                    self.changed.notify_all();
                }
            }
            Message::Error { ref message } => {
                if inner.pending.answer(&m) {
                    self.changed.notify_all();
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
}

/// The sandbox after set-up.
struct Sandbox {
    shared: Arc<Shared>,
    /// The VM process, unless the VM is the pod's.
    vm: Option<Child>,
    /// Torn down when the sandbox ends, after the VM.
    network: Option<network::SandboxNetwork>,
    /// Its daemon stopped when the sandbox ends, after the VM.
    share: Option<Share>,
    /// The VM's own uid, released when the sandbox ends.
    vm_uid: Option<crate::vm_uid::VmUid>,
    agent_reader: UnixStream,
    listener: UnixListener,
    own: ProcessRef,
}

/// Waits until `create` has run the hooks that prepare the network
/// namespace (it writes `go`); anything else means it gave up.
fn wait_gate(gate: &OwnedFd) -> Result<(), SandboxError> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16];
    loop {
        match sys::read(gate, &mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("cannot wait for create's hooks")(e)),
        }
        if got.len() > 16 || got.ends_with(b"\n") {
            break;
        }
    }
    if got == b"go\n" {
        Ok(())
    } else {
        Err(SandboxError::Start(
            "was stopped: create did not finish the hooks".into(),
        ))
    }
}

fn setup(dir: &ContainerDir, gate: Option<OwnedFd>) -> Result<Sandbox, SandboxError> {
    let plan_path = dir.plan_file();
    let mut plan: SandboxPlan = fs::read(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
        .map_err(|why| SandboxError::Plan {
            path: plan_path.clone(),
            why,
        })?;
    let own = ProcessRef::current();
    if plan.container.process.terminal {
        // The console's pty is our stdio: as its session's leader we get
        // its size changes (SIGWINCH). Not so under `run` in the caller's
        // own terminal, which is another session's.
        if let Err(e) = sys::take_controlling_terminal(rustix::stdio::stdin()) {
            log::debug!("sandbox {}: no controlling terminal: {e}", dir.id);
        }
    }
    // Before the VM process exists: it is placed in our cgroups by being
    // forked from us, with none of its memory charged elsewhere.
    if let Some(cg) = &plan.cgroups {
        cg.join(own.pid)?;
    }
    let mut state = dir.load()?;
    state.runm.sandbox = Some(own);
    state.runm.backend = plan.choice.to_string();
    dir.save(&state)?;
    if let Some(gate) = gate {
        wait_gate(&gate)?;
    }
    // Before any thread exists: the share's mounts live in a mount
    // namespace of the sandbox's own (or, for a pod's container, its pod's).
    let (stream, machine, guard, network, share, vm_uid) = match &plan.pod {
        Some(pod) => {
            let stream = pod::attach(dir, &plan, pod)?;
            let channel = stream
                .try_clone()
                .map_err(io_err("cannot clone the agent channel"))?;
            (stream, Machine::Pod { channel }, None, None, None, None)
        }
        None => {
            let mut network = network::SandboxNetwork::plumb(plan.netns.as_deref())?;
            if let Some(n) = &network {
                state.runm.plumbing = Some(n.record().clone());
                dir.save(&state)?;
            }
            let share = plan
                .share
                .as_ref()
                .map(|p| Share::start(dir, p))
                .transpose()?;
            // Held (locked) for the sandbox's life.
            let vm_uid = plan
                .vm_uids
                .map(|(first, last)| {
                    crate::vm_uid::take(Path::new(crate::vm_uid::LOCK_DIR), first, last, &dir.id)
                })
                .transpose()?;
            if let Some(u) = &vm_uid {
                plan.vm_user = Some(u.user());
                log::debug!("container {}: its VM runs as uid {}", dir.id, u.uid);
            }
            let booted = vm::boot(dir, &plan, network.as_mut(), share.is_some())?;
            let pid = booted
                .vm
                .process()
                .map(|p| p.pid)
                .ok_or_else(|| SandboxError::Start("lost its VM".into()))?;
            let machine = Machine::Vm {
                pid,
                control: booted.control,
            };
            (
                booted.stream,
                machine,
                Some(booted.vm),
                network,
                share,
                vm_uid,
            )
        }
    };

    let sock = dir.control_socket();
    let _ = fs::remove_file(&sock);
    let listener = sys::bind_unix(&sock).map_err(io_err("cannot listen on the control socket"))?;
    if let Some(pid_file) = &plan.pid_file {
        crate::state::write_atomic(pid_file, format!("{}", own.pid).as_bytes())?;
    }
    // Prepared is the one event of set-up, and its one action is Save,
    // which set-up does itself: a failure here is create's failure.
    let life = lifecycle::transition(lifecycle::State::Creating, Event::Prepared)
        .map_err(|r| SandboxError::Start(format!("cannot mark the container created: {r}")))?
        .next;
    write_status(&mut state, life);
    state.pid = own.pid;
    state.runm.vm = guard.as_ref().and_then(vm::VmGuard::process);
    dir.save(&state)?;

    let writer = AgentWriter::new(
        stream
            .try_clone()
            .map_err(io_err("cannot clone the agent channel"))?,
    );
    let vm = guard.map(vm::VmGuard::keep).transpose()?;
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        agent: writer,
        inner: Mutex::new(Inner {
            life,
            state,
            pending: control_server::Pending::default(),
            execs: stdio::Execs::new(),
            members: pod::Members::default(),
        }),
        changed: Condvar::new(),
        one_request: Mutex::new(()),
        machine,
        own_pid: own.pid,
        share_dir: share.as_ref().map(|_| dir.share_dir()),
        terminal: plan.container.process.terminal,
    });
    Ok(Sandbox {
        shared,
        vm,
        network,
        share,
        vm_uid,
        agent_reader: stream,
        listener,
        own,
    })
}

impl Sandbox {
    fn serve(self, sigset: Option<sys::SigSet>) -> i32 {
        let Sandbox {
            shared,
            mut vm,
            network,
            share,
            vm_uid,
            mut agent_reader,
            listener,
            own: _,
        } = self;

        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                loop {
                    match proto::read_frame(&mut agent_reader) {
                        Ok(Some(frame)) => {
                            if let Err(why) = shared.on_frame(frame) {
                                shared.abused(&why);
                                break;
                            }
                        }
                        // The channel ends with the VM (a reset too).
                        Ok(None) | Err(proto::ProtoError::Io(_)) => break,
                        Err(e) => {
                            shared.abused(&e.to_string());
                            break;
                        }
                    }
                }
                lock(&shared.inner).pending.close();
                shared.changed.notify_all();
            })
        };
        {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || control_server::serve(&shared, listener));
        }
        if let Some(set) = sigset {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || control_server::forward_signals(&shared, &set));
        }

        // The VM's end is the container's end; a pod's container's, the end
        // of its channel.
        match shared.machine.vm_pid() {
            Some(pid) => vm::wait_exited(pid),
            None => {
                let mut inner = lock(&shared.inner);
                while !inner.pending.closed() {
                    inner = shared
                        .changed
                        .wait(inner)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        shared.feed(&mut lock(&shared.inner), Event::VmExited);
        let vm_status = vm.as_mut().map(Child::wait);
        log::debug!("container {}: VM exited: {vm_status:?}", shared.dir.id);
        // The taps and filters go with the VM; the namespace stays. So does
        // the share's daemon (it would exit by itself once the VM hung up).
        drop(network);
        drop(share);
        drop(vm_uid);
        // The channel ends with the VM; give the reader a moment to write the
        // last output (and take the last report) before we finish.
        let until = Instant::now() + Duration::from_secs(3);
        while !reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = {
            let mut inner = lock(&shared.inner);
            shared.feed(&mut inner, Event::Finished);
            inner
                .life
                .exit_status()
                .unwrap_or(lifecycle::STATUS_UNKNOWN)
        };
        vm::remove_sockets(&shared.dir);
        status
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
            || !sys::poll_readable(fd, left).map_err(io_err("cannot wait for the sandbox"))?
        {
            return Err(SandboxError::Start(format!(
                "did not report within {} s",
                timeout.as_secs()
            )));
        }
        let n = sys::read(fd, &mut chunk).map_err(io_err("cannot read from the sandbox"))?;
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
}
