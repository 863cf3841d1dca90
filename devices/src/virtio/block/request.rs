//! virtio-blk requests (virtio 1.2, 5.2.6): parsing a descriptor chain into a
//! [`Request`] and carrying it out against a [`DiskImage`].
//!
//! Layout accepted, independent of how the driver splits it into descriptors
//! (virtio 1.2, 2.7.4 "message framing"): the device-readable part comes first
//! and starts with the 16-byte header; the device-writable part follows; the
//! last descriptor is writable and its last byte is the status byte.
//! Zero-length descriptors carry no bytes and are skipped.
//!
//! Everything here is guest-controlled. Parsing never panics and never loops
//! beyond the queue size; its outcome is either a request, or a rejection
//! that says whether a status byte can still be written (IOERR) or the chain
//! has to be returned with a used length of 0.

use log::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, Permissions};

use super::backend::DiskImage;
use super::{SECTOR_SHIFT, SECTOR_SIZE};
use crate::virtio::GuestMemory;

/// Size of the request header (`struct virtio_blk_req` up to `sector`).
pub const REQUEST_HEADER_SIZE: usize = 16;

/// Why a chain is not a valid request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The chain has no descriptor at all.
    #[error("empty descriptor chain")]
    EmptyChain,
    /// The chain ended on a descriptor that points further (a loop, an index
    /// past the table, an unreadable descriptor).
    #[error("descriptor chain is broken or loops")]
    BrokenChain,
    /// More descriptors than the queue has entries.
    #[error("descriptor chain longer than {0} descriptors")]
    TooLong(usize),
    /// The last descriptor is not a writable buffer of at least one byte.
    #[error("no writable status byte at the end of the chain")]
    NoStatus,
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable buffer follows a device-writable one.
    #[error("readable descriptor after a writable one")]
    ReadableAfterWritable,
    /// Fewer than 16 readable bytes for the header.
    #[error("request header needs 16 readable bytes, got {0}")]
    ShortHeader(u64),
    /// The header could not be read from guest memory.
    #[error("cannot read the request header")]
    HeaderRead,
    /// Data buffers whose direction does not fit the request type.
    #[error("data buffers in the wrong direction for request type {0}")]
    WrongDirection(u32),
    /// A read or write whose length is not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    /// GET_ID without a writable buffer for the ID.
    #[error("get-id request without an id buffer")]
    NoIdBuffer,
}

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// VIRTIO_BLK_T_IN: read sectors into the guest.
    In,
    /// VIRTIO_BLK_T_OUT: write sectors from the guest.
    Out,
    /// VIRTIO_BLK_T_FLUSH: make earlier writes durable.
    Flush,
    /// VIRTIO_BLK_T_GET_ID: the device's serial, 20 bytes.
    GetId,
    /// Anything else: answered with VIRTIO_BLK_S_UNSUPP.
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            other => Self::Unsupported(other),
        }
    }
}

/// A contiguous guest buffer (it may still span memory regions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub request_type: RequestType,
    /// First sector (IN and OUT).
    pub sector: u64,
    /// Data buffers: device-writable for IN and GET_ID, device-readable for OUT.
    pub data: Vec<Segment>,
    /// Total length of `data`.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
}

/// A chain that is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What is wrong.
    pub error: ParseError,
    /// Where the status byte goes, if the chain has a reachable one: the
    /// request is then completed with VIRTIO_BLK_S_IOERR.
    pub status_addr: Option<GuestAddress>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The status byte written (VIRTIO_BLK_S_*), if one was written.
    pub status: Option<u8>,
    /// Bytes written into the chain's writable buffers: the used length.
    pub used_len: u32,
}

// One non-empty descriptor as collected from the chain.
#[derive(Clone, Copy)]
struct Buf {
    seg: Segment,
    writable: bool,
}

/// Parses a descriptor chain. `max_descriptors` bounds the walk (the queue
/// size); virtio-queue's iterator bounds it too, this makes it explicit and
/// catches indirect tables larger than the queue.
pub fn parse<I>(chain: I, mem: &GuestMemory, max_descriptors: usize) -> Result<Request, Rejected>
where
    I: IntoIterator<Item = Descriptor>,
{
    let mut bufs: Vec<Buf> = Vec::new();
    let mut last: Option<Descriptor> = None;
    let mut count = 0usize;
    for desc in chain {
        count += 1;
        if count > max_descriptors {
            return Err(no_status(ParseError::TooLong(max_descriptors)));
        }
        if desc.len() > 0 {
            bufs.push(Buf {
                seg: Segment {
                    addr: desc.addr(),
                    len: desc.len(),
                },
                writable: desc.is_write_only(),
            });
        }
        last = Some(desc);
    }
    let Some(last) = last else {
        return Err(no_status(ParseError::EmptyChain));
    };
    // The iterator stops silently on a loop (its TTL), on a `next` past the
    // table and on unreadable descriptors: then the last one still says NEXT,
    // and the real end of the chain, where the status would be, is unknown.
    if last.has_next() {
        return Err(no_status(ParseError::BrokenChain));
    }
    if !last.is_write_only() || last.len() == 0 {
        return Err(no_status(ParseError::NoStatus));
    }
    // last.len() >= 1, so this does not underflow; the add may overflow for a
    // hostile address, which check_range below rejects.
    let status_addr = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .filter(|&a| mem.check_range(a, 1, Permissions::Write))
        .ok_or_else(|| no_status(ParseError::NoStatus))?;
    let reject = |error| Rejected {
        error,
        status_addr: Some(status_addr),
    };

    // Every buffer must lie in guest memory, readable ones first.
    let mut seen_writable = false;
    for b in &bufs {
        if !mem.check_range(b.seg.addr, b.seg.len as usize, Permissions::ReadWrite) {
            return Err(reject(ParseError::OutOfMemory {
                addr: b.seg.addr.raw_value(),
                len: b.seg.len,
            }));
        }
        if b.writable {
            seen_writable = true;
        } else if seen_writable {
            return Err(reject(ParseError::ReadableAfterWritable));
        }
    }

    let readable: Vec<Segment> = bufs.iter().filter(|b| !b.writable).map(|b| b.seg).collect();
    let mut writable: Vec<Segment> = bufs.iter().filter(|b| b.writable).map(|b| b.seg).collect();
    // The status byte is not data.
    if let Some(tail) = writable.last_mut() {
        tail.len -= 1;
        if tail.len == 0 {
            writable.pop();
        }
    }

    let (header_segs, readable_data) = split_at(&readable, REQUEST_HEADER_SIZE as u64);
    let header_len = total_len(&header_segs);
    if header_len < REQUEST_HEADER_SIZE as u64 {
        return Err(reject(ParseError::ShortHeader(header_len)));
    }
    let mut header = [0u8; REQUEST_HEADER_SIZE];
    let mut filled = 0usize;
    for seg in &header_segs {
        let n = seg.len as usize;
        mem.read_slice(&mut header[filled..filled + n], seg.addr)
            .map_err(|_| reject(ParseError::HeaderRead))?;
        filled += n;
    }
    let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
    let request_type = RequestType::from(u32::from_le_bytes([t0, t1, t2, t3]));
    let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);

    let writable_len = total_len(&writable);
    let readable_len = total_len(&readable_data);
    let data = match request_type {
        RequestType::In => {
            if readable_len != 0 {
                return Err(reject(ParseError::WrongDirection(VIRTIO_BLK_T_IN)));
            }
            writable
        }
        RequestType::Out => {
            if writable_len != 0 {
                return Err(reject(ParseError::WrongDirection(VIRTIO_BLK_T_OUT)));
            }
            readable_data
        }
        RequestType::GetId => {
            if writable_len == 0 {
                return Err(reject(ParseError::NoIdBuffer));
            }
            writable
        }
        // Flush carries no data; drivers that attach some anyway are
        // tolerated. Unknown types are answered UNSUPP whatever they carry.
        RequestType::Flush | RequestType::Unsupported(_) => Vec::new(),
    };
    let data_len = total_len(&data);
    if matches!(request_type, RequestType::In | RequestType::Out)
        && data_len & (SECTOR_SIZE - 1) != 0
    {
        return Err(reject(ParseError::UnalignedLength(data_len)));
    }
    Ok(Request {
        request_type,
        sector,
        data,
        data_len,
        status_addr,
    })
}

fn no_status(error: ParseError) -> Rejected {
    Rejected {
        error,
        status_addr: None,
    }
}

fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

// Splits a list of buffers after `at` bytes (the header may end inside a
// buffer that carries data after it).
fn split_at(segs: &[Segment], at: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = at;
    for seg in segs {
        if left == 0 {
            tail.push(*seg);
            continue;
        }
        match u32::try_from(left) {
            // The split falls inside this buffer.
            Ok(cut) if cut < seg.len => {
                head.push(Segment {
                    addr: seg.addr,
                    len: cut,
                });
                // Parse checked the whole buffer lies in memory, so this
                // address exists; checked_add only guards the arithmetic.
                if let Some(addr) = seg.addr.checked_add(u64::from(cut)) {
                    tail.push(Segment {
                        addr,
                        len: seg.len - cut,
                    });
                }
                left = 0;
            }
            // The whole buffer comes before the split.
            _ => {
                head.push(*seg);
                left -= u64::from(seg.len);
            }
        }
    }
    (head, tail)
}

/// The part of the device a request needs to run.
pub struct ExecContext<'a> {
    /// The disk.
    pub disk: &'a DiskImage,
    /// The 20-byte serial returned by GET_ID.
    pub serial: &'a [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// Whether the driver negotiated VIRTIO_BLK_F_FLUSH (write-back cache);
    /// without it every write is made durable before it completes.
    pub flush_negotiated: bool,
}

impl Request {
    /// Carries out the request and writes its status byte. Returns the status
    /// and the number of bytes written into the chain (the used length).
    pub fn execute(&self, mem: &GuestMemory, ctx: &ExecContext<'_>) -> Completion {
        let (status, data_written) = self.run(mem, ctx);
        write_status(mem, self.status_addr, status, data_written)
    }

    fn run(&self, mem: &GuestMemory, ctx: &ExecContext<'_>) -> (u32, u32) {
        match self.request_type {
            RequestType::In => match self.check_range(ctx.disk) {
                Some(offset) => self.read_in(mem, ctx.disk, offset),
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            RequestType::Out => {
                // virtio 1.2, 5.2.6.2: IOERR for writes to a read-only device,
                // and no data written.
                if ctx.disk.is_read_only() {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Some(offset) = self.check_range(ctx.disk) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let status = self.write_out(mem, ctx.disk, offset);
                if status == VIRTIO_BLK_S_OK && !ctx.flush_negotiated {
                    // Write-through: no flush will ever come.
                    if let Err(e) = ctx.disk.flush() {
                        debug!("virtio-blk: write-through sync failed: {e}");
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                }
                (status, 0)
            }
            RequestType::Flush => {
                if !ctx.flush_negotiated {
                    return (VIRTIO_BLK_S_UNSUPP, 0);
                }
                // A read-only image has nothing to write back; answering OK
                // keeps firmware that flushes every disk working (the spec
                // only requires IOERR for writes).
                if ctx.disk.is_read_only() {
                    return (VIRTIO_BLK_S_OK, 0);
                }
                match ctx.disk.flush() {
                    Ok(()) => (VIRTIO_BLK_S_OK, 0),
                    Err(e) => {
                        debug!("virtio-blk: flush failed: {e}");
                        (VIRTIO_BLK_S_IOERR, 0)
                    }
                }
            }
            RequestType::GetId => self.get_id(mem, ctx.serial),
            RequestType::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    // The byte offset of the first sector, if [sector, sector + n) lies
    // within the disk. Checked arithmetic: the sector is guest-chosen.
    fn check_range(&self, disk: &DiskImage) -> Option<u64> {
        let nsectors = self.data_len >> SECTOR_SHIFT;
        let end = self.sector.checked_add(nsectors)?;
        if end > disk.nsectors() {
            return None;
        }
        self.sector.checked_mul(SECTOR_SIZE)
    }

    fn read_in(&self, mem: &GuestMemory, disk: &DiskImage, offset: u64) -> (u32, u32) {
        let mut cursor = disk.at(offset);
        let mut written = 0u32;
        for seg in &self.data {
            if let Err(e) = mem.read_exact_volatile_from(seg.addr, &mut cursor, seg.len as usize) {
                debug!("virtio-blk: read at sector {} failed: {e}", self.sector);
                return (VIRTIO_BLK_S_IOERR, written);
            }
            written = written.saturating_add(seg.len);
        }
        (VIRTIO_BLK_S_OK, written)
    }

    fn write_out(&self, mem: &GuestMemory, disk: &DiskImage, offset: u64) -> u32 {
        let mut cursor = disk.at(offset);
        for seg in &self.data {
            if let Err(e) = mem.write_all_volatile_to(seg.addr, &mut cursor, seg.len as usize) {
                debug!("virtio-blk: write at sector {} failed: {e}", self.sector);
                return VIRTIO_BLK_S_IOERR;
            }
        }
        VIRTIO_BLK_S_OK
    }

    fn get_id(&self, mem: &GuestMemory, serial: &[u8; VIRTIO_BLK_ID_BYTES as usize]) -> (u32, u32) {
        // The ID is at most 20 bytes, not NUL-terminated when it fills them;
        // a shorter buffer gets what fits.
        let mut src: &[u8] = serial;
        let mut written = 0u32;
        for seg in &self.data {
            if src.is_empty() {
                break;
            }
            // At most the 20 serial bytes, so `n` fits a u32.
            let n = u32::try_from(src.len()).map_or(seg.len, |left| left.min(seg.len));
            let Some((now, rest)) = usize::try_from(n)
                .ok()
                .and_then(|n| src.split_at_checked(n))
            else {
                break;
            };
            if mem.write_slice(now, seg.addr).is_err() {
                return (VIRTIO_BLK_S_IOERR, written);
            }
            src = rest;
            written += n;
        }
        (VIRTIO_BLK_S_OK, written)
    }
}

impl Rejected {
    /// Completes a rejected request: VIRTIO_BLK_S_IOERR if a status byte is
    /// reachable, otherwise nothing written and a used length of 0.
    pub fn complete(&self, mem: &GuestMemory) -> Completion {
        match self.status_addr {
            Some(addr) => write_status(mem, addr, VIRTIO_BLK_S_IOERR, 0),
            None => Completion {
                status: None,
                used_len: 0,
            },
        }
    }
}

fn write_status(
    mem: &GuestMemory,
    addr: GuestAddress,
    status: u32,
    data_written: u32,
) -> Completion {
    // VIRTIO_BLK_S_* values are all below 256; anything else would still
    // be an error to the driver.
    let byte = u8::try_from(status).unwrap_or(u8::MAX);
    match mem.write_obj(byte, addr) {
        Ok(()) => Completion {
            status: Some(byte),
            used_len: data_written.saturating_add(1),
        },
        Err(e) => {
            debug!("virtio-blk: cannot write the status byte: {e}");
            Completion {
                status: None,
                used_len: data_written,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::default_guest_memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    fn d(addr: u64, len: u32, write: bool, next: bool) -> Descriptor {
        let mut flags = 0u16;
        if write {
            flags |= VRING_DESC_F_WRITE as u16;
        }
        if next {
            flags |= VRING_DESC_F_NEXT as u16;
        }
        Descriptor::new(addr, len, flags, 0)
    }

    fn header(mem: &GuestMemory, addr: u64, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&t.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(addr)).unwrap();
    }

    #[test]
    fn header_and_data_in_one_buffer_are_split() {
        let mem = default_guest_memory();
        header(&mem, 0x1000, VIRTIO_BLK_T_OUT, 3);
        let req = parse(
            [d(0x1000, 16 + 1024, false, true), d(0x9000, 1, true, false)],
            &mem,
            16,
        )
        .unwrap();
        assert_eq!(req.request_type, RequestType::Out);
        assert_eq!(req.sector, 3);
        assert_eq!(
            req.data,
            vec![Segment {
                addr: GuestAddress(0x1010),
                len: 1024
            }]
        );
        assert_eq!(req.status_addr, GuestAddress(0x9000));
    }

    #[test]
    fn status_is_the_last_byte_of_the_last_buffer() {
        let mem = default_guest_memory();
        header(&mem, 0x1000, VIRTIO_BLK_T_IN, 0);
        let req = parse(
            [d(0x1000, 16, false, true), d(0x8000, 513, true, false)],
            &mem,
            16,
        )
        .unwrap();
        assert_eq!(req.status_addr, GuestAddress(0x8200));
        assert_eq!(req.data_len, 512);
    }

    #[test]
    fn rejections_say_whether_a_status_is_reachable() {
        let mem = default_guest_memory();
        header(&mem, 0x1000, VIRTIO_BLK_T_IN, 0);
        let empty: [Descriptor; 0] = [];
        assert_eq!(
            parse(empty, &mem, 16).unwrap_err().error,
            ParseError::EmptyChain
        );
        // Ends on a readable descriptor.
        let r = parse([d(0x1000, 16, false, false)], &mem, 16).unwrap_err();
        assert_eq!(r, no_status(ParseError::NoStatus));
        // Ends on a descriptor that still says NEXT.
        let r = parse(
            [d(0x1000, 16, false, true), d(0x2000, 1, true, true)],
            &mem,
            16,
        )
        .unwrap_err();
        assert_eq!(r.error, ParseError::BrokenChain);
        assert_eq!(r.status_addr, None);
        // Too many descriptors.
        let r = parse(vec![d(0x2000, 1, true, true); 17], &mem, 16).unwrap_err();
        assert_eq!(r.error, ParseError::TooLong(16));
        // Readable after writable: status known, IOERR.
        let r = parse(
            [
                d(0x1000, 16, false, true),
                d(0x3000, 512, true, true),
                d(0x4000, 512, false, true),
                d(0x2000, 1, true, false),
            ],
            &mem,
            16,
        )
        .unwrap_err();
        assert_eq!(r.error, ParseError::ReadableAfterWritable);
        assert_eq!(r.status_addr, Some(GuestAddress(0x2000)));
        // A status byte past the end of memory.
        let r = parse(
            [d(0x1000, 16, false, true), d(u64::MAX, 1, true, false)],
            &mem,
            16,
        )
        .unwrap_err();
        assert_eq!(r.status_addr, None);
    }

    #[test]
    fn split_at_cuts_inside_a_buffer() {
        let segs = [
            Segment {
                addr: GuestAddress(0),
                len: 10,
            },
            Segment {
                addr: GuestAddress(100),
                len: 10,
            },
        ];
        let (h, t) = split_at(&segs, 16);
        assert_eq!(total_len(&h), 16);
        assert_eq!(
            t,
            vec![Segment {
                addr: GuestAddress(106),
                len: 4
            }]
        );
        let (h, t) = split_at(&segs, 0);
        assert!(h.is_empty());
        assert_eq!(t.len(), 2);
    }
}
