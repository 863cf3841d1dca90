//! virtio-net (virtio 1.2, 5.1, device ID 1) over a Linux tap device.
//!
//! This module owns the guest's network card: [`Net`] answers the transport
//! (features, config space with the MAC and link status, activation) and moves
//! frames between the guest's two queues and a [`Tap`] on the VMM's event
//! loop. No offloads are offered, so frames pass through unchanged: the
//! 12-byte `virtio_net_hdr_v1` in front of each frame is exactly what the tap
//! (opened with `IFF_VNET_HDR`) reads and writes.
//!
//! - `tap`: opening the tap, and every `unsafe` call of the device.
//! - `device`: the [`VirtioDevice`](super::VirtioDevice) side, and the rx/tx
//!   paths that check each guest descriptor chain before touching it.
//! - `handler`: `event_manager::MutEventSubscriber`: which fds are watched
//!   when, including pausing the tap while the guest has no rx buffers.
//!
//! Wiring in the VMM: `Net::new(Tap::open(name)?, mac)?` wrapped in an
//! `Arc<Mutex<Net>>`; one clone goes to the MMIO transport (as the
//! `VirtioDevice`), one to the event manager (`add_subscriber`). The
//! transport's activation hands over the two queues and their notification
//! eventfds; the device registers those and the tap fd on the event loop
//! itself.

mod device;
mod handler;
mod tap;
#[cfg(test)]
mod test_utils;

pub use device::{gather_tx_chain, write_frame, MacAddr, Net, NetError, NetMetrics};
pub use tap::{Tap, TapError, MAX_TAP_NAME_LEN};

/// Size of `virtio_net_hdr_v1`, the header in front of every frame (it has
/// `num_buffers` because VIRTIO_F_VERSION_1 is always negotiated).
pub const VNET_HDR_LEN: usize = 12;

/// Largest packet the device moves in either direction: the header plus a
/// 65550-byte frame, the bound virtio 1.2 (5.1.6.3.1) gives for buffers that
/// hold a whole packet.
pub const MAX_PACKET_LEN: usize = 65562;

/// Size of an Ethernet header: nothing shorter is a frame.
pub const ETH_HLEN: usize = 14;

/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
