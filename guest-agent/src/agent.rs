//! The agent's event loop: the host's requests, the containers' processes,
//! their exits.
//!
//! Owns the guest's containers (a map by id: one for `runm run`, a pod's
//! sandbox and its members) and the table of their processes, keyed by the
//! host's process ids. A container is created, started, stopped when its
//! init process is reported exited (its mounts are then taken down), and
//! deleted on the host's word, which frees its id.
//! One thread runs the loop; everything that can block (the host's frames,
//! child exits, output streams) arrives as an [`Event`] from its own thread,
//! so a request is always answered in order and an `Exited` is sent only
//! after that process's output has been relayed.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cgroups::{self, Cgroup, CgroupError};
use crate::console::log;
use crate::exec::{self, ExecError, ParentStdio, Prepared, RootSetup, SeccompProgram};
use crate::mounts::{self, MountError};
use crate::proto::{
    self, Capabilities, ContainerSpec, Frame, Message, ProcessSpec, ProtoError, Stream,
    PROTOCOL_VERSION,
};
use crate::relay::{self, SharedWriter};
use crate::{ps, sys};
use guest_agent::network::{self, NetworkError};

/// How long after a process exited its output may still drain before
/// `Exited` is sent anyway (a background child may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How long after the last container's process was reported (in a guest
/// that never had a pod member) the agent waits for the host's `Shutdown`
/// before resetting the guest by itself.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Why a request failed; the text goes back to the host in `Error`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A request that does not fit the current state.
    #[error("{0}")]
    OutOfOrder(String),
    /// A container id that cannot name a container.
    #[error(
        "container id {0:?} is not valid: use 1 to 255 letters, digits and _ + - . \
         (not '.', no '..', not starting with '-')"
    )]
    BadId(String),
    /// No container with this id.
    #[error("there is no container {0:?}")]
    NoContainer(String),
    /// Building the container's tree failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Starting a process failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Making the container's cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// No such process.
    #[error("no process with id {0}")]
    NoProcess(u32),
    /// A signal number out of range.
    #[error("signal {0} is not a valid signal number")]
    BadSignal(i32),
    /// kill(2) failed.
    #[error("signal {signal} to {target}: {source}")]
    Kill {
        /// Signal number.
        signal: i32,
        /// Whom.
        target: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Listing processes failed.
    #[error("listing processes: {0}")]
    Ps(#[source] io::Error),
    /// Configuring the guest's network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// Something the event loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A frame (or the end of the stream, or an error) from the host.
    Host(Result<Option<Frame>, ProtoError>),
    /// A child was reaped.
    Reaped {
        /// Its pid.
        pid: i32,
        /// Exit code or 128 + signal.
        status: i32,
    },
    /// An output stream of a tracked process reached end of file.
    OutputDone {
        /// The process's internal key.
        key: u64,
    },
}

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Reset the guest.
    Stop,
}

/// A container process the agent watches.
struct Proc {
    /// Unique per spawn: host process ids may be reused after an exit.
    key: u64,
    /// The id of its container.
    container: String,
    /// It is its container's init process.
    init: bool,
    pid: i32,
    stdin: Option<Sender<Vec<u8>>>,
    /// Its terminal's master, when it has one (for `Resize`).
    terminal: Option<std::fs::File>,
    open_outputs: usize,
    status: Option<i32>,
    exited_at: Option<Instant>,
    muted: Arc<AtomicBool>,
}

/// A container, from `Create` to `Delete`.
struct Container {
    id: String,
    /// Its root in the agent's view.
    rootfs: PathBuf,
    /// The host's process id of its init process.
    init_process: u32,
    init_pid: i32,
    /// The held init process's start pipe, until `Start`.
    start: Option<OwnedFd>,
    /// Its process was reported exited.
    stopped: bool,
    /// The container process's capabilities: `exec` processes without
    /// their own get these.
    caps: Capabilities,
    /// The seccomp filter of every process.
    seccomp: Option<Arc<SeccompProgram>>,
    /// Its cgroup in the guest, if the guest has cgroups.
    cgroup: Option<Cgroup>,
}

/// The agent's state.
pub struct Agent<W: Write + Send + 'static> {
    writer: SharedWriter<W>,
    tx: Sender<Event>,
    greeted: bool,
    kernel: String,
    network_configured: bool,
    containers: BTreeMap<String, Container>,
    /// A member container was created: only the host ends the guest.
    pod: bool,
    procs: HashMap<u32, Proc>,
    next_key: u64,
    stop_at: Option<Instant>,
}

impl<W: Write + Send + 'static> Agent<W> {
    /// An agent answering through `writer`; events are sent on `tx`.
    pub fn new(writer: W, tx: Sender<Event>, kernel: String) -> Self {
        Agent {
            writer: Arc::new(Mutex::new(writer)),
            tx,
            greeted: false,
            kernel,
            network_configured: false,
            containers: BTreeMap::new(),
            pod: false,
            procs: HashMap::new(),
            next_key: 0,
            stop_at: None,
        }
    }

    fn send(&self, m: Message) {
        if let Err(e) = proto::send(&mut *relay::lock(&self.writer), m) {
            log!("replying to the host: {e}");
        }
    }

    fn send_error(&self, message: String) {
        log!("error: {message}");
        self.send(Message::Error { message });
    }

    /// Serves events until the guest should be reset.
    pub fn run(&mut self, events: &Receiver<Event>) {
        loop {
            let event = match self.next_deadline() {
                Some(deadline) => {
                    match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(e) => Some(e),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match events.recv() {
                    Ok(e) => Some(e),
                    Err(_) => return,
                },
            };
            if let Some(event) = event {
                if self.handle(event) == Flow::Stop {
                    return;
                }
            }
            self.report_exits(Instant::now());
            if self.stop_at.is_some_and(|t| Instant::now() >= t) {
                log!("no shutdown request from the host; stopping");
                return;
            }
        }
    }

    /// The earliest moment the loop must wake up without an event.
    fn next_deadline(&self) -> Option<Instant> {
        self.procs
            .values()
            .filter(|p| p.open_outputs > 0)
            .filter_map(|p| p.exited_at.map(|t| t + OUTPUT_GRACE))
            .chain(self.stop_at)
            .min()
    }

    /// Reacts to one event.
    pub fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Host(Ok(Some(Frame::Control(m)))) => self.request(*m),
            Event::Host(Ok(Some(Frame::Data {
                process_id,
                stream,
                data,
            }))) => {
                if let Err(e) = self.stdin(process_id, stream, data) {
                    self.send_error(e.to_string());
                }
                Flow::Continue
            }
            Event::Host(Ok(None)) => {
                log!("the host closed the channel");
                Flow::Stop
            }
            // The frame was read whole: the stream is still in step.
            Event::Host(Err(e @ (ProtoError::Json(_) | ProtoError::Malformed(_)))) => {
                self.send_error(e.to_string());
                Flow::Continue
            }
            Event::Host(Err(e @ ProtoError::FrameSize(_))) => {
                // The length prefix cannot be trusted: nothing after it can be.
                self.send_error(e.to_string());
                Flow::Stop
            }
            Event::Host(Err(e)) => {
                log!("the host channel failed: {e}");
                Flow::Stop
            }
            Event::Reaped { pid, status } => {
                self.reaped(pid, status);
                Flow::Continue
            }
            Event::OutputDone { key } => {
                if let Some(p) = self.procs.values_mut().find(|p| p.key == key) {
                    p.open_outputs = p.open_outputs.saturating_sub(1);
                }
                Flow::Continue
            }
        }
    }

    /// Answers one control message.
    fn request(&mut self, m: Message) -> Flow {
        if !self.greeted {
            match m {
                Message::Hello { version } if version == PROTOCOL_VERSION => {
                    self.greeted = true;
                    log!("host connected (protocol {version})");
                    self.send(Message::Ready {
                        version: PROTOCOL_VERSION,
                        kernel: self.kernel.clone(),
                    });
                }
                Message::Hello { version } => self.send_error(format!(
                    "protocol version {version} is not supported: this agent speaks {PROTOCOL_VERSION}"
                )),
                other => self.send_error(format!(
                    "expected hello first, got {}",
                    message_name(&other)
                )),
            }
            return Flow::Continue;
        }
        let result = match m {
            Message::ConfigureNetwork { interfaces } => self.configure_network(&interfaces),
            Message::Create {
                container,
                init_process,
                share_namespaces_with,
            } => self.create(&container, init_process, share_namespaces_with.as_deref()),
            Message::Start { container } => self.start(&container),
            Message::Exec {
                container,
                process_id,
                process,
            } => self.exec(&container, process_id, &process),
            Message::Signal {
                container,
                process_id,
                signal,
                all,
            } => self.signal(&container, process_id, signal, all),
            Message::Ps { container } => self.ps(&container),
            Message::Delete { container } => self.delete(&container),
            Message::Freeze { container, frozen } => self.freeze(&container, frozen),
            Message::Resize {
                process_id,
                rows,
                cols,
            } => self.resize(process_id, rows, cols),
            Message::Shutdown => {
                log!("shutdown requested by the host");
                return Flow::Stop;
            }
            other => Err(RequestError::OutOfOrder(format!(
                "unexpected {} from the host",
                message_name(&other)
            ))),
        };
        match result {
            Ok(Some(reply)) => self.send(reply),
            Ok(None) => {}
            Err(e) => self.send_error(e.to_string()),
        }
        Flow::Continue
    }

    /// `ConfigureNetwork`: once, before the container exists.
    fn configure_network(
        &mut self,
        interfaces: &[proto::InterfaceSpec],
    ) -> Result<Option<Message>, RequestError> {
        if self.network_configured {
            return Err(RequestError::OutOfOrder(
                "the network was already configured".into(),
            ));
        }
        if !self.containers.is_empty() {
            return Err(RequestError::OutOfOrder(
                "the network is configured before any container is created".into(),
            ));
        }
        network::configure(interfaces)?;
        self.network_configured = true;
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        log!("network configured: lo {}", names.join(" "));
        Ok(Some(Message::NetworkConfigured))
    }

    /// The container `id`.
    fn container(&self, id: &str) -> Result<&Container, RequestError> {
        self.containers
            .get(id)
            .ok_or_else(|| RequestError::NoContainer(id.to_owned()))
    }

    /// Whether `c`'s init process is alive (created or running).
    fn init_alive(&self, c: &Container) -> bool {
        !c.stopped
            && self
                .procs
                .get(&c.init_process)
                .is_some_and(|p| p.init && p.container == c.id && p.status.is_none())
    }

    /// `c`, which must be running (its init process alive), for `what`.
    fn running(&self, id: &str, what: &str) -> Result<&Container, RequestError> {
        let c = self.container(id)?;
        if !self.init_alive(c) {
            return Err(RequestError::OutOfOrder(format!(
                "{what}: container {id:?} is not running"
            )));
        }
        Ok(c)
    }

    /// `Create`: the container's tree, cgroup, and its held init process in
    /// its own namespaces (sharing `share_with`'s network, IPC and UTS ones).
    fn create(
        &mut self,
        spec: &ContainerSpec,
        init_process: u32,
        share_with: Option<&str>,
    ) -> Result<Option<Message>, RequestError> {
        // Everything that can be checked without touching the guest first.
        let id = spec.id.as_str();
        check_container_id(id)?;
        if let Some(c) = self.containers.get(id) {
            return Err(RequestError::OutOfOrder(if c.stopped {
                format!("container {id:?} exists (stopped): delete it before creating it again")
            } else {
                format!("container {id:?} already exists")
            }));
        }
        if self.procs.contains_key(&init_process) {
            return Err(RequestError::OutOfOrder(format!(
                "process id {init_process} is in use"
            )));
        }
        let share_pid = match share_with {
            None => None,
            Some(other) if other == id => {
                return Err(RequestError::OutOfOrder(format!(
                    "container {id:?} cannot share the namespaces of itself"
                )))
            }
            Some(other) => {
                let c = self.containers.get(other).ok_or_else(|| {
                    RequestError::OutOfOrder(format!(
                        "container {id:?} would share the namespaces of container {other:?}, \
                         which does not exist"
                    ))
                })?;
                if !self.init_alive(c) {
                    return Err(RequestError::OutOfOrder(format!(
                        "container {id:?} would share the namespaces of container {other:?}, \
                         which is not running"
                    )));
                }
                Some(c.init_pid)
            }
        };
        let seccomp = spec
            .linux
            .seccomp
            .as_ref()
            .map(SeccompProgram::new)
            .transpose()?
            .map(Arc::new);
        let prepared = Prepared::new(&spec.process, Capabilities::default(), seccomp.clone())?;
        let hostname = spec
            .hostname
            .as_deref()
            .map(mounts::check_hostname)
            .transpose()?;
        let rootfs = mounts::rootfs_dir(id);
        let deferred = mounts::build_rootfs(spec, &rootfs)?;
        let mut cgroup = None;
        let spawned = (|| -> Result<_, RequestError> {
            let root = RootSetup::fresh(&rootfs, &spec.linux, hostname, deferred, share_pid)?;
            cgroup = container_cgroup(id, &spec.linux.resources)?;
            let (parent, child) =
                exec::make_stdio(prepared.terminal, &mounts::container_ptmx(&rootfs))?;
            let spawned = exec::spawn(
                &prepared,
                &root,
                child,
                true,
                cgroup.as_ref().map(Cgroup::procs).as_deref(),
            )?;
            Ok((parent, spawned))
        })();
        let (stdio, spawned) = match spawned {
            Ok(s) => s,
            Err(e) => {
                mounts::teardown(&rootfs);
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(e);
            }
        };
        log!(
            "container {id} created{}: {} is pid {}",
            share_with.map_or(String::new(), |o| format!(" in the namespaces of {o}")),
            prepared.command(),
            spawned.pid
        );
        self.track(
            id,
            true,
            init_process,
            spawned.pid,
            stdio,
            prepared.terminal,
        );
        self.containers.insert(
            id.to_owned(),
            Container {
                id: id.to_owned(),
                rootfs,
                init_process,
                init_pid: spawned.pid,
                start: spawned.start,
                stopped: false,
                caps: prepared.capabilities(),
                seccomp,
                cgroup,
            },
        );
        if share_with.is_some() {
            self.pod = true;
        }
        // The host is creating: it is there to end the guest itself.
        self.stop_at = None;
        Ok(Some(Message::Created))
    }

    /// `Start`: lets the held init process exec.
    fn start(&mut self, id: &str) -> Result<Option<Message>, RequestError> {
        let alive = self.init_alive(self.container(id)?);
        let c = self
            .containers
            .get_mut(id)
            .ok_or_else(|| RequestError::NoContainer(id.to_owned()))?;
        if c.stopped {
            return Err(RequestError::OutOfOrder(format!(
                "container {id:?} has stopped"
            )));
        }
        let Some(start) = c.start.take() else {
            return Err(RequestError::OutOfOrder(format!(
                "container {id:?} was already started"
            )));
        };
        if !alive {
            return Err(RequestError::OutOfOrder(format!(
                "the process of container {id:?} has already exited"
            )));
        }
        // The relay threads already run; holding the writer across the
        // release keeps the process's first output behind `Started`.
        let mut w = relay::lock(&self.writer);
        exec::release(start)?;
        log!("container {} started (pid {})", c.id, c.init_pid);
        let started = Message::Started {
            process_id: c.init_process,
            pid: c.init_pid.unsigned_abs(),
        };
        if let Err(e) = proto::send(&mut *w, started) {
            log!("replying to the host: {e}");
        }
        Ok(None)
    }

    /// `Exec`: another process in the container's root and mount namespace.
    fn exec(
        &mut self,
        id: &str,
        process_id: u32,
        spec: &ProcessSpec,
    ) -> Result<Option<Message>, RequestError> {
        if self.procs.contains_key(&process_id) {
            return Err(RequestError::OutOfOrder(format!(
                "process id {process_id} is in use"
            )));
        }
        let c = self.running(id, "exec")?;
        let prepared = Prepared::new(spec, c.caps, c.seccomp.clone())?;
        let root = RootSetup::join(c.init_pid)?;
        let (parent, child) =
            exec::make_stdio(prepared.terminal, &mounts::container_ptmx(&c.rootfs))?;
        let procs = c.cgroup.as_ref().map(Cgroup::procs);
        let spawned = exec::spawn(&prepared, &root, child, false, procs.as_deref())?;
        log!(
            "exec {process_id} in {id}: {} is pid {}",
            prepared.command(),
            spawned.pid
        );
        // `Started` before the relay threads exist: none of the process's
        // output can overtake it. Its exit cannot either: the reaper's event
        // is handled after this request.
        self.send(Message::Started {
            process_id,
            pid: spawned.pid.unsigned_abs(),
        });
        self.track(
            id,
            false,
            process_id,
            spawned.pid,
            parent,
            prepared.terminal,
        );
        Ok(None)
    }

    /// `Signal`: one process of the container, or with `all` every one. A
    /// delivered signal has no reply; only a failure answers (`Error`).
    fn signal(
        &mut self,
        id: &str,
        process_id: u32,
        signal: i32,
        all: bool,
    ) -> Result<Option<Message>, RequestError> {
        if !(1..=libc::SIGRTMAX()).contains(&signal) {
            return Err(RequestError::BadSignal(signal));
        }
        let c = self.container(id)?;
        if all {
            if c.stopped {
                return Err(RequestError::OutOfOrder(format!(
                    "signal: container {id:?} is not running"
                )));
            }
            // Every process of the container's PID namespace; one that ends
            // meanwhile (ESRCH) is no error.
            let pids = ps::container_pids(c.init_pid).map_err(RequestError::Ps)?;
            for pid in pids {
                let pid = i32::try_from(pid).unwrap_or(i32::MAX);
                match sys::kill(pid, signal) {
                    Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                        return Err(RequestError::Kill {
                            signal,
                            target: format!("pid {pid}"),
                            source: e,
                        })
                    }
                    _ => {}
                }
            }
            return Ok(None);
        }
        let p = self
            .procs
            .get(&process_id)
            .filter(|p| p.container == id)
            .ok_or(RequestError::NoProcess(process_id))?;
        if p.status.is_some() {
            return Err(RequestError::OutOfOrder(format!(
                "process {process_id} has already exited"
            )));
        }
        sys::kill(p.pid, signal).map_err(|source| RequestError::Kill {
            signal,
            target: format!("process {process_id} (pid {})", p.pid),
            source,
        })?;
        Ok(None)
    }

    /// `Ps`.
    fn ps(&self, id: &str) -> Result<Option<Message>, RequestError> {
        let c = self.running(id, "ps")?;
        let pids = ps::container_pids(c.init_pid).map_err(RequestError::Ps)?;
        Ok(Some(Message::Processes { pids }))
    }

    /// `Freeze`: stops or continues every process of a running container
    /// through its cgroup's freezer.
    fn freeze(&self, id: &str, frozen: bool) -> Result<Option<Message>, RequestError> {
        let c = self.running(id, if frozen { "pause" } else { "resume" })?;
        let cg = c.cgroup.as_ref().ok_or_else(|| {
            RequestError::OutOfOrder(format!(
                "container {id:?} has no cgroup in this guest: it cannot be paused on its own"
            ))
        })?;
        cg.freeze(frozen).map_err(RequestError::Cgroup)?;
        log!(
            "container {id} {}",
            if frozen { "frozen" } else { "thawed" }
        );
        Ok(Some(Message::Frozen))
    }

    /// `Delete`: forgets a stopped container (its mounts went when it
    /// stopped) and removes its cgroup; its id is free again.
    fn delete(&mut self, id: &str) -> Result<Option<Message>, RequestError> {
        let c = self.container(id)?;
        if !c.stopped {
            return Err(RequestError::OutOfOrder(format!(
                "container {id:?} is not stopped: signal its process and wait for its exit \
                 before deleting it"
            )));
        }
        if let Some(c) = self.containers.remove(id) {
            if let Some(cg) = &c.cgroup {
                cg.remove();
            }
            log!("container {id} deleted");
        }
        Ok(Some(Message::Deleted))
    }

    /// Host stdin data for a process.
    fn stdin(
        &mut self,
        process_id: u32,
        stream: Stream,
        data: Vec<u8>,
    ) -> Result<(), RequestError> {
        if stream != Stream::Stdin {
            return Err(RequestError::OutOfOrder(format!(
                "the host may only send stdin data, not {stream:?}"
            )));
        }
        let Some(p) = self.procs.get_mut(&process_id) else {
            // Input racing the process's exit is normal; an error reply here
            // could be taken for the answer to the host's next request.
            log!(
                "dropping {} bytes of stdin for process {process_id}: it is not running",
                data.len()
            );
            return Ok(());
        };
        let close = data.is_empty();
        if let Some(tx) = &p.stdin {
            // A failed send means the writer thread already gave up (the
            // process closed its stdin): the data has nowhere to go.
            let _ = tx.send(data);
        }
        if close {
            p.stdin = None;
        }
        Ok(())
    }

    /// Starts relaying a new process's stdio and adds it to the table.
    fn track(
        &mut self,
        container: &str,
        init: bool,
        process_id: u32,
        pid: i32,
        stdio: ParentStdio,
        terminal: bool,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let muted = Arc::new(AtomicBool::new(false));
        let mut open_outputs = 0;
        for (stream, file) in stdio.outputs {
            let tx = self.tx.clone();
            let started = relay::spawn_output(
                file,
                process_id,
                stream,
                self.writer.clone(),
                muted.clone(),
                move || {
                    let _ = tx.send(Event::OutputDone { key });
                },
            );
            match started {
                Ok(()) => open_outputs += 1,
                Err(e) => log!("process {process_id}: cannot relay {stream:?}: {e}"),
            }
        }
        let stdin = match relay::spawn_stdin(stdio.stdin, process_id, terminal) {
            Ok(tx) => Some(tx),
            Err(e) => {
                log!("process {process_id}: cannot relay stdin: {e}");
                None
            }
        };
        self.procs.insert(
            process_id,
            Proc {
                key,
                container: container.to_owned(),
                init,
                pid,
                stdin,
                terminal: stdio.terminal,
                open_outputs,
                status: None,
                exited_at: None,
                muted,
            },
        );
    }

    /// `Resize`: a process's terminal takes the host's size.
    fn resize(
        &mut self,
        process_id: u32,
        rows: u16,
        cols: u16,
    ) -> Result<Option<Message>, RequestError> {
        let p = self
            .procs
            .get(&process_id)
            .filter(|p| p.status.is_none())
            .ok_or(RequestError::NoProcess(process_id))?;
        let Some(t) = &p.terminal else {
            return Err(RequestError::OutOfOrder(format!(
                "process {process_id} has no terminal to resize"
            )));
        };
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(t, size).map_err(|e| {
            RequestError::OutOfOrder(format!(
                "resizing the terminal of process {process_id}: {e}"
            ))
        })?;
        Ok(None)
    }

    /// A child was reaped: record it if it is one of ours. Orphans that
    /// ended up with PID 1 need nothing more than the reaping itself.
    fn reaped(&mut self, pid: i32, status: i32) {
        let Some((&id, p)) = self
            .procs
            .iter_mut()
            .find(|(_, p)| p.pid == pid && p.status.is_none())
        else {
            return;
        };
        p.status = Some(status);
        p.exited_at = Some(Instant::now());
        p.stdin = None;
        log!("process {id} (pid {pid}) exited with status {status}");
        // When a container's init process ends, the kernel kills the rest
        // of its PID namespace, which also lets their output pipes reach
        // end of file.
    }

    /// Sends `Exited` for every process whose output is drained (or whose
    /// grace time is over).
    fn report_exits(&mut self, now: Instant) {
        let mut done: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| {
                p.status.is_some()
                    && (p.open_outputs == 0 || p.exited_at.is_some_and(|t| now >= t + OUTPUT_GRACE))
            })
            .map(|(&id, _)| id)
            .collect();
        // Init processes last: the rest of their containers went with them.
        done.sort_unstable_by_key(|id| (self.procs.get(id).is_some_and(|p| p.init), *id));
        for id in done {
            let Some(p) = self.procs.remove(&id) else {
                continue;
            };
            let status = p.status.unwrap_or(255);
            {
                let mut w = relay::lock(&self.writer);
                p.muted.store(true, Ordering::SeqCst);
                if let Err(e) = proto::send(
                    &mut *w,
                    Message::Exited {
                        process_id: id,
                        status,
                        container: p.init.then(|| p.container.clone()),
                    },
                ) {
                    log!("reporting the exit of process {id}: {e}");
                }
            }
            if p.init {
                self.stopped(&p.container, status, now);
            }
        }
    }

    /// Container `id`'s init process was reported exited: its tree comes
    /// down so that the id (or another) can be built again.
    fn stopped(&mut self, id: &str, status: i32, now: Instant) {
        if let Some(c) = self.containers.get_mut(id) {
            c.stopped = true;
            // Its start pipe, if it never started: the held process is gone.
            c.start = None;
            mounts::teardown(&c.rootfs);
            log!("container {id} stopped with status {status}");
        }
        // Without a pod, the guest is the one container's (or several
        // independent ones'): when none is left running and the host says
        // nothing, the guest ends by itself. In a pod only the host decides.
        if !self.pod && self.containers.values().all(|c| c.stopped) {
            self.stop_at = Some(now + SHUTDOWN_WAIT);
        }
    }

    /// Whether container `id`'s process has been reported exited.
    #[cfg(test)]
    fn is_stopped(&self, id: &str) -> bool {
        self.containers.get(id).is_some_and(|c| c.stopped)
    }
}

/// Checks a container id: it names a directory and a cgroup in the guest
/// (the runtime's own rule, and one path component).
fn check_container_id(id: &str) -> Result<(), RequestError> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if id.is_empty()
        || id.len() > 255
        || !ok_chars
        || id == "."
        || id.contains("..")
        || id.starts_with('-')
    {
        return Err(RequestError::BadId(id.to_owned()));
    }
    Ok(())
}

/// The container's cgroup, or `None` where the guest has no cgroup file
/// system and nothing needs one.
fn container_cgroup(
    id: &str,
    r: &crate::proto::ResourcesSpec,
) -> Result<Option<Cgroup>, RequestError> {
    let root = std::path::Path::new(cgroups::ROOT);
    if !root.join("cgroup.controllers").exists() && cgroups::limit_files(r).is_empty() {
        return Ok(None);
    }
    Ok(Some(Cgroup::create(root, id, r)?))
}

/// The `type` tag of a message, for error texts.
fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::ConfigureNetwork { .. } => "configure_network",
        Message::NetworkConfigured => "network_configured",
        Message::Create { .. } => "create",
        Message::Start { .. } => "start",
        Message::Exec { .. } => "exec",
        Message::Signal { .. } => "signal",
        Message::Resize { .. } => "resize",
        Message::Ps { .. } => "ps",
        Message::Delete { .. } => "delete",
        Message::Freeze { .. } => "freeze",
        Message::Frozen => "frozen",
        Message::Shutdown => "shutdown",
        Message::Ready { .. } => "ready",
        Message::Created => "created",
        Message::Started { .. } => "started",
        Message::Exited { .. } => "exited",
        Message::Processes { .. } => "processes",
        Message::Deleted => "deleted",
        Message::Error { .. } => "error",
    }
}

/// Reads host frames on their own thread and queues them as events; stops
/// after the end of the stream or an error the stream cannot recover from.
pub fn spawn_host_reader<R: io::Read + Send + 'static>(
    mut reader: R,
    tx: Sender<Event>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("host-reader".into())
        .spawn(move || loop {
            let frame = proto::read_frame(&mut reader);
            let go_on = matches!(
                frame,
                Ok(Some(_)) | Err(ProtoError::Json(_) | ProtoError::Malformed(_))
            );
            if tx.send(Event::Host(frame)).is_err() || !go_on {
                return;
            }
        })
        .map(drop)
}

/// A new event queue.
pub fn events() -> (Sender<Event>, Receiver<Event>) {
    mpsc::channel()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RootSpec, INIT_PROCESS};

    /// An agent whose replies land in a buffer.
    fn agent() -> (Agent<Vec<u8>>, Receiver<Event>) {
        let (tx, rx) = events();
        (Agent::new(Vec::new(), tx, "6.12-test".into()), rx)
    }

    fn control(m: Message) -> Event {
        Event::Host(Ok(Some(Frame::Control(Box::new(m)))))
    }

    /// Takes the replies written so far.
    fn replies(a: &Agent<Vec<u8>>) -> Vec<Message> {
        let bytes = std::mem::take(&mut *relay::lock(&a.writer));
        let mut r = bytes.as_slice();
        let mut out = Vec::new();
        while let Some(f) = proto::read_frame(&mut r).unwrap() {
            match f {
                Frame::Control(m) => out.push(*m),
                Frame::Data { .. } => panic!("unexpected data frame"),
            }
        }
        out
    }

    fn error_text(m: &Message) -> &str {
        match m {
            Message::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Sends `m`; expects exactly one reply, an error, and returns its text.
    fn refused(a: &mut Agent<Vec<u8>>, m: Message) -> String {
        assert_eq!(a.handle(control(m.clone())), Flow::Continue);
        let r = replies(a);
        assert_eq!(r.len(), 1, "one reply to {m:?}: {r:?}");
        error_text(&r[0]).to_owned()
    }

    fn greeted() -> (Agent<Vec<u8>>, Receiver<Event>) {
        let (mut a, rx) = agent();
        a.handle(control(Message::Hello {
            version: PROTOCOL_VERSION,
        }));
        assert_eq!(
            replies(&a),
            vec![Message::Ready {
                version: PROTOCOL_VERSION,
                kernel: "6.12-test".into()
            }]
        );
        (a, rx)
    }

    /// A spec the agent refuses at its process (an unknown rlimit), after
    /// the checks of ids and namespaces and before touching the guest.
    fn spec(id: &str) -> Box<ContainerSpec> {
        Box::new(ContainerSpec {
            id: id.into(),
            hostname: None,
            root: RootSpec {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
                source: proto::SHARE_ROOTFS.into(),
            },
            mounts: Vec::new(),
            process: ProcessSpec {
                args: vec!["sh".into()],
                cwd: "/".into(),
                rlimits: vec![crate::proto::Rlimit {
                    kind: "RLIMIT_WHAT".into(),
                    soft: 0,
                    hard: 0,
                }],
                ..ProcessSpec::default()
            },
            linux: Default::default(),
        })
    }

    fn create(id: &str, init_process: u32, share: Option<&str>) -> Message {
        Message::Create {
            container: spec(id),
            init_process,
            share_namespaces_with: share.map(str::to_owned),
        }
    }

    /// A stand-in for a created container whose init process (host id
    /// `init_process`) is guest pid `pid`; returns the write end of its
    /// stdout.
    fn stand_in(a: &mut Agent<Vec<u8>>, id: &str, init_process: u32, pid: i32) -> OwnedFd {
        let (r, w) = guest_agent::fdio::pipe().unwrap();
        let (_in_r, in_w) = guest_agent::fdio::pipe().unwrap();
        a.track(
            id,
            true,
            init_process,
            pid,
            ParentStdio {
                stdin: std::fs::File::from(in_w),
                terminal: None,
                outputs: vec![(Stream::Stdout, std::fs::File::from(r))],
            },
            false,
        );
        a.containers.insert(
            id.into(),
            Container {
                id: id.into(),
                rootfs: PathBuf::from("/nonexistent/runm-test").join(id),
                init_process,
                init_pid: pid,
                start: None,
                stopped: false,
                caps: Capabilities::default(),
                seccomp: None,
                cgroup: None,
            },
        );
        w
    }

    /// Reaps `pid`, lets its output end, and reports the exits.
    fn exit(a: &mut Agent<Vec<u8>>, rx: &Receiver<Event>, pid: i32, status: i32, out: OwnedFd) {
        a.handle(Event::Reaped { pid, status });
        drop(out);
        let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(ev, Event::OutputDone { .. }));
        a.handle(ev);
        a.report_exits(Instant::now());
    }

    #[test]
    fn handshake_refuses_other_versions_and_requests_first() {
        let (mut a, _rx) = agent();
        assert_eq!(
            a.handle(control(Message::Ps {
                container: "c".into()
            })),
            Flow::Continue
        );
        assert_eq!(
            a.handle(control(Message::Hello { version: 99 })),
            Flow::Continue
        );
        let r = replies(&a);
        assert_eq!(r.len(), 2);
        assert!(error_text(&r[0]).contains("expected hello"));
        assert!(error_text(&r[1]).contains("version 99"));
        a.handle(control(Message::Hello {
            version: PROTOCOL_VERSION,
        }));
        assert!(matches!(replies(&a)[..], [Message::Ready { .. }]));
        a.handle(control(Message::Hello {
            version: PROTOCOL_VERSION,
        }));
        assert!(error_text(&replies(&a)[0]).contains("unexpected hello"));
    }

    /// A description the agent refuses before touching any interface (so
    /// this test changes nothing on the machine running it).
    #[test]
    fn configure_network_reaches_the_configuration_and_reports_errors() {
        let (mut a, _rx) = greeted();
        let nic = proto::InterfaceSpec {
            name: "eth0".into(),
            mac: proto::MacAddr([2, 0, 0, 0, 0, 1]),
            mtu: 10,
            addresses: vec![],
            routes: vec![],
            neighbours: vec![],
        };
        a.handle(control(Message::ConfigureNetwork {
            interfaces: vec![nic],
        }));
        let r = replies(&a);
        assert!(
            error_text(&r[0]).contains("network interface eth0: MTU 10"),
            "{r:?}"
        );
        assert!(!a.network_configured);
    }

    #[test]
    fn out_of_order_requests_are_errors() {
        let (mut a, _rx) = greeted();
        let c = || "c".to_string();
        for (m, says) in [
            (Message::Start { container: c() }, "no container \"c\""),
            (Message::Ps { container: c() }, "no container \"c\""),
            (Message::Delete { container: c() }, "no container \"c\""),
            (
                Message::Freeze {
                    container: c(),
                    frozen: true,
                },
                "no container \"c\"",
            ),
            (
                Message::Exec {
                    container: c(),
                    process_id: 1,
                    process: ProcessSpec::default(),
                },
                "no container \"c\"",
            ),
            (
                Message::Signal {
                    container: c(),
                    process_id: 0,
                    signal: 15,
                    all: false,
                },
                "no container \"c\"",
            ),
            (
                Message::Signal {
                    container: c(),
                    process_id: 0,
                    signal: 0,
                    all: true,
                },
                "signal 0 is not a valid",
            ),
            (
                Message::Signal {
                    container: c(),
                    process_id: 0,
                    signal: 1000,
                    all: true,
                },
                "signal 1000 is not a valid",
            ),
            (Message::Created, "unexpected created"),
            (Message::Deleted, "unexpected deleted"),
            (
                Message::Exited {
                    process_id: 0,
                    status: 0,
                    container: None,
                },
                "unexpected exited",
            ),
        ] {
            let e = refused(&mut a, m.clone());
            assert!(e.contains(says), "{m:?}: {e}");
        }
    }

    #[test]
    fn bad_create_is_an_error_before_touching_the_guest() {
        let (mut a, _rx) = greeted();
        let e = refused(&mut a, create("c", INIT_PROCESS, None));
        assert!(e.contains("RLIMIT_WHAT"), "{e}");
        assert!(a.containers.is_empty());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a..b",
            "-x",
            "sp ace",
            &"x".repeat(256),
        ] {
            let e = refused(&mut a, create(bad, INIT_PROCESS, None));
            assert!(e.contains("is not valid"), "{bad:?}: {e}");
        }
        assert!(a.containers.is_empty() && a.procs.is_empty());
    }

    /// Two containers side by side: requests name theirs, ids of containers
    /// and processes are unique, a member must name a running container.
    #[test]
    fn several_containers_are_kept_apart() {
        let (mut a, rx) = greeted();
        let _pod_out = stand_in(&mut a, "pod", INIT_PROCESS, 4242);
        let m1_out = stand_in(&mut a, "m1", 100, 4343);

        // Duplicate ids and ids in use, whatever else the request says.
        let e = refused(&mut a, create("pod", 7, None));
        assert!(e.contains("container \"pod\" already exists"), "{e}");
        let e = refused(&mut a, create("m2", 100, Some("pod")));
        assert!(e.contains("process id 100 is in use"), "{e}");
        let e = refused(
            &mut a,
            Message::Exec {
                container: "pod".into(),
                process_id: 100,
                process: ProcessSpec::default(),
            },
        );
        assert!(e.contains("process id 100 is in use"), "{e}");
        // A member naming no container, or itself.
        let e = refused(&mut a, create("m2", 101, Some("nope")));
        assert!(
            e.contains("container \"m2\" would share the namespaces of container \"nope\", which does not exist"),
            "{e}"
        );
        let e = refused(&mut a, create("m2", 101, Some("m2")));
        assert!(e.contains("cannot share the namespaces of itself"), "{e}");
        // A valid member gets past those checks (to the process's own).
        let e = refused(&mut a, create("m2", 101, Some("pod")));
        assert!(e.contains("RLIMIT_WHAT"), "{e}");
        // A process is signalled through its own container only.
        let e = refused(
            &mut a,
            Message::Signal {
                container: "pod".into(),
                process_id: 100,
                signal: 15,
                all: false,
            },
        );
        assert!(e.contains("no process with id 100"), "{e}");
        // Both were started already (stand-ins hold no start pipe).
        let e = refused(
            &mut a,
            Message::Start {
                container: "m1".into(),
            },
        );
        assert!(e.contains("container \"m1\" was already started"), "{e}");
        // Running containers are not deleted.
        let e = refused(
            &mut a,
            Message::Delete {
                container: "m1".into(),
            },
        );
        assert!(e.contains("not stopped"), "{e}");

        // The member's init exits: its Exited names it; the pod goes on.
        a.pod = true;
        exit(&mut a, &rx, 4343, 3, m1_out);
        assert_eq!(
            replies(&a),
            vec![Message::Exited {
                process_id: 100,
                status: 3,
                container: Some("m1".into()),
            }]
        );
        assert!(a.is_stopped("m1") && !a.is_stopped("pod"));
        assert!(a.stop_at.is_none(), "in a pod only the host ends the guest");
        let e = refused(
            &mut a,
            Message::Start {
                container: "m1".into(),
            },
        );
        assert!(e.contains("container \"m1\" has stopped"), "{e}");
        for m in [
            Message::Ps {
                container: "m1".into(),
            },
            Message::Exec {
                container: "m1".into(),
                process_id: 5,
                process: ProcessSpec::default(),
            },
            Message::Signal {
                container: "m1".into(),
                process_id: 0,
                signal: 9,
                all: true,
            },
        ] {
            let e = refused(&mut a, m);
            assert!(e.contains("container \"m1\" is not running"), "{e}");
        }
        let e = refused(&mut a, create("m2", 101, Some("m1")));
        assert!(e.contains("\"m1\", which is not running"), "{e}");
        // The same id again: only after Delete.
        let e = refused(&mut a, create("m1", 101, Some("pod")));
        assert!(e.contains("exists (stopped): delete it"), "{e}");
        a.handle(control(Message::Delete {
            container: "m1".into(),
        }));
        assert_eq!(replies(&a), vec![Message::Deleted]);
        assert!(!a.containers.contains_key("m1"));
        // Its init's process id is free again too.
        let e = refused(&mut a, create("m1", 100, Some("pod")));
        assert!(e.contains("RLIMIT_WHAT"), "{e}");
        assert_eq!(a.containers.len(), 1);
    }

    #[test]
    fn hostile_frames_get_errors_or_end_the_session() {
        let (mut a, _rx) = greeted();
        let json = serde_json::from_str::<Message>("{}").unwrap_err();
        assert_eq!(
            a.handle(Event::Host(Err(ProtoError::Json(json)))),
            Flow::Continue
        );
        assert_eq!(
            a.handle(Event::Host(Err(ProtoError::Malformed("kind 9".into())))),
            Flow::Continue
        );
        assert_eq!(
            a.handle(Event::Host(Ok(Some(Frame::Data {
                process_id: 7,
                stream: Stream::Stdin,
                data: b"x".to_vec(),
            })))),
            Flow::Continue
        );
        assert_eq!(
            a.handle(Event::Host(Ok(Some(Frame::Data {
                process_id: 7,
                stream: Stream::Stdout,
                data: vec![],
            })))),
            Flow::Continue
        );
        // Stdin for a process that is gone is dropped without a reply.
        assert_eq!(replies(&a).len(), 3);
        assert_eq!(
            a.handle(Event::Host(Err(ProtoError::FrameSize(usize::MAX)))),
            Flow::Stop
        );
        assert_eq!(a.handle(Event::Host(Ok(None))), Flow::Stop);
        assert_eq!(a.handle(control(Message::Shutdown)), Flow::Stop);
    }

    #[test]
    fn exits_wait_for_output_then_the_container_stops() {
        let (mut a, rx) = greeted();
        // A stand-in for a created container whose process is pid 4242.
        let w = stand_in(&mut a, "c", INIT_PROCESS, 4242);
        // Unknown pids (orphans) are reaped silently.
        a.handle(Event::Reaped { pid: 1, status: 0 });
        a.handle(Event::Reaped {
            pid: 4242,
            status: 7,
        });
        a.report_exits(Instant::now());
        assert!(replies(&a).is_empty(), "output still open: no Exited yet");
        assert!(a.next_deadline().is_some());

        let mut w = std::fs::File::from(w);
        w.write_all(b"bye").unwrap();
        drop(w);
        let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(ev, Event::OutputDone { .. }));
        a.handle(ev);
        a.report_exits(Instant::now());
        let bytes = std::mem::take(&mut *relay::lock(&a.writer));
        let mut rd = bytes.as_slice();
        let first = proto::read_frame(&mut rd).unwrap().unwrap();
        assert_eq!(
            first,
            Frame::Data {
                process_id: 0,
                stream: Stream::Stdout,
                data: b"bye".to_vec()
            }
        );
        assert_eq!(
            proto::read_frame(&mut rd).unwrap().unwrap(),
            Frame::Control(Box::new(Message::Exited {
                process_id: 0,
                status: 7,
                container: Some("c".into()),
            }))
        );
        assert!(a.is_stopped("c"));
        // The one container of a guest without a pod: the guest goes down
        // by itself unless the host says more.
        assert!(a.stop_at.is_some());
        // After the exit, requests that need a live container fail.
        let e = refused(
            &mut a,
            Message::Exec {
                container: "c".into(),
                process_id: 1,
                process: ProcessSpec::default(),
            },
        );
        assert!(e.contains("not running"), "{e}");
    }

    #[test]
    fn a_terminal_takes_the_hosts_size() {
        let (mut a, _rx) = greeted();
        let (master, _slave) =
            guest_agent::fdio::open_pty(std::path::Path::new("/dev/ptmx")).unwrap();
        let master = std::fs::File::from(master);
        let (_in_r, in_w) = guest_agent::fdio::pipe().unwrap();
        a.track(
            "c",
            false,
            3,
            4343,
            ParentStdio {
                stdin: std::fs::File::from(in_w),
                terminal: Some(master.try_clone().unwrap()),
                outputs: Vec::new(),
            },
            true,
        );
        a.request(Message::Resize {
            process_id: 3,
            rows: 40,
            cols: 120,
        });
        assert_eq!(replies(&a), Vec::new(), "a resize is not answered");
        let size = rustix::termios::tcgetwinsize(&master).unwrap();
        assert_eq!((size.ws_row, size.ws_col), (40, 120));
        a.request(Message::Resize {
            process_id: 9,
            rows: 1,
            cols: 1,
        });
        let e = format!("{:?}", replies(&a));
        assert!(e.contains("no process with id 9"), "{e}");
    }

    #[test]
    fn output_grace_bounds_the_wait() {
        let (mut a, _rx) = greeted();
        let (r, _w) = guest_agent::fdio::pipe().unwrap();
        let (_in_r, in_w) = guest_agent::fdio::pipe().unwrap();
        a.track(
            "c",
            false,
            3,
            4343,
            ParentStdio {
                stdin: std::fs::File::from(in_w),
                terminal: None,
                outputs: vec![(Stream::Stdout, std::fs::File::from(r))],
            },
            false,
        );
        a.handle(Event::Reaped {
            pid: 4343,
            status: 143,
        });
        let later = Instant::now() + OUTPUT_GRACE + Duration::from_millis(1);
        a.report_exits(later);
        assert_eq!(
            replies(&a),
            vec![Message::Exited {
                process_id: 3,
                status: 143,
                container: None,
            }]
        );
        assert!(a.procs.is_empty());
        assert!(
            a.stop_at.is_none(),
            "an exec process does not stop the guest"
        );
    }
}
