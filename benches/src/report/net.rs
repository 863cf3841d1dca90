//! The network the report measures across: two network namespaces of its
//! own, joined by a veth pair, with addresses that exist only there. The
//! workload's namespace is what an engine's CNI would prepare (the veth with
//! an address and a default route to the peer); the workload runs in it as
//! a host process, joins it in a runc container, or has it plumbed into its
//! microVM by runm. The peer's end is served by this process from a thread
//! inside the peer namespace: an echo for round trips and a sink for
//! streams (the workload program's `net` mode is the client).
//!
//! Traffic never leaves the two namespaces; both go when [`NetPair`] drops.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::error::{ReportError, Result};

/// The peer's address (private, only ever assigned inside the pair).
pub const PEER_ADDR: &str = "10.213.0.1";
/// The workload's address.
pub const WORKLOAD_ADDR: &str = "10.213.0.2";
/// The port the peer serves.
pub const PORT: u16 = 5201;

/// Two namespaces joined by a veth, and the peer's server.
pub struct NetPair {
    workload: String,
    peer: String,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| ReportError::Refused(format!("ip {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ReportError::Refused(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetPair {
    /// Makes both namespaces (names unique to this process), the veth and
    /// the addresses, and starts the peer's server.
    pub fn new() -> Result<Self> {
        let tag = std::process::id();
        let mut pair = NetPair {
            workload: format!("runm-bench-{tag}-w"),
            peer: format!("runm-bench-{tag}-p"),
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        // Dropping `pair` on an error removes what was made.
        let (w, p) = (pair.workload.clone(), pair.peer.clone());
        ip(&["netns", "add", &w])?;
        ip(&["netns", "add", &p])?;
        ip(&[
            "-n", &w, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0", "netns", &p,
        ])?;
        ip(&[
            "-n",
            &w,
            "addr",
            "add",
            &format!("{WORKLOAD_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &p,
            "addr",
            "add",
            &format!("{PEER_ADDR}/24"),
            "dev",
            "veth0",
        ])?;
        for (ns, dev) in [(&w, "eth0"), (&w, "lo"), (&p, "veth0"), (&p, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&["-n", &w, "route", "add", "default", "via", PEER_ADDR])?;
        pair.server = Some(serve(pair.path_of(&p), Arc::clone(&pair.stop))?);
        Ok(pair)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }

    /// The workload's namespace, as `linux.namespaces` names it.
    pub fn workload_netns(&self) -> PathBuf {
        self.path_of(&self.workload)
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.server.take() {
            // Its accept polls, so it sees `stop` within a moment.
            let _ = h.join();
        }
        for ns in [&self.workload, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Starts the peer's server on a thread that enters `netns` first.
fn serve(netns: PathBuf, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let listener = (|| -> std::io::Result<TcpListener> {
            let ns = std::fs::File::open(&netns)?;
            // SAFETY: setns(2) on an open nsfs descriptor, for this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let l = TcpListener::bind((PEER_ADDR, PORT))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })();
        let listener = match listener {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    std::thread::spawn(move || {
                        let _ = answer(conn);
                    });
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(ReportError::Refused(format!("the peer's server: {e}"))),
        Err(_) => Err(ReportError::Refused(
            "the peer's server did not start".into(),
        )),
    }
}

/// One client: `e` then bytes to echo, or `s` then a stream to count.
fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    conn.read_exact(&mut mode)?;
    let mut buf = vec![0u8; 64 * 1024];
    match mode[0] {
        b'e' => loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        },
        b's' => {
            let mut total: u64 = 0;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(&total.to_le_bytes())?;
            conn.shutdown(Shutdown::Write)
        }
        _ => Ok(()),
    }
}
