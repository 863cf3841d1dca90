//! The virtio-mmio transport (virtio 1.2, 4.2, modern interface, version 2).
//!
//! [`MmioTransport`] owns one device's 0x1000-byte register window: feature
//! negotiation, the device status state machine, the configuration of each
//! queue until the driver sets DRIVER_OK, the InterruptStatus/ACK pair (through
//! [`VirtioInterrupt`]) and one notification eventfd per queue. The device
//! itself only sees its configuration space and, at DRIVER_OK, an
//! [`ActivateContext`].
//!
//! Wiring, done by the VMM: insert the transport on the MMIO bus at `base` with
//! length [`MMIO_LEN`]; register each of [`MmioTransport::queue_evts`] as a KVM
//! ioeventfd at `base + 0x50` (QueueNotify) with datamatch = queue index, and
//! the interrupt's eventfd as an irqfd; announce the device to the guest with
//! [`cmdline_entry`]. Without an ioeventfd a QueueNotify write still reaches
//! the transport, which then writes the eventfd itself.

use std::sync::{Arc, Mutex};

use log::{debug, error, info, warn};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateContext, GuestMemory, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::bus::{lock, BusDevice};
use crate::interrupt::VirtioInterrupt;

/// Size of one virtio-mmio register window.
pub const MMIO_LEN: u64 = 0x1000;

/// "virt" in little endian.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio interface.
pub const MMIO_VERSION: u32 = 2;
/// Our vendor ID: "runm" in little endian. Drivers do not look at it.
pub const VENDOR_ID: u32 = 0x6d6e_7572;

/// Register offsets (virtio 1.2, 4.2.2).
pub mod regs {
    /// MagicValue (R).
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version (R).
    pub const VERSION: u64 = 0x004;
    /// DeviceID (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// VendorID (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// DeviceFeatures (R), the 32 bits chosen by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures (W), the 32 bits chosen by DriverFeaturesSel.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify (W).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status (RW).
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDescHigh (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// QueueDriverLow (W): the available ring.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// QueueDriverHigh (W).
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// QueueDeviceLow (W): the used ring.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// QueueDeviceHigh (W).
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// SHMSel (W).
    pub const SHM_SEL: u64 = 0x0ac;
    /// SHMLenLow (R).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// SHMLenHigh (R).
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// SHMBaseLow (R).
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// SHMBaseHigh (R).
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// ConfigGeneration (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// The status values a driver goes through, in order (virtio 1.2, 3.1.1).
const INIT_SEQUENCE: [u32; 4] = [
    status::ACKNOWLEDGE,
    status::ACKNOWLEDGE | status::DRIVER,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
];

/// Errors from building a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A queue eventfd could not be created.
    #[error("cannot create a queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The device asked for a queue size virtio-queue cannot represent.
    #[error("device queue {index} has invalid maximum size {size}")]
    QueueSize {
        /// Queue index.
        index: usize,
        /// The maximum size the device reported.
        size: u16,
    },
    /// The device offers no queue at all.
    #[error("device has no queues")]
    NoQueues,
}

/// The kernel command-line entry that announces a virtio-mmio device at
/// `[base, base + size)` raising interrupt `irq`, e.g.
/// `virtio_mmio.device=4K@0xd0000000:5`.
pub fn cmdline_entry(base: u64, size: u64, irq: u32) -> String {
    // The kernel parses the size with memparse, so K/M suffixes or bytes.
    let size = if size != 0 && size & ((1 << 20) - 1) == 0 {
        format!("{}M", size >> 20)
    } else if size != 0 && size & ((1 << 10) - 1) == 0 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    };
    format!("virtio_mmio.device={size}@{base:#x}:{irq}")
}

/// One virtio device's register window on the MMIO bus.
pub struct MmioTransport {
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    device: Arc<Mutex<dyn VirtioDevice>>,
    device_type: u32,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    // The driver accepted a feature bit above 63, which nobody offers.
    high_features_accepted: bool,
    queue_sel: u32,
    shm_sel: u32,
    status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// A transport for `device`, which reads and writes `mem` and raises
    /// `interrupt`. Creates one non-blocking eventfd per queue of the device.
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<Self, MmioError> {
        let (device_type, max_sizes) = {
            let dev = lock(&device);
            (dev.device_type(), dev.queue_max_sizes().to_vec())
        };
        if max_sizes.is_empty() {
            return Err(MmioError::NoQueues);
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        let mut queue_evts = Vec::with_capacity(max_sizes.len());
        for (index, &size) in max_sizes.iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| MmioError::QueueSize { index, size })?);
            queue_evts.push(EventFd::new(libc::EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        Ok(Self {
            mem,
            interrupt,
            device,
            device_type,
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            high_features_accepted: false,
            queue_sel: 0,
            shm_sel: 0,
            status: 0,
            config_generation: 0,
        })
    }

    /// One notification eventfd per queue, by queue index. Register each as a
    /// KVM ioeventfd at `base + 0x50` with datamatch = its index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt this transport reports in InterruptStatus.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device behind this transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the driver set DRIVER_OK and the device accepted activation.
    pub fn is_activated(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// Tells the driver the device's configuration changed: bumps
    /// ConfigGeneration and raises a configuration-change interrupt.
    pub fn notify_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.signal_config_change() {
            error!("virtio-mmio {}: config interrupt: {e}", self.device_type);
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        let idx = usize::try_from(self.queue_sel).ok()?;
        self.queues.get_mut(idx)
    }

    // Queue registers may only change between FEATURES_OK and DRIVER_OK
    // (virtio 1.2, 3.1.1 step 7); later writes would race the device.
    fn queue_config_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0
            && self.status & (status::DRIVER_OK | status::FAILED | status::DEVICE_NEEDS_RESET) == 0
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.device_type,
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => {
                let features = lock(&self.device).device_features();
                match self.device_features_sel {
                    0 => (features & 0xffff_ffff) as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            // 0 means "no such queue" (virtio 1.2, 4.2.2.1).
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.status,
            // No shared memory regions: length and base read as all ones
            // (virtio 1.2, 4.2.2).
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                u32::MAX
            }
            regs::CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!(
                    "virtio-mmio {}: read of write-only or unknown register {offset:#x}",
                    self.device_type
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => self.write_queue(|q| q.set_size(size), value),
                // Queue sizes are 16-bit; a larger value would be cut to a
                // size the driver did not ask for.
                Err(_) => warn!(
                    "virtio-mmio {}: queue size {value:#x} out of range, ignored",
                    self.device_type
                ),
            },
            regs::QUEUE_READY => self.write_queue(|q| q.set_ready(value == 1), value),
            regs::QUEUE_DESC_LOW => {
                self.write_queue(|q| q.set_desc_table_address(Some(value), None), value)
            }
            regs::QUEUE_DESC_HIGH => {
                self.write_queue(|q| q.set_desc_table_address(None, Some(value)), value)
            }
            regs::QUEUE_DRIVER_LOW => {
                self.write_queue(|q| q.set_avail_ring_address(Some(value), None), value)
            }
            regs::QUEUE_DRIVER_HIGH => {
                self.write_queue(|q| q.set_avail_ring_address(None, Some(value)), value)
            }
            regs::QUEUE_DEVICE_LOW => {
                self.write_queue(|q| q.set_used_ring_address(Some(value), None), value)
            }
            regs::QUEUE_DEVICE_HIGH => {
                self.write_queue(|q| q.set_used_ring_address(None, Some(value)), value)
            }
            regs::QUEUE_NOTIFY => self.notify_queue(value),
            regs::INTERRUPT_ACK => self.interrupt.ack(value),
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => self.shm_sel = value,
            _ => debug!(
                "virtio-mmio {}: write of read-only or unknown register {offset:#x} = {value:#x}",
                self.device_type
            ),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are only accepted before FEATURES_OK (virtio 1.2, 3.1.1).
        if self.status != status::ACKNOWLEDGE | status::DRIVER {
            warn!(
                "virtio-mmio {}: driver features written in status {:#x}, ignored",
                self.device_type, self.status
            );
            return;
        }
        match self.driver_features_sel {
            0 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff_0000_0000) | u64::from(value)
            }
            1 => {
                self.driver_features =
                    (self.driver_features & 0x0000_0000_ffff_ffff) | (u64::from(value) << 32)
            }
            // No feature bits above 63 exist; a driver accepting one is
            // refused at FEATURES_OK.
            _ => self.high_features_accepted |= value != 0,
        }
    }

    fn device_features(&self) -> u64 {
        lock(&self.device).device_features()
    }

    fn write_queue(&mut self, f: impl FnOnce(&mut Queue), value: u32) {
        if !self.queue_config_allowed() {
            warn!(
                "virtio-mmio {}: queue register write {value:#x} in status {:#x}, ignored",
                self.device_type, self.status
            );
            return;
        }
        match self.selected_queue() {
            Some(q) => f(q),
            None => warn!(
                "virtio-mmio {}: write to nonexistent queue {}",
                self.device_type, self.queue_sel
            ),
        }
    }

    fn notify_queue(&mut self, value: u32) {
        // Reached only when no ioeventfd caught the write first.
        let evt = usize::try_from(value)
            .ok()
            .and_then(|i| self.queue_evts.get(i));
        match evt {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    error!(
                        "virtio-mmio {}: queue {value} notify: {e}",
                        self.device_type
                    );
                }
            }
            None => warn!(
                "virtio-mmio {}: notify of nonexistent queue {value}",
                self.device_type
            ),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // DEVICE_NEEDS_RESET belongs to the device; a driver writing back what
        // it read may echo it.
        let value = value & !status::DEVICE_NEEDS_RESET;
        let current = self.status & !status::DEVICE_NEEDS_RESET;
        if value & status::FAILED != 0 {
            info!(
                "virtio-mmio {}: driver set FAILED (status {value:#x})",
                self.device_type
            );
            self.status |= status::FAILED;
            return;
        }
        if value == current {
            return;
        }
        if self.status & (status::FAILED | status::DEVICE_NEEDS_RESET) != 0 {
            warn!(
                "virtio-mmio {}: status {value:#x} written in status {:#x}; reset first",
                self.device_type, self.status
            );
            return;
        }
        let from = INIT_SEQUENCE.iter().position(|&s| s == current);
        let to = INIT_SEQUENCE.iter().position(|&s| s == value);
        let (from, to) = match (from, to) {
            (Some(from), Some(to)) if to > from => (Some(from), to),
            (None, Some(to)) if current == 0 => (None, to),
            _ => {
                warn!(
                    "virtio-mmio {}: invalid status transition {:#x} -> {value:#x}",
                    self.device_type, self.status
                );
                return;
            }
        };
        // Walk the steps one at a time, so a driver that sets several bits
        // at once still goes through the feature check and activation.
        let first = from.map_or(0, |f| f + 1);
        for &next in &INIT_SEQUENCE[first..=to] {
            let ok = match next & !self.status {
                status::FEATURES_OK => self.features_ok(),
                status::DRIVER_OK => self.driver_ok(),
                _ => true,
            };
            if !ok {
                return;
            }
            self.status = next;
        }
    }

    // The driver's feature set must be a subset of what the device offers and
    // include VIRTIO_F_VERSION_1 (this is not a legacy device). Refusal leaves
    // FEATURES_OK clear, which the driver reads back (virtio 1.2, 3.1.1 step 6).
    fn features_ok(&mut self) -> bool {
        let offered = self.device_features();
        let unoffered = self.driver_features & !offered;
        if unoffered != 0 || self.high_features_accepted {
            warn!(
                "virtio-mmio {}: driver accepted features {unoffered:#x} that were not offered",
                self.device_type
            );
            return false;
        }
        if self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            warn!(
                "virtio-mmio {}: driver did not accept VIRTIO_F_VERSION_1",
                self.device_type
            );
            return false;
        }
        lock(&self.device).ack_features(self.driver_features);
        true
    }

    // Validates the queues and hands them to the device. On failure the device
    // enters DEVICE_NEEDS_RESET (with DRIVER_OK, as the driver asked) and the
    // driver gets a configuration-change interrupt (virtio 1.2, 2.1.2).
    fn driver_ok(&mut self) -> bool {
        match self.activate() {
            Ok(()) => {
                // The one trace of a guest driver having probed the device
                // (vsock and rng drivers print nothing in the guest).
                info!(
                    "virtio-mmio {}: driver activated the device (features {:#x})",
                    super::type_name(self.device_type),
                    self.driver_features
                );
                true
            }
            Err(e) => {
                error!("virtio-mmio {}: activation failed: {e}", self.device_type);
                self.status |= status::DRIVER_OK | status::DEVICE_NEEDS_RESET;
                if let Err(e) = self.interrupt.signal_config_change() {
                    error!("virtio-mmio {}: config interrupt: {e}", self.device_type);
                }
                false
            }
        }
    }

    fn activate(&mut self) -> Result<(), super::ActivateError> {
        use super::ActivateError::{BadQueues, Event};
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                return Err(BadQueues(format!(
                    "queue {i} does not fit in guest memory or is misaligned"
                )));
            }
            // The device gets its own copy; ours keeps answering register
            // reads.
            let copy =
                Queue::try_from(q.state()).map_err(|e| BadQueues(format!("queue {i}: {e}")))?;
            queues.push(copy);
        }
        let queue_evts = self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Event)?;
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            queue_evts,
        };
        lock(&self.device).activate(ctx)
    }

    // Status 0: back to the state after power-on (virtio 1.2, 2.4 and
    // 4.2.2.1: InterruptStatus and every QueueReady cleared).
    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        for evt in &self.queue_evts {
            // Drop notifications the old driver instance left behind.
            let _ = evt.read();
        }
        self.interrupt.ack(u32::MAX);
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.high_features_accepted = false;
        self.queue_sel = 0;
        self.shm_sel = 0;
        self.status = 0;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            data.fill(0);
            lock(&self.device).read_config(offset - regs::CONFIG, data);
            return;
        }
        // Registers are 32 bits wide and aligned (virtio 1.2, 4.2.2.2).
        if data.len() != 4 || offset & 3 != 0 {
            warn!(
                "virtio-mmio {}: {}-byte read at {offset:#x} not a register access",
                self.device_type,
                data.len()
            );
            data.fill(0);
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            lock(&self.device).write_config(offset - regs::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                "virtio-mmio {}: {}-byte write at {offset:#x} not a register access",
                self.device_type,
                data.len()
            );
            return;
        };
        if offset & 3 != 0 {
            warn!(
                "virtio-mmio {}: unaligned write at {offset:#x}",
                self.device_type
            );
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::VIRTIO_MMIO_INT_CONFIG;
    use crate::test_utils::{default_guest_memory, recording_interrupt, RecordingIrq, TestQueue};
    use crate::virtio::{ActivateError, TYPE_BLOCK};
    use vm_memory::GuestAddress;

    const FEATURE_X: u64 = 1 << 5;

    #[derive(Default)]
    struct Dummy {
        acked: Option<u64>,
        activations: usize,
        resets: usize,
        fail_activate: bool,
        queue_sizes: Vec<u16>,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            TYPE_BLOCK
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn device_features(&self) -> u64 {
            (1 << VIRTIO_F_VERSION_1) | FEATURE_X
        }
        fn ack_features(&mut self, features: u64) {
            self.acked = Some(features);
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::virtio::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            if self.fail_activate {
                return Err(ActivateError::Backend("no".into()));
            }
            assert_eq!(ctx.queues.len(), ctx.queue_evts.len());
            self.queue_sizes = ctx.queues.iter().map(|q| q.size()).collect();
            self.activations += 1;
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.acked = None;
        }
    }

    struct Fixture {
        t: MmioTransport,
        dev: Arc<Mutex<Dummy>>,
        irq: Arc<RecordingIrq>,
        mem: GuestMemory,
    }

    fn fixture() -> Fixture {
        let mem = default_guest_memory();
        let (interrupt, irq) = recording_interrupt();
        let dev = Arc::new(Mutex::new(Dummy::default()));
        let t = MmioTransport::new(mem.clone(), interrupt, dev.clone()).unwrap();
        Fixture { t, dev, irq, mem }
    }

    fn r(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport, features: u64) -> bool {
        w(t, regs::STATUS, status::ACKNOWLEDGE);
        w(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, regs::DRIVER_FEATURES_SEL, 0);
        w(t, regs::DRIVER_FEATURES, features as u32);
        w(t, regs::DRIVER_FEATURES_SEL, 1);
        w(t, regs::DRIVER_FEATURES, (features >> 32) as u32);
        w(t, regs::STATUS, INIT_SEQUENCE[2]);
        r(t, regs::STATUS) & status::FEATURES_OK != 0
    }

    fn setup_queue(t: &mut MmioTransport, sel: u32, tq: &TestQueue) {
        w(t, regs::QUEUE_SEL, sel);
        w(t, regs::QUEUE_NUM, u32::from(tq.size()));
        let split = |a: GuestAddress| (a.0 as u32, (a.0 >> 32) as u32);
        let (lo, hi) = split(tq.desc_table_addr());
        w(t, regs::QUEUE_DESC_LOW, lo);
        w(t, regs::QUEUE_DESC_HIGH, hi);
        let (lo, hi) = split(tq.avail_addr());
        w(t, regs::QUEUE_DRIVER_LOW, lo);
        w(t, regs::QUEUE_DRIVER_HIGH, hi);
        let (lo, hi) = split(tq.used_addr());
        w(t, regs::QUEUE_DEVICE_LOW, lo);
        w(t, regs::QUEUE_DEVICE_HIGH, hi);
        w(t, regs::QUEUE_READY, 1);
    }

    const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

    #[test]
    fn identification_registers() {
        let mut f = fixture();
        let t = &mut f.t;
        assert_eq!(r(t, regs::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(r(t, regs::VERSION), 2);
        assert_eq!(r(t, regs::DEVICE_ID), TYPE_BLOCK);
        assert_eq!(r(t, regs::VENDOR_ID), VENDOR_ID);
        assert_eq!(r(t, regs::QUEUE_NUM_MAX), 16);
        w(t, regs::QUEUE_SEL, 1);
        assert_eq!(r(t, regs::QUEUE_NUM_MAX), 8);
        w(t, regs::QUEUE_SEL, 2);
        assert_eq!(r(t, regs::QUEUE_NUM_MAX), 0, "no such queue");
        w(t, regs::QUEUE_SEL, u32::MAX);
        assert_eq!(r(t, regs::QUEUE_READY), 0);
        assert_eq!(r(t, regs::SHM_LEN_LOW), u32::MAX);
        assert_eq!(r(t, regs::CONFIG_GENERATION), 0);
        w(t, regs::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(t, regs::DEVICE_FEATURES), FEATURE_X as u32);
        w(t, regs::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(t, regs::DEVICE_FEATURES), 1);
        w(t, regs::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(t, regs::DEVICE_FEATURES), 0);
        // Register accesses that are not 32-bit and aligned read as zero.
        let mut b = [0xffu8; 2];
        t.read(regs::MAGIC_VALUE, &mut b);
        assert_eq!(b, [0, 0]);
        let mut b = [0xffu8; 4];
        t.read(regs::MAGIC_VALUE + 1, &mut b);
        assert_eq!(b, [0; 4]);
        // ... and writes like that are ignored.
        t.write(regs::STATUS, &[1]);
        t.write(regs::STATUS + 2, &1u32.to_le_bytes());
        assert_eq!(r(t, regs::STATUS), 0);
    }

    #[test]
    fn cmdline_entries() {
        assert_eq!(
            cmdline_entry(0xd000_0000, 0x1000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            cmdline_entry(0x1_0000_0000, 2 << 20, 12),
            "virtio_mmio.device=2M@0x100000000:12"
        );
        assert_eq!(
            cmdline_entry(0xd000_0000, 100, 5),
            "virtio_mmio.device=100@0xd0000000:5"
        );
    }

    #[test]
    fn features_are_negotiated_and_acked() {
        let mut f = fixture();
        assert!(negotiate(&mut f.t, VERSION_1 | FEATURE_X));
        assert_eq!(f.dev.lock().unwrap().acked, Some(VERSION_1 | FEATURE_X));
        assert_eq!(r(&mut f.t, regs::STATUS), INIT_SEQUENCE[2]);
        // Once FEATURES_OK is set the driver features are frozen.
        w(&mut f.t, regs::DRIVER_FEATURES_SEL, 0);
        w(&mut f.t, regs::DRIVER_FEATURES, 0);
        assert_eq!(f.t.driver_features, VERSION_1 | FEATURE_X);
    }

    #[test]
    fn unoffered_features_are_refused() {
        let mut f = fixture();
        assert!(!negotiate(&mut f.t, VERSION_1 | (1 << 7)));
        assert_eq!(
            r(&mut f.t, regs::STATUS),
            status::ACKNOWLEDGE | status::DRIVER
        );
        assert_eq!(f.dev.lock().unwrap().acked, None);
        // DRIVER_OK cannot follow a refused FEATURES_OK.
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        // Walking the steps re-runs the check, which still fails.
        assert_eq!(f.dev.lock().unwrap().activations, 0);

        // A legacy driver (no VERSION_1) is refused too.
        let mut f = fixture();
        assert!(!negotiate(&mut f.t, FEATURE_X));

        // So is a bit above 63.
        let mut f = fixture();
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE);
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut f.t, regs::DRIVER_FEATURES_SEL, 2);
        w(&mut f.t, regs::DRIVER_FEATURES, 1);
        w(&mut f.t, regs::DRIVER_FEATURES_SEL, 1);
        w(&mut f.t, regs::DRIVER_FEATURES, 1);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[2]);
        assert_eq!(r(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn status_must_follow_the_init_sequence() {
        let mut f = fixture();
        // DRIVER before ACKNOWLEDGE.
        w(&mut f.t, regs::STATUS, status::DRIVER);
        assert_eq!(r(&mut f.t, regs::STATUS), 0);
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE);
        // FEATURES_OK without DRIVER.
        w(
            &mut f.t,
            regs::STATUS,
            status::ACKNOWLEDGE | status::FEATURES_OK,
        );
        assert_eq!(r(&mut f.t, regs::STATUS), status::ACKNOWLEDGE);
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        // Clearing a bit is not allowed (only a reset clears).
        w(&mut f.t, regs::STATUS, status::DRIVER);
        assert_eq!(
            r(&mut f.t, regs::STATUS),
            status::ACKNOWLEDGE | status::DRIVER
        );
        // Queue registers are closed before FEATURES_OK.
        w(&mut f.t, regs::QUEUE_NUM, 4);
        w(&mut f.t, regs::QUEUE_READY, 1);
        assert_eq!(r(&mut f.t, regs::QUEUE_READY), 0);
        // FAILED is always accepted and blocks further progress.
        w(&mut f.t, regs::STATUS, status::FAILED);
        assert_eq!(
            r(&mut f.t, regs::STATUS),
            status::ACKNOWLEDGE | status::DRIVER | status::FAILED
        );
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[2]);
        assert_eq!(r(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);
        w(&mut f.t, regs::STATUS, 0);
        assert_eq!(r(&mut f.t, regs::STATUS), 0);
    }

    #[test]
    fn driver_ok_activates_with_the_configured_queues() {
        let mut f = fixture();
        let tq0 = TestQueue::new(&f.mem, GuestAddress(0), 16);
        let tq1 = TestQueue::new(&f.mem, GuestAddress(0x4000), 4);
        assert!(negotiate(&mut f.t, VERSION_1));
        setup_queue(&mut f.t, 0, &tq0);
        setup_queue(&mut f.t, 1, &tq1);
        w(&mut f.t, regs::QUEUE_SEL, 1);
        assert_eq!(r(&mut f.t, regs::QUEUE_READY), 1);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert_eq!(r(&mut f.t, regs::STATUS), INIT_SEQUENCE[3]);
        assert!(f.t.is_activated());
        {
            let dev = f.dev.lock().unwrap();
            assert_eq!(dev.activations, 1);
            assert_eq!(dev.queue_sizes, vec![16, 4]);
        }
        // Queue registers are frozen now.
        w(&mut f.t, regs::QUEUE_SEL, 0);
        w(&mut f.t, regs::QUEUE_READY, 0);
        assert_eq!(r(&mut f.t, regs::QUEUE_READY), 1);
        // Writing DRIVER_OK again does not activate twice.
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert_eq!(f.dev.lock().unwrap().activations, 1);
    }

    #[test]
    fn a_queue_size_beyond_16_bits_is_refused_not_cut() {
        let mut f = fixture();
        let tq0 = TestQueue::new(&f.mem, GuestAddress(0), 16);
        let tq1 = TestQueue::new(&f.mem, GuestAddress(0x4000), 4);
        assert!(negotiate(&mut f.t, VERSION_1));
        setup_queue(&mut f.t, 0, &tq0);
        setup_queue(&mut f.t, 1, &tq1);
        // 0x1_0002 would be 2 once cut to 16 bits: a size the driver never
        // set. Queue 1 keeps the 4 it was given.
        w(&mut f.t, regs::QUEUE_READY, 0);
        w(&mut f.t, regs::QUEUE_NUM, 0x1_0002);
        w(&mut f.t, regs::QUEUE_READY, 1);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert!(f.t.is_activated());
        assert_eq!(f.dev.lock().unwrap().queue_sizes, vec![16, 4]);
    }

    #[test]
    fn a_driver_may_set_several_status_bits_at_once() {
        let mut f = fixture();
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE);
        w(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut f.t, regs::DRIVER_FEATURES_SEL, 1);
        w(&mut f.t, regs::DRIVER_FEATURES, 1);
        // FEATURES_OK and DRIVER_OK together: both steps run, in order. No
        // queue is ready, which the dummy device accepts.
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert_eq!(r(&mut f.t, regs::STATUS), INIT_SEQUENCE[3]);
        let dev = f.dev.lock().unwrap();
        assert_eq!(dev.acked, Some(VERSION_1));
        assert_eq!(dev.activations, 1);
    }

    #[test]
    fn invalid_queue_sets_needs_reset_instead_of_activating() {
        let mut f = fixture();
        assert!(negotiate(&mut f.t, VERSION_1));
        let tq = TestQueue::new(&f.mem, GuestAddress(0), 16);
        setup_queue(&mut f.t, 0, &tq);
        // Move the used ring past the end of guest memory.
        w(&mut f.t, regs::QUEUE_DEVICE_LOW, 0);
        w(&mut f.t, regs::QUEUE_DEVICE_HIGH, 0x10);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        let s = r(&mut f.t, regs::STATUS);
        assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
        assert!(!f.t.is_activated());
        assert_eq!(f.dev.lock().unwrap().activations, 0);
        assert_eq!(r(&mut f.t, regs::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(f.irq.count(), 1);
        // Only a reset gets it out of there.
        w(&mut f.t, regs::STATUS, s | status::ACKNOWLEDGE);
        assert_eq!(r(&mut f.t, regs::STATUS), s);
        w(&mut f.t, regs::STATUS, 0);
        assert_eq!(r(&mut f.t, regs::STATUS), 0);
        assert_eq!(r(&mut f.t, regs::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn device_refusing_activation_needs_reset() {
        let mut f = fixture();
        f.dev.lock().unwrap().fail_activate = true;
        assert!(negotiate(&mut f.t, VERSION_1));
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert_ne!(r(&mut f.t, regs::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn reset_clears_transport_and_device_state() {
        let mut f = fixture();
        let tq = TestQueue::new(&f.mem, GuestAddress(0), 16);
        assert!(negotiate(&mut f.t, VERSION_1 | FEATURE_X));
        setup_queue(&mut f.t, 0, &tq);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        f.t.interrupt().signal_used_queue().unwrap();
        w(&mut f.t, regs::QUEUE_NOTIFY, 0);
        w(&mut f.t, regs::STATUS, 0);
        assert_eq!(r(&mut f.t, regs::STATUS), 0);
        assert_eq!(r(&mut f.t, regs::INTERRUPT_STATUS), 0);
        assert_eq!(r(&mut f.t, regs::QUEUE_READY), 0);
        assert_eq!(f.t.driver_features, 0);
        assert_eq!(f.dev.lock().unwrap().resets, 1);
        assert_eq!(f.dev.lock().unwrap().acked, None);
        // The stale notification was drained.
        assert!(f.t.queue_evts()[0].read().is_err());
        // The device can be brought up again.
        assert!(negotiate(&mut f.t, VERSION_1));
        setup_queue(&mut f.t, 0, &tq);
        w(&mut f.t, regs::STATUS, INIT_SEQUENCE[3]);
        assert_eq!(f.dev.lock().unwrap().activations, 2);
    }

    #[test]
    fn queue_notify_writes_the_queue_eventfd() {
        let mut f = fixture();
        assert_eq!(f.t.queue_evts().len(), 2);
        w(&mut f.t, regs::QUEUE_NOTIFY, 1);
        w(&mut f.t, regs::QUEUE_NOTIFY, 1);
        assert_eq!(f.t.queue_evts()[1].read().unwrap(), 2);
        assert!(f.t.queue_evts()[0].read().is_err());
        // Nonexistent queues are ignored.
        w(&mut f.t, regs::QUEUE_NOTIFY, 2);
        w(&mut f.t, regs::QUEUE_NOTIFY, u32::MAX);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut f = fixture();
        f.t.interrupt().signal_used_queue().unwrap();
        f.t.notify_config_change();
        assert_eq!(r(&mut f.t, regs::INTERRUPT_STATUS), 3);
        assert_eq!(r(&mut f.t, regs::CONFIG_GENERATION), 1);
        w(&mut f.t, regs::INTERRUPT_ACK, 1);
        assert_eq!(r(&mut f.t, regs::INTERRUPT_STATUS), 2);
        assert_eq!(f.irq.count(), 2);
    }

    #[test]
    fn config_space_is_forwarded_at_any_width() {
        let mut f = fixture();
        let mut b = [0u8; 2];
        f.t.read(regs::CONFIG + 3, &mut b);
        assert_eq!(b, [4, 5]);
        let mut b = [0xaau8; 4];
        f.t.read(regs::CONFIG + 6, &mut b);
        assert_eq!(b, [7, 8, 0, 0], "bytes past the config space read as zero");
        let mut b = [0xaau8; 8];
        f.t.read(0xff8, &mut b);
        assert_eq!(b, [0; 8]);
        f.t.write(regs::CONFIG + 1, &[9]);
        assert_eq!(f.dev.lock().unwrap().writes, vec![(1, vec![9])]);
    }

    #[test]
    fn bad_device_queue_sizes_are_errors() {
        struct Odd;
        impl VirtioDevice for Odd {
            fn device_type(&self) -> u32 {
                0
            }
            fn queue_max_sizes(&self) -> &[u16] {
                &[3]
            }
            fn device_features(&self) -> u64 {
                0
            }
            fn ack_features(&mut self, _: u64) {}
            fn read_config(&self, _: u64, _: &mut [u8]) {}
            fn write_config(&mut self, _: u64, _: &[u8]) {}
            fn activate(&mut self, _: ActivateContext) -> Result<(), ActivateError> {
                Ok(())
            }
            fn reset(&mut self) {}
        }
        let (interrupt, _) = recording_interrupt();
        let err = MmioTransport::new(default_guest_memory(), interrupt, Arc::new(Mutex::new(Odd)))
            .err()
            .unwrap();
        assert!(matches!(err, MmioError::QueueSize { index: 0, size: 3 }));
    }
}
