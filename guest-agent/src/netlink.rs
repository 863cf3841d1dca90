//! A small synchronous rtnetlink client, shared by the agent (configuring the
//! guest's interfaces) and the runtime (reading and plumbing a container's
//! network namespace on the host).
//!
//! One socket, one request at a time: send, then read until the kernel's
//! acknowledgement or the end of a dump. The socket belongs to the network
//! namespace of the thread that opened it, whichever thread uses it later.
//! Messages are built with `netlink-packet-route`; no async runtime.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

pub use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

/// Receive buffer: the kernel sends dump datagrams of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Why a netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No route netlink socket could be opened.
    #[error("cannot open a route netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// Sending or receiving failed.
    #[error("netlink {op}: {source}")]
    Io {
        /// The request (`RTM_NEWADDR`, ...).
        op: &'static str,
        /// What the socket said.
        #[source]
        source: io::Error,
    },
    /// The kernel answered the request with an error.
    #[error("netlink {op}: {source}")]
    Kernel {
        /// The request (`RTM_NEWADDR`, ...).
        op: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// An answer that does not decode.
    #[error("netlink {op}: undecodable answer: {detail}")]
    Decode {
        /// The request (`RTM_GETLINK`, ...).
        op: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A route netlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the
    /// kernel's answer.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        let op = op_name(&msg);
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags, op)?;
        loop {
            for m in self.recv(op)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(NetlinkError::Kernel {
                            op,
                            source: e.to_io(),
                        }),
                    };
                }
            }
        }
    }

    /// Sends `msg` as a dump request and collects every answer.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let op = op_name(&msg);
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP, op)?;
        let mut out = Vec::new();
        loop {
            for m in self.recv(op)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NetlinkError::Kernel {
                            op,
                            source: e.to_io(),
                        })
                    }
                    NetlinkPayload::Error(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }

    fn send(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        loop {
            match self.socket.send(&bytes, 0) {
                Ok(_) => return Ok(self.seq),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Io { op, source }),
            }
        }
    }

    /// Reads one datagram and splits it into its messages.
    fn recv(
        &mut self,
        op: &'static str,
    ) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
        self.buf.clear();
        let n = loop {
            match self.socket.recv(&mut self.buf, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Io { op, source }),
            }
        };
        if n > self.buf.len() {
            return Err(NetlinkError::Decode {
                op,
                detail: format!("datagram of {n} bytes truncated to {}", self.buf.len()),
            });
        }
        let mut out = Vec::new();
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                NetlinkError::Decode {
                    op,
                    detail: e.to_string(),
                }
            })?;
            // Messages are 4-byte aligned; a zero length would never advance.
            let len = usize::try_from(m.header.length).unwrap_or(0);
            let aligned = len.div_ceil(4) * 4;
            if len == 0 {
                return Err(NetlinkError::Decode {
                    op,
                    detail: "message of length 0".into(),
                });
            }
            out.push(m);
            rest = rest.get(aligned..).unwrap_or(&[]);
        }
        Ok(out)
    }
}

/// The kernel's name of a request, for error texts.
fn op_name(m: &RouteNetlinkMessage) -> &'static str {
    use RouteNetlinkMessage as M;
    match m {
        M::NewLink(_) => "RTM_NEWLINK",
        M::DelLink(_) => "RTM_DELLINK",
        M::GetLink(_) => "RTM_GETLINK",
        M::SetLink(_) => "RTM_SETLINK",
        M::NewAddress(_) => "RTM_NEWADDR",
        M::DelAddress(_) => "RTM_DELADDR",
        M::GetAddress(_) => "RTM_GETADDR",
        M::NewNeighbour(_) => "RTM_NEWNEIGH",
        M::DelNeighbour(_) => "RTM_DELNEIGH",
        M::GetNeighbour(_) => "RTM_GETNEIGH",
        M::NewRoute(_) => "RTM_NEWROUTE",
        M::DelRoute(_) => "RTM_DELROUTE",
        M::GetRoute(_) => "RTM_GETROUTE",
        M::NewQueueDiscipline(_) => "RTM_NEWQDISC",
        M::DelQueueDiscipline(_) => "RTM_DELQDISC",
        M::GetQueueDiscipline(_) => "RTM_GETQDISC",
        M::NewTrafficFilter(_) => "RTM_NEWTFILTER",
        M::DelTrafficFilter(_) => "RTM_DELTFILTER",
        M::GetTrafficFilter(_) => "RTM_GETTFILTER",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    /// In a namespace of the test's own: dump its links (loopback only) and
    /// have a request refused.
    #[test]
    fn dumps_links_and_reports_kernel_errors() {
        crate::testns::in_netns(dumps_links_and_reports_kernel_errors_here);
    }

    fn dumps_links_and_reports_kernel_errors_here() {
        let mut rtnl = Rtnl::open().expect("open");
        let links = rtnl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .expect("dump links");
        let names: Vec<String> = links
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["lo"]);

        // Deleting a link index that cannot exist is refused, not acked, and
        // the socket stays usable afterwards.
        let mut gone = LinkMessage::default();
        gone.header.index = 0x7fff_fff0;
        let err = rtnl
            .request(RouteNetlinkMessage::DelLink(gone), 0)
            .expect_err("deleting a missing link");
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        assert!(
            err.to_string().starts_with("netlink RTM_DELLINK: "),
            "{err}"
        );
        assert!(rtnl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .is_ok());
    }
}
