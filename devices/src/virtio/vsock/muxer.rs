//! The host side of the vsock device: which host socket each guest
//! connection maps to, and which packet the guest gets next.
//!
//! The muxer owns the listening Unix socket `<uds>` (host processes connect
//! and write `CONNECT <port>\n` to reach guest port `<port>`), the sockets it
//! opens to `<uds>_<port>` when the guest connects to host port `<port>`, and
//! every [`Connection`]. It knows neither guest memory nor the event loop: it
//! takes parsed packets and host readiness, hands out rx packets through a
//! closure, and reports the epoll interest of its sockets through an
//! [`EventRegistry`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::timerfd::TimerFd;

use super::backend::connect_nonblocking;
use super::connection::{Connection, Verdict};
use super::packet::{Header, HOST_CID, OP_REQUEST, OP_RST, TYPE_STREAM};

/// Connections (host- and guest-initiated together) one device serves; more
/// are refused so a guest cannot exhaust the VMM's file descriptors.
pub const MAX_CONNECTIONS: usize = 1024;

/// Accepted host sockets that have not yet sent their `CONNECT` line.
const MAX_HANDSHAKES: usize = 64;

/// Longest `CONNECT <port>` line accepted (`CONNECT 4294967295\r\n` is 20).
const MAX_CONNECT_LINE: usize = 32;

/// Host connections accepted per listener event, so a flood of connects does
/// not starve the guest's queues.
const MAX_ACCEPTS_PER_EVENT: usize = 32;

/// Control packets (resets for unknown connections) waiting for rx buffers
/// beyond which the device stops taking tx chains: a guest that sends without
/// ever receiving cannot grow this queue without bound.
pub const MAX_CONTROL_BACKLOG: usize = 256;

/// How long the listener rests after `accept` failed for lack of file
/// descriptors or memory: a level-triggered listener would otherwise spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Host-side ports for host-initiated connections start here (the dynamic
/// port range of IANA) and wrap below `u32::MAX` (`VMADDR_PORT_ANY`).
const FIRST_EPHEMERAL_PORT: u32 = 49152;

/// A connection's identity: (host-side port, guest-side port). The CIDs are
/// fixed per device.
pub type ConnKey = (u32, u32);

/// Errors setting up the host side.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// Something already exists at the socket path; it is not ours to remove.
    #[error("vsock host socket path {0} already exists")]
    PathExists(PathBuf),
    /// Binding the listening socket failed (e.g. the directory is missing).
    #[error("cannot bind vsock host socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// Configuring the listening socket failed.
    #[error("cannot configure vsock host socket {path}: {source}")]
    Configure {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The accept-retry timer could not be created.
    #[error("cannot create the vsock accept-retry timer: {0}")]
    Timer(#[source] io::Error),
}

/// Where the muxer registers the fds it wants watched: the event loop's
/// `EventOps` in the VMM, a recording fake in tests or benchmarks.
pub trait EventRegistry {
    /// Starts watching `fd` for `events`.
    fn add(&mut self, fd: RawFd, events: EventSet) -> io::Result<()>;
    /// Changes the events `fd` is watched for.
    fn modify(&mut self, fd: RawFd, events: EventSet) -> io::Result<()>;
    /// Stops watching `fd`; called before the fd is closed.
    fn remove(&mut self, fd: RawFd) -> io::Result<()>;
}

fn em_err(e: event_manager::Error) -> io::Error {
    io::Error::other(format!("{e:?}"))
}

impl EventRegistry for EventOps<'_> {
    fn add(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        EventOps::add(self, Events::new_raw(fd, events)).map_err(em_err)
    }
    fn modify(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
        EventOps::modify(self, Events::new_raw(fd, events)).map_err(em_err)
    }
    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        EventOps::remove(self, Events::empty_raw(fd)).map_err(em_err)
    }
}

/// Counters of the host side, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuxerStats {
    /// Host connections that completed the `CONNECT` line.
    pub host_connects: u64,
    /// Host connections closed before or because of a bad `CONNECT` line.
    pub host_connects_refused: u64,
    /// Guest requests that reached a host socket.
    pub guest_connects: u64,
    /// Guest requests refused (no socket at `<uds>_<port>`, or too many).
    pub guest_connects_refused: u64,
    /// `OP_RST` packets sent to the guest.
    pub resets_sent: u64,
    /// Guest packets dropped without an answer (bad CIDs).
    pub packets_dropped: u64,
}

// A host socket that connected to the listener and has not finished its
// `CONNECT <port>\n` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    registered: bool,
}

/// The host side of one vsock device.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    // Identifies our socket file, so Drop does not remove a file someone put
    // in its place.
    listener_ino: (u64, u64),
    listener_registered: bool,
    // Accepting failed for lack of resources; the timer ends the pause.
    listener_paused: bool,
    retry_timer: TimerFd,
    retry_timer_registered: bool,
    conns: HashMap<ConnKey, Connection>,
    conn_by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    // Connections that may have a packet for the guest, served round-robin.
    ready: VecDeque<ConnKey>,
    in_ready: HashSet<ConnKey>,
    // Packets for the guest that belong to no live connection.
    control: VecDeque<Header>,
    // Fds whose epoll interest may have changed since the last sync.
    dirty: HashSet<RawFd>,
    // Closed sockets kept open until they are unregistered, so the event loop
    // never sees a reused fd number it still maps to an old socket.
    graveyard: Vec<(UnixStream, bool)>,
    next_port: u32,
    stats: MuxerStats,
}

impl Muxer {
    /// Binds the listening socket at `uds_path` for a guest with `guest_cid`.
    /// Fails if the path exists (a stale socket must be removed by whoever
    /// owns it) or its directory does not.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, MuxerError> {
        if uds_path.symlink_metadata().is_ok() {
            return Err(MuxerError::PathExists(uds_path));
        }
        let listener = UnixListener::bind(&uds_path).map_err(|source| MuxerError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        let configure = |source| MuxerError::Configure {
            path: uds_path.clone(),
            source,
        };
        let meta = uds_path.symlink_metadata().map_err(configure)?;
        listener.set_nonblocking(true).map_err(configure)?;
        let retry_timer = TimerFd::new().map_err(|e| MuxerError::Timer(e.into()))?;
        Ok(Self {
            guest_cid,
            listener_ino: (meta.dev(), meta.ino()),
            listener_registered: false,
            listener_paused: false,
            retry_timer,
            retry_timer_registered: false,
            uds_path,
            listener,
            conns: HashMap::new(),
            conn_by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            control: VecDeque::new(),
            dirty: HashSet::new(),
            graveyard: Vec::new(),
            next_port: FIRST_EPHEMERAL_PORT,
            stats: MuxerStats::default(),
        })
    }

    /// The listening socket's path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The listening socket's fd.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Whether `fd` is one of the muxer's: the listener, its retry timer or
    /// a host socket.
    pub fn owns_fd(&self, fd: RawFd) -> bool {
        fd == self.listener.as_raw_fd()
            || fd == self.retry_timer.as_raw_fd()
            || self.conn_by_fd.contains_key(&fd)
            || self.handshakes.contains_key(&fd)
    }

    /// Counters.
    pub fn stats(&self) -> MuxerStats {
        self.stats
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The connection between host port `local` and guest port `peer`.
    pub fn connection(&self, local: u32, peer: u32) -> Option<&Connection> {
        self.conns.get(&(local, peer))
    }

    /// Whether a packet is waiting for an rx buffer.
    pub fn has_rx(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// Whether the device should stop taking tx chains until the guest
    /// provides rx buffers.
    pub fn rx_backlogged(&self) -> bool {
        self.control.len() >= MAX_CONTROL_BACKLOG
    }

    /// Handles readiness of one of the muxer's fds (see [`Muxer::owns_fd`]).
    pub fn handle_event(&mut self, fd: RawFd, events: EventSet) {
        if fd == self.listener.as_raw_fd() {
            self.handle_listener();
        } else if fd == self.retry_timer.as_raw_fd() {
            // The timer fd blocks on read: only read it when it was armed
            // (and, being readable, has expired).
            if self.listener_paused {
                let _ = self.retry_timer.wait();
                self.listener_paused = false;
            }
        } else if self.handshakes.contains_key(&fd) {
            self.handle_handshake(fd);
        } else {
            self.handle_host_event(fd, events);
        }
    }

    // Stops watching the listener for a moment (see ACCEPT_RETRY_DELAY).
    fn pause_listener(&mut self) {
        match self.retry_timer.reset(ACCEPT_RETRY_DELAY, None) {
            Ok(()) => self.listener_paused = true,
            Err(e) => log::warn!("vsock cid {}: accept-retry timer: {e}", self.guest_cid),
        }
    }

    fn handle_listener(&mut self) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock cid {}: accept: {e}", self.guest_cid);
                    let starved = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
                    if e.raw_os_error().is_some_and(|n| starved.contains(&n)) {
                        self.pause_listener();
                    }
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || self.conns.len() >= MAX_CONNECTIONS {
                log::warn!(
                    "vsock cid {}: refusing host connection: too many",
                    self.guest_cid
                );
                self.stats.host_connects_refused += 1;
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("vsock cid {}: host connection: {e}", self.guest_cid);
                continue;
            }
            let fd = stream.as_raw_fd();
            self.handshakes.insert(
                fd,
                Handshake {
                    stream,
                    line: Vec::new(),
                    registered: false,
                },
            );
            self.dirty.insert(fd);
        }
    }

    fn handle_host_event(&mut self, fd: RawFd, events: EventSet) {
        let Some(&key) = self.conn_by_fd.get(&fd) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let broken = EventSet::HANG_UP | EventSet::ERROR;
        let mut verdict = if events.intersects(broken) {
            conn.host_hung_up()
        } else {
            Verdict::Keep
        };
        if verdict == Verdict::Keep
            && events.intersects(EventSet::IN | EventSet::READ_HANG_UP | broken)
        {
            verdict = conn.read_from_host();
        }
        if verdict == Verdict::Keep && events.intersects(EventSet::OUT | broken) {
            verdict = conn.flush_to_host();
        }
        self.apply(key, verdict);
    }

    fn handle_handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; 64];
        let newline = loop {
            match hs.stream.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    hs.line.extend_from_slice(&buf[..n]);
                    if let Some(pos) = hs.line.iter().position(|&b| b == b'\n') {
                        break Some(pos);
                    }
                    if hs.line.len() > MAX_CONNECT_LINE {
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let port = newline.and_then(|pos| parse_connect(&hs.line[..pos]));
        let (Some(port), Some(pos)) = (port, newline) else {
            log::debug!("vsock cid {}: bad CONNECT line", self.guest_cid);
            self.stats.host_connects_refused += 1;
            self.graveyard.push((hs.stream, hs.registered));
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            self.stats.host_connects_refused += 1;
            self.graveyard.push((hs.stream, hs.registered));
            return;
        }
        let local = self.alloc_port(port);
        let early = hs.line.get(pos + 1..).unwrap_or_default();
        let mut conn = Connection::new_local(hs.stream, self.guest_cid, local, port, early);
        // Same socket, same fd: it stays registered until the next sync
        // says otherwise.
        conn.registered = hs.registered.then_some(EventSet::IN);
        self.stats.host_connects += 1;
        self.insert(conn);
    }

    fn alloc_port(&mut self, peer_port: u32) -> u32 {
        // At most MAX_CONNECTIONS keys are taken, so this finds a free one.
        loop {
            let p = self.next_port;
            self.next_port = if p >= u32::MAX - 1 {
                FIRST_EPHEMERAL_PORT
            } else {
                p + 1
            };
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn insert(&mut self, conn: Connection) {
        let key = (conn.local_port(), conn.peer_port());
        self.conn_by_fd.insert(conn.fd(), key);
        self.conns.insert(key, conn);
        self.touch(key);
    }

    // Re-evaluates what a connection wants after it changed.
    fn touch(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get(&key) {
            self.dirty.insert(conn.fd());
            if conn.has_rx() && self.in_ready.insert(key) {
                self.ready.push_back(key);
            }
        }
    }

    fn apply(&mut self, key: ConnKey, verdict: Verdict) {
        match verdict {
            Verdict::Keep => self.touch(key),
            Verdict::Reset | Verdict::Drop => {
                let Some(conn) = self.conns.remove(&key) else {
                    return;
                };
                if verdict == Verdict::Reset {
                    self.control.push_back(conn.rst_header());
                    self.stats.resets_sent += 1;
                }
                self.conn_by_fd.remove(&conn.fd());
                let registered = conn.registered.is_some();
                self.graveyard.push((conn.into_stream(), registered));
            }
        }
    }

    fn reply_rst(&mut self, hdr: &Header) {
        self.stats.resets_sent += 1;
        self.control.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            type_: hdr.type_,
            op: OP_RST,
            ..Header::default()
        });
    }

    fn addressed_to_us(&mut self, hdr: &Header) -> bool {
        // A guest can only speak for its own CID, and only to the host.
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            self.stats.packets_dropped += 1;
            return false;
        }
        true
    }

    /// Handles a packet from the guest; `payload` is the data of an `OP_RW`.
    pub fn recv_from_guest(&mut self, hdr: &Header, payload: &[u8]) {
        if !self.addressed_to_us(hdr) {
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            if hdr.op != OP_RST {
                self.reply_rst(hdr);
            }
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            let verdict = conn.recv_from_guest(hdr, payload);
            self.apply(key, verdict);
            return;
        }
        match hdr.op {
            OP_REQUEST => self.connect_for_guest(hdr),
            // Nothing to reset; answering a reset with a reset could ping-pong.
            OP_RST => {}
            _ => self.reply_rst(hdr),
        }
    }

    /// Handles a packet whose header was readable but whose payload was not
    /// (truncated or oversized): its stream can no longer be trusted, so the
    /// connection is reset.
    pub fn recv_malformed(&mut self, hdr: &Header) {
        if !self.addressed_to_us(hdr) {
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if self.conns.contains_key(&key) {
            self.apply(key, Verdict::Reset);
        } else if hdr.op != OP_RST {
            self.reply_rst(hdr);
        }
    }

    fn connect_for_guest(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.stats.guest_connects_refused += 1;
            self.reply_rst(hdr);
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                self.stats.guest_connects += 1;
                self.insert(Connection::new_peer(stream, self.guest_cid, hdr));
            }
            Err(e) => {
                log::debug!(
                    "vsock cid {}: guest connect to host port {}: {e}",
                    self.guest_cid,
                    hdr.dst_port
                );
                self.stats.guest_connects_refused += 1;
                self.reply_rst(hdr);
            }
        }
    }

    /// Produces the next packet for the guest through
    /// `emit(header, payload_a, payload_b)`, with at most `max_payload` bytes
    /// of payload. Nothing is consumed unless `emit` succeeds. `Ok(None)`
    /// when no packet fits.
    pub fn pop_rx<T, F>(&mut self, max_payload: usize, emit: F) -> io::Result<Option<T>>
    where
        F: FnOnce(&Header, &[u8], &[u8]) -> io::Result<T>,
    {
        if let Some(hdr) = self.control.front() {
            let out = emit(hdr, &[], &[])?;
            self.control.pop_front();
            return Ok(Some(out));
        }
        // Visit each ready connection at most once: one with only data and a
        // buffer too small for any goes back in line for the next buffer.
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            self.in_ready.remove(&key);
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if !conn.has_rx() {
                continue;
            }
            if !conn.has_rx_within(max_payload) {
                self.in_ready.insert(key);
                self.ready.push_back(key);
                continue;
            }
            let out = conn.next_rx(max_payload, emit);
            // Back in line if it has more; its read interest may have grown.
            self.touch(key);
            return out;
        }
        Ok(None)
    }

    /// Brings the registry in line with what each of the muxer's fds wants,
    /// then closes the sockets of finished connections. The first call
    /// registers the listener.
    pub fn sync_interest(&mut self, reg: &mut dyn EventRegistry) {
        if !self.retry_timer_registered {
            match reg.add(self.retry_timer.as_raw_fd(), EventSet::IN) {
                Ok(()) => self.retry_timer_registered = true,
                Err(e) => log::error!("vsock cid {}: watch timer: {e}", self.guest_cid),
            }
        }
        let listener_fd = self.listener.as_raw_fd();
        match (self.listener_registered, self.listener_paused) {
            (false, false) => match reg.add(listener_fd, EventSet::IN) {
                Ok(()) => self.listener_registered = true,
                Err(e) => log::error!("vsock cid {}: watch host socket: {e}", self.guest_cid),
            },
            (true, true) => match reg.remove(listener_fd) {
                Ok(()) => self.listener_registered = false,
                Err(e) => log::warn!("vsock cid {}: unwatch host socket: {e}", self.guest_cid),
            },
            _ => {}
        }
        for fd in self.dirty.drain() {
            if let Some(hs) = self.handshakes.get_mut(&fd) {
                if !hs.registered {
                    match reg.add(fd, EventSet::IN) {
                        Ok(()) => hs.registered = true,
                        Err(e) => log::warn!("vsock cid {}: watch fd {fd}: {e}", self.guest_cid),
                    }
                }
                continue;
            }
            let Some(conn) = self.conn_by_fd.get(&fd).and_then(|k| self.conns.get_mut(k)) else {
                continue;
            };
            let want = conn.wanted_events();
            let result = match (conn.registered, want) {
                (None, None) => Ok(()),
                (None, Some(w)) => reg.add(fd, w),
                (Some(_), None) => reg.remove(fd),
                (Some(cur), Some(w)) if cur != w => reg.modify(fd, w),
                (Some(_), Some(_)) => Ok(()),
            };
            match result {
                Ok(()) => conn.registered = want,
                Err(e) => log::warn!("vsock cid {}: watch fd {fd}: {e}", self.guest_cid),
            }
        }
        for (stream, registered) in self.graveyard.drain(..) {
            if registered {
                if let Err(e) = reg.remove(stream.as_raw_fd()) {
                    log::warn!("vsock cid {}: unwatch: {e}", self.guest_cid);
                }
            }
        }
    }

    /// Forgets every connection (the driver reset the device). Host sockets
    /// close at the next [`Muxer::sync_interest`]; host connections still in
    /// their `CONNECT` handshake never reached the guest and are kept.
    pub fn reset(&mut self) {
        for (_, conn) in self.conns.drain() {
            let registered = conn.registered.is_some();
            self.graveyard.push((conn.into_stream(), registered));
        }
        self.conn_by_fd.clear();
        self.ready.clear();
        self.in_ready.clear();
        self.control.clear();
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let ours = self
            .uds_path
            .symlink_metadata()
            .map(|m| (m.dev(), m.ino()) == self.listener_ino)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

// `CONNECT <port>` with an optional trailing `\r`.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let port = line.strip_prefix(b"CONNECT ")?;
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(port).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A registry that holds the muxer to epoll's rules: no double add, no
    // modify or remove of what is not watched.
    #[derive(Default)]
    struct StrictRegistry {
        watched: HashMap<RawFd, EventSet>,
    }

    impl EventRegistry for StrictRegistry {
        fn add(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
            assert!(
                self.watched.insert(fd, events).is_none(),
                "fd {fd} added twice"
            );
            Ok(())
        }
        fn modify(&mut self, fd: RawFd, events: EventSet) -> io::Result<()> {
            assert!(
                self.watched.insert(fd, events).is_some(),
                "fd {fd} not watched"
            );
            Ok(())
        }
        fn remove(&mut self, fd: RawFd) -> io::Result<()> {
            assert!(self.watched.remove(&fd).is_some(), "fd {fd} not watched");
            Ok(())
        }
    }

    #[test]
    fn listener_pauses_and_resumes_on_its_timer() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::new(3, dir.path().join("v.sock")).unwrap();
        let mut reg = StrictRegistry::default();
        m.sync_interest(&mut reg);
        let (listener, timer) = (m.listener_fd(), m.retry_timer.as_raw_fd());
        assert_eq!(reg.watched.len(), 2);
        m.pause_listener();
        m.sync_interest(&mut reg);
        assert!(!reg.watched.contains_key(&listener));
        std::thread::sleep(ACCEPT_RETRY_DELAY * 2);
        m.handle_event(timer, EventSet::IN);
        m.sync_interest(&mut reg);
        assert_eq!(reg.watched.get(&listener), Some(&EventSet::IN));
    }

    #[test]
    fn host_socket_watch_follows_the_connection() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let mut m = Muxer::new(3, path.clone()).unwrap();
        let mut reg = StrictRegistry::default();
        m.sync_interest(&mut reg);
        let mut host = UnixStream::connect(&path).unwrap();
        m.handle_event(m.listener_fd(), EventSet::IN);
        m.sync_interest(&mut reg);
        assert_eq!(reg.watched.len(), 3, "handshake watched for its line");
        host.write_all(b"CONNECT 9\n").unwrap();
        let fd = *m.handshakes.keys().next().unwrap();
        m.handle_event(fd, EventSet::IN);
        m.sync_interest(&mut reg);
        // Waiting for the guest: watched for hang-up only.
        assert_eq!(reg.watched.get(&fd), Some(&EventSet::empty()));
        let req = m.pop_rx(0, |h, _, _| Ok(*h)).unwrap().unwrap();
        assert_eq!((req.op, req.dst_port), (OP_REQUEST, 9));
        let resp = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 9,
            dst_port: req.src_port,
            type_: TYPE_STREAM,
            op: super::super::packet::OP_RESPONSE,
            buf_alloc: 4096,
            ..Header::default()
        };
        m.recv_from_guest(&resp, &[]);
        m.sync_interest(&mut reg);
        assert_eq!(reg.watched.get(&fd), Some(&EventSet::IN));
        // The guest resets: unwatched before it is closed.
        m.recv_from_guest(&Header { op: OP_RST, ..resp }, &[]);
        m.sync_interest(&mut reg);
        assert!(!reg.watched.contains_key(&fd));
        assert_eq!(m.connection_count(), 0);
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(b"CONNECT 1 2"), None);
    }

    #[test]
    fn new_refuses_existing_path_and_missing_dir_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let m = Muxer::new(3, path.clone()).unwrap();
        assert!(path.exists());
        assert!(matches!(
            Muxer::new(3, path.clone()),
            Err(MuxerError::PathExists(_))
        ));
        drop(m);
        assert!(!path.exists());
        let err = Muxer::new(3, dir.path().join("missing/v.sock"))
            .err()
            .unwrap();
        assert!(matches!(err, MuxerError::Bind { .. }));
        assert!(err.to_string().contains("missing"));
    }
}
