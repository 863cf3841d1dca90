//! Opening `/dev/kvm` and checking that it offers what runm-vmm relies on.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Where the host's KVM lives.
pub const KVM_PATH: &str = vm_spec::host::KVM_DEVICE;

/// Errors opening KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` is absent: no KVM module, or not passed into this container.
    #[error("{KVM_PATH} does not exist: this host has no KVM (use the QEMU backend)")]
    Missing,
    /// `/dev/kvm` exists but this user may not open it.
    #[error("no permission to open {KVM_PATH} (add the user to the kvm group or run as root)")]
    Permission,
    /// Any other failure opening it.
    #[error("cannot open {KVM_PATH}: {0}")]
    Open(#[source] kvm_ioctls::Error),
    /// An API version other than the stable 12.
    #[error("KVM API version {0}, expected 12")]
    ApiVersion(i32),
    /// A capability runm-vmm needs is missing.
    #[error("KVM lacks the {0} capability")]
    MissingCap(&'static str),
}

/// What kind of KVM this host has: it decides the default CPU template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmFlavor {
    /// Hardware virtualization (VT-x / AMD-V), bare metal or nested.
    Hardware,
    /// PVM: pagetable-based KVM for hosts without hardware nesting. Stock
    /// guests run their privileged code through KVM's instruction emulator.
    Pvm,
}

impl KvmFlavor {
    /// Reads the host's flavor (once `/dev/kvm` is open, it is not missing).
    pub fn detect() -> Self {
        if vm_spec::HostKvm::detect().is_pvm() {
            KvmFlavor::Pvm
        } else {
            KvmFlavor::Hardware
        }
    }
}

/// Opens KVM and checks the capabilities runm-vmm uses.
pub fn open() -> Result<Kvm, KvmError> {
    if !Path::new(KVM_PATH).exists() {
        return Err(KvmError::Missing);
    }
    let kvm = Kvm::new().map_err(|e| {
        if e.errno() == libc::EACCES || e.errno() == libc::EPERM {
            KvmError::Permission
        } else {
            KvmError::Open(e)
        }
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmError::ApiVersion(v));
    }
    for (cap, name) in [
        (Cap::Irqchip, "IRQCHIP"),
        (Cap::Pit2, "PIT2"),
        (Cap::Irqfd, "IRQFD"),
        (Cap::Ioeventfd, "IOEVENTFD"),
        (Cap::UserMemory, "USER_MEMORY"),
        (Cap::ExtCpuid, "EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}
