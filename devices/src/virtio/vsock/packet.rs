//! The virtio-vsock wire format (virtio 1.2, 5.10.6): the 44-byte packet
//! header, and moving packets between descriptor chains and the device.
//!
//! This module owns every access to guest memory that vsock makes, so it is
//! where hostile input is bounded: a header must be fully readable, a payload
//! must fit both the descriptors that carry it and [`MAX_PAYLOAD`], and all
//! copies go through vm-memory's bounds-checked slices.

use std::io::{self, Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};

use crate::virtio::GuestMemory;

/// Size of `struct virtio_vsock_hdr` on the wire.
pub const HDR_LEN: usize = 44;

/// The largest payload accepted from the guest in one packet. Linux sends at
/// most 64 KiB per packet; anything larger is a hostile or broken driver, and
/// the cap bounds the copy the device makes per chain.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The CID of the host (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;

/// Socket type: stream (the only one this device offers).
pub const TYPE_STREAM: u16 = 1;

/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset or refused.
pub const OP_RST: u16 = 3;
/// The sender will not receive and/or send any more (see `SHUTDOWN_*`).
pub const OP_SHUTDOWN: u16 = 4;
/// Stream data.
pub const OP_RW: u16 = 5;
/// Unsolicited credit information.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Asks the peer for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// `OP_SHUTDOWN` flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `OP_SHUTDOWN` flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both shutdown flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Why a descriptor chain did not yield a usable packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// A descriptor points outside guest memory or the chain is malformed.
    #[error("descriptor chain is not usable: {0}")]
    BadChain(String),
    /// Fewer than [`HDR_LEN`] device-readable bytes.
    #[error("packet header needs {HDR_LEN} readable bytes, the chain has {0}")]
    ShortHeader(usize),
    /// The header announces a payload above [`MAX_PAYLOAD`].
    #[error("payload length {} exceeds the {MAX_PAYLOAD}-byte limit", .0.len)]
    PayloadTooBig(Header),
    /// The header announces more payload than the chain carries.
    #[error("payload length {} exceeds the {avail} readable bytes after the header", .hdr.len)]
    PayloadTruncated {
        /// The parsed header.
        hdr: Header,
        /// Readable bytes after the header.
        avail: usize,
    },
    /// Copying from or to guest memory failed.
    #[error("guest memory access failed: {0}")]
    Memory(String),
    /// A device-writable chain too small for even a header.
    #[error("rx buffer of {0} bytes cannot hold a packet header")]
    RxBufferTooSmall(usize),
}

impl PacketError {
    /// The header, when it was read before the packet was found malformed: the
    /// muxer resets that connection instead of silently dropping its data.
    pub fn header(&self) -> Option<&Header> {
        match self {
            Self::PayloadTooBig(hdr) | Self::PayloadTruncated { hdr, .. } => Some(hdr),
            _ => None,
        }
    }
}

/// `struct virtio_vsock_hdr`, decoded. On the wire it is packed little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type (`TYPE_STREAM`).
    pub type_: u16,
    /// Operation (`OP_*`).
    pub op: u16,
    /// Operation flags (`SHUTDOWN_*` for `OP_SHUTDOWN`).
    pub flags: u32,
    /// The sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, wrapping.
    pub fwd_cnt: u32,
}

// Field offsets in `struct virtio_vsock_hdr`.
const OFF_SRC_CID: usize = 0;
const OFF_DST_CID: usize = 8;
const OFF_SRC_PORT: usize = 16;
const OFF_DST_PORT: usize = 20;
const OFF_LEN: usize = 24;
const OFF_TYPE: usize = 28;
const OFF_OP: usize = 30;
const OFF_FLAGS: usize = 32;
const OFF_BUF_ALLOC: usize = 36;
const OFF_FWD_CNT: usize = 40;

fn le_u16(b: &[u8; HDR_LEN], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8; HDR_LEN], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8; HDR_LEN], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Decodes a header from its wire form.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Self {
            src_cid: le_u64(b, OFF_SRC_CID),
            dst_cid: le_u64(b, OFF_DST_CID),
            src_port: le_u32(b, OFF_SRC_PORT),
            dst_port: le_u32(b, OFF_DST_PORT),
            len: le_u32(b, OFF_LEN),
            type_: le_u16(b, OFF_TYPE),
            op: le_u16(b, OFF_OP),
            flags: le_u32(b, OFF_FLAGS),
            buf_alloc: le_u32(b, OFF_BUF_ALLOC),
            fwd_cnt: le_u32(b, OFF_FWD_CNT),
        }
    }

    /// Encodes the header in its wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[OFF_SRC_CID..OFF_SRC_CID + 8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[OFF_DST_CID..OFF_DST_CID + 8].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[OFF_SRC_PORT..OFF_SRC_PORT + 4].copy_from_slice(&self.src_port.to_le_bytes());
        b[OFF_DST_PORT..OFF_DST_PORT + 4].copy_from_slice(&self.dst_port.to_le_bytes());
        b[OFF_LEN..OFF_LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[OFF_TYPE..OFF_TYPE + 2].copy_from_slice(&self.type_.to_le_bytes());
        b[OFF_OP..OFF_OP + 2].copy_from_slice(&self.op.to_le_bytes());
        b[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&self.flags.to_le_bytes());
        b[OFF_BUF_ALLOC..OFF_BUF_ALLOC + 4].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[OFF_FWD_CNT..OFF_FWD_CNT + 4].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Reads one guest-to-device packet from a tx chain.
///
/// The header is gathered from the chain's device-readable descriptors, so it
/// may be split across several; the payload follows in the same stream of
/// readable bytes. Only `OP_RW` carries a payload: for other operations the
/// `len` field is ignored (and `payload` left empty) because nothing would use
/// those bytes. `payload` is a buffer reused across calls.
pub fn read_tx_packet(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    payload: &mut Vec<u8>,
) -> Result<Header, PacketError> {
    payload.clear();
    let mut reader: Reader<'_> = chain
        .reader(mem)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    let avail = reader.available_bytes();
    if avail < HDR_LEN {
        return Err(PacketError::ShortHeader(avail));
    }
    let mut raw = [0u8; HDR_LEN];
    reader
        .read_exact(&mut raw)
        .map_err(|e| PacketError::Memory(e.to_string()))?;
    let hdr = Header::from_bytes(&raw);
    if hdr.op != OP_RW {
        return Ok(hdr);
    }
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD {
        return Err(PacketError::PayloadTooBig(hdr));
    }
    let avail = reader.available_bytes();
    if len > avail {
        return Err(PacketError::PayloadTruncated { hdr, avail });
    }
    payload.resize(len, 0);
    reader
        .read_exact(payload)
        .map_err(|e| PacketError::Memory(e.to_string()))?;
    Ok(hdr)
}

/// An rx chain turned into a place the device can write one packet to.
pub struct RxBuffer<'a> {
    writer: Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    /// Wraps the device-writable part of `chain`; fails when a descriptor is
    /// outside guest memory or the buffer cannot hold a header.
    pub fn new(
        chain: DescriptorChain<&'a GuestMemory>,
        mem: &'a GuestMemory,
    ) -> Result<Self, PacketError> {
        let writer: Writer<'a> = chain
            .writer(mem)
            .map_err(|e| PacketError::BadChain(e.to_string()))?;
        let cap = writer.available_bytes();
        if cap < HDR_LEN {
            return Err(PacketError::RxBufferTooSmall(cap));
        }
        Ok(Self { writer })
    }

    /// How many payload bytes fit after the header.
    pub fn max_payload(&self) -> usize {
        self.writer.available_bytes().saturating_sub(HDR_LEN)
    }

    /// Writes `hdr` followed by the payload given in two parts (a ring
    /// buffer's two halves); returns the bytes written, for the used ring.
    /// `hdr.len` must equal the payload's length.
    pub fn write_packet(&mut self, hdr: &Header, a: &[u8], b: &[u8]) -> io::Result<u32> {
        let total = HDR_LEN + a.len() + b.len();
        if total > self.writer.available_bytes() || hdr.len as usize != a.len() + b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "packet does not fit the rx buffer",
            ));
        }
        self.writer.write_all(&hdr.to_bytes())?;
        self.writer.write_all(a)?;
        self.writer.write_all(b)?;
        u32::try_from(total).map_err(|_| io::Error::other("packet length overflows u32"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let hdr = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xdead_beef,
            dst_port: 1234,
            len: 77,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: SHUTDOWN_BOTH,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0xffff_fff0,
        };
        let b = hdr.to_bytes();
        assert_eq!(b[0], 0x08);
        assert_eq!(&b[20..24], &1234u32.to_le_bytes());
        assert_eq!(&b[28..30], &[1, 0]);
        assert_eq!(&b[30..32], &[5, 0]);
        assert_eq!(Header::from_bytes(&b), hdr);
    }

    #[test]
    fn malformed_errors_keep_the_header() {
        let hdr = Header {
            len: 1 << 20,
            ..Header::default()
        };
        assert_eq!(PacketError::PayloadTooBig(hdr).header(), Some(&hdr));
        assert_eq!(PacketError::ShortHeader(3).header(), None);
    }
}
