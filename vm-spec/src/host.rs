//! What kind of KVM this host has, read from `/dev/kvm` and the loaded
//! modules. runm picks its backend from it, runm-vmm its CPU template, the
//! tests and benchmarks what they can expect of a guest.

use std::path::Path;

/// Where the host's KVM lives.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Present when the host's KVM is PVM.
pub const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// The host's KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware virtualization (VT-x / AMD-V), bare metal or nested.
    Hardware,
    /// PVM (`kvm_pvm`): pagetable-based KVM for hosts without hardware
    /// nesting. A stock guest kernel's privileged code runs through KVM's
    /// instruction emulator: the kernel boots, guest user space does not run.
    Pvm,
    /// No `/dev/kvm`.
    Missing,
}

impl HostKvm {
    /// Looks at this host. Whether this process may open `/dev/kvm` is not
    /// part of it: opening it says so.
    pub fn detect() -> Self {
        Self::from_paths(Path::new(KVM_DEVICE), Path::new(PVM_MODULE))
    }

    fn from_paths(device: &Path, pvm_module: &Path) -> Self {
        if !device.exists() {
            HostKvm::Missing
        } else if pvm_module.is_dir() {
            HostKvm::Pvm
        } else {
            HostKvm::Hardware
        }
    }

    /// Whether it is PVM.
    pub fn is_pvm(self) -> bool {
        self == HostKvm::Pvm
    }

    /// Whether guests run on hardware virtualization, user space included.
    pub fn is_hardware(self) -> bool {
        self == HostKvm::Hardware
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_what_exists() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("kvm");
        let pvm = d.path().join("kvm_pvm");
        assert_eq!(HostKvm::from_paths(&dev, &pvm), HostKvm::Missing);
        std::fs::write(&dev, "").unwrap();
        assert_eq!(HostKvm::from_paths(&dev, &pvm), HostKvm::Hardware);
        std::fs::create_dir(&pvm).unwrap();
        let k = HostKvm::from_paths(&dev, &pvm);
        assert_eq!(k, HostKvm::Pvm);
        assert!(k.is_pvm() && !k.is_hardware());
    }
}
