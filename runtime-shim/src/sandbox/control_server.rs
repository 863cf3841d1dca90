//! The control server: what runm commands ask of a running container.
//!
//! Owns serving `<root>/<id>/control.sock` (one request per connection;
//! the wire types are [`crate::control`]'s), answering each request, the
//! signals the sandbox itself receives (forwarded like a `kill`), and the
//! agent requests that wait for an answer (`Start`, `Exec`, `Ps`): one at a
//! time, so that an answer, or an `Error`, belongs to the request that
//! waits. Whether a request may be done is the lifecycle's to say
//! ([`crate::lifecycle`]); this file does what it asks.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_agent::proto::{Message, ProcessSpec, INIT_PROCESS};

use super::stdio::{self, ExecSink};
use super::{lock, Shared};
use crate::control::{self, HostProcess, HostRole, Request, Response};
use crate::lifecycle::{Action, Event, Refusal};
use crate::sys;

/// How long an agent request (start, exec, ps) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a pending agent request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// `Started` of this process (after `Start` or `Exec`).
    Started(u32),
    /// `Processes` (after `Ps`).
    Processes,
    /// `Created` (a pod member's `Create`, relayed).
    Created,
    /// `Deleted` (a pod member's end).
    Deleted,
    /// `Frozen` (a pod member paused or resumed).
    Frozen,
}

/// The agent's answer to a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    Started { pid: u32 },
    Processes(Vec<u32>),
    Created,
    Deleted,
    Frozen,
    Error(String),
    Gone,
}

/// The agent request waiting for its answer, and whether the agent's
/// channel is still open.
#[derive(Debug, Default)]
pub(super) struct Pending {
    waiting: Option<Waiting>,
    reply: Option<Reply>,
    closed: bool,
}

impl Pending {
    /// Takes `m` as the answer of the waiting request if it is one; false
    /// if no request waits for it.
    pub(super) fn answer(&mut self, m: &Message) -> bool {
        let Some(waiting) = self.waiting else {
            return false;
        };
        self.reply = Some(match (waiting, m) {
            (Waiting::Started(id), Message::Started { process_id, pid }) if *process_id == id => {
                Reply::Started { pid: *pid }
            }
            (Waiting::Processes, Message::Processes { pids }) => Reply::Processes(pids.clone()),
            (Waiting::Created, Message::Created) => Reply::Created,
            (Waiting::Deleted, Message::Deleted) => Reply::Deleted,
            (Waiting::Frozen, Message::Frozen) => Reply::Frozen,
            (_, Message::Error { message }) => Reply::Error(message.clone()),
            _ => return false,
        });
        true
    }

    /// The agent's channel has closed: the waiting request, and every later
    /// one, gets [`Reply::Gone`].
    pub(super) fn close(&mut self) {
        self.closed = true;
        if self.waiting.is_some() {
            self.reply = Some(Reply::Gone);
        }
    }

    /// Whether the agent's channel has closed.
    pub(super) fn closed(&self) -> bool {
        self.closed
    }
}

fn reply_error(r: Reply) -> Response {
    Response::error(match r {
        Reply::Error(m) => format!("the guest agent failed: {m}"),
        Reply::Gone => "the container's VM is gone".to_string(),
        other => format!("unexpected answer from the guest agent: {other:?}"),
    })
}

/// Serves the control socket, one thread per connection.
pub(super) fn serve(shared: &Arc<Shared>, listener: UnixListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || shared.serve_client(c));
            }
            Err(e) => log::debug!("container {}: accept: {e}", shared.dir.id),
        }
    }
}

/// Forwards the signals the sandbox receives (blocked in every thread) to
/// the container's process, as an init would.
pub(super) fn forward_signals(shared: &Arc<Shared>, set: &sys::SigSet) {
    loop {
        let Ok(sig) = set.wait() else { return };
        if sig == sys::RESIZE_SIGNAL {
            stdio::send_size(shared);
            continue;
        }
        log::debug!(
            "container {}: forwarding {}",
            shared.dir.id,
            crate::signal::signal_name(sig)
        );
        let _ = shared.request(Event::Signal {
            signal: sig,
            all: false,
        });
    }
}

impl Shared {
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
            Request::Start => self.request(Event::Start),
            Request::Kill {
                signal,
                all,
                process_id: None,
            } => self.request(Event::Signal { signal, all }),
            // An exec'd process's signal is its own business, not the
            // container's lifecycle.
            Request::Kill {
                signal,
                process_id: Some(process_id),
                ..
            } => match self.agent.send(Message::Signal {
                container: self.dir.id.clone(),
                process_id,
                signal,
                all: false,
            }) {
                Ok(()) => Response::default(),
                Err(e) => Response::error(e.to_string()),
            },
            Request::Ps => match self.request(Event::Ps) {
                refused @ Response { error: Some(_), .. } => refused,
                _ => match self.ask(
                    Message::Ps {
                        container: self.dir.id.clone(),
                    },
                    Waiting::Processes,
                ) {
                    Reply::Processes(pids) => Response {
                        pids: Some(pids),
                        ..Response::default()
                    },
                    r => reply_error(r),
                },
            },
            Request::HostPids => Response {
                host: Some(self.host_processes()),
                ..Response::default()
            },
            Request::Pause => self.request(Event::Pause),
            Request::Resume => self.request(Event::Resume),
            Request::Destroy => self.request(Event::Terminate {
                status: 128 + libc::SIGKILL,
            }),
            Request::Exec {
                process,
                client_pid,
            } => return self.exec(conn, process, client_pid),
            Request::Attach { container } => {
                return super::pod::serve_member(self, conn, container)
            }
        };
        let _ = control::write_line(&mut conn, &resp);
    }

    fn refused(&self, r: Refusal) -> Response {
        Response::error(format!("container '{}' {r}", self.dir.id))
    }

    /// Feeds a request's event to the lifecycle and does what it asks of
    /// the one who made the request.
    fn request(self: &Arc<Self>, event: Event) -> Response {
        let todo = {
            let mut inner = lock(&self.inner);
            let todo = match self.apply(&mut inner, event) {
                Ok(t) => t,
                Err(r) => return self.refused(r),
            };
            let mut later = Vec::new();
            for action in todo {
                // Under the lock: the VM cannot be reaped meanwhile, so the
                // pid is still our child's. A pod's container is paused by
                // the agent instead (below).
                let (result, done, what) = match (action, self.machine.vm()) {
                    (Action::PauseVm, Some((pid, control))) => {
                        (control.pause(pid), Event::VmPaused, "paused")
                    }
                    (Action::ResumeVm, Some((pid, control))) => {
                        (control.resume(pid), Event::VmResumed, "resumed")
                    }
                    (other, _) => {
                        later.push(other);
                        continue;
                    }
                };
                if let Err(e) = result {
                    return Response::error(e.to_string());
                }
                self.feed(&mut inner, done);
                log::info!("container {}: {what}", self.dir.id);
            }
            later
        };
        // The agent is written without the lock: the reader thread must
        // stay free to take what the agent writes meanwhile.
        let mut resp = Response::default();
        for action in todo {
            resp = match action {
                Action::StartProcess => {
                    let start = Message::Start {
                        container: self.dir.id.clone(),
                    };
                    match self.ask(start, Waiting::Started(INIT_PROCESS)) {
                        Reply::Started { pid } => Response {
                            guest_pid: Some(pid),
                            ..Response::default()
                        },
                        r => reply_error(r),
                    }
                }
                Action::SendSignal { signal, all } => match self.agent.send(Message::Signal {
                    container: self.dir.id.clone(),
                    process_id: INIT_PROCESS,
                    signal,
                    all,
                }) {
                    Ok(()) => Response::default(),
                    Err(e) => Response::error(e.to_string()),
                },
                Action::PauseVm | Action::ResumeVm => {
                    let (frozen, done, what) = match action {
                        Action::PauseVm => (true, Event::VmPaused, "paused"),
                        _ => (false, Event::VmResumed, "resumed"),
                    };
                    let freeze = Message::Freeze {
                        container: self.dir.id.clone(),
                        frozen,
                    };
                    match self.ask(freeze, Waiting::Frozen) {
                        Reply::Frozen => {
                            self.feed(&mut lock(&self.inner), done);
                            log::info!("container {}: {what} (in its pod's VM)", self.dir.id);
                            Response::default()
                        }
                        r => reply_error(r),
                    }
                }
                other => {
                    log::error!("container {}: {other:?} left undone", self.dir.id);
                    Response::error(format!("internal error: {other:?} left undone"))
                }
            };
        }
        resp
    }

    /// Sends `m` and waits for the answer `waiting` describes.
    pub(super) fn ask(&self, m: Message, waiting: Waiting) -> Reply {
        let _one = lock(&self.one_request);
        {
            let mut inner = lock(&self.inner);
            if inner.pending.closed {
                return Reply::Gone;
            }
            inner.pending.waiting = Some(waiting);
            inner.pending.reply = None;
        }
        if let Err(e) = self.agent.send(m) {
            lock(&self.inner).pending.waiting = None;
            return Reply::Error(e.to_string());
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut inner = lock(&self.inner);
        loop {
            if let Some(r) = inner.pending.reply.take() {
                inner.pending.waiting = None;
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.pending.waiting = None;
                return Reply::Error("the guest agent did not answer in time".into());
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
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
        if let (true, Some(pid)) = (inner.life.vm_running(), self.machine.vm_pid()) {
            out.push(HostProcess {
                pid,
                role: HostRole::Vm,
                guest_pid: None,
            });
        }
        out.extend(
            inner
                .execs
                .hosts()
                .into_iter()
                .map(|(pid, guest)| HostProcess {
                    pid,
                    role: HostRole::Exec,
                    guest_pid: Some(guest),
                }),
        );
        out
    }

    /// Runs another process; the connection then carries its stdio.
    fn exec(self: &Arc<Self>, mut conn: UnixStream, process: ProcessSpec, client_pid: Option<i32>) {
        let Ok(out) = conn.try_clone() else { return };
        let sink = Arc::new(Mutex::new(ExecSink::new(out)));
        let process_id = {
            let mut inner = lock(&self.inner);
            let refusal = match self.apply(&mut inner, Event::Exec) {
                Err(r) => Some(r),
                // The agent is gone, and the VM with it.
                Ok(_) if inner.pending.closed => Some(Refusal::Stopped),
                Ok(_) => None,
            };
            if let Some(r) = refusal {
                drop(inner);
                let _ = control::write_line(&mut conn, &self.refused(r));
                return;
            }
            inner.execs.add(Arc::clone(&sink))
        };
        let reply = self.ask(
            Message::Exec {
                container: self.dir.id.clone(),
                process_id,
                process,
            },
            Waiting::Started(process_id),
        );
        let Reply::Started { pid } = reply else {
            lock(&self.inner).execs.remove(process_id);
            let _ = control::write_line(&mut conn, &reply_error(reply));
            return;
        };
        if let Some(host) = client_pid {
            lock(&self.inner).execs.set_host(process_id, host, pid);
        }
        stdio::exec_session(self, conn, &sink, process_id, pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_belong_to_the_request_that_waits() {
        let mut p = Pending::default();
        let started = Message::Started {
            process_id: 2,
            pid: 45,
        };
        assert!(!p.answer(&started), "nobody waits");
        p.waiting = Some(Waiting::Started(3));
        assert!(!p.answer(&started), "another process's Started");
        assert!(!p.answer(&Message::Processes { pids: vec![1] }));
        p.waiting = Some(Waiting::Started(2));
        assert!(p.answer(&started));
        assert_eq!(p.reply.take(), Some(Reply::Started { pid: 45 }));
        p.waiting = Some(Waiting::Processes);
        assert!(p.answer(&Message::Error {
            message: "no".into()
        }));
        assert_eq!(p.reply.take(), Some(Reply::Error("no".into())));
        p.close();
        assert_eq!(p.reply.take(), Some(Reply::Gone));
        assert!(p.closed);
    }
}
