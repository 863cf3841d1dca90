//! virtio-blk against real guest memory and a real image file, with chains
//! built by hand the way a driver (or an attacker) would lay them out.

use std::io::Write;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::bus::BusDevice;
use crate::test_utils::{
    activate_context, default_guest_memory, fill, pump, read_bytes, recording_interrupt,
    RecordingIrq, TestDesc, TestQueue, DEFAULT_MEM_SIZE,
};
use crate::virtio::mmio::{regs, status, MmioTransport};
use crate::virtio::{GuestMemory, VirtioDevice, VIRTIO_F_VERSION_1};

const NSECTORS: u64 = 64;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const STATUS_POISON: u8 = 0xee;
const ALL_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

struct Setup {
    image: tempfile::NamedTempFile,
    block: Block,
    irq: Arc<RecordingIrq>,
    evts: Vec<EventFd>,
}

fn image() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&pattern(NSECTORS as usize * 512)).unwrap();
    f
}

fn block(read_only: bool) -> (tempfile::NamedTempFile, Block) {
    let image = image();
    let block = Block::new(BlockConfig {
        id: "vda".into(),
        path: image.path().to_path_buf(),
        read_only,
        serial: Some("runm-serial-0123456789".into()),
    })
    .unwrap();
    (image, block)
}

fn setup(mem: &GuestMemory, queue: Queue, read_only: bool, features: u64) -> Setup {
    let (image, mut block) = block(read_only);
    block.ack_features(features);
    let (interrupt, irq) = recording_interrupt();
    let (ctx, evts) = activate_context(mem, interrupt, vec![queue]);
    block.activate(ctx).unwrap();
    Setup {
        image,
        block,
        irq,
        evts,
    }
}

fn header(mem: &GuestMemory, addr: u64, t: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&t.to_le_bytes());
    h[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(addr)).unwrap();
}

fn status_byte(mem: &GuestMemory, addr: u64) -> u8 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

fn poison_status(mem: &GuestMemory) {
    mem.write_obj(STATUS_POISON, GuestAddress(STATUS)).unwrap();
}

fn file_bytes(s: &Setup) -> Vec<u8> {
    std::fs::read(s.image.path()).unwrap()
}

// header, data..., status
fn request(tq: &TestQueue, first: u16, data: &[TestDesc]) -> u16 {
    let mut descs = vec![TestDesc::readable(HDR, 16)];
    descs.extend_from_slice(data);
    descs.push(TestDesc::writable(STATUS, 1));
    tq.add_chain(first, &descs)
}

#[test]
fn features_and_config_space() {
    let (_image, b) = block(false);
    assert_eq!(b.device_features(), ALL_FEATURES);
    assert_eq!(b.queue_max_sizes(), &[256]);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), NSECTORS);
    let mut seg = [0u8; 4];
    b.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), 254);
    let mut past = [0xffu8; 4];
    b.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0xff; 4], "nothing read past the config space");

    let (_image, ro) = block(true);
    assert_eq!(ro.device_features(), ALL_FEATURES | (1 << VIRTIO_BLK_F_RO));
}

#[test]
fn read_returns_the_image_bytes() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 2);
    request(
        &tq,
        0,
        &[
            TestDesc::writable(DATA, 512),
            TestDesc::writable(DATA + 0x1000, 1024),
        ],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    poison_status(&mem);
    s.block.process_queue(0);

    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(tq.used_idx(), 1);
    assert_eq!(tq.used_elem(0), (0, 1536 + 1));
    let image = pattern(NSECTORS as usize * 512);
    assert_eq!(read_bytes(&mem, DATA, 512), image[1024..1536]);
    assert_eq!(read_bytes(&mem, DATA + 0x1000, 1024), image[1536..2560]);
    assert_eq!(s.irq.count(), 1);
    assert_eq!(
        s.block
            .counters()
            .read_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        1536
    );
    // Notifications are enabled again once the queue is empty.
    assert_eq!(tq.used_flags() & VRING_USED_F_NO_NOTIFY as u16, 0);
}

#[test]
fn write_lands_in_the_file() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 5);
    fill(&mem, DATA, 512, 0x5a);
    fill(&mem, DATA + 0x1000, 512, 0xa5);
    request(
        &tq,
        0,
        &[
            TestDesc::readable(DATA, 512),
            TestDesc::readable(DATA + 0x1000, 512),
        ],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    poison_status(&mem);
    s.block.process_queue(0);

    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(tq.used_elem(0), (0, 1));
    let file = file_bytes(&s);
    assert_eq!(&file[5 * 512..6 * 512], &[0x5a; 512][..]);
    assert_eq!(&file[6 * 512..7 * 512], &[0xa5; 512][..]);
    assert_eq!(
        file[..5 * 512],
        pattern(5 * 512)[..],
        "nothing else changed"
    );
    assert_eq!(file.len(), NSECTORS as usize * 512);
}

#[test]
fn write_without_negotiated_flush_is_written_through() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    fill(&mem, DATA, 512, 1);
    request(&tq, 0, &[TestDesc::readable(DATA, 512)]);
    let mut s = setup(&mem, tq.create_queue(), false, 1 << VIRTIO_F_VERSION_1);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(&file_bytes(&s)[..512], &[1u8; 512][..]);
}

#[test]
fn flush_succeeds_when_negotiated_and_is_unsupported_otherwise() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    request(&tq, 0, &[]);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    poison_status(&mem);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(tq.used_elem(0), (0, 1));

    let tq = TestQueue::new(&mem, GuestAddress(0x8000), 16);
    request(&tq, 0, &[]);
    let mut s = setup(&mem, tq.create_queue(), false, 1 << VIRTIO_F_VERSION_1);
    poison_status(&mem);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_UNSUPP as u8);
}

#[test]
fn get_id_returns_the_serial() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    fill(&mem, DATA, 32, 0xff);
    request(&tq, 0, &[TestDesc::writable(DATA, 20)]);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(tq.used_elem(0), (0, 21));
    // 20 bytes, truncated, not NUL-terminated; nothing written past them.
    assert_eq!(read_bytes(&mem, DATA, 20), b"runm-serial-01234567");
    assert_eq!(read_bytes(&mem, DATA + 20, 12), vec![0xff; 12]);

    // A short serial is zero-padded.
    let (image, mut b) = {
        let image = image();
        let disk = DiskImage::open(image.path(), true).unwrap();
        (image, Block::with_disk("x".into(), disk, "abc").unwrap())
    };
    let tq = TestQueue::new(&mem, GuestAddress(0x8000), 16);
    fill(&mem, DATA, 32, 0xff);
    request(&tq, 0, &[TestDesc::writable(DATA, 32)]);
    let (interrupt, _) = recording_interrupt();
    let (ctx, _evts) = activate_context(&mem, interrupt, vec![tq.create_queue()]);
    b.activate(ctx).unwrap();
    b.process_queue(0);
    assert_eq!(
        read_bytes(&mem, DATA, 21),
        b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff"
    );
    drop(image);
}

#[test]
fn read_only_device_refuses_writes() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    fill(&mem, DATA, 512, 0x11);
    request(&tq, 0, &[TestDesc::readable(DATA, 512)]);
    let features = ALL_FEATURES | (1 << VIRTIO_BLK_F_RO);
    let mut s = setup(&mem, tq.create_queue(), true, features);
    poison_status(&mem);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(tq.used_elem(0), (0, 1));
    assert_eq!(file_bytes(&s), pattern(NSECTORS as usize * 512));

    // Reads and flushes still work (a flush has nothing to write back).
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_FLUSH, 0);
    tq.add_chain(
        4,
        &[
            TestDesc::readable(HDR + 0x100, 16),
            TestDesc::writable(STATUS + 1, 1),
        ],
    );
    header(&mem, HDR + 0x200, VIRTIO_BLK_T_IN, 0);
    tq.add_chain(
        8,
        &[
            TestDesc::readable(HDR + 0x200, 16),
            TestDesc::writable(DATA + 0x1000, 512),
            TestDesc::writable(STATUS + 2, 1),
        ],
    );
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS + 1), VIRTIO_BLK_S_OK as u8);
    assert_eq!(status_byte(&mem, STATUS + 2), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_bytes(&mem, DATA + 0x1000, 512), pattern(512));
}

#[test]
fn sectors_beyond_the_capacity_are_io_errors() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 32);
    // (type, sector, data length)
    let cases = [
        (VIRTIO_BLK_T_IN, NSECTORS, 512u32),
        (VIRTIO_BLK_T_IN, NSECTORS - 1, 1024),
        (VIRTIO_BLK_T_IN, u64::MAX, 512),
        (VIRTIO_BLK_T_IN, u64::MAX / 512 + 1, 512),
        (VIRTIO_BLK_T_OUT, NSECTORS, 512),
        (VIRTIO_BLK_T_OUT, u64::MAX - 1, 1024),
    ];
    for (i, &(t, sector, len)) in cases.iter().enumerate() {
        let i = i as u64;
        header(&mem, HDR + i * 0x100, t, sector);
        tq.add_chain(
            (i * 3) as u16,
            &[
                TestDesc::readable(HDR + i * 0x100, 16),
                TestDesc {
                    addr: DATA + i * 0x1000,
                    len,
                    writable: t == VIRTIO_BLK_T_IN,
                },
                TestDesc::writable(STATUS + i, 1),
            ],
        );
    }
    fill(&mem, DATA, 0x10000, 0x77);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), cases.len() as u16);
    for i in 0..cases.len() {
        assert_eq!(
            status_byte(&mem, STATUS + i as u64),
            VIRTIO_BLK_S_IOERR as u8,
            "case {i}"
        );
        assert_eq!(tq.used_elem(i as u16).1, 1, "case {i}: no data claimed");
    }
    assert_eq!(read_bytes(&mem, DATA, 0x10000), vec![0x77; 0x10000]);
    assert_eq!(file_bytes(&s), pattern(NSECTORS as usize * 512));

    // The very last sector is fine.
    header(&mem, HDR, VIRTIO_BLK_T_IN, NSECTORS - 1);
    request(&tq, 0, &[TestDesc::writable(DATA, 512)]);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
}

#[test]
fn header_split_across_descriptors() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    // Move the header's bytes to three separate places: 5 + 7 + 4 bytes.
    let h = read_bytes(&mem, HDR, 16);
    mem.write_slice(&h[..5], GuestAddress(0x11_0000)).unwrap();
    mem.write_slice(&h[5..12], GuestAddress(0x12_0000)).unwrap();
    mem.write_slice(&h[12..], GuestAddress(0x13_0000)).unwrap();
    tq.add_chain(
        0,
        &[
            TestDesc::readable(0x11_0000, 5),
            TestDesc::readable(0x12_0000, 7),
            TestDesc::readable(0x13_0000, 4),
            TestDesc::writable(DATA, 512),
            TestDesc::writable(STATUS, 1),
        ],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_bytes(&mem, DATA, 512), pattern(1024)[512..]);
}

#[test]
fn data_and_status_may_share_the_last_buffer() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    tq.add_chain(
        0,
        &[TestDesc::readable(HDR, 16), TestDesc::writable(DATA, 513)],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(status_byte(&mem, DATA + 512), VIRTIO_BLK_S_OK as u8);
    assert_eq!(read_bytes(&mem, DATA, 512), pattern(512));
    assert_eq!(tq.used_elem(0), (0, 513));
}

#[test]
fn buffers_outside_guest_memory() {
    let mem = default_guest_memory();
    let end = DEFAULT_MEM_SIZE as u64;
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    // Data past the end of memory: IOERR.
    request(&tq, 0, &[TestDesc::writable(end + 0x1000, 512)]);
    // Data straddling the end of memory: IOERR, nothing written.
    fill(&mem, end - 256, 256, 0x33);
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_IN, 0);
    tq.add_chain(
        3,
        &[
            TestDesc::readable(HDR + 0x100, 16),
            TestDesc::writable(end - 256, 512),
            TestDesc::writable(STATUS + 1, 1),
        ],
    );
    // Header outside memory: IOERR.
    tq.add_chain(
        6,
        &[
            TestDesc::readable(u64::MAX - 8, 16),
            TestDesc::writable(STATUS + 2, 1),
        ],
    );
    // Status outside memory: nothing can be written, used length 0.
    tq.add_chain(
        8,
        &[TestDesc::readable(HDR, 16), TestDesc::writable(end, 1)],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 4);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(status_byte(&mem, STATUS + 1), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(status_byte(&mem, STATUS + 2), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(read_bytes(&mem, end - 256, 256), vec![0x33; 256]);
    assert_eq!(tq.used_elem(3), (8, 0));
    let c = s.block.counters();
    assert_eq!(c.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.failed.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[test]
fn zero_and_huge_length_descriptors() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    // A zero-length buffer between data buffers carries nothing: OK.
    request(
        &tq,
        0,
        &[
            TestDesc::writable(DATA, 512),
            TestDesc::writable(0xdead_0000_0000, 0),
            TestDesc::writable(DATA + 0x1000, 512),
        ],
    );
    // A data buffer of almost 4 GiB: outside memory, IOERR.
    tq.add_chain(
        5,
        &[
            TestDesc::readable(HDR, 16),
            TestDesc::writable(DATA, u32::MAX - 32),
            TestDesc::writable(STATUS + 1, 1),
        ],
    );
    // Only zero-length descriptors: no header, no status: dropped.
    tq.add_chain(
        8,
        &[
            TestDesc::readable(HDR, 0),
            TestDesc::writable(STATUS + 2, 0),
        ],
    );
    // A huge header buffer: 16 bytes are the header, the rest is readable
    // data, which an IN request must not have: IOERR.
    tq.add_chain(
        10,
        &[
            TestDesc::readable(HDR, 0x8000_0000),
            TestDesc::writable(STATUS + 3, 1),
        ],
    );
    // A chain of more than 4 GiB in all, which drivers must not build: the
    // descriptor iterator stops at the buffer that overflows, so the chain
    // has no end and no status. Dropped.
    tq.add_chain(
        12,
        &[
            TestDesc::readable(HDR, 16),
            TestDesc::writable(DATA, u32::MAX),
            TestDesc::writable(STATUS + 4, 1),
        ],
    );
    mem.write_obj(STATUS_POISON, GuestAddress(STATUS + 2))
        .unwrap();
    mem.write_obj(STATUS_POISON, GuestAddress(STATUS + 4))
        .unwrap();
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 5);
    assert_eq!(tq.used_elem(4), (12, 0));
    assert_eq!(status_byte(&mem, STATUS + 4), STATUS_POISON);
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(tq.used_elem(0), (0, 1025));
    assert_eq!(status_byte(&mem, STATUS + 1), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(tq.used_elem(2), (8, 0));
    assert_eq!(status_byte(&mem, STATUS + 2), STATUS_POISON);
    assert_eq!(status_byte(&mem, STATUS + 3), VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn malformed_requests_get_io_errors() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_OUT, 0);
    header(&mem, HDR + 0x200, 0x1234, 0);
    fill(&mem, DATA, 0x4000, 0x44);
    // Write-only header.
    tq.add_chain(
        0,
        &[
            TestDesc::writable(HDR, 16),
            TestDesc::writable(DATA, 512),
            TestDesc::writable(STATUS, 1),
        ],
    );
    // IN with a readable data buffer.
    tq.add_chain(
        3,
        &[
            TestDesc::readable(HDR, 16),
            TestDesc::readable(DATA, 512),
            TestDesc::writable(STATUS + 1, 1),
        ],
    );
    // OUT with a writable data buffer.
    tq.add_chain(
        6,
        &[
            TestDesc::readable(HDR + 0x100, 16),
            TestDesc::writable(DATA + 0x1000, 512),
            TestDesc::writable(STATUS + 2, 1),
        ],
    );
    // IN of a length that is not a whole sector.
    tq.add_chain(
        9,
        &[
            TestDesc::readable(HDR, 16),
            TestDesc::writable(DATA + 0x2000, 100),
            TestDesc::writable(STATUS + 3, 1),
        ],
    );
    // A short header.
    tq.add_chain(
        12,
        &[
            TestDesc::readable(HDR, 15),
            TestDesc::writable(STATUS + 4, 1),
        ],
    );
    // An unknown type: UNSUPP.
    tq.add_chain(
        14,
        &[
            TestDesc::readable(HDR + 0x200, 16),
            TestDesc::writable(STATUS + 5, 1),
        ],
    );
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 6);
    for i in 0..5 {
        assert_eq!(
            status_byte(&mem, STATUS + i),
            VIRTIO_BLK_S_IOERR as u8,
            "case {i}"
        );
        assert_eq!(tq.used_elem(i as u16).1, 1, "case {i}");
    }
    assert_eq!(status_byte(&mem, STATUS + 5), VIRTIO_BLK_S_UNSUPP as u8);
    assert_eq!(read_bytes(&mem, DATA, 0x4000), vec![0x44; 0x4000]);
    assert_eq!(file_bytes(&s), pattern(NSECTORS as usize * 512));
}

#[test]
fn looping_and_overlong_chains_are_dropped_without_hanging() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    let next = VRING_DESC_F_NEXT as u16;
    let write = VRING_DESC_F_WRITE as u16;
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    // Descriptor 0 points to itself.
    tq.set_desc(0, STATUS, 1, write | next, 0);
    tq.publish(0);
    // 1 -> 2 -> 1.
    tq.set_desc(1, HDR, 16, next, 2);
    tq.set_desc(2, STATUS + 1, 1, write | next, 1);
    tq.publish(1);
    // `next` past the end of the table.
    tq.set_desc(3, HDR, 16, next, 100);
    tq.publish(3);
    // A chain through every descriptor and back to the start: longer than
    // the queue.
    for i in 4..16u16 {
        tq.set_desc(i, HDR, 16, next, (i + 1) % 16);
    }
    tq.publish(4);
    // An indirect table of 32 descriptors, twice the queue size.
    let table = 0x40_0000u64;
    for i in 0..32u16 {
        let d = virtio_queue::desc::split::Descriptor::new(STATUS, 1, write | next, i + 1);
        mem.write_obj(
            virtio_queue::desc::RawDescriptor::from(d),
            GuestAddress(table + 16 * u64::from(i)),
        )
        .unwrap();
    }
    let last = virtio_queue::desc::split::Descriptor::new(STATUS, 1, write, 0);
    mem.write_obj(
        virtio_queue::desc::RawDescriptor::from(last),
        GuestAddress(table + 16 * 31),
    )
    .unwrap();
    tq.set_desc(5, table, 32 * 16, VRING_DESC_F_INDIRECT as u16, 0);
    tq.publish(5);
    mem.write_obj(STATUS_POISON, GuestAddress(STATUS)).unwrap();
    mem.write_obj(STATUS_POISON, GuestAddress(STATUS + 1))
        .unwrap();

    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 5);
    for (n, head) in [0u32, 1, 3, 4, 5].iter().enumerate() {
        assert_eq!(tq.used_elem(n as u16), (*head, 0), "chain {head}");
    }
    assert_eq!(status_byte(&mem, STATUS), STATUS_POISON);
    assert_eq!(status_byte(&mem, STATUS + 1), STATUS_POISON);
    assert_eq!(
        s.block
            .counters()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn head_index_out_of_range_is_skipped() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    tq.publish(500);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    request(&tq, 0, &[]);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    // The bogus head cannot be returned; the next request is served.
    assert_eq!(tq.used_idx(), 1);
    assert_eq!(tq.used_elem(0), (0, 1));
    assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK as u8);
}

#[test]
fn avail_index_wraps_around() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    let start = u16::MAX - 1;
    tq.set_avail_idx(start);
    tq.set_used_idx(start);
    let mut queue = tq.create_queue();
    queue.set_next_avail(start);
    queue.set_next_used(start);
    for i in 0..4u16 {
        let hdr = HDR + u64::from(i) * 0x100;
        header(&mem, hdr, VIRTIO_BLK_T_IN, u64::from(i));
        tq.add_chain(
            i * 3,
            &[
                TestDesc::readable(hdr, 16),
                TestDesc::writable(DATA + u64::from(i) * 0x1000, 512),
                TestDesc::writable(STATUS + u64::from(i), 1),
            ],
        );
    }
    assert_eq!(tq.avail_idx(), 2);
    let mut s = setup(&mem, queue, false, ALL_FEATURES);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 2);
    let image = pattern(4 * 512);
    for i in 0..4u16 {
        assert_eq!(tq.used_elem(start.wrapping_add(i)), (u32::from(i) * 3, 513));
        assert_eq!(
            read_bytes(&mem, DATA + u64::from(i) * 0x1000, 512),
            image[usize::from(i) * 512..usize::from(i + 1) * 512]
        );
    }
}

#[test]
fn avail_index_running_ahead_stops_the_queue_until_reset() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    request(&tq, 0, &[]);
    tq.set_avail_idx(17);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.process_queue(0);
    assert!(s.block.activation.is_broken(0));
    // Left alone even once the index looks sane again.
    tq.set_avail_idx(1);
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 0);
    assert_eq!(s.irq.count(), 0);
    // A reset and a new activation bring it back.
    s.block.reset();
    s.block.ack_features(ALL_FEATURES);
    tq.set_avail_idx(1);
    let (interrupt, _) = recording_interrupt();
    let (ctx, _evts) = activate_context(&mem, interrupt, vec![tq.create_queue()]);
    s.block.activate(ctx).unwrap();
    s.block.process_queue(0);
    assert_eq!(tq.used_idx(), 1);
}

#[test]
fn inactive_device_ignores_the_queue() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    request(&tq, 0, &[]);
    let mut s = setup(&mem, tq.create_queue(), false, ALL_FEATURES);
    s.block.reset();
    assert!(!s.block.is_activated());
    s.block.process_queue(0);
    s.block.process_queue(7);
    assert_eq!(tq.used_idx(), 0);

    // Activation without a ready queue is refused.
    let mut q = tq.create_queue();
    q.set_ready(false);
    let (interrupt, _) = recording_interrupt();
    let (ctx, _) = activate_context(&mem, interrupt, vec![q]);
    assert!(s.block.activate(ctx).is_err());
    drop(s.evts);
}

fn w(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn r(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn driver_init(t: &mut MmioTransport, tq: &TestQueue) {
    w(t, regs::STATUS, status::ACKNOWLEDGE);
    w(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(t, regs::DRIVER_FEATURES_SEL, 0);
    w(t, regs::DRIVER_FEATURES, ALL_FEATURES as u32);
    w(t, regs::DRIVER_FEATURES_SEL, 1);
    w(t, regs::DRIVER_FEATURES, (ALL_FEATURES >> 32) as u32);
    w(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    w(t, regs::QUEUE_SEL, 0);
    w(t, regs::QUEUE_NUM, u32::from(tq.size()));
    w(t, regs::QUEUE_DESC_LOW, tq.desc_table_addr().0 as u32);
    w(t, regs::QUEUE_DRIVER_LOW, tq.avail_addr().0 as u32);
    w(t, regs::QUEUE_DEVICE_LOW, tq.used_addr().0 as u32);
    w(t, regs::QUEUE_READY, 1);
    w(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
}

/// The whole data path without KVM: registers -> activation through the event
/// loop -> QueueNotify -> event loop -> request -> interrupt -> ACK; then a
/// reset while a request is pending, and a second driver instance.
#[test]
fn data_path_through_transport_and_event_loop_with_reset_mid_request() {
    let mem = default_guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    let (image, block) = block(false);
    let block = Arc::new(Mutex::new(block));
    let (interrupt, irq) = recording_interrupt();
    let mut t = MmioTransport::new(mem.clone(), interrupt, block.clone()).unwrap();
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    let id = em.add_subscriber(block.clone());

    driver_init(&mut t, &tq);
    assert!(t.is_activated());
    pump(&mut em, 4);

    header(&mem, HDR, VIRTIO_BLK_T_IN, 3);
    request(&tq, 0, &[TestDesc::writable(DATA, 512)]);
    w(&mut t, regs::QUEUE_NOTIFY, 0);
    pump(&mut em, 4);
    assert_eq!(tq.used_idx(), 1);
    assert_eq!(read_bytes(&mem, DATA, 512), pattern(4 * 512)[3 * 512..]);
    assert_eq!(irq.count(), 1);
    assert_eq!(r(&mut t, regs::INTERRUPT_STATUS), 1);
    w(&mut t, regs::INTERRUPT_ACK, 1);
    assert_eq!(r(&mut t, regs::INTERRUPT_STATUS), 0);

    // A request is pending and notified when the driver resets the device.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    fill(&mem, DATA, 512, 0x99);
    request(&tq, 3, &[TestDesc::readable(DATA, 512)]);
    w(&mut t, regs::QUEUE_NOTIFY, 0);
    w(&mut t, regs::STATUS, 0);
    pump(&mut em, 4);
    assert_eq!(tq.used_idx(), 1, "abandoned, not completed");
    assert_eq!(
        &std::fs::read(image.path()).unwrap()[..512],
        &pattern(512)[..]
    );
    assert!(!block.lock().unwrap().is_activated());

    // A new driver instance starts from a clean ring.
    let tq2 = TestQueue::new(&mem, GuestAddress(0x8000), 16);
    driver_init(&mut t, &tq2);
    pump(&mut em, 4);
    request(&tq2, 0, &[TestDesc::readable(DATA, 512)]);
    w(&mut t, regs::QUEUE_NOTIFY, 0);
    pump(&mut em, 4);
    assert_eq!(tq2.used_idx(), 1);
    assert_eq!(
        &std::fs::read(image.path()).unwrap()[..512],
        &[0x99; 512][..]
    );

    // Removing the device from the event loop leaves no stale registrations.
    em.remove_subscriber(id).unwrap();
}
