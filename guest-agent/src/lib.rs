//! The guest side of runm: the agent that runs as PID 1 in every microVM, the
//! wire protocol between it and the host runtime, and the rtnetlink client
//! both sides use for networking. The runtime depends on this crate for
//! [`proto`] and [`netlink`] only.

pub mod netlink;
pub mod network;
pub mod proto;

#[cfg(test)]
mod testns;
