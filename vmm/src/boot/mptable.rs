//! The Intel MultiProcessor Specification 1.4 table: how the guest kernel learns how many vCPUs
//! it has, their local APIC ids, where the IOAPIC is and how the ISA interrupt lines reach it.
//!
//! The guest runs without ACPI, so this table is the only description of the interrupt topology.
//! Linux looks for the floating pointer in the first KiB of the EBDA (among other places), so the
//! whole table is written starting at [`layout::EBDA_START`] and must end below
//! [`layout::LOW_MEM_END`].
//!
//! This module owns the table's binary layout and its placement; the e820 map that keeps the
//! guest from using this memory as RAM is written by the boot-params code.

use std::mem::size_of;

use thiserror::Error;
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap,
};

use crate::layout;

/// Most vCPUs an MP table can describe here. APIC ids are 8 bits, 0xff is the broadcast id, and
/// the IOAPIC takes the id right after the last vCPU, so 254 is the last usable vCPU count.
pub const MAX_CPUS: u8 = 254;

/// Errors while building or writing the MP table.
#[derive(Debug, Error)]
pub enum MptableError {
    /// The guest needs at least one vCPU.
    #[error("an mp table needs at least one vcpu")]
    NoCpus,
    /// More vCPUs than 8-bit APIC ids can name.
    #[error("{0} vcpus cannot be described by an mp table (at most {max})", max = MAX_CPUS)]
    TooManyCpus(u8),
    /// An interrupt line beyond the IOAPIC's last pin.
    #[error("irq {0} is past the last ioapic pin ({max})", max = layout::IRQ_MAX)]
    IrqOutOfRange(u32),
    /// The table would run into the legacy hole at 640 KiB.
    #[error("the mp table ({size} bytes at {start:#x}) would end past the end of low memory ({end:#x})", end = layout::LOW_MEM_END)]
    TableTooLarge {
        /// Where the table starts.
        start: u64,
        /// Its size in bytes.
        size: usize,
    },
    /// Guest memory does not cover the table's range.
    #[error("guest memory does not cover the mp table at {start:#x}..{end:#x}")]
    MemoryTooSmall {
        /// First byte of the table.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Writing the table to guest memory failed.
    #[error("failed to write the mp table to guest memory")]
    Write(#[source] GuestMemoryError),
}

// Signatures and revisions (MP spec 1.4, chapter 4).
const FLOATING_SIGNATURE: [u8; 4] = *b"_MP_";
const CONFIG_SIGNATURE: [u8; 4] = *b"PCMP";
const SPEC_REVISION: u8 = 4;
const OEM_ID: [u8; 8] = *b"RUNM    ";
const PRODUCT_ID: [u8; 12] = *b"RUNM-VMM    ";

// Entry types (MP spec table 4-3).
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

// Interrupt types (MP spec table 4-8).
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Polarity and trigger mode "conform to the bus": ISA lines are edge-triggered, active high,
/// which is how the VMM's irqfds drive them.
const INT_FLAGS_CONFORM: u16 = 0;

const CPU_FLAG_ENABLED: u8 = 1 << 0;
const CPU_FLAG_BOOT_PROCESSOR: u8 = 1 << 1;
const IOAPIC_FLAG_ENABLED: u8 = 1 << 0;

/// Version reported by KVM's in-kernel local APIC (an integrated xAPIC).
const LAPIC_VERSION: u8 = 0x14;
/// Version reported by KVM's in-kernel IOAPIC.
const IOAPIC_VERSION: u8 = 0x11;
/// Family 6 in the CPUID signature format; the kernel takes the real value from CPUID.
const CPU_SIGNATURE: u32 = 6 << 8;
/// CPUID.1:EDX bits FPU (0) and APIC (9): the minimum the spec expects an MP processor to have.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const ISA_BUS_ID: u8 = 0;
const ISA_BUS_TYPE: [u8; 6] = *b"ISA   ";
/// Destination "all local APICs" for local interrupt entries.
const ALL_LOCAL_APICS: u8 = 0xff;

/// MP floating pointer structure (MP spec 4.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpFloatingPointer {
    signature: [u8; 4],
    config_table: u32,
    /// Length in 16-byte paragraphs.
    length: u8,
    spec_rev: u8,
    checksum: u8,
    /// 0: a configuration table is present (no default configuration).
    feature1: u8,
    /// Bit 7 clear: virtual-wire mode, no IMCR.
    feature2: u8,
    feature3_5: [u8; 3],
}

/// MP configuration table header (MP spec 4.2).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpConfigHeader {
    signature: [u8; 4],
    /// Length of the base table, header included.
    length: u16,
    spec_rev: u8,
    checksum: u8,
    oem_id: [u8; 8],
    product_id: [u8; 12],
    oem_table: u32,
    oem_table_size: u16,
    entry_count: u16,
    lapic_address: u32,
    ext_table_length: u16,
    ext_table_checksum: u8,
    reserved: u8,
}

/// Processor entry (MP spec 4.3.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpProcessor {
    entry_type: u8,
    apic_id: u8,
    apic_version: u8,
    flags: u8,
    signature: u32,
    features: u32,
    reserved: [u32; 2],
}

/// Bus entry (MP spec 4.3.2).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpBus {
    entry_type: u8,
    bus_id: u8,
    bus_type: [u8; 6],
}

/// I/O APIC entry (MP spec 4.3.3).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpIoApic {
    entry_type: u8,
    apic_id: u8,
    apic_version: u8,
    flags: u8,
    address: u32,
}

/// I/O and local interrupt assignment entries share one layout (MP spec 4.3.4 and 4.3.5).
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
struct MpInterrupt {
    entry_type: u8,
    int_type: u8,
    flags: u16,
    source_bus: u8,
    source_irq: u8,
    dest_apic_id: u8,
    dest_pin: u8,
}

// SAFETY: each struct is repr(C, packed) and made only of integers and integer arrays, so it has
// no padding, every bit pattern is a valid value, and it holds no pointers or references.
unsafe impl ByteValued for MpFloatingPointer {}
// SAFETY: as above: packed, integers only, no padding, any bit pattern valid.
unsafe impl ByteValued for MpConfigHeader {}
// SAFETY: as above: packed, integers only, no padding, any bit pattern valid.
unsafe impl ByteValued for MpProcessor {}
// SAFETY: as above: packed, integers only, no padding, any bit pattern valid.
unsafe impl ByteValued for MpBus {}
// SAFETY: as above: packed, integers only, no padding, any bit pattern valid.
unsafe impl ByteValued for MpIoApic {}
// SAFETY: as above: packed, integers only, no padding, any bit pattern valid.
unsafe impl ByteValued for MpInterrupt {}

// The table stores these as 32-bit addresses; they are architectural and below 4 GiB, and the
// assertions turn an edit of `layout` that breaks that into a build error.
const _: () = assert!(layout::IOAPIC_START <= u32::MAX as u64);
const _: () = assert!(layout::APIC_START <= u32::MAX as u64);
const _: () = assert!(layout::LOW_MEM_END <= u32::MAX as u64);
#[allow(clippy::cast_possible_truncation)] // Checked by the assertion above.
const IOAPIC_ADDRESS: u32 = layout::IOAPIC_START as u32;
#[allow(clippy::cast_possible_truncation)] // Checked by the assertion above.
const LAPIC_ADDRESS: u32 = layout::APIC_START as u32;
// Linux only scans the first KiB of the EBDA, on 16-byte boundaries, for the floating pointer.
const _: () = assert!(layout::EBDA_START & 0xf == 0);

// The sizes the spec fixes; a wrong field type would silently corrupt the table.
const _: () = assert!(size_of::<MpFloatingPointer>() == 16);
const _: () = assert!(size_of::<MpConfigHeader>() == 44);
const _: () = assert!(size_of::<MpProcessor>() == 20);
const _: () = assert!(size_of::<MpBus>() == 8);
const _: () = assert!(size_of::<MpIoApic>() == 8);
const _: () = assert!(size_of::<MpInterrupt>() == 8);

/// Bytes needed for the floating pointer plus the configuration table.
fn table_size(num_cpus: u8, irq_max: u8) -> usize {
    let num_irqs = usize::from(irq_max) + 1;
    size_of::<MpFloatingPointer>()
        + size_of::<MpConfigHeader>()
        + size_of::<MpProcessor>() * usize::from(num_cpus)
        + size_of::<MpBus>()
        + size_of::<MpIoApic>()
        + size_of::<MpInterrupt>() * num_irqs
        + 2 * size_of::<MpInterrupt>()
}

/// The value that makes `bytes` plus itself sum to zero modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Validates the arguments and lays the whole table out in a buffer that belongs at
/// [`layout::EBDA_START`]. Building it in one buffer lets the caller check the guest memory range
/// once and write it in one go, so a failure never leaves half a table behind.
fn build(num_cpus: u8, irq_max: u32) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    if num_cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    if irq_max > layout::IRQ_MAX {
        return Err(MptableError::IrqOutOfRange(irq_max));
    }
    // Cannot fail after the IRQ_MAX check; the pin and source fields are 8 bits.
    let irq_max = u8::try_from(irq_max).map_err(|_| MptableError::IrqOutOfRange(irq_max))?;

    let start = layout::EBDA_START;
    let size = table_size(num_cpus, irq_max);
    let too_large = || MptableError::TableTooLarge { start, size };
    let end = u64::try_from(size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .ok_or_else(too_large)?;
    if end > layout::LOW_MEM_END {
        return Err(too_large());
    }

    let ioapic_id = num_cpus;
    let mut entries: Vec<u8> = Vec::with_capacity(size);
    let mut entry_count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        entry_count += 1;
    };

    for cpu in 0..num_cpus {
        let mut flags = CPU_FLAG_ENABLED;
        if cpu == 0 {
            flags |= CPU_FLAG_BOOT_PROCESSOR;
        }
        push(
            MpProcessor {
                entry_type: ENTRY_PROCESSOR,
                apic_id: cpu,
                apic_version: LAPIC_VERSION,
                flags,
                signature: CPU_SIGNATURE,
                features: CPU_FEATURES,
                reserved: [0; 2],
            }
            .as_slice(),
        );
    }
    push(
        MpBus {
            entry_type: ENTRY_BUS,
            bus_id: ISA_BUS_ID,
            bus_type: ISA_BUS_TYPE,
        }
        .as_slice(),
    );
    push(
        MpIoApic {
            entry_type: ENTRY_IOAPIC,
            apic_id: ioapic_id,
            apic_version: IOAPIC_VERSION,
            flags: IOAPIC_FLAG_ENABLED,
            address: IOAPIC_ADDRESS,
        }
        .as_slice(),
    );
    // Every ISA line goes straight to the IOAPIC pin of the same number, as INT. KVM's default
    // routing sends GSI n to IOAPIC pin n (and to the PIC for n < 16), so this includes the PIT
    // on line 0; Linux then finds the timer on pin 0 and needs no ExtINT through-the-8259 path.
    for irq in 0..=irq_max {
        push(
            MpInterrupt {
                entry_type: ENTRY_IO_INTERRUPT,
                int_type: INT_TYPE_INT,
                flags: INT_FLAGS_CONFORM,
                source_bus: ISA_BUS_ID,
                source_irq: irq,
                dest_apic_id: ioapic_id,
                dest_pin: irq,
            }
            .as_slice(),
        );
    }
    // Local APIC wiring of a PC in virtual-wire mode: LINT0 takes the 8259's ExtINT, LINT1 NMI.
    for (int_type, pin) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        push(
            MpInterrupt {
                entry_type: ENTRY_LOCAL_INTERRUPT,
                int_type,
                flags: INT_FLAGS_CONFORM,
                source_bus: ISA_BUS_ID,
                source_irq: 0,
                dest_apic_id: ALL_LOCAL_APICS,
                dest_pin: pin,
            }
            .as_slice(),
        );
    }

    let config_len = size_of::<MpConfigHeader>() + entries.len();
    let mut header = MpConfigHeader {
        signature: CONFIG_SIGNATURE,
        length: u16::try_from(config_len).map_err(|_| too_large())?,
        spec_rev: SPEC_REVISION,
        checksum: 0,
        oem_id: OEM_ID,
        product_id: PRODUCT_ID,
        oem_table: 0,
        oem_table_size: 0,
        entry_count,
        lapic_address: LAPIC_ADDRESS,
        ext_table_length: 0,
        ext_table_checksum: 0,
        reserved: 0,
    };
    let mut config = Vec::with_capacity(config_len);
    config.extend_from_slice(header.as_slice());
    config.extend_from_slice(&entries);
    header.checksum = checksum(&config);
    config[..size_of::<MpConfigHeader>()].copy_from_slice(header.as_slice());

    // The configuration table follows the floating pointer directly.
    let config_addr = start + size_of::<MpFloatingPointer>() as u64;
    let mut floating = MpFloatingPointer {
        signature: FLOATING_SIGNATURE,
        // Below LOW_MEM_END (checked above), so this always fits.
        config_table: u32::try_from(config_addr).map_err(|_| too_large())?,
        length: 1,
        spec_rev: SPEC_REVISION,
        checksum: 0,
        feature1: 0,
        feature2: 0,
        feature3_5: [0; 3],
    };
    floating.checksum = checksum(floating.as_slice());

    let mut table = Vec::with_capacity(size);
    table.extend_from_slice(floating.as_slice());
    table.extend_from_slice(&config);
    debug_assert_eq!(table.len(), size);
    Ok(table)
}

/// Writes an MP floating pointer and configuration table at [`layout::EBDA_START`] describing
/// `num_cpus` vCPUs (APIC ids `0..num_cpus`, the first one the boot processor), one ISA bus, the
/// IOAPIC at [`layout::IOAPIC_START`] with APIC id `num_cpus`, ISA lines `0..=irq_max` routed to
/// the IOAPIC pin of the same number, and LINT0 = ExtINT, LINT1 = NMI on every local APIC.
///
/// Nothing is written unless the whole table fits in guest memory below
/// [`layout::LOW_MEM_END`].
pub fn setup_mptable(
    mem: &GuestMemoryMmap,
    num_cpus: u8,
    irq_max: u32,
) -> Result<(), MptableError> {
    let table = build(num_cpus, irq_max)?;
    let start = GuestAddress(layout::EBDA_START);
    if !GuestMemoryBackend::check_range(mem, start, table.len()) {
        return Err(MptableError::MemoryTooSmall {
            start: layout::EBDA_START,
            end: layout::EBDA_START + table.len() as u64,
        });
    }
    mem.write_slice(&table, start).map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
    }

    fn low_mem() -> GuestMemoryMmap {
        mem(usize::try_from(layout::LOW_MEM_END).expect("fits"))
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn irq_max_u8() -> u8 {
        u8::try_from(layout::IRQ_MAX).expect("fits")
    }

    /// The number of vCPUs whose table just fits below LOW_MEM_END with all IRQs.
    fn max_fitting_cpus() -> u8 {
        let fixed = table_size(0, irq_max_u8());
        let room = usize::try_from(layout::LOW_MEM_END - layout::EBDA_START).expect("fits");
        u8::try_from((room - fixed) / size_of::<MpProcessor>()).expect("fits")
    }

    struct Parsed {
        floating: MpFloatingPointer,
        header: MpConfigHeader,
        config_bytes: Vec<u8>,
        cpus: Vec<MpProcessor>,
        buses: Vec<MpBus>,
        ioapics: Vec<MpIoApic>,
        io_ints: Vec<MpInterrupt>,
        local_ints: Vec<MpInterrupt>,
    }

    /// Reads the table back the way a guest kernel would: floating pointer, then the header it
    /// points to, then entries by type.
    fn parse(m: &GuestMemoryMmap) -> Parsed {
        let floating: MpFloatingPointer = m
            .read_obj(GuestAddress(layout::EBDA_START))
            .expect("floating pointer");
        let config_addr = u64::from(floating.config_table);
        let header: MpConfigHeader = m.read_obj(GuestAddress(config_addr)).expect("header");
        let mut config_bytes = vec![0u8; usize::from(header.length)];
        m.read_slice(&mut config_bytes, GuestAddress(config_addr))
            .expect("config table");

        let mut p = Parsed {
            floating,
            header,
            config_bytes: config_bytes.clone(),
            cpus: vec![],
            buses: vec![],
            ioapics: vec![],
            io_ints: vec![],
            local_ints: vec![],
        };
        let mut off = size_of::<MpConfigHeader>();
        for _ in 0..header.entry_count {
            let bytes = &config_bytes[off..];
            match bytes[0] {
                ENTRY_PROCESSOR => {
                    p.cpus
                        .push(*MpProcessor::from_slice(&bytes[..20]).expect("cpu"));
                    off += 20;
                }
                ENTRY_BUS => {
                    p.buses.push(*MpBus::from_slice(&bytes[..8]).expect("bus"));
                    off += 8;
                }
                ENTRY_IOAPIC => {
                    p.ioapics
                        .push(*MpIoApic::from_slice(&bytes[..8]).expect("ioapic"));
                    off += 8;
                }
                ENTRY_IO_INTERRUPT => {
                    p.io_ints
                        .push(*MpInterrupt::from_slice(&bytes[..8]).expect("int"));
                    off += 8;
                }
                ENTRY_LOCAL_INTERRUPT => {
                    p.local_ints
                        .push(*MpInterrupt::from_slice(&bytes[..8]).expect("lint"));
                    off += 8;
                }
                t => panic!("unknown entry type {t}"),
            }
        }
        assert_eq!(off, config_bytes.len(), "entries fill the table exactly");
        p
    }

    #[test]
    fn floating_pointer_is_valid() {
        let m = low_mem();
        setup_mptable(&m, 2, layout::IRQ_MAX).expect("mptable");
        let p = parse(&m);
        let f = p.floating;
        assert_eq!(f.signature, *b"_MP_");
        assert_eq!(sum(f.as_slice()), 0, "floating pointer checksum");
        assert_eq!({ f.length }, 1);
        assert_eq!({ f.spec_rev }, 4);
        assert_eq!({ f.feature1 }, 0, "a configuration table is present");
        assert_eq!(
            u64::from(f.config_table),
            layout::EBDA_START + 16,
            "config table right after the pointer"
        );
        // Linux scans the first KiB at 639 KiB (where the EBDA starts) on 16-byte boundaries.
        assert_eq!(layout::EBDA_START, 639 * 1024);
        assert_eq!(layout::EBDA_START % 16, 0);
    }

    #[test]
    fn config_table_is_valid() {
        let m = low_mem();
        setup_mptable(&m, 4, layout::IRQ_MAX).expect("mptable");
        let p = parse(&m);
        let h = p.header;
        assert_eq!(h.signature, *b"PCMP");
        assert_eq!({ h.spec_rev }, 4);
        assert_eq!(sum(&p.config_bytes), 0, "config table checksum");
        assert_eq!(u64::from(h.lapic_address), layout::APIC_START);
        assert_eq!({ h.ext_table_length }, 0);
        assert_eq!(
            usize::from(h.entry_count),
            4 + 1 + 1 + (layout::IRQ_MAX as usize + 1) + 2
        );
    }

    #[test]
    fn processors_match_vcpus() {
        for n in [1u8, 2, 7, max_fitting_cpus()] {
            let m = low_mem();
            setup_mptable(&m, n, layout::IRQ_MAX).expect("mptable");
            let p = parse(&m);
            assert_eq!(p.cpus.len(), usize::from(n));
            for (i, cpu) in p.cpus.iter().enumerate() {
                assert_eq!(usize::from(cpu.apic_id), i, "apic id = index");
                assert_ne!(cpu.flags & CPU_FLAG_ENABLED, 0);
                assert_eq!(
                    cpu.flags & CPU_FLAG_BOOT_PROCESSOR != 0,
                    i == 0,
                    "only cpu 0 is the bsp"
                );
            }
        }
    }

    #[test]
    fn bus_ioapic_and_interrupts() {
        let m = low_mem();
        let cpus = 3;
        setup_mptable(&m, cpus, layout::IRQ_MAX).expect("mptable");
        let p = parse(&m);

        assert_eq!(p.buses.len(), 1);
        assert_eq!(p.buses[0].bus_type, *b"ISA   ");

        assert_eq!(p.ioapics.len(), 1);
        let ioapic = p.ioapics[0];
        assert_eq!(ioapic.apic_id, cpus, "ioapic id follows the last cpu");
        assert_eq!(u64::from(ioapic.address), layout::IOAPIC_START);
        assert_ne!(ioapic.flags & IOAPIC_FLAG_ENABLED, 0);

        assert_eq!(p.io_ints.len(), layout::IRQ_MAX as usize + 1);
        for (i, int) in p.io_ints.iter().enumerate() {
            assert_eq!(int.int_type, INT_TYPE_INT);
            assert_eq!(usize::from(int.source_irq), i);
            assert_eq!(usize::from(int.dest_pin), i);
            assert_eq!(int.source_bus, p.buses[0].bus_id);
            assert_eq!(int.dest_apic_id, cpus);
        }

        assert_eq!(p.local_ints.len(), 2);
        assert_eq!(p.local_ints[0].int_type, INT_TYPE_EXTINT);
        assert_eq!(p.local_ints[0].dest_pin, 0, "lint0");
        assert_eq!(p.local_ints[1].int_type, INT_TYPE_NMI);
        assert_eq!(p.local_ints[1].dest_pin, 1, "lint1");
        for l in &p.local_ints {
            assert_eq!(l.dest_apic_id, 0xff, "all local apics");
        }
    }

    #[test]
    fn fewer_irqs() {
        let m = low_mem();
        setup_mptable(&m, 1, 4).expect("mptable");
        let p = parse(&m);
        assert_eq!(p.io_ints.len(), 5);
        assert_eq!(sum(&p.config_bytes), 0);
    }

    #[test]
    fn table_ends_below_low_mem_end() {
        let n = max_fitting_cpus();
        assert!(n >= 1);
        let size = table_size(n, irq_max_u8());
        assert!(layout::EBDA_START + size as u64 <= layout::LOW_MEM_END);
        let table = build(n, layout::IRQ_MAX).expect("fits");
        assert_eq!(table.len(), size);

        // The written bytes stop where the table says they do.
        let m = low_mem();
        setup_mptable(&m, n, layout::IRQ_MAX).expect("mptable");
        let p = parse(&m);
        let end = u64::from(p.floating.config_table) + u64::from(p.header.length);
        assert!(end <= layout::LOW_MEM_END);
    }

    #[test]
    fn too_many_cpus() {
        let m = low_mem();
        assert!(matches!(
            setup_mptable(&m, 255, layout::IRQ_MAX),
            Err(MptableError::TooManyCpus(255))
        ));
        // Accepted by the APIC id range, but the table would cross LOW_MEM_END.
        assert!(matches!(
            setup_mptable(&m, max_fitting_cpus() + 1, layout::IRQ_MAX),
            Err(MptableError::TableTooLarge { .. })
        ));
        assert!(matches!(
            setup_mptable(&m, MAX_CPUS, layout::IRQ_MAX),
            Err(MptableError::TableTooLarge { .. })
        ));
    }

    #[test]
    fn zero_cpus() {
        let m = low_mem();
        assert!(matches!(
            setup_mptable(&m, 0, layout::IRQ_MAX),
            Err(MptableError::NoCpus)
        ));
    }

    #[test]
    fn irq_past_ioapic() {
        let m = low_mem();
        assert!(matches!(
            setup_mptable(&m, 1, layout::IRQ_MAX + 1),
            Err(MptableError::IrqOutOfRange(_))
        ));
        assert!(matches!(
            setup_mptable(&m, 1, u32::MAX),
            Err(MptableError::IrqOutOfRange(_))
        ));
    }

    #[test]
    fn memory_too_small() {
        // Memory ends inside the table.
        let m = mem(usize::try_from(layout::EBDA_START).expect("fits") + 64);
        assert!(matches!(
            setup_mptable(&m, 1, layout::IRQ_MAX),
            Err(MptableError::MemoryTooSmall { .. })
        ));
        // Nothing was written, not even the part that would have fit.
        let mut head = [0u8; 64];
        m.read_slice(&mut head, GuestAddress(layout::EBDA_START))
            .expect("read");
        assert_eq!(head, [0u8; 64]);

        // Memory does not reach the EBDA at all.
        let m = mem(0x1000);
        assert!(matches!(
            setup_mptable(&m, 1, layout::IRQ_MAX),
            Err(MptableError::MemoryTooSmall { .. })
        ));
    }

    #[test]
    fn errors_are_lower_case() {
        let errors = [
            MptableError::NoCpus,
            MptableError::TooManyCpus(255),
            MptableError::IrqOutOfRange(99),
            MptableError::TableTooLarge { start: 0, size: 0 },
            MptableError::MemoryTooSmall { start: 0, end: 0 },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.starts_with(char::is_uppercase), "{s}");
        }
    }
}
