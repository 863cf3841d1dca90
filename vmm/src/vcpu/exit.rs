//! What a vCPU exit means: I/O goes to the buses, the rest decides whether the
//! vCPU carries on, stops because the guest is done, or fails. A pure function
//! over the exit and the buses, so it is tested without a VM.

use devices::bus::Bus;
use kvm_ioctls::VcpuExit;

/// KVM_SYSTEM_EVENT types (linux/kvm.h).
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// The port- and memory-mapped I/O the vCPUs dispatch to.
#[derive(Clone, Default)]
pub struct IoBuses {
    /// Port I/O (serial, i8042).
    pub pio: Bus,
    /// MMIO (virtio-mmio windows).
    pub mmio: Bus,
}

/// Why the guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStop {
    /// A vCPU executed `hlt` with no in-kernel LAPIC to wait on.
    Halted,
    /// The guest reset the machine: a triple fault (KVM_EXIT_SHUTDOWN) or a
    /// reset system event. The i8042 reset arrives through an eventfd instead.
    Reset,
    /// A shutdown system event.
    PowerOff,
}

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Handled: run the vCPU again.
    Continue,
    /// KVM_RUN was interrupted (a kick); check for a stop request, then run again.
    Interrupted,
    /// The guest is done.
    Stop(GuestStop),
    /// KVM reported an internal error; the caller reads the sub-error and RIP.
    InternalError,
    /// Any other failure, described.
    Fail(String),
}

/// Dispatches one `KVM_RUN` result. Unclaimed port reads see 0xff (an absent
/// ISA device) and unclaimed MMIO reads see 0; unclaimed writes are dropped,
/// as on a PC, and logged at debug level.
pub fn dispatch(result: Result<VcpuExit<'_>, kvm_ioctls::Error>, io: &IoBuses) -> ExitAction {
    match result {
        Ok(VcpuExit::IoOut(port, data)) => {
            if !io.pio.write(u64::from(port), data) {
                log::debug!("unclaimed port write {port:#x} <- {data:x?}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::IoIn(port, data)) => {
            if !io.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            if !io.mmio.write(addr, data) {
                log::debug!("unclaimed MMIO write {addr:#x} <- {data:x?}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            if !io.mmio.read(addr, data) {
                data.fill(0);
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::Hlt) => ExitAction::Stop(GuestStop::Halted),
        Ok(VcpuExit::Shutdown) => ExitAction::Stop(GuestStop::Reset),
        Ok(VcpuExit::SystemEvent(t, _)) => match t {
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitAction::Stop(GuestStop::PowerOff),
            KVM_SYSTEM_EVENT_RESET => ExitAction::Stop(GuestStop::Reset),
            KVM_SYSTEM_EVENT_CRASH => ExitAction::Fail("guest crash system event".into()),
            other => ExitAction::Fail(format!("unknown system event {other}")),
        },
        Ok(VcpuExit::FailEntry(reason, cpu)) => ExitAction::Fail(format!(
            "KVM could not enter the guest (hardware entry failure reason {reason:#x} on cpu {cpu})"
        )),
        Ok(VcpuExit::InternalError) => ExitAction::InternalError,
        // IRQ window / interrupt exits need nothing from user space.
        Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => ExitAction::Continue,
        Ok(other) => ExitAction::Fail(format!("unexpected vCPU exit {other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => ExitAction::Interrupted,
        Err(e) => ExitAction::Fail(format!("KVM_RUN failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::BusDevice;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Dummy {
        writes: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Dummy {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(0x40 + offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn buses() -> (IoBuses, Arc<Mutex<Dummy>>, Arc<Mutex<Dummy>>) {
        let p = Arc::new(Mutex::new(Dummy::default()));
        let m = Arc::new(Mutex::new(Dummy::default()));
        let mut io = IoBuses::default();
        io.pio.insert(p.clone(), 0x3f8, 8).unwrap();
        io.mmio.insert(m.clone(), 0xd000_0000, 0x1000).unwrap();
        (io, p, m)
    }

    #[test]
    fn io_exits_reach_the_buses() {
        let (io, p, m) = buses();
        assert_eq!(
            dispatch(Ok(VcpuExit::IoOut(0x3f8, b"A")), &io),
            ExitAction::Continue
        );
        assert_eq!(p.lock().unwrap().writes, vec![(0, b"A".to_vec())]);
        let mut b = [0u8; 1];
        assert_eq!(
            dispatch(Ok(VcpuExit::IoIn(0x3fd, &mut b)), &io),
            ExitAction::Continue
        );
        assert_eq!(b[0], 0x45);
        assert_eq!(
            dispatch(Ok(VcpuExit::MmioWrite(0xd000_0070, &[1, 0, 0, 0])), &io),
            ExitAction::Continue
        );
        assert_eq!(m.lock().unwrap().writes, vec![(0x70, vec![1, 0, 0, 0])]);
        let mut w = [0u8; 4];
        dispatch(Ok(VcpuExit::MmioRead(0xd000_0004, &mut w)), &io);
        assert_eq!(w, [0x44; 4]);
    }

    #[test]
    fn unclaimed_reads_look_like_absent_hardware() {
        let (io, _, _) = buses();
        let mut b = [0u8; 2];
        dispatch(Ok(VcpuExit::IoIn(0x80, &mut b)), &io);
        assert_eq!(b, [0xff, 0xff]);
        let mut w = [9u8; 4];
        dispatch(Ok(VcpuExit::MmioRead(0x1000, &mut w)), &io);
        assert_eq!(w, [0; 4]);
        assert_eq!(
            dispatch(Ok(VcpuExit::IoOut(0x80, &[1])), &io),
            ExitAction::Continue
        );
    }

    #[test]
    fn terminal_exits() {
        let io = IoBuses::default();
        assert_eq!(
            dispatch(Ok(VcpuExit::Hlt), &io),
            ExitAction::Stop(GuestStop::Halted)
        );
        assert_eq!(
            dispatch(Ok(VcpuExit::Shutdown), &io),
            ExitAction::Stop(GuestStop::Reset)
        );
        assert_eq!(
            dispatch(Ok(VcpuExit::SystemEvent(2, &[])), &io),
            ExitAction::Stop(GuestStop::Reset)
        );
        assert_eq!(
            dispatch(Ok(VcpuExit::SystemEvent(1, &[])), &io),
            ExitAction::Stop(GuestStop::PowerOff)
        );
        assert!(matches!(
            dispatch(Ok(VcpuExit::SystemEvent(3, &[])), &io),
            ExitAction::Fail(_)
        ));
        assert_eq!(
            dispatch(Ok(VcpuExit::InternalError), &io),
            ExitAction::InternalError
        );
        let f = dispatch(Ok(VcpuExit::FailEntry(0x21, 1)), &io);
        assert!(
            matches!(&f, ExitAction::Fail(m) if m.contains("0x21")),
            "{f:?}"
        );
        assert!(matches!(
            dispatch(Ok(VcpuExit::Unknown), &io),
            ExitAction::Fail(_)
        ));
    }

    #[test]
    fn eintr_is_a_kick_and_other_errors_fail() {
        let io = IoBuses::default();
        let eintr = kvm_ioctls::Error::new(libc::EINTR);
        assert_eq!(dispatch(Err(eintr), &io), ExitAction::Interrupted);
        let efault = kvm_ioctls::Error::new(libc::EFAULT);
        assert!(matches!(dispatch(Err(efault), &io), ExitAction::Fail(_)));
    }
}
