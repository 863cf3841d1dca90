//! Creating the tap that stands for a guest NIC on the host.
//!
//! The flags match what both VMM backends attach with (runm-vmm's virtio-net
//! and QEMU's `-netdev tap`): a tap, no packet-info prefix, a virtio-net
//! header on every packet. The tap is persistent, so that it outlives the
//! descriptor returned here: runm-vmm attaches to it by name, QEMU takes
//! the descriptor; teardown deletes it either way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::NetworkError;

const TUN_PATH: &str = "/dev/net/tun";

/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (0x5002; the ifreq field is a short).
const TAP_FLAGS: libc::c_short =
    (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;

/// Creates a persistent tap in the calling thread's network namespace.
/// `pattern` may hold `%d` for the kernel to pick a free number. Returns the
/// attached descriptor and the tap's name.
pub(super) fn create(pattern: &str) -> Result<(OwnedFd, String), NetworkError> {
    let err = |source: io::Error| NetworkError::Tap {
        name: pattern.to_owned(),
        source,
    };
    if pattern.is_empty() || pattern.len() >= libc::IFNAMSIZ {
        return Err(err(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(err)?;

    // SAFETY: ifreq is a plain C struct (a name array and a union of
    // integers, sockaddrs and a pointer) for which all-zero bytes are valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // Shorter than IFNAMSIZ (checked above): the name stays NUL-terminated.
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(pattern.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = TAP_FLAGS;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is,
    // alive across the call; `file` is an open /dev/net/tun descriptor.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let name: String = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    // SAFETY: TUNSETPERSIST takes its argument by value (an int flag); no
    // memory is passed. `file` is the attached tap.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        // Closing a non-persistent tap deletes it: nothing is left.
        return Err(NetworkError::Tap {
            name,
            source: io::Error::last_os_error(),
        });
    }
    Ok((file.into(), name))
}
