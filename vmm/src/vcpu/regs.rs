//! The boot vCPU's initial architectural state, and the guest-memory tables that state points at.
//!
//! Two entry protocols are covered:
//! - the Linux x86 boot protocol's 64-bit entry: long mode with paging on, an identity map of the
//!   first GiB, flat segments, `rsi` = the zero page ([`boot_regs`], [`boot_sregs`],
//!   [`write_page_tables`], [`write_gdt_idt`]);
//! - the PVH entry: 32-bit protected mode with paging off, flat segments, `ebx` = the
//!   `hvm_start_info` address ([`pvh_regs`], [`pvh_sregs`], [`write_pvh_gdt_idt`]).
//!
//! Everything here is a pure function: it builds values or writes guest memory, and the vCPU code
//! hands the results to KVM. The addresses used come from [`crate::layout`].

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap};

use crate::layout;

/// Errors while writing the boot tables into guest memory.
#[derive(Debug, Error)]
pub enum RegsError {
    /// Guest memory does not cover a table's range.
    #[error("guest memory does not cover the {what} at {start:#x}..{end:#x}")]
    MemoryTooSmall {
        /// Which table.
        what: &'static str,
        /// First byte of the table.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Writing a table to guest memory failed.
    #[error("failed to write the {what} to guest memory")]
    Write {
        /// Which table.
        what: &'static str,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
}

// Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
/// CR0.PE: protected mode.
pub const X86_CR0_PE: u64 = 1 << 0;
/// CR0.ET: hardwired to 1 on every CPU since the 486; set so the guest reads what hardware reads.
pub const X86_CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const X86_CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required for long mode.
pub const X86_CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (set by the CPU when paging is enabled with LME; KVM wants it set
/// explicitly when the state is loaded directly).
pub const EFER_LMA: u64 = 1 << 10;

/// Bit 1 of RFLAGS is reserved and always reads as 1; every other flag starts clear (interrupts
/// off).
const RFLAGS_RESERVED: u64 = 0x2;
/// x87 control word after FNINIT: all exceptions masked, 64-bit precision, round to nearest.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR after reset: all SSE exceptions masked, round to nearest.
const MXCSR_DEFAULT: u32 = 0x1f80;

// Page-table entry bits (Intel SDM vol. 3, 4.5).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
/// In a page-directory entry: the entry maps a 2 MiB page instead of pointing at a page table.
const PTE_PAGE_SIZE: u64 = 1 << 7;
const PAGE_TABLE_SIZE: usize = 4096;
const ENTRIES_PER_TABLE: usize = 512;
const HUGE_PAGE_SHIFT: u32 = 21;

/// Access byte + flags nibble of a 64-bit code segment: present, DPL 0, code, execute/read,
/// accessed; granularity 4 KiB, long mode.
pub const GDT_CODE64_FLAGS: u16 = 0xa09b;
/// A flat data segment: present, DPL 0, data, read/write, accessed; 4 KiB granularity, 32-bit.
pub const GDT_DATA_FLAGS: u16 = 0xc093;
/// A 64-bit busy TSS, 4 KiB granularity: KVM refuses to enter with a TR that is not a busy TSS.
pub const GDT_TSS64_FLAGS: u16 = 0x808b;
/// A 32-bit code segment: like [`GDT_CODE64_FLAGS`] but default operand size 32 instead of L.
pub const GDT_CODE32_FLAGS: u16 = 0xc09b;
/// A 32-bit busy TSS with byte granularity (the PVH ABI's TR).
pub const GDT_TSS32_FLAGS: u16 = 0x008b;

/// GDT index of the code segment in both boot GDTs.
pub const GDT_CODE_INDEX: u8 = 1;
/// GDT index of the data segment in both boot GDTs.
pub const GDT_DATA_INDEX: u8 = 2;
/// GDT index of the TSS in both boot GDTs.
pub const GDT_TSS_INDEX: u8 = 3;

/// The GDT for the 64-bit entry: null, 64-bit code, flat data, TSS. The kernel replaces it early;
/// it only has to make the segment caches KVM loads consistent with memory.
pub const BOOT_GDT: [u64; 4] = [
    0,
    gdt_entry(GDT_CODE64_FLAGS, 0, 0xfffff),
    gdt_entry(GDT_DATA_FLAGS, 0, 0xfffff),
    gdt_entry(GDT_TSS64_FLAGS, 0, 0xfffff),
];

/// The GDT for the PVH entry: null, flat 32-bit code, flat data, a minimal TSS (the PVH ABI only
/// requires TR to hold a busy 32-bit TSS).
pub const PVH_GDT: [u64; 4] = [
    0,
    gdt_entry(GDT_CODE32_FLAGS, 0, 0xfffff),
    gdt_entry(GDT_DATA_FLAGS, 0, 0xfffff),
    gdt_entry(GDT_TSS32_FLAGS, 0, 0x67),
];

/// Size of the (empty) boot IDT: one zero entry. Exceptions before the kernel installs its own
/// IDT triple-fault the guest, which is what should happen that early.
const BOOT_IDT_SIZE: usize = 8;

/// Encodes a segment descriptor. `flags` holds the access byte in bits 0..8 and the
/// G/DB/L/AVL nibble in bits 12..16; `limit` is 20 bits, in 4 KiB units if G is set.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// One bit of a descriptor, as the 0/1 byte `kvm_segment` wants.
fn descriptor_bit(entry: u64, bit: u32) -> u8 {
    u8::from(entry & (1 << bit) != 0)
}

/// Decodes a descriptor into the segment-register cache KVM loads, with selector
/// `table_index * 8` (GDT, RPL 0). The limit is returned in bytes, scaled when G is set, because
/// that is what the hardware's segment cache holds (VMX checks it on entry).
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let base_low = (entry >> 16) & 0x00ff_ffff;
    let base_high = (entry >> 32) & 0xff00_0000;
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let g = descriptor_bit(entry, 55);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = descriptor_bit(entry, 47);
    kvm_segment {
        // Both parts are masked to 32 bits in total and the limit to 32 bits after scaling.
        base: base_low | base_high,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: descriptor_bit(entry, 54),
        s: descriptor_bit(entry, 44),
        l: descriptor_bit(entry, 53),
        g,
        avl: descriptor_bit(entry, 52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Fails unless guest memory covers `[start, start + len)`.
fn check_covered(
    mem: &GuestMemoryMmap,
    what: &'static str,
    start: u64,
    len: usize,
) -> Result<(), RegsError> {
    if GuestMemoryBackend::check_range(mem, GuestAddress(start), len) {
        Ok(())
    } else {
        Err(RegsError::MemoryTooSmall {
            what,
            start,
            end: start.saturating_add(len as u64),
        })
    }
}

fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    start: u64,
    bytes: &[u8],
) -> Result<(), RegsError> {
    mem.write_slice(bytes, GuestAddress(start))
        .map_err(|source| RegsError::Write { what, source })
}

/// Builds a 4 KiB table from its 512 entries, little-endian as the MMU reads them.
fn table_bytes(entry: impl Fn(usize) -> u64) -> Vec<u8> {
    (0..ENTRIES_PER_TABLE)
        .flat_map(|i| entry(i).to_le_bytes())
        .collect()
}

/// Writes identity-mapping page tables for the first GiB: the PML4 at [`layout::PML4_START`]
/// points to the PDPT at [`layout::PDPTE_START`], whose first entry points to the page directory
/// at [`layout::PDE_START`], which maps 512 2 MiB pages. That covers everything the kernel
/// touches before it builds its own tables (zero page, command line, the kernel image at 1 MiB).
///
/// Whole 4 KiB tables are written, so stale memory never leaves stray entries; nothing is written
/// unless all three tables fit in guest memory.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let tables = [
        ("pml4", layout::PML4_START),
        ("pdpt", layout::PDPTE_START),
        ("page directory", layout::PDE_START),
    ];
    for (what, start) in tables {
        check_covered(mem, what, start, PAGE_TABLE_SIZE)?;
    }

    let pml4 = table_bytes(|i| {
        if i == 0 {
            layout::PDPTE_START | PTE_PRESENT | PTE_WRITABLE
        } else {
            0
        }
    });
    let pdpt = table_bytes(|i| {
        if i == 0 {
            layout::PDE_START | PTE_PRESENT | PTE_WRITABLE
        } else {
            0
        }
    });
    let pd = table_bytes(|i| {
        ((i as u64) << HUGE_PAGE_SHIFT) | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE
    });
    write(mem, "pml4", layout::PML4_START, &pml4)?;
    write(mem, "pdpt", layout::PDPTE_START, &pdpt)?;
    write(mem, "page directory", layout::PDE_START, &pd)
}

/// Writes `gdt` at [`layout::BOOT_GDT_START`] and a zero IDT at [`layout::BOOT_IDT_START`], after
/// checking both fit.
fn write_descriptor_tables(mem: &GuestMemoryMmap, gdt: &[u64]) -> Result<(), RegsError> {
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    check_covered(mem, "gdt", layout::BOOT_GDT_START, gdt_bytes.len())?;
    check_covered(mem, "idt", layout::BOOT_IDT_START, BOOT_IDT_SIZE)?;
    write(mem, "gdt", layout::BOOT_GDT_START, &gdt_bytes)?;
    write(mem, "idt", layout::BOOT_IDT_START, &[0u8; BOOT_IDT_SIZE])
}

/// Writes [`BOOT_GDT`] at [`layout::BOOT_GDT_START`] and an empty IDT at
/// [`layout::BOOT_IDT_START`], for the 64-bit entry ([`boot_sregs`] points at them).
pub fn write_gdt_idt(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    write_descriptor_tables(mem, &BOOT_GDT)
}

/// Writes [`PVH_GDT`] at [`layout::BOOT_GDT_START`] and an empty IDT at
/// [`layout::BOOT_IDT_START`], for the PVH entry ([`pvh_sregs`] points at them).
pub fn write_pvh_gdt_idt(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    write_descriptor_tables(mem, &PVH_GDT)
}

/// The limit of a descriptor table of `bytes` bytes: its last byte's offset,
/// at most 0xffff (a 64 KiB table; ours are a few entries).
fn table_limit(bytes: usize) -> u16 {
    u16::try_from(bytes.saturating_sub(1)).unwrap_or(u16::MAX)
}

/// `base` with GDTR/IDTR pointing at the boot tables and every segment register loaded from
/// `gdt`: CS from the code entry, DS/ES/FS/GS/SS from the data entry, TR from the TSS.
fn with_segments(base: &kvm_sregs, gdt: &[u64; 4]) -> kvm_sregs {
    let mut sregs = *base;
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = table_limit(std::mem::size_of_val(gdt));
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = table_limit(BOOT_IDT_SIZE);

    let code = kvm_segment_from_gdt(gdt[usize::from(GDT_CODE_INDEX)], GDT_CODE_INDEX);
    let data = kvm_segment_from_gdt(gdt[usize::from(GDT_DATA_INDEX)], GDT_DATA_INDEX);
    let tss = kvm_segment_from_gdt(gdt[usize::from(GDT_TSS_INDEX)], GDT_TSS_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs
}

/// Special registers for the 64-bit entry, starting from the vCPU's current ones (so APIC base,
/// CR8, the LDT and pending interrupts are kept): segments from [`BOOT_GDT`], CR0 = PE|ET|PG,
/// CR3 = [`layout::PML4_START`], CR4 = PAE, EFER = LME|LMA. Requires [`write_gdt_idt`] and
/// [`write_page_tables`] to have filled guest memory.
pub fn boot_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut sregs = with_segments(base, &BOOT_GDT);
    // Set, not or-ed in: a fresh vCPU has CD|NW in CR0 (caches off), which the kernel would
    // otherwise run with until it rewrites CR0.
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = layout::PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers for the 64-bit entry at `entry`: interrupts off, the boot stack in
/// `rsp`/`rbp`, and the zero page address in `rsi` as the boot protocol requires.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START,
        ..Default::default()
    }
}

/// FPU state as after FNINIT, with the reset MXCSR; everything else zero.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    }
}

/// Special registers for the PVH entry, starting from the vCPU's current ones: flat 32-bit
/// segments from [`PVH_GDT`], CR0 = PE|ET (paging off), CR3 = CR4 = EFER = 0. Requires
/// [`write_pvh_gdt_idt`] to have filled guest memory.
pub fn pvh_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut sregs = with_segments(base, &PVH_GDT);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers for the PVH entry at `entry`: interrupts off and, per the PVH ABI, `ebx`
/// holding the physical address of the `hvm_start_info` structure.
pub fn pvh_regs(entry: u64, start_info: u64) -> kvm_regs {
    kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rbx: start_info,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
    }

    fn read_u64(m: &GuestMemoryMmap, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        m.read_slice(&mut b, GuestAddress(addr)).expect("read");
        u64::from_le_bytes(b)
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let m = mem(0x10_0000);
        // Stale bytes must not survive as stray entries.
        m.write_slice(
            &[0xaa; 3 * PAGE_TABLE_SIZE],
            GuestAddress(layout::PML4_START),
        )
        .expect("fill");
        write_page_tables(&m).expect("page tables");

        assert_eq!(read_u64(&m, layout::PML4_START), layout::PDPTE_START | 0x03);
        assert_eq!(read_u64(&m, layout::PDPTE_START), layout::PDE_START | 0x03);
        for i in 1..512u64 {
            assert_eq!(read_u64(&m, layout::PML4_START + i * 8), 0, "pml4[{i}]");
            assert_eq!(read_u64(&m, layout::PDPTE_START + i * 8), 0, "pdpt[{i}]");
        }
        for i in 0..512u64 {
            assert_eq!(
                read_u64(&m, layout::PDE_START + i * 8),
                (i << 21) | 0x83,
                "pd[{i}]"
            );
        }
        // The last 2 MiB page ends at exactly 1 GiB.
        assert_eq!(
            (read_u64(&m, layout::PDE_START + 511 * 8) & !0xfff) + (1 << 21),
            1 << 30
        );
    }

    #[test]
    fn page_tables_need_memory() {
        // Memory ends inside the page directory: error, and nothing half-written.
        let m = mem(usize::try_from(layout::PDE_START).expect("fits") + 0x800);
        let err = write_page_tables(&m).expect_err("too small");
        assert!(matches!(
            err,
            RegsError::MemoryTooSmall {
                what: "page directory",
                ..
            }
        ));
        assert_eq!(read_u64(&m, layout::PML4_START), 0);

        let m = mem(0x1000);
        assert!(matches!(
            write_page_tables(&m),
            Err(RegsError::MemoryTooSmall { what: "pml4", .. })
        ));
    }

    #[test]
    fn gdt_entry_encodings() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
        assert_eq!(gdt_entry(0xc09b, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(0x008b, 0, 0x67), 0x0000_8b00_0000_0067);
        // Base split across bytes 2..5 and 7, limit across bytes 0..2 and the low nibble of 6.
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xabcde),
            0x120a_9334_5678_bcde
        );
        // Bits outside the fields are dropped rather than corrupting neighbours.
        assert_eq!(
            gdt_entry(0x0f00, 0, 0xfff0_0000),
            0,
            "reserved flag bits and limit bits above 20 are ignored"
        );
        assert_eq!(BOOT_GDT[0], 0);
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn segment_decoding() {
        let cs = kvm_segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(cs.selector, 0x08);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff, "4 KiB granularity scales the limit");
        assert_eq!(
            (cs.type_, cs.present, cs.dpl, cs.db, cs.s, cs.l, cs.g, cs.avl),
            (0xb, 1, 0, 0, 1, 1, 1, 0)
        );
        assert_eq!(cs.unusable, 0);

        let ds = kvm_segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!(ds.selector, 0x10);
        assert_eq!(
            (ds.type_, ds.present, ds.db, ds.s, ds.l, ds.g),
            (0x3, 1, 1, 1, 0, 1)
        );

        let tr = kvm_segment_from_gdt(BOOT_GDT[3], 3);
        assert_eq!(tr.selector, 0x18);
        assert_eq!((tr.type_, tr.s, tr.present), (0xb, 0, 1), "busy tss");

        let odd = kvm_segment_from_gdt(gdt_entry(0x10f3, 0x1234_5678, 0xabcde), 5);
        assert_eq!(odd.base, 0x1234_5678);
        assert_eq!(odd.limit, 0xabcde, "byte granularity keeps the raw limit");
        assert_eq!(odd.selector, 0x28);
        assert_eq!((odd.dpl, odd.avl, odd.g), (3, 1, 0));

        let null = kvm_segment_from_gdt(0, 0);
        assert_eq!((null.present, null.unusable), (0, 1));
    }

    #[test]
    fn gdt_and_idt_in_memory() {
        let m = mem(0x10000);
        m.write_slice(&[0xff; 8], GuestAddress(layout::BOOT_IDT_START))
            .expect("fill");
        write_gdt_idt(&m).expect("gdt");
        for (i, e) in BOOT_GDT.iter().enumerate() {
            assert_eq!(read_u64(&m, layout::BOOT_GDT_START + i as u64 * 8), *e);
        }
        assert_eq!(read_u64(&m, layout::BOOT_IDT_START), 0);

        write_pvh_gdt_idt(&m).expect("pvh gdt");
        for (i, e) in PVH_GDT.iter().enumerate() {
            assert_eq!(read_u64(&m, layout::BOOT_GDT_START + i as u64 * 8), *e);
        }
        // The GDT must not run into the IDT.
        assert!(layout::BOOT_GDT_START + 8 * BOOT_GDT.len() as u64 <= layout::BOOT_IDT_START);
    }

    #[test]
    fn gdt_and_idt_need_memory() {
        let m = mem(0x510);
        assert!(matches!(
            write_gdt_idt(&m),
            Err(RegsError::MemoryTooSmall { what: "gdt", .. })
        ));
        assert_eq!(read_u64(&m, layout::BOOT_GDT_START), 0, "nothing written");
        let m = mem(0x524);
        assert!(matches!(
            write_pvh_gdt_idt(&m),
            Err(RegsError::MemoryTooSmall { what: "idt", .. })
        ));
    }

    fn fresh_sregs() -> kvm_sregs {
        // What KVM reports for a new vCPU, roughly: caches off, a local APIC base set.
        kvm_sregs {
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            cr8: 0,
            ..Default::default()
        }
    }

    #[test]
    fn long_mode_sregs() {
        let s = boot_sregs(&fresh_sregs());
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET | X86_CR0_PG);
        assert_eq!(s.cr0, 0x8000_0011);
        assert_eq!(s.cr3, layout::PML4_START);
        assert_eq!(s.cr4, X86_CR4_PAE);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.efer, 0x500);
        assert_eq!(s.apic_base, 0xfee0_0900, "apic base kept");

        assert_eq!(s.gdt.base, layout::BOOT_GDT_START);
        assert_eq!(s.gdt.limit, 31);
        assert_eq!(s.idt.base, layout::BOOT_IDT_START);
        assert_eq!(s.idt.limit, 7);

        assert_eq!(s.cs, kvm_segment_from_gdt(BOOT_GDT[1], 1));
        assert_eq!(s.cs.l, 1);
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(seg, kvm_segment_from_gdt(BOOT_GDT[2], 2));
        }
        assert_eq!(s.tr, kvm_segment_from_gdt(BOOT_GDT[3], 3));
    }

    #[test]
    fn pvh_sregs_are_flat_protected_mode() {
        let base = kvm_sregs {
            efer: EFER_LME,
            cr4: X86_CR4_PAE,
            ..fresh_sregs()
        };
        let s = pvh_sregs(&base);
        assert_ne!(s.cr0 & X86_CR0_PE, 0);
        assert_eq!(s.cr0 & X86_CR0_PG, 0, "paging off");
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!(s.apic_base, 0xfee0_0900, "apic base kept");
        assert_eq!(s.gdt.base, layout::BOOT_GDT_START);

        assert_eq!(s.cs.selector, 0x08);
        assert_eq!((s.cs.db, s.cs.l), (1, 0), "32-bit code");
        assert_eq!((s.cs.base, s.cs.limit), (0, 0xffff_ffff), "flat 4 GiB");
        for seg in [s.ds, s.es, s.ss] {
            assert_eq!(seg.selector, 0x10);
            assert_eq!((seg.base, seg.limit, seg.db), (0, 0xffff_ffff, 1));
        }
        assert_eq!(s.tr.selector, 0x18);
        assert_eq!((s.tr.type_, s.tr.limit), (0xb, 0x67), "busy 32-bit tss");
    }

    #[test]
    fn long_mode_regs() {
        let r = boot_regs(0x0100_0000);
        assert_eq!(r.rip, 0x0100_0000);
        assert_eq!(r.rflags, 0x2);
        assert_eq!(r.rsp, layout::BOOT_STACK_POINTER);
        assert_eq!(r.rbp, layout::BOOT_STACK_POINTER);
        assert_eq!(r.rsi, layout::ZERO_PAGE_START);
        assert_eq!((r.rax, r.rbx, r.rcx, r.rdx, r.rdi), (0, 0, 0, 0, 0));
    }

    #[test]
    fn pvh_regs_pass_start_info() {
        let r = pvh_regs(0x0100_0200, 0x6000);
        assert_eq!(r.rip, 0x0100_0200);
        assert_eq!(r.rbx, 0x6000);
        assert_eq!(r.rflags, 0x2);
        assert_eq!(r.rsi, 0);
    }

    #[test]
    fn fpu() {
        let f = boot_fpu();
        assert_eq!(f.fcw, 0x37f);
        assert_eq!(f.mxcsr, 0x1f80);
        assert_eq!(f.fsw, 0);
    }

    #[test]
    fn errors_are_lower_case() {
        let e = RegsError::MemoryTooSmall {
            what: "gdt",
            start: 0x500,
            end: 0x520,
        };
        assert_eq!(
            e.to_string(),
            "guest memory does not cover the gdt at 0x500..0x520"
        );
    }
}
