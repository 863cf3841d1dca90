//! The guest side of runm: the agent that runs as PID 1 in every microVM, and
//! the wire protocol between it and the host runtime. The runtime depends on
//! this crate for [`proto`] only.

pub mod proto;
