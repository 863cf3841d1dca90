//! The host side of virtio-net: a Linux tap device opened through
//! `/dev/net/tun`.
//!
//! This module owns every `unsafe` call of the net device: the tun ioctls and
//! the `writev` that hands a guest's frame, still in guest memory, to the
//! kernel. The tap is opened with `IFF_VNET_HDR` and a 12-byte header
//! (`virtio_net_hdr_v1`), so each read or write is one header plus one
//! Ethernet frame, exactly the layout of a virtio-net buffer.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

use super::VNET_HDR_LEN;

const TUN_PATH: &str = "/dev/net/tun";

/// A tap (Ethernet frames, not IP packets), no packet-info prefix, a vnet
/// header on every packet. libc has the flags as c_int, the ifreq field is a
/// c_short: 0x5002 fits, which the assertion checks when the crate is built.
#[allow(clippy::cast_possible_truncation)]
const TAP_FLAGS: libc::c_short = {
    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    assert!(flags >= 0 && flags <= libc::c_short::MAX as libc::c_int);
    flags as libc::c_short
};

/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or not a valid interface name.
    #[error("invalid tap name {0:?}: 1 to 15 bytes, no '/', ':', whitespace or NUL")]
    InvalidName(String),
    /// `/dev/net/tun` is missing (no tun driver in this kernel).
    #[error("tap {name}: {TUN_PATH} does not exist (kernel without tun support?)")]
    NoTunDevice {
        /// The tap asked for.
        name: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("tap {name}: cannot open {TUN_PATH}: {source}")]
    OpenTun {
        /// The tap asked for.
        name: String,
        /// What open(2) said.
        #[source]
        source: io::Error,
    },
    /// No interface of that name exists and this process may not create one.
    #[error("tap {name} does not exist and creating it needs CAP_NET_ADMIN")]
    NoSuchTap {
        /// The tap asked for.
        name: String,
    },
    /// The tap exists but belongs to another user or group.
    #[error("tap {name}: permission denied (the tap's owner or group must match this process, or it needs CAP_NET_ADMIN)")]
    PermissionDenied {
        /// The tap asked for.
        name: String,
    },
    /// An interface of that name exists but is not a tap (or is a
    /// multi-queue tap).
    #[error("interface {name} exists but is not a single-queue tap device")]
    NotATap {
        /// The interface asked for.
        name: String,
    },
    /// Another process (or another device of this VMM) has the tap open.
    #[error("tap {name} is already in use by another process")]
    Busy {
        /// The tap asked for.
        name: String,
    },
    /// An inherited descriptor that is not an attached tap with the flags
    /// the device needs.
    #[error("descriptor {fd} is not a tap with a virtio-net header (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR): {why}")]
    NotATapFd {
        /// The descriptor.
        fd: RawFd,
        /// What it is instead.
        why: String,
    },
    /// TUNSETIFF failed for another reason.
    #[error("tap {name}: TUNSETIFF failed: {source}")]
    SetIff {
        /// The tap asked for.
        name: String,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the 12-byte vnet header size.
    #[error("tap {name}: TUNSETVNETHDRSZ failed: {source}")]
    SetVnetHdrSize {
        /// The tap asked for.
        name: String,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
}

/// An open tap device: non-blocking, no packet-info prefix, each packet
/// preceded by a 12-byte virtio-net header.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens the tap `name` in this thread's network namespace.
    ///
    /// An existing tap is attached to (the caller needs to own it or have
    /// CAP_NET_ADMIN); a missing one is created, which needs CAP_NET_ADMIN and
    /// lasts as long as this `Tap` (it is not made persistent). A name with
    /// `%d` (such as `runm%d`) lets the kernel pick a free number; [`Tap::name`]
    /// returns the name it picked.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let c_name = valid_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => TapError::NoTunDevice {
                    name: name.to_owned(),
                },
                _ => TapError::OpenTun {
                    name: name.to_owned(),
                    source,
                },
            })?;

        let mut ifr = ifreq_for(&c_name);
        ifr.ifr_ifru.ifru_flags = TAP_FLAGS;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifr` is a
        // properly initialised ifreq that lives across the call, and `file` is
        // an open /dev/net/tun descriptor.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if ret < 0 {
            return Err(setiff_error(name, &c_name, io::Error::last_os_error()));
        }
        // The kernel writes back the interface's actual name (a `%d` pattern
        // is replaced by a number).
        let actual = name_from_ifreq(&ifr).unwrap_or_else(|| name.to_owned());

        set_vnet_hdr_size(&file, &actual)?;
        // The header's fields travel in host byte order (no TUNSETVNETLE);
        // virtio 1.x wants little-endian, which is the host's order on the
        // x86_64 hosts runm supports.
        // No TUNSETOFFLOAD: with every offload off the kernel hands us only
        // complete, checksummed frames, matching the features the device
        // offers (no GUEST_CSUM/TSO).

        Ok(Self { file, name: actual })
    }

    /// Takes over a tap opened elsewhere (runm opens it in the container's
    /// network namespace and passes it down): checks that it is an attached
    /// tap with the flags [`Tap::open`] uses, makes it non-blocking and sets
    /// the 12-byte header, as `open` does.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let raw = fd.as_raw_fd();
        let not_tap = |why: String| TapError::NotATapFd { fd: raw, why };
        // SAFETY: all-zero bytes are a valid ifreq (see `ifreq_for`).
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `ifr`, alive
        // across the call; on a descriptor that is not a tun it fails.
        if unsafe { libc::ioctl(raw, libc::TUNGETIFF, &mut ifr) } < 0 {
            return Err(not_tap(io::Error::last_os_error().to_string()));
        }
        // SAFETY: TUNGETIFF filled the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        if flags & TAP_FLAGS != TAP_FLAGS {
            return Err(not_tap(format!("its flags are {flags:#x}")));
        }
        let name = name_from_ifreq(&ifr).unwrap_or_else(|| format!("fd{raw}"));
        let file = File::from(fd);
        // SAFETY: F_GETFL takes no argument and touches no memory.
        let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        let set = if fl < 0 {
            fl
        } else {
            // SAFETY: F_SETFL takes an int and touches no memory.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) }
        };
        if set < 0 {
            return Err(not_tap(format!(
                "cannot make it non-blocking: {}",
                io::Error::last_os_error()
            )));
        }
        set_vnet_hdr_size(&file, &name)?;
        Ok(Self { file, name })
    }

    /// The interface name of the tap.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet (vnet header + frame) into `buf`; `WouldBlock` when
    /// none is queued.
    pub(crate) fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet, gathered from `slices` (vnet header + frame), with
    /// a single `writev`: the tap takes each write as exactly one packet.
    pub(crate) fn write_packet<B: BitmapSlice>(
        &self,
        slices: &[VolatileSlice<'_, B>],
    ) -> io::Result<usize> {
        if slices.len() > usize::try_from(libc::UIO_MAXIOV).unwrap_or(1024) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // The guards keep the host mappings valid until writev returns.
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
        let iovecs: Vec<libc::iovec> = guards
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.as_ptr().cast_mut().cast(),
                iov_len: g.len(),
            })
            .collect();
        // Checked against UIO_MAXIOV above, so it fits a c_int.
        let count = libc::c_int::try_from(iovecs.len()).unwrap_or(0);
        // SAFETY: each iovec points into a guest memory mapping that `guards`
        // (and the borrowed slices) keep mapped for the duration of the call,
        // with the slice's length; writev only reads from them. The guest may
        // change the bytes concurrently, which at worst sends a garbled frame:
        // the kernel copies from user memory and validates the vnet header.
        let ret = unsafe { libc::writev(self.file.as_raw_fd(), iovecs.as_ptr(), count) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // writev returned a non-negative ssize_t.
        Ok(usize::try_from(ret).unwrap_or(0))
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Sets the tap's virtio-net header to the 12 bytes the device uses.
fn set_vnet_hdr_size(file: &File, name: &str) -> Result<(), TapError> {
    let hdr_len = libc::c_int::try_from(VNET_HDR_LEN).map_err(|_| TapError::SetVnetHdrSize {
        name: name.to_owned(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
    // points at `hdr_len`, alive for the call; `file` is an attached tap.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
    if ret < 0 {
        return Err(TapError::SetVnetHdrSize {
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn valid_name(name: &str) -> Result<CString, TapError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TAP_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if !ok {
        return Err(TapError::InvalidName(name.to_owned()));
    }
    CString::new(name).map_err(|_| TapError::InvalidName(name.to_owned()))
}

fn ifreq_for(name: &CString) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (a name array and a union of
    // integers, sockaddrs and a pointer) for which all-zero bytes are a valid
    // value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        // c_char is i8 on x86_64: a byte-for-byte reinterpretation.
        *dst = src as libc::c_char;
    }
    ifr
}

fn name_from_ifreq(ifr: &libc::ifreq) -> Option<String> {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| u8::from_ne_bytes(c.to_ne_bytes()))
        .collect();
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Whether an interface called `name` exists in this thread's network
/// namespace.
fn interface_exists(name: &CString) -> bool {
    // SAFETY: if_nametoindex reads the NUL-terminated string, which `name`
    // keeps alive for the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Turns TUNSETIFF's errno into an error that says what to fix.
fn setiff_error(name: &str, c_name: &CString, source: io::Error) -> TapError {
    let name = name.to_owned();
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            if interface_exists(c_name) {
                TapError::PermissionDenied { name }
            } else {
                TapError::NoSuchTap { name }
            }
        }
        Some(libc::EBUSY) => TapError::Busy { name },
        Some(libc::EINVAL) if interface_exists(c_name) => TapError::NotATap { name },
        _ => TapError::SetIff { name, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::net::test_utils::{in_netns, set_link_up, PacketSocket};

    #[test]
    fn rejects_bad_names_before_touching_the_kernel() {
        for bad in [
            "",
            "a/b",
            "with space",
            "0123456789abcdef",
            "a:b",
            "..",
            "nul\0x",
        ] {
            assert!(
                matches!(Tap::open(bad), Err(TapError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn setiff_errors_name_the_tap() {
        // In a namespace of its own so that "does it exist" only sees `lo`.
        in_netns(|| {
            let missing = CString::new("runm-nosuch0").unwrap();
            let eperm = || io::Error::from_raw_os_error(libc::EPERM);
            let e = setiff_error("runm-nosuch0", &missing, eperm());
            assert!(matches!(e, TapError::NoSuchTap { .. }));
            assert_eq!(
                e.to_string(),
                "tap runm-nosuch0 does not exist and creating it needs CAP_NET_ADMIN"
            );
            let lo = CString::new("lo").unwrap();
            let e = setiff_error("lo", &lo, eperm());
            assert!(matches!(e, TapError::PermissionDenied { .. }));
            assert!(e.to_string().starts_with("tap lo: permission denied"));
            let e = setiff_error("t0", &missing, io::Error::from_raw_os_error(libc::EBUSY));
            assert_eq!(e.to_string(), "tap t0 is already in use by another process");
            let e = setiff_error("t0", &missing, io::Error::from_raw_os_error(libc::EIO));
            assert!(matches!(e, TapError::SetIff { .. }));
        });
    }

    #[test]
    fn creates_attaches_and_reports_conflicts_in_a_private_namespace() {
        in_netns(|| {
            let tap = Tap::open("runmt%d").expect("create tap");
            assert_eq!(tap.name(), "runmt0");
            // A single-queue tap takes one opener only.
            match Tap::open("runmt0") {
                Err(e @ TapError::Busy { .. }) => assert!(e.to_string().contains("runmt0")),
                other => panic!("expected Busy, got {other:?}"),
            }
            // `lo` exists in every namespace and is not a tap.
            assert!(matches!(Tap::open("lo"), Err(TapError::NotATap { .. })));
            drop(tap);
            // Not persistent: closing removed it, so the name is free again.
            let again = Tap::open("runmt0").expect("re-create tap");
            assert_eq!(again.name(), "runmt0");
        });
    }

    #[test]
    fn an_inherited_tap_descriptor_is_checked_and_taken_over() {
        in_netns(|| {
            let opened = Tap::open("runmfd%d").expect("create tap");
            let name = opened.name().to_owned();
            let fd = OwnedFd::from(opened.file.try_clone().unwrap());
            let adopted = Tap::from_fd(fd).expect("adopt tap");
            assert_eq!(adopted.name(), name);
            // SAFETY: F_GETFL touches no memory.
            let fl = unsafe { libc::fcntl(adopted.as_raw_fd(), libc::F_GETFL) };
            assert_ne!(fl & libc::O_NONBLOCK, 0);
            // Anything else is refused with what it is.
            let null = OwnedFd::from(File::open("/dev/null").unwrap());
            let raw = null.as_raw_fd();
            let e = Tap::from_fd(null).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("descriptor {raw} is not a tap")),
                "{e}"
            );
        });
    }

    #[test]
    fn packets_carry_a_vnet_header_both_ways() {
        in_netns(|| {
            let tap = Tap::open("vnet0").expect("create tap");
            set_link_up("vnet0");
            let sock = PacketSocket::bind("vnet0");

            // Namespace -> tap: the read starts with a 12-byte header.
            let frame = crate::virtio::net::test_utils::test_frame(0x11, 60);
            sock.send(&frame);
            let mut buf = vec![0u8; 2048];
            let n = crate::virtio::net::test_utils::read_tap_until(&tap, &mut buf, &frame);
            assert_eq!(n, VNET_HDR_LEN + frame.len());
            assert_eq!(&buf[VNET_HDR_LEN..n], &frame[..]);
            assert_eq!(buf[1], 0, "gso_type must be NONE with offloads off");

            // Tap -> namespace, gathered from two slices.
            let frame = crate::virtio::net::test_utils::test_frame(0x22, 100);
            let mut hdr = [0u8; VNET_HDR_LEN];
            let mut body = frame.clone();
            let slices = [
                // SAFETY: both buffers outlive the slices and are not used
                // while the slices exist.
                unsafe { VolatileSlice::new(hdr.as_mut_ptr(), hdr.len()) },
                // SAFETY: as above.
                unsafe { VolatileSlice::new(body.as_mut_ptr(), body.len()) },
            ];
            let n = tap.write_packet(&slices).expect("writev");
            assert_eq!(n, VNET_HDR_LEN + frame.len());
            assert_eq!(sock.recv_matching(&frame), frame);
        });
    }
}
