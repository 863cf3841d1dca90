//! Hand-over of a device's queues from the vCPU thread to the event loop.
//!
//! The transport calls [`VirtioDevice::activate`](super::VirtioDevice::activate)
//! and [`VirtioDevice::reset`](super::VirtioDevice::reset) on the vCPU thread
//! that wrote the Status register, but queue eventfds can only be added to or
//! removed from the event loop from inside it (`EventOps`). [`QueueActivation`]
//! owns that hand-over for one device: it keeps the queues the driver set up,
//! an activate eventfd that wakes the event loop, and the queue eventfds that
//! are currently registered, so that a device only has to forward `activate`,
//! `reset`, `init` and `process` to it.
//!
//! Queue eventfds are duplicates of the transport's (which stay registered as
//! KVM ioeventfds for the transport's whole life). A duplicate is always
//! removed from the epoll set before it is closed: epoll tracks the open file,
//! not the fd number, so closing a registered duplicate while the transport
//! still holds the original would leave a stale entry behind.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use log::{error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::queue::{serve_queue, ChainHandler, Requests, Served};
use super::{ActivateContext, ActivateError, GuestMemory};
use crate::interrupt::VirtioInterrupt;

/// Event data that marks the activate eventfd; queue eventfds carry their queue
/// index, so a device may use any other value for fds of its own.
pub const ACTIVATE_EVENT_DATA: u32 = u32::MAX;

/// What an active device works with.
pub struct ActiveQueues {
    /// The guest's memory.
    pub mem: GuestMemory,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
    /// The queues, in index order, as the driver configured them.
    pub queues: Vec<Queue>,
}

/// What an event delivered to a device turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// The driver notified queue `n` and the device is active: process it.
    Queue(usize),
    /// An activation or reset was applied to the event loop; nothing else to do.
    Control,
    /// A queue notification that arrived while the device is not active; it
    /// was drained and needs no work.
    Ignored,
    /// Not one of this helper's fds: the device's own (a backend fd, say).
    Unknown,
}

/// Activation state of one device, shared by the vCPU and event-loop sides
/// (the device is behind a mutex, so both see the same instance).
pub struct QueueActivation {
    activate_evt: EventFd,
    active: Option<ActiveQueues>,
    // Eventfds handed over by the last `activate`, not yet registered.
    pending_evts: Option<Vec<EventFd>>,
    // Eventfds currently in the event loop's epoll set, by queue index.
    registered_evts: Vec<EventFd>,
    // Queues whose available ring the driver broke, by index: not served
    // again until a reset and a new activation.
    broken: Vec<bool>,
}

impl QueueActivation {
    /// A new, inactive device state with its own activate eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            activate_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            active: None,
            pending_evts: None,
            registered_evts: Vec::new(),
            broken: Vec::new(),
        })
    }

    /// The activate eventfd (registered by [`init`](Self::init)).
    pub fn activate_evt(&self) -> &EventFd {
        &self.activate_evt
    }

    /// Takes what the driver set up and wakes the event loop, which then
    /// registers the queue eventfds. Called on a vCPU thread.
    pub fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queue_evts.len() != ctx.queues.len() {
            return Err(ActivateError::BadQueues(format!(
                "{} queues but {} queue eventfds",
                ctx.queues.len(),
                ctx.queue_evts.len()
            )));
        }
        self.broken = vec![false; ctx.queues.len()];
        self.active = Some(ActiveQueues {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            queues: ctx.queues,
        });
        self.pending_evts = Some(ctx.queue_evts);
        if let Err(e) = self.activate_evt.write(1) {
            self.active = None;
            self.pending_evts = None;
            return Err(ActivateError::Event(e));
        }
        Ok(())
    }

    /// Drops the queues (in-flight requests are abandoned) and wakes the event
    /// loop so that it unregisters the queue eventfds. Called on a vCPU thread.
    pub fn reset(&mut self) {
        self.active = None;
        self.pending_evts = None;
        self.broken.clear();
        if let Err(e) = self.activate_evt.write(1) {
            // The queues are gone already, so a queue event that still fires
            // is drained and ignored; only the epoll entries linger.
            warn!("virtio reset: cannot wake the event loop: {e}");
        }
    }

    /// Whether the driver has activated the device (and not reset it since).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The active state, if any.
    pub fn active(&self) -> Option<&ActiveQueues> {
        self.active.as_ref()
    }

    /// The active state, if any, mutably.
    pub fn active_mut(&mut self) -> Option<&mut ActiveQueues> {
        self.active.as_mut()
    }

    /// Registers the activate eventfd. Call from `MutEventSubscriber::init`.
    pub fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.activate_evt,
            ACTIVATE_EVENT_DATA,
            EventSet::IN,
        )) {
            error!("virtio: cannot register the activate eventfd: {e:?}");
        }
        // An activation may have happened before the device was added to the
        // event loop; its eventfd write is still pending and fires right away.
    }

    /// Sorts out an event: applies activations and resets, drains queue
    /// eventfds, and tells the device what to do. Call first thing from
    /// `MutEventSubscriber::process`.
    pub fn handle(&mut self, events: &Events, ops: &mut EventOps) -> Dispatch {
        let data = events.data();
        if data == ACTIVATE_EVENT_DATA && events.fd() == self.activate_evt.as_raw_fd() {
            // Non-blocking: EAGAIN only means another event got here first.
            let _ = self.activate_evt.read();
            self.sync_registrations(ops);
            return Dispatch::Control;
        }
        let Ok(idx) = usize::try_from(data) else {
            return Dispatch::Unknown;
        };
        match self.registered_evts.get(idx) {
            Some(evt) if evt.as_raw_fd() == events.fd() => {
                // The count does not matter: one pass empties the whole ring.
                let _ = evt.read();
                if self.active.is_some() {
                    Dispatch::Queue(idx)
                } else {
                    Dispatch::Ignored
                }
            }
            _ => Dispatch::Unknown,
        }
    }

    /// Whether the driver broke queue `idx`'s available ring since the last
    /// activation (the queue is then left alone until a reset).
    pub fn is_broken(&self, idx: usize) -> bool {
        self.broken.get(idx).copied().unwrap_or(false)
    }

    /// Serves queue `idx` of a request queue: [`serve_with`](Self::serve_with)
    /// with `handle` doing the work on each chain (given guest memory, the
    /// queue's size and the chain) and returning its used length.
    pub fn serve<F>(&mut self, idx: usize, budget: usize, device: &str, handle: F) -> Option<Served>
    where
        F: FnMut(&GuestMemory, u16, DescriptorChain<&GuestMemory>) -> u32,
    {
        self.serve_with(idx, budget, device, &mut Requests(handle))
    }

    /// Serves queue `idx` with [`serve_queue`] if the device is active, the
    /// queue is ready and its ring is not broken: at most `budget` chains go
    /// to `handler`, the driver is interrupted if it wants, and when the
    /// budget ran out another pass is scheduled through the event loop. A
    /// ring found broken is left alone from then on. `None` when there was
    /// nothing to serve.
    pub fn serve_with<H>(
        &mut self,
        idx: usize,
        budget: usize,
        device: &str,
        handler: &mut H,
    ) -> Option<Served>
    where
        H: ChainHandler + ?Sized,
    {
        if self.is_broken(idx) {
            return None;
        }
        let active = self.active.as_mut()?;
        let Some(queue) = active.queues.get_mut(idx) else {
            warn!("{device}: notification for nonexistent queue {idx}");
            return None;
        };
        if !queue.ready() {
            return None;
        }
        let mut served = serve_queue(
            queue,
            &active.mem,
            &active.interrupt,
            budget,
            device,
            handler,
        );
        if served.broken {
            if let Some(b) = self.broken.get_mut(idx) {
                *b = true;
            }
        }
        if served.yielded {
            // Come back through the event loop so other devices get a turn.
            if let Err(e) = self.kick(idx) {
                error!("{device}: cannot reschedule queue {idx}: {e}");
                served.errors += 1;
            }
        }
        Some(served)
    }

    /// Schedules another pass over queue `idx` through the event loop, for a
    /// device that stopped early to let other devices run.
    pub fn kick(&self, idx: usize) -> io::Result<()> {
        match self.registered_evts.get(idx) {
            Some(evt) => evt.write(1),
            None => Ok(()),
        }
    }

    // Makes the epoll set match the current state: the old queue eventfds out,
    // the new ones (if the device is active) in.
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        for evt in self.registered_evts.drain(..) {
            if let Err(e) = ops.remove(Events::empty(&evt)) {
                warn!("virtio: cannot unregister a queue eventfd: {e:?}");
            }
        }
        if self.active.is_none() {
            self.pending_evts = None;
            return;
        }
        let Some(evts) = self.pending_evts.take() else {
            return;
        };
        for (idx, evt) in evts.iter().enumerate() {
            let Ok(data) = u32::try_from(idx) else {
                break;
            };
            if let Err(e) = ops.add(Events::with_data(evt, data, EventSet::IN)) {
                error!("virtio: cannot register the eventfd of queue {idx}: {e:?}");
            }
        }
        self.registered_evts = evts;
    }
}
