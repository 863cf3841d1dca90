//! virtio-fs tests: configuration and connection errors without a backend,
//! then the device behind the MMIO transport against the real Rust
//! virtiofsd, spawned on a temporary directory and socket, driven like a
//! guest driver would (and like a hostile one would).
//!
//! virtiofsd comes from `$RUNM_VIRTIOFSD` or from `scripts/virtiofsd.sh`
//! (through test-support), which builds it once and caches it; a test that
//! cannot get it fails and says how to install it.

use std::io::ErrorKind;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use test_support::Virtiofsd;
use vm_memory::{Bytes, FileOffset, GuestAddress};

use super::*;
use crate::bus::BusDevice;
use crate::interrupt::VIRTIO_MMIO_INT_VRING;
use crate::test_utils::{default_guest_memory, recording_interrupt, RecordingIrq};
use crate::test_utils::{read_bytes, TestDesc, TestQueue};
use crate::virtio::mmio::{regs, status, MmioTransport};
use crate::virtio::{GuestMemory, VirtioDevice, TYPE_FS, VIRTIO_F_VERSION_1};

// ------------------------------------------------------ test scaffolding

/// Guest memory backed by one temporary file, mapped shared: what a
/// vhost-user backend can map (the VMM uses a memfd the same way).
fn shared_memory(regions: &[(u64, usize)]) -> GuestMemory {
    let file = Arc::new(tempfile::tempfile().expect("temp file"));
    let total: usize = regions.iter().map(|r| r.1).sum();
    file.set_len(total as u64).expect("size the file");
    let mut offset = 0u64;
    let ranges: Vec<_> = regions
        .iter()
        .map(|&(start, len)| {
            let r = (
                GuestAddress(start),
                len,
                Some(FileOffset::from_arc(file.clone(), offset)),
            );
            offset += len as u64;
            r
        })
        .collect();
    GuestMemory::from_ranges_with_files(ranges).expect("shared guest memory")
}

/// Connects a device to `vfs`; the socket appears a moment before the
/// daemon listens, so a refused connection is retried briefly.
fn connect(vfs: &Virtiofsd, mem: &GuestMemory) -> Fs {
    connect_with(FsConfig::new("share", vfs.socket()), vfs, mem)
}

fn connect_with(config: FsConfig, vfs: &Virtiofsd, mem: &GuestMemory) -> Fs {
    let mut fs = connect_unstarted(&config, vfs, mem);
    // As the VMM does once jailed.
    fs.start_watchdog(None).expect("start the watchdog");
    fs
}

/// A device as the VMM has it before its jail: no watchdog thread yet.
fn connect_unstarted(config: &FsConfig, vfs: &Virtiofsd, mem: &GuestMemory) -> Fs {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match Fs::new(config, mem) {
            Ok(fs) => return fs,
            Err(FsError::Connect { source, .. })
                if source.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connecting to virtiofsd: {e}\n{}", vfs.log()),
        }
    }
}

const STATUS_FEATURES_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
const STATUS_DRIVER_OK: u32 = STATUS_FEATURES_OK | status::DRIVER_OK;

/// The guest's side: a virtio-fs device behind its MMIO transport, the
/// event loop that relays the backend's calls, and the interrupt line.
struct Guest {
    t: MmioTransport,
    fs: Arc<Mutex<Fs>>,
    em: EventManager<Arc<Mutex<Fs>>>,
    irq: Arc<RecordingIrq>,
    mem: GuestMemory,
}

impl Guest {
    fn new(fs: Fs, mem: &GuestMemory) -> Self {
        let fs = Arc::new(Mutex::new(fs));
        let (interrupt, irq) = recording_interrupt();
        let t = MmioTransport::new(mem.clone(), interrupt, fs.clone()).expect("transport");
        let mut em = EventManager::new().expect("event manager");
        em.add_subscriber(fs.clone());
        Guest {
            t,
            fs,
            em,
            irq,
            mem: mem.clone(),
        }
    }

    fn r(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&mut self, offset: u64, value: u32) {
        self.t.write(offset, &value.to_le_bytes());
    }

    /// Accepts every feature the device offers; returns them.
    fn negotiate(&mut self) -> u64 {
        self.w(regs::STATUS, status::ACKNOWLEDGE);
        self.w(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let mut features = 0u64;
        for sel in 0..2u32 {
            self.w(regs::DEVICE_FEATURES_SEL, sel);
            features |= u64::from(self.r(regs::DEVICE_FEATURES)) << (32 * sel);
        }
        for sel in 0..2u32 {
            self.w(regs::DRIVER_FEATURES_SEL, sel);
            self.w(regs::DRIVER_FEATURES, (features >> (32 * sel)) as u32);
        }
        self.w(regs::STATUS, STATUS_FEATURES_OK);
        assert_eq!(self.r(regs::STATUS), STATUS_FEATURES_OK, "features refused");
        features
    }

    fn setup_queue(&mut self, sel: u32, tq: &TestQueue<'_>) {
        self.setup_queue_raw(
            sel,
            u32::from(tq.size()),
            [tq.desc_table_addr().0, tq.avail_addr().0, tq.used_addr().0],
        );
    }

    fn setup_queue_raw(&mut self, sel: u32, num: u32, [desc, avail, used]: [u64; 3]) {
        self.w(regs::QUEUE_SEL, sel);
        self.w(regs::QUEUE_NUM, num);
        for (low, addr) in [
            (regs::QUEUE_DESC_LOW, desc),
            (regs::QUEUE_DRIVER_LOW, avail),
            (regs::QUEUE_DEVICE_LOW, used),
        ] {
            self.w(low, addr as u32);
            self.w(low + 4, (addr >> 32) as u32);
        }
        self.w(regs::QUEUE_READY, 1);
    }

    /// Sets DRIVER_OK; returns the status the device shows afterwards.
    fn driver_ok(&mut self) -> u32 {
        self.w(regs::STATUS, STATUS_DRIVER_OK);
        self.r(regs::STATUS)
    }

    fn reset(&mut self) {
        self.w(regs::STATUS, 0);
        assert_eq!(self.r(regs::STATUS), 0);
    }

    /// Runs the event loop until the used ring of `tq` reaches `idx`.
    fn wait_used(&mut self, tq: &TestQueue<'_>, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tq.used_idx() != idx {
            assert!(
                Instant::now() < deadline,
                "used ring stuck at {} waiting for {idx}",
                tq.used_idx()
            );
            self.em.run_with_timeout(10).expect("event loop");
        }
        // Let the call that goes with it arrive and be relayed.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.irq.count() == 0 && Instant::now() < deadline {
            self.em.run_with_timeout(10).expect("event loop");
        }
    }
}

// FUSE wire format (include/uapi/linux/fuse.h): the parts of FUSE_INIT the
// tests use.
const FUSE_INIT: u32 = 26;
const FUSE_IN_HEADER_LEN: usize = 40;
const FUSE_OUT_HEADER_LEN: usize = 16;
const FUSE_INIT_IN_LEN: usize = 16;
const FUSE_INIT_OUT_LEN: usize = 64;

/// A FUSE_INIT request (protocol 7.31, no extended flags).
fn fuse_init_request(unique: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((FUSE_IN_HEADER_LEN + FUSE_INIT_IN_LEN) as u32).to_le_bytes());
    b.extend_from_slice(&FUSE_INIT.to_le_bytes());
    b.extend_from_slice(&unique.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // nodeid
    b.extend_from_slice(&[0u8; 12]); // uid, gid, pid
    b.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    for v in [7u32, 31, 0, 0] {
        // major, minor, max_readahead, flags
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

const REQ_ADDR: u64 = 0x10_0000;
const REPLY_ADDR: u64 = 0x11_0000;
const REPLY_LEN: u32 = 0x1000;

/// Writes a FUSE_INIT request and its reply buffer as chain `head` of `tq`
/// and makes it available.
fn post_fuse_init(mem: &GuestMemory, tq: &TestQueue<'_>, head: u16, unique: u64) {
    let req = fuse_init_request(unique);
    mem.write_slice(&[0u8; REPLY_LEN as usize], GuestAddress(REPLY_ADDR))
        .unwrap();
    mem.write_slice(&req, GuestAddress(REQ_ADDR)).unwrap();
    tq.add_chain(
        head,
        &[
            TestDesc::readable(REQ_ADDR, req.len() as u32),
            TestDesc::writable(REPLY_ADDR, REPLY_LEN),
        ],
    );
}

/// Checks the FUSE_INIT reply for `unique` the backend wrote into guest
/// memory, of `used_len` bytes.
fn assert_fuse_init_reply(mem: &GuestMemory, unique: u64, used_len: u32) {
    let out = read_bytes(mem, REPLY_ADDR, FUSE_OUT_HEADER_LEN + FUSE_INIT_OUT_LEN);
    let u32_at = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().unwrap());
    let len = u32_at(0);
    let error = u32_at(4) as i32;
    let reply_unique = u64::from_le_bytes(out[8..16].try_into().unwrap());
    assert_eq!(error, 0, "FUSE_INIT answered with error {error}");
    assert_eq!(reply_unique, unique);
    assert_eq!(len, used_len, "the used length is the reply's length");
    assert!(
        len as usize >= FUSE_OUT_HEADER_LEN + 8,
        "reply of {len} bytes is too short for fuse_init_out"
    );
    let (major, minor) = (u32_at(16), u32_at(20));
    assert_eq!(major, 7, "FUSE major version");
    assert!(minor >= 31, "FUSE minor version {minor}");
}

// Queue layout the tests use: two queues well apart in the first MiB.
const HIPRIO_AT: u64 = 0x0;
const REQUEST_AT: u64 = 0x8000;
const QUEUE_SIZE: u16 = 16;

// ------------------------------------------------------- without a backend

#[test]
fn tags_and_options_are_checked() {
    for good in ["share", "root-1", "a.b_c", &"t".repeat(TAG_LEN)] {
        check_tag(good).unwrap();
    }
    for bad in ["", "a b", "a,b", "tab\t", "é", &"t".repeat(TAG_LEN + 1)] {
        let e = check_tag(bad).unwrap_err();
        assert!(e.to_string().contains("virtio-fs tag"), "{e}");
    }
    let mut c = FsConfig::new("share", "/s");
    c.check().unwrap();
    c.num_request_queues = 0;
    assert!(c
        .check()
        .unwrap_err()
        .to_string()
        .contains("request queues"));
    c.num_request_queues = 1;
    c.queue_size = 1000;
    assert!(c.check().unwrap_err().to_string().contains("power of two"));
}

#[test]
fn private_memory_is_refused_before_connecting() {
    // The socket does not exist: the memory check comes first.
    let config = FsConfig::new("share", "/nonexistent/vfs.sock");
    let e = Fs::new(&config, &default_guest_memory()).err().unwrap();
    assert!(matches!(e, FsError::MemoryNotShared { addr: 0 }), "{e}");
    assert!(e.to_string().contains("shared guest memory"));
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let e = Fs::new(
        &FsConfig::new("share", &socket),
        &shared_memory(&[(0, 1 << 20)]),
    )
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, FsError::Connect { .. }), "{msg}");
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn a_backend_that_does_not_answer_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts, reads nothing, answers nothing, holds the connection.
    let holder = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let mut config = FsConfig::new("share", &socket);
    config.timeout = Duration::from_millis(200);
    let start = Instant::now();
    let e = Fs::new(&config, &shared_memory(&[(0, 1 << 20)]))
        .err()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            FsError::Timeout {
                request: "GET_FEATURES",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("did not answer GET_FEATURES within 200ms"),
        "{msg}"
    );
    holder.join().unwrap();
}

#[test]
fn a_backend_that_hangs_up_at_once_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rude.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let e = Fs::new(
        &FsConfig::new("share", &socket),
        &shared_memory(&[(0, 1 << 20)]),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, FsError::Request { .. } | FsError::Timeout { .. }),
        "{e}"
    );
    closer.join().unwrap();
}

// ------------------------------------------------ against the real virtiofsd

#[test]
fn handshake_gives_the_device_the_backends_features_and_a_config_space() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let fs = connect(&vfs, &mem);
    assert_eq!(fs.device_type(), TYPE_FS);
    assert_eq!(fs.queue_max_sizes(), &[DEFAULT_QUEUE_SIZE; 2]);
    let features = fs.device_features();
    assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
    assert_eq!(
        features & (1 << 30),
        0,
        "the vhost-user bit is not a virtio feature"
    );
    // Config space: the tag, NUL-padded to 36 bytes, then num_request_queues.
    let mut tag = [0xffu8; TAG_LEN];
    fs.read_config(0, &mut tag);
    assert_eq!(&tag[..5], b"share");
    assert!(tag[5..].iter().all(|&b| b == 0));
    let mut n = [0u8; 4];
    fs.read_config(TAG_LEN as u64, &mut n);
    assert_eq!(u32::from_le_bytes(n), 1);
    let mut past = [0xffu8; 4];
    fs.read_config(TAG_LEN as u64 + 4, &mut past);
    assert_eq!(past, [0xff; 4], "nothing past the config space is written");
    assert!(!fs.backend_broken());
}

#[test]
fn fuse_init_through_the_request_queue_is_answered_in_guest_memory() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let mut g = Guest::new(connect(&vfs, &mem), &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);
    assert_eq!(g.fs.lock().unwrap().started_queues(), &[0, 1]);

    post_fuse_init(&g.mem, &request, 0, 0x1234);
    g.w(regs::QUEUE_NOTIFY, 1);
    g.wait_used(&request, 1);
    let (head, len) = request.used_elem(0);
    assert_eq!(head, 0);
    assert_fuse_init_reply(&g.mem, 0x1234, len);
    assert!(
        g.irq.count() >= 1,
        "the backend's call raised the interrupt"
    );
    assert_ne!(g.r(regs::INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING, 0);
    assert_eq!(hiprio.used_idx(), 0);
}

#[test]
fn rings_the_backend_cannot_follow_are_refused_and_the_backend_stays_usable() {
    // Two guest memory regions, contiguous in guest-physical space but two
    // separate mappings: no ring part may straddle them.
    const REGION: usize = 8 << 20;
    let mem = shared_memory(&[(0, REGION), (REGION as u64, REGION)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let mut g = Guest::new(connect(&vfs, &mem), &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);

    // A used ring whose last bytes lie in the second region.
    g.negotiate();
    g.setup_queue(0, &hiprio);
    let straddling = REGION as u64 - 64;
    g.setup_queue_raw(
        1,
        u32::from(QUEUE_SIZE),
        [
            request.desc_table_addr().0,
            request.avail_addr().0,
            straddling,
        ],
    );
    let s = g.driver_ok();
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0, "status {s:#x}");
    assert!(g.fs.lock().unwrap().started_queues().is_empty());
    g.reset();

    // A queue size the transport cannot take (3 is not a power of two)
    // leaves the queue at its maximum, whose descriptor table then runs
    // into the second region.
    g.negotiate();
    g.setup_queue(0, &hiprio);
    let desc_near_end = REGION as u64 - 0x1000;
    g.setup_queue_raw(
        1,
        3,
        [desc_near_end, request.avail_addr().0, request.used_addr().0],
    );
    let s = g.driver_ok();
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0, "status {s:#x}");
    g.reset();
    assert!(
        !g.fs.lock().unwrap().backend_broken(),
        "guest errors never reach the backend"
    );

    // The same device, set up properly, serves requests.
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);
    post_fuse_init(&g.mem, &request, 0, 7);
    g.w(regs::QUEUE_NOTIFY, 1);
    g.wait_used(&request, 1);
    assert_fuse_init_reply(&g.mem, 7, request.used_elem(0).1);
}

#[test]
fn driver_ok_with_unconfigured_queues_starts_only_the_ready_ones() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let mut g = Guest::new(connect(&vfs, &mem), &mem);

    // No queue at all: nothing is started, nothing breaks.
    g.negotiate();
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);
    assert!(g.fs.lock().unwrap().started_queues().is_empty());
    // Notifying a queue that was never set up goes nowhere.
    g.w(regs::QUEUE_NOTIFY, 0);
    g.w(regs::QUEUE_NOTIFY, 1);
    crate::test_utils::pump(&mut g.em, 5);
    assert_eq!(g.irq.count(), 0);
    g.reset();

    // Only the request queue: it is served, the high-priority one is left
    // alone (the backend never hears of its zero addresses).
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);
    assert_eq!(g.fs.lock().unwrap().started_queues(), &[1]);
    post_fuse_init(&g.mem, &request, 0, 99);
    g.w(regs::QUEUE_NOTIFY, 1);
    g.wait_used(&request, 1);
    assert_fuse_init_reply(&g.mem, 99, request.used_elem(0).1);
    assert!(!g.fs.lock().unwrap().backend_broken());
}

#[test]
fn reset_mid_request_stops_the_rings_and_the_device_comes_back() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let mut g = Guest::new(connect(&vfs, &mem), &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);

    // Post and kick, then reset before the event loop ran: the backend may
    // or may not have answered; either way the rings stop with the reset.
    post_fuse_init(&g.mem, &request, 0, 1);
    g.w(regs::QUEUE_NOTIFY, 1);
    g.reset();
    assert!(g.fs.lock().unwrap().started_queues().is_empty());
    assert_eq!(g.r(regs::INTERRUPT_STATUS), 0);
    crate::test_utils::pump(&mut g.em, 5);
    let irqs_after_reset = g.irq.take();
    assert!(
        irqs_after_reset <= 1,
        "{irqs_after_reset} interrupts after reset"
    );
    assert_eq!(
        g.r(regs::INTERRUPT_STATUS),
        0,
        "a call for the old rings is not relayed"
    );
    // Requests posted to the stopped rings are not served.
    let used_before = request.used_idx();
    post_fuse_init(&g.mem, &request, 2, 2);
    std::thread::sleep(Duration::from_millis(100));
    crate::test_utils::pump(&mut g.em, 5);
    assert_eq!(request.used_idx(), used_before, "a stopped ring was served");

    // A new driver instance with fresh rings is served again.
    mem.write_slice(&[0u8; 0x8000], GuestAddress(REQUEST_AT))
        .unwrap();
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);
    post_fuse_init(&g.mem, &request, 0, 3);
    g.w(regs::QUEUE_NOTIFY, 1);
    g.wait_used(&request, 1);
    assert_fuse_init_reply(&g.mem, 3, request.used_elem(0).1);
}

#[test]
fn a_backend_that_dies_is_reported_and_nothing_hangs() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let mut vfs = Virtiofsd::spawn_in_temp_dir();
    let mut g = Guest::new(connect(&vfs, &mem), &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok(), STATUS_DRIVER_OK);

    vfs.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.fs.lock().unwrap().backend_broken() {
        assert!(Instant::now() < deadline, "the hang-up was not noticed");
        g.em.run_with_timeout(10).unwrap();
    }
    // The watch is gone: a closed socket does not keep the loop spinning.
    assert_eq!(crate::test_utils::pump(&mut g.em, 3), 0);

    // The guest resets and tries again: both return at once.
    let start = Instant::now();
    g.reset();
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    let s = g.driver_ok();
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0, "status {s:#x}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_backend_that_stops_answering_costs_a_vcpu_at_most_the_timeout() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let mut config = FsConfig::new("share", vfs.socket());
    config.timeout = Duration::from_millis(300);
    let mut g = Guest::new(connect_with(config, &vfs, &mem), &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);

    // The daemon freezes (alive, socket open, no answers): DRIVER_OK, which
    // waits for the backend's acknowledgements, gives up after the timeout.
    vfs.signal("STOP");
    let start = Instant::now();
    let s = g.driver_ok();
    let took = start.elapsed();
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0, "status {s:#x}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(g.fs.lock().unwrap().backend_broken());
    // From then on nothing waits for it.
    let start = Instant::now();
    g.reset();
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_ne!(g.driver_ok() & status::DEVICE_NEEDS_RESET, 0);
    assert!(start.elapsed() < Duration::from_millis(200));
}

#[test]
fn requests_wait_for_the_watchdog_whose_setup_runs_on_its_own_thread() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let vfs = Virtiofsd::spawn_in_temp_dir();
    let fs = connect_unstarted(&FsConfig::new("share", vfs.socket()), &vfs, &mem);
    // Before its watchdog starts, activating the device is refused rather
    // than left unbounded.
    let mut g = Guest::new(fs, &mem);
    let hiprio = TestQueue::new(&mem, GuestAddress(HIPRIO_AT), QUEUE_SIZE);
    let request = TestQueue::new(&mem, GuestAddress(REQUEST_AT), QUEUE_SIZE);
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_ne!(g.driver_ok() & status::DEVICE_NEEDS_RESET, 0);
    g.reset();

    // A setup that fails fails the start; one that works runs on the
    // watchdog's thread, and then the device works.
    let e =
        g.fs.lock()
            .unwrap()
            .start_watchdog(Some(Box::new(|| Err("no filter".into()))))
            .unwrap_err()
            .to_string();
    assert!(e.contains("watchdog") && e.contains("no filter"), "{e}");
    let (tx, rx) = std::sync::mpsc::channel();
    let main = std::thread::current().id();
    g.fs.lock()
        .unwrap()
        .start_watchdog(Some(Box::new(move || {
            tx.send(std::thread::current().id() != main).unwrap();
            Ok(())
        })))
        .unwrap();
    assert!(rx.recv().unwrap(), "the setup ran on the caller's thread");
    g.negotiate();
    g.setup_queue(0, &hiprio);
    g.setup_queue(1, &request);
    assert_eq!(g.driver_ok() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn dropping_the_device_lets_the_backend_exit() {
    let mem = shared_memory(&[(0, 16 << 20)]);
    let mut vfs = Virtiofsd::spawn_in_temp_dir();
    let fs = connect(&vfs, &mem);
    drop(fs);
    assert!(
        vfs.exits_within(Duration::from_secs(5)),
        "virtiofsd still running after its frontend went away:\n{}",
        vfs.log()
    );
}
