//! The virtio-net device proper: what the transport sees (features, config
//! space, activation, reset) and the two frame paths.
//!
//! Every descriptor chain comes from the guest and is checked in full before a
//! byte moves: chain length, direction of each descriptor, that each lies in
//! guest memory, and the packet's size. A chain that fails is returned to the
//! guest with a used length of 0, logged with the device id and counted in
//! [`NetMetrics`]; nothing the guest writes can make the VMM panic.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, warn};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use super::tap::Tap;
use super::{ETH_HLEN, MAX_PACKET_LEN, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN};
use crate::virtio::activation::QueueActivation;
use crate::virtio::queue::{ChainHandler, Handled, Served};
use crate::virtio::{
    read_config_bytes, ActivateContext, ActivateError, GuestMemory, VirtioDevice, TYPE_NET,
    VIRTIO_F_VERSION_1,
};

/// Frames read from the tap per wake-up before the event loop gets to serve
/// other devices; the tap fd is level-triggered, so the rest wait for the
/// next round.
const RX_BUDGET: usize = 256;

/// Transmit chains per pass before the event loop gets to serve other
/// devices; the queue is kicked so the rest follow on the next turn.
const TX_BUDGET: usize = 256;

/// Smallest packet worth handing to the tap: a header and an Ethernet header.
const MIN_PACKET_LEN: usize = VNET_HDR_LEN + ETH_HLEN;

/// Config space (virtio 1.2, 5.1.4): `mac[6]`, then `status` (le16). Later
/// fields belong to features the device does not offer.
const CONFIG_LEN: usize = 8;

/// Errors of the net device: building it, and why a descriptor chain or a
/// packet was dropped.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The activate eventfd could not be created.
    #[error("cannot create the activate eventfd: {0}")]
    EventFd(#[source] io::Error),
    /// A MAC with the multicast bit set, or all zeros, cannot name a NIC.
    #[error("mac {0} is not a unicast address")]
    InvalidMac(MacAddr),
    /// The chain has more descriptors than the queue has entries.
    #[error("descriptor chain longer than the queue ({0} entries)")]
    ChainTooLong(u16),
    /// The chain ends in a `next` that cannot be followed (bad index, a
    /// loop, or an unreadable descriptor table).
    #[error("descriptor chain is broken (loop, bad next index or unreadable table)")]
    BrokenChain,
    /// A descriptor lies (partly) outside guest memory.
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutOfMemory {
        /// The descriptor's guest address.
        addr: u64,
        /// The descriptor's length.
        len: u32,
    },
    /// A transmit chain contains a device-writable descriptor.
    #[error("write-only descriptor in a transmit chain")]
    WriteOnlyOnTx,
    /// A receive chain contains a device-readable descriptor.
    #[error("read-only descriptor in a receive chain")]
    ReadOnlyOnRx,
    /// The packet is shorter than a vnet header plus an Ethernet header.
    #[error("packet of {0} bytes is shorter than a vnet header and an ethernet header")]
    PacketTooShort(usize),
    /// The packet is longer than the device ever moves.
    #[error("packet longer than {MAX_PACKET_LEN} bytes")]
    PacketTooLong,
    /// The guest's receive buffer cannot hold the whole packet.
    #[error("receive buffer of {have} bytes cannot hold a {need}-byte packet")]
    BufferTooSmall {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes the chain offers.
        have: usize,
    },
    /// The tap gave a packet that uses an offload the guest did not accept.
    #[error("tap packet with offload flags {flags:#x}, gso type {gso_type} (offloads are off)")]
    UnexpectedOffload {
        /// The header's `flags`.
        flags: u8,
        /// The header's `gso_type`.
        gso_type: u8,
    },
    /// Copying into guest memory failed.
    #[error("guest memory: {0}")]
    Memory(#[source] vm_memory::GuestMemoryError),
    /// Writing to the tap failed.
    #[error("tap write: {0}")]
    TapWrite(#[source] io::Error),
    /// Reading from the tap failed.
    #[error("tap read: {0}")]
    TapRead(#[source] io::Error),
}

/// A MAC address, printed the usual way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Counters of one net device. Read them from any thread.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest, headers included.
    pub rx_bytes: AtomicU64,
    /// Frames sent to the tap.
    pub tx_frames: AtomicU64,
    /// Bytes sent to the tap, headers included.
    pub tx_bytes: AtomicU64,
    /// Receive chains returned unused because they were malformed.
    pub rx_bad_chains: AtomicU64,
    /// Transmit chains dropped because they were malformed.
    pub tx_bad_chains: AtomicU64,
    /// Frames from the tap dropped (did not fit the guest's buffer, or
    /// carried offloads).
    pub rx_dropped: AtomicU64,
    /// Frames the tap refused.
    pub tx_dropped: AtomicU64,
    /// Failed reads from the tap.
    pub tap_read_errors: AtomicU64,
    /// Queue, memory, interrupt or event-loop failures.
    pub event_errors: AtomicU64,
}

/// Counts an event and logs it; after the first few, only at powers of two,
/// so a guest repeating a bad request cannot flood the log.
pub(super) fn note(counter: &AtomicU64, id: &str, what: &dyn fmt::Display) {
    let n = counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if n <= 4 || n.is_power_of_two() {
        warn!("net {id}: {what} (occurrence {n})");
    } else {
        debug!("net {id}: {what} (occurrence {n})");
    }
}

/// A virtio-net device backed by a tap.
pub struct Net {
    pub(super) id: String,
    pub(super) tap: Tap,
    mac: [u8; 6],
    avail_features: u64,
    acked_features: u64,
    /// The queues between DRIVER_OK and reset, and their hand-over from
    /// the vCPU thread to the event loop.
    pub(super) activation: QueueActivation,
    /// The tap fd is registered with the event loop.
    pub(super) tap_registered: bool,
    /// The tap fd is registered for EPOLLIN (off while the guest has no
    /// receive buffers).
    pub(super) tap_polling: bool,
    rx_buf: Vec<u8>,
    /// Length of the frame in `rx_buf` waiting for a guest buffer.
    rx_pending: Option<usize>,
    /// Scratch list of a receive chain's descriptors.
    rx_descs: Vec<(GuestAddress, u32)>,
    pub(super) metrics: Arc<NetMetrics>,
}

impl Net {
    /// A net device on `tap`, with `mac` or, when `None`, a random locally
    /// administered unicast MAC.
    pub fn new(tap: Tap, mac: Option<[u8; 6]>) -> Result<Self, NetError> {
        let mac = match mac {
            Some(m) if m[0] & 1 != 0 || m == [0; 6] => {
                return Err(NetError::InvalidMac(MacAddr(m)))
            }
            Some(m) => m,
            None => random_mac(tap.name()),
        };
        let activation = QueueActivation::new().map_err(NetError::EventFd)?;
        Ok(Self {
            id: tap.name().to_owned(),
            tap,
            mac,
            avail_features: (1u64 << VIRTIO_F_VERSION_1)
                | (1u64 << VIRTIO_NET_F_MAC)
                | (1u64 << VIRTIO_NET_F_STATUS),
            acked_features: 0,
            activation,
            tap_registered: false,
            tap_polling: false,
            rx_buf: vec![0; MAX_PACKET_LEN],
            rx_pending: None,
            rx_descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            metrics: Arc::new(NetMetrics::default()),
        })
    }

    /// The device's id in logs: its tap's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[..6].copy_from_slice(&self.mac);
        // The link is up as long as the device exists: the tap's carrier is
        // the host's business.
        let status = u16::try_from(VIRTIO_NET_S_LINK_UP).unwrap_or(1);
        c[6..8].copy_from_slice(&status.to_le_bytes());
        c
    }

    /// Sends the available transmit chains to the tap, at most
    /// [`TX_BUDGET`] per call (the rest on the next turn of the event loop).
    pub(super) fn process_tx(&mut self) {
        let Self {
            id,
            tap,
            activation,
            metrics,
            ..
        } = self;
        let device = format!("net {id}");
        let served = activation.serve(TX_QUEUE, TX_BUDGET, &device, |mem, queue_size, chain| {
            match send_chain(chain, mem, tap, queue_size) {
                Ok(len) => {
                    metrics.tx_frames.fetch_add(1, Ordering::Relaxed);
                    metrics.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                Err(e @ NetError::TapWrite(_)) => note(&metrics.tx_dropped, id, &e),
                Err(e) => note(&metrics.tx_bad_chains, id, &e),
            }
            // The device writes nothing into a transmit buffer.
            0
        });
        if let Some(served) = served {
            count_errors(metrics, &served);
        }
    }

    /// Moves frames from the tap into the guest's receive buffers, starting
    /// with the one kept from last time. Returns whether the tap should be
    /// watched for input: `false` while a frame waits for guest buffers (or
    /// for a receive queue the driver broke).
    pub(super) fn process_rx(&mut self) -> bool {
        let Self {
            id,
            tap,
            activation,
            rx_buf,
            rx_pending,
            rx_descs,
            metrics,
            ..
        } = self;
        if !activation.is_active() {
            return false;
        }
        let mut rx = RxPath {
            id,
            tap,
            buf: rx_buf,
            pending: rx_pending,
            descs: rx_descs,
            metrics,
            reads_left: RX_BUDGET,
        };
        let device = format!("net {id}");
        if let Some(served) = activation.serve_with(RX_QUEUE, RX_BUDGET, &device, &mut rx) {
            count_errors(metrics, &served);
        }
        rx_pending.is_none()
    }
}

fn count_errors(metrics: &NetMetrics, served: &Served) {
    let errors = u64::try_from(served.errors).unwrap_or(u64::MAX);
    metrics.event_errors.fetch_add(errors, Ordering::Relaxed);
}

/// The receive path as the queue loop sees it: it wants a chain while a
/// frame from the tap is waiting, reading the tap for the next one when none
/// is.
struct RxPath<'a> {
    id: &'a str,
    tap: &'a Tap,
    buf: &'a mut Vec<u8>,
    pending: &'a mut Option<usize>,
    descs: &'a mut Vec<(GuestAddress, u32)>,
    metrics: &'a NetMetrics,
    // Tap reads left in this pass: frames the guest cannot take (bad ones)
    // are read and dropped too, so chains alone do not bound the pass.
    reads_left: usize,
}

impl ChainHandler for RxPath<'_> {
    fn wants_chain(&mut self) -> bool {
        while self.pending.is_none() && self.reads_left > 0 {
            self.reads_left -= 1;
            let len = match self.tap.read_packet(self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    note(
                        &self.metrics.tap_read_errors,
                        self.id,
                        &NetError::TapRead(e),
                    );
                    break;
                }
            };
            match check_rx_packet(self.buf, len) {
                Ok(()) => *self.pending = Some(len),
                Err(e) => note(&self.metrics.rx_dropped, self.id, &e),
            }
        }
        self.pending.is_some()
    }

    fn handle(
        &mut self,
        mem: &GuestMemory,
        queue_size: u16,
        chain: DescriptorChain<&GuestMemory>,
    ) -> Handled {
        let Some(len) = *self.pending else {
            // Only asked for a chain with a frame waiting.
            return Handled::Keep;
        };
        let frame = self.buf.get(..len).unwrap_or_default();
        let metrics = self.metrics;
        let used_len = match write_frame(chain, mem, frame, queue_size, self.descs) {
            Ok(()) => {
                *self.pending = None;
                metrics.rx_frames.fetch_add(1, Ordering::Relaxed);
                metrics.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                u32::try_from(len).unwrap_or(0)
            }
            Err(e @ NetError::BufferTooSmall { .. }) => {
                // A driver without MRG_RXBUF posts buffers big enough for
                // any frame; one that does not loses this frame rather than
                // every buffer it has.
                *self.pending = None;
                note(&metrics.rx_dropped, self.id, &e);
                0
            }
            Err(e) => {
                // The frame stays pending for the next chain.
                note(&metrics.rx_bad_chains, self.id, &e);
                0
            }
        };
        Handled::Used(used_len)
    }
}

/// Checks the header of a packet read from the tap and makes it what a
/// driver without offloads expects (virtio 1.2, 5.1.6.4.1): flags 0 and
/// `num_buffers` 1. The tap writes only the first 10 header bytes, so
/// `num_buffers` would otherwise be left over from an earlier packet.
fn check_rx_packet(buf: &mut [u8], len: usize) -> Result<(), NetError> {
    if len > buf.len() {
        return Err(NetError::PacketTooLong);
    }
    if len < MIN_PACKET_LEN {
        return Err(NetError::PacketTooShort(len));
    }
    let (flags, gso_type) = (buf[0], buf[1]);
    if u32::from(flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
        || u32::from(gso_type) != VIRTIO_NET_HDR_GSO_NONE
    {
        return Err(NetError::UnexpectedOffload { flags, gso_type });
    }
    // Only DATA_VALID can be left, and without GUEST_CSUM it must be clear.
    buf[0] = 0;
    buf[10..12].copy_from_slice(&1u16.to_le_bytes());
    Ok(())
}

/// Validates a transmit chain and writes it to the tap with one writev.
/// Returns the packet's length (header included).
fn send_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    tap: &Tap,
    queue_size: u16,
) -> Result<usize, NetError> {
    let mut slices: Vec<VolatileSlice<'_, ()>> = Vec::with_capacity(4);
    gather_tx_chain(chain, mem, queue_size, &mut slices)?;
    let written = tap.write_packet(&slices).map_err(NetError::TapWrite)?;
    Ok(written)
}

/// The transmit path's check of a chain, without the tap: validates `chain`
/// (device-readable only, inside guest memory, properly terminated, at most
/// `queue_size` descriptors, between a header plus an Ethernet header and
/// [`MAX_PACKET_LEN`] bytes) and appends to `slices` the guest memory the
/// packet is gathered from, one slice per region a descriptor spans.
/// Returns the packet's length. Public for fuzzing and benchmarks.
pub fn gather_tx_chain<'m>(
    chain: DescriptorChain<&'m GuestMemory>,
    mem: &'m GuestMemory,
    queue_size: u16,
    slices: &mut Vec<VolatileSlice<'m, ()>>,
) -> Result<usize, NetError> {
    let mut total = 0usize;
    let mut count = 0u16;
    let mut ends_in_next = false;
    for desc in chain {
        count = count
            .checked_add(1)
            .filter(|&c| c <= queue_size)
            .ok_or(NetError::ChainTooLong(queue_size))?;
        if desc.is_write_only() {
            return Err(NetError::WriteOnlyOnTx);
        }
        let len = desc.len() as usize;
        total = total
            .checked_add(len)
            .filter(|&t| t <= MAX_PACKET_LEN)
            .ok_or(NetError::PacketTooLong)?;
        let out_of_memory = || NetError::OutOfMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        // A descriptor may span guest memory regions: one slice per region.
        for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), len) {
            slices.push(slice.map_err(|_| out_of_memory())?);
        }
        ends_in_next = desc.has_next();
    }
    if ends_in_next {
        return Err(NetError::BrokenChain);
    }
    if total < MIN_PACKET_LEN {
        return Err(NetError::PacketTooShort(total));
    }
    Ok(total)
}

/// Validates a receive chain and copies `frame` (header included) into it;
/// `descs` is scratch space reused across calls. Public for fuzzing and
/// benchmarks.
pub fn write_frame(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    frame: &[u8],
    queue_size: u16,
    descs: &mut Vec<(GuestAddress, u32)>,
) -> Result<(), NetError> {
    descs.clear();
    let mut capacity = 0usize;
    let mut ends_in_next = false;
    for desc in chain {
        if descs.len() >= usize::from(queue_size) {
            return Err(NetError::ChainTooLong(queue_size));
        }
        if !desc.is_write_only() {
            return Err(NetError::ReadOnlyOnRx);
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), desc.len() as usize) {
            return Err(NetError::OutOfMemory {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
        // Bounded: at most 256 descriptors of at most 4 GiB each.
        capacity = capacity.saturating_add(desc.len() as usize);
        descs.push((desc.addr(), desc.len()));
        ends_in_next = desc.has_next();
    }
    if descs.is_empty() || ends_in_next {
        return Err(NetError::BrokenChain);
    }
    if capacity < frame.len() {
        return Err(NetError::BufferTooSmall {
            need: frame.len(),
            have: capacity,
        });
    }
    let mut rest = frame;
    for &(addr, len) in descs.iter() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(rest.len().min(len as usize));
        mem.write_slice(now, addr).map_err(NetError::Memory)?;
        rest = later;
    }
    Ok(())
}

/// A locally administered unicast MAC (first octet `x2`, `x6`, `xa` or `xe`),
/// random per process and per call: std's `RandomState` is seeded from the
/// OS's random source.
fn random_mac(salt: &str) -> [u8; 6] {
    let mut h = RandomState::new().build_hasher();
    h.write(salt.as_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    let r = h.finish().to_le_bytes();
    [(r[0] & 0xfe) | 0x02, r[1], r[2], r[3], r[4], r[5]]
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        let unknown = features & !self.avail_features;
        if unknown != 0 {
            warn!(
                "net {}: driver accepted features {unknown:#x} that were not offered; ignored",
                self.id
            );
        }
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Under VIRTIO_F_VERSION_1 the MAC and status are read-only; a
        // driver changes its MAC through a control queue, not offered here.
        warn!(
            "net {}: ignored write of {} bytes to read-only config at {offset:#x}",
            self.id,
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        ctx.check_queues(&format!("virtio-net {}", self.id), 2)?;
        // A frame kept for an earlier activation's buffers is stale.
        self.rx_pending = None;
        self.activation.activate(ctx)
    }

    fn reset(&mut self) {
        self.rx_pending = None;
        self.acked_features = 0;
        self.activation.reset();
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::QueueT;

    use super::super::test_utils::{
        count, in_netns, set_link_up, test_frame, DriverQueue, Harness, PacketSocket, BUFS,
        RX_RING, TX_RING,
    };
    use super::*;
    use crate::test_utils::{
        activate_context, default_guest_memory, fill, read_bytes, recording_interrupt, TestDesc,
        DEFAULT_MEM_SIZE,
    };

    const TAP: &str = "hostile0";
    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const END: u64 = DEFAULT_MEM_SIZE as u64;

    fn with_tap(f: impl FnOnce(Tap) + Send) {
        in_netns(|| {
            let tap = Tap::open(TAP).expect("create tap");
            set_link_up(TAP);
            f(tap)
        })
    }

    #[test]
    fn features_config_space_and_identity() {
        with_tap(|tap| {
            let mut net = Net::new(tap, Some([0x02, 1, 2, 3, 4, 5])).unwrap();
            assert_eq!(net.device_type(), TYPE_NET);
            assert_eq!(net.id(), TAP);
            assert_eq!(net.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
            let offered = net.device_features();
            assert_eq!(offered, (1 << 32) | (1 << 5) | (1 << 16));
            // CSUM (bit 0) was never offered.
            net.ack_features(offered | 1);
            assert_eq!(net.acked_features(), offered);

            let mut c = [0xff; 8];
            net.read_config(0, &mut c);
            assert_eq!(c, [2, 1, 2, 3, 4, 5, 1, 0]);
            let mut c = [0xff; 4];
            net.read_config(6, &mut c);
            assert_eq!(c, [1, 0, 0, 0], "status, then zeros past the end");
            let mut c = [0xff; 2];
            net.read_config(u64::MAX, &mut c);
            assert_eq!(c, [0, 0]);

            net.write_config(0, &[0xaa; 6]);
            assert_eq!(net.mac(), [2, 1, 2, 3, 4, 5]);
            net.reset();
            assert_eq!(net.acked_features(), 0);
        });
    }

    #[test]
    fn a_mac_is_validated_or_generated() {
        in_netns(|| {
            let e = Net::new(Tap::open("m0").unwrap(), Some([1, 0, 0, 0, 0, 1]))
                .err()
                .expect("multicast mac accepted");
            assert_eq!(
                e.to_string(),
                "mac 01:00:00:00:00:01 is not a unicast address"
            );
            assert!(Net::new(Tap::open("m1").unwrap(), Some([0; 6])).is_err());
            let net = Net::new(Tap::open("m2").unwrap(), None).unwrap();
            assert_eq!(net.mac()[0] & 0x03, 0x02, "locally administered unicast");
        });
    }

    #[test]
    fn activation_needs_two_ready_queues() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let mut net = Net::new(tap, None).unwrap();
            let (irq, _) = recording_interrupt();
            let (ctx, _) = activate_context(&mem, irq.clone(), vec![rxq.queue()]);
            assert!(matches!(
                net.activate(ctx),
                Err(ActivateError::BadQueues(_))
            ));
            let mut not_ready = rxq.queue();
            not_ready.set_ready(false);
            let (ctx, _) = activate_context(&mem, irq, vec![rxq.queue(), not_ready]);
            assert!(matches!(
                net.activate(ctx),
                Err(ActivateError::BadQueues(_))
            ));
            assert!(!net.activation.is_active());
        });
    }

    #[test]
    fn a_frame_the_tap_refuses_is_counted_as_dropped() {
        in_netns(|| {
            // Never brought up: the kernel refuses writes to a down tap.
            let tap = Tap::open("down0").expect("create tap");
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let mut txq = DriverQueue::new(&mem, TX_RING);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            mem.write_slice(&test_frame(1, 60), GuestAddress(BUFS + 0x100))
                .unwrap();
            let head = txq.add_chain(&[
                TestDesc::readable(BUFS, VNET_HDR_LEN as u32),
                TestDesc::readable(BUFS + 0x100, 60),
            ]);
            h.tx_evt.write(1).unwrap();
            h.pump();
            assert_eq!(txq.take_used(), vec![(head, 0)]);
            assert_eq!(count(&h.metrics.tx_dropped), 1);
            assert_eq!(count(&h.metrics.tx_frames), 0);
            assert_eq!(count(&h.metrics.tx_bad_chains), 0);
        });
    }

    #[test]
    fn hostile_tx_chains_are_dropped_and_counted_and_the_queue_goes_on() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let mut txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            let hdr = TestDesc::readable(BUFS, VNET_HDR_LEN as u32);
            let bad = [
                // A descriptor outside guest memory.
                txq.add_chain(&[hdr, TestDesc::readable(END + 0x1000, 64)]),
                // One running past its end.
                txq.add_chain(&[TestDesc::readable(END - 16, 64)]),
                // A write-only descriptor in a transmit chain.
                txq.add_chain(&[hdr, TestDesc::writable(BUFS + 0x100, 64)]),
                // Shorter than the vnet header.
                txq.add_chain(&[TestDesc::readable(BUFS, 8)]),
                // A header and no Ethernet header.
                txq.add_chain(&[hdr]),
                // Longer than any packet.
                txq.add_chain(&[hdr, TestDesc::readable(BUFS + 0x1000, 65551)]),
                // A loop: 0 -> 1 -> 0.
                txq.add_raw(&[(BUFS, 12, NEXT, 1), (BUFS + 0x100, 60, NEXT, 0)]),
                // A next index past the table.
                txq.add_raw(&[(BUFS, 12, NEXT, 1000)]),
                // An indirect table longer than the queue.
                txq.add_indirect(BUFS + 0x2_0000, 300, BUFS, 1),
            ];
            let frame = test_frame(0x5a, 64);
            mem.write_slice(&frame, GuestAddress(BUFS + 0x1_0000))
                .unwrap();
            let good = txq.add_chain(&[hdr, TestDesc::readable(BUFS + 0x1_0000, 64)]);
            h.tx_evt.write(1).unwrap();
            h.pump();

            let mut expected: Vec<(u16, u32)> = bad.iter().map(|&b| (b, 0)).collect();
            expected.push((good, 0));
            assert_eq!(txq.take_used(), expected);
            assert_eq!(count(&h.metrics.tx_bad_chains), bad.len() as u64);
            assert_eq!(count(&h.metrics.tx_frames), 1);
            assert_eq!(sock.recv_matching(&frame), frame);
            assert!(h.irq.count() >= 1);
        });
    }

    #[test]
    fn hostile_rx_chains_are_returned_unused_and_the_frame_waits() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let mut rxq = DriverQueue::new(&mem, RX_RING);
            let txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            fill(&mem, BUFS, 0x1000, 0xee);
            let bad = [
                // A read-only buffer on the receive queue.
                rxq.add_chain(&[TestDesc::readable(BUFS, 2048)]),
                // A buffer outside guest memory.
                rxq.add_chain(&[TestDesc::writable(END + 0x1000, 2048)]),
                // A buffer running past its end, after a good one.
                rxq.add_chain(&[
                    TestDesc::writable(BUFS, 12),
                    TestDesc::writable(END - 100, 2048),
                ]),
                // A loop.
                rxq.add_raw(&[
                    (BUFS, 1024, WRITE | NEXT, 1),
                    (BUFS + 1024, 1024, WRITE | NEXT, 0),
                ]),
            ];
            // Well-formed but too small for the frame: the frame is dropped.
            let small = rxq.add_chain(&[TestDesc::writable(BUFS, 20)]);
            h.rx_evt.write(1).unwrap();
            h.pump();

            let a = test_frame(0x0a, 100);
            sock.send(&a);
            h.run_until("the bad chains to be returned", || rxq.q.used_idx() == 5);
            let mut expected: Vec<(u16, u32)> = bad.iter().map(|&b| (b, 0)).collect();
            expected.push((small, 0));
            assert_eq!(rxq.take_used(), expected);
            assert_eq!(count(&h.metrics.rx_bad_chains), bad.len() as u64);
            assert_eq!(count(&h.metrics.rx_dropped), 1);
            assert_eq!(count(&h.metrics.rx_frames), 0);
            // Nothing was written into any of them.
            assert_eq!(read_bytes(&mem, BUFS, 0x1000), vec![0xee; 0x1000]);

            let good = rxq.add_chain(&[TestDesc::writable(BUFS + 0x1_0000, 1526)]);
            h.rx_evt.write(1).unwrap();
            let b = test_frame(0x0b, 200);
            sock.send(&b);
            h.run_until("frame b", || rxq.q.used_idx() == 6);
            assert_eq!(
                rxq.take_used(),
                vec![(good, (VNET_HDR_LEN + b.len()) as u32)]
            );
            assert_eq!(
                read_bytes(&mem, BUFS + 0x1_0000 + VNET_HDR_LEN as u64, b.len()),
                b
            );
        });
    }

    #[test]
    fn rx_header_is_normalised() {
        let mut buf = vec![0xffu8; 64];
        buf[0] = 2; // DATA_VALID
        buf[1] = 0;
        check_rx_packet(&mut buf, 60).unwrap();
        assert_eq!(buf[0], 0);
        assert_eq!(&buf[10..12], &[1, 0]);
        buf[1] = 1; // GSO_TCPV4
        assert!(matches!(
            check_rx_packet(&mut buf, 60),
            Err(NetError::UnexpectedOffload { .. })
        ));
        buf[1] = 0;
        buf[0] = 1; // NEEDS_CSUM
        assert!(matches!(
            check_rx_packet(&mut buf, 60),
            Err(NetError::UnexpectedOffload { .. })
        ));
        assert!(matches!(
            check_rx_packet(&mut buf, 20),
            Err(NetError::PacketTooShort(20))
        ));
    }

    #[test]
    fn random_macs_are_local_unicast_and_differ() {
        let a = random_mac("x");
        let b = random_mac("x");
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(b[0] & 0x03, 0x02);
        assert_ne!(a, b);
        assert_eq!(MacAddr(a).to_string().len(), 17);
    }
}
