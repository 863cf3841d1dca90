//! End-to-end tests of the vsock device: real guest memory with hand-built
//! virtqueues on the driver side, real Unix sockets on the host side, and
//! the device driven by an `EventManager`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::connection::TO_HOST_BUF_SIZE;
use super::packet::*;
use super::*;
use crate::test_utils::{guest_memory, pump, recording_interrupt, RecordingIrq};
use crate::virtio::{ActivateContext, GuestMemory, VirtioDevice, TYPE_VSOCK, VIRTIO_F_VERSION_1};

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 256;
const MEM_SIZE: usize = 64 << 20;
// Each descriptor index owns one buffer slot this large in its queue's data area.
const SLOT: u64 = 0x11000;
const RING_BASES: [u64; 3] = [0x0, 0x1_0000, 0x2_0000];
const DATA_BASES: [u64; 3] = [0x10_0000, 0x10_0000 + SLOT * 256, 0x10_0000 + SLOT * 512];
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const RX_BUF: u32 = 4096 + HDR_LEN as u32;

// The driver's view of one split virtqueue.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    data: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
    kick: EventFd,
}

impl Ring {
    fn write_desc(&self, mem: &GuestMemory, idx: u16, addr: u64, len: u32, flags: u16) {
        let next = (idx + 1) % QSIZE;
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        mem.write_obj(d, GuestAddress(self.desc + 16 * u64::from(idx)))
            .unwrap();
    }

    fn slot(&self, idx: u16) -> u64 {
        self.data + SLOT * u64::from(idx)
    }

    // Publishes a chain of (bytes or length, writable) segments; returns its head.
    fn add_chain(&mut self, mem: &GuestMemory, segs: &[Seg]) -> u16 {
        let head = self.next_desc;
        for (i, seg) in segs.iter().enumerate() {
            let idx = self.next_desc;
            let flags = if i + 1 < segs.len() { F_NEXT } else { 0 };
            let (addr, len, flags) = match seg {
                Seg::Read(bytes) => {
                    mem.write_slice(bytes, GuestAddress(self.slot(idx)))
                        .unwrap();
                    (self.slot(idx), bytes.len() as u32, flags)
                }
                Seg::Write(len) => (self.slot(idx), *len, flags | F_WRITE),
                Seg::Raw(addr, len, f) => (*addr, *len, flags | f),
            };
            self.write_desc(mem, idx, addr, len, flags);
            self.next_desc = (idx + 1) % QSIZE;
        }
        let entry = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(entry)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        self.kick.write(1).unwrap();
        head
    }

    // New used-ring entries: (descriptor head, length).
    fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

enum Seg {
    Read(Vec<u8>),
    Write(u32),
    // Address, length, extra flags: for chains pointing where they should not.
    Raw(u64, u32, u16),
}

struct Harness {
    _dir: tempfile::TempDir,
    uds: PathBuf,
    mem: GuestMemory,
    dev: Arc<Mutex<Vsock>>,
    em: EventManager<Arc<Mutex<Vsock>>>,
    irq: Arc<RecordingIrq>,
    rx: Ring,
    tx: Ring,
    ev: Ring,
    rx_posted: usize,
}

fn ghdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

// Activates `dev` with fresh queues laid out in `mem`, as the transport
// would at DRIVER_OK; returns the driver's rx, tx and event rings.
fn activate(dev: &Mutex<Vsock>, mem: &GuestMemory) -> (Ring, Ring, Ring, Arc<RecordingIrq>) {
    let mut queues = Vec::new();
    let mut evts = Vec::new();
    let mut rings = Vec::new();
    for q in 0..3 {
        let mq = MockSplitQueue::create(mem, GuestAddress(RING_BASES[q]), QSIZE);
        let queue: Queue = mq.create_queue().unwrap();
        queues.push(queue);
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        evts.push(kick.try_clone().unwrap());
        rings.push(Ring {
            desc: mq.desc_table_addr().0,
            avail: mq.avail_addr().0,
            used: mq.used_addr().0,
            data: DATA_BASES[q],
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            kick,
        });
    }
    let (interrupt, irq) = recording_interrupt();
    dev.lock()
        .unwrap()
        .activate(ActivateContext {
            mem: mem.clone(),
            interrupt,
            queues,
            queue_evts: evts,
        })
        .unwrap();
    let ev = rings.pop().unwrap();
    let tx = rings.pop().unwrap();
    let rx = rings.pop().unwrap();
    (rx, tx, ev, irq)
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let mem = guest_memory(&[(0, MEM_SIZE)]);
        let dev = Arc::new(Mutex::new(Vsock::new(GUEST_CID, uds.clone()).unwrap()));
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(dev.clone());
        let (rx, tx, ev, irq) = activate(&dev, &mem);
        let mut h = Self {
            _dir: dir,
            uds,
            mem,
            dev,
            em,
            irq,
            rx,
            tx,
            ev,
            rx_posted: 0,
        };
        h.pump();
        assert!(h.dev.lock().unwrap().is_activated());
        h
    }

    fn reactivate(&mut self) {
        let (rx, tx, ev, irq) = activate(&self.dev, &self.mem);
        self.rx = rx;
        self.tx = tx;
        self.ev = ev;
        self.irq = irq;
        self.rx_posted = 0;
        self.pump();
    }

    // Runs the event loop until it has been idle for a moment.
    fn pump(&mut self) {
        pump(&mut self.em, 200);
    }

    fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            self.rx.add_chain(&self.mem, &[Seg::Write(len)]);
        }
        self.rx_posted += n;
    }

    // Keeps `n` rx buffers available.
    fn refill_rx(&mut self, n: usize) {
        if self.rx_posted < n {
            self.post_rx(n - self.rx_posted, RX_BUF);
        }
    }

    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let mut hdr = hdr;
        if hdr.op == OP_RW {
            hdr.len = payload.len() as u32;
        }
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.tx.add_chain(&self.mem, &[Seg::Read(bytes)]);
        self.pump();
    }

    // Packets the guest received since the last call.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rx.take_used(&self.mem);
        self.rx_posted -= used.len();
        used.into_iter()
            .filter(|&(_, len)| len as usize >= HDR_LEN)
            .map(|(id, len)| {
                let mut buf = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut buf, GuestAddress(self.rx.slot(id)))
                    .unwrap();
                let mut raw = [0u8; HDR_LEN];
                raw.copy_from_slice(&buf[..HDR_LEN]);
                let hdr = Header::from_bytes(&raw);
                assert_eq!(hdr.len as usize, buf.len() - HDR_LEN);
                assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, GUEST_CID));
                (hdr, buf[HDR_LEN..].to_vec())
            })
            .collect()
    }

    fn recv_one(&mut self) -> (Header, Vec<u8>) {
        let mut got = self.recv();
        assert_eq!(got.len(), 1, "expected one packet, got {got:?}");
        got.remove(0)
    }

    fn host_connect(&mut self, port: u32) -> UnixStream {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.pump();
        s
    }

    // A host-initiated connection to guest port `port`, accepted by a guest
    // advertising `buf_alloc`. Returns the host socket and the host port.
    fn establish_from_host(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut s = self.host_connect(port);
        self.refill_rx(8);
        self.pump();
        let (req, _) = self.recv_one();
        assert_eq!(
            (req.op, req.dst_port, req.type_),
            (OP_REQUEST, port, TYPE_STREAM)
        );
        let mut resp = ghdr(OP_RESPONSE, port, req.src_port);
        resp.buf_alloc = buf_alloc;
        self.send(resp, &[]);
        assert_eq!(
            read_line(&mut s),
            format!("OK {}", req.src_port),
            "host expects OK <host port>"
        );
        (s, req.src_port)
    }

    // A guest-initiated connection from guest port 1111 to host port `port`,
    // with a host listener at `<uds>_<port>`.
    fn establish_from_guest(&mut self, port: u32) -> UnixStream {
        let listener = UnixListener::bind(format!("{}_{port}", self.uds.display())).unwrap();
        self.refill_rx(8);
        self.send(ghdr(OP_REQUEST, 1111, port), &[]);
        let (resp, _) = self.recv_one();
        assert_eq!(
            (resp.op, resp.src_port, resp.dst_port),
            (OP_RESPONSE, port, 1111)
        );
        assert_eq!(resp.buf_alloc, TO_HOST_BUF_SIZE);
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn metrics(&self) -> VsockMetrics {
        self.dev.lock().unwrap().metrics()
    }

    fn stats(&self) -> MuxerStats {
        self.dev.lock().unwrap().muxer().stats()
    }

    fn connections(&self) -> usize {
        self.dev.lock().unwrap().muxer().connection_count()
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

// The device closed its end: end of file, or a reset when it closed with
// bytes of ours unread.
fn assert_eof(s: &mut UnixStream) {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(n) => assert_eq!(n, 0, "host socket should be closed"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn device_can_move_to_the_event_loop_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Vsock>();
}

#[test]
fn config_space_and_features() {
    let h = Harness::new();
    let dev = h.dev.lock().unwrap();
    assert_eq!(dev.device_type(), TYPE_VSOCK);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE; 3]);
    assert_eq!(dev.device_features(), 1 << VIRTIO_F_VERSION_1);
    let mut cfg = [0xffu8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), GUEST_CID);
    let mut hi = [0xffu8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    let mut past = [0xffu8; 4];
    dev.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn new_rejects_reserved_cids_and_removes_socket_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        assert!(matches!(
            Vsock::new(cid, path.clone()),
            Err(VsockError::InvalidCid(_))
        ));
    }
    let dev = Vsock::new(3, path.clone()).unwrap();
    assert!(matches!(
        Vsock::new(4, path.clone()),
        Err(VsockError::Muxer(MuxerError::PathExists(_)))
    ));
    drop(dev);
    assert!(!path.exists());
    assert!(Vsock::new(3, dir.path().join("nope/v.sock")).is_err());
}

#[test]
fn host_connect_sends_request_and_response_yields_ok() {
    let mut h = Harness::new();
    let mut s = h.host_connect(1234);
    // No rx buffer yet: the request waits.
    assert!(h.recv().is_empty());
    h.post_rx(1, RX_BUF);
    h.pump();
    let (req, payload) = h.recv_one();
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!(req.dst_port, 1234);
    assert!(payload.is_empty());
    assert!(h.irq.take() > 0, "guest interrupted");
    let mut resp = ghdr(OP_RESPONSE, 1234, req.src_port);
    resp.buf_alloc = 4096;
    h.send(resp, &[]);
    assert_eq!(read_line(&mut s), format!("OK {}", req.src_port));
    assert_eq!(h.stats().host_connects, 1);
    // A second connection to the same guest port gets its own host port.
    h.post_rx(1, RX_BUF);
    let _s2 = h.host_connect(1234);
    let (req2, _) = h.recv_one();
    assert_eq!(req2.op, OP_REQUEST);
    assert_ne!(req2.src_port, req.src_port);
}

#[test]
fn bad_connect_line_closes_host_socket() {
    let mut h = Harness::new();
    let mut s = UnixStream::connect(&h.uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"HELLO 12\n").unwrap();
    h.pump();
    assert_eof(&mut s);
    let mut s = UnixStream::connect(&h.uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(&[b'7'; 100]).unwrap();
    h.pump();
    assert_eof(&mut s);
    assert_eq!(h.stats().host_connects_refused, 2);
    assert_eq!(h.connections(), 0);
}

#[test]
fn host_giving_up_before_the_guest_answers_is_forgotten() {
    let mut h = Harness::new();
    // Before the request reached the guest: dropped quietly.
    let s = h.host_connect(77);
    drop(s);
    h.pump();
    assert_eq!(h.connections(), 0);
    h.refill_rx(4);
    h.pump();
    assert!(h.recv().is_empty());
    // After: the guest is told.
    let s = h.host_connect(78);
    let (req, _) = h.recv_one();
    assert_eq!(req.op, OP_REQUEST);
    drop(s);
    h.pump();
    let (rst, _) = h.recv_one();
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port),
        (OP_RST, req.src_port, 78)
    );
    assert_eq!(h.connections(), 0);
}

#[test]
fn host_half_close_before_the_answer_keeps_the_connection() {
    let mut h = Harness::new();
    let mut s = h.host_connect(79);
    s.write_all(b"early").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    h.refill_rx(4);
    h.pump();
    let (req, _) = h.recv_one();
    h.send(ghdr(OP_RESPONSE, 79, req.src_port), &[]);
    assert_eq!(read_line(&mut s), format!("OK {}", req.src_port));
    let got = h.recv();
    assert_eq!(got[0].0.op, OP_RW);
    assert_eq!(got[0].1, b"early");
    assert_eq!((got[1].0.op, got[1].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
}

#[test]
fn guest_refusal_closes_host_connection() {
    let mut h = Harness::new();
    let mut s = h.host_connect(77);
    h.post_rx(1, RX_BUF);
    h.pump();
    let (req, _) = h.recv_one();
    h.send(ghdr(OP_RST, 77, req.src_port), &[]);
    assert_eof(&mut s);
    assert_eq!(h.connections(), 0);
}

#[test]
fn host_to_guest_data_respects_guest_credit() {
    let mut h = Harness::new();
    let buf_alloc = 8192;
    let (mut s, hport) = h.establish_from_host(52, buf_alloc);
    let data = pattern(40_000);
    s.write_all(&data).unwrap();
    let mut got = Vec::new();
    let mut fwd_cnt = 0u32;
    for _round in 0..20 {
        h.refill_rx(16);
        h.pump();
        for (hdr, payload) in h.recv() {
            assert_eq!((hdr.src_port, hdr.dst_port), (hport, 52));
            if hdr.op == OP_RW {
                got.extend_from_slice(&payload);
            } else {
                assert_eq!(hdr.op, OP_CREDIT_UPDATE, "unexpected {hdr:?}");
            }
        }
        // Never more in flight than the guest's buffer.
        assert!(got.len() as u32 - fwd_cnt <= buf_alloc);
        if got.len() == data.len() {
            break;
        }
        assert_eq!(
            got.len() as u32 - fwd_cnt,
            buf_alloc,
            "out of credit, the device must stop"
        );
        // Nothing more arrives until the guest frees space.
        h.refill_rx(16);
        h.pump();
        assert!(h.recv().is_empty());
        fwd_cnt = got.len() as u32;
        let mut upd = ghdr(OP_CREDIT_UPDATE, 52, hport);
        upd.buf_alloc = buf_alloc;
        upd.fwd_cnt = fwd_cnt;
        h.send(upd, &[]);
    }
    assert_eq!(got, data);
}

#[test]
fn guest_to_host_data_with_split_header() {
    let mut h = Harness::new();
    let (mut s, hport) = h.establish_from_host(52, 65536);
    let mut hdr = ghdr(OP_RW, 52, hport);
    hdr.len = 9;
    let raw = hdr.to_bytes();
    // Header over three descriptors, payload over two, then a writable
    // descriptor the device must ignore.
    h.tx.add_chain(
        &h.mem,
        &[
            Seg::Read(raw[..10].to_vec()),
            Seg::Read(raw[10..30].to_vec()),
            Seg::Read(raw[30..].to_vec()),
            Seg::Read(b"hello".to_vec()),
            Seg::Read(b" you".to_vec()),
            Seg::Write(64),
        ],
    );
    h.pump();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello you");
    h.send(ghdr(OP_RW, 52, hport), &pattern(60_000));
    let mut big = vec![0u8; 60_000];
    s.read_exact(&mut big).unwrap();
    assert_eq!(big, pattern(60_000));
    assert_eq!(h.tx.take_used(&h.mem).len(), 3);
    assert_eq!(h.metrics().tx_malformed, 0);
}

#[test]
fn guest_connects_to_listening_host_port() {
    let mut h = Harness::new();
    let mut s = h.establish_from_guest(5000);
    h.send(ghdr(OP_RW, 1111, 5000), b"ping");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").unwrap();
    h.pump();
    let (hdr, payload) = h.recv_one();
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RW, 5000, 1111));
    assert_eq!(payload, b"pong");
    assert_eq!(h.stats().guest_connects, 1);
}

#[test]
fn guest_connect_to_missing_port_is_reset() {
    let mut h = Harness::new();
    h.post_rx(1, RX_BUF);
    h.send(ghdr(OP_REQUEST, 1111, 6000), &[]);
    let (hdr, _) = h.recv_one();
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RST, 6000, 1111));
    assert_eq!(h.stats().guest_connects_refused, 1);
    assert_eq!(h.connections(), 0);
}

#[test]
fn guest_rst_closes_host_socket() {
    let mut h = Harness::new();
    let (mut s, hport) = h.establish_from_host(52, 65536);
    h.send(ghdr(OP_RST, 52, hport), &[]);
    assert_eof(&mut s);
    assert_eq!(h.connections(), 0);
    // Nothing is said back to a reset.
    h.refill_rx(4);
    h.pump();
    assert!(h.recv().is_empty());
}

#[test]
fn guest_shutdown_flushes_closes_host_and_resets() {
    let mut h = Harness::new();
    let mut s = h.establish_from_guest(5001);
    h.send(ghdr(OP_RW, 1111, 5001), b"bye");
    let mut shut = ghdr(OP_SHUTDOWN, 1111, 5001);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, &[]);
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"bye", "guest SEND shutdown is EOF for the host");
    // The host can still send until the guest stops receiving too.
    s.write_all(b"late").unwrap();
    h.pump();
    assert_eq!(h.recv_one().1, b"late");
    shut.flags = SHUTDOWN_RCV;
    h.send(shut, &[]);
    let (hdr, _) = h.recv_one();
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RST, 5001, 1111));
    assert_eq!(h.connections(), 0);
    assert!(s.write_all(&[0u8; 4096]).is_err(), "host socket is closed");
}

#[test]
fn host_eof_sends_shutdown_to_guest() {
    let mut h = Harness::new();
    let (s, hport) = h.establish_from_host(52, 65536);
    (&s).write_all(b"tail").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    h.refill_rx(4);
    h.pump();
    let got = h.recv();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"tail"[..]));
    assert_eq!((got[1].0.op, got[1].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    // The guest closes too: reset and gone.
    let mut shut = ghdr(OP_SHUTDOWN, 52, hport);
    shut.flags = SHUTDOWN_BOTH;
    h.send(shut, &[]);
    assert_eq!(h.recv_one().0.op, OP_RST);
    assert_eq!(h.connections(), 0);
}

#[test]
fn credit_request_is_answered() {
    let mut h = Harness::new();
    let (_s, hport) = h.establish_from_host(52, 65536);
    h.refill_rx(4);
    h.send(ghdr(OP_CREDIT_REQUEST, 52, hport), &[]);
    let (hdr, _) = h.recv_one();
    assert_eq!(hdr.op, OP_CREDIT_UPDATE);
    assert_eq!((hdr.buf_alloc, hdr.fwd_cnt), (TO_HOST_BUF_SIZE, 0));
}

#[test]
fn guest_gets_credit_update_as_host_drains() {
    let mut h = Harness::new();
    let mut s = h.establish_from_guest(5002);
    h.refill_rx(8);
    let mut sent = 0u32;
    let mut last_update = None;
    // Send 240 KiB: past the point where the guest's view of our free space
    // runs low, so the device tells it about what the host consumed.
    for _ in 0..4 {
        h.send(ghdr(OP_RW, 1111, 5002), &pattern(60 * 1024));
        sent += 60 * 1024;
        let mut buf = vec![0u8; 60 * 1024];
        s.read_exact(&mut buf).unwrap();
        h.pump();
        for (hdr, _) in h.recv() {
            assert_eq!(hdr.op, OP_CREDIT_UPDATE);
            last_update = Some(hdr.fwd_cnt);
        }
    }
    assert_eq!(last_update, Some(sent));
}

#[test]
fn slow_host_peer_does_not_stall_others() {
    let mut h = Harness::new();
    let _stuck = h.establish_from_guest(5003);
    let listener = UnixListener::bind(format!("{}_5004", h.uds.display())).unwrap();
    h.send(ghdr(OP_REQUEST, 2222, 5004), &[]);
    assert_eq!(h.recv_one().0.op, OP_RESPONSE);
    let (mut other, _) = listener.accept().unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Fill the stuck host's socket and our buffer up to the credit we gave.
    for _ in 0..4 {
        h.send(ghdr(OP_RW, 1111, 5003), &pattern(64 * 1024));
    }
    h.send(ghdr(OP_RW, 2222, 5004), b"still here");
    let mut buf = [0u8; 10];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    // The stuck connection is alive, its excess waiting in our buffer.
    assert!(h
        .dev
        .lock()
        .unwrap()
        .muxer()
        .connection(5003, 1111)
        .is_some());
}

#[test]
fn guest_overrunning_credit_is_reset() {
    let mut h = Harness::new();
    let _stuck = h.establish_from_guest(5005);
    h.refill_rx(8);
    for _ in 0..40 {
        h.send(ghdr(OP_RW, 1111, 5005), &pattern(64 * 1024));
        if h.connections() == 0 {
            break;
        }
    }
    assert_eq!(h.connections(), 0);
    let rst: Vec<_> = h.recv().into_iter().filter(|p| p.0.op == OP_RST).collect();
    assert_eq!(rst.len(), 1);
}

#[test]
fn hostile_tx_chains_are_survived() {
    let mut h = Harness::new();
    h.refill_rx(32);
    let mut malformed = 0;
    let mut chains = 0;

    // Short header.
    h.tx.add_chain(&h.mem, &[Seg::Read(vec![0u8; 20])]);
    malformed += 1;
    chains += 1;
    // Only a device-writable buffer.
    h.tx.add_chain(&h.mem, &[Seg::Write(4096)]);
    malformed += 1;
    chains += 1;
    // Descriptor outside guest memory.
    h.tx.add_chain(&h.mem, &[Seg::Raw(MEM_SIZE as u64 - 8, 64, 0)]);
    malformed += 1;
    chains += 1;
    // Length field beyond the descriptors: reset.
    let mut hdr = ghdr(OP_RW, 10, 20);
    hdr.len = 100;
    let mut bytes = hdr.to_bytes().to_vec();
    bytes.extend_from_slice(&[1u8; 10]);
    h.tx.add_chain(&h.mem, &[Seg::Read(bytes)]);
    malformed += 1;
    chains += 1;
    // Huge length field: reset.
    hdr.len = u32::MAX;
    h.tx.add_chain(&h.mem, &[Seg::Read(hdr.to_bytes().to_vec())]);
    malformed += 1;
    chains += 1;
    h.pump();
    // Wrong source CID, wrong destination CID: dropped silently.
    let mut spoof = ghdr(OP_REQUEST, 10, 20);
    spoof.src_cid = 99;
    h.send(spoof, &[]);
    let mut elsewhere = ghdr(OP_REQUEST, 10, 20);
    elsewhere.dst_cid = 7;
    h.send(elsewhere, &[]);
    // Unknown operation, unknown type, a stray credit update, a huge len on
    // a non-data op: reset each.
    h.send(ghdr(99, 10, 21), &[]);
    let mut seq = ghdr(OP_REQUEST, 10, 22);
    seq.type_ = 2;
    h.send(seq, &[]);
    h.send(ghdr(OP_CREDIT_UPDATE, 10, 23), &[]);
    let mut odd = ghdr(OP_CREDIT_REQUEST, 10, 24);
    odd.len = u32::MAX;
    h.send(odd, &[]);
    // A reset for nothing gets no answer.
    h.send(ghdr(OP_RST, 10, 25), &[]);
    chains += 7;

    assert_eq!(h.tx.take_used(&h.mem).len(), chains);
    assert_eq!(h.metrics().tx_malformed, malformed);
    let rsts: Vec<(u32, u32)> = h
        .recv()
        .into_iter()
        .map(|(hdr, _)| {
            assert_eq!(hdr.op, OP_RST);
            (hdr.src_port, hdr.dst_port)
        })
        .collect();
    assert_eq!(
        rsts,
        [(20, 10), (20, 10), (21, 10), (22, 10), (23, 10), (24, 10)]
    );
    assert_eq!(h.stats().packets_dropped, 2);

    // Still works.
    let (mut s, hport) = h.establish_from_host(52, 65536);
    // Unknown operation on a live connection resets it.
    h.send(ghdr(42, 52, hport), &[]);
    assert_eq!(h.recv_one().0.op, OP_RST);
    assert_eof(&mut s);
}

#[test]
fn unusable_rx_buffers_are_returned_empty() {
    let mut h = Harness::new();
    h.rx.add_chain(&h.mem, &[Seg::Write(10)]);
    h.rx.add_chain(&h.mem, &[Seg::Raw(MEM_SIZE as u64 + 0x1000, 4096, F_WRITE)]);
    h.rx.add_chain(&h.mem, &[Seg::Read(vec![0u8; 4096])]);
    h.rx_posted += 3;
    h.send(ghdr(OP_REQUEST, 1, 2), &[]);
    // All three come back with nothing in them, then the RST needs a real buffer.
    assert!(h.recv().is_empty());
    assert_eq!(h.metrics().rx_bad_buffers, 3);
    h.post_rx(1, RX_BUF);
    h.pump();
    assert_eq!(h.recv_one().0.op, OP_RST);
}

#[test]
fn reset_closes_connections_and_reactivation_works() {
    let mut h = Harness::new();
    let (mut s, _) = h.establish_from_host(52, 65536);
    h.dev.lock().unwrap().reset();
    h.pump();
    assert_eof(&mut s);
    assert_eq!(h.connections(), 0);
    assert!(!h.dev.lock().unwrap().is_activated());
    // Kicks of the old queues go nowhere.
    h.send(ghdr(OP_REQUEST, 1, 2), &[]);
    assert_eq!(h.metrics().tx_packets, 1);
    h.reactivate();
    let (mut s, hport) = h.establish_from_host(53, 65536);
    h.send(ghdr(OP_RW, 53, hport), b"again");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
}

// Makes the driver claim `ahead` more chains on `ring` than it published and
// kicks the queue, as a broken or hostile driver would.
fn lie_about_avail(mem: &GuestMemory, ring: &Ring, ahead: u16) {
    let idx = ring.avail_idx.wrapping_add(ahead);
    mem.write_obj(idx, GuestAddress(ring.avail + 2)).unwrap();
    ring.kick.write(1).unwrap();
}

#[test]
fn a_lying_tx_avail_index_does_not_spin_the_event_loop() {
    let mut h = Harness::new();
    // More than the 256 entries the queue holds: nothing on it can be
    // trusted, and the device must stop instead of rereading it for ever.
    lie_about_avail(&h.mem, &h.tx, 1000);
    h.pump();
    assert_eq!(
        h.em.run_with_timeout(50).unwrap(),
        0,
        "the device keeps the event loop busy with a broken tx ring"
    );
    assert!(h.tx.take_used(&h.mem).is_empty());
    assert_eq!(h.metrics().tx_packets, 0);
    assert!(h.dev.lock().unwrap().queue_broken(TXQ));
    // The other queues go on: a host connection still reaches the guest.
    let _s = h.host_connect(61);
    h.refill_rx(4);
    h.pump();
    assert_eq!(h.recv_one().0.op, OP_REQUEST);
    // A reset and a new activation bring the device back.
    h.dev.lock().unwrap().reset();
    h.pump();
    h.reactivate();
    let (mut s, hport) = h.establish_from_host(60, 65536);
    h.send(ghdr(OP_RW, 60, hport), b"back");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
}

// Runs the event loop as `pump` does, then checks that it has gone idle.
fn assert_idle(h: &mut Harness, what: &str) {
    h.pump();
    assert_eq!(h.em.run_with_timeout(50).unwrap(), 0, "{what}");
}

#[test]
fn a_lying_rx_avail_index_stops_rx_without_spinning() {
    let mut h = Harness::new();
    h.post_rx(1, RX_BUF);
    let _s = h.host_connect(62);
    assert_eq!(h.recv_one().0.op, OP_REQUEST);
    // A second request waits for a buffer when the driver breaks the ring.
    let _s2 = h.host_connect(63);
    assert!(h.recv().is_empty());
    lie_about_avail(&h.mem, &h.rx, 1000);
    assert_idle(
        &mut h,
        "the device keeps the event loop busy with a broken rx ring",
    );
    assert!(h.dev.lock().unwrap().queue_broken(RXQ));
    assert!(h.rx.take_used(&h.mem).is_empty());
    // Host events keep coming and are handled without touching the ring.
    let _s3 = h.host_connect(64);
    assert_idle(&mut h, "host events on a broken rx ring");
    assert!(h.rx.take_used(&h.mem).is_empty());
    // The tx queue goes on: a reset for nothing is taken and needs no reply.
    h.send(ghdr(OP_RST, 10, 25), &[]);
    assert_eq!(h.tx.take_used(&h.mem).len(), 1);
    h.dev.lock().unwrap().reset();
    h.pump();
    h.reactivate();
    let (mut s, hport) = h.establish_from_host(65, 65536);
    h.send(ghdr(OP_RW, 65, hport), b"back");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
}

#[test]
fn a_lying_event_queue_avail_index_is_left_alone() {
    let mut h = Harness::new();
    // The driver posts an event buffer, then lies about the index.
    let head = h.ev.add_chain(&h.mem, &[Seg::Write(8)]);
    assert_eq!(head, 0);
    lie_about_avail(&h.mem, &h.ev, 1000);
    assert_idle(
        &mut h,
        "the device keeps the event loop busy with a broken event ring",
    );
    // No transport event to send: the buffer stays with the driver.
    assert!(h.ev.take_used(&h.mem).is_empty());
    let (mut s, hport) = h.establish_from_host(66, 65536);
    h.send(ghdr(OP_RW, 66, hport), b"fine");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"fine");
}
