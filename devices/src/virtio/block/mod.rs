//! virtio-blk (virtio 1.2, 5.2) over a raw image file.
//!
//! - [`backend`]: the image file and zero-copy transfers to guest memory.
//! - [`request`]: parsing a descriptor chain into a request and running it.
//! - [`device`]: the [`Block`] device (features, config space, queue loop).
//! - `handler`: `event_manager::MutEventSubscriber` for [`Block`].
//!
//! Wiring: wrap the device in `Arc<Mutex<Block>>`; give one clone to
//! `MmioTransport::new` (as `Arc<Mutex<dyn VirtioDevice>>`) and add another to
//! the event manager (`Arc<Mutex<_>>` is a `MutEventSubscriber`). Its `init`
//! registers the activate eventfd; activation and reset arrive through it.

pub mod backend;
pub mod device;
mod handler;
pub mod request;
#[cfg(test)]
mod tests;

pub use backend::DiskImage;
pub use device::{Block, BlockConfig, BlockCounters, QUEUE_SIZE, SEG_MAX};

/// log2 of the virtio-blk sector size.
pub const SECTOR_SHIFT: u32 = 9;
/// The virtio-blk sector size: capacity and request offsets count these.
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Errors from building a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image could not be opened.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The activate eventfd could not be created.
    #[error("cannot create the activate eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
