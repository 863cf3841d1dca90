//! virtio-vsock (virtio 1.2, 5.10, device ID 19) served by the VMM itself,
//! with the host side on Unix sockets.
//!
//! This module owns the whole device: the wire format (`packet`), one
//! connection's state and credit accounting (`connection`), the mapping of
//! connections onto host sockets (`muxer`) and the virtio device with its
//! event-loop handler (`device`); `backend` holds the only unsafe code, a
//! non-blocking connect.
//!
//! Host side, given a socket path `<uds>`:
//! - a host process connects to `<uds>` and writes `CONNECT <port>\n`; the
//!   guest gets a connection request to `<port>` from an ephemeral host
//!   port, and when it accepts, the host process reads `OK <host_port>\n`
//!   and the socket carries the stream. A refusal closes the host socket.
//! - a guest connection to host port `P` is connected to the Unix socket
//!   `<uds>_P`; if nothing listens there the guest gets a reset.
//!
//! Only stream sockets are offered (no `VIRTIO_VSOCK_F_SEQPACKET`).
//!
//! Wiring: `Vsock::new(cid, uds)` binds the listener; the VMM puts the
//! device, as `Arc<Mutex<Vsock>>`, behind an MMIO transport and adds the same
//! `Arc` to its `EventManager`. `init` watches the activate eventfd and the
//! listener; queue eventfds and host sockets are watched as they come.
//! Without an `EventManager` (a benchmark, say), `Vsock::process_queues` and
//! `Vsock::handle_host_event` drive the device with any [`EventRegistry`].

pub mod backend;
pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;

#[cfg(test)]
mod tests;

pub use device::{Vsock, VsockError, VsockMetrics, EVQ, QUEUE_SIZE, RXQ, TXQ};
pub use muxer::{EventRegistry, Muxer, MuxerError, MuxerStats};
