//! Exec/stdio multiplexing: the agent's data frames to and from host
//! descriptors.
//!
//! Owns the container's process's stdio (its output frames to the
//! sandbox's fd 1 and 2, which are create's stdio or the console pty; the
//! sandbox's fd 0 to its stdin frames once it runs) and the exec'd
//! processes ([`Execs`]): each one's sink (its client's control connection,
//! which gets the process's output frames once the client has its answer,
//! then its `Exited`), the host pid of its relay, and the client's session
//! (its stdin frames to the agent; the process is killed when its client
//! hangs up).

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use guest_agent::proto::{self, Frame, Message, Stream, INIT_PROCESS};

use super::{lock, Shared};
use crate::control::{self, Response};
use crate::sys;

/// Output of an exec'd process held until its client has the answer: the
/// agent sends `Started` before any output, so only what races the answer
/// waits here; a guest that streams more is abusing the protocol.
pub(super) const MAX_PENDING_BYTES: usize = 1 << 20;

/// Where an exec'd process's output goes: its client's connection, once
/// that client has its answer; frames arriving earlier wait in `pending`
/// (at most [`MAX_PENDING_BYTES`]).
pub(super) struct ExecSink {
    stream: UnixStream,
    active: bool,
    pending: Vec<Frame>,
    pending_bytes: usize,
    done: bool,
}

impl ExecSink {
    /// A sink writing to `stream` once activated.
    pub(super) fn new(stream: UnixStream) -> Self {
        ExecSink {
            stream,
            active: false,
            pending: Vec::new(),
            pending_bytes: 0,
            done: false,
        }
    }

    /// Passes `frame` on, or holds it; errs when the held output would
    /// exceed [`MAX_PENDING_BYTES`].
    fn forward(&mut self, frame: Frame) -> Result<(), String> {
        if self.active {
            if proto::write_frame(&mut self.stream, &frame).is_err() {
                // The client went away; the process runs on, its output is dropped.
                self.done = true;
            }
            return Ok(());
        }
        if let Frame::Data { data, .. } = &frame {
            self.pending_bytes = self.pending_bytes.saturating_add(data.len());
            if self.pending_bytes > MAX_PENDING_BYTES {
                return Err(format!(
                    "more than {MAX_PENDING_BYTES} bytes of output for a process before it was started"
                ));
            }
        }
        self.pending.push(frame);
        Ok(())
    }

    fn finish(&mut self) {
        self.done = true;
        if self.active {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The exec'd processes of the container, by agent process id.
pub(super) struct Execs {
    sinks: HashMap<u32, Arc<Mutex<ExecSink>>>,
    /// Running exec'd processes: (host pid of their relay, guest pid).
    hosts: HashMap<u32, (i32, u32)>,
    next: u32,
}

impl Execs {
    pub(super) fn new() -> Self {
        Execs {
            sinks: HashMap::new(),
            hosts: HashMap::new(),
            next: INIT_PROCESS + 1,
        }
    }

    /// Registers a new exec'd process's sink; returns its process id.
    pub(super) fn add(&mut self, sink: Arc<Mutex<ExecSink>>) -> u32 {
        let id = self.next;
        self.next += 1;
        self.sinks.insert(id, sink);
        id
    }

    /// Forgets a process the agent did not start.
    pub(super) fn remove(&mut self, process_id: u32) {
        self.sinks.remove(&process_id);
    }

    /// True until the process's `Exited` arrived.
    pub(super) fn running(&self, process_id: u32) -> bool {
        self.sinks.contains_key(&process_id)
    }

    /// Whether the sandbox ever gave out `process_id` (or it is the
    /// container's own).
    fn issued(&self, process_id: u32) -> bool {
        process_id < self.next
    }

    /// Records the host pid of the process's relay (unless it has already
    /// exited: its `Exited` came first).
    pub(super) fn set_host(&mut self, process_id: u32, host_pid: i32, guest_pid: u32) {
        if self.running(process_id) {
            self.hosts.insert(process_id, (host_pid, guest_pid));
        }
    }

    /// The relays of the running processes: (host pid, guest pid), sorted.
    pub(super) fn hosts(&self) -> Vec<(i32, u32)> {
        let mut v: Vec<(i32, u32)> = self.hosts.values().copied().collect();
        v.sort_unstable();
        v
    }

    /// The sink of a running process.
    fn sink(&self, process_id: u32) -> Option<Arc<Mutex<ExecSink>>> {
        self.sinks.get(&process_id).cloned()
    }

    /// The agent reported the process's exit: its client gets the
    /// `Exited` frame, then the end of its stream.
    pub(super) fn exited(&mut self, process_id: u32, status: i32) {
        self.hosts.remove(&process_id);
        if let Some(sink) = self.sinks.remove(&process_id) {
            let mut sink = lock(&sink);
            // A control frame is never refused.
            let _ = sink.forward(Frame::Control(Box::new(Message::Exited {
                process_id,
                status,
                container: None,
            })));
            sink.finish();
        }
    }

    /// The VM is gone: every client's stream ends.
    pub(super) fn close_all(&mut self) {
        self.hosts.clear();
        for (_, sink) in self.sinks.drain() {
            lock(&sink).finish();
        }
    }
}

/// Routes a data frame from the agent: the container's process's output to
/// the sandbox's own stdout/stderr, an exec'd process's to its client.
/// Errs on protocol abuse: output for a process id never given out, or too
/// much output held for a process not yet started.
pub(super) fn on_data(shared: &Shared, frame: Frame) -> Result<(), String> {
    match frame {
        Frame::Data {
            process_id: INIT_PROCESS,
            stream,
            data,
        } => {
            let fd = if stream == Stream::Stderr {
                rustix::stdio::stderr()
            } else {
                rustix::stdio::stdout()
            };
            if let Err(e) = sys::write_all(fd, &data) {
                log::debug!("container {}: dropping output: {e}", shared.dir.id);
            }
        }
        Frame::Data { process_id, .. } => {
            // The sink is locked outside the sandbox's lock: a slow client
            // must not hold up the lifecycle.
            let (sink, issued) = {
                let inner = lock(&shared.inner);
                (inner.execs.sink(process_id), inner.execs.issued(process_id))
            };
            match sink {
                Some(sink) => lock(&sink).forward(frame)?,
                // Output of a process that has exited: late, dropped.
                None if issued => {}
                None => {
                    return Err(format!(
                        "output for process {process_id}, which the host never started"
                    ))
                }
            }
        }
        Frame::Control(_) => {}
    }
    Ok(())
}

/// The guest's terminal of the container's process takes the size of
/// ours (fd 0), if it has one.
pub(super) fn send_size(shared: &Shared) {
    if !shared.terminal {
        return;
    }
    if let Some((rows, cols)) = sys::terminal_size(rustix::stdio::stdin()) {
        let _ = shared.agent.send(Message::Resize {
            process_id: INIT_PROCESS,
            rows,
            cols,
        });
    }
}

/// The container's stdin (the sandbox's fd 0) to the agent, once its
/// process runs (first the terminal's size, when it has one).
pub(super) fn relay_stdin(shared: &Shared) {
    send_size(shared);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = sys::read(rustix::stdio::stdin(), &mut buf).unwrap_or(0);
        let frame = Frame::Data {
            process_id: INIT_PROCESS,
            stream: Stream::Stdin,
            data: buf[..n].to_vec(),
        };
        if shared.agent.send_frame(&frame).is_err() || n == 0 {
            return;
        }
    }
}

/// An exec'd process runs (guest pid `pid`): its client gets the answer and
/// the output held so far, then its connection carries the process's
/// stdio until the client closes it (after the process exited, the sandbox
/// closes it itself).
pub(super) fn exec_session(
    shared: &Shared,
    mut conn: UnixStream,
    sink: &Mutex<ExecSink>,
    process_id: u32,
    pid: u32,
) {
    {
        let mut s = lock(sink);
        let resp = Response {
            process_id: Some(process_id),
            guest_pid: Some(pid),
            ..Response::default()
        };
        if control::write_line(&mut s.stream, &resp).is_err() {
            s.done = true;
        }
        s.active = true;
        s.pending_bytes = 0;
        for f in std::mem::take(&mut s.pending) {
            // Active now: nothing is held, nothing refused.
            let _ = s.forward(f);
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
                if shared.agent.send_frame(&frame).is_err() {
                    return;
                }
            }
            // The client's terminal changed size: so does the process's.
            Ok(Some(Frame::Control(m))) => {
                if let Message::Resize { rows, cols, .. } = *m {
                    let _ = shared.agent.send(Message::Resize {
                        process_id,
                        rows,
                        cols,
                    });
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    if stdin_open {
        let _ = shared.agent.send_frame(&Frame::Data {
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
    if lock(&shared.inner).execs.running(process_id) {
        log::debug!(
            "container {}: exec client of process {process_id} went away; killing it",
            shared.dir.id
        );
        let _ = shared.agent.send(Message::Signal {
            container: shared.dir.id.clone(),
            process_id,
            signal: libc::SIGKILL,
            all: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_sink_holds_frames_until_active() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut sink = ExecSink::new(a);
        let f = Frame::Data {
            process_id: 1,
            stream: Stream::Stdout,
            data: b"x".to_vec(),
        };
        sink.forward(f.clone()).unwrap();
        assert_eq!(sink.pending.len(), 1);
        sink.active = true;
        for p in std::mem::take(&mut sink.pending) {
            sink.forward(p).unwrap();
        }
        sink.finish();
        assert_eq!(proto::read_frame(&mut b).unwrap(), Some(f));
        assert_eq!(proto::read_frame(&mut b).unwrap(), None);
    }

    #[test]
    fn output_held_before_the_start_is_bounded() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut sink = ExecSink::new(a);
        let chunk = Frame::Data {
            process_id: 1,
            stream: Stream::Stdout,
            data: vec![0u8; 64 * 1024],
        };
        for _ in 0..MAX_PENDING_BYTES / (64 * 1024) {
            sink.forward(chunk.clone()).unwrap();
        }
        let e = sink.forward(chunk).unwrap_err();
        assert!(e.contains("before it was started"), "{e}");
        // Only ids the sandbox gave out are its processes'.
        let mut execs = Execs::new();
        assert!(execs.issued(INIT_PROCESS) && !execs.issued(INIT_PROCESS + 1));
        let (c, _d) = UnixStream::pair().unwrap();
        let id = execs.add(Arc::new(Mutex::new(ExecSink::new(c))));
        assert!(execs.issued(id) && !execs.issued(id + 1));
    }

    #[test]
    fn execs_route_output_and_exit_to_their_client() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut execs = Execs::new();
        let sink = Arc::new(Mutex::new(ExecSink::new(a)));
        let id = execs.add(Arc::clone(&sink));
        assert!(id > INIT_PROCESS && execs.running(id));
        execs.set_host(id, 4242, 45);
        assert_eq!(execs.hosts(), vec![(4242, 45)]);
        lock(&sink).active = true;
        let out = Frame::Data {
            process_id: id,
            stream: Stream::Stdout,
            data: b"hi".to_vec(),
        };
        lock(&execs.sink(id).unwrap()).forward(out.clone()).unwrap();
        execs.exited(id, 3);
        assert!(!execs.running(id) && execs.hosts().is_empty());
        // A late relay pid for a process that has exited is not listed.
        execs.set_host(id, 4243, 46);
        assert!(execs.hosts().is_empty());
        assert_eq!(proto::read_frame(&mut b).unwrap(), Some(out));
        assert_eq!(
            proto::read_frame(&mut b).unwrap(),
            Some(Frame::Control(Box::new(Message::Exited {
                process_id: id,
                status: 3,
                container: None,
            })))
        );
        assert_eq!(proto::read_frame(&mut b).unwrap(), None);
    }
}
