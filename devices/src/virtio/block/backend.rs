//! The storage behind a virtio-blk device: a raw image file.
//!
//! [`DiskImage`] owns the file, its capacity in 512-byte sectors and whether
//! it may be written. Data moves between the file and guest memory without a
//! bounce buffer: [`FileAt`] implements vm-memory's `ReadVolatile` and
//! `WriteVolatile` with `pread`/`pwrite` straight into or out of the guest's
//! mapped memory, so `GuestMemory::read_exact_volatile_from` and
//! `write_all_volatile_to` can drive it across memory regions.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

use super::SECTOR_SHIFT;

/// Errors from opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The image file could not be opened.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image's size could not be read.
    #[error("cannot read the size of the disk image: {0}")]
    Metadata(#[source] io::Error),
}

/// A raw disk image file.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    read_only: bool,
    nsectors: u64,
}

impl DiskImage {
    /// Opens the image at `path`, read-write unless `read_only`.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BackendError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BackendError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_file(file, read_only)
    }

    /// Uses an already open file. A trailing partial sector is not exposed:
    /// the capacity is the file size rounded down to whole sectors.
    pub fn from_file(file: File, read_only: bool) -> Result<Self, BackendError> {
        let len = file.metadata().map_err(BackendError::Metadata)?.len();
        Ok(Self {
            file,
            read_only,
            nsectors: len >> SECTOR_SHIFT,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The file, positioned for I/O at byte `offset`.
    pub fn at(&self, offset: u64) -> FileAt<'_> {
        FileAt {
            file: &self.file,
            offset,
        }
    }

    /// Writes the file's data back to stable storage (fdatasync).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A file cursor that reads and writes with `pread`/`pwrite`, so the file's
/// own position is never used and nothing is copied through a buffer.
#[derive(Debug)]
pub struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl FileAt<'_> {
    /// The byte offset the next read or write starts at.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    // Advances past `n` transferred bytes. `n` is at most a slice length, so
    // it fits in u64; the file offset cannot pass i64::MAX (pread refuses).
    fn advance(&mut self, n: usize) {
        self.offset = self.offset.saturating_add(n as u64);
    }

    fn file_offset(&self) -> Result<libc::off64_t, VolatileMemoryError> {
        libc::off64_t::try_from(self.offset).map_err(|_| {
            VolatileMemoryError::IOError(io::Error::from_raw_os_error(libc::EOVERFLOW))
        })
    }
}

impl ReadVolatile for FileAt<'_> {
    /// Fills `buf` from the file; stops short only at end of file.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        let base = guard.as_ptr();
        let len = buf.len();
        let mut done = 0usize;
        while done < len {
            let offset = self.file_offset()?;
            // SAFETY: `base` points to `len` bytes of mapped guest memory that
            // stay mapped while `guard` lives (VolatileSlice's invariant), and
            // `done < len`, so the kernel writes at most `len - done` bytes
            // from `base + done`, inside that range. The fd is open for the
            // lifetime of `self.file`. Guest memory may change concurrently,
            // which is fine for the kernel's copy.
            let n = unsafe {
                libc::pread64(
                    self.file.as_raw_fd(),
                    base.add(done).cast::<libc::c_void>(),
                    len - done,
                    offset,
                )
            };
            match n {
                0 => break,
                n if n < 0 => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    buf.bitmap().mark_dirty(0, done);
                    return Err(VolatileMemoryError::IOError(err));
                }
                n => {
                    // n > 0 here and at most `len - done`.
                    let n = n.unsigned_abs();
                    done += n;
                    self.advance(n);
                }
            }
        }
        buf.bitmap().mark_dirty(0, done);
        Ok(done)
    }
}

impl WriteVolatile for FileAt<'_> {
    /// Writes all of `buf` to the file.
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard();
        let base = guard.as_ptr();
        let len = buf.len();
        let mut done = 0usize;
        while done < len {
            let offset = self.file_offset()?;
            // SAFETY: `base` points to `len` readable bytes of mapped guest
            // memory that stay mapped while `guard` lives, and `done < len`,
            // so the kernel reads at most `len - done` bytes from
            // `base + done`, inside that range. The fd is open for the
            // lifetime of `self.file`.
            let n = unsafe {
                libc::pwrite64(
                    self.file.as_raw_fd(),
                    base.add(done).cast::<libc::c_void>(),
                    len - done,
                    offset,
                )
            };
            match n {
                0 => break,
                n if n < 0 => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(VolatileMemoryError::IOError(err));
                }
                n => {
                    let n = n.unsigned_abs();
                    done += n;
                    self.advance(n);
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{default_guest_memory, fill, read_bytes};
    use std::io::Write;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn capacity_rounds_down_to_whole_sectors() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0u8; 1024 + 100]).unwrap();
        let disk = DiskImage::from_file(f, true).unwrap();
        assert_eq!(disk.nsectors(), 2);
        assert!(disk.is_read_only());
    }

    #[test]
    fn reads_and_writes_guest_memory_directly() {
        let mut f = tempfile::tempfile().unwrap();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&pattern).unwrap();
        let disk = DiskImage::from_file(f, false).unwrap();
        let mem = default_guest_memory();

        mem.read_exact_volatile_from(GuestAddress(0x10_0000), &mut disk.at(512), 1024)
            .unwrap();
        assert_eq!(read_bytes(&mem, 0x10_0000, 1024), pattern[512..1536]);

        fill(&mem, 0x20_0000, 512, 0xab);
        let mut cursor = disk.at(1024);
        mem.write_all_volatile_to(GuestAddress(0x20_0000), &mut cursor, 512)
            .unwrap();
        assert_eq!(cursor.offset(), 1536);
        mem.read_exact_volatile_from(GuestAddress(0x30_0000), &mut disk.at(1024), 512)
            .unwrap();
        assert_eq!(read_bytes(&mem, 0x30_0000, 512), vec![0xab; 512]);
    }

    #[test]
    fn reading_past_the_end_is_an_error_not_garbage() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 512]).unwrap();
        let disk = DiskImage::from_file(f, false).unwrap();
        let mem = default_guest_memory();
        assert!(mem
            .read_exact_volatile_from(GuestAddress(0x10_0000), &mut disk.at(256), 512)
            .is_err());
    }

    #[test]
    fn open_reports_missing_files() {
        let err = DiskImage::open(Path::new("/nonexistent/image.raw"), true).unwrap_err();
        assert!(err.to_string().starts_with("cannot open disk image"));
    }
}
