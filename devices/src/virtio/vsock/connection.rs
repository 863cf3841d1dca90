//! One vsock stream connection between a guest socket and a host Unix
//! socket: its state machine, both directions' buffers and the credit
//! accounting of virtio 1.2, 5.10.6.3.
//!
//! A connection never touches guest memory or the event loop. The muxer feeds
//! it guest packets, host readiness and rx space, and asks it which epoll
//! events it wants; that keeps the protocol logic testable on its own.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use event_manager::EventSet;

use super::packet::{
    Header, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Our receive buffer per connection (guest to host bytes not yet written to
/// the host socket). Advertised to the guest as `buf_alloc`, so a guest that
/// respects its credit never overflows it.
pub const TO_HOST_BUF_SIZE: u32 = 256 * 1024;

/// Host-to-guest bytes buffered per connection. Reading stops at this bound
/// or at the guest's credit, whichever is lower, so a slow guest pushes back
/// on the host process through its socket instead of growing our memory.
pub const TO_GUEST_BUF_SIZE: usize = 256 * 1024;

/// When the guest's view of our free space drops below this, and we have
/// freed space since we last told it, send a credit update unasked.
const CREDIT_UPDATE_THRESHOLD: u32 = TO_HOST_BUF_SIZE / 4;

/// A fixed-bound FIFO of bytes, grown on demand up to its bound so idle
/// connections stay small.
#[derive(Debug)]
pub struct ByteRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    bound: usize,
}

impl ByteRing {
    /// An empty ring that will hold at most `bound` bytes.
    pub fn new(bound: usize) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            len: 0,
            bound,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can still be added.
    pub fn free(&self) -> usize {
        self.bound - self.len
    }

    // Makes the storage at least `want` bytes (capped at the bound),
    // linearising the content so `head` is 0.
    fn reserve(&mut self, want: usize) {
        let want = want.min(self.bound);
        if self.buf.len() >= want {
            return;
        }
        let new_size = want.max(self.buf.len() * 2).min(self.bound);
        let mut new_buf = Vec::with_capacity(new_size);
        let (a, b) = self.slices();
        new_buf.extend_from_slice(a);
        new_buf.extend_from_slice(b);
        new_buf.resize(new_size, 0);
        self.buf = new_buf;
        self.head = 0;
    }

    // The free space right after the content, up to the end of storage or
    // the start of the content, whichever comes first.
    fn tail_space(&mut self) -> &mut [u8] {
        let size = self.buf.len();
        if self.len >= size {
            return &mut [];
        }
        let tail = (self.head + self.len) % size;
        let end = if tail >= self.head { size } else { self.head };
        &mut self.buf[tail..end]
    }

    /// Appends as much of `data` as fits; returns how much was taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.reserve(self.len + n);
        let mut done = 0;
        while done < n {
            let space = self.tail_space();
            let k = space.len().min(n - done);
            space[..k].copy_from_slice(&data[done..done + k]);
            self.len += k;
            done += k;
        }
        n
    }

    /// One `read` from `r` into the ring, of at most `max` bytes. `Ok(0)`
    /// with `max > 0` is end of file.
    pub fn fill_from<R: Read>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        let max = max.min(self.free());
        if max == 0 {
            return Ok(0);
        }
        self.reserve(self.len + max);
        let space = self.tail_space();
        let k = space.len().min(max);
        let n = r.read(&mut space[..k])?;
        self.len += n.min(k);
        Ok(n.min(k))
    }

    /// The content in order, as two slices (the second may be empty).
    pub fn slices(&self) -> (&[u8], &[u8]) {
        let size = self.buf.len();
        if self.len == 0 || size == 0 {
            return (&[], &[]);
        }
        let first = self.len.min(size - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    /// The first `max` bytes of the content, as two slices.
    pub fn peek(&self, max: usize) -> (&[u8], &[u8]) {
        let (a, b) = self.slices();
        if max <= a.len() {
            (&a[..max], &[])
        } else {
            (a, &b[..(max - a.len()).min(b.len())])
        }
    }

    /// Drops the first `n` bytes (all, if fewer are held).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        } else {
            self.head = (self.head + n) % self.buf.len();
        }
    }

    /// Writes the content to `w` until it is drained or `w` would block;
    /// returns the bytes written. Other errors are returned as they are.
    pub fn drain_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            let (a, _) = self.slices();
            match w.write(a) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Drops the content.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The host asked for it; our `OP_REQUEST` is queued or sent and we wait
    /// for the guest's `OP_RESPONSE`.
    LocalInit,
    /// Data can flow.
    Established,
}

/// What the muxer must do after a connection handled something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Keep,
    /// Close the host socket and forget the connection; tell the guest with
    /// `OP_RST`.
    Reset,
    /// Close the host socket and forget the connection; the guest already
    /// considers it gone (it sent `OP_RST`).
    Drop,
}

/// One guest-host stream connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    guest_cid: u64,
    /// Our port (the host side's).
    local_port: u32,
    /// The guest socket's port.
    peer_port: u32,
    state: ConnState,

    // Guest to host.
    to_host: ByteRing,
    /// Bytes to write to the host before any guest data (the `OK` line of a
    /// host-initiated connection). Not credit-accounted: the guest never sent them.
    host_preamble: ByteRing,
    /// Guest bytes received (wrapping), for checking the guest against its credit.
    rx_cnt: Wrapping<u32>,
    /// Guest bytes written to the host socket (wrapping): our `fwd_cnt`.
    fwd_cnt: Wrapping<u32>,
    /// The `fwd_cnt` the guest last heard from us.
    last_fwd_cnt_sent: Wrapping<u32>,

    // Host to guest.
    to_guest: ByteRing,
    /// Bytes sent to the guest (wrapping).
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,

    // Control packets owed to the guest.
    pending_request: bool,
    pending_response: bool,
    pending_credit_update: bool,
    /// Set once we asked the guest for credit, so a stalled connection does not
    /// ask on every rx buffer; cleared when credit arrives.
    credit_requested: bool,
    /// The host socket reached end of file (or the guest will not receive).
    host_eof: bool,
    /// Our `OP_SHUTDOWN` for `host_eof` has been sent.
    shutdown_sent: bool,
    /// Shutdown flags the guest sent (`SHUTDOWN_*`).
    guest_shutdown: u32,
    /// We shut down the host socket's write side (guest will send no more).
    host_write_closed: bool,

    /// The events this connection's fd is registered for, if any.
    pub(super) registered: Option<EventSet>,
}

impl Connection {
    fn new(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        state: ConnState,
    ) -> Self {
        Self {
            stream,
            guest_cid,
            local_port,
            peer_port,
            state,
            to_host: ByteRing::new(TO_HOST_BUF_SIZE as usize),
            host_preamble: ByteRing::new(64),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            to_guest: ByteRing::new(TO_GUEST_BUF_SIZE),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            pending_request: false,
            pending_response: false,
            pending_credit_update: false,
            credit_requested: false,
            host_eof: false,
            shutdown_sent: false,
            guest_shutdown: 0,
            host_write_closed: false,
            registered: None,
        }
    }

    /// A connection the host asked for: the guest gets `OP_REQUEST` to
    /// `peer_port`. `early` are bytes the host sent after its `CONNECT` line;
    /// they reach the guest once it accepts.
    pub fn new_local(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        early: &[u8],
    ) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            local_port,
            peer_port,
            ConnState::LocalInit,
        );
        c.pending_request = true;
        c.to_guest.push(early);
        c
    }

    /// A connection the guest asked for with `req`, already connected to the
    /// host socket: the guest gets `OP_RESPONSE`.
    pub fn new_peer(stream: UnixStream, guest_cid: u64, req: &Header) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            req.dst_port,
            req.src_port,
            ConnState::Established,
        );
        c.pending_response = true;
        c.update_peer_credit(req);
        c
    }

    /// The host socket's fd.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// The host side's port.
    pub fn local_port(&self) -> u32 {
        self.local_port
    }

    /// The guest side's port.
    pub fn peer_port(&self) -> u32 {
        self.peer_port
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Host-to-guest bytes buffered.
    pub fn to_guest_len(&self) -> usize {
        self.to_guest.len()
    }

    /// Guest-to-host bytes buffered.
    pub fn to_host_len(&self) -> usize {
        self.to_host.len()
    }

    /// How many bytes the guest can take now: its buffer minus what is in
    /// flight. A guest reporting more consumed than we sent gets zero, not
    /// a huge wrapped credit.
    pub fn peer_free(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_free() > 0 {
            self.credit_requested = false;
        }
    }

    /// A header from us to the guest on this connection, carrying our credit.
    fn header(&self, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: TO_HOST_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The `OP_RST` that ends this connection for the guest.
    pub fn rst_header(&self) -> Header {
        self.header(OP_RST)
    }

    // How many more host bytes we may read: what the guest could take beyond
    // what is already buffered, within our bound.
    fn read_budget(&self) -> usize {
        if self.state != ConnState::Established
            || self.host_eof
            || self.guest_shutdown & SHUTDOWN_RCV != 0
        {
            return 0;
        }
        let credit = (self.peer_free() as usize).saturating_sub(self.to_guest.len());
        credit.min(self.to_guest.free())
    }

    fn has_host_output(&self) -> bool {
        !self.host_write_closed && (!self.host_preamble.is_empty() || !self.to_host.is_empty())
    }

    /// The epoll events the host socket should be watched for now, `None`
    /// for "not at all": a socket we cannot serve would otherwise report its
    /// hang-up forever. A connection waiting for the guest's answer is
    /// watched with an empty set, which still reports a hang-up, so a host
    /// that gives up does not leave it behind.
    pub fn wanted_events(&self) -> Option<EventSet> {
        let mut set = EventSet::empty();
        if self.read_budget() > 0 {
            set |= EventSet::IN;
        }
        if self.has_host_output() {
            set |= EventSet::OUT;
        }
        if set.is_empty() && self.state != ConnState::LocalInit {
            return None;
        }
        Some(set)
    }

    /// The host socket hung up. Only matters before the guest answered: the
    /// host process gave up waiting, so the connection goes (with a reset if
    /// the guest has seen the request). Later, reads and writes find out.
    pub fn host_hung_up(&self) -> Verdict {
        match (self.state, self.pending_request) {
            (ConnState::LocalInit, true) => Verdict::Drop,
            (ConnState::LocalInit, false) => Verdict::Reset,
            (ConnState::Established, _) => Verdict::Keep,
        }
    }

    fn can_send_data(&self) -> bool {
        self.state == ConnState::Established && !self.to_guest.is_empty() && self.peer_free() > 0
    }

    fn owes_shutdown(&self) -> bool {
        self.host_eof && !self.shutdown_sent && self.to_guest.is_empty()
    }

    fn owes_credit_request(&self) -> bool {
        self.state == ConnState::Established
            && !self.to_guest.is_empty()
            && self.peer_free() == 0
            && !self.credit_requested
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx(&self) -> bool {
        self.has_rx_within(usize::MAX)
    }

    /// Whether the connection has a packet for the guest that fits an rx
    /// buffer with room for `max_payload` bytes of data.
    pub fn has_rx_within(&self, max_payload: usize) -> bool {
        self.pending_request
            || self.pending_response
            || (self.can_send_data() && max_payload > 0)
            || self.pending_credit_update
            || self.owes_shutdown()
            || self.owes_credit_request()
    }

    /// Produces the next packet for the guest, with at most `max_payload`
    /// bytes of data, through `emit(header, payload_a, payload_b)`. State is
    /// committed only if `emit` succeeds, so a failed write loses nothing.
    /// Returns `Ok(None)` when there is nothing to send.
    pub fn next_rx<T, F>(&mut self, max_payload: usize, emit: F) -> io::Result<Option<T>>
    where
        F: FnOnce(&Header, &[u8], &[u8]) -> io::Result<T>,
    {
        if self.pending_request {
            let out = emit(&self.header(OP_REQUEST), &[], &[])?;
            self.pending_request = false;
            self.last_fwd_cnt_sent = self.fwd_cnt;
            return Ok(Some(out));
        }
        if self.pending_response {
            let out = emit(&self.header(OP_RESPONSE), &[], &[])?;
            self.pending_response = false;
            self.last_fwd_cnt_sent = self.fwd_cnt;
            return Ok(Some(out));
        }
        if self.can_send_data() && max_payload > 0 {
            let n = self
                .to_guest
                .len()
                .min(self.peer_free() as usize)
                .min(max_payload);
            let (a, b) = self.to_guest.peek(n);
            let mut hdr = self.header(OP_RW);
            // n <= peer_free, a u32.
            hdr.len = u32::try_from(n).unwrap_or(u32::MAX);
            let out = emit(&hdr, a, b)?;
            self.to_guest.consume(n);
            self.tx_cnt += Wrapping(hdr.len);
            self.last_fwd_cnt_sent = self.fwd_cnt;
            // Every packet carries our credit, so a separate update is moot.
            self.pending_credit_update = false;
            return Ok(Some(out));
        }
        if self.pending_credit_update {
            let out = emit(&self.header(OP_CREDIT_UPDATE), &[], &[])?;
            self.pending_credit_update = false;
            self.last_fwd_cnt_sent = self.fwd_cnt;
            return Ok(Some(out));
        }
        if self.owes_shutdown() {
            let mut hdr = self.header(OP_SHUTDOWN);
            hdr.flags = SHUTDOWN_SEND;
            let out = emit(&hdr, &[], &[])?;
            self.shutdown_sent = true;
            self.last_fwd_cnt_sent = self.fwd_cnt;
            return Ok(Some(out));
        }
        if self.owes_credit_request() {
            let out = emit(&self.header(OP_CREDIT_REQUEST), &[], &[])?;
            self.credit_requested = true;
            self.last_fwd_cnt_sent = self.fwd_cnt;
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// Handles a packet from the guest for this connection. `payload` is the
    /// data of an `OP_RW`.
    pub fn recv_from_guest(&mut self, hdr: &Header, payload: &[u8]) -> Verdict {
        if hdr.op == OP_RST {
            return Verdict::Drop;
        }
        self.update_peer_credit(hdr);
        match (self.state, hdr.op) {
            (ConnState::LocalInit, OP_RESPONSE) => {
                self.state = ConnState::Established;
                let line = format!("OK {}\n", self.local_port);
                self.host_preamble.push(line.as_bytes());
                self.flush_to_host()
            }
            (ConnState::Established, OP_RW) => self.recv_data(payload),
            (ConnState::Established, OP_CREDIT_UPDATE) => Verdict::Keep,
            (ConnState::Established, OP_CREDIT_REQUEST) => {
                self.pending_credit_update = true;
                Verdict::Keep
            }
            (ConnState::Established, OP_SHUTDOWN) => self.recv_shutdown(hdr.flags),
            // A request for a live connection, a response to nothing, data
            // before the handshake, unknown operations: the spec has no
            // meaning for them, and Linux resets in the same cases.
            _ => Verdict::Reset,
        }
    }

    fn recv_data(&mut self, payload: &[u8]) -> Verdict {
        if payload.is_empty() {
            return Verdict::Keep;
        }
        if self.guest_shutdown & SHUTDOWN_SEND != 0 || self.host_write_closed {
            return Verdict::Reset;
        }
        // The guest may have at most buf_alloc bytes unacknowledged by our
        // fwd_cnt; more means it ignored its credit.
        let Ok(n) = u32::try_from(payload.len()) else {
            return Verdict::Reset;
        };
        let unacked = (self.rx_cnt - self.fwd_cnt).0;
        if u64::from(unacked) + u64::from(n) > u64::from(TO_HOST_BUF_SIZE) {
            return Verdict::Reset;
        }
        self.rx_cnt += Wrapping(n);
        let mut rest = payload;
        // Fast path: write straight to the socket when nothing is queued.
        if self.to_host.is_empty() && self.host_preamble.is_empty() {
            match write_some(&mut self.stream, rest) {
                Ok(w) => {
                    self.fwd_cnt += Wrapping(u32::try_from(w).unwrap_or(0));
                    rest = &rest[w..];
                }
                Err(_) => return Verdict::Reset,
            }
        }
        // Cannot fall short: the credit check above bounds the buffered bytes.
        self.to_host.push(rest);
        self.note_credit();
        Verdict::Keep
    }

    fn recv_shutdown(&mut self, flags: u32) -> Verdict {
        self.guest_shutdown |= flags & SHUTDOWN_BOTH;
        if self.guest_shutdown & SHUTDOWN_RCV != 0 && !self.host_eof {
            // Nobody will read what the host sends: drop it, and make the
            // host's further writes fail instead of filling a dead buffer.
            self.host_eof = true;
            self.shutdown_sent = true;
            self.to_guest.clear();
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        self.flush_to_host()
    }

    /// Writes queued bytes to the host socket, then applies what the guest's
    /// shutdown flags call for once the queue is empty.
    pub fn flush_to_host(&mut self) -> Verdict {
        if !self.host_write_closed {
            if let Err(e) = self.host_preamble.drain_to(&mut self.stream) {
                log::debug!("vsock: write to host port {}: {e}", self.local_port);
                return Verdict::Reset;
            }
            if self.host_preamble.is_empty() {
                match self.to_host.drain_to(&mut self.stream) {
                    Ok(n) => {
                        self.fwd_cnt += Wrapping(u32::try_from(n).unwrap_or(0));
                        self.note_credit();
                    }
                    Err(e) => {
                        log::debug!("vsock: write to host port {}: {e}", self.local_port);
                        return Verdict::Reset;
                    }
                }
            }
        }
        if self.host_preamble.is_empty() && self.to_host.is_empty() {
            if self.guest_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_closed {
                self.host_write_closed = true;
                let _ = self.stream.shutdown(Shutdown::Write);
            }
            // Both directions are closed by the guest and everything it sent
            // has reached the host: answer with the RST that ends a clean close.
            if self.guest_shutdown == SHUTDOWN_BOTH {
                return Verdict::Reset;
            }
        }
        Verdict::Keep
    }

    // Schedules a credit update when the guest believes we are nearly full
    // but we have freed space since we last told it.
    fn note_credit(&mut self) {
        let guest_view_used = (self.rx_cnt - self.last_fwd_cnt_sent).0;
        let guest_view_free = TO_HOST_BUF_SIZE.saturating_sub(guest_view_used);
        if self.fwd_cnt != self.last_fwd_cnt_sent && guest_view_free < CREDIT_UPDATE_THRESHOLD {
            self.pending_credit_update = true;
        }
    }

    /// Reads from the host socket as far as the guest's credit and our bound
    /// allow, without blocking. Returns `Reset` on socket errors.
    pub fn read_from_host(&mut self) -> Verdict {
        loop {
            let budget = self.read_budget();
            if budget == 0 {
                return Verdict::Keep;
            }
            match self.to_guest.fill_from(&mut self.stream, budget) {
                Ok(0) => {
                    self.host_eof = true;
                    return Verdict::Keep;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Keep,
                Err(e) => {
                    log::debug!("vsock: read from host port {}: {e}", self.local_port);
                    return Verdict::Reset;
                }
            }
        }
    }

    /// Hands the host socket back (to be unregistered before it is closed).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

// One non-blocking write; "would block" is zero bytes, not an error.
fn write_some(w: &mut UnixStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match w.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_keeps_order() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        r.consume(4);
        assert_eq!(r.push(b"ghijklmn"), 6);
        assert_eq!(r.free(), 0);
        let (a, b) = r.slices();
        let all: Vec<u8> = a.iter().chain(b).copied().collect();
        assert_eq!(all, b"efghijkl");
        let (a, b) = r.peek(3);
        assert_eq!([a, b].concat(), b"efg");
        r.consume(100);
        assert!(r.is_empty());
    }

    #[test]
    fn ring_fill_from_respects_max_and_bound() {
        let mut r = ByteRing::new(10);
        let mut src: &[u8] = b"0123456789abcdef";
        assert_eq!(r.fill_from(&mut src, 4).unwrap(), 4);
        r.consume(2);
        while r.free() > 0 {
            assert!(r.fill_from(&mut src, 100).unwrap() > 0);
        }
        let (a, b) = r.slices();
        assert_eq!([a, b].concat(), b"23456789ab");
        assert_eq!(r.fill_from(&mut src, 100).unwrap(), 0);
    }

    #[test]
    fn ring_drains_to_writer() {
        let mut r = ByteRing::new(4);
        r.push(b"wxyz");
        r.consume(2);
        r.push(b"12");
        let mut out = Vec::new();
        assert_eq!(r.drain_to(&mut out).unwrap(), 4);
        assert_eq!(out, b"yz12");
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn guest_hdr(op: u16, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 7,
            dst_port: 9,
            type_: TYPE_STREAM,
            op,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    fn take(c: &mut Connection, max: usize) -> Option<(Header, Vec<u8>)> {
        c.next_rx(max, |h, a, b| Ok((*h, [a, b].concat()))).unwrap()
    }

    #[test]
    fn credit_limits_host_reads_and_data() {
        let (ours, mut host) = pair();
        let mut c = Connection::new_peer(ours, 3, &guest_hdr(OP_REQUEST, 100, 0));
        assert_eq!(take(&mut c, 4096).unwrap().0.op, OP_RESPONSE);
        host.write_all(&[7u8; 1000]).unwrap();
        assert_eq!(c.read_from_host(), Verdict::Keep);
        assert_eq!(c.to_guest_len(), 100);
        assert_eq!(c.wanted_events(), None);
        let (h, d) = take(&mut c, 60).unwrap();
        assert_eq!((h.op, d.len()), (OP_RW, 60));
        let (h, d) = take(&mut c, 4096).unwrap();
        assert_eq!((h.op, d.len()), (OP_RW, 40));
        // Out of credit with nothing buffered: nothing to say.
        assert!(take(&mut c, 4096).is_none());
        // The guest consumed 50 bytes.
        c.recv_from_guest(&guest_hdr(OP_CREDIT_UPDATE, 100, 50), &[]);
        assert_eq!(c.peer_free(), 50);
        assert_eq!(c.wanted_events(), Some(EventSet::IN));
    }

    #[test]
    fn lying_fwd_cnt_gives_no_credit() {
        let (ours, _host) = pair();
        let c = Connection::new_peer(ours, 3, &guest_hdr(OP_REQUEST, 100, 5));
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn guest_exceeding_our_credit_is_reset() {
        let (ours, _host) = pair();
        let mut c = Connection::new_peer(ours, 3, &guest_hdr(OP_REQUEST, 100, 0));
        // The host never reads, so everything beyond the socket buffer queues.
        let chunk = vec![1u8; 64 * 1024];
        let mut verdict = Verdict::Keep;
        for _ in 0..64 {
            verdict = c.recv_from_guest(&guest_hdr(OP_RW, 100, 0), &chunk);
            if verdict != Verdict::Keep {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Reset);
        assert!(c.to_host_len() <= TO_HOST_BUF_SIZE as usize);
    }
}
