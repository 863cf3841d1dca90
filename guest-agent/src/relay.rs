//! Stdio relay threads between container processes and the host.
//!
//! Owns the threads that move bytes: one per output stream (process to
//! host, as `Data` frames through the shared, locked channel writer) and one
//! per process stdin (host to process). A slow process therefore never
//! stalls the agent's event loop, and frames never interleave.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use crate::console::log;
use crate::proto::{self, Frame, Stream};

/// Bytes read from a process per `Data` frame (well under `MAX_FRAME`).
const CHUNK: usize = 32 * 1024;

/// The channel writer, shared by the event loop and every relay thread.
pub type SharedWriter<W> = Arc<Mutex<W>>;

/// Locks the writer; a thread that panicked while holding it cannot have
/// left a half-written frame (each frame is one `write_all`), so the lock
/// is taken over.
pub fn lock<W>(w: &SharedWriter<W>) -> std::sync::MutexGuard<'_, W> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Relays one output stream of process `process_id` to the host until end of
/// file, then calls `on_eof`. Once `muted` is set (the process's `Exited` was
/// sent) nothing more is forwarded: a straggler holding the pipe open cannot
/// produce data after the exit report. `muted` is checked under the writer
/// lock, the same lock `Exited` is sent under.
pub fn spawn_output<W, F>(
    mut source: File,
    process_id: u32,
    stream: Stream,
    writer: SharedWriter<W>,
    muted: Arc<AtomicBool>,
    on_eof: F,
) -> io::Result<()>
where
    W: Write + Send + 'static,
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(format!("out-{process_id}-{stream:?}"))
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // EIO: a terminal whose every slave is closed; that is
                    // its end of file.
                    Err(_) => break,
                };
                let mut w = lock(&writer);
                if muted.load(Ordering::SeqCst) {
                    continue;
                }
                let frame = Frame::Data {
                    process_id,
                    stream,
                    data: buf.get(..n).unwrap_or_default().to_vec(),
                };
                if let Err(e) = proto::write_frame(&mut *w, &frame) {
                    log!("relaying output of process {process_id}: {e}");
                    break;
                }
            }
            on_eof();
        })
        .map(drop)
}

/// Starts the stdin writer of a process. Send it host data; an empty chunk
/// closes the process's stdin (for a terminal it is ignored: closing the
/// master would hang the terminal up, not signal end of input).
pub fn spawn_stdin(mut sink: File, process_id: u32, terminal: bool) -> io::Result<Sender<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name(format!("in-{process_id}"))
        .spawn(move || {
            for chunk in rx {
                if chunk.is_empty() {
                    if terminal {
                        continue;
                    }
                    break;
                }
                // EPIPE: the process closed its stdin or ended; the rest of
                // the host's input has nowhere to go.
                if sink.write_all(&chunk).is_err() {
                    break;
                }
            }
        })?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut r = bytes;
        let mut out = Vec::new();
        while let Some(f) = proto::read_frame(&mut r).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn output_becomes_data_frames_then_eof() {
        let (r, w) = guest_agent::fdio::pipe().unwrap();
        let writer: SharedWriter<Vec<u8>> = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel();
        spawn_output(
            File::from(r),
            3,
            Stream::Stderr,
            writer.clone(),
            Arc::new(AtomicBool::new(false)),
            move || done_tx.send(()).unwrap(),
        )
        .unwrap();
        let mut w = File::from(w);
        w.write_all(b"oops").unwrap();
        drop(w);
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let got = frames(&lock(&writer));
        let data: Vec<u8> = got
            .iter()
            .flat_map(|f| match f {
                Frame::Data {
                    process_id: 3,
                    stream: Stream::Stderr,
                    data,
                } => data.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(data, b"oops");
    }

    #[test]
    fn muted_output_is_dropped() {
        let (r, w) = guest_agent::fdio::pipe().unwrap();
        let writer: SharedWriter<Vec<u8>> = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel();
        spawn_output(
            File::from(r),
            0,
            Stream::Stdout,
            writer.clone(),
            Arc::new(AtomicBool::new(true)),
            move || done_tx.send(()).unwrap(),
        )
        .unwrap();
        let mut w = File::from(w);
        w.write_all(b"late").unwrap();
        drop(w);
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(lock(&writer).is_empty());
    }

    #[test]
    fn stdin_chunks_then_close() {
        let (r, w) = guest_agent::fdio::pipe().unwrap();
        let tx = spawn_stdin(File::from(w), 0, false).unwrap();
        tx.send(b"ab".to_vec()).unwrap();
        tx.send(b"c".to_vec()).unwrap();
        tx.send(Vec::new()).unwrap();
        let mut got = Vec::new();
        // End of file arrives only if the empty chunk closed the pipe.
        File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");
    }
}
