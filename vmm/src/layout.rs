//! Where things live in guest physical memory and in the interrupt space.
//! Every guest address runm-vmm uses is named here, once.

/// The GDT, built by the VMM for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// The IDT (empty: the kernel installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// The kernel's `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT and one PD (first 1 GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory.
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line accepted (the kernel's COMMAND_LINE_SIZE on x86).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA: the MP table is placed just below 640 KiB, where the
/// kernel's MP-table scan looks for it.
pub const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory; 640 KiB .. 1 MiB is the legacy hole.
pub const LOW_MEM_END: u64 = 0xa0000;
/// Where "high" memory starts and where the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO gap below 4 GiB (devices live here, never RAM).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window; each device gets `MMIO_WINDOW_SIZE` bytes.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// The IOAPIC and local APIC, inside the gap (fixed by the architecture).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC base.
pub const APIC_START: u64 = 0xfee0_0000;

/// COM1: the console.
pub const SERIAL_PORT: u64 = 0x3f8;
/// COM1's legacy interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 keyboard controller (data 0x60 .. command/status 0x64).
pub const I8042_PORT: u64 = 0x60;
/// First interrupt line handed to virtio devices (5..=23 on the IOAPIC).
pub const IRQ_BASE: u32 = 5;
/// Last usable IOAPIC line.
pub const IRQ_MAX: u32 = 23;
