//! Address buses: a map from guest address ranges (port I/O or MMIO) to the
//! device that answers there. The vCPU threads dispatch their I/O exits here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus. `offset` is relative to the base the
/// device was inserted at; `data` is as wide as the guest's access.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// A device range of length zero.
    #[error("bus range at {0:#x} has zero length")]
    ZeroLength(u64),
    /// The new range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
    /// `base + len` does not fit in the address space.
    #[error("bus range {base:#x}+{len:#x} overflows the address space")]
    Overflow { base: u64, len: u64 },
}

/// A device shared between the bus and whoever else drives it (an event loop).
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedBusDevice,
}

/// Non-overlapping address ranges, each answered by one device.
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by base address, so the device for an address is the last range
    // starting at or below it.
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength(base));
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overflow { base, len })?;
        if let Some((&other, e)) = self.ranges.range(..end).next_back() {
            if other + e.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64, size: usize) -> Option<(u64, &SharedBusDevice)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        if offset.checked_add(size as u64)? <= e.len {
            Some((offset, &e.device))
        } else {
            None
        }
    }

    /// Dispatches a read; `false` if no device covers `[addr, addr + data.len())`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; `false` if no device covers `[addr, addr + data.len())`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, carrying on if another thread panicked while holding it:
/// device state stays consistent per access, and a VMM that stops answering
/// I/O would hang the guest instead of reporting the failure.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offset() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 5);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().last_write, Some((0, vec![0x41])));
        assert!(!bus.read(0x3f7, &mut b));
        assert!(!bus.read(0x400, &mut b));
    }

    #[test]
    fn access_straddling_the_end_is_refused() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x1000, 0x10)
            .unwrap();
        let mut b = [0u8; 4];
        assert!(bus.read(0x100c, &mut b));
        assert!(!bus.read(0x100d, &mut b));
        assert!(!bus.write(u64::MAX, &[0, 0]));
    }

    #[test]
    fn overlaps_and_bad_ranges_are_errors() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d(), 0x1000, 0x1000).unwrap();
        assert!(matches!(
            bus.insert(d(), 0x1800, 0x10),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0x0800, 0x1000),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(
            bus.insert(d(), 0x5000, 0),
            Err(BusError::ZeroLength(0x5000))
        );
        assert!(matches!(
            bus.insert(d(), u64::MAX, 2),
            Err(BusError::Overflow { .. })
        ));
        bus.insert(d(), 0x2000, 0x1000).unwrap();
        bus.insert(d(), 0x0, 0x1000).unwrap();
    }
}
