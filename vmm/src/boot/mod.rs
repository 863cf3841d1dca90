//! Guest boot: everything written into guest memory before the first vCPU runs.

pub mod bootparams;
pub mod cmdline;
pub mod loader;
pub mod mptable;
