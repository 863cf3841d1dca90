//! Fuzz targets for the virtio devices and for the host side of the agent
//! protocol ([`agent`]), shared by the libFuzzer binaries
//! (`fuzz_targets/`, run with cargo-fuzz) and the stable-toolchain driver
//! (`src/bin/stable_fuzz.rs`), so both exercise exactly the same code.
//!
//! Each target decodes its input with `arbitrary` into a description of what
//! a driver put in guest memory: a split virtqueue (descriptor table,
//! available ring, used ring) and descriptor chains that are well-formed by
//! default, with rarer knobs that corrupt them (raw addresses and lengths,
//! flipped directions, `next` fields pointing anywhere, lying ring indices,
//! indirect tables). It then lays that out in real guest memory and runs the
//! real device's queue processing, and checks invariants that must hold
//! whatever the guest did.

pub mod agent;
pub use agent::{agent_stats, fuzz_agent_proto};

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use devices::virtio::queue::{serve_queue, Requests};
use devices::virtio::GuestMemory;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address as _, Bytes, GuestAddress};

/// Guest memory size: two adjacent 512 KiB regions, so buffers can straddle a
/// region boundary.
pub const MEM_SIZE: u64 = 1 << 20;
/// Where the queue structures start.
const QUEUE_BASE: u64 = 0;
/// Where chain buffers are carved from (after the largest possible queue).
const BUF_BASE: u64 = 0x1_0000;
/// Where indirect descriptor tables go.
const INDIRECT_BASE: u64 = 0x8000;

/// Disk image size for the block target, in sectors.
pub const DISK_SECTORS: u64 = 64;

fn guest_memory() -> GuestMemory {
    let half = (MEM_SIZE / 2) as usize;
    devices::test_utils::guest_memory(&[(0, half), (MEM_SIZE / 2, half)])
}

/// The descriptor-level knobs a chain can have.
#[derive(Arbitrary, Debug, Clone)]
pub enum Corruption {
    /// Descriptor `n` (mod chain length) gets a raw guest address.
    Addr(u8, u64),
    /// Descriptor `n` gets a raw length.
    Len(u8, u32),
    /// Descriptor `n` has its device-writable flag flipped.
    FlipWritable(u8),
    /// Descriptor `n` points its `next` anywhere, keeping the NEXT flag.
    Next(u8, u16),
    /// Descriptor `n` loses its NEXT flag (the chain ends early).
    Cut(u8),
    /// The chain is put in an indirect table; the ring gets one descriptor
    /// pointing to it (`len_fudge` is added to the table length).
    Indirect {
        /// Added to the table's byte length.
        len_fudge: u8,
    },
}

/// One buffer of a chain, before layout.
#[derive(Arbitrary, Debug, Clone)]
pub struct BufSpec {
    /// Length: small values are common, anything goes.
    pub len: u16,
    /// Device-writable.
    pub writable: bool,
}

/// One descriptor chain: its buffers and how they are spoiled.
#[derive(Arbitrary, Debug, Clone)]
pub struct ChainSpec {
    /// Bytes written at the start of the chain's buffers, continuing from one
    /// buffer into the next (a block request header, for instance).
    pub prefix: Vec<u8>,
    /// The buffers, at most 8 are used.
    pub bufs: Vec<BufSpec>,
    /// At most two corruptions are applied.
    pub corruptions: Vec<Corruption>,
}

/// How the rings start out.
#[derive(Arbitrary, Debug, Clone)]
pub struct RingSpec {
    /// log2 of the queue size, mod 9 (1..=256 entries).
    pub size_log2: u8,
    /// The ring indices start here (to cross the u16 wrap).
    pub start: u16,
    /// Decides the rare hostile ring knobs: below 16, the available index is
    /// overwritten with `avail_idx`; 240 and up, `extra_heads` are published.
    pub lie: u8,
    /// A lying available index.
    pub avail_idx: u16,
    /// Raw available-ring entries written after the chains' (bogus heads).
    pub extra_heads: Vec<u16>,
}

/// A laid-out queue.
pub struct Laid {
    /// The device-side queue, configured like the transport would.
    pub queue: Queue,
    /// Where the rings are, to check them afterwards.
    pub view: RingView,
    /// `(head descriptor, index in chains)` of each chain laid out.
    pub heads: Vec<(u16, usize)>,
}

/// What is needed to check the used ring after a run.
#[derive(Debug, Clone, Copy)]
pub struct RingView {
    /// Queue size.
    pub size: u16,
    /// Chains published.
    pub published: u16,
    /// No buffer was given a raw address, so the device cannot have written
    /// over the rings (buffers are otherwise carved above them).
    pub rings_trusted: bool,
    /// The available index was overwritten (the driver claims any number of
    /// chains, up to the queue size).
    pub avail_idx_overridden: bool,
    /// No corruption at all: every chain is exactly as specified, in buffers
    /// that do not overlap (unless the buffer area wrapped around).
    pub pristine: bool,
    /// Available ring address.
    pub avail_addr: GuestAddress,
    /// Used ring address.
    pub used_addr: GuestAddress,
    /// The used index before the device ran.
    pub start: u16,
}

fn write_desc(mem: &GuestMemory, table: u64, index: u16, d: SplitDescriptor) {
    // Out-of-range writes (an index past a small table) are simply lost.
    let _ = mem.write_obj(
        RawDescriptor::from(d),
        GuestAddress(table + 16 * u64::from(index)),
    );
}

/// Where in guest memory one queue and its buffers are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    /// Descriptor table, then available ring, then used ring.
    pub queue: u64,
    /// Indirect descriptor tables, up to `buf`.
    pub indirect: u64,
    /// Buffers are carved from here...
    pub buf: u64,
    /// ...up to here.
    pub end: u64,
}

/// The area of [`lay_out`]: the first [`MEM_SIZE`] bytes of guest memory.
pub const MAIN_AREA: Area = Area {
    queue: QUEUE_BASE,
    indirect: INDIRECT_BASE,
    buf: BUF_BASE,
    end: MEM_SIZE,
};

/// Lays out `ring` and `chains` in `mem` and returns the device-side queue.
pub fn lay_out(mem: &GuestMemory, ring: &RingSpec, chains: &[ChainSpec]) -> Laid {
    lay_out_in(mem, &MAIN_AREA, ring, chains)
}

/// [`lay_out`] in another area of guest memory (a second queue).
pub fn lay_out_in(mem: &GuestMemory, area: &Area, ring: &RingSpec, chains: &[ChainSpec]) -> Laid {
    let size: u16 = 1 << (ring.size_log2 % 9);
    let desc_table = area.queue;
    let avail = desc_table + 16 * u64::from(size);
    let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
    let start = ring.start;

    let mut next_desc: u16 = 0;
    let mut buf_cursor = area.buf;
    let mut indirect_cursor = area.indirect;
    let mut heads = Vec::new();
    let mut rings_trusted = true;
    let mut pristine = true;
    let mut descs_used = 0usize;
    let mut chain_heads = Vec::new();
    for (chain_index, chain) in chains.iter().take(usize::from(size)).enumerate() {
        let bufs: Vec<&BufSpec> = chain.bufs.iter().take(8).collect();
        if bufs.is_empty() {
            continue;
        }
        // Buffers: carve from the buffer area, wrapping around it.
        let mut descs: Vec<SplitDescriptor> = Vec::with_capacity(bufs.len());
        let mut prefix_off = 0usize;
        for b in &bufs {
            let len = u32::from(b.len);
            if buf_cursor + u64::from(len) > area.end {
                buf_cursor = area.buf;
                pristine = false;
            }
            let addr = buf_cursor;
            buf_cursor = (buf_cursor + u64::from(len) + 15) & !15;
            // The prefix continues across buffers (a split header).
            if prefix_off < chain.prefix.len() {
                let n = (chain.prefix.len() - prefix_off).min(len as usize);
                let _ = mem.write_slice(
                    &chain.prefix[prefix_off..prefix_off + n],
                    GuestAddress(addr),
                );
                prefix_off += n;
            }
            let flags = if b.writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            descs.push(SplitDescriptor::new(addr, len, flags, 0));
        }
        let n = descs.len();
        descs_used += n;
        if descs_used > usize::from(size) {
            // The descriptor table wrapped: later chains overwrite earlier ones.
            pristine = false;
        }
        let mut indirect: Option<u8> = None;
        // Link the chain: consecutive indices in whatever table it lives in.
        let direct_first = next_desc;
        let link = |descs: &mut Vec<SplitDescriptor>, first: u16, modulo: u16| {
            let len = descs.len();
            for (i, d) in descs.iter_mut().enumerate() {
                if i + 1 < len {
                    d.set_flags(d.flags() | VRING_DESC_F_NEXT as u16);
                    d.set_next(((u32::from(first) + i as u32 + 1) % u32::from(modulo)) as u16);
                }
            }
        };
        for c in chain.corruptions.iter().take(2) {
            if let Corruption::Indirect { len_fudge } = c {
                indirect = Some(*len_fudge);
            }
        }
        if indirect.is_some() {
            link(&mut descs, 0, u16::MAX);
        } else {
            link(&mut descs, direct_first, size);
        }
        for c in chain.corruptions.iter().take(2) {
            let pick = |k: u8| usize::from(k) % n;
            pristine = false;
            match *c {
                Corruption::Addr(k, a) => {
                    rings_trusted = false;
                    let i = pick(k);
                    descs[i].set_addr(a);
                }
                Corruption::Len(k, l) => {
                    let i = pick(k);
                    descs[i].set_len(l);
                }
                Corruption::FlipWritable(k) => {
                    let i = pick(k);
                    let f = descs[i].flags() ^ VRING_DESC_F_WRITE as u16;
                    descs[i].set_flags(f);
                }
                Corruption::Next(k, nx) => {
                    let i = pick(k);
                    let f = descs[i].flags() | VRING_DESC_F_NEXT as u16;
                    descs[i].set_flags(f);
                    descs[i].set_next(nx);
                }
                Corruption::Cut(k) => {
                    let i = pick(k);
                    let f = descs[i].flags() & !(VRING_DESC_F_NEXT as u16);
                    descs[i].set_flags(f);
                }
                Corruption::Indirect { .. } => {}
            }
        }
        let head = direct_first;
        match indirect {
            Some(fudge) => {
                let table = indirect_cursor;
                for (i, d) in descs.iter().enumerate() {
                    write_desc(mem, table, i as u16, *d);
                }
                let table_len = 16 * n as u32 + u32::from(fudge);
                indirect_cursor += 16 * n as u64;
                if indirect_cursor + 16 * 8 > area.buf {
                    indirect_cursor = area.indirect;
                }
                write_desc(
                    mem,
                    desc_table,
                    head % size,
                    SplitDescriptor::new(table, table_len, VRING_DESC_F_INDIRECT as u16, 0),
                );
                next_desc = next_desc.wrapping_add(1) % size;
            }
            None => {
                for (i, d) in descs.iter().enumerate() {
                    let idx = ((u32::from(head) + i as u32) % u32::from(size)) as u16;
                    write_desc(mem, desc_table, idx, *d);
                }
                next_desc = ((u32::from(next_desc) + n as u32) % u32::from(size)) as u16;
            }
        }
        heads.push(head % size);
        chain_heads.push((head % size, chain_index));
    }
    let extra = if ring.lie >= 240 { 4 } else { 0 };
    for &h in ring.extra_heads.iter().take(extra) {
        heads.push(h);
        pristine = false;
    }
    heads.truncate(usize::from(size));

    // Available ring: flags, idx, ring[size], used_event.
    let _ = mem.write_obj(0u16, GuestAddress(avail));
    for (i, &h) in heads.iter().enumerate() {
        let slot = u64::from(start.wrapping_add(i as u16) % size);
        let _ = mem.write_obj(u16::to_le(h), GuestAddress(avail + 4 + 2 * slot));
    }
    let published = heads.len() as u16;
    let overridden = ring.lie < 16;
    let avail_idx = if overridden {
        ring.avail_idx
    } else {
        start.wrapping_add(published)
    };
    let _ = mem.write_obj(u16::to_le(avail_idx), GuestAddress(avail + 2));
    // Used ring: flags, idx.
    let _ = mem.write_obj(0u16, GuestAddress(used));
    let _ = mem.write_obj(u16::to_le(start), GuestAddress(used + 2));

    let mut queue = Queue::new(size).unwrap_or_default();
    queue.set_size(size);
    queue.set_ready(true);
    queue.set_desc_table_address(Some(desc_table as u32), Some(0));
    queue.set_avail_ring_address(Some(avail as u32), Some(0));
    queue.set_used_ring_address(Some(used as u32), Some(0));
    queue.set_next_avail(start);
    queue.set_next_used(start);
    Laid {
        queue,
        heads: chain_heads,
        view: RingView {
            size,
            published,
            rings_trusted,
            avail_idx_overridden: overridden,
            pristine: pristine && !overridden,
            avail_addr: GuestAddress(avail),
            used_addr: GuestAddress(used),
            start,
        },
    }
}

/// Invariants of the used ring after `passes` runs of the queue loop: the
/// device returned at most what was published (or, if the driver lied about
/// the available index, at most a queue's worth per pass), every entry names
/// a descriptor inside the table, and used lengths stay under `max_len`.
/// Only checked when the guest could not have overwritten the rings itself.
pub fn check_used_ring(mem: &GuestMemory, ring: &RingView, passes: u16, max_len: u32) {
    if !ring.rings_trusted {
        return;
    }
    let used_idx: u16 = mem
        .read_obj::<u16>(ring.used_addr.unchecked_add(2))
        .map(u16::from_le)
        .unwrap_or(ring.start);
    let returned = u32::from(used_idx.wrapping_sub(ring.start));
    let bound = if ring.avail_idx_overridden {
        u32::from(ring.size) * u32::from(passes)
    } else {
        u32::from(ring.published)
    };
    assert!(
        returned <= bound,
        "device returned {returned} chains, at most {bound} were available"
    );
    for i in 0..returned.min(u32::from(ring.size)) {
        let slot = u64::from((u32::from(ring.start) + i) % u32::from(ring.size));
        let at = ring.used_addr.unchecked_add(4 + 8 * slot);
        let id: u32 = mem.read_obj(at).map(u32::from_le).unwrap_or(0);
        let len: u32 = mem
            .read_obj(at.unchecked_add(4))
            .map(u32::from_le)
            .unwrap_or(0);
        assert!(id < u32::from(ring.size), "used id {id} out of the table");
        assert!(len <= max_len, "used length {len} above {max_len}");
    }
}

/// Block requests seen by the fuzzer so far: (chains, failed with a status,
/// dropped without one). Tells whether inputs reach the request code.
pub fn block_stats() -> (u64, u64, u64) {
    (
        STATS[0].load(Ordering::Relaxed),
        STATS[1].load(Ordering::Relaxed),
        STATS[2].load(Ordering::Relaxed),
    )
}

static STATS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn disk_file() -> Option<File> {
    static DISK: OnceLock<Option<File>> = OnceLock::new();
    DISK.get_or_init(|| {
        let mut f = tempfile::tempfile().ok()?;
        let data: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).ok()?;
        Some(f)
    })
    .as_ref()
    .and_then(|f| f.try_clone().ok())
}

/// A block request type, mostly real ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum BlockType {
    /// VIRTIO_BLK_T_IN.
    In,
    /// VIRTIO_BLK_T_OUT.
    Out,
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// VIRTIO_BLK_T_GET_ID.
    GetId,
    /// Any value.
    Raw(u32),
}

/// A block request as a driver would build it, before corruption.
#[derive(Arbitrary, Debug, Clone)]
pub struct BlockRequest {
    /// The type.
    pub kind: BlockType,
    /// Sector: small values land inside the disk, raw ones anywhere.
    pub sector: Result<u8, u64>,
    /// Data buffers, in sectors (1..=8 each; at most 4 buffers).
    pub data: Vec<u8>,
    /// Split the header over two buffers at this byte (1..=15), if set.
    pub split_header: Option<u8>,
    /// Below 32 (one in eight), `corruption` is applied.
    pub corrupt: u8,
    /// A descriptor-level corruption.
    pub corruption: Corruption,
}

/// A chain for the block target: a request, or raw buffers.
#[derive(Arbitrary, Debug, Clone)]
pub enum BlockChain {
    /// A (possibly corrupted) request.
    Request(BlockRequest),
    /// Arbitrary buffers.
    Raw(ChainSpec),
}

impl BlockRequest {
    fn to_chain(&self) -> ChainSpec {
        use virtio_bindings::virtio_blk::*;
        let t = match self.kind {
            BlockType::In => VIRTIO_BLK_T_IN,
            BlockType::Out => VIRTIO_BLK_T_OUT,
            BlockType::Flush => VIRTIO_BLK_T_FLUSH,
            BlockType::GetId => VIRTIO_BLK_T_GET_ID,
            BlockType::Raw(t) => t,
        };
        let sector = match self.sector {
            Ok(s) => u64::from(s) % (DISK_SECTORS + 2),
            Err(s) => s,
        };
        let mut prefix = Vec::with_capacity(16);
        prefix.extend_from_slice(&t.to_le_bytes());
        prefix.extend_from_slice(&0u32.to_le_bytes());
        prefix.extend_from_slice(&sector.to_le_bytes());
        let mut bufs = Vec::new();
        match self.split_header.map(|b| b % 15 + 1) {
            Some(at) => {
                bufs.push(BufSpec {
                    len: u16::from(at),
                    writable: false,
                });
                bufs.push(BufSpec {
                    len: 16 - u16::from(at),
                    writable: false,
                });
            }
            None => bufs.push(BufSpec {
                len: 16,
                writable: false,
            }),
        }
        let writable = matches!(self.kind, BlockType::In | BlockType::GetId);
        for &n in self.data.iter().take(4) {
            let len = match self.kind {
                BlockType::GetId => 20,
                _ => (u16::from(n) % 8 + 1) * 512,
            };
            bufs.push(BufSpec { len, writable });
        }
        bufs.push(BufSpec {
            len: 1,
            writable: true,
        });
        ChainSpec {
            prefix,
            bufs,
            corruptions: if self.corrupt < 32 {
                vec![self.corruption.clone()]
            } else {
                Vec::new()
            },
        }
    }
}

/// Input of the block target.
#[derive(Arbitrary, Debug)]
pub struct BlockInput {
    /// Open the image read-only.
    pub read_only: bool,
    /// Negotiate VIRTIO_BLK_F_FLUSH.
    pub flush: bool,
    /// The rings.
    pub ring: RingSpec,
    /// The requests.
    pub chains: Vec<BlockChain>,
    /// Reset the device before processing a second time.
    pub reset_between: bool,
}

/// Runs the block device over `data`.
pub fn fuzz_block(data: &[u8]) {
    use devices::virtio::block::{Block, DiskImage};
    use devices::virtio::VirtioDevice;

    let Ok(input) = BlockInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let Some(file) = disk_file() else {
        return;
    };
    let Ok(disk) = DiskImage::from_file(file, input.read_only) else {
        return;
    };
    let Ok(mut block) = Block::with_disk("fuzz".into(), disk, "fuzz-serial") else {
        return;
    };
    let mem = guest_memory();
    let chains: Vec<ChainSpec> = input
        .chains
        .iter()
        .map(|c| match c {
            BlockChain::Request(r) => r.to_chain(),
            BlockChain::Raw(c) => c.clone(),
        })
        .collect();
    let laid = lay_out(&mem, &input.ring, &chains);
    let view = laid.view;
    let mut features = block.device_features();
    if !input.flush {
        features &= !(1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_FLUSH);
    }
    block.ack_features(features);
    let (interrupt, _irq) = devices::test_utils::recording_interrupt();
    let (ctx, _evts) = devices::test_utils::activate_context(&mem, interrupt, vec![laid.queue]);
    if block.activate(ctx).is_err() {
        return;
    }
    block.process_queue(0);
    if input.reset_between {
        block.reset();
    }
    block.process_queue(0);
    let c = block.counters();
    STATS[0].fetch_add(c.requests.load(Ordering::Relaxed), Ordering::Relaxed);
    STATS[1].fetch_add(c.failed.load(Ordering::Relaxed), Ordering::Relaxed);
    STATS[2].fetch_add(c.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
    // A used length counts written bytes, which a chain of at most 8 u16-long
    // buffers bounds, unless corrupted lengths or indirect tables grew it.
    check_used_ring(&mem, &view, 2, u32::MAX);
}

/// Input of the rng target: rings and chains, plus register writes to a
/// transport in front of a second rng device.
#[derive(Arbitrary, Debug)]
pub struct RngInput {
    /// The rings.
    pub ring: RingSpec,
    /// The requests.
    pub chains: Vec<ChainSpec>,
    /// (offset, value) register writes to a fresh transport, then reads.
    pub mmio_ops: Vec<(u16, u32, bool)>,
}

/// Runs the rng device over `data`, and its transport's register file.
pub fn fuzz_rng(data: &[u8]) {
    use devices::bus::BusDevice;
    use devices::virtio::mmio::MmioTransport;
    use devices::virtio::rng::{Rng, MAX_BYTES_PER_CHAIN};
    use devices::virtio::VirtioDevice;
    use std::sync::{Arc, Mutex};

    let Ok(input) = RngInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mem = guest_memory();
    let laid = lay_out(&mem, &input.ring, &input.chains);
    let view = laid.view;
    let Ok(mut rng) = Rng::new("fuzz") else {
        return;
    };
    rng.ack_features(rng.device_features());
    let (interrupt, _irq) = devices::test_utils::recording_interrupt();
    let (ctx, _evts) =
        devices::test_utils::activate_context(&mem, interrupt.clone(), vec![laid.queue]);
    if rng.activate(ctx).is_ok() {
        rng.process_queue(0);
        check_used_ring(&mem, &view, 1, MAX_BYTES_PER_CHAIN);
    }

    // The transport's register file: any sequence of accesses, no panic.
    let Ok(dev) = Rng::new("fuzz-mmio") else {
        return;
    };
    let dev = Arc::new(Mutex::new(dev));
    let Ok(mut t) = MmioTransport::new(mem.clone(), interrupt, dev) else {
        return;
    };
    for &(offset, value, read) in input.mmio_ops.iter().take(64) {
        let offset = u64::from(offset) % 0x1000;
        if read {
            let mut b = [0u8; 4];
            t.read(offset, &mut b);
        } else {
            t.write(offset, &value.to_le_bytes());
        }
    }
}

// ------------------------------------------------------- two-queue devices

/// The second queue's area (rx for vsock and net), in the 1 MiB of guest
/// memory above [`MEM_SIZE`].
pub const SECOND_AREA: Area = Area {
    queue: MEM_SIZE,
    indirect: MEM_SIZE + INDIRECT_BASE,
    buf: MEM_SIZE + BUF_BASE,
    end: 2 * MEM_SIZE,
};

/// Guest memory of the two-queue targets: the regions of the one-queue
/// targets, then an adjacent 1 MiB region for [`SECOND_AREA`].
fn guest_memory_2q() -> GuestMemory {
    let half = (MEM_SIZE / 2) as usize;
    devices::test_utils::guest_memory(&[
        (0, half),
        (MEM_SIZE / 2, half),
        (MEM_SIZE, MEM_SIZE as usize),
    ])
}

/// A receive buffer a driver posts: mostly one well-formed writable buffer.
#[derive(Arbitrary, Debug, Clone)]
pub enum RxSpec {
    /// A writable buffer of `len`, split in two at `split` if set.
    Buffer {
        /// Below 32: a tiny buffer of that many bytes; otherwise `big`.
        small: u8,
        /// Split the buffer in two descriptors at this byte (mod the length).
        split: Option<u16>,
    },
    /// Arbitrary buffers.
    Raw(ChainSpec),
}

impl RxSpec {
    fn to_chain(&self, big: u16) -> ChainSpec {
        match self {
            RxSpec::Raw(c) => c.clone(),
            RxSpec::Buffer { small, split } => {
                let len = if *small < 32 { u16::from(*small) } else { big };
                let bufs = match split.map(|s| s % len.max(1)) {
                    Some(at) if at > 0 => vec![
                        BufSpec {
                            len: at,
                            writable: true,
                        },
                        BufSpec {
                            len: len - at,
                            writable: true,
                        },
                    ],
                    _ => vec![BufSpec {
                        len,
                        writable: true,
                    }],
                };
                ChainSpec {
                    prefix: Vec::new(),
                    bufs,
                    corruptions: Vec::new(),
                }
            }
        }
    }
}

/// Splits `bytes` into up to three readable buffers at `cuts` (a header
/// split, say), as one chain whose prefix is `bytes`.
fn readable_chain(bytes: Vec<u8>, cuts: &[u16], corruption: Option<Corruption>) -> ChainSpec {
    let total = bytes.len();
    let mut points: Vec<usize> = cuts
        .iter()
        .take(2)
        .map(|&c| usize::from(c) % (total + 1))
        .filter(|&c| c > 0 && c < total)
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut bufs = Vec::new();
    let mut at = 0usize;
    for p in points.into_iter().chain(std::iter::once(total)) {
        bufs.push(BufSpec {
            len: u16::try_from(p - at).unwrap_or(u16::MAX),
            writable: false,
        });
        at = p;
    }
    ChainSpec {
        prefix: bytes,
        bufs,
        corruptions: corruption.into_iter().collect(),
    }
}

// ------------------------------------------------------------------ vsock

/// The guest's CID in the vsock target.
pub const VSOCK_GUEST_CID: u64 = 3;
/// The host port with a listener behind it (`<uds>_1234`).
pub const VSOCK_LISTEN_PORT: u32 = 1234;
/// The muxer's first ephemeral port: host-initiated connections come from
/// 49152, 49153, ... on a fresh device.
const VSOCK_FIRST_EPHEMERAL: u32 = 49152;

/// A vsock operation, mostly real ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum VsockOp {
    /// OP_REQUEST.
    Request,
    /// OP_RESPONSE.
    Response,
    /// OP_RST.
    Rst,
    /// OP_SHUTDOWN.
    Shutdown,
    /// OP_RW.
    Rw,
    /// OP_CREDIT_UPDATE.
    CreditUpdate,
    /// OP_CREDIT_REQUEST.
    CreditRequest,
    /// Any value.
    Raw(u16),
}

/// A port, mostly one that means something to the device.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum VsockPort {
    /// The host port with a listener.
    Listening,
    /// One of the first ephemeral ports the muxer hands out.
    Ephemeral(u8),
    /// One of a few guest ports.
    Guest(u8),
    /// Any value.
    Raw(u32),
}

impl VsockPort {
    fn value(self) -> u32 {
        match self {
            VsockPort::Listening => VSOCK_LISTEN_PORT,
            VsockPort::Ephemeral(k) => VSOCK_FIRST_EPHEMERAL + u32::from(k % 4),
            VsockPort::Guest(k) => 1000 + u32::from(k % 4),
            VsockPort::Raw(p) => p,
        }
    }
}

/// A packet as a guest driver would send it, before corruption.
#[derive(Arbitrary, Debug, Clone)]
pub struct VsockPacket {
    /// The operation.
    pub op: VsockOp,
    /// Source (guest) port.
    pub src_port: VsockPort,
    /// Destination (host) port.
    pub dst_port: VsockPort,
    /// OP_SHUTDOWN flags (mod 4) or anything (with `oddity`).
    pub flags: u8,
    /// The guest's receive buffer: a multiple of 1 KiB, or raw.
    pub buf_alloc: Result<u8, u32>,
    /// Bytes the guest consumed.
    pub fwd_cnt: u32,
    /// Payload (OP_RW).
    pub payload: Vec<u8>,
    /// Where the header and payload are cut into buffers.
    pub cuts: Vec<u16>,
    /// Below 64 (one in four) a header field lies, picked by the value:
    /// source CID, destination CID, type, `len`, a truncated header, flags.
    pub oddity: u8,
    /// The lying value.
    pub raw: u64,
    /// Below 32 (one in eight), `corruption` is applied.
    pub corrupt: u8,
    /// A descriptor-level corruption.
    pub corruption: Corruption,
}

impl VsockPacket {
    fn to_chain(&self) -> ChainSpec {
        use devices::virtio::vsock::packet::*;
        let op = match self.op {
            VsockOp::Request => OP_REQUEST,
            VsockOp::Response => OP_RESPONSE,
            VsockOp::Rst => OP_RST,
            VsockOp::Shutdown => OP_SHUTDOWN,
            VsockOp::Rw => OP_RW,
            VsockOp::CreditUpdate => OP_CREDIT_UPDATE,
            VsockOp::CreditRequest => OP_CREDIT_REQUEST,
            VsockOp::Raw(op) => op,
        };
        let payload: &[u8] = if op == OP_RW { &self.payload } else { &[] };
        let mut hdr = Header {
            src_cid: VSOCK_GUEST_CID,
            dst_cid: HOST_CID,
            src_port: self.src_port.value(),
            dst_port: self.dst_port.value(),
            len: payload.len() as u32,
            type_: TYPE_STREAM,
            op,
            flags: u32::from(self.flags % 4),
            buf_alloc: match self.buf_alloc {
                Ok(k) => u32::from(k) * 1024,
                Err(b) => b,
            },
            fwd_cnt: self.fwd_cnt,
        };
        let mut truncate = None;
        if self.oddity < 64 {
            match self.oddity % 6 {
                0 => hdr.src_cid = self.raw,
                1 => hdr.dst_cid = self.raw,
                2 => hdr.type_ = self.raw as u16,
                3 => hdr.len = self.raw as u32,
                4 => truncate = Some(self.raw as usize % HDR_LEN),
                _ => hdr.flags = self.raw as u32,
            }
        }
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        if let Some(t) = truncate {
            bytes.truncate(t);
        }
        let corruption = (self.corrupt < 32).then(|| self.corruption.clone());
        readable_chain(bytes, &self.cuts, corruption)
    }
}

/// A tx chain for the vsock target: a packet, or raw buffers.
#[derive(Arbitrary, Debug, Clone)]
pub enum VsockChain {
    /// A (possibly corrupted) packet.
    Packet(VsockPacket),
    /// Arbitrary buffers.
    Raw(ChainSpec),
}

/// What a host process does to the device's sockets.
#[derive(Arbitrary, Debug, Clone)]
pub enum HostOp {
    /// Connects to the device's socket and asks for a guest port.
    Connect(VsockPort),
    /// Connects and writes any bytes as the connect line.
    ConnectRaw(Vec<u8>),
    /// Writes to host socket `n` (mod the number open).
    Write(u8, Vec<u8>),
    /// Half-closes host socket `n`.
    ShutdownWrite(u8),
    /// Closes host socket `n`.
    Close(u8),
    /// Accepts the guest's connections to the listening host port.
    Accept,
}

/// Input of the vsock target.
#[derive(Arbitrary, Debug)]
pub struct VsockInput {
    /// The tx ring.
    pub tx_ring: RingSpec,
    /// Packets the guest sends.
    pub tx: Vec<VsockChain>,
    /// The rx ring.
    pub rx_ring: RingSpec,
    /// Receive buffers the guest posts.
    pub rx: Vec<RxSpec>,
    /// What host processes do before the driver activates the device.
    pub host_before: Vec<HostOp>,
    /// What they do once the guest's packets are processed.
    pub host_after: Vec<HostOp>,
    /// Reset the device and activate it again (same rings, the used
    /// indices back at the start) before a last pass.
    pub reset_between: bool,
    /// Once the device runs, the driver breaks a ring: an available index
    /// beyond what the queue can hold, then a kick.
    pub lie: Option<LyingAvail>,
}

/// A driver writing an available index more than the queue size ahead of
/// what the device has taken.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct LyingAvail {
    /// The queue lied about: rx, tx or event (mod 3, the queue index).
    pub queue: u8,
    /// How far past the queue size the index runs (mod what a u16 ring
    /// index can express).
    pub ahead: u16,
}

impl LyingAvail {
    /// Writes the lie into `ring`'s available index, counting from the used
    /// index (where the device stands once it has returned what it took).
    fn tell(self, mem: &GuestMemory, ring: &mut RingView) {
        let used: u16 = mem
            .read_obj::<u16>(ring.used_addr.unchecked_add(2))
            .map(u16::from_le)
            .unwrap_or(ring.start);
        let size = u32::from(ring.size);
        // From size + 1 up to u16::MAX ahead: always more than the ring holds.
        let ahead = size + 1 + u32::from(self.ahead) % (u32::from(u16::MAX) - size);
        let idx = used.wrapping_add(u16::try_from(ahead).unwrap_or(u16::MAX));
        let _ = mem.write_obj(u16::to_le(idx), ring.avail_addr.unchecked_add(2));
        // Whatever the device takes from here is bounded by the queue size
        // per pass, not by what was published.
        ring.avail_idx_overridden = true;
    }
}

/// Vsock counters over the campaign: tx packets understood, tx chains
/// malformed, rx packets delivered, host connections that sent a valid line,
/// inputs that lied about an available index once the device ran, and
/// queues the device then found broken.
pub fn vsock_stats() -> [u64; 6] {
    [0, 1, 2, 3, 4, 5].map(|i| VSOCK_STATS[i].load(Ordering::Relaxed))
}

static VSOCK_STATS: [AtomicU64; 6] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

fn vsock_dir() -> Option<&'static std::path::Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().ok())
        .as_ref()
        .map(|d| d.path())
}

struct HostSide {
    uds: std::path::PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    streams: Vec<std::os::unix::net::UnixStream>,
}

impl HostSide {
    fn connect(&mut self, line: &[u8]) {
        use std::os::unix::net::UnixStream;
        // At most 16 host sockets per input: the fd count stays small.
        if self.streams.len() >= 16 {
            return;
        }
        let Ok(mut s) = UnixStream::connect(&self.uds) else {
            return;
        };
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let _ = s.write(line);
        self.streams.push(s);
    }

    fn run(&mut self, op: &HostOp) {
        use std::net::Shutdown;
        let pick = |n: u8, len: usize| usize::from(n) % len.max(1);
        match op {
            HostOp::Connect(p) => self.connect(format!("CONNECT {}\n", p.value()).as_bytes()),
            HostOp::ConnectRaw(line) => self.connect(line),
            HostOp::Write(n, data) => {
                let i = pick(*n, self.streams.len());
                if let Some(s) = self.streams.get_mut(i) {
                    let _ = s.write(data);
                }
            }
            HostOp::ShutdownWrite(n) => {
                let i = pick(*n, self.streams.len());
                if let Some(s) = self.streams.get(i) {
                    let _ = s.shutdown(Shutdown::Write);
                }
            }
            HostOp::Close(n) => {
                let i = pick(*n, self.streams.len());
                if i < self.streams.len() {
                    self.streams.remove(i);
                }
            }
            HostOp::Accept => {
                while let Some(Ok((s, _))) = self.listener.as_ref().map(|l| l.accept()) {
                    if s.set_nonblocking(true).is_err() || self.streams.len() >= 16 {
                        break;
                    }
                    self.streams.push(s);
                }
            }
        }
    }

    // Reads what the device sent, so its writes do not back up.
    fn drain(&mut self) {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        for s in &mut self.streams {
            for _ in 0..64 {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }
}

/// Runs the event loop until it is idle (no wait: the peers are in this
/// process), at most `rounds` times. Returns whether it went idle.
fn run_event_loop<T: event_manager::MutEventSubscriber>(
    em: &mut event_manager::EventManager<T>,
    rounds: usize,
) -> bool {
    for _ in 0..rounds {
        match em.run_with_timeout(0) {
            Ok(n) if n > 0 => {}
            _ => return true,
        }
    }
    false
}

/// Passes of the event loop between checks; bounds how often a lying ring
/// can be reread.
const LOOP_ROUNDS: usize = 16;

/// Runs the vsock device over `data`: guest packets through the tx queue,
/// rx buffers, and host processes on real Unix sockets, all through the
/// device's event-loop subscriber.
pub fn fuzz_vsock(data: &[u8]) {
    use devices::virtio::vsock::{Vsock, EVQ, RXQ, TXQ};
    use devices::virtio::VirtioDevice;
    use event_manager::{EventManager, SubscriberOps};
    use std::sync::{Arc, Mutex};

    static SOCKETS: AtomicU64 = AtomicU64::new(0);

    let Ok(input) = VsockInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let Some(dir) = vsock_dir() else {
        return;
    };
    let uds = dir.join(format!("v{}", SOCKETS.fetch_add(1, Ordering::Relaxed)));
    let listen_path = format!("{}_{VSOCK_LISTEN_PORT}", uds.display());
    let listener = std::os::unix::net::UnixListener::bind(&listen_path).ok();
    if let Some(l) = &listener {
        let _ = l.set_nonblocking(true);
    }
    let Ok(dev) = Vsock::new(VSOCK_GUEST_CID, uds.clone()) else {
        let _ = std::fs::remove_file(&listen_path);
        return;
    };
    let dev = Arc::new(Mutex::new(dev));
    let Ok(mut em) = EventManager::<Arc<Mutex<Vsock>>>::new() else {
        let _ = std::fs::remove_file(&listen_path);
        return;
    };
    em.add_subscriber(dev.clone());
    let mut host = HostSide {
        uds,
        listener,
        streams: Vec::new(),
    };

    let mem = guest_memory_2q();
    let tx_chains: Vec<ChainSpec> = input
        .tx
        .iter()
        .map(|c| match c {
            VsockChain::Packet(p) => p.to_chain(),
            VsockChain::Raw(c) => c.clone(),
        })
        .collect();
    let rx_chains: Vec<ChainSpec> = input
        .rx
        .iter()
        .map(|r| r.to_chain(4096 + devices::virtio::vsock::packet::HDR_LEN as u16))
        .collect();
    // The event queue: one empty, well-formed entry-less ring.
    let evq_ring = RingSpec {
        size_log2: 0,
        start: 0,
        lie: 255,
        avail_idx: 0,
        extra_heads: Vec::new(),
    };
    let evq_area = Area {
        queue: INDIRECT_BASE - 0x100,
        ..MAIN_AREA
    };

    let (interrupt, _irq) = devices::test_utils::recording_interrupt();
    let activate = |em: &mut EventManager<Arc<Mutex<Vsock>>>| {
        let tx = lay_out(&mem, &input.tx_ring, &tx_chains);
        let rx = lay_out_in(&mem, &SECOND_AREA, &input.rx_ring, &rx_chains);
        let evq = lay_out_in(&mem, &evq_area, &evq_ring, &[]);
        let mut views = (tx.view, rx.view, evq.view);
        // A buffer at a raw address may be the other queue's rings.
        let trusted = views.0.rings_trusted && views.1.rings_trusted;
        views.0.rings_trusted = trusted;
        views.1.rings_trusted = trusted;
        views.2.rings_trusted = trusted;
        const _: () = assert!(RXQ == 0 && TXQ == 1 && EVQ == 2);
        let queues = vec![rx.queue, tx.queue, evq.queue];
        let (ctx, evts) = devices::test_utils::activate_context(&mem, interrupt.clone(), queues);
        let ok = dev
            .lock()
            .map(|mut d| d.activate(ctx).is_ok())
            .unwrap_or(false);
        run_event_loop(em, LOOP_ROUNDS);
        (ok, views, evts)
    };

    // Host processes connect before the driver is up (they wait for it).
    for op in input.host_before.iter().take(8) {
        host.run(op);
    }
    run_event_loop(&mut em, LOOP_ROUNDS);
    let (ok, mut views, mut evts) = activate(&mut em);
    if ok {
        host.drain();
        for op in input.host_after.iter().take(8) {
            host.run(op);
            run_event_loop(&mut em, LOOP_ROUNDS);
        }
        if let Some(lie) = input.lie {
            let ring = match usize::from(lie.queue % 3) {
                RXQ => &mut views.1,
                TXQ => &mut views.0,
                _ => &mut views.2,
            };
            lie.tell(&mem, ring);
            VSOCK_STATS[4].fetch_add(1, Ordering::Relaxed);
        }
        // The driver kicks every queue (nothing new, or a lie: the device
        // must cope).
        for e in &evts {
            let _ = e.write(1);
        }
        run_event_loop(&mut em, LOOP_ROUNDS);
        host.drain();
        run_event_loop(&mut em, LOOP_ROUNDS);
        if input.lie.is_some() {
            // A broken ring is given up on, not reread for ever: with the
            // peers quiet, the loop must run dry.
            host.drain();
            assert!(
                run_event_loop(&mut em, 4 * LOOP_ROUNDS),
                "the vsock device keeps the event loop busy after a lying avail index"
            );
            if let Ok(d) = dev.lock() {
                let broken = [RXQ, TXQ, EVQ]
                    .iter()
                    .filter(|&&q| d.queue_broken(q))
                    .count();
                VSOCK_STATS[5].fetch_add(broken as u64, Ordering::Relaxed);
            }
        }
        if input.reset_between {
            if let Ok(mut d) = dev.lock() {
                d.reset();
            }
            run_event_loop(&mut em, LOOP_ROUNDS);
            (_, views, evts) = activate(&mut em);
            host.drain();
            run_event_loop(&mut em, LOOP_ROUNDS);
        }
        let _ = evts;
    }
    if let Ok(d) = dev.lock() {
        let m = d.metrics();
        VSOCK_STATS[0].fetch_add(m.tx_packets, Ordering::Relaxed);
        VSOCK_STATS[1].fetch_add(m.tx_malformed, Ordering::Relaxed);
        VSOCK_STATS[2].fetch_add(m.rx_packets, Ordering::Relaxed);
        VSOCK_STATS[3].fetch_add(d.muxer().stats().host_connects, Ordering::Relaxed);
    }
    // Every event-loop pass may take a queue's worth from a lying ring.
    let passes = (4 * LOOP_ROUNDS) as u16;
    // Tx chains are returned with length 0: the device writes nothing there.
    check_used_ring(&mem, &views.0, passes, 0);
    // An rx packet is a header and at most a chain's worth of payload.
    check_used_ring(&mem, &views.1, passes, u32::MAX);
    // This device sends no transport events: it never uses an event buffer.
    check_used_ring(&mem, &views.2, passes, 0);
    drop(em);
    drop(dev);
    let _ = std::fs::remove_file(&listen_path);
}

// -------------------------------------------------------------------- net

/// A frame as a guest driver would send it, before corruption.
#[derive(Arbitrary, Debug, Clone)]
pub struct NetFrame {
    /// Destination and source MACs, EtherType.
    pub eth: [u8; 14],
    /// The rest of the frame.
    pub payload: Vec<u8>,
    /// Repeat the payload this many times (mod 64): large frames.
    pub repeat: u8,
    /// Where the packet is cut into buffers.
    pub cuts: Vec<u16>,
    /// Below 32 (one in eight): the packet is cut short at `raw` bytes, or
    /// its vnet header gets `raw`'s bytes (offloads that were not offered).
    pub oddity: u8,
    /// The lying value.
    pub raw: u64,
    /// Below 32 (one in eight), `corruption` is applied.
    pub corrupt: u8,
    /// A descriptor-level corruption.
    pub corruption: Corruption,
}

impl NetFrame {
    fn bytes(&self) -> Vec<u8> {
        use devices::virtio::net::VNET_HDR_LEN;
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&self.eth);
        for _ in 0..=self.repeat % 64 {
            b.extend_from_slice(&self.payload);
        }
        b.truncate(devices::virtio::net::MAX_PACKET_LEN + 16);
        if self.oddity < 32 {
            if self.oddity.is_multiple_of(2) {
                b.truncate(self.raw as usize % 40);
            } else {
                b[..8].copy_from_slice(&self.raw.to_le_bytes());
            }
        }
        b
    }
}

/// A tx chain for the net target: a frame, or raw buffers.
#[derive(Arbitrary, Debug, Clone)]
pub enum NetChain {
    /// A (possibly corrupted) frame.
    Frame(NetFrame),
    /// Arbitrary buffers.
    Raw(ChainSpec),
}

/// Input of the net target.
#[derive(Arbitrary, Debug)]
pub struct NetInput {
    /// The tx ring.
    pub tx_ring: RingSpec,
    /// Frames the guest sends.
    pub tx: Vec<NetChain>,
    /// The rx ring.
    pub rx_ring: RingSpec,
    /// Receive buffers the guest posts.
    pub rx: Vec<RxSpec>,
    /// Frames arriving from the host for the guest (the tap's side).
    pub frames: Vec<NetFrame>,
    /// Process the tx queue a second time after re-creating it (a reset).
    pub reset_between: bool,
}

/// Net counters over the campaign: tx chains accepted, tx chains refused,
/// rx frames delivered, rx chains refused.
pub fn net_stats() -> [u64; 4] {
    [0, 1, 2, 3].map(|i| NET_STATS[i].load(Ordering::Relaxed))
}

static NET_STATS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Chains per pass of the net target's transmit loop (the device's budget).
const NET_TX_BUDGET: usize = 256;

/// Runs the net device's chain handling over `data`: the transmit path's
/// check and gather of each tx chain, and the receive path's scatter of
/// frames into rx chains, in the order and with the outcomes the device's
/// queue loops give them. The tap itself is left out: opening one needs
/// privileges and a network namespace of its own, which a fuzzer must not
/// take from its host.
pub fn fuzz_net(data: &[u8]) {
    use devices::virtio::net::{
        gather_tx_chain, write_frame, NetError, MAX_PACKET_LEN, VNET_HDR_LEN,
    };

    let Ok(input) = NetInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mem = guest_memory_2q();
    let mut expected: Vec<Option<Vec<u8>>> = Vec::new();
    let tx_chains: Vec<ChainSpec> = input
        .tx
        .iter()
        .map(|c| match c {
            NetChain::Frame(f) => {
                let corruption = (f.corrupt < 32).then(|| f.corruption.clone());
                let bytes = f.bytes();
                let chain = readable_chain(bytes.clone(), &f.cuts, corruption);
                expected.push((chain.corruptions.is_empty() && !bytes.is_empty()).then_some(bytes));
                chain
            }
            NetChain::Raw(c) => {
                expected.push(None);
                c.clone()
            }
        })
        .collect();
    let rx_chains: Vec<ChainSpec> = input.rx.iter().map(|r| r.to_chain(u16::MAX)).collect();

    let passes = if input.reset_between { 2 } else { 1 };
    let mut tx_view = None;
    for _ in 0..passes {
        let laid = lay_out(&mem, &input.tx_ring, &tx_chains);
        let mut q = laid.queue;
        // The device's loop (the one every queue is served with): check and
        // gather each chain, return it with length 0; passes end at the
        // device's budget, and go on while it yields.
        let (interrupt, _irq) = devices::test_utils::recording_interrupt();
        let mut tx = Requests(
            |mem: &GuestMemory, queue_size, chain: DescriptorChain<&GuestMemory>| {
                let head = chain.head_index();
                let mut slices = Vec::new();
                let result = gather_tx_chain(chain, mem, queue_size, &mut slices);
                let want = laid
                    .view
                    .pristine
                    .then(|| laid.heads.iter().find(|&&(h, _)| h == head))
                    .flatten()
                    .and_then(|&(_, i)| expected.get(i).cloned().flatten());
                match result {
                    Ok(total) => {
                        NET_STATS[0].fetch_add(1, Ordering::Relaxed);
                        let sum: usize = slices.iter().map(|s| s.len()).sum();
                        assert_eq!(sum, total, "gathered slices do not add up");
                        assert!(
                            (VNET_HDR_LEN + 14..=MAX_PACKET_LEN).contains(&total),
                            "accepted a {total}-byte packet"
                        );
                        if let Some(want) = want {
                            let mut got = Vec::with_capacity(total);
                            for s in &slices {
                                let mut b = vec![0u8; s.len()];
                                s.copy_to(&mut b[..]);
                                got.extend_from_slice(&b);
                            }
                            assert_eq!(got, want, "tx frame not gathered as the guest wrote it");
                        }
                    }
                    Err(e) => {
                        NET_STATS[1].fetch_add(1, Ordering::Relaxed);
                        if let Some(want) = want {
                            let ok_len = (VNET_HDR_LEN + 14..=MAX_PACKET_LEN).contains(&want.len());
                            assert!(
                                !ok_len,
                                "well-formed {}-byte tx chain refused: {e}",
                                want.len()
                            );
                        }
                    }
                }
                0
            },
        );
        while serve_queue(&mut q, &mem, &interrupt, NET_TX_BUDGET, "net", &mut tx).yielded {}
        tx_view = Some(laid.view);
    }

    // The receive path: frames wait for a chain; a chain too small drops the
    // frame, a bad chain is returned unused and the frame waits for the next.
    let laid = lay_out_in(&mem, &SECOND_AREA, &input.rx_ring, &rx_chains);
    let mut rq = laid.queue;
    let mut rx_view = laid.view;
    let mut descs = Vec::new();
    let mut frames = input.frames.iter().take(16).map(NetFrame::bytes);
    let mut pending = frames.next();
    while let Some(frame) = pending.as_ref() {
        let Some(chain) = rq.pop_descriptor_chain(&mem) else {
            break;
        };
        let head = chain.head_index();
        let used = match write_frame(chain, &mem, frame, rq.size(), &mut descs) {
            Ok(()) => {
                NET_STATS[2].fetch_add(1, Ordering::Relaxed);
                let cap: u64 = descs.iter().map(|&(_, l)| u64::from(l)).sum();
                assert!(cap >= frame.len() as u64, "frame written past its chain");
                if rx_view.pristine {
                    let mut got = Vec::with_capacity(frame.len());
                    for &(addr, len) in &descs {
                        let n = (len as usize).min(frame.len() - got.len());
                        let mut b = vec![0u8; n];
                        let _ = mem.read_slice(&mut b, addr);
                        got.extend_from_slice(&b);
                    }
                    assert_eq!(&got, frame, "rx frame not scattered as received");
                }
                let len = u32::try_from(frame.len()).unwrap_or(0);
                pending = frames.next();
                len
            }
            Err(NetError::BufferTooSmall { .. }) => {
                pending = frames.next();
                0
            }
            Err(_) => {
                NET_STATS[3].fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        if rq.add_used(&mem, head, used).is_err() {
            break;
        }
    }
    let Some(mut tx_view) = tx_view else {
        return;
    };
    let trusted = tx_view.rings_trusted && rx_view.rings_trusted;
    tx_view.rings_trusted = trusted;
    rx_view.rings_trusted = trusted;
    check_used_ring(&mem, &tx_view, passes, 0);
    check_used_ring(&mem, &rx_view, 1, MAX_PACKET_LEN as u32 + 16);
}
