//! virtio-rng (virtio 1.2, 5.4): an entropy device with one request queue.
//!
//! - [`backend`]: the host entropy source.
//! - [`device`]: the [`Rng`] device and its event-loop integration.
//!
//! Wiring is the same as for the block device: `Arc<Mutex<Rng>>` to both the
//! transport and the event manager.

pub mod backend;
pub mod device;

pub use device::{Rng, MAX_BYTES_PER_CHAIN, QUEUE_SIZE};

/// Errors from building an entropy device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// The activate eventfd could not be created.
    #[error("cannot create the activate eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
