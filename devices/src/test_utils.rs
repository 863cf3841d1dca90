//! Helpers to test devices without a VM: guest memory, an interrupt line that
//! counts what it is asked to do, and a driver-side view of a split virtqueue
//! laid out in that memory (over `virtio_queue::mock::MockSplitQueue`).
//!
//! Built for unit tests and, with the `test-utils` feature, for other crates
//! (fuzzers, integration tests). These helpers panic on misuse: they are meant
//! for test code, never for guest-controlled input.
//!
//! A typical device test:
//! ```
//! use devices::test_utils::{default_guest_memory, recording_interrupt, TestDesc, TestQueue};
//! use vm_memory::GuestAddress;
//!
//! let mem = default_guest_memory();
//! let (interrupt, irq) = recording_interrupt();
//! let tq = TestQueue::new(&mem, GuestAddress(0), 16);
//! // One chain of two descriptors starting at descriptor 0.
//! tq.add_chain(0, &[TestDesc::readable(0x10_0000, 16), TestDesc::writable(0x10_1000, 1)]);
//! let queue = tq.create_queue();
//! // ... activate a device with `queue`, process it, then look at the used ring:
//! assert_eq!(tq.used_idx(), 0);
//! assert_eq!(irq.count(), 0);
//! # let _ = (interrupt, queue);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::{IrqLine, VirtioInterrupt};
use crate::virtio::{ActivateContext, GuestMemory};

/// Size of [`default_guest_memory`]: 16 MiB.
pub const DEFAULT_MEM_SIZE: usize = 16 << 20;

/// Guest memory made of the given `(start, length)` regions.
pub fn guest_memory(regions: &[(u64, usize)]) -> GuestMemory {
    let ranges: Vec<(GuestAddress, usize)> = regions
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len))
        .collect();
    GuestMemory::from_ranges(&ranges).expect("test guest memory")
}

/// 16 MiB of guest memory at address 0. Queues go at the bottom, buffers from
/// 1 MiB up by convention.
pub fn default_guest_memory() -> GuestMemory {
    guest_memory(&[(0, DEFAULT_MEM_SIZE)])
}

/// An interrupt line that counts how often it was raised.
#[derive(Debug, Default)]
pub struct RecordingIrq {
    count: AtomicUsize,
}

impl RecordingIrq {
    /// How many times the line was raised.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Returns the count and sets it back to zero.
    pub fn take(&self) -> usize {
        self.count.swap(0, Ordering::SeqCst)
    }
}

impl IrqLine for RecordingIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A virtio interrupt over a [`RecordingIrq`]; the second value counts triggers.
pub fn recording_interrupt() -> (Arc<VirtioInterrupt>, Arc<RecordingIrq>) {
    let irq = Arc::new(RecordingIrq::default());
    (Arc::new(VirtioInterrupt::new(irq.clone())), irq)
}

/// What a device's `activate` receives, with a fresh non-blocking eventfd per
/// queue. Returns clones of those eventfds too, so a test can notify queues.
pub fn activate_context(
    mem: &GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
) -> (ActivateContext, Vec<EventFd>) {
    let evts: Vec<EventFd> = queues
        .iter()
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
        .collect();
    let clones = evts
        .iter()
        .map(|e| e.try_clone().expect("eventfd clone"))
        .collect();
    (
        ActivateContext {
            mem: mem.clone(),
            interrupt,
            queues,
            queue_evts: evts,
        },
        clones,
    )
}

/// One descriptor as a test writes it; the NEXT flag and `next` field are
/// filled in by [`TestQueue::add_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestDesc {
    /// Guest address of the buffer.
    pub addr: u64,
    /// Length of the buffer.
    pub len: u32,
    /// Whether the device may write it (VRING_DESC_F_WRITE).
    pub writable: bool,
}

impl TestDesc {
    /// A buffer the device reads.
    pub fn readable(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: false,
        }
    }

    /// A buffer the device writes.
    pub fn writable(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: true,
        }
    }
}

/// The driver's side of one split virtqueue in guest memory.
pub struct TestQueue<'a> {
    mem: &'a GuestMemory,
    mock: MockSplitQueue<'a, GuestMemory>,
    size: u16,
    // virtio-queue's mock places its used ring `size` bytes after the avail
    // ring's start (it adds the entry count, not the ring's byte size), so
    // its used ring overlaps avail slots from size/2 on. This queue keeps the
    // mock's descriptor table and avail ring and puts the used ring after the
    // avail ring's real end.
    used: GuestAddress,
}

impl<'a> TestQueue<'a> {
    /// Lays out an empty queue of `size` entries (a power of two) at `start`:
    /// descriptor table, then available ring, then used ring.
    pub fn new(mem: &'a GuestMemory, start: GuestAddress, size: u16) -> Self {
        let mock = MockSplitQueue::create(mem, start, size);
        // flags, idx, ring[size], used_event; the used ring is 4-byte aligned.
        let avail_end = mock.avail_addr().0 + 4 + 2 * u64::from(size) + 2;
        let used = GuestAddress((avail_end + 3) & !3);
        Self {
            mem,
            mock,
            size,
            used,
        }
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest address of the descriptor table.
    pub fn desc_table_addr(&self) -> GuestAddress {
        self.mock.desc_table_addr()
    }

    /// Guest address of the available ring.
    pub fn avail_addr(&self) -> GuestAddress {
        self.mock.avail_addr()
    }

    /// Guest address of the used ring.
    pub fn used_addr(&self) -> GuestAddress {
        self.used
    }

    /// A device-side `Queue` for this layout, ready, as a driver would have
    /// configured it through the transport.
    pub fn create_queue(&self) -> Queue {
        let mut q: Queue = self.mock.create_queue().expect("queue");
        q.set_used_ring_address(
            Some((self.used.0 & 0xffff_ffff) as u32),
            Some((self.used.0 >> 32) as u32),
        );
        q
    }

    /// Writes descriptor `index` verbatim (`flags` as VRING_DESC_F_*), for
    /// hand-made hostile chains.
    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.mock
            .desc_table()
            .store(
                index,
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
            )
            .expect("descriptor index within the table");
    }

    /// Writes `descs` as one chain in consecutive descriptors from `first`
    /// and makes it available. Returns the head index (`first`).
    pub fn add_chain(&self, first: u16, descs: &[TestDesc]) -> u16 {
        self.write_chain(first, descs);
        self.publish(first);
        first
    }

    /// Writes `descs` as one chain from descriptor `first` without making it
    /// available.
    pub fn write_chain(&self, first: u16, descs: &[TestDesc]) {
        let n = descs.len();
        let flag = |f: u32| u16::try_from(f).expect("descriptor flags are 16-bit");
        for (i, d) in descs.iter().enumerate() {
            let index = first + u16::try_from(i).expect("a chain fits the queue");
            let mut flags = if d.writable {
                flag(VRING_DESC_F_WRITE)
            } else {
                0
            };
            let next = if i + 1 < n {
                flags |= flag(VRING_DESC_F_NEXT);
                index + 1
            } else {
                0
            };
            self.set_desc(index, d.addr, d.len, flags, next);
        }
    }

    /// Puts `head` in the next slot of the available ring and bumps its index.
    pub fn publish(&self, head: u16) {
        let idx = self.avail_idx();
        self.mock
            .avail()
            .ring()
            .ref_at(usize::from(idx % self.size))
            .expect("ring slot")
            .store(u16::to_le(head));
        self.set_avail_idx(idx.wrapping_add(1));
    }

    /// The available ring's `idx` field.
    pub fn avail_idx(&self) -> u16 {
        u16::from_le(self.mock.avail().idx().load())
    }

    /// Overwrites the available ring's `idx` field (a lying driver).
    pub fn set_avail_idx(&self, idx: u16) {
        self.mock.avail().idx().store(u16::to_le(idx));
    }

    /// The used ring's `idx` field.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj::<u16>(GuestAddress(self.used.0 + 2))
            .map(u16::from_le)
            .expect("used ring in memory")
    }

    /// Overwrites the used ring's `idx` field, to start a test near a wrap.
    pub fn set_used_idx(&self, idx: u16) {
        self.mem
            .write_obj(u16::to_le(idx), GuestAddress(self.used.0 + 2))
            .expect("used ring in memory");
    }

    /// The used ring's flags (bit 0: VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(&self) -> u16 {
        self.mem
            .read_obj::<u16>(self.used_addr())
            .map(u16::from_le)
            .expect("used ring in memory")
    }

    /// `(id, len)` of the used ring element written `n`-th (counted from 0
    /// since the queue started, wrapping like the ring does).
    pub fn used_elem(&self, n: u16) -> (u32, u32) {
        let at = self.used.0 + 4 + 8 * u64::from(n % self.size);
        let read = |a: u64| {
            self.mem
                .read_obj::<u32>(GuestAddress(a))
                .map(u32::from_le)
                .expect("used ring in memory")
        };
        (read(at), read(at + 4))
    }
}

/// Fills `len` bytes at `addr` with `byte`.
pub fn fill(mem: &GuestMemory, addr: u64, len: usize, byte: u8) {
    mem.write_slice(&vec![byte; len], GuestAddress(addr))
        .expect("fill inside guest memory");
}

/// Reads `len` bytes at `addr`.
pub fn read_bytes(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr))
        .expect("read inside guest memory");
    buf
}

/// Runs `event_manager` until it reports no more ready events within a short
/// timeout, at most `max_rounds` times. Returns the number of events handled.
pub fn pump<T>(event_manager: &mut event_manager::EventManager<T>, max_rounds: usize) -> usize
where
    T: event_manager::MutEventSubscriber,
{
    let mut total = 0;
    for _ in 0..max_rounds {
        let n = event_manager.run_with_timeout(10).expect("event loop");
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}
