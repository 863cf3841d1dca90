//! The 16550A UART at COM1 (port 0x3f8, IRQ 4): the guest's console.
//! vm-superio emulates the registers; this wraps it for the bus and sends the
//! guest's output to a writer (stdout or a log file).

use std::io::Write;

use vm_superio::serial::NoEvents;

use crate::bus::BusDevice;
use crate::interrupt::EventFdTrigger;

/// Where the console's bytes go.
pub type ConsoleOut = Box<dyn Write + Send>;

/// The guest's serial console.
pub struct Serial {
    inner: vm_superio::Serial<EventFdTrigger, NoEvents, ConsoleOut>,
}

impl Serial {
    /// A UART raising `irq` and writing what the guest sends to `out`.
    pub fn new(irq: EventFdTrigger, out: ConsoleOut) -> Self {
        Self {
            inner: vm_superio::Serial::new(irq, out),
        }
    }

    /// Puts host input in the receive FIFO, as far as it has room; returns how
    /// many bytes were taken.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.inner.fifo_capacity();
        let n = input.len().min(room);
        if n == 0 {
            return 0;
        }
        self.inner.enqueue_raw_bytes(&input[..n]).unwrap_or(0)
    }

    /// Flushes buffered output (at VM exit).
    pub fn flush(&mut self) {
        let _ = self.inner.writer_mut().flush();
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte registers only; wider or out-of-range reads see 0xff.
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) if off < 8 => data[0] = self.inner.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), 1) = (u8::try_from(offset), data.len()) {
            if off < 8 {
                if let Err(e) = self.inner.write(off, data[0]) {
                    log::warn!("serial: write at offset {off} failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_bytes_reach_the_writer() {
        let out = Shared::default();
        let mut s = Serial::new(EventFdTrigger::new().unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_is_readable_and_raises_the_irq_when_enabled() {
        let irq = EventFdTrigger::new().unwrap();
        let evt = irq.try_clone().unwrap();
        let mut s = Serial::new(irq, Box::new(std::io::sink()));
        s.write(1, &[0x01]); // IER: received-data interrupt on
        assert_eq!(s.enqueue_input(b"x"), 1);
        assert_eq!(evt.0.read().unwrap(), 1);
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        s.read(0, &mut rbr);
        assert_eq!(rbr[0], b'x');
    }

    #[test]
    fn odd_widths_are_ignored_not_fatal() {
        let mut s = Serial::new(EventFdTrigger::new().unwrap(), Box::new(std::io::sink()));
        let mut wide = [0u8; 4];
        s.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        s.write(0, &[1, 2]);
        s.write(u64::MAX, &[1]);
    }
}
