//! Pods: one VM for all the containers of a pod.
//!
//! Owns both ends of a pod member's attachment. The pod's sandbox container
//! (CRI's "pause", Podman's infra container) boots the VM as any container
//! does. Each further container of the pod keeps a sandbox process of its
//! own (its pid is the container's; it owns the container's lifecycle,
//! control socket and stdio) but, instead of starting a VM, it [`attach`]es
//! to the pod's sandbox: its root and bind sources go into the pod's share
//! ([`crate::share::attach_member`]), and its connection to the pod's
//! control socket becomes its agent channel, which the pod's sandbox relays
//! ([`serve_member`]). The member's process ids are moved into a range of
//! their own (its slot, the high bits); its requests reach the agent one at
//! a time like the pod's own, so each answer goes to whoever asked; output
//! and exits in its range go back to it ([`route`]).
//!
//! For a member, "the VM exited" is "the relayed channel closed", "kill the
//! VM" closes it, and the power-off (`Shutdown`) ends its container in the
//! guest: the pod's sandbox kills what is left of it, has the agent
//! `Delete` it and removes its share entry. The lifecycle
//! ([`crate::lifecycle`]) is the same for every container.

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_agent::proto::{self, Frame, Message};
use serde::{Deserialize, Serialize};

use super::control_server::{Reply, Waiting};
use super::{lock, SandboxError, SandboxPlan, Shared};
use crate::agent_client::{self, AgentWriter};
use crate::control::{self, Request, Response};
use crate::state::ContainerDir;

/// Low bits of a process id that are the member's own; the high bits name
/// its slot (slot 0 is the pod's sandbox container).
const SLOT_BITS: u32 = 20;
/// Largest process id a member may use.
const LOCAL_MAX: u32 = (1 << SLOT_BITS) - 1;
/// Slots of a pod, the sandbox's own included.
const SLOTS: u32 = 1 << (32 - SLOT_BITS);
/// How long a member's processes get to die before its container is deleted.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Where a pod's further container finds its pod (worked out by `create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// The runm root both containers live under.
    pub root: PathBuf,
    /// The id of the pod's sandbox container.
    pub sandbox: String,
    /// Its sandbox process, in whose mount namespace the pod's share is.
    pub sandbox_pid: i32,
}

/// The member's side: joins the pod's VM and has the agent prepare the
/// container there. Returns the relayed agent channel. Must be called
/// while the process has one thread (it enters the pod's mount namespace).
pub(super) fn attach(
    dir: &ContainerDir,
    plan: &SandboxPlan,
    pod: &PodPlan,
) -> Result<UnixStream, SandboxError> {
    let deadline = Instant::now() + Duration::from_secs(plan.boot_timeout_secs);
    let pod_dir = ContainerDir::new(&pod.root, &pod.sandbox)?;
    let request = Request::Attach {
        container: dir.id.clone(),
    };
    let (_, mut stream) = control::request(
        &pod_dir.control_socket(),
        &request,
        Duration::from_secs(plan.boot_timeout_secs),
    )
    .map_err(|e| {
        SandboxError::Start(format!(
            "cannot join the VM of its pod (sandbox container {}): {e}",
            pod.sandbox
        ))
    })?;
    if let Some(share) = &plan.share {
        crate::share::attach_member(pod.sandbox_pid, &pod_dir.share_dir(), &dir.id, share)?;
    }
    agent_client::create(
        &mut stream,
        plan.container.clone(),
        Some(pod.sandbox.clone()),
        deadline,
    )
    .map_err(|e| SandboxError::Boot {
        what: format!("in the VM of pod sandbox {}: {e}", pod.sandbox),
        context: String::new(),
    })?;
    log::info!(
        "container {}: created in the VM of pod sandbox {}",
        dir.id,
        pod.sandbox
    );
    Ok(stream)
}

/// A container attached to this sandbox's VM.
#[derive(Debug)]
struct Member {
    id: String,
    /// Its relayed channel (what the agent says to it).
    channel: Arc<AgentWriter>,
    /// Its init process (agent numbering), once created.
    init: Option<u32>,
    /// Created and its init not yet exited.
    alive: bool,
}

/// The members attached to this sandbox's VM, by slot.
#[derive(Debug, Default)]
pub(super) struct Members {
    slots: BTreeMap<u32, Member>,
}

impl Members {
    /// Gives `id` a slot.
    fn add(&mut self, id: &str, channel: Arc<AgentWriter>) -> Result<u32, String> {
        if self.slots.values().any(|m| m.id == id) {
            return Err(format!("container {id} is in this pod already"));
        }
        let slot = (1..SLOTS)
            .find(|s| !self.slots.contains_key(s))
            .ok_or_else(|| format!("the pod holds {} containers: no room", SLOTS - 1))?;
        self.slots.insert(
            slot,
            Member {
                id: id.to_string(),
                channel,
                init: None,
                alive: false,
            },
        );
        Ok(slot)
    }
}

/// The agent's number for a member's process `local`.
fn global(slot: u32, local: u32) -> Option<u32> {
    (local <= LOCAL_MAX).then_some((slot << SLOT_BITS) | local)
}

/// The agent reader's first step: a frame about a member's process goes to
/// that member (renumbered), and `None` is returned; any other frame is
/// given back. A frame for a slot nobody holds (a member that just ended)
/// is dropped.
pub(super) fn route(shared: &Shared, frame: Frame) -> Option<Frame> {
    let (process_id, exited) = match &frame {
        Frame::Data { process_id, .. } => (*process_id, None),
        Frame::Control(m) => match m.as_ref() {
            Message::Exited {
                process_id,
                container,
                ..
            } => (*process_id, Some(container.clone())),
            _ => return Some(frame),
        },
    };
    let slot = process_id >> SLOT_BITS;
    if slot == 0 {
        return Some(frame);
    }
    let channel = {
        let mut inner = lock(&shared.inner);
        let Some(member) = inner.members.slots.get_mut(&slot) else {
            log::debug!(
                "container {}: dropping a frame for process {process_id}: no such member",
                shared.dir.id
            );
            return None;
        };
        if exited.flatten().is_some_and(|c| c == member.id) {
            member.alive = false;
            shared.changed.notify_all();
        }
        Arc::clone(&member.channel)
    };
    let local = process_id & LOCAL_MAX;
    let out = match frame {
        Frame::Data { stream, data, .. } => Frame::Data {
            process_id: local,
            stream,
            data,
        },
        Frame::Control(m) => match *m {
            Message::Exited {
                status, container, ..
            } => Frame::Control(Box::new(Message::Exited {
                process_id: local,
                status,
                container,
            })),
            other => Frame::Control(Box::new(other)),
        },
    };
    // A member that stopped reading is noticed by its relay thread.
    if let Err(e) = channel.send_frame(&out) {
        log::debug!("container {}: to a member: {e}", shared.dir.id);
    }
    None
}

/// The pod's side: serves a member on `conn` (a control connection that
/// asked to attach) until it ends, then ends its container in the guest.
pub(super) fn serve_member(shared: &Arc<Shared>, mut conn: UnixStream, id: String) {
    let admitted = admit(shared, &conn, &id);
    let (slot, channel) = match admitted {
        Ok(a) => a,
        Err(why) => {
            let _ = control::write_line(&mut conn, &Response::error(why));
            return;
        }
    };
    if control::write_line(&mut conn, &Response::default()).is_ok() {
        log::info!(
            "container {}: container {id} joins the pod (process ids from {})",
            shared.dir.id,
            slot << SLOT_BITS
        );
        let member = Relay {
            shared,
            slot,
            id: &id,
            channel: &channel,
        };
        loop {
            match proto::read_frame(&mut conn) {
                Ok(Some(frame)) => {
                    if !member.relay(frame) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("container {}: member {id}: {e}", shared.dir.id);
                    break;
                }
            }
        }
        member.end();
    } else {
        lock(&shared.inner).members.slots.remove(&slot);
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// Checks that `id` may join this VM and gives it a slot.
fn admit(
    shared: &Arc<Shared>,
    conn: &UnixStream,
    id: &str,
) -> Result<(u32, Arc<AgentWriter>), String> {
    let Some(share) = &shared.share_dir else {
        return Err(format!(
            "the pod's sandbox container {} shares no directories with its VM",
            shared.dir.id
        ));
    };
    if id == shared.dir.id {
        return Err(format!("container {id} is the pod's sandbox itself"));
    }
    crate::state::validate_id(id).map_err(|e| e.to_string())?;
    let channel = Arc::new(AgentWriter::new(
        conn.try_clone().map_err(|e| format!("cannot relay: {e}"))?,
    ));
    let slot = {
        let mut inner = lock(&shared.inner);
        if !inner.life.vm_running() || inner.pending.closed() {
            return Err(format!(
                "the VM of pod sandbox {} is not running",
                shared.dir.id
            ));
        }
        inner.members.add(id, Arc::clone(&channel))?
    };
    // What an earlier member of the same name may have left.
    if let Err(e) = crate::share::remove_member(share, id) {
        lock(&shared.inner).members.slots.remove(&slot);
        return Err(e.to_string());
    }
    Ok((slot, channel))
}

/// One member's relay.
struct Relay<'a> {
    shared: &'a Arc<Shared>,
    slot: u32,
    id: &'a str,
    channel: &'a AgentWriter,
}

impl Relay<'_> {
    /// Passes one frame of the member's to the agent; false once the
    /// member is done (it sent `Shutdown`) or the channel is unusable.
    fn relay(&self, frame: Frame) -> bool {
        let m = match frame {
            Frame::Data {
                process_id,
                stream,
                data,
            } => {
                let Some(process_id) = global(self.slot, process_id) else {
                    return false;
                };
                return self
                    .shared
                    .agent
                    .send_frame(&Frame::Data {
                        process_id,
                        stream,
                        data,
                    })
                    .is_ok();
            }
            Frame::Control(m) => *m,
        };
        let ours = |c: &str| c == self.id;
        match m {
            Message::Create {
                container,
                init_process,
                ..
            } if ours(&container.id) => {
                let Some(init) = global(self.slot, init_process) else {
                    return self.refuse("process id out of range");
                };
                let create = Message::Create {
                    container,
                    init_process: init,
                    share_namespaces_with: Some(self.shared.dir.id.clone()),
                };
                let reply = self.shared.ask(create, Waiting::Created);
                if reply == Reply::Created {
                    if let Some(m) = lock(&self.shared.inner).members.slots.get_mut(&self.slot) {
                        m.init = Some(init);
                        m.alive = true;
                    }
                }
                self.answer(reply, init_process)
            }
            Message::Start { container } if ours(&container) => {
                let init = lock(&self.shared.inner)
                    .members
                    .slots
                    .get(&self.slot)
                    .and_then(|m| m.init);
                let Some(init) = init else {
                    return self.refuse("start before create");
                };
                let reply = self
                    .shared
                    .ask(Message::Start { container }, Waiting::Started(init));
                self.answer(reply, init & LOCAL_MAX)
            }
            Message::Exec {
                container,
                process_id,
                process,
            } if ours(&container) => {
                let Some(g) = global(self.slot, process_id) else {
                    return self.refuse("process id out of range");
                };
                let exec = Message::Exec {
                    container,
                    process_id: g,
                    process,
                };
                let reply = self.shared.ask(exec, Waiting::Started(g));
                self.answer(reply, process_id)
            }
            Message::Ps { container } if ours(&container) => {
                let reply = self
                    .shared
                    .ask(Message::Ps { container }, Waiting::Processes);
                self.answer(reply, 0)
            }
            Message::Signal {
                container,
                process_id,
                signal,
                all,
            } if ours(&container) => {
                let Some(process_id) = global(self.slot, process_id) else {
                    return self.refuse("process id out of range");
                };
                let signal = Message::Signal {
                    container,
                    process_id,
                    signal,
                    all,
                };
                self.shared.agent.send(signal).is_ok()
            }
            Message::Resize {
                process_id,
                rows,
                cols,
            } => {
                let Some(process_id) = global(self.slot, process_id) else {
                    return self.refuse("process id out of range");
                };
                let resize = Message::Resize {
                    process_id,
                    rows,
                    cols,
                };
                self.shared.agent.send(resize).is_ok()
            }
            Message::Freeze { container, frozen } if ours(&container) => {
                let reply = self
                    .shared
                    .ask(Message::Freeze { container, frozen }, Waiting::Frozen);
                self.answer(reply, 0)
            }
            Message::Shutdown => false,
            other => self.refuse(&format!(
                "not a request a container of the pod may make: {other:?}"
            )),
        }
    }

    /// Tells the member its request was refused; the relay goes on.
    fn refuse(&self, why: &str) -> bool {
        self.channel
            .send(Message::Error {
                message: format!("pod sandbox {}: {why}", self.shared.dir.id),
            })
            .is_ok()
    }

    /// Gives the member the agent's answer (`local`: the process id it
    /// asked about).
    fn answer(&self, reply: Reply, local: u32) -> bool {
        let m = match reply {
            Reply::Started { pid } => Message::Started {
                process_id: local,
                pid,
            },
            Reply::Processes(pids) => Message::Processes { pids },
            Reply::Created => Message::Created,
            Reply::Deleted => Message::Deleted,
            Reply::Frozen => Message::Frozen,
            Reply::Error(message) => Message::Error { message },
            Reply::Gone => {
                let _ = self.channel.send(Message::Error {
                    message: "the pod's VM is gone".into(),
                });
                return false;
            }
        };
        self.channel.send(m).is_ok()
    }

    /// The member is done or gone: what is left of its container in the
    /// guest is killed and deleted, and its share entry removed.
    fn end(&self) {
        let shared = self.shared;
        let (init, alive) = {
            let inner = lock(&shared.inner);
            match inner.members.slots.get(&self.slot) {
                Some(m) => (m.init, m.alive),
                None => (None, false),
            }
        };
        if let (Some(init), true) = (init, alive) {
            let _ = shared.agent.send(Message::Signal {
                container: self.id.to_string(),
                process_id: init,
                signal: libc::SIGKILL,
                all: true,
            });
            let deadline = Instant::now() + KILL_GRACE;
            let mut inner = lock(&shared.inner);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let gone = inner.members.slots.get(&self.slot).is_none_or(|m| !m.alive);
                if gone || inner.pending.closed() || left.is_zero() {
                    break;
                }
                inner = shared
                    .changed
                    .wait_timeout(inner, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if init.is_some() {
            let delete = Message::Delete {
                container: self.id.to_string(),
            };
            match shared.ask(delete, Waiting::Deleted) {
                Reply::Deleted | Reply::Gone => {}
                r => log::warn!(
                    "container {}: deleting member {} in the guest: {r:?}",
                    shared.dir.id,
                    self.id
                ),
            }
        }
        lock(&shared.inner).members.slots.remove(&self.slot);
        if let Some(share) = &shared.share_dir {
            if let Err(e) = crate::share::remove_member(share, self.id) {
                log::warn!("container {}: member {}: {e}", shared.dir.id, self.id);
            }
        }
        log::info!(
            "container {}: container {} left the pod",
            shared.dir.id,
            self.id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_ranges_of_their_own() {
        assert_eq!(global(1, 0), Some(1 << SLOT_BITS));
        assert_eq!(global(2, 5), Some((2 << SLOT_BITS) | 5));
        assert_eq!(
            global(1, LOCAL_MAX + 1),
            None,
            "no reach into the next slot"
        );
        assert_eq!(global(SLOTS - 1, LOCAL_MAX), Some(u32::MAX));
        let (a, _) = UnixStream::pair().unwrap();
        let w = || Arc::new(AgentWriter::new(a.try_clone().unwrap()));
        let mut m = Members::default();
        assert_eq!(m.add("a", w()), Ok(1));
        assert_eq!(m.add("b", w()), Ok(2));
        assert!(m.add("a", w()).unwrap_err().contains("already"));
        m.slots.remove(&1);
        assert_eq!(m.add("c", w()), Ok(1), "a freed slot is taken again");
    }
}
