//! Loading the guest kernel (ELF vmlinux or bzImage) and the initrd into guest
//! memory, and the command line next to them.

use std::fs::File;
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::bootparams::InitrdRange;
use super::cmdline::Cmdline;
use crate::layout::{CMDLINE_START, HIMEM_START, MMIO_GAP_START};
use crate::memory::GuestMemory;

/// Errors loading the kernel, initrd or command line.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Neither an ELF nor a bzImage.
    #[error("kernel {path} is neither an x86_64 ELF vmlinux nor a bzImage ({elf}; {bz})")]
    NotAKernel {
        path: String,
        elf: String,
        bz: String,
    },
    /// A kernel that does not fit in guest memory.
    #[error("kernel {path} does not fit in guest memory: {reason}")]
    KernelTooBig { path: String, reason: String },
    /// The initrd cannot be read.
    #[error("cannot read initrd {path}: {source}")]
    Initrd {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No room for the initrd between the kernel and the end of low memory.
    #[error("initrd {path} ({size} bytes) does not fit in guest memory above the kernel; give the VM more memory")]
    InitrdTooBig { path: String, size: u64 },
    /// The command line could not be written.
    #[error("cannot write the kernel command line into guest memory")]
    Cmdline,
}

/// Where the kernel landed and how to enter it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage's setup header (None for an ELF vmlinux).
    pub setup_header: Option<setup_header>,
}

/// Loads `path` at its preferred address, trying ELF first, then bzImage.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let name = path.display().to_string();
    let mut f = File::open(path).map_err(|source| LoaderError::OpenKernel {
        path: name.clone(),
        source,
    })?;
    let elf_err = match Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(e) => e,
    };
    if is_fit_error(&elf_err) {
        return Err(LoaderError::KernelTooBig {
            path: name,
            reason: elf_err.to_string(),
        });
    }
    match BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => Ok(LoadedKernel {
            // The 64-bit entry of a bzImage is 0x200 past where it is loaded.
            entry: r.kernel_load.unchecked_add(0x200),
            end: r.kernel_end,
            setup_header: r.setup_header,
        }),
        Err(bz) if is_fit_error(&bz) => Err(LoaderError::KernelTooBig {
            path: name,
            reason: bz.to_string(),
        }),
        Err(bz) => Err(LoaderError::NotAKernel {
            path: name,
            elf: elf_err.to_string(),
            bz: bz.to_string(),
        }),
    }
}

// A valid image that does not fit is a memory-size problem, not a format one.
fn is_fit_error(e: &linux_loader::loader::Error) -> bool {
    let s = e.to_string().to_lowercase();
    s.contains("memory") || s.contains("overflow") || s.contains("address")
}

/// Places the initrd as high as possible in low memory (the boot protocol's
/// 32-bit fields, below the MMIO gap), above the kernel.
pub fn load_initrd(
    mem: &GuestMemory,
    path: &Path,
    kernel_end: u64,
) -> Result<InitrdRange, LoaderError> {
    let name = path.display().to_string();
    let err = |source| LoaderError::Initrd {
        path: name.clone(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    let low_end = (mem.last_addr().raw_value() + 1).min(MMIO_GAP_START);
    let too_big = || LoaderError::InitrdTooBig {
        path: name.clone(),
        size,
    };
    let addr = low_end.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end || size == 0 {
        return Err(too_big());
    }
    mem.read_exact_volatile_from(
        GuestAddress(addr),
        &mut f,
        usize::try_from(size).map_err(|_| too_big())?,
    )
    .map_err(|e| LoaderError::Initrd {
        path: name.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(InitrdRange { addr, size })
}

/// Writes the NUL-terminated command line at `CMDLINE_START`.
pub fn write_cmdline(mem: &GuestMemory, cmdline: &Cmdline) -> Result<(), LoaderError> {
    mem.write_slice(&cmdline.to_bytes_with_nul(), GuestAddress(CMDLINE_START))
        .map_err(|_| LoaderError::Cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_that_is_no_kernel_is_named() {
        let mem = crate::memory::create(32).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0x42; 4096]).unwrap();
        let e = load_kernel(&mem, f.path()).unwrap_err();
        assert!(matches!(e, LoaderError::NotAKernel { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("neither an x86_64 ELF vmlinux nor a bzImage"));
    }

    #[test]
    fn an_empty_file_is_no_kernel() {
        let mem = crate::memory::create(32).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(load_kernel(&mem, f.path()).is_err());
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let mem = crate::memory::create(32).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        let r = load_initrd(&mem, f.path(), 0x100_0000).unwrap();
        assert_eq!(r.size, 5000);
        assert_eq!(r.addr & 0xfff, 0);
        assert!(r.addr + r.size <= 32 << 20);
        assert!(r.addr >= (32 << 20) - 5000 - 0x1000);
        let mut back = [0u8; 5000];
        mem.read_slice(&mut back, GuestAddress(r.addr)).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }

    #[test]
    fn initrd_that_does_not_fit_is_an_error() {
        let mem = crate::memory::create(16).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![1u8; 4 << 20]).unwrap();
        // Kernel ends at 14 MiB: 4 MiB of initrd cannot go above it in 16 MiB.
        let e = load_initrd(&mem, f.path(), 14 << 20).unwrap_err();
        assert!(matches!(e, LoaderError::InitrdTooBig { .. }), "{e}");
    }

    #[test]
    fn cmdline_is_written_nul_terminated() {
        let mem = crate::memory::create(16).unwrap();
        write_cmdline(&mem, &Cmdline::new("console=ttyS0").unwrap()).unwrap();
        let mut b = [0xffu8; 14];
        mem.read_slice(&mut b, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&b, b"console=ttyS0\0");
    }
}
