//! Test scaffolding for the net device: a private network namespace per test
//! (every tap a test makes lives and dies there, the host's interfaces are
//! never touched), a packet socket to see the tap from the namespace's side,
//! and a driver-side view of the two queues in real guest memory.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{Net, NetMetrics, Tap, QUEUE_SIZE, VNET_HDR_LEN};
use crate::test_utils::{activate_context, recording_interrupt, RecordingIrq, TestDesc, TestQueue};
use crate::virtio::{GuestMemory, VirtioDevice};

/// How long a test waits for a frame before failing.
const DEADLINE: Duration = Duration::from_secs(5);

/// Runs `f` on a thread moved into a network namespace of its own. Fails
/// the test (never skips) when no namespace can be made.
pub(crate) fn in_netns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let before = netns_inode();
            // SAFETY: unshare takes flags only; CLONE_NEWNET moves just this
            // thread into a fresh network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "cannot create a private network namespace for this test \
                     (unshare(CLONE_NEWNET): {}); the net tests need root or \
                     CAP_SYS_ADMIN and refuse to run in the host's namespace",
                    io::Error::last_os_error()
                );
            }
            assert_ne!(
                before,
                netns_inode(),
                "unshare(CLONE_NEWNET) left the thread in its old namespace"
            );
            // No IPv6 on new interfaces: router solicitations and MLD
            // reports would otherwise show up on the tap between the frames
            // a test sends. These sysctls are this namespace's own.
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat own network namespace")
        .ino()
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: all-zero bytes are a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

/// Sets IFF_UP on interface `name` of the calling thread's namespace.
pub(crate) fn set_link_up(name: &str) {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the ifreq that `ifr` points at.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    assert_eq!(r, 0, "SIOCGIFFLAGS {name}: {}", io::Error::last_os_error());
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq that `ifr` points at.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    assert_eq!(r, 0, "SIOCSIFFLAGS {name}: {}", io::Error::last_os_error());
}

/// An AF_PACKET socket bound to one interface: sees every frame the
/// interface receives (what the guest sent) and sends frames out of it
/// (which the tap hands to the guest).
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub(crate) fn bind(ifname: &str) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = CString::new(ifname).unwrap();
        // SAFETY: `c` is a NUL-terminated string alive for the call.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(index, 0, "no interface {ifname}");
        // SAFETY: all-zero bytes are a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind packet socket: {}", io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO reads a timeval of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO: {}", io::Error::last_os_error());
        Self { fd }
    }

    pub(crate) fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for reads of its length during the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send on packet socket: {}",
            io::Error::last_os_error()
        );
    }

    /// Waits for `expected` to arrive, skipping other frames.
    pub(crate) fn recv_matching(&self, expected: &[u8]) -> Vec<u8> {
        let start = Instant::now();
        let mut buf = vec![0u8; 70_000];
        let mut others = 0;
        while start.elapsed() < DEADLINE {
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ),
                    "recv: {e}"
                );
                continue;
            }
            let got = &buf[..n as usize];
            if got == expected {
                return got.to_vec();
            }
            others += 1;
        }
        panic!("frame never seen on the interface ({others} other frames seen)");
    }
}

/// An Ethernet frame with the local experimental EtherType 0x88b5 and a
/// payload derived from `seed`, `len` bytes in all.
pub(crate) fn test_frame(seed: u8, len: usize) -> Vec<u8> {
    assert!(len >= 14);
    let mut f = vec![0x02, 0xaa, 0xbb, 0xcc, 0xdd, seed];
    f.extend_from_slice(&[0x02, 0x11, 0x22, 0x33, 0x44, seed]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..len - 14).map(|i| (i as u8) ^ seed));
    f
}

/// Reads packets from `tap` until one carries `frame`; returns its length.
pub(crate) fn read_tap_until(tap: &Tap, buf: &mut [u8], frame: &[u8]) -> usize {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        match tap.read_packet(buf) {
            Ok(n) if n >= VNET_HDR_LEN && &buf[VNET_HDR_LEN..n] == frame => return n,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("tap read: {e}"),
        }
    }
    panic!("frame never read from the tap");
}

/// Where the receive queue's rings live.
pub(crate) const RX_RING: GuestAddress = GuestAddress(0);
/// Where the transmit queue's rings live.
pub(crate) const TX_RING: GuestAddress = GuestAddress(0x4000);
/// Where test buffers start.
pub(crate) const BUFS: u64 = 0x10_0000;

/// The driver's side of one queue: hands out descriptor slots in order and
/// remembers which used entries a test has already looked at.
pub(crate) struct DriverQueue<'a> {
    pub(crate) q: TestQueue<'a>,
    mem: &'a GuestMemory,
    next_desc: u16,
    used_seen: u16,
}

impl<'a> DriverQueue<'a> {
    pub(crate) fn new(mem: &'a GuestMemory, at: GuestAddress) -> Self {
        Self {
            q: TestQueue::new(mem, at, QUEUE_SIZE),
            mem,
            next_desc: 0,
            used_seen: 0,
        }
    }

    pub(crate) fn queue(&self) -> Queue {
        self.q.create_queue()
    }

    fn take_slots(&mut self, n: u16) -> u16 {
        assert!(
            self.next_desc + n <= QUEUE_SIZE,
            "test ran out of descriptors"
        );
        let first = self.next_desc;
        self.next_desc += n;
        first
    }

    /// Adds a well-formed chain of `descs` and makes it available.
    pub(crate) fn add_chain(&mut self, descs: &[TestDesc]) -> u16 {
        let first = self.take_slots(descs.len() as u16);
        self.q.add_chain(first, descs)
    }

    /// Adds `descs` verbatim as `(addr, len, flags, next)`, `next` relative
    /// to the first slot, and makes the first available.
    pub(crate) fn add_raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let first = self.take_slots(descs.len() as u16);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            self.q
                .set_desc(first + i as u16, addr, len, flags, first.wrapping_add(next));
        }
        self.q.publish(first);
        first
    }

    /// Adds one descriptor pointing at an indirect table of `n` chained
    /// readable descriptors built at `table`, each `len` bytes at `data`.
    pub(crate) fn add_indirect(&mut self, table: u64, n: u16, data: u64, len: u32) -> u16 {
        for i in 0..n {
            let flags = if i + 1 < n {
                VRING_DESC_F_NEXT as u16
            } else {
                0
            };
            let d = RawDescriptor::from(SplitDescriptor::new(data, len, flags, i + 1));
            self.mem
                .write_obj(d, GuestAddress(table + u64::from(i) * 16))
                .unwrap();
        }
        self.add_raw(&[(table, u32::from(n) * 16, VRING_DESC_F_INDIRECT as u16, 0)])
    }

    /// Used entries `(head, len)` published since the last call.
    pub(crate) fn take_used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.q.used_idx();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let (id, len) = self.q.used_elem(self.used_seen);
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A net device activated on two driver queues and pumped by its own event
/// manager, as the VMM would.
pub(crate) struct Harness {
    pub(crate) net: Arc<Mutex<Net>>,
    pub(crate) em: EventManager<Arc<Mutex<Net>>>,
    pub(crate) rx_evt: EventFd,
    pub(crate) tx_evt: EventFd,
    pub(crate) irq: Arc<RecordingIrq>,
    pub(crate) metrics: Arc<NetMetrics>,
}

impl Harness {
    pub(crate) fn new(tap: Tap, mem: &GuestMemory, rx: &DriverQueue, tx: &DriverQueue) -> Self {
        let net = Net::new(tap, None).unwrap();
        let metrics = net.metrics();
        let net = Arc::new(Mutex::new(net));
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(net.clone());
        let mut h = Self {
            net,
            em,
            rx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            tx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            irq: Arc::new(RecordingIrq::default()),
            metrics,
        };
        h.activate(mem, rx, tx);
        h
    }

    /// Activates the device on `rx` and `tx`, as the transport does on
    /// DRIVER_OK, and lets the event loop take the activation in.
    pub(crate) fn activate(&mut self, mem: &GuestMemory, rx: &DriverQueue, tx: &DriverQueue) {
        let (interrupt, irq) = recording_interrupt();
        self.irq = irq;
        let (ctx, mut evts) = activate_context(mem, interrupt, vec![rx.queue(), tx.queue()]);
        self.tx_evt = evts.pop().unwrap();
        self.rx_evt = evts.pop().unwrap();
        self.net.lock().unwrap().activate(ctx).unwrap();
        self.pump();
        let net = self.net.lock().unwrap();
        assert!(net.activation.is_active());
        // Polling may already be off again if a frame was waiting.
        assert!(net.tap_registered);
    }

    /// Runs the event loop until nothing is ready; returns the events seen.
    pub(crate) fn pump(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..100 {
            let n = self.em.run_with_timeout(0).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
        panic!("event loop still busy after 100 rounds");
    }

    /// Runs the event loop until `done` holds, failing after a deadline.
    pub(crate) fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            self.em.run_with_timeout(20).unwrap();
        }
    }
}

/// Reads a counter.
pub(crate) fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
