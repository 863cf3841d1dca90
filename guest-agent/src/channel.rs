//! The byte stream to the host: a vsock connection or a virtio-serial port.
//!
//! Owns finding and opening the transport; what travels on it is
//! [`crate::proto`]'s. Under runm-vmm the agent listens on AF_VSOCK port
//! [`AGENT_VSOCK_PORT`] and the host connects through the VMM's Unix socket
//! (`CONNECT 1024`); under QEMU it opens the virtio-serial port named
//! [`AGENT_SERIAL_PORT_NAME`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, CWD};
use rustix::net::SocketFlags;

use crate::console::log;
use crate::init::ChannelKind;
use crate::proto::{AGENT_SERIAL_PORT_NAME, AGENT_VSOCK_PORT};
use crate::sys;

/// How long the agent looks for its virtio-serial port: the port appears
/// only after the device has told the driver about it, which may be after
/// PID 1 started.
const PORT_WAIT: Duration = Duration::from_secs(10);

/// How often a serial reader looks again while no host is connected.
const HOST_POLL: Duration = Duration::from_millis(20);

/// Where the virtio-serial ports are listed.
const PORTS_DIR: &str = "/sys/class/virtio-ports";

/// Errors opening the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The vsock listener failed.
    #[error("vsock port {port}: {source}")]
    Vsock {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No virtio-serial port with our name.
    #[error("no virtio-serial port named {AGENT_SERIAL_PORT_NAME} under {PORTS_DIR} after {} s", PORT_WAIT.as_secs())]
    NoPort,
    /// The port was found but could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An open channel: one reader, one writer, same stream.
pub struct Channel {
    /// Frames from the host.
    pub reader: ChannelReader,
    /// Frames to the host (shared behind a lock by the agent).
    pub writer: File,
}

/// The reading side. A virtio-serial port reads as end of file while no host
/// is connected to its other end; until the host has spoken once, that means
/// "not yet", afterwards it means the host went away.
pub struct ChannelReader<R = File> {
    file: R,
    wait_for_host: bool,
}

impl<R: Read> Read for ChannelReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n == 0 && self.wait_for_host && !buf.is_empty() {
                std::thread::sleep(HOST_POLL);
                continue;
            }
            if n > 0 {
                self.wait_for_host = false;
            }
            return Ok(n);
        }
    }
}

/// Opens the channel of `kind`, waiting for the host where it has to.
pub fn open(kind: ChannelKind) -> Result<Channel, ChannelError> {
    let (file, wait_for_host) = match kind {
        ChannelKind::Vsock => (accept_vsock()?, false),
        ChannelKind::Serial => (open_serial()?, true),
    };
    let writer = file.try_clone().map_err(|source| ChannelError::Open {
        path: "channel".into(),
        source,
    })?;
    Ok(Channel {
        reader: ChannelReader {
            file,
            wait_for_host,
        },
        writer,
    })
}

/// Listens on the vsock port and accepts the one host connection. The
/// listener is closed afterwards: a second host is refused by the kernel.
fn accept_vsock() -> Result<File, ChannelError> {
    let err = |source| ChannelError::Vsock {
        port: AGENT_VSOCK_PORT,
        source,
    };
    let listener = sys::vsock_listen(AGENT_VSOCK_PORT).map_err(err)?;
    log!("listening on vsock port {AGENT_VSOCK_PORT}");
    let conn =
        rustix::io::retry_on_intr(|| rustix::net::accept_with(&listener, SocketFlags::CLOEXEC))
            .map_err(|e| err(e.into()))?;
    Ok(File::from(conn))
}

/// Finds the port named [`AGENT_SERIAL_PORT_NAME`] in `ports_dir`: its
/// device name (`vport1p1`) and `major:minor`.
pub fn find_port(ports_dir: &Path) -> Option<(String, u32, u32)> {
    let mut entries: Vec<_> = fs::read_dir(ports_dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let dir = entry.path();
        let Ok(name) = fs::read_to_string(dir.join("name")) else {
            continue;
        };
        if name.trim_end() != AGENT_SERIAL_PORT_NAME {
            continue;
        }
        let dev = fs::read_to_string(dir.join("dev")).ok()?;
        let (major, minor) = dev.trim().split_once(':')?;
        return Some((
            entry.file_name().to_string_lossy().into_owned(),
            major.parse().ok()?,
            minor.parse().ok()?,
        ));
    }
    None
}

/// Opens the agent's virtio-serial port, creating its node if devtmpfs has
/// not. The port can be open only once, so reader and writer share it.
fn open_serial() -> Result<File, ChannelError> {
    let deadline = Instant::now() + PORT_WAIT;
    let (name, major, minor) = loop {
        if let Some(found) = find_port(Path::new(PORTS_DIR)) {
            break found;
        }
        if Instant::now() >= deadline {
            return Err(ChannelError::NoPort);
        }
        std::thread::sleep(HOST_POLL);
    };
    let path = Path::new("/dev").join(&name);
    let err = |source| ChannelError::Open {
        path: path.clone(),
        source,
    };
    if !path.exists() {
        let (kind, mode) = (FileType::CharacterDevice, Mode::from_raw_mode(0o600));
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(CWD, &path, kind, mode, dev).map_err(|e| err(e.into()))?;
    }
    log!(
        "using virtio-serial port {} ({major}:{minor})",
        path.display()
    );
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_port_among_others() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name, dev) in [
            ("vport0p1", "org.qemu.guest_agent.0\n", "252:1\n"),
            ("vport1p1", "runm.agent\n", "253:1\n"),
            ("vport1p2", "", "253:2\n"),
        ] {
            let p = dir.path().join(port);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("name"), name).unwrap();
            fs::write(p.join("dev"), dev).unwrap();
        }
        assert_eq!(
            find_port(dir.path()),
            Some(("vport1p1".to_string(), 253, 1))
        );
        fs::remove_dir_all(dir.path().join("vport1p1")).unwrap();
        assert_eq!(find_port(dir.path()), None);
        assert_eq!(find_port(&dir.path().join("missing")), None);
    }

    /// Reads as a virtio-serial port does: a script of results.
    struct Script(Vec<&'static [u8]>);

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let next = if self.0.is_empty() {
                &b""[..]
            } else {
                self.0.remove(0)
            };
            buf[..next.len()].copy_from_slice(next);
            Ok(next.len())
        }
    }

    #[test]
    fn serial_reader_waits_for_the_host_then_reports_eof() {
        let mut reader = ChannelReader {
            file: Script(vec![b"", b"", b"hi", b"", b"late"]),
            wait_for_host: true,
        };
        let mut buf = [0u8; 8];
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        // After the host spoke, 0 is end of file.
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn vsock_reader_reports_eof_at_once() {
        let mut reader = ChannelReader {
            file: Script(vec![b"", b"x"]),
            wait_for_host: false,
        };
        assert_eq!(reader.read(&mut [0u8; 4]).unwrap(), 0);
    }
}
