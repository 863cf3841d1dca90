//! The i8042 keyboard controller at ports 0x60-0x64, only as far as a guest
//! uses it to reset the machine (`reboot=k`: command 0xfe on port 0x64). The
//! reset becomes an eventfd the VMM's event loop turns into a clean exit.

use vm_superio::I8042Device;

use crate::bus::BusDevice;
use crate::interrupt::EventFdTrigger;

/// Ports 0x60..=0x64 as the guest sees them: data at offset 0, command/status at 4.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller signalling `reset` when the guest pulses the CPU reset line.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status 0: output empty, input empty, so the guest's kb_wait() ends at once.
        let v = u8::try_from(offset).map_or(0, |o| self.inner.read(o));
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [value]) = (u8::try_from(offset), data) {
            if let Err(e) = self.inner.write(off, *value) {
                log::error!("i8042: signalling the reset failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_the_event_and_nothing_else_does() {
        let reset = EventFdTrigger::new().unwrap();
        let evt = reset.try_clone().unwrap();
        let mut dev = I8042::new(reset);
        dev.write(0, &[0xfe]); // data port: not a command
        dev.write(4, &[0xad]); // another command
        assert!(evt.0.read().is_err(), "no reset yet (EAGAIN)");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.0.read().unwrap(), 1);
        let mut st = [0xffu8];
        dev.read(4, &mut st);
        assert_eq!(st[0], 0);
    }
}
