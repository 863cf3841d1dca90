//! The virtio-vsock device (virtio 1.2, 5.10): what the transport sees
//! (features, config space, activation, reset) and the event-loop side that
//! moves packets between the three virtqueues and the [`Muxer`].
//!
//! Activation and reset arrive on a vCPU thread; both only record what
//! changed and write the activate eventfd, and the event loop does the rest
//! (registering or dropping queue eventfds and host sockets), so the event
//! manager's registrations are only ever touched from its own thread.

use std::io;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::DescriptorChain;

use super::muxer::{EventRegistry, Muxer, MuxerError};
use super::packet::{self, RxBuffer};
use crate::virtio::activation::{Dispatch, QueueActivation};
use crate::virtio::queue::{ChainHandler, Handled, Served};
use crate::virtio::{
    ActivateContext, ActivateError, GuestMemory, VirtioDevice, TYPE_VSOCK, VIRTIO_F_VERSION_1,
};

/// Index of the receive queue (device to guest).
pub const RXQ: usize = 0;
/// Index of the transmit queue (guest to device).
pub const TXQ: usize = 1;
/// Index of the event queue (transport events; this device sends none).
pub const EVQ: usize = 2;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Rounds of "deliver rx, then resume held-back tx" per event: enough to
/// clear a backlog, bounded so one event cannot monopolise the loop.
const MAX_PUMP_ROUNDS: usize = 16;

/// Chains handled per pass over a queue before yielding to other devices
/// (the queue's eventfd is kicked so the rest is handled on the next turn).
const CHAINS_PER_PASS: usize = 256;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0 to 2 are reserved, the upper 32 bits must be zero and
    /// `u32::MAX` means "any".
    #[error("vsock guest cid {0} is reserved or out of range")]
    InvalidCid(u64),
    /// The host socket could not be set up.
    #[error("vsock host side: {0}")]
    Muxer(#[from] MuxerError),
    /// The activate eventfd could not be created.
    #[error("vsock activate eventfd: {0}")]
    EventFd(#[source] io::Error),
}

/// Counters of the guest-facing side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockMetrics {
    /// Packets taken from the tx queue and understood.
    pub tx_packets: u64,
    /// Payload bytes in those packets.
    pub tx_bytes: u64,
    /// Tx chains that did not hold a valid packet.
    pub tx_malformed: u64,
    /// Packets written to rx buffers.
    pub rx_packets: u64,
    /// Bytes written to rx buffers, headers included.
    pub rx_bytes: u64,
    /// Rx chains that could not hold a packet (outside memory, too small).
    pub rx_bad_buffers: u64,
    /// Queue or interrupt operations that failed.
    pub queue_errors: u64,
}

/// A virtio-vsock device whose host side is a Unix socket.
///
/// The VMM creates it with [`Vsock::new`], puts it behind the MMIO transport
/// and adds the same `Arc<Mutex<Vsock>>` to its `EventManager` as a
/// subscriber; `init` then watches the activate eventfd and the listening
/// socket, and the rest is registered as it comes.
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
    acked_features: u64,
    activation: QueueActivation,
    // Set by `reset` (or a second `activate`) after an activation: the event
    // loop must close every connection, which the guest no longer knows.
    reset_pending: bool,
    // Tx processing stopped because too many control packets wait for rx
    // buffers; resumed when rx buffers arrive.
    tx_held: bool,
    tx_payload: Vec<u8>,
    metrics: VsockMetrics,
}

impl Vsock {
    /// A device for a guest with context ID `cid`, listening for host
    /// connections on `uds_path`, which must not exist yet (its directory
    /// must). The socket file is removed when the device is dropped.
    pub fn new(cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        if cid <= packet::HOST_CID || cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(cid));
        }
        Ok(Self {
            cid,
            muxer: Muxer::new(cid, uds_path)?,
            acked_features: 0,
            activation: QueueActivation::new().map_err(VsockError::EventFd)?,
            reset_pending: false,
            tx_held: false,
            tx_payload: Vec::with_capacity(packet::MAX_PAYLOAD),
            metrics: VsockMetrics::default(),
        })
    }

    /// The guest's context ID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The host socket path.
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// Guest-side counters.
    pub fn metrics(&self) -> VsockMetrics {
        self.metrics
    }

    /// The host side, for its counters and connections.
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Whether the driver has activated the device (and not reset it since).
    pub fn is_activated(&self) -> bool {
        self.activation.is_active()
    }

    /// Handles readiness of the listening socket or a host socket (`fd`),
    /// then delivers what became pending. `MutEventSubscriber::process` calls
    /// this for every fd that is not the activate or a queue eventfd; it is
    /// public so a harness (a benchmark, say) can drive the host side with
    /// its own registry.
    pub fn handle_host_event(&mut self, fd: RawFd, events: EventSet, reg: &mut dyn EventRegistry) {
        if self.muxer.owns_fd(fd) {
            self.muxer.handle_event(fd, events);
        } else {
            // Not ours any more; make sure it cannot fire again.
            log::debug!("vsock cid {}: event on unknown fd {fd}", self.cid);
            let _ = reg.remove(fd);
        }
        self.pump();
        self.muxer.sync_interest(reg);
    }

    /// Processes the tx queue and fills rx buffers, as on a queue
    /// notification.
    pub fn process_queues(&mut self, reg: &mut dyn EventRegistry) {
        self.process_tx();
        self.pump();
        self.muxer.sync_interest(reg);
    }

    // The activation state changed (activate or reset applied by the event loop).
    fn on_control(&mut self, reg: &mut dyn EventRegistry) {
        if self.reset_pending {
            self.reset_pending = false;
            self.tx_held = false;
            self.muxer.reset();
        }
        // The driver may have queued buffers before we were listening.
        self.process_queues(reg);
    }

    // Delivers what is pending to the guest, resuming held-back tx as rx
    // buffers free the backlog.
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            self.process_rx();
            if !self.tx_held || self.muxer.rx_backlogged() {
                break;
            }
            self.process_tx();
        }
    }

    /// Takes packets from the tx queue and hands them to the muxer, until
    /// the queue is empty, the budget is spent or too many control packets
    /// wait for rx buffers (then tx is held until rx buffers free them).
    fn process_tx(&mut self) {
        let Self {
            cid,
            muxer,
            activation,
            tx_held,
            tx_payload,
            metrics,
            ..
        } = self;
        *tx_held = false;
        let mut tx = TxPath {
            cid: *cid,
            muxer,
            held: tx_held,
            payload: tx_payload,
            metrics,
        };
        let device = format!("vsock cid {cid}");
        if let Some(served) = activation.serve_with(TXQ, CHAINS_PER_PASS, &device, &mut tx) {
            count_errors(metrics, &served);
        }
    }

    /// Fills rx buffers with the muxer's pending packets.
    fn process_rx(&mut self) {
        let Self {
            cid,
            muxer,
            activation,
            metrics,
            ..
        } = self;
        let mut rx = RxPath {
            cid: *cid,
            muxer,
            metrics,
        };
        let device = format!("vsock cid {cid}");
        if let Some(served) = activation.serve_with(RXQ, CHAINS_PER_PASS, &device, &mut rx) {
            count_errors(metrics, &served);
        }
    }

    /// The event queue: this device sends no transport events, so it takes
    /// no buffer; serving it only re-arms the driver's notifications.
    fn process_evq(&mut self) {
        let device = format!("vsock cid {}", self.cid);
        if let Some(served) =
            self.activation
                .serve_with(EVQ, CHAINS_PER_PASS, &device, &mut NoEvents)
        {
            count_errors(&mut self.metrics, &served);
        }
    }

    /// Whether the driver broke queue `idx` (its available index ran more
    /// than the queue size ahead): the queue is then left alone until a
    /// reset.
    pub fn queue_broken(&self, idx: usize) -> bool {
        self.activation.is_broken(idx)
    }
}

fn count_errors(metrics: &mut VsockMetrics, served: &Served) {
    let errors = u64::try_from(served.errors).unwrap_or(u64::MAX);
    metrics.queue_errors = metrics.queue_errors.saturating_add(errors);
}

/// The tx queue as the queue loop sees it: every chain is a packet for the
/// muxer, unless the muxer's replies to the guest back up.
struct TxPath<'a> {
    cid: u64,
    muxer: &'a mut Muxer,
    held: &'a mut bool,
    payload: &'a mut Vec<u8>,
    metrics: &'a mut VsockMetrics,
}

impl ChainHandler for TxPath<'_> {
    fn wants_chain(&mut self) -> bool {
        if self.muxer.rx_backlogged() {
            // Resumed when rx buffers drain the backlog (see `pump`).
            *self.held = true;
            return false;
        }
        true
    }

    fn handle(
        &mut self,
        mem: &GuestMemory,
        _queue_size: u16,
        chain: DescriptorChain<&GuestMemory>,
    ) -> Handled {
        match packet::read_tx_packet(chain, mem, self.payload) {
            Ok(hdr) => {
                self.metrics.tx_packets += 1;
                self.metrics.tx_bytes += self.payload.len() as u64;
                self.muxer.recv_from_guest(&hdr, self.payload);
            }
            Err(e) => {
                self.metrics.tx_malformed += 1;
                log::debug!("vsock cid {}: tx: {e}", self.cid);
                if let Some(hdr) = e.header() {
                    self.muxer.recv_malformed(hdr);
                }
            }
        }
        // The device writes nothing into a tx buffer.
        Handled::Used(0)
    }
}

/// The rx queue as the queue loop sees it: a chain is wanted while the
/// muxer has a packet for the guest.
struct RxPath<'a> {
    cid: u64,
    muxer: &'a mut Muxer,
    metrics: &'a mut VsockMetrics,
}

impl ChainHandler for RxPath<'_> {
    fn wants_chain(&mut self) -> bool {
        self.muxer.has_rx()
    }

    fn handle(
        &mut self,
        mem: &GuestMemory,
        _queue_size: u16,
        chain: DescriptorChain<&GuestMemory>,
    ) -> Handled {
        let len = match RxBuffer::new(chain, mem) {
            Ok(mut buf) => {
                let max = buf.max_payload();
                match self.muxer.pop_rx(max, |h, a, b| buf.write_packet(h, a, b)) {
                    Ok(Some(len)) => {
                        self.metrics.rx_packets += 1;
                        self.metrics.rx_bytes += u64::from(len);
                        len
                    }
                    // Nothing fits this buffer; leave it for later.
                    Ok(None) => return Handled::Keep,
                    Err(e) => {
                        log::warn!("vsock cid {}: rx write: {e}", self.cid);
                        self.metrics.rx_bad_buffers += 1;
                        0
                    }
                }
            }
            Err(e) => {
                log::debug!("vsock cid {}: rx: {e}", self.cid);
                self.metrics.rx_bad_buffers += 1;
                0
            }
        };
        Handled::Used(len)
    }
}

/// The event queue's handler: no event to send, no buffer wanted.
struct NoEvents;

impl ChainHandler for NoEvents {
    fn wants_chain(&mut self) -> bool {
        false
    }

    fn handle(
        &mut self,
        _mem: &GuestMemory,
        _queue_size: u16,
        _chain: DescriptorChain<&GuestMemory>,
    ) -> Handled {
        Handled::Keep
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let cfg = self.cid.to_le_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, b) in data.iter_mut().enumerate() {
            *b = start
                .checked_add(i)
                .and_then(|j| cfg.get(j))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!(
            "vsock cid {}: ignored write to read-only config at {offset:#x}",
            self.cid
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        ctx.check_queues("virtio-vsock", QUEUE_SIZES.len())?;
        // Activating again without a reset: the old connections go.
        if self.activation.is_active() {
            self.reset_pending = true;
        }
        self.activation.activate(ctx)
    }

    fn reset(&mut self) {
        // Before any activation the guest knows no connection, and host
        // connections waiting for it should survive the driver's probe reset.
        if self.activation.is_active() {
            self.reset_pending = true;
        }
        self.acked_features = 0;
        self.activation.reset();
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        self.activation.init(ops);
        // Registers the listening socket.
        self.muxer.sync_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.activation.handle(&events, ops) {
            Dispatch::Control => self.on_control(ops),
            // New rx buffers are filled by the pump.
            Dispatch::Queue(TXQ) => self.process_queues(ops),
            Dispatch::Queue(EVQ) => self.process_evq(),
            Dispatch::Queue(_) => {
                self.pump();
                self.muxer.sync_interest(ops);
            }
            Dispatch::Ignored => {}
            Dispatch::Unknown => {
                self.handle_host_event(events.fd(), events.event_set(), ops);
            }
        }
    }
}
