//! The host side of the agent protocol, fed what a hostile guest can send:
//! the byte stream runm's sandbox and agent client read from the guest
//! (`guest_agent::proto::read_frame`, called until the stream ends or
//! fails, as both do).
//!
//! The input decodes into frames that are well-formed by default (every
//! message an agent may send, and the host's own messages, which a guest may
//! send back, with arbitrary fields; data frames for any process and
//! stream) with knobs that spoil them: a lying length prefix (zero, past
//! the maximum, longer or shorter than the body), an unknown kind or
//! stream, a short data header, raw or truncated JSON, JSON of the wrong
//! shape, deep nesting, huge numbers. The stream reaches the reader in
//! arbitrary short reads, some interrupted.
//!
//! Checked, whatever the guest sent: no panic; the loop ends; no frame
//! decodes larger than [`MAX_FRAME`]; every frame before the first spoiled
//! one decodes to exactly what was sent; and any decoded frame encodes and
//! decodes back to itself (so what the host relays onwards means what it
//! read).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use guest_agent::proto::{self, Frame, Message, Stream, MAX_FRAME};

/// A message, as the fuzzer builds it (the protocol's type does not derive
/// `Arbitrary`).
#[derive(Arbitrary, Debug, Clone)]
pub enum MessageSpec {
    /// `Ready`.
    Ready(u32, String),
    /// `NetworkConfigured`.
    NetworkConfigured,
    /// `Created`.
    Created,
    /// `Started`.
    Started(u32, u32),
    /// `Exited`.
    Exited(u32, i32, Option<String>),
    /// `Processes`.
    Processes(Vec<u32>),
    /// `Error`.
    Error(String),
    /// `Hello` (a host message, sent back by a guest).
    Hello(u32),
    /// `Start`.
    Start(String),
    /// `Signal`.
    Signal(String, u32, i32, bool),
    /// `Ps`.
    Ps(String),
    /// `Resize`.
    Resize(u32, u16, u16),
    /// `Deleted`.
    Deleted,
    /// `Shutdown`.
    Shutdown,
}

impl MessageSpec {
    fn message(&self) -> Message {
        match self.clone() {
            MessageSpec::Ready(version, kernel) => Message::Ready { version, kernel },
            MessageSpec::NetworkConfigured => Message::NetworkConfigured,
            MessageSpec::Created => Message::Created,
            MessageSpec::Started(process_id, pid) => Message::Started { process_id, pid },
            MessageSpec::Exited(process_id, status, container) => Message::Exited {
                process_id,
                status,
                container,
            },
            MessageSpec::Processes(pids) => Message::Processes { pids },
            MessageSpec::Error(message) => Message::Error { message },
            MessageSpec::Hello(version) => Message::Hello { version },
            MessageSpec::Start(container) => Message::Start { container },
            MessageSpec::Signal(container, process_id, signal, all) => Message::Signal {
                container,
                process_id,
                signal,
                all,
            },
            MessageSpec::Ps(container) => Message::Ps { container },
            MessageSpec::Resize(process_id, rows, cols) => Message::Resize {
                process_id,
                rows,
                cols,
            },
            MessageSpec::Deleted => Message::Deleted,
            MessageSpec::Shutdown => Message::Shutdown,
        }
    }
}

/// What a frame carries.
#[derive(Arbitrary, Debug, Clone)]
pub enum Body {
    /// A control message.
    Control(MessageSpec),
    /// Stdio bytes (stream 0..=2 is valid).
    Data(u32, u8, Vec<u8>),
}

/// How a frame is spoiled.
#[derive(Arbitrary, Debug, Clone)]
pub enum Spoil {
    /// The length prefix replaced.
    Len(u32),
    /// The length prefix off by a small amount (the stream desynchronises).
    LenDelta(i8),
    /// The kind byte replaced.
    Kind(u8),
    /// The body cut to this many bytes (the prefix still says the full length).
    Truncate(u16),
    /// The control body replaced by raw bytes.
    Raw(Vec<u8>),
    /// JSON nested this many (times 8) levels deep.
    Nest(u8),
    /// A number too large for any field.
    HugeNumber,
    /// Valid JSON of the wrong shape.
    WrongShape(u8),
    /// A JSON message of a type the host does not know.
    UnknownType(String),
}

/// One frame.
#[derive(Arbitrary, Debug, Clone)]
pub struct FrameSpec {
    /// Its content.
    pub body: Body,
    /// How it is spoiled, if it is.
    pub spoil: Option<Spoil>,
}

/// The whole input.
#[derive(Arbitrary, Debug)]
pub struct AgentInput {
    /// The frames, in order.
    pub frames: Vec<FrameSpec>,
    /// Read sizes the reader cycles through (0: an interrupted read).
    pub reads: Vec<u8>,
    /// Bytes after the last frame.
    pub tail: Vec<u8>,
}

/// A reader that hands out the stream in the given short reads.
struct Chunked<'a> {
    data: &'a [u8],
    reads: &'a [u8],
    next: usize,
    interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = if self.reads.is_empty() {
            buf.len()
        } else {
            let s = self.reads[self.next % self.reads.len()];
            self.next = self.next.wrapping_add(1);
            // An interruption is followed by a read that makes progress, as
            // a signal cannot arrive forever.
            if s == 0 && !self.data.is_empty() && !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.interrupted = false;
            usize::from(s.max(1))
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The bytes of `spec` on the wire; `Some(frame)` if it is well-formed.
fn encode(spec: &FrameSpec) -> (Vec<u8>, Option<Frame>) {
    let (frame, valid_stream) = match &spec.body {
        Body::Control(m) => (Frame::Control(Box::new(m.message())), true),
        Body::Data(process_id, stream, data) => {
            let s = match stream % 4 {
                0 => Stream::Stdin,
                1 => Stream::Stdout,
                _ => Stream::Stderr,
            };
            let frame = Frame::Data {
                process_id: *process_id,
                stream: s,
                data: data.clone(),
            };
            (frame, *stream % 4 != 3)
        }
    };
    let mut wire = Vec::new();
    if proto::write_frame(&mut wire, &frame).is_err() {
        return (Vec::new(), None);
    }
    if !valid_stream {
        wire[9] = 3;
    }
    let mut body = wire.split_off(4);
    let mut len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let json = |v: String| {
        let mut b = vec![0u8];
        b.extend_from_slice(v.as_bytes());
        b
    };
    match &spec.spoil {
        None if valid_stream => {
            wire.extend_from_slice(&body);
            return (wire, Some(frame));
        }
        None => {}
        Some(Spoil::Len(l)) => len = *l,
        Some(Spoil::LenDelta(d)) => len = len.wrapping_add_signed(i32::from(*d)),
        Some(Spoil::Kind(k)) => body[0] = *k,
        Some(Spoil::Truncate(n)) => body.truncate(usize::from(*n)),
        Some(Spoil::Raw(raw)) => {
            body = vec![0u8];
            body.extend_from_slice(raw);
        }
        Some(Spoil::Nest(depth)) => {
            let d = usize::from(*depth) * 8;
            body = json(format!("{}{}", "[".repeat(d), "]".repeat(d)));
        }
        Some(Spoil::HugeNumber) => {
            body =
                json(r#"{"type":"started","process_id":1e999,"pid":184467440737095516160}"#.into());
        }
        Some(Spoil::WrongShape(n)) => {
            let v = match n % 5 {
                0 => "null",
                1 => "[]",
                2 => r#"{"type":7}"#,
                3 => r#"{"type":"exited","process_id":"x","status":1}"#,
                _ => r#""ready""#,
            };
            body = json(v.into());
        }
        Some(Spoil::UnknownType(t)) => {
            body = json(serde_json_string_message(t));
        }
    }
    if !matches!(spec.spoil, Some(Spoil::Len(_) | Spoil::LenDelta(_))) {
        len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        if matches!(spec.spoil, Some(Spoil::Truncate(_))) {
            len = len.saturating_add(1);
        }
    }
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    (out, None)
}

/// `{"type": t}` with `t` escaped as JSON.
fn serde_json_string_message(t: &str) -> String {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), serde_json::Value::String(t.to_string()));
    serde_json::Value::Object(m).to_string()
}

/// Frames decoded, decode errors, inputs whose well-formed prefix matched.
static STATS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// (frames decoded, streams that ended in an error, well-formed prefixes
/// checked) so far, for the driver's summary.
pub fn agent_stats() -> [u64; 3] {
    [0, 1, 2].map(|i| STATS[i].load(Ordering::Relaxed))
}

/// Runs the host's frame reader over the stream `data` describes.
pub fn fuzz_agent_proto(data: &[u8]) {
    let Ok(input) = AgentInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    let mut spoiled = false;
    for spec in input.frames.iter().take(64) {
        let (bytes, frame) = encode(spec);
        match frame {
            Some(f) if !spoiled => expected.push(f),
            _ => spoiled = true,
        }
        stream.extend_from_slice(&bytes);
    }
    stream.extend_from_slice(&input.tail);
    let mut reader = Chunked {
        data: &stream,
        reads: &input.reads,
        next: 0,
        interrupted: false,
    };

    let mut decoded = Vec::new();
    // Each successful read consumes at least the 4-byte prefix; the bound
    // only guards the check itself.
    for _ in 0..=stream.len() / 4 + 1 {
        match proto::read_frame(&mut reader) {
            Ok(Some(frame)) => {
                if let Frame::Data { data, .. } = &frame {
                    assert!(data.len() < MAX_FRAME, "oversized data frame");
                }
                // What the host relays onwards means what it read.
                let mut again = Vec::new();
                if proto::write_frame(&mut again, &frame).is_ok() {
                    let back = proto::read_frame(&mut again.as_slice())
                        .expect("a re-encoded frame decodes")
                        .expect("a re-encoded frame is there");
                    assert_eq!(back, frame, "re-encoding changed a frame");
                }
                decoded.push(frame);
                STATS[0].fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => break,
            Err(_) => {
                STATS[1].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    let n = expected.len().min(decoded.len());
    assert_eq!(
        &decoded[..n],
        &expected[..n],
        "well-formed frames decoded differently"
    );
    if !spoiled {
        // (The tail may hold more frames.)
        assert!(
            decoded.len() >= expected.len(),
            "well-formed frames were lost"
        );
    }
    STATS[2].fetch_add(1, Ordering::Relaxed);
}
