//! Puts devices on the buses and wires their interrupts: the legacy serial
//! console and i8042 on port I/O, virtio-mmio devices in the MMIO gap, each
//! with its own window and interrupt line, announced on the kernel command line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use devices::bus::BusError;
use devices::interrupt::EventFdTrigger;
use devices::legacy::{Serial, I8042};
use vmm_sys_util::eventfd::EventFd;

use crate::layout::{I8042_PORT, SERIAL_IRQ, SERIAL_PORT};
use crate::vcpu::exit::IoBuses;
use crate::vm::{Vm, VmError};

/// Errors wiring devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An eventfd could not be made.
    #[error("cannot create an eventfd for {what}: {source}")]
    EventFd {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A device would overlap another.
    #[error("cannot place {what} on the bus: {source}")]
    Bus {
        what: &'static str,
        #[source]
        source: BusError,
    },
    /// KVM refused an irqfd/ioeventfd.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// The text Linux prints first when it panics.
const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// What the console showed that the VMM cares about.
#[derive(Debug, Default)]
pub struct ConsoleWatch {
    /// The guest kernel's panic line, if it printed one.
    pub panic: Option<String>,
}

/// The console's output path: forwards to the destination and watches lines
/// for a kernel panic, so a panicked guest (which then resets) is reported as
/// a failure rather than a clean reset.
struct ConsoleSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    watch: Arc<Mutex<ConsoleWatch>>,
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line);
                if let Some(pos) = line.find(PANIC_MARKER) {
                    let mut w = devices::bus::lock(&self.watch);
                    w.panic
                        .get_or_insert_with(|| line[pos..].trim_end().to_string());
                }
                self.line.clear();
            } else if self.line.len() < 512 {
                self.line.push(b);
            }
        }
        // Console output is best effort: a closed stdout must not stop the guest.
        let _ = self.out.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The VM's devices.
pub struct DeviceManager {
    /// The buses the vCPUs dispatch to.
    pub io: IoBuses,
    serial: Arc<Mutex<Serial>>,
    /// Signalled by the i8042 when the guest resets the machine.
    pub reset_evt: EventFd,
    /// Console findings.
    pub console_watch: Arc<Mutex<ConsoleWatch>>,
}

impl DeviceManager {
    /// Creates the legacy devices: COM1 writing to `console` with its IRQ wired
    /// through an irqfd, and the i8042 whose reset command signals `reset_evt`.
    pub fn new(vm: &Vm, console: Box<dyn Write + Send>) -> Result<Self, DeviceError> {
        let efd = |what| move |source| DeviceError::EventFd { what, source };
        let serial_irq = EventFdTrigger::new().map_err(efd("the serial IRQ"))?;
        vm.register_irqfd(&serial_irq.0, SERIAL_IRQ)?;
        let console_watch = Arc::new(Mutex::new(ConsoleWatch::default()));
        let sink = ConsoleSink {
            out: console,
            line: Vec::new(),
            watch: console_watch.clone(),
        };
        let serial = Arc::new(Mutex::new(Serial::new(serial_irq, Box::new(sink))));

        let reset = EventFdTrigger::new().map_err(efd("the i8042 reset"))?;
        let reset_evt = reset.0.try_clone().map_err(efd("the i8042 reset"))?;
        let i8042 = Arc::new(Mutex::new(I8042::new(reset)));

        let mut io = IoBuses::default();
        io.pio
            .insert(serial.clone(), SERIAL_PORT, 8)
            .map_err(|source| DeviceError::Bus {
                what: "the serial port",
                source,
            })?;
        io.pio
            .insert(i8042, I8042_PORT, 5)
            .map_err(|source| DeviceError::Bus {
                what: "the i8042",
                source,
            })?;
        Ok(DeviceManager {
            io,
            serial,
            reset_evt,
            console_watch,
        })
    }

    /// Flushes the console (at exit).
    pub fn flush_console(&self) {
        devices::bus::lock(&self.serial).flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn console_sink_forwards_and_catches_a_panic_line() {
        let out = Shared::default();
        let watch = Arc::new(Mutex::new(ConsoleWatch::default()));
        let mut sink = ConsoleSink {
            out: Box::new(out.clone()),
            line: Vec::new(),
            watch: watch.clone(),
        };
        for b in b"[ 1.0] ok\n[ 2.0] Kernel panic - not syncing: Attempted to kill init!\r\n" {
            sink.write_all(&[*b]).unwrap();
        }
        assert!(out.0.lock().unwrap().starts_with(b"[ 1.0] ok\n"));
        assert_eq!(
            watch.lock().unwrap().panic.as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init!")
        );
    }

    #[test]
    fn console_sink_without_panic_reports_none() {
        let watch = Arc::new(Mutex::new(ConsoleWatch::default()));
        let mut sink = ConsoleSink {
            out: Box::new(std::io::sink()),
            line: Vec::new(),
            watch: watch.clone(),
        };
        sink.write_all(b"Run /init as init process\nKernel panic - not\n")
            .unwrap();
        assert!(watch.lock().unwrap().panic.is_none());
    }
}
