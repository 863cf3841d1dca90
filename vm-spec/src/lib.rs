//! One description of a runm microVM, shared by `runm` (the runtime) and
//! `runm-vmm` (the VMM), which still talk as two processes through `vm.json`.
//!
//! - [`config`]: [`VmConfig`], the typed VM runm-vmm boots (its `--config`
//!   file, which runm writes), with the checks that need no KVM.
//! - [`cmdline`]: the guest kernel command line, composed per VMM.
//! - [`qemu`]: QEMU's `microvm` command line for the same kind of guest.
//! - [`host`]: what kind of KVM this host has.
//! - [`phase`]: the boot phase marks runm-vmm prints, and their parser.
//!
//! No KVM and no command-line parsing here: every crate that describes,
//! starts or measures a VM can depend on this one.

#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod cmdline;
pub mod config;
pub mod host;
pub mod phase;
pub mod qemu;

pub use cmdline::{kernel_cmdline, AgentTransport, GuestArgs, GuestVmm, Reset};
pub use config::{
    ConfigError, Console, CpuTemplateName, DiskConfig, FsConfig, JailConfig, NetConfig, VmConfig,
    VsockConfig,
};
pub use host::HostKvm;
pub use phase::{Phase, PhaseMark};
pub use qemu::{AgentPort, QemuAccel, QemuMicrovm};
