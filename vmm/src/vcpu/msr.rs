//! Model-specific registers a 64-bit Linux entry expects in a known state.

use kvm_bindings::{kvm_msr_entry, Msrs};

/// IA32_SYSENTER_CS / ESP / EIP.
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// SYSCALL target registers.
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
/// IA32_MISC_ENABLE, with fast strings on (what firmware leaves behind).
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// Errors building the MSR list.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The FAM wrapper refused the list.
    #[error("cannot build the MSR list: {0:?}")]
    Build(vmm_sys_util::fam::Error),
}

/// The boot MSRs: SYSCALL/SYSENTER targets cleared (the kernel sets its own),
/// TSC at zero, fast strings enabled.
pub fn boot_msrs() -> Result<Msrs, MsrError> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ])
    .map_err(MsrError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_cover_syscall_targets_and_misc_enable() {
        let m = boot_msrs().unwrap();
        let idx: Vec<u32> = m.as_slice().iter().map(|e| e.index).collect();
        for want in [
            MSR_LSTAR,
            MSR_STAR,
            MSR_SYSCALL_MASK,
            MSR_IA32_SYSENTER_EIP,
            MSR_IA32_TSC,
        ] {
            assert!(idx.contains(&want), "{want:#x}");
        }
        let misc = m
            .as_slice()
            .iter()
            .find(|e| e.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data, 1);
    }
}
