//! virtio-blk processed in-process: the device's queue handler serving 4 KiB
//! random reads and 1 MiB sequential reads from an image in the page cache,
//! next to plain `pread` of the same offsets on the same file, into a buffer
//! of the benchmark's own and into guest memory (the same `pread`s the
//! device makes, without the queue): the last pair isolates what the virtio
//! queue handling itself costs.
//!
//! `cargo bench -p devices --features test-utils --bench virtio_blk`
//!
//! The guest side is hand-built descriptor chains in real guest memory (no
//! VM, no KVM): what is measured is the device model's own cost per request
//! (parsing the chain, the file read into guest memory, the used ring), which
//! is the same on any host. Target: at least 0.8 of plain pread.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use devices::test_utils::{
    activate_context, guest_memory, recording_interrupt, TestDesc, TestQueue,
};
use devices::virtio::block::{Block, BlockConfig, DiskImage};
use devices::virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress};

const IMAGE_MIB: u64 = 256;
const QUEUE_SIZE: u16 = 256;
const QUEUE_AT: u64 = 0x10_0000;
const HEADERS_AT: u64 = 0x20_0000;
const STATUS_AT: u64 = 0x30_0000;
const DATA_AT: u64 = 0x100_0000;
const VIRTIO_BLK_T_IN: u32 = 0;
const RUNS: usize = 5;

/// xorshift64*: reproducible offsets without a dependency.
struct Rand(u64);
impl Rand {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn make_image(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("bench.img");
    let mut f = File::create(&path).expect("image");
    let mut r = Rand(0x9e37_79b9_7f4a_7c15);
    let chunk: Vec<u8> = (0..1 << 20).map(|_| r.next() as u8).collect();
    for _ in 0..IMAGE_MIB {
        f.write_all(&chunk).expect("fill image");
    }
    f.sync_all().expect("sync");
    // Read it once so both sides start from the page cache.
    let mut buf = vec![0u8; 1 << 20];
    let f = File::open(&path).expect("image");
    for i in 0..IMAGE_MIB {
        f.read_exact_at(&mut buf, i << 20).expect("warm");
    }
    path
}

/// Sector offsets (in bytes) of `n` requests of `size` bytes.
fn offsets(n: usize, size: u64, random: bool) -> Vec<u64> {
    let slots = (IMAGE_MIB << 20) / size;
    let mut r = Rand(42);
    (0..n as u64)
        .map(|i| if random { r.next() % slots } else { i % slots } * size)
        .collect()
}

/// Serves `offs` through the device; returns the time spent inside the
/// device's queue processing only (building the chains is the driver's work).
fn through_device(image: &std::path::Path, offs: &[u64], size: u32) -> Duration {
    let mem = guest_memory(&[(0, 64 << 20)]);
    // A running guest's memory is resident: fault it in before timing.
    mem.write_slice(&vec![0u8; 64 << 20], GuestAddress(0))
        .expect("prefault");
    let q = TestQueue::new(&mem, GuestAddress(QUEUE_AT), QUEUE_SIZE);
    let mut block = Block::new(BlockConfig {
        id: "bench".into(),
        path: image.to_path_buf(),
        read_only: true,
        serial: None,
    })
    .expect("block device");
    block.ack_features(block.device_features());
    let (interrupt, _irq) = recording_interrupt();
    let (ctx, _evts) = activate_context(&mem, interrupt, vec![q.create_queue()]);
    block.activate(ctx).expect("activate");

    // Three descriptors a request; data buffers reused round robin in 32 MiB.
    let per_batch = usize::from(QUEUE_SIZE / 3);
    let data_slots = (32u64 << 20) / u64::from(size);
    let mut spent = Duration::ZERO;
    let mut done = 0u16;
    for (b, batch) in offs.chunks(per_batch).enumerate() {
        for (i, off) in batch.iter().enumerate() {
            let n = (b * per_batch + i) as u64;
            let hdr = HEADERS_AT + (i as u64) * 16;
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
            h[8..].copy_from_slice(&(off / 512).to_le_bytes());
            mem.write_slice(&h, GuestAddress(hdr)).expect("header");
            let data = DATA_AT + (n % data_slots) * u64::from(size);
            q.add_chain(
                (i * 3) as u16,
                &[
                    TestDesc::readable(hdr, 16),
                    TestDesc::writable(data, size),
                    TestDesc::writable(STATUS_AT + i as u64, 1),
                ],
            );
        }
        let t = Instant::now();
        block.process_queue(0);
        spent += t.elapsed();
        done = done.wrapping_add(batch.len() as u16);
        assert_eq!(q.used_idx(), done, "every request completed");
        for (i, off) in batch.iter().enumerate() {
            let status: u8 = mem
                .read_obj(GuestAddress(STATUS_AT + i as u64))
                .expect("status");
            assert_eq!(status, 0, "request {i} of batch {b} at offset {off} failed");
        }
    }
    spent
}

/// The same reads into the same rotation of 32 MiB of (resident) buffers the
/// device writes into, so both sides pay the same memory traffic.
fn through_pread(image: &std::path::Path, offs: &[u64], size: usize) -> Duration {
    let f = File::open(image).expect("image");
    let mut bufs = vec![1u8; 32 << 20];
    let slots = bufs.len() / size;
    let t = Instant::now();
    for (n, &off) in offs.iter().enumerate() {
        let at = (n % slots) * size;
        f.read_exact_at(&mut bufs[at..at + size], off)
            .expect("pread");
    }
    t.elapsed()
}

/// The same reads, straight from the file into the same guest memory the
/// device writes into, with no virtqueue in between.
fn through_guest_memory(image: &std::path::Path, offs: &[u64], size: u32) -> Duration {
    let mem = guest_memory(&[(0, 64 << 20)]);
    mem.write_slice(&vec![0u8; 64 << 20], GuestAddress(0))
        .expect("prefault");
    let disk = DiskImage::open(image, true).expect("image");
    let data_slots = (32u64 << 20) / u64::from(size);
    let t = Instant::now();
    for (n, &off) in offs.iter().enumerate() {
        let at = GuestAddress(DATA_AT + (n as u64 % data_slots) * u64::from(size));
        mem.read_exact_volatile_from(at, &mut disk.at(off), size as usize)
            .expect("read into guest memory");
    }
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, image: &std::path::Path, n: usize, size: u32, random: bool) {
    let offs = offsets(n, u64::from(size), random);
    let bytes = (n as f64) * f64::from(size);
    let (mut dev, mut pread, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        dev.push(through_device(image, &offs, size).as_secs_f64());
        pread.push(through_pread(image, &offs, size as usize).as_secs_f64());
        direct.push(through_guest_memory(image, &offs, size).as_secs_f64());
    }
    let (d, p, g) = (median(dev), median(pread), median(direct));
    let mbs = |t: f64| bytes / t / 1e6;
    println!(
        "{name:<22} device {:>6.0} MB/s {:>7.0} req/s | pread {:>6.0} MB/s | pread into guest memory {:>6.0} MB/s | device/pread {:.2} | device/(pread into guest memory) {:.2}",
        mbs(d),
        n as f64 / d,
        mbs(p),
        mbs(g),
        p / d,
        g / d
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = make_image(dir.path());
    println!(
        "virtio-blk in-process, {IMAGE_MIB} MiB image in the page cache, median of {RUNS} runs"
    );
    report("4 KiB random reads", &image, 20_000, 4096, true);
    report("1 MiB sequential reads", &image, 512, 1 << 20, false);
}
