//! The entropy source behind virtio-rng: the host kernel's CSPRNG through
//! `getrandom(2)`, written straight into guest memory.

use std::io;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

/// Reads from `getrandom(2)` (the urandom pool, blocking only until it is
/// initialised at host boot). Implements `ReadVolatile`, so
/// `GuestMemory::read_exact_volatile_from` fills guest buffers directly.
#[derive(Debug, Default, Clone, Copy)]
pub struct Entropy;

impl ReadVolatile for Entropy {
    /// Fills all of `buf`.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        let base = guard.as_ptr();
        let len = buf.len();
        let mut done = 0usize;
        while done < len {
            // SAFETY: `base` points to `len` bytes of mapped guest memory that
            // stay mapped while `guard` lives (VolatileSlice's invariant), and
            // `done < len`, so the kernel writes at most `len - done` bytes
            // from `base + done`, inside that range.
            let n =
                unsafe { libc::getrandom(base.add(done).cast::<libc::c_void>(), len - done, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                // Large requests may be interrupted part-way; keep going.
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                buf.bitmap().mark_dirty(0, done);
                return Err(VolatileMemoryError::IOError(err));
            }
            // 0 <= n <= len - done.
            done += n.unsigned_abs();
        }
        buf.bitmap().mark_dirty(0, done);
        Ok(done)
    }
}
