//! The virtio-rng device: every writable buffer the driver offers is filled
//! with host entropy, up to [`MAX_BYTES_PER_CHAIN`] per chain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use log::{debug, warn};
use vm_memory::{Bytes, GuestMemory as _, Permissions};

use super::backend::Entropy;
use super::RngError;
use crate::virtio::activation::{Dispatch, QueueActivation};
use crate::virtio::{
    ActivateContext, ActivateError, GuestMemory, VirtioDevice, TYPE_RNG, VIRTIO_F_VERSION_1,
};

/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per chain, however large the buffers: bounds the
/// time one guest request can hold the event loop.
pub const MAX_BYTES_PER_CHAIN: u32 = 64 << 10;
/// Chains handled per queue event before yielding to other devices.
pub const CHAINS_PER_EVENT: usize = 4 * QUEUE_SIZE as usize;

/// Per-device counters.
#[derive(Debug, Default)]
pub struct RngCounters {
    /// Chains completed.
    pub requests: AtomicU64,
    /// Bytes of entropy handed to the guest.
    pub bytes: AtomicU64,
    /// Buffers skipped because they lay outside guest memory or could not be
    /// filled.
    pub bad_buffers: AtomicU64,
}

/// A virtio-rng device.
pub struct Rng {
    id: String,
    acked_features: u64,
    activation: QueueActivation,
    counters: Arc<RngCounters>,
}

impl Rng {
    /// A new entropy device named `id` in logs.
    pub fn new(id: impl Into<String>) -> Result<Self, RngError> {
        Ok(Self {
            id: id.into(),
            acked_features: 0,
            activation: QueueActivation::new().map_err(RngError::EventFd)?,
            counters: Arc::default(),
        })
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<RngCounters> {
        self.counters.clone()
    }

    /// Whether the driver activated the device (and has not reset it).
    pub fn is_activated(&self) -> bool {
        self.activation.is_active()
    }

    /// Fills every available chain (up to the budget), then interrupts the
    /// driver if it wants. Does nothing after the driver broke the queue.
    pub fn process_queue(&mut self, queue_index: usize) {
        let Self {
            id,
            activation,
            counters,
            ..
        } = self;
        let device = format!("virtio-rng {id}");
        activation.serve(
            queue_index,
            CHAINS_PER_EVENT,
            &device,
            |mem, queue_size, chain| {
                let written = fill_chain(chain, mem, usize::from(queue_size), counters);
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(u64::from(written), Ordering::Relaxed);
                written
            },
        );
    }
}

/// Fills the writable buffers of one chain, in order, with at most
/// [`MAX_BYTES_PER_CHAIN`] bytes in all; returns how many were written.
/// Readable buffers (which a driver must not offer) and buffers outside guest
/// memory are skipped; the walk stops after `max_descriptors`.
pub fn fill_chain<I>(
    chain: I,
    mem: &GuestMemory,
    max_descriptors: usize,
    counters: &RngCounters,
) -> u32
where
    I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
{
    let mut written = 0u32;
    for desc in chain.into_iter().take(max_descriptors) {
        let room = MAX_BYTES_PER_CHAIN - written;
        if room == 0 {
            break;
        }
        if !desc.is_write_only() || desc.len() == 0 {
            continue;
        }
        let len = desc.len().min(room);
        if !mem.check_range(desc.addr(), len as usize, Permissions::Write) {
            counters.bad_buffers.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match mem.read_exact_volatile_from(desc.addr(), &mut Entropy, len as usize) {
            Ok(()) => written += len,
            Err(e) => {
                debug!("virtio-rng: cannot fill a buffer: {e}");
                counters.bad_buffers.fetch_add(1, Ordering::Relaxed);
                // The used length must not claim bytes we may not have
                // written, and later buffers would leave a gap.
                break;
            }
        }
    }
    written
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        1u64 << VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {
        // virtio-rng has no configuration space; the caller's zeroes stand.
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-rng {}: ignored {}-byte config write at {offset:#x}",
            self.id,
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        ctx.check_queues(&format!("virtio-rng {}", self.id), 1)?;
        self.activation.activate(ctx)
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        self.activation.reset();
    }
}

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.activation.handle(&events, ops) {
            Dispatch::Queue(idx) => self.process_queue(idx),
            Dispatch::Control | Dispatch::Ignored => {}
            Dispatch::Unknown => warn!(
                "virtio-rng {}: event on unknown fd {} (data {})",
                self.id,
                events.fd(),
                events.data()
            ),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.activation.init(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{
        activate_context, default_guest_memory, fill, pump, read_bytes, recording_interrupt,
        TestDesc, TestQueue, DEFAULT_MEM_SIZE,
    };
    use event_manager::{EventManager, SubscriberOps};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::QueueT;
    use vm_memory::GuestAddress;

    fn active(mem: &GuestMemory, tq: &TestQueue) -> (Rng, Arc<crate::test_utils::RecordingIrq>) {
        let mut rng = Rng::new("rng0").unwrap();
        rng.ack_features(1 << VIRTIO_F_VERSION_1);
        let (interrupt, irq) = recording_interrupt();
        let (ctx, _) = activate_context(mem, interrupt, vec![tq.create_queue()]);
        rng.activate(ctx).unwrap();
        (rng, irq)
    }

    fn nonzero(bytes: &[u8]) -> bool {
        bytes.iter().any(|&b| b != 0)
    }

    #[test]
    fn fills_writable_buffers() {
        let mem = default_guest_memory();
        let tq = TestQueue::new(&mem, GuestAddress(0), 16);
        tq.add_chain(
            0,
            &[
                TestDesc::writable(0x10_0000, 100),
                TestDesc::writable(0x20_0000, 50),
            ],
        );
        tq.add_chain(2, &[TestDesc::writable(0x30_0000, 4096)]);
        let (mut rng, irq) = active(&mem, &tq);
        assert_eq!(rng.device_type(), TYPE_RNG);
        rng.process_queue(0);
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(tq.used_elem(0), (0, 150));
        assert_eq!(tq.used_elem(1), (2, 4096));
        // 100 random bytes all zero has probability 2^-800.
        assert!(nonzero(&read_bytes(&mem, 0x10_0000, 100)));
        assert!(nonzero(&read_bytes(&mem, 0x30_0000, 4096)));
        assert_eq!(read_bytes(&mem, 0x10_0000 + 100, 16), vec![0; 16]);
        assert_eq!(irq.count(), 1);
        assert_eq!(rng.counters().bytes.load(Ordering::Relaxed), 4246);
    }

    #[test]
    fn hostile_chains_are_bounded() {
        let mem = default_guest_memory();
        let end = DEFAULT_MEM_SIZE as u64;
        let tq = TestQueue::new(&mem, GuestAddress(0), 16);
        // One huge buffer: only MAX_BYTES_PER_CHAIN are handed out.
        tq.add_chain(0, &[TestDesc::writable(0x10_0000, u32::MAX / 2)]);
        // Readable, zero-length, out-of-memory and straddling buffers are
        // skipped; the good one after them is filled.
        fill(&mem, end - 8, 8, 0);
        tq.add_chain(
            1,
            &[
                TestDesc::readable(0x40_0000, 64),
                TestDesc::writable(0x40_1000, 0),
                TestDesc::writable(u64::MAX - 4, 64),
                TestDesc::writable(end - 8, 64),
                TestDesc::writable(0x40_2000, 32),
            ],
        );
        // A descriptor that points to itself.
        let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
        tq.set_desc(6, 0x50_0000, 1024, flags, 6);
        tq.publish(6);
        // Two descriptors pointing at each other, each 60 KiB.
        tq.set_desc(7, 0x60_0000, 60 << 10, flags, 8);
        tq.set_desc(8, 0x70_0000, 60 << 10, flags, 7);
        tq.publish(7);
        let (mut rng, _) = active(&mem, &tq);
        rng.process_queue(0);
        assert_eq!(tq.used_idx(), 4);
        assert_eq!(tq.used_elem(0), (0, MAX_BYTES_PER_CHAIN));
        let past = 0x10_0000 + u64::from(MAX_BYTES_PER_CHAIN);
        assert_eq!(read_bytes(&mem, past, 4096), vec![0; 4096]);
        assert_eq!(tq.used_elem(1), (1, 32));
        assert_eq!(read_bytes(&mem, 0x40_0000, 64), vec![0; 64]);
        assert_eq!(read_bytes(&mem, end - 8, 8), vec![0; 8]);
        // The loop is walked at most queue-size times, 1 KiB each.
        assert_eq!(tq.used_elem(2), (6, 16 * 1024));
        assert_eq!(tq.used_elem(3), (7, MAX_BYTES_PER_CHAIN));
        assert_eq!(rng.counters().bad_buffers.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_lying_avail_index_stops_the_queue_until_reset() {
        let mem = default_guest_memory();
        let tq = TestQueue::new(&mem, GuestAddress(0), 16);
        tq.add_chain(0, &[TestDesc::writable(0x10_0000, 64)]);
        let rng = Arc::new(Mutex::new(Rng::new("rng0").unwrap()));
        let mut em: EventManager<Arc<Mutex<Rng>>> = EventManager::new().unwrap();
        em.add_subscriber(rng.clone());
        let (interrupt, irq) = recording_interrupt();
        let (ctx, evts) = activate_context(&mem, interrupt, vec![tq.create_queue()]);
        rng.lock().unwrap().activate(ctx).unwrap();
        pump(&mut em, 4);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(tq.used_idx(), 1);
        // More than the 16 entries the queue holds.
        tq.set_avail_idx(1000);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(em.run_with_timeout(50).unwrap(), 0, "event loop still busy");
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(irq.count(), 1);
        assert!(rng.lock().unwrap().activation.is_broken(0));
        // Left alone even once the index looks sane again.
        tq.set_avail_idx(1);
        tq.add_chain(1, &[TestDesc::writable(0x10_1000, 64)]);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(tq.used_idx(), 1);
        // A reset and a new activation bring it back.
        rng.lock().unwrap().reset();
        pump(&mut em, 4);
        // The driver set the queue up again where it left off.
        let mut q = tq.create_queue();
        q.set_next_avail(1);
        q.set_next_used(1);
        let (interrupt, _) = recording_interrupt();
        let (ctx, evts) = activate_context(&mem, interrupt, vec![q]);
        rng.lock().unwrap().activate(ctx).unwrap();
        pump(&mut em, 4);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(tq.used_elem(1), (1, 64));
    }

    #[test]
    fn runs_on_the_event_loop_and_stops_on_reset() {
        let mem = default_guest_memory();
        let tq = TestQueue::new(&mem, GuestAddress(0), 16);
        let rng = Arc::new(Mutex::new(Rng::new("rng0").unwrap()));
        let mut em: EventManager<Arc<Mutex<Rng>>> = EventManager::new().unwrap();
        em.add_subscriber(rng.clone());
        let (interrupt, irq) = recording_interrupt();
        let (ctx, evts) = activate_context(&mem, interrupt, vec![tq.create_queue()]);
        rng.lock().unwrap().activate(ctx).unwrap();
        pump(&mut em, 4);
        tq.add_chain(0, &[TestDesc::writable(0x10_0000, 64)]);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(irq.count(), 1);

        rng.lock().unwrap().reset();
        pump(&mut em, 4);
        tq.add_chain(1, &[TestDesc::writable(0x10_0000, 64)]);
        evts[0].write(1).unwrap();
        pump(&mut em, 4);
        assert_eq!(tq.used_idx(), 1);
        assert!(!rng.lock().unwrap().is_activated());
    }
}
