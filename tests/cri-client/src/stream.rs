//! The streaming half of CRI `Exec`: the runtime's streaming server (in
//! containerd, kubelet's streaming library on `stream_server_address`)
//! serves the URL that `Exec` returned; a WebSocket client that asks for
//! the `v4.channel.k8s.io` protocol gets every message as one binary frame
//! whose first byte names the channel (1 stdout, 2 stderr, 3 the final
//! status, as JSON). This is what `kubectl exec` speaks through the API
//! server; a plain blocking TCP client is enough for it (no stdin, no
//! terminal: the client sends nothing after the handshake).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The subprotocol asked for: binary frames, status on channel 3.
const PROTOCOL: &str = "v4.channel.k8s.io";

/// What a streamed exec gave.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Channel 1.
    pub stdout: Vec<u8>,
    /// Channel 2.
    pub stderr: Vec<u8>,
    /// The exit code, from the status on channel 3 (0 for `Success`, the
    /// `ExitCode` cause otherwise).
    pub exit_code: i32,
    /// That status, as sent.
    pub status: String,
}

/// Why a streamed exec failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The URL is not `http://HOST:PORT/PATH`.
    #[error("not a streaming URL: {0}")]
    Url(String),
    /// Connecting, writing or reading.
    #[error("{url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the upgrade or spoke something else.
    #[error("{url}: {detail}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

/// Runs the exec behind `url` to its end (at most `timeout`) and collects
/// its output and exit code.
pub fn exec(url: &str, timeout: Duration) -> Result<ExecOutput, StreamError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StreamError::Url(url.into()))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| StreamError::Url(url.into()))?;
    let io = |source| StreamError::Io {
        url: url.into(),
        source,
    };
    let proto = |detail: String| StreamError::Protocol {
        url: url.into(),
        detail,
    };
    let until = Instant::now() + timeout;
    let mut sock = TcpStream::connect(host).map_err(io)?;
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    // The key only proves the server speaks WebSocket; any 16 bytes do.
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: cnVubS1jcmktdGVzdC0xNg==\r\n\
         Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    );
    sock.write_all(request.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(sock);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(proto(format!(
                "connection closed in the handshake: {head:?}"
            )));
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    if !head.first().is_some_and(|l| l.contains(" 101 ")) {
        return Err(proto(format!("no upgrade: {head:?}")));
    }
    if !head.iter().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("sec-websocket-protocol:")
            && l.contains(PROTOCOL)
    }) {
        return Err(proto(format!("{PROTOCOL} not accepted: {head:?}")));
    }
    let mut out = ExecOutput::default();
    let mut message: Vec<u8> = Vec::new();
    loop {
        if Instant::now() > until {
            return Err(proto(format!("not finished within {timeout:?}")));
        }
        let Some((fin, opcode, payload)) = read_frame(&mut reader).map_err(io)? else {
            break;
        };
        match opcode {
            // A close frame ends the exchange, like the end of the stream.
            0x8 => break,
            // Pings need no answer here: the exchange is short.
            0x9 | 0xA => continue,
            0x0..=0x2 => message.extend_from_slice(&payload),
            other => return Err(proto(format!("unexpected frame opcode {other:#x}"))),
        }
        if !fin {
            continue;
        }
        let msg = std::mem::take(&mut message);
        let Some((&channel, data)) = msg.split_first() else {
            continue;
        };
        match channel {
            1 => out.stdout.extend_from_slice(data),
            2 => out.stderr.extend_from_slice(data),
            3 => out.status.push_str(&String::from_utf8_lossy(data)),
            _ => {}
        }
    }
    if out.status.is_empty() {
        return Err(proto("the stream ended without a status".into()));
    }
    out.exit_code = exit_code(&out.status).map_err(proto)?;
    Ok(out)
}

/// The exit code a `v4.channel.k8s.io` status (a Kubernetes `Status`)
/// carries.
fn exit_code(status: &str) -> Result<i32, String> {
    let v: serde_json::Value =
        serde_json::from_str(status).map_err(|e| format!("status {status:?}: {e}"))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    v["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok())
        .ok_or_else(|| format!("status without an exit code: {status}"))
}

/// One frame from the server: (FIN, opcode, payload), or None at the end
/// of the stream. Server frames are not masked; a masked one is unmasked.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(bool, u8, Vec<u8>)>> {
    let mut h = [0u8; 2];
    match r.read_exact(&mut h) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let fin = h[0] & 0x80 != 0;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    // Exec output in a test is small; a huge length is a broken stream.
    if len > 64 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((fin, opcode, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_from_the_status() {
        assert_eq!(exit_code(r#"{"metadata":{},"status":"Success"}"#), Ok(0));
        let failed = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 5], exit code 5","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"5"}]}}"#;
        assert_eq!(exit_code(failed), Ok(5));
        assert!(exit_code(r#"{"status":"Failure"}"#).is_err());
        assert!(exit_code("not json").is_err());
    }

    #[test]
    fn frames_short_extended_and_masked() {
        let mut bytes = vec![0x82, 3, 1, b'h', b'i'];
        bytes.extend_from_slice(&[0x82, 126, 0, 200]);
        bytes.extend(std::iter::repeat_n(7u8, 200));
        let mask = [1u8, 2, 3, 4];
        bytes.extend_from_slice(&[0x81, 0x80 | 2]);
        bytes.extend_from_slice(&mask);
        bytes.extend_from_slice(&[b'o' ^ 1, b'k' ^ 2]);
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((true, 2, vec![1, b'h', b'i']))
        );
        let (_, _, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(p.len(), 200);
        assert_eq!(read_frame(&mut r).unwrap(), Some((true, 1, b"ok".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }
}
