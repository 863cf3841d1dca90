//! virtio over MMIO (virtio 1.2, modern transport, version 2).
//!
//! A device implements [`VirtioDevice`] (its features, config space and what it
//! does once the driver has set it up) and, to do its work off the vCPU
//! threads, `event_manager::MutEventSubscriber`. The transport in `mmio`
//! owns the register file and the queues until the driver sets DRIVER_OK, then
//! hands them over in [`ActivateContext`].
//!
//! Activation happens on a vCPU thread (the driver's status write), but queue
//! work belongs to the VMM's event loop. So `activate` only stores what it is
//! given and writes the device's own activate eventfd; the device registered
//! that eventfd in `MutEventSubscriber::init`, and on it registers the queue
//! eventfds (and its backend's fds) with the event loop.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::VirtioInterrupt;

pub mod activation;
pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod vsock;

/// Guest memory as devices see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device IDs (virtio 1.2, 5).
pub const TYPE_NET: u32 = 1;
/// Block device.
pub const TYPE_BLOCK: u32 = 2;
/// Console / virtio-serial.
pub const TYPE_CONSOLE: u32 = 3;
/// Entropy source.
pub const TYPE_RNG: u32 = 4;
/// Socket device.
pub const TYPE_VSOCK: u32 = 19;
/// File system device (virtio-fs).
pub const TYPE_FS: u32 = 26;

/// A device type's name, for logs.
pub fn type_name(device_type: u32) -> &'static str {
    match device_type {
        TYPE_NET => "net",
        TYPE_BLOCK => "block",
        TYPE_CONSOLE => "console",
        TYPE_RNG => "rng",
        TYPE_VSOCK => "vsock",
        TYPE_FS => "fs",
        _ => "unknown",
    }
}

/// Feature bit: the device complies with virtio 1.0 or later (required for modern MMIO).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// What a device receives when the driver has finished setting it up.
pub struct ActivateContext {
    /// The guest's memory.
    pub mem: GuestMemory,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
    /// The queues as the driver configured them, in index order.
    pub queues: Vec<Queue>,
    /// One notification eventfd per queue (KVM ioeventfds on QueueNotify).
    pub queue_evts: Vec<EventFd>,
}

impl ActivateContext {
    /// Checks that the driver set up exactly `count` queues, each with its
    /// eventfd, each ready and inside guest memory. Every device starts its
    /// `activate` with this, so a bad setup is refused the same way everywhere.
    pub fn check_queues(&self, device: &str, count: usize) -> Result<(), ActivateError> {
        if self.queues.len() != count || self.queue_evts.len() != count {
            return Err(ActivateError::BadQueues(format!(
                "{device} needs {count} queues with their eventfds, got {} and {}",
                self.queues.len(),
                self.queue_evts.len()
            )));
        }
        if let Some(i) = self.queues.iter().position(|q| !q.is_valid(&self.mem)) {
            return Err(ActivateError::BadQueues(format!(
                "{device}: queue {i} is not ready or lies outside guest memory"
            )));
        }
        Ok(())
    }
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a queue count or size the device cannot work with.
    #[error("bad queue configuration: {0}")]
    BadQueues(String),
    /// Signalling the event loop failed.
    #[error("activate event: {0}")]
    Event(#[source] std::io::Error),
    /// The device's backend failed.
    #[error("backend: {0}")]
    Backend(String),
}

/// A virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`TYPE_*`).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers, including `VIRTIO_F_VERSION_1`.
    fn device_features(&self) -> u64;
    /// Features the driver accepted (a subset of `device_features`).
    fn ack_features(&mut self, features: u64);
    /// Reads the device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: take the queues and start serving them.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The driver reset the device: drop the queues and go back to the state
    /// before activation. In-flight requests are abandoned.
    fn reset(&mut self);
}

/// Copies the part of `config` at `offset` into `data`, leaving bytes past the
/// end of `config` untouched (callers hand in a zeroed buffer). Guest-chosen
/// offsets and lengths are safe here: nothing is read outside `config`.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    let Some(src) = config.get(start..) else {
        return;
    };
    let n = src.len().min(data.len());
    data[..n].copy_from_slice(&src[..n]);
}

/// Whether feature bit `bit` is set in `features`.
pub fn has_feature(features: u64, bit: u32) -> bool {
    bit < 64 && features & (1u64 << bit) != 0
}
