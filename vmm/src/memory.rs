//! Guest RAM: anonymous host memory split around the 32-bit MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory as runm-vmm uses it (no dirty bitmap).
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// A size that does not fit the address space of this host.
    #[error("guest memory size {0} MiB does not fit this host's address space")]
    TooLarge(u64),
}

/// The guest-physical RAM ranges for `size` bytes: below the MMIO gap first,
/// the rest from 4 GiB up.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

/// Maps `mib` MiB of guest RAM. The host pages are only committed as the guest
/// touches them (MAP_NORESERVE), so this costs little until the guest runs.
pub fn create(mib: u64) -> Result<GuestMemory, MemoryError> {
    let size = mib.checked_mul(1 << 20).ok_or(MemoryError::TooLarge(mib))?;
    let ranges = ram_ranges(size)
        .into_iter()
        .map(|(a, s)| usize::try_from(s).map(|s| (a, s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MemoryError::TooLarge(mib))?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn small_guests_have_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn big_guests_skip_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1], (GuestAddress(1 << 32), (4 << 30) - MMIO_GAP_START));
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }

    #[test]
    fn created_memory_has_the_requested_size() {
        let m = create(64).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
