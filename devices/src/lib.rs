//! Device models for runm-vmm.
//!
//! This crate owns what a guest sees as hardware: the legacy serial port and
//! i8042 on the port-I/O bus, and the virtio-mmio transport with its devices on
//! the MMIO bus. It knows guest memory (vm-memory) and interrupts as eventfds,
//! never KVM: `vmm` registers those eventfds with KVM (irqfd, ioeventfd) and
//! places the devices on its buses.

// Guest-written numbers are converted all over this crate: a conversion
// that could cut or flip one is a bug here (tests build their own, small
// values and may cast).
#![cfg_attr(
    not(test),
    deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)
)]

pub mod bus;
pub mod interrupt;
pub mod legacy;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod virtio;
