//! The host-agent protocol, defined once for both sides.
//!
//! A byte stream (a vsock connection under runm-vmm, a virtio-serial port
//! under QEMU) carries frames: a 4-byte big-endian length, then that many
//! bytes of body. The body's first byte is its kind: `0` a JSON control
//! [`Message`], `1` stream data (`u32` process id, big-endian; `u8` stream;
//! the bytes). Stdio travels as data frames so it needs no encoding; empty
//! stdin data means end of input. The first frames each way are `Hello` and
//! `Ready`, both carrying [`PROTOCOL_VERSION`]; a peer with another version is
//! refused with an `Error`.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this protocol. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Name of the virtio-serial port the agent uses where there is no vsock.
pub const AGENT_SERIAL_PORT_NAME: &str = "runm.agent";
/// Largest frame body accepted: bounds what a peer can make the other allocate.
pub const MAX_FRAME: usize = 1 << 20;
/// Process id of the container's own process; `exec` processes get 1, 2, ...
pub const INIT_PROCESS: u32 = 0;

const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The stream failed.
    #[error("agent channel i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame larger than [`MAX_FRAME`] (or empty).
    #[error("frame of {0} bytes is out of bounds (1..={MAX_FRAME})")]
    FrameSize(usize),
    /// An unknown frame kind or stream.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A control message that is not valid JSON for [`Message`].
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
}

/// A standard stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Host to process.
    Stdin,
    /// Process to host (also the terminal's output when `terminal` is set).
    Stdout,
    /// Process to host.
    Stderr,
}

impl Stream {
    fn to_byte(self) -> u8 {
        match self {
            Stream::Stdin => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
    fn from_byte(b: u8) -> Result<Self, ProtoError> {
        match b {
            0 => Ok(Stream::Stdin),
            1 => Ok(Stream::Stdout),
            2 => Ok(Stream::Stderr),
            _ => Err(ProtoError::Malformed(format!("unknown stream {b}"))),
        }
    }
}

/// A resource limit (`process.rlimits` of the OCI spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A process to run (the OCI `process` object, as far as the guest needs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in `PATH` from `env` if it has no slash.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute).
    #[serde(default = "root_dir")]
    pub cwd: String,
    /// User id.
    #[serde(default)]
    pub uid: u32,
    /// Group id.
    #[serde(default)]
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Run on a pseudo terminal (stdout carries its output).
    #[serde(default)]
    pub terminal: bool,
    /// Resource limits.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Set PR_SET_NO_NEW_PRIVS before exec.
    #[serde(default)]
    pub no_new_privileges: bool,
}

fn root_dir() -> String {
    "/".into()
}

/// The container's root file system inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSpec {
    /// Block device, e.g. `/dev/vda`.
    pub device: String,
    /// File system type, e.g. `ext4`.
    pub fstype: String,
    /// Mount it read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// A mount inside the container (the OCI `mounts` entries the guest performs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Where, inside the container's root.
    pub destination: String,
    /// File system type (`proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`, `ext4`, ...).
    #[serde(rename = "type")]
    pub fstype: String,
    /// Source (a device for block mounts, else informational).
    #[serde(default)]
    pub source: String,
    /// mount(8)-style options (`nosuid`, `ro`, `mode=755`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// What the agent builds before `Start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's id (for logs).
    pub id: String,
    /// Hostname to set.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Root file system.
    pub root: RootSpec,
    /// Mounts, in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// The container's process.
    pub process: ProcessSpec,
}

/// Control messages. Host to agent: `Hello`, `Create`, `Start`, `Exec`,
/// `Signal`, `Ps`, `Shutdown`. Agent to host: `Ready`, `Created`, `Started`,
/// `Exited`, `Processes`, `Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First host message.
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Prepare the container (mounts, hostname, ...); its process waits for `Start`.
    Create {
        /// What to build.
        container: ContainerSpec,
    },
    /// Run the container's process.
    Start,
    /// Run another process in the container.
    Exec {
        /// Host-chosen id (not [`INIT_PROCESS`]).
        process_id: u32,
        /// The process.
        process: ProcessSpec,
    },
    /// Deliver a signal.
    Signal {
        /// Whose.
        process_id: u32,
        /// Signal number.
        signal: i32,
        /// To every process of the container.
        all: bool,
    },
    /// List the container's processes.
    Ps,
    /// Power the guest off now.
    Shutdown,
    /// First agent message.
    Ready {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u32,
        /// The guest kernel's release (`uname -r`).
        kernel: String,
    },
    /// The container was prepared.
    Created,
    /// A process is running.
    Started {
        /// Which.
        process_id: u32,
        /// Its pid inside the guest.
        pid: u32,
    },
    /// A process ended; its output streams have been flushed before this.
    Exited {
        /// Which.
        process_id: u32,
        /// Exit code, or 128 + signal number if it was killed.
        status: i32,
    },
    /// Answer to `Ps`: guest pids of the container's processes.
    Processes {
        /// The pids.
        pids: Vec<u32>,
    },
    /// A request failed.
    Error {
        /// What went wrong, for people.
        message: String,
    },
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control message (boxed: it is much larger than a data frame's header).
    Control(Box<Message>),
    /// Stdio bytes of a process.
    Data {
        /// Which process.
        process_id: u32,
        /// Which stream.
        stream: Stream,
        /// The bytes; empty stdin means end of input.
        data: Vec<u8>,
    },
}

/// Writes one frame (one `write_all`, so frames from threads sharing a locked
/// writer never interleave).
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> Result<(), ProtoError> {
    let mut body = Vec::new();
    match frame {
        Frame::Control(m) => {
            body.push(KIND_CONTROL);
            serde_json::to_writer(&mut body, m.as_ref())?;
        }
        Frame::Data {
            process_id,
            stream,
            data,
        } => {
            body.reserve(6 + data.len());
            body.push(KIND_DATA);
            body.extend_from_slice(&process_id.to_be_bytes());
            body.push(stream.to_byte());
            body.extend_from_slice(data);
        }
    }
    if body.len() > MAX_FRAME {
        return Err(ProtoError::FrameSize(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::FrameSize(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// Writes a control message.
pub fn send<W: Write>(w: &mut W, m: Message) -> Result<(), ProtoError> {
    write_frame(w, &Frame::Control(Box::new(m)))
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::FrameSize(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    match body[0] {
        KIND_CONTROL => Ok(Some(Frame::Control(Box::new(serde_json::from_slice(
            &body[1..],
        )?)))),
        KIND_DATA => {
            if body.len() < 6 {
                return Err(ProtoError::Malformed(
                    "data frame shorter than its header".into(),
                ));
            }
            let process_id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
            let stream = Stream::from_byte(body[5])?;
            Ok(Some(Frame::Data {
                process_id,
                stream,
                data: body[6..].to_vec(),
            }))
        }
        k => Err(ProtoError::Malformed(format!("unknown frame kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).unwrap();
        let back = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn every_message_round_trips() {
        let process = ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "exit 7".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/tmp".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            terminal: true,
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096,
            }],
            no_new_privileges: true,
        };
        let container = ContainerSpec {
            id: "c1".into(),
            hostname: Some("box".into()),
            root: RootSpec {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
            },
            mounts: vec![MountSpec {
                destination: "/proc".into(),
                fstype: "proc".into(),
                source: "proc".into(),
                options: vec!["nosuid".into()],
            }],
            process: process.clone(),
        };
        for m in [
            Message::Hello {
                version: PROTOCOL_VERSION,
            },
            Message::Create { container },
            Message::Start,
            Message::Exec {
                process_id: 1,
                process,
            },
            Message::Signal {
                process_id: 0,
                signal: 15,
                all: true,
            },
            Message::Ps,
            Message::Shutdown,
            Message::Ready {
                version: 1,
                kernel: "6.12".into(),
            },
            Message::Created,
            Message::Started {
                process_id: 0,
                pid: 42,
            },
            Message::Exited {
                process_id: 0,
                status: 7,
            },
            Message::Processes { pids: vec![1, 2] },
            Message::Error {
                message: "no".into(),
            },
        ] {
            round_trip(Frame::Control(Box::new(m)));
        }
        round_trip(Frame::Data {
            process_id: 3,
            stream: Stream::Stderr,
            data: b"\0\xffbytes".to_vec(),
        });
        round_trip(Frame::Data {
            process_id: 0,
            stream: Stream::Stdin,
            data: vec![],
        });
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let mut buf = Vec::new();
        send(
            &mut buf,
            Message::Exited {
                process_id: 0,
                status: 7,
            },
        )
        .unwrap();
        assert_eq!(&buf[5..], br#"{"type":"exited","process_id":0,"status":7}"#);
        assert_eq!(
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            buf.len() - 4
        );
    }

    #[test]
    fn several_frames_in_one_stream_and_clean_eof() {
        let mut buf = Vec::new();
        send(&mut buf, Message::Start).unwrap();
        write_frame(
            &mut buf,
            &Frame::Data {
                process_id: 0,
                stream: Stream::Stdout,
                data: b"hi".to_vec(),
            },
        )
        .unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Control(Box::new(Message::Start)))
        );
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Data { .. })
        ));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_frames_are_errors_not_allocations() {
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(ProtoError::FrameSize(_))
        ));
        let zero = 0u32.to_be_bytes();
        assert!(matches!(
            read_frame(&mut zero.as_slice()),
            Err(ProtoError::FrameSize(0))
        ));
        let mut bad_kind = 1u32.to_be_bytes().to_vec();
        bad_kind.push(9);
        assert!(matches!(
            read_frame(&mut bad_kind.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut short_data = 3u32.to_be_bytes().to_vec();
        short_data.extend_from_slice(&[1, 0, 0]);
        assert!(matches!(
            read_frame(&mut short_data.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut bad_stream = 6u32.to_be_bytes().to_vec();
        bad_stream.extend_from_slice(&[1, 0, 0, 0, 0, 7]);
        assert!(matches!(
            read_frame(&mut bad_stream.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut bad_json = 3u32.to_be_bytes().to_vec();
        bad_json.extend_from_slice(&[0, b'{', b'}']);
        assert!(matches!(
            read_frame(&mut bad_json.as_slice()),
            Err(ProtoError::Json(_))
        ));
        let mut truncated = 10u32.to_be_bytes().to_vec();
        truncated.push(0);
        assert!(matches!(
            read_frame(&mut truncated.as_slice()),
            Err(ProtoError::Io(_))
        ));
    }

    #[test]
    fn oversized_frames_are_refused_on_write() {
        let f = Frame::Data {
            process_id: 0,
            stream: Stream::Stdout,
            data: vec![0; MAX_FRAME],
        };
        assert!(matches!(
            write_frame(&mut Vec::new(), &f),
            Err(ProtoError::FrameSize(_))
        ));
    }

    #[test]
    fn process_spec_defaults() {
        let p: ProcessSpec = serde_json::from_str(r#"{"args":["true"]}"#).unwrap();
        assert_eq!(p.cwd, "/");
        assert_eq!(p.uid, 0);
        assert!(!p.terminal);
    }
}
