//! What a VM is made of: runm-vmm boots the shared [`vm_spec::VmConfig`]
//! (runm writes the same type as `vm.json`), re-exported here for the rest
//! of the VMM, and tied below to this VMM's interrupt layout.

pub use vm_spec::config::*;

use crate::layout::{IRQ_BASE, IRQ_MAX};

// `VmConfig::validate` admits one virtio device per IOAPIC line runm-vmm
// hands out; the layout and that limit must move together.
const _: () = assert!(IRQ_MAX - IRQ_BASE + 1 == MAX_VIRTIO_DEVICES as u32);
