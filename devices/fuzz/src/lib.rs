//! Fuzz targets for the virtio devices, shared by the libFuzzer binaries
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

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use devices::virtio::GuestMemory;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
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

/// Lays out `ring` and `chains` in `mem` and returns the device-side queue.
pub fn lay_out(mem: &GuestMemory, ring: &RingSpec, chains: &[ChainSpec]) -> Laid {
    let size: u16 = 1 << (ring.size_log2 % 9);
    let desc_table = QUEUE_BASE;
    let avail = desc_table + 16 * u64::from(size);
    let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
    let start = ring.start;

    let mut next_desc: u16 = 0;
    let mut buf_cursor = BUF_BASE;
    let mut indirect_cursor = INDIRECT_BASE;
    let mut heads = Vec::new();
    let mut rings_trusted = true;
    for chain in chains.iter().take(usize::from(size)) {
        let bufs: Vec<&BufSpec> = chain.bufs.iter().take(8).collect();
        if bufs.is_empty() {
            continue;
        }
        // Buffers: carve from the buffer area, wrapping around it.
        let mut descs: Vec<SplitDescriptor> = Vec::with_capacity(bufs.len());
        let mut prefix_off = 0usize;
        for b in &bufs {
            let len = u32::from(b.len);
            if buf_cursor + u64::from(len) > MEM_SIZE {
                buf_cursor = BUF_BASE;
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
                if indirect_cursor + 16 * 8 > BUF_BASE {
                    indirect_cursor = INDIRECT_BASE;
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
    }
    let extra = if ring.lie >= 240 { 4 } else { 0 };
    for &h in ring.extra_heads.iter().take(extra) {
        heads.push(h);
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
        view: RingView {
            size,
            published,
            rings_trusted,
            avail_idx_overridden: overridden,
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
