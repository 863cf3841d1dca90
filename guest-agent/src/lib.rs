//! The guest side of runm: the agent that runs as PID 1 in every microVM, and
//! what it shares with the host runtime: the wire protocol ([`proto`]), the
//! rtnetlink client both sides use for networking ([`netlink`]), and the few
//! system calls both sides need with the same behaviour ([`fdio`],
//! [`sigset`]).

pub mod fdio;
pub mod netlink;
pub mod network;
pub mod proto;
pub mod sigset;

#[cfg(test)]
mod testns;
