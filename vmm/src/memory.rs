//! Guest RAM: host memory split around the 32-bit MMIO gap, either anonymous
//! and private to the VMM, or a sealed memfd mapped shared, which another
//! process (a vhost-user backend) can map too.

use std::fs::File;
use std::sync::Arc;

use rustix::fs::{MemfdFlags, SealFlags};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

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
    /// The memfd backing shared guest memory could not be made.
    #[error("cannot create a {mib} MiB memfd for shared guest memory: {source}")]
    Memfd {
        mib: u64,
        #[source]
        source: std::io::Error,
    },
}

/// What backs guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Anonymous private memory: only the VMM (and KVM) see it.
    Anonymous,
    /// One memfd, mapped shared: its fd can be handed to a vhost-user backend
    /// (SET_MEM_TABLE), which then reads and writes the same pages.
    SharedMemfd,
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

/// Maps `mib` MiB of anonymous guest RAM (see [`create_with`]).
pub fn create(mib: u64) -> Result<GuestMemory, MemoryError> {
    create_with(mib, Backing::Anonymous)
}

/// Maps `mib` MiB of guest RAM backed as `backing` asks. The host pages are
/// only committed as the guest touches them, so this costs little until the
/// guest runs.
pub fn create_with(mib: u64, backing: Backing) -> Result<GuestMemory, MemoryError> {
    let size = mib.checked_mul(1 << 20).ok_or(MemoryError::TooLarge(mib))?;
    let ranges = ram_ranges(size)
        .into_iter()
        .map(|(a, s)| usize::try_from(s).map(|s| (a, s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MemoryError::TooLarge(mib))?;
    let map_err = |source| MemoryError::Map { mib, source };
    match backing {
        Backing::Anonymous => GuestMemoryMmap::from_ranges(&ranges).map_err(map_err),
        Backing::SharedMemfd => {
            let file = Arc::new(sealed_memfd(size).map_err(|source| MemoryError::Memfd {
                mib,
                source: source.into(),
            })?);
            // The ranges are laid end to end in the one file.
            let mut offset = 0u64;
            let with_files = ranges.into_iter().map(|(addr, len)| {
                let at = offset;
                offset += len as u64;
                (addr, len, Some(FileOffset::from_arc(file.clone(), at)))
            });
            GuestMemoryMmap::from_ranges_with_files(with_files).map_err(map_err)
        }
    }
}

/// A memfd of `size` bytes whose size can no longer change: the backend gets
/// its fd, and a file shrunk under the VMM's mapping would turn guest memory
/// accesses into SIGBUS.
fn sealed_memfd(size: u64) -> rustix::io::Result<File> {
    let fd = rustix::fs::memfd_create(
        "runm-guest-ram",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(File::from(fd))
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
        assert!(m.iter().all(|r| r.file_offset().is_none()));
    }

    #[test]
    fn shared_memory_is_one_sealed_memfd_across_the_gap() {
        use std::os::fd::AsFd;
        use vm_memory::{Bytes, GuestMemoryRegion};

        let mib = (MMIO_GAP_START >> 20) + 64;
        let m = create_with(mib, Backing::SharedMemfd).unwrap();
        let regions: Vec<_> = m.iter().collect();
        assert_eq!(regions.len(), 2);
        let (lo, hi) = (
            regions[0].file_offset().unwrap(),
            regions[1].file_offset().unwrap(),
        );
        assert_eq!(lo.start(), 0);
        assert_eq!(hi.start(), MMIO_GAP_START);
        assert_eq!(
            lo.file().metadata().unwrap().len(),
            mib << 20,
            "one file holds both ranges"
        );
        let seals = rustix::fs::fcntl_get_seals(lo.file().as_fd()).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert!(lo.file().set_len(1 << 20).is_err(), "the size is sealed");
        // A guest write above the gap lands at its offset in the file.
        m.write_obj(0xabcd_u32, GuestAddress(MMIO_GAP_END + 8))
            .unwrap();
        let mut b = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(lo.file(), &mut b, MMIO_GAP_START + 8).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xabcd);
    }
}
