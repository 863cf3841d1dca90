//! Interrupts as devices see them: something to trigger. `vmm` backs each line
//! with an eventfd registered as a KVM irqfd, so raising an interrupt is a
//! write from whatever thread the device runs on, with no VM exit.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// Bits of the virtio-mmio InterruptStatus register (virtio 1.2, 4.2.2).
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x1;
/// The device's configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x2;

/// An edge-triggered interrupt line.
pub trait IrqLine: Send + Sync {
    /// Raises the line once.
    fn trigger(&self) -> io::Result<()>;
}

impl IrqLine for EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// An eventfd that vm-superio's devices can trigger (serial IRQ, i8042 reset).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl EventFdTrigger {
    /// A new non-blocking eventfd trigger.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::new(libc::EFD_NONBLOCK)?))
    }

    /// Another handle on the same eventfd.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The interrupt of one virtio-mmio device: the InterruptStatus register the
/// driver reads and acknowledges, and the line that tells it to look.
pub struct VirtioInterrupt {
    status: AtomicU32,
    line: Arc<dyn IrqLine>,
}

impl VirtioInterrupt {
    /// An interrupt raising `line`.
    pub fn new(line: Arc<dyn IrqLine>) -> Self {
        Self {
            status: AtomicU32::new(0),
            line,
        }
    }

    /// The device put buffers in a used ring.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.signal(VIRTIO_MMIO_INT_VRING)
    }

    /// The device's configuration space changed.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.signal(VIRTIO_MMIO_INT_CONFIG)
    }

    fn signal(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.line.trigger()
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: the driver clears the bits it has handled.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_set_by_signals_and_cleared_by_ack() {
        let evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = VirtioInterrupt::new(evt.clone());
        irq.signal_used_queue().unwrap();
        irq.signal_config_change().unwrap();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(evt.read().unwrap(), 2);
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
    }
}
