//! virtio-vsock processed in-process: host-to-guest stream throughput through
//! the device model. A host thread connects to the device's Unix socket,
//! asks for a guest port (`CONNECT <port>\n`) and writes a stream; the
//! benchmark plays the guest driver: it answers the connection request with
//! a response on the tx queue, keeps the rx queue stocked with 4 KiB
//! buffers, and sends credit updates as it consumes data, as Linux's driver
//! does.
//!
//! `cargo bench -p devices --features test-utils --bench virtio_vsock`
//!
//! The guest side is hand-built descriptor chains in real guest memory (no
//! VM, no KVM); the device runs on its own event loop (an `EventManager`) on
//! the benchmark's thread. What is measured is bytes delivered into guest rx
//! buffers per second, from the host's first write to the last byte in
//! guest memory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::test_utils::{
    activate_context, guest_memory, recording_interrupt, TestDesc, TestQueue,
};
use devices::virtio::vsock::packet::{
    Header, HDR_LEN, HOST_CID, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RW, TYPE_STREAM,
};
use devices::virtio::vsock::Vsock;
use devices::virtio::VirtioDevice;
use event_manager::{EventManager, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};

const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 5000;
const QUEUE_SIZE: u16 = 256;
const RX_QUEUE_AT: u64 = 0x10_0000;
const TX_QUEUE_AT: u64 = 0x11_0000;
const EV_QUEUE_AT: u64 = 0x12_0000;
const TX_BUFS_AT: u64 = 0x80_0000;
const RX_BUFS_AT: u64 = 0x100_0000;
const RX_BUF_LEN: u32 = 4096 + HDR_LEN as u32;
const RX_SLOT: u64 = 0x2000;
/// The guest's receive buffer for the connection (Linux's default).
const GUEST_BUF_ALLOC: u32 = 256 * 1024;
const STREAM_MIB: usize = 256;
const RUNS: usize = 5;

fn guest_hdr(op: u16, host_port: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port: host_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: GUEST_BUF_ALLOC,
        fwd_cnt,
        ..Header::default()
    }
}

/// One host-to-guest transfer of `total` bytes; returns the elapsed time.
fn host_to_guest(dir: &Path, run: usize, total: usize) -> Duration {
    let uds = dir.join(format!("vsock{run}.sock"));
    let mem = guest_memory(&[(0, 64 << 20)]);
    // A running guest's memory is resident: fault it in before timing.
    mem.write_slice(&vec![0u8; 64 << 20], GuestAddress(0))
        .expect("prefault");
    let dev = Arc::new(Mutex::new(
        Vsock::new(GUEST_CID, uds.clone()).expect("vsock"),
    ));
    let mut em = EventManager::<Arc<Mutex<Vsock>>>::new().expect("event manager");
    em.add_subscriber(dev.clone());
    let rxq = TestQueue::new(&mem, GuestAddress(RX_QUEUE_AT), QUEUE_SIZE);
    let txq = TestQueue::new(&mem, GuestAddress(TX_QUEUE_AT), QUEUE_SIZE);
    let evq = TestQueue::new(&mem, GuestAddress(EV_QUEUE_AT), QUEUE_SIZE);
    for i in 0..QUEUE_SIZE {
        rxq.add_chain(
            i,
            &[TestDesc::writable(
                RX_BUFS_AT + u64::from(i) * RX_SLOT,
                RX_BUF_LEN,
            )],
        );
    }
    let (interrupt, _irq) = recording_interrupt();
    let (ctx, evts) = activate_context(
        &mem,
        interrupt,
        vec![rxq.create_queue(), txq.create_queue(), evq.create_queue()],
    );
    dev.lock().expect("device").activate(ctx).expect("activate");
    em.run_with_timeout(0).expect("event loop");

    let host = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&uds).expect("connect");
        s.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
            .expect("connect line");
        let mut line = String::new();
        BufReader::new(s.try_clone().expect("clone"))
            .read_line(&mut line)
            .expect("OK line");
        assert!(line.starts_with("OK "), "host got {line:?}");
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("host write");
            left -= n;
        }
        start
    });

    let mut tx_next: u16 = 0;
    let mut send = |h: Header| {
        let at = TX_BUFS_AT + u64::from(tx_next) * 0x100;
        mem.write_slice(&h.to_bytes(), GuestAddress(at))
            .expect("tx header");
        txq.add_chain(tx_next, &[TestDesc::readable(at, HDR_LEN as u32)]);
        tx_next = (tx_next + 1) % QUEUE_SIZE;
    };
    let mut used_seen: u16 = 0;
    let mut received = 0usize;
    let mut fwd_cnt: u32 = 0;
    let mut credit_sent: u32 = 0;
    let mut host_port = 0;
    let mut end = None;
    while received < total {
        em.run_with_timeout(100).expect("event loop");
        let used = rxq.used_idx();
        let mut kick_tx = false;
        while used_seen != used {
            let (id, len) = rxq.used_elem(used_seen);
            used_seen = used_seen.wrapping_add(1);
            let at = RX_BUFS_AT + u64::from(id) * RX_SLOT;
            let mut raw = [0u8; HDR_LEN];
            mem.read_slice(&mut raw, GuestAddress(at))
                .expect("rx header");
            let h = Header::from_bytes(&raw);
            match h.op {
                OP_REQUEST => {
                    host_port = h.src_port;
                    send(guest_hdr(OP_RESPONSE, host_port, 0));
                    kick_tx = true;
                }
                OP_RW => {
                    assert_eq!(len as usize, HDR_LEN + h.len as usize);
                    received += h.len as usize;
                    // The guest application reads at once.
                    fwd_cnt = fwd_cnt.wrapping_add(h.len);
                }
                _ => {}
            }
            rxq.publish(id as u16);
        }
        // Like Linux: tell the peer once free space it does not know of
        // reaches a quarter of the buffer.
        if host_port != 0 && fwd_cnt.wrapping_sub(credit_sent) >= GUEST_BUF_ALLOC / 4 {
            send(guest_hdr(OP_CREDIT_UPDATE, host_port, fwd_cnt));
            credit_sent = fwd_cnt;
            kick_tx = true;
        }
        if kick_tx {
            evts[1].write(1).expect("tx kick");
        }
        evts[0].write(1).expect("rx kick");
        if received >= total {
            end = Some(Instant::now());
        }
    }
    let start = host.join().expect("host thread");
    end.expect("finished") - start
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = STREAM_MIB << 20;
    println!(
        "virtio-vsock in-process, host Unix socket -> guest rx queue ({} x {} KiB buffers), {STREAM_MIB} MiB stream, median of {RUNS} runs",
        QUEUE_SIZE,
        (RX_BUF_LEN as usize - HDR_LEN) / 1024
    );
    let mut secs = Vec::new();
    for run in 0..RUNS {
        secs.push(host_to_guest(dir.path(), run, total).as_secs_f64());
    }
    let t = median(secs.clone());
    let (lo, hi) = (
        secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "{:<22} device {:>6.0} MB/s ({:.0}..{:.0} over the runs)",
        "host -> guest stream",
        total as f64 / t / 1e6,
        total as f64 / hi / 1e6,
        total as f64 / lo / 1e6
    );
}
