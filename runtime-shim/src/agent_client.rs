//! The host end of the agent channel during set-up: `Hello`/`Ready` (the
//! version check) and `Create`/`Created`, each bounded by a deadline.
//!
//! After set-up the sandbox reads the channel from one thread and writes it
//! from several ([`AgentWriter`]), because the agent talks unprompted (stdio
//! data, `Started`, `Exited`) while runm commands arrive on the control
//! socket.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Instant;

use guest_agent::proto::{
    self, ContainerSpec, Frame, InterfaceSpec, Message, ProtoError, INIT_PROCESS, PROTOCOL_VERSION,
};

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The channel failed.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The agent closed the channel.
    #[error("the guest agent closed its channel")]
    Closed,
    /// No answer in time.
    #[error("the guest agent did not answer {0} in time")]
    Timeout(&'static str),
    /// The agent speaks another protocol version.
    #[error("the guest agent speaks protocol version {agent}, runm speaks {PROTOCOL_VERSION}")]
    Version {
        /// The agent's.
        agent: u32,
    },
    /// The agent refused a request.
    #[error("the guest agent failed: {0}")]
    Refused(String),
    /// An answer that does not fit the request.
    #[error("unexpected message from the guest agent: {0}")]
    Unexpected(String),
}

/// Reads the next control message before `deadline`, skipping data frames
/// (the agent may write to the console streams while it sets up).
fn next_control(
    stream: &mut UnixStream,
    deadline: Instant,
    what: &'static str,
) -> Result<Message, AgentError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AgentError::Timeout(what));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(ProtoError::Io)?;
        match proto::read_frame(stream) {
            Ok(Some(Frame::Control(m))) => {
                stream.set_read_timeout(None).map_err(ProtoError::Io)?;
                return Ok(*m);
            }
            Ok(Some(Frame::Data { .. })) => continue,
            Ok(None) => return Err(AgentError::Closed),
            Err(ProtoError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AgentError::Timeout(what))
            }
            Err(ProtoError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(AgentError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `Hello` → `Ready`; returns the guest kernel's release.
pub fn handshake(stream: &mut UnixStream, deadline: Instant) -> Result<String, AgentError> {
    proto::send(
        stream,
        Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )?;
    match next_control(stream, deadline, "Hello")? {
        Message::Ready { version, kernel } if version == PROTOCOL_VERSION => Ok(kernel),
        Message::Ready { version, .. } => Err(AgentError::Version { agent: version }),
        Message::Error { message } => Err(AgentError::Refused(message)),
        m => Err(AgentError::Unexpected(format!("{m:?}"))),
    }
}

/// `ConfigureNetwork` → `NetworkConfigured`: before `create`, once.
pub fn configure_network(
    stream: &mut UnixStream,
    interfaces: Vec<InterfaceSpec>,
    deadline: Instant,
) -> Result<(), AgentError> {
    proto::send(stream, Message::ConfigureNetwork { interfaces })?;
    match next_control(stream, deadline, "ConfigureNetwork")? {
        Message::NetworkConfigured => Ok(()),
        Message::Error { message } => Err(AgentError::Refused(message)),
        m => Err(AgentError::Unexpected(format!("{m:?}"))),
    }
}

/// `Create` → `Created`: a container whose init process is
/// [`INIT_PROCESS`], in namespaces of its own, or sharing the network, IPC
/// and UTS namespaces of its pod's sandbox container `pod`.
pub fn create(
    stream: &mut UnixStream,
    container: ContainerSpec,
    pod: Option<String>,
    deadline: Instant,
) -> Result<(), AgentError> {
    proto::send(
        stream,
        Message::Create {
            container: Box::new(container),
            init_process: INIT_PROCESS,
            share_namespaces_with: pod,
        },
    )?;
    match next_control(stream, deadline, "Create")? {
        Message::Created => Ok(()),
        Message::Error { message } => Err(AgentError::Refused(message)),
        m => Err(AgentError::Unexpected(format!("{m:?}"))),
    }
}

/// How long one frame may take to reach a guest that does not read: then
/// the channel is given up (a frame may be half written), not waited on.
pub const AGENT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The write half of the channel, shared by the sandbox's threads. Each frame
/// is one `write_all` under the lock, so frames never interleave. A write
/// that fails or times out breaks the channel for good: every later send
/// fails at once.
#[derive(Debug)]
pub struct AgentWriter {
    stream: Mutex<Option<UnixStream>>,
}

impl AgentWriter {
    /// Wraps a clone of the channel, with [`AGENT_WRITE_TIMEOUT`].
    pub fn new(stream: UnixStream) -> Self {
        let _ = stream.set_write_timeout(Some(AGENT_WRITE_TIMEOUT));
        AgentWriter {
            stream: Mutex::new(Some(stream)),
        }
    }

    /// Sends one frame.
    pub fn send_frame(&self, frame: &Frame) -> Result<(), AgentError> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| AgentError::Unexpected("writer lock poisoned".into()))?;
        let Some(stream) = s.as_mut() else {
            return Err(AgentError::Unexpected(
                "the agent channel is broken (an earlier write failed)".into(),
            ));
        };
        if let Err(e) = proto::write_frame(stream, frame) {
            *s = None;
            return Err(e.into());
        }
        Ok(())
    }

    /// Sends a control message.
    pub fn send(&self, m: Message) -> Result<(), AgentError> {
        self.send_frame(&Frame::Control(Box::new(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_agent::proto::{ProcessSpec, RootSpec, Stream};
    use std::time::Duration;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c".into(),
            hostname: None,
            root: RootSpec {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
                source: proto::SHARE_ROOTFS.into(),
            },
            mounts: vec![],
            process: ProcessSpec {
                args: vec!["true".into()],
                ..ProcessSpec::default()
            },
            linux: Default::default(),
        }
    }

    #[test]
    fn handshake_and_create_with_a_scripted_agent() {
        let (mut host, mut agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let hello = proto::read_frame(&mut agent).unwrap().unwrap();
            assert_eq!(
                hello,
                Frame::Control(Box::new(Message::Hello {
                    version: PROTOCOL_VERSION
                }))
            );
            // Console noise before the answer is skipped.
            proto::write_frame(
                &mut agent,
                &Frame::Data {
                    process_id: 0,
                    stream: Stream::Stdout,
                    data: b"boot".to_vec(),
                },
            )
            .unwrap();
            proto::send(
                &mut agent,
                Message::Ready {
                    version: PROTOCOL_VERSION,
                    kernel: "6.12".into(),
                },
            )
            .unwrap();
            assert!(matches!(
                proto::read_frame(&mut agent).unwrap(),
                Some(Frame::Control(m)) if matches!(*m, Message::Create { .. })
            ));
            proto::send(
                &mut agent,
                Message::Error {
                    message: "no /dev/vda".into(),
                },
            )
            .unwrap();
            agent
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(handshake(&mut host, deadline).unwrap(), "6.12");
        let e = create(&mut host, spec(), None, deadline).unwrap_err();
        assert_eq!(e.to_string(), "the guest agent failed: no /dev/vda");
        let agent = t.join().unwrap();
        drop(agent);
        assert!(matches!(
            create(&mut host, spec(), None, deadline),
            Err(AgentError::Closed | AgentError::Proto(_))
        ));
    }

    #[test]
    fn configure_network_with_a_scripted_agent() {
        let (mut host, mut agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            for answer in [
                Message::NetworkConfigured,
                Message::Error {
                    message: "network interface eth0: no NIC".into(),
                },
            ] {
                let asked = proto::read_frame(&mut agent).unwrap().unwrap();
                assert_eq!(
                    asked,
                    Frame::Control(Box::new(Message::ConfigureNetwork { interfaces: vec![] }))
                );
                proto::send(&mut agent, answer).unwrap();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        configure_network(&mut host, vec![], deadline).unwrap();
        let e = configure_network(&mut host, vec![], deadline).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the guest agent failed: network interface eth0: no NIC"
        );
        t.join().unwrap();
    }

    #[test]
    fn version_mismatch_and_timeout() {
        let (mut host, mut agent) = UnixStream::pair().unwrap();
        proto::send(
            &mut agent,
            Message::Ready {
                version: 99,
                kernel: String::new(),
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = handshake(&mut host, deadline).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        let e = handshake(&mut host, Instant::now() + Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, AgentError::Timeout("Hello")), "{e}");
    }
}
