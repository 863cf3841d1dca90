//! The KVM VM: its memory slots, in-kernel interrupt controllers and PIT, and
//! the eventfd plumbing (irqfd, ioeventfd) that lets devices work without
//! vCPU exits.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// Errors creating or configuring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM_CREATE_VM failed.
    #[error("cannot create the KVM VM: {0}")]
    Create(#[source] kvm_ioctls::Error),
    /// A memory slot was refused.
    #[error("cannot register guest memory slot {slot} with KVM: {source}")]
    MemorySlot {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host address of a region could not be had.
    #[error("guest memory region {0} has no host mapping")]
    HostAddress(u32),
    /// Setting up the TSS / identity map / IRQ chip / PIT failed.
    #[error("cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Registering an eventfd with KVM failed.
    #[error("cannot register {what}: {source}")]
    Eventfd {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Where KVM's TSS pages go (three pages, just below the identity map page).
/// Both sit at the top of the 32-bit gap where no RAM or device lives.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// A KVM VM with its memory registered.
pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates the VM, registers `mem` and, when `irqchip` is set, the
    /// in-kernel IOAPIC/PIC/LAPICs and PIT. Tests with tiny guests turn the
    /// irqchip off so a `hlt` exits to user space.
    pub fn new(kvm: &Kvm, mem: &GuestMemory, irqchip: bool) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        let setup = |what, r: Result<(), kvm_ioctls::Error>| {
            r.map_err(|source| VmError::Setup { what, source })
        };
        setup("the TSS address", fd.set_tss_address(KVM_TSS_ADDRESS))?;
        setup(
            "the identity map address",
            fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS),
        )?;
        let vm = Vm { fd };
        vm.register_memory(mem)?;
        if irqchip {
            setup("the in-kernel IRQ chip", vm.fd.create_irq_chip())?;
            // The dummy speaker makes port 0x61 answer in the kernel: Linux
            // polls it while calibrating, and it has no use in a microVM.
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            setup("the in-kernel PIT", vm.fd.create_pit2(pit))?;
        }
        Ok(vm)
    }

    fn register_memory(&self, mem: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in (0u32..).zip(mem.iter()) {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::HostAddress(slot))?;
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping of `region.len()` bytes owned
            // by `mem`, which the caller keeps alive as long as the VM (the Vmm
            // holds both, and drops the VM first).
            unsafe { self.fd.set_user_memory_region(r) }
                .map_err(|source| VmError::MemorySlot { slot, source })?;
        }
        Ok(())
    }

    /// The raw VM fd, for creating vCPUs.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Makes a write to `evt` raise interrupt line `gsi` in the guest.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::Eventfd {
                what: format!("irqfd for GSI {gsi}"),
                source,
            })
    }

    /// Makes a guest 4-byte write of `datamatch` at MMIO `addr` signal `evt`
    /// inside KVM, without an exit to user space.
    pub fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| VmError::Eventfd {
                what: format!("ioeventfd at {:#x}", addr),
                source,
            })
    }
}
