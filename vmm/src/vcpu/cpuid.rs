//! CPUID for the vCPUs: what KVM supports (`KVM_GET_SUPPORTED_CPUID`),
//! normalised for the VM's topology, then filtered by a CPU template.
//!
//! The `pvm` template exists for hosts whose KVM is PVM: there a stock guest's
//! privileged code runs through KVM's instruction emulator, which cannot
//! execute `cmpxchg16b`, `xrstor`, `clac` or `popcnt`, and the guest must not
//! take the AMD "FXSAVE leak" path (x87 `fnclex`). PVM puts some CPUID bits
//! back after KVM_SET_CPUID2, so the template also adds kernel arguments that
//! make the guest ignore them; the VMM reads CPUID back and logs what differs.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use crate::config::CpuTemplateName;
use crate::kvm::KvmFlavor;

/// Leaf 1 ECX bits.
pub mod leaf1_ecx {
    /// CMPXCHG16B.
    pub const CX16: u32 = 1 << 13;
    /// x2APIC.
    pub const X2APIC: u32 = 1 << 21;
    /// POPCNT.
    pub const POPCNT: u32 = 1 << 23;
    /// TSC deadline timer.
    pub const TSC_DEADLINE: u32 = 1 << 24;
    /// XSAVE/XRSTOR.
    pub const XSAVE: u32 = 1 << 26;
    /// XSAVE enabled by the OS (dynamic).
    pub const OSXSAVE: u32 = 1 << 27;
    /// AVX (needs XSAVE).
    pub const AVX: u32 = 1 << 28;
    /// Running under a hypervisor.
    pub const HYPERVISOR: u32 = 1 << 31;
}
/// Leaf 1 EDX: hyper-threading / multi-core package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 7 EBX: SMAP (its `clac`/`stac` cannot be emulated under PVM).
pub const LEAF7_EBX_SMAP: u32 = 1 << 20;
/// Leaf 7 EBX: AVX2 (needs XSAVE).
const LEAF7_EBX_AVX2: u32 = 1 << 5;
/// Leaf 0x8000_0008 EBX: XSAVEERPTR, "FXSAVE/FXRSTOR always save/restore the
/// x87 error pointers". Without it an AMD guest runs `fnclex` on every FPU
/// restore (the FXSAVE-leak workaround).
pub const LEAF_8000_0008_EBX_XSAVEERPTR: u32 = 1 << 2;

/// Kernel arguments that go with the `pvm` template: PVM restores POPCNT,
/// XSAVE and SMAP after KVM_SET_CPUID2, so the guest is told to ignore them,
/// and the int3 self-test (which the emulator cannot run) is skipped through
/// the boot parameter our guest kernel patch adds.
pub const PVM_KERNEL_ARGS: &str = "clearcpuid=cx16,xsave,smap,popcnt noint3selftest";

/// A resolved CPU template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTemplate {
    /// KVM's supported CPUID, normalised.
    Host,
    /// Host minus what PVM's emulator cannot run.
    Pvm,
}

impl CpuTemplate {
    /// Resolves `auto` by the host's KVM flavor.
    pub fn resolve(name: CpuTemplateName, flavor: KvmFlavor) -> Self {
        match (name, flavor) {
            (CpuTemplateName::Host, _) => CpuTemplate::Host,
            (CpuTemplateName::Pvm, _) | (CpuTemplateName::Auto, KvmFlavor::Pvm) => CpuTemplate::Pvm,
            (CpuTemplateName::Auto, KvmFlavor::Hardware) => CpuTemplate::Host,
        }
    }

    /// Kernel arguments the template needs on the guest command line.
    pub fn kernel_args(self) -> &'static str {
        match self {
            CpuTemplate::Host => "",
            CpuTemplate::Pvm => PVM_KERNEL_ARGS,
        }
    }

    /// The template's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            CpuTemplate::Host => "host",
            CpuTemplate::Pvm => "pvm",
        }
    }
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries.iter().any(|e| {
        e.function == 0 && e.ebx == 0x6874_7541 && e.edx == 0x6974_6e65 && e.ecx == 0x444d_4163
        // "AuthenticAMD"
    })
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Builds the CPUID of vCPU `index` of `count` from KVM's supported table.
pub fn build(supported: &CpuId, template: CpuTemplate, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let amd = is_amd(cpuid.as_slice());
    let (index, count) = (u32::from(index), u32::from(count));
    for e in cpuid.as_mut_slice() {
        normalize(e, index, count);
        if template == CpuTemplate::Pvm {
            apply_pvm(e, amd);
        }
    }
    cpuid
}

/// Gives each vCPU its own APIC ID and describes a one-socket package of
/// `count` cores, one thread each.
fn normalize(e: &mut kvm_cpuid_entry2, index: u32, count: u32) {
    match e.function {
        0x1 => {
            e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | (count.min(255) << 16);
            e.ecx |= leaf1_ecx::HYPERVISOR;
            if count > 1 {
                e.edx |= LEAF1_EDX_HTT;
            } else {
                e.edx &= !LEAF1_EDX_HTT;
            }
        }
        0x4 => {
            // Cores per package - 1 in EAX[31:26]; each cache private to a core.
            e.eax = (e.eax & 0x0000_3fff) | ((count - 1).min(63) << 26);
        }
        0xb | 0x1f => {
            e.edx = index;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8; // level 0: SMT
                }
                1 => {
                    e.eax = ceil_log2(count);
                    e.ebx = count;
                    e.ecx = (2 << 8) | 1; // level 1: core
                }
                i => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = i;
                }
            }
        }
        0x8000_0008 => {
            // AMD: number of cores - 1 and the APIC ID width.
            e.ecx = (e.ecx & !0xf0ff) | (count - 1).min(255) | (ceil_log2(count) << 12);
        }
        0x8000_001e => {
            e.eax = index;
            e.ebx = index & 0xff; // core id, one thread per core
            e.ecx = 0;
        }
        _ => {}
    }
}

fn apply_pvm(e: &mut kvm_cpuid_entry2, amd: bool) {
    match (e.function, e.index) {
        (0x1, _) => {
            e.ecx &= !(leaf1_ecx::CX16
                | leaf1_ecx::POPCNT
                | leaf1_ecx::XSAVE
                | leaf1_ecx::OSXSAVE
                | leaf1_ecx::AVX);
        }
        (0x7, 0) => {
            e.ebx &= !(LEAF7_EBX_SMAP | LEAF7_EBX_AVX2);
        }
        (0xd, _) => {
            // No XSAVE: no XSAVE state components.
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        (0x8000_0008, _) if amd => {
            e.ebx |= LEAF_8000_0008_EBX_XSAVEERPTR;
        }
        _ => {}
    }
}

/// Entries whose registers differ between what was set and what the vCPU
/// reports: `(function, index, set [eax,ebx,ecx,edx], read back)`.
pub type CpuidDiff = (u32, u32, [u32; 4], [u32; 4]);

/// Compares a table that was set with the one read back.
pub fn diff(set: &CpuId, got: &CpuId) -> Vec<CpuidDiff> {
    let regs = |e: &kvm_cpuid_entry2| [e.eax, e.ebx, e.ecx, e.edx];
    set.as_slice()
        .iter()
        .filter_map(|s| {
            let g = got
                .as_slice()
                .iter()
                .find(|g| g.function == s.function && g.index == s.index)?;
            (regs(s) != regs(g)).then(|| (s.function, s.index, regs(s), regs(g)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn table(amd: bool) -> CpuId {
        let vendor = if amd {
            [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]
        } else {
            [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69] // GenuineIntel
        };
        CpuId::from_entries(&[
            entry(0, 0, vendor),
            entry(1, 0, [0x00a2_0f10, 0x0f00_0800, 0xf7f8_3203, 0x178b_fbff]),
            entry(7, 0, [0, 0xf1bf_03ab | LEAF7_EBX_SMAP, 0, 0]),
            entry(0xb, 0, [1, 2, 0x100, 9]),
            entry(0xb, 1, [4, 16, 0x201, 9]),
            entry(0xd, 0, [7, 0x340, 0x340, 0]),
            entry(0x8000_0008, 0, [0x3030, 0, 0x7007, 0]),
        ])
        .unwrap()
    }

    fn get(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn host_template_sets_topology_and_keeps_features() {
        let c = build(&table(false), CpuTemplate::Host, 3, 4);
        let l1 = get(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 3, "APIC id");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(l1.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(l1.ecx & leaf1_ecx::HYPERVISOR, 0);
        assert_ne!(l1.ecx & leaf1_ecx::POPCNT, 0, "host keeps POPCNT");
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(get(&c, 0xb, 0).edx, 3);
        assert_eq!(get(&c, 0xb, 1).ebx, 4);
        assert_eq!(get(&c, 0xb, 1).eax, 2);
        assert_eq!(get(&c, 0x8000_0008, 0).ecx & 0xff, 3);
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let c = build(&table(false), CpuTemplate::Host, 0, 1);
        assert_eq!(get(&c, 1, 0).edx & LEAF1_EDX_HTT, 0);
        assert_eq!(get(&c, 0xb, 1).eax, 0);
    }

    #[test]
    fn pvm_template_hides_what_the_emulator_cannot_run() {
        let c = build(&table(true), CpuTemplate::Pvm, 0, 1);
        let l1 = get(&c, 1, 0);
        for bit in [
            leaf1_ecx::CX16,
            leaf1_ecx::POPCNT,
            leaf1_ecx::XSAVE,
            leaf1_ecx::OSXSAVE,
            leaf1_ecx::AVX,
        ] {
            assert_eq!(l1.ecx & bit, 0, "bit {bit:#x} still set");
        }
        assert_eq!(get(&c, 7, 0).ebx & LEAF7_EBX_SMAP, 0);
        assert_eq!(get(&c, 0xd, 0).eax, 0);
        assert_ne!(
            get(&c, 0x8000_0008, 0).ebx & LEAF_8000_0008_EBX_XSAVEERPTR,
            0,
            "AMD shows XSAVEERPTR"
        );
    }

    #[test]
    fn pvm_template_leaves_intel_leaf_8000_0008_ebx() {
        let c = build(&table(false), CpuTemplate::Pvm, 0, 1);
        assert_eq!(get(&c, 0x8000_0008, 0).ebx, 0);
    }

    #[test]
    fn auto_resolves_by_host_flavor() {
        assert_eq!(
            CpuTemplate::resolve(CpuTemplateName::Auto, KvmFlavor::Pvm),
            CpuTemplate::Pvm
        );
        assert_eq!(
            CpuTemplate::resolve(CpuTemplateName::Auto, KvmFlavor::Hardware),
            CpuTemplate::Host
        );
        assert_eq!(
            CpuTemplate::resolve(CpuTemplateName::Pvm, KvmFlavor::Hardware),
            CpuTemplate::Pvm
        );
        assert_eq!(
            CpuTemplate::resolve(CpuTemplateName::Host, KvmFlavor::Pvm),
            CpuTemplate::Host
        );
        assert!(CpuTemplate::Pvm.kernel_args().contains("noint3selftest"));
        assert_eq!(CpuTemplate::Host.kernel_args(), "");
    }

    #[test]
    fn diff_reports_registers_put_back() {
        let set = build(&table(true), CpuTemplate::Pvm, 0, 1);
        let got = table(true);
        let d = diff(&set, &got);
        assert!(d.iter().any(|(f, _, s, g)| *f == 1 && s[2] != g[2]));
        assert!(diff(&set, &set).is_empty());
    }
}
