//! virtio-fs (virtio 1.2, 5.11) as a vhost-user frontend.
//!
//! The guest's FUSE requests travel on virtqueues that an external daemon,
//! the backend (virtiofsd), reads and answers directly in guest memory: the
//! VMM never looks at a request. What this module owns is everything around
//! that: the device the guest sees (its configuration space with the tag and
//! the number of request queues, its features, which are the backend's), the
//! connection to the backend over its Unix socket ([`vhost_user`]: handshake,
//! memory table, vring set-up and tear-down), and the relay that turns the
//! backend's "used buffers" eventfds into the transport's interrupt.
//!
//! Queue notifications never pass through the VMM: the transport's queue
//! eventfds (KVM ioeventfds on QueueNotify) are handed to the backend as its
//! kick fds. Guest memory must be shared with the backend, so every region
//! must be backed by a file it can map (the VMM uses a memfd).

mod device;
mod vhost_user;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use device::Fs;
pub use vhost_user::WatchdogSetup;

/// Longest tag the configuration space holds (virtio 1.2, 5.11.4).
pub const TAG_LEN: usize = 36;
/// Default number of request queues (besides the high-priority queue).
pub const DEFAULT_REQUEST_QUEUES: u16 = 1;
/// Most request queues a device may have.
pub const MAX_REQUEST_QUEUES: u16 = 64;
/// Default size of each queue.
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// How long the backend may take to answer one request by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A virtio-fs device and the backend that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The name the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
    /// Request queues; the device has one high-priority queue more.
    pub num_request_queues: u16,
    /// Size of every queue (a power of two).
    pub queue_size: u16,
    /// How long one request to the backend may take before the backend is
    /// given up on (a stuck backend must not hold a vCPU thread forever).
    pub timeout: Duration,
}

impl FsConfig {
    /// A device with tag `tag` served at `socket`, with the defaults.
    pub fn new(tag: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        FsConfig {
            tag: tag.into(),
            socket: socket.into(),
            num_request_queues: DEFAULT_REQUEST_QUEUES,
            queue_size: DEFAULT_QUEUE_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks what can be checked without the backend.
    pub fn check(&self) -> Result<(), FsError> {
        check_tag(&self.tag)?;
        if self.num_request_queues == 0 || self.num_request_queues > MAX_REQUEST_QUEUES {
            return Err(FsError::Invalid(format!(
                "virtio-fs {}: {} request queues; give 1 to {MAX_REQUEST_QUEUES}",
                self.tag, self.num_request_queues
            )));
        }
        if !self.queue_size.is_power_of_two() {
            return Err(FsError::Invalid(format!(
                "virtio-fs {}: queue size {} is not a power of two",
                self.tag, self.queue_size
            )));
        }
        if self.timeout.is_zero() {
            return Err(FsError::Invalid(format!(
                "virtio-fs {}: zero backend timeout",
                self.tag
            )));
        }
        Ok(())
    }
}

/// Checks a virtio-fs tag: 1 to [`TAG_LEN`] bytes of printable ASCII without
/// spaces or commas (it becomes a mount source in the guest, and `TAG,SOCKET`
/// on the command line).
pub fn check_tag(tag: &str) -> Result<(), FsError> {
    if tag.is_empty() || tag.len() > TAG_LEN {
        return Err(FsError::Invalid(format!(
            "virtio-fs tag '{tag}' must be 1 to {TAG_LEN} bytes long"
        )));
    }
    if !tag.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(FsError::Invalid(format!(
            "virtio-fs tag '{}' may only hold printable ASCII without spaces or commas",
            tag.escape_debug()
        )));
    }
    Ok(())
}

/// Why a virtio-fs device could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The configuration is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The backend's socket could not be reached.
    #[error("cannot connect to the virtio-fs backend at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backend did not answer in time.
    #[error("the virtio-fs backend at {socket} did not answer {request} within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The vhost-user request that went unanswered.
        request: &'static str,
        /// How long it was given.
        timeout: Duration,
    },
    /// A request failed: the backend refused it or the connection broke.
    #[error("the virtio-fs backend at {socket} failed {request}: {source}")]
    Request {
        /// The socket.
        socket: PathBuf,
        /// The vhost-user request.
        request: &'static str,
        /// What went wrong.
        #[source]
        source: vhost::Error,
    },
    /// The backend lacks something the device needs.
    #[error("the virtio-fs backend at {socket} {what}")]
    Unsupported {
        /// The socket.
        socket: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The thread that bounds requests could not start, or was not started.
    #[error("virtio-fs backend at {socket}: watchdog: {what}")]
    Watchdog {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// An earlier request failed, so the connection's state is unknown.
    #[error("the virtio-fs backend at {socket} failed earlier; the device is out of service")]
    Broken {
        /// The socket.
        socket: PathBuf,
    },
    /// A guest memory region the backend cannot map.
    #[error(
        "guest memory at {addr:#x} is not backed by a shareable file; \
         a vhost-user device needs shared guest memory"
    )]
    MemoryNotShared {
        /// Guest-physical start of the region.
        addr: u64,
    },
    /// More guest memory regions than one vhost-user message carries.
    #[error("guest memory has {0} regions; a vhost-user memory table holds at most {max}", max = vhost_user::MAX_REGIONS)]
    TooManyRegions(usize),
    /// The driver placed part of a queue where the backend cannot follow.
    #[error("queue {queue}: the {part} at {addr:#x} ({len} bytes) does not lie inside one guest memory region")]
    RingAddress {
        /// Queue index.
        queue: usize,
        /// Descriptor table, available ring or used ring.
        part: &'static str,
        /// Guest-physical address the driver gave.
        addr: u64,
        /// Bytes the part takes at the queue's size.
        len: usize,
    },
    /// An eventfd could not be made.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
