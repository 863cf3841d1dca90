//! The virtio-fs device the guest sees, in front of a vhost-user backend.
//!
//! The transport calls `activate` and `reset` on a vCPU thread; both talk to
//! the backend right there (a handful of bounded round trips), since the
//! rings must be running or stopped when the driver's status write returns.
//! The event loop only relays: a backend's call eventfd becomes the used-ring
//! bit in InterruptStatus plus the interrupt line, and a hang-up on the
//! backend's socket is reported and takes the device out of service.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::vhost_user::{memory_regions, Backend, Vring, WatchdogSetup};
use super::{FsConfig, FsError, TAG_LEN};
use crate::interrupt::VirtioInterrupt;
use crate::virtio::{
    read_config_bytes, ActivateContext, ActivateError, GuestMemory, VirtioDevice, TYPE_FS,
    VIRTIO_F_VERSION_1,
};

/// Features the device passes on from the backend: those the split rings of
/// the MMIO transport support. Anything else the backend offers (a
/// notification queue, packed rings, an IOMMU) is not offered to the guest.
const PASSED_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Event data of the backend socket's hang-up watch; call eventfds carry
/// their queue index.
const SOCKET_EVENT_DATA: u32 = u32::MAX;

/// What the device holds while the driver has it activated.
struct Active {
    interrupt: Arc<VirtioInterrupt>,
    // Queues handed to the backend (the ones the driver made ready).
    started: Vec<usize>,
}

/// A virtio-fs device served by a vhost-user backend.
pub struct Fs {
    id: String,
    tag: String,
    backend: Backend,
    config_space: [u8; TAG_LEN + 4],
    queue_sizes: Vec<u16>,
    avail_features: u64,
    acked_features: u64,
    // One per queue, for the device's whole life: the backend signals them,
    // the event loop relays them to the interrupt.
    call_evts: Vec<EventFd>,
    active: Option<Active>,
    watching_socket: bool,
}

impl Fs {
    /// Connects to the backend of `config` and gives it the memory table of
    /// `mem` (every region must be file-backed and shared). Fails when the
    /// socket is missing, the backend does not answer within the timeout, or
    /// it lacks what the device needs: before the guest ever sees the device.
    pub fn new(config: &FsConfig, mem: &GuestMemory) -> Result<Self, FsError> {
        config.check()?;
        // Queue 0 is the high-priority queue, the request queues follow.
        let queues = usize::from(config.num_request_queues) + 1;
        // Before connecting: memory the backend cannot map is our error, not its.
        let regions = memory_regions(mem)?;
        let mut backend = Backend::connect(&config.socket, queues, config.timeout)?;
        backend.set_mem_table(&regions)?;
        // The handshake's watchdog thread ends here; the running device's
        // starts with `start_watchdog`, once the VMM is jailed.
        backend.end_handshake();
        let avail_features = backend.features() & PASSED_FEATURES;
        let call_evts = (0..queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FsError::EventFd)?;
        let mut config_space = [0u8; TAG_LEN + 4];
        config_space[..config.tag.len()].copy_from_slice(config.tag.as_bytes());
        config_space[TAG_LEN..]
            .copy_from_slice(&u32::from(config.num_request_queues).to_le_bytes());
        Ok(Fs {
            id: format!("fs:{}", config.tag),
            tag: config.tag.clone(),
            backend,
            config_space,
            queue_sizes: vec![config.queue_size; queues],
            avail_features,
            acked_features: 0,
            call_evts,
            active: None,
            watching_socket: false,
        })
    }

    /// Starts the thread that bounds the requests `activate` and `reset`
    /// send (without it they are refused); `on_start` runs first on it.
    /// Call once the VMM is jailed: no thread may run before that.
    pub fn start_watchdog(&mut self, on_start: Option<WatchdogSetup>) -> Result<(), FsError> {
        self.backend.start_watchdog(on_start)
    }

    /// The device's name in logs (`fs:TAG`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether the backend failed or went away.
    pub fn backend_broken(&self) -> bool {
        self.backend.is_broken()
    }

    /// The queues the backend is serving now (empty when not activated).
    pub fn started_queues(&self) -> &[usize] {
        self.active.as_ref().map_or(&[], |a| &a.started)
    }

    fn drain_calls(&self) {
        for evt in &self.call_evts {
            // Non-blocking: EAGAIN just means nothing was pending.
            let _ = evt.read();
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The whole configuration space is read-only for the driver.
        debug!(
            "{}: {}-byte write to the read-only config space at {offset:#x} ignored",
            self.id,
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let n = self.queue_sizes.len();
        if ctx.queues.len() != n || ctx.queue_evts.len() != n {
            return Err(ActivateError::BadQueues(format!(
                "{} needs {n} queues with their eventfds, got {} and {}",
                self.id,
                ctx.queues.len(),
                ctx.queue_evts.len()
            )));
        }
        if let Some(old) = self.active.take() {
            // Not reached through the transport (it resets first); stay safe.
            let _ = self.backend.stop(&old.started);
        }
        // Only the queues the driver made ready go to the backend; the others
        // stay disabled there and are never touched.
        let vrings: Vec<Vring<'_>> = ctx
            .queues
            .iter()
            .zip(&ctx.queue_evts)
            .zip(&self.call_evts)
            .enumerate()
            .filter(|(_, ((q, _), _))| q.ready())
            .map(|(index, ((queue, kick), call))| Vring {
                index,
                queue,
                kick,
                call,
            })
            .collect();
        if vrings.len() < n {
            debug!(
                "{}: driver made {} of {n} queues ready",
                self.id,
                vrings.len()
            );
        }
        let started: Vec<usize> = vrings.iter().map(|v| v.index).collect();
        self.backend
            .start(&ctx.mem, self.acked_features, &vrings)
            .map_err(|e| match e {
                FsError::RingAddress { .. } => ActivateError::BadQueues(e.to_string()),
                e => ActivateError::Backend(e.to_string()),
            })?;
        self.active = Some(Active {
            interrupt: ctx.interrupt,
            started,
        });
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(active) = self.active.take() {
            if let Err(e) = self.backend.stop(&active.started) {
                error!("{}: stopping the backend's rings: {e}", self.id);
            }
        }
        // Calls for the old rings must not reach the next driver instance.
        self.drain_calls();
        self.acked_features = 0;
    }
}

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in (0u32..).zip(&self.call_evts) {
            if let Err(e) = ops.add(Events::with_data(evt, i, EventSet::IN)) {
                error!(
                    "{}: cannot watch the call eventfd of queue {i}: {e:?}",
                    self.id
                );
            }
        }
        // Hang-ups only: replies are read by whoever sent the request.
        let watch = Events::with_data(
            self.backend.watch(),
            SOCKET_EVENT_DATA,
            EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR,
        );
        match ops.add(watch) {
            Ok(()) => self.watching_socket = true,
            Err(e) => error!("{}: cannot watch the backend socket: {e:?}", self.id),
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        if data == SOCKET_EVENT_DATA && events.fd() == self.backend.watch().as_raw_fd() {
            error!(
                "{}: the connection to the backend at {} is gone (it exited or stopped \
                 answering); the guest's file system '{}' stops answering",
                self.id,
                self.backend.socket().display(),
                self.tag
            );
            self.backend.mark_broken();
            // Level-triggered: a closed socket would fire on every loop turn.
            if self.watching_socket {
                if let Err(e) = ops.remove(Events::empty(self.backend.watch())) {
                    warn!(
                        "{}: cannot stop watching the backend socket: {e:?}",
                        self.id
                    );
                }
                self.watching_socket = false;
            }
            return;
        }
        let evt = usize::try_from(data)
            .ok()
            .and_then(|i| self.call_evts.get(i))
            .filter(|evt| evt.as_raw_fd() == events.fd());
        let Some(evt) = evt else {
            warn!("{}: unexpected event {data}", self.id);
            return;
        };
        let _ = evt.read();
        match &self.active {
            Some(active) => {
                if let Err(e) = active.interrupt.signal_used_queue() {
                    error!("{}: cannot raise the interrupt: {e}", self.id);
                }
            }
            None => debug!("{}: backend call on queue {data} while inactive", self.id),
        }
    }
}
