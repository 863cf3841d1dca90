//! The virtio-blk device: features, configuration space, and the loop that
//! turns available descriptor chains into completed requests.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
};

use super::backend::DiskImage;
use super::request::{parse, ExecContext, RequestType};
use super::BlockError;
use crate::virtio::activation::QueueActivation;
use crate::virtio::{
    has_feature, read_config_bytes, ActivateContext, ActivateError, VirtioDevice, TYPE_BLOCK,
    VIRTIO_F_VERSION_1,
};

/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Maximum data segments per request announced in `seg_max`: a chain holds at
/// most QUEUE_SIZE descriptors, one for the header and one for the status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Chains handled per queue event before yielding to other devices on the
/// event loop; the rest are picked up by a self-notification.
pub const CHAINS_PER_EVENT: usize = 4 * QUEUE_SIZE as usize;

// Offsets in `struct virtio_blk_config` (virtio 1.2, 5.2.4).
const CONFIG_CAPACITY: usize = 0;
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_LEN: usize = 60;

/// How to build a block device.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Name used in logs, and the default serial.
    pub id: String,
    /// The raw image.
    pub path: std::path::PathBuf,
    /// Refuse writes and announce VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// The serial returned by GET_ID (truncated to 20 bytes); `id` if unset.
    pub serial: Option<String>,
}

/// Per-device counters, readable from any thread.
#[derive(Debug, Default)]
pub struct BlockCounters {
    /// Chains taken off the queue.
    pub requests: AtomicU64,
    /// Bytes read from the disk into the guest.
    pub read_bytes: AtomicU64,
    /// Bytes written from the guest to the disk.
    pub write_bytes: AtomicU64,
    /// Flush requests completed.
    pub flushes: AtomicU64,
    /// Requests completed with a status other than OK.
    pub failed: AtomicU64,
    /// Chains returned without a status byte (used length 0).
    pub dropped: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A virtio-blk device over a raw image file, one request queue.
pub struct Block {
    id: String,
    disk: DiskImage,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    pub(super) activation: QueueActivation,
    counters: Arc<BlockCounters>,
}

impl Block {
    /// Opens the image described by `config`.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        let disk = DiskImage::open(Path::new(&config.path), config.read_only)?;
        let serial = config.serial.unwrap_or_else(|| config.id.clone());
        Self::with_disk(config.id, disk, &serial)
    }

    /// A device over an already opened image.
    pub fn with_disk(id: String, disk: DiskImage, serial: &str) -> Result<Self, BlockError> {
        let mut avail_features = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX);
        if disk.is_read_only() {
            avail_features |= 1u64 << VIRTIO_BLK_F_RO;
        }
        let mut config = [0u8; CONFIG_LEN];
        config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8]
            .copy_from_slice(&disk.nsectors().to_le_bytes());
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&SEG_MAX.to_le_bytes());
        let mut serial_bytes = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(serial_bytes.len());
        serial_bytes[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(Self {
            id,
            disk,
            serial: serial_bytes,
            avail_features,
            acked_features: 0,
            config,
            activation: QueueActivation::new().map_err(BlockError::EventFd)?,
            counters: Arc::default(),
        })
    }

    /// The device's name in logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Capacity in 512-byte sectors.
    pub fn nsectors(&self) -> u64 {
        self.disk.nsectors()
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<BlockCounters> {
        self.counters.clone()
    }

    /// Whether the driver activated the device (and has not reset it).
    pub fn is_activated(&self) -> bool {
        self.activation.is_active()
    }

    /// Serves the request queue until the driver has nothing more to offer
    /// (or the budget runs out), then raises the used-buffer interrupt if the
    /// driver wants one. Does nothing while the device is not active, nor
    /// after the driver broke the queue.
    pub fn process_queue(&mut self, queue_index: usize) {
        let flush_negotiated = has_feature(self.acked_features, VIRTIO_BLK_F_FLUSH);
        let Self {
            id,
            disk,
            serial,
            activation,
            counters,
            ..
        } = self;
        let ctx = ExecContext {
            disk: &*disk,
            serial: &*serial,
            flush_negotiated,
        };
        let device = format!("virtio-blk {id}");
        let Some(served) = activation.serve(
            queue_index,
            CHAINS_PER_EVENT,
            &device,
            |mem, queue_size, chain| {
                let head = chain.head_index();
                bump(&counters.requests, 1);
                let completion = match parse(chain, mem, usize::from(queue_size)) {
                    Ok(req) => {
                        let c = req.execute(mem, &ctx);
                        if c.status == Some(0) {
                            match req.request_type {
                                RequestType::In => bump(&counters.read_bytes, req.data_len),
                                RequestType::Out => bump(&counters.write_bytes, req.data_len),
                                RequestType::Flush => bump(&counters.flushes, 1),
                                _ => {}
                            }
                        } else {
                            bump(&counters.failed, 1);
                        }
                        c
                    }
                    Err(rejected) => {
                        debug!("{device}: bad request {head}: {}", rejected.error);
                        let c = rejected.complete(mem);
                        if c.status.is_some() {
                            bump(&counters.failed, 1);
                        } else {
                            bump(&counters.dropped, 1);
                        }
                        c
                    }
                };
                completion.used_len
            },
        ) else {
            return;
        };
        if served.notify {
            bump(&counters.interrupts, 1);
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Nothing in our configuration space is writable (no CONFIG_WCE).
        debug!(
            "virtio-blk {}: ignored {}-byte config write at {offset:#x}",
            self.id,
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        ctx.check_queues(&format!("virtio-blk {}", self.id), 1)?;
        self.activation.activate(ctx)
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        self.activation.reset();
    }
}
