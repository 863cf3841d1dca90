//! Puts devices on the buses and wires their interrupts: the legacy serial
//! console and i8042 on port I/O, virtio-mmio devices in the MMIO gap, each
//! with its own window and interrupt line, announced on the kernel command line.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use devices::bus::BusError;
use devices::interrupt::{EventFdTrigger, VirtioInterrupt};
use devices::legacy::{Serial, I8042};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::fs::Fs;
use devices::virtio::mmio::{cmdline_entry, MmioTransport};
use devices::virtio::net::{Net, Tap};
use devices::virtio::rng::Rng;
use devices::virtio::vsock::Vsock;
use devices::virtio::VirtioDevice;
use event_manager::MutEventSubscriber;
use vmm_sys_util::eventfd::EventFd;

use crate::config::{parse_mac, VmConfig};
use crate::layout::{
    I8042_PORT, IRQ_BASE, IRQ_MAX, MMIO_WINDOW_SIZE, SERIAL_IRQ, SERIAL_PORT, VIRTIO_MMIO_START,
};
use crate::memory::GuestMemory;
use crate::vcpu::exit::IoBuses;
use crate::vm::{Vm, VmError};

/// Offset of the QueueNotify register in a virtio-mmio window.
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

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
    /// More virtio devices than interrupt lines.
    #[error("no interrupt line left for {0} (at most {n} virtio devices)", n = IRQ_MAX - IRQ_BASE + 1)]
    NoIrq(String),
    /// A device's backend could not be set up (image, socket, tap).
    #[error("{what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The transport refused the device.
    #[error("virtio-mmio transport for {what}: {source}")]
    Transport {
        what: String,
        #[source]
        source: devices::virtio::mmio::MmioError,
    },
}

fn backend<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> DeviceError {
    let what = what.into();
    move |e| DeviceError::Backend {
        what,
        source: Box::new(e),
    }
}

/// Taps the config names by descriptor (`tap_fd`), taken over before
/// runm-vmm opens anything of its own: at that point every open descriptor
/// beyond the standard streams was inherited, so a number that was not is
/// an error, never one of runm-vmm's own files.
#[derive(Debug, Default)]
pub struct InheritedTaps(HashMap<i32, Tap>);

impl InheritedTaps {
    /// Claims every `tap_fd` of a validated `config` (which has no
    /// descriptor twice and none below 3).
    pub fn claim(config: &VmConfig) -> Result<Self, DeviceError> {
        let mut taps = HashMap::new();
        for fd in config.nets.iter().filter_map(|n| n.tap_fd) {
            let what = format!("net fd {fd}");
            // SAFETY: F_GETFD takes no argument and touches no memory.
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(DeviceError::Backend {
                    what,
                    source: format!("descriptor {fd} was not inherited (it is not open)").into(),
                });
            }
            // SAFETY: `fd` is open (checked above), at least 3, named once in
            // the config, and nothing in this process opened it: claims run
            // before runm-vmm opens files of its own, so it was inherited for
            // this device, which takes sole ownership here.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let tap = Tap::from_fd(owned).map_err(backend(what))?;
            taps.insert(fd, tap);
        }
        Ok(Self(taps))
    }
}

/// A device the event loop drives.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

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
    /// Devices for the event loop, in the order they were added.
    pub subscribers: Vec<Subscriber>,
    /// `virtio_mmio.device=` entries for the kernel command line.
    pub cmdline_entries: Vec<String>,
    /// The virtio-fs devices, whose watchdog threads start once the VMM
    /// is jailed ([`DeviceManager::start_fs_watchdogs`]).
    fs: Vec<Arc<Mutex<Fs>>>,
    virtio_count: u32,
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
            subscribers: Vec::new(),
            cmdline_entries: Vec::new(),
            fs: Vec::new(),
            virtio_count: 0,
        })
    }

    /// Creates the virtio devices `config` asks for, in a fixed order (disks,
    /// net, vsock, rng, fs), so a disk's name in the guest (vda, vdb, ...)
    /// follows its place in the config. A virtio-fs device connects to its
    /// backend here: a backend that is missing or does not answer fails the
    /// build, before the guest runs.
    pub fn add_configured_virtio(
        &mut self,
        vm: &Vm,
        mem: &GuestMemory,
        config: &VmConfig,
        inherited: &mut InheritedTaps,
    ) -> Result<(), DeviceError> {
        for (i, d) in config.disks.iter().enumerate() {
            let id = format!("vd{}", char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)));
            let block = Block::new(BlockConfig {
                id: id.clone(),
                path: d.path.clone(),
                read_only: d.read_only,
                serial: None,
            })
            .map_err(backend(format!("disk {}", d.path.display())))?;
            self.add_virtio(vm, mem, &id, Arc::new(Mutex::new(block)))?;
        }
        for n in &config.nets {
            let what = format!("net {}", n.label());
            let tap = match (n.tap_fd, &n.tap) {
                (Some(fd), _) => inherited
                    .0
                    .remove(&fd)
                    .ok_or_else(|| DeviceError::Backend {
                        what: what.clone(),
                        source: format!("descriptor {fd} was not claimed at start").into(),
                    })?,
                (None, Some(name)) => Tap::open(name).map_err(backend(what.clone()))?,
                (None, None) => continue,
            };
            let mac = n
                .mac
                .as_deref()
                .map(parse_mac)
                .transpose()
                .map_err(backend(what.clone()))?;
            let net = Net::new(tap, mac).map_err(backend(what))?;
            let id = net.id().to_owned();
            self.add_virtio(vm, mem, &id, Arc::new(Mutex::new(net)))?;
        }
        if let Some(v) = &config.vsock {
            let vsock = Vsock::new(v.cid, v.uds.clone())
                .map_err(backend(format!("vsock {}", v.uds.display())))?;
            self.add_virtio(vm, mem, "vsock", Arc::new(Mutex::new(vsock)))?;
        }
        if config.rng {
            let rng = Rng::new("rng0").map_err(backend("rng"))?;
            self.add_virtio(vm, mem, "rng0", Arc::new(Mutex::new(rng)))?;
        }
        for f in &config.fs {
            let device_config = devices::virtio::fs::FsConfig::new(&f.tag, &f.socket);
            let fs = Fs::new(&device_config, mem).map_err(backend(format!("fs {}", f.tag)))?;
            let id = fs.id().to_owned();
            let fs = Arc::new(Mutex::new(fs));
            self.add_virtio(vm, mem, &id, fs.clone())?;
            self.fs.push(fs);
        }
        Ok(())
    }

    /// Starts each virtio-fs device's watchdog thread, `setup` running first
    /// on each (it installs the thread's seccomp filter). Not done while
    /// building: the VMM enters its jail single-threaded, after the build.
    pub fn start_fs_watchdogs(
        &self,
        setup: impl Fn() -> devices::virtio::fs::WatchdogSetup,
    ) -> Result<(), DeviceError> {
        for fs in &self.fs {
            let mut fs = devices::bus::lock(fs);
            let id = fs.id().to_owned();
            fs.start_watchdog(Some(setup())).map_err(backend(id))?;
        }
        Ok(())
    }

    /// Places `device` behind a virtio-mmio transport in the next MMIO window
    /// with the next interrupt line: interrupts leave through an irqfd, queue
    /// notifications arrive through ioeventfds (so neither needs the vCPU
    /// thread), and the event loop gets the device to drive its queues.
    pub fn add_virtio<D>(
        &mut self,
        vm: &Vm,
        mem: &GuestMemory,
        id: &str,
        device: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        let irq = IRQ_BASE + self.virtio_count;
        if irq > IRQ_MAX {
            return Err(DeviceError::NoIrq(id.to_string()));
        }
        let base = VIRTIO_MMIO_START + u64::from(self.virtio_count) * MMIO_WINDOW_SIZE;
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceError::EventFd {
            what: "a virtio interrupt",
            source,
        })?;
        vm.register_irqfd(&irq_evt, irq)?;
        let interrupt = Arc::new(VirtioInterrupt::new(Arc::new(irq_evt)));
        let transport =
            MmioTransport::new(mem.clone(), interrupt, device.clone()).map_err(|source| {
                DeviceError::Transport {
                    what: id.to_string(),
                    source,
                }
            })?;
        for (i, evt) in (0u32..).zip(transport.queue_evts()) {
            vm.register_ioevent(evt, base + VIRTIO_MMIO_QUEUE_NOTIFY, i)?;
        }
        self.io
            .mmio
            .insert(Arc::new(Mutex::new(transport)), base, MMIO_WINDOW_SIZE)
            .map_err(|source| DeviceError::Bus {
                what: "a virtio-mmio window",
                source,
            })?;
        self.cmdline_entries
            .push(cmdline_entry(base, MMIO_WINDOW_SIZE, irq));
        self.subscribers.push(device);
        self.virtio_count += 1;
        log::info!("{id}: virtio-mmio at {base:#x}, irq {irq}");
        Ok(())
    }

    /// Flushes the console (at exit).
    pub fn flush_console(&self) {
        devices::bus::lock(&self.serial).flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inherited_taps_are_claimed() {
        use std::os::fd::IntoRawFd;
        let mut config = VmConfig::new("/k");
        // A descriptor that is open but not a tap: refused (and closed,
        // as it was handed over).
        let null = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        config.nets = vec![vm_spec::NetConfig::inherited(null, None)];
        let e = InheritedTaps::claim(&config).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("net fd {null}: descriptor {null} is not a tap")),
            "{e}"
        );
        // A number nothing is open on (beyond any descriptor limit).
        let n = 1_000_000;
        config.nets = vec![vm_spec::NetConfig::inherited(n, None)];
        let e = InheritedTaps::claim(&config).unwrap_err().to_string();
        assert!(
            e.contains(&format!("descriptor {n} was not inherited")),
            "{e}"
        );
        config.nets.clear();
        assert!(InheritedTaps::claim(&config).unwrap().0.is_empty());
    }

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
