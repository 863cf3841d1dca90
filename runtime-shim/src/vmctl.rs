//! Stopping and continuing a container's VM (`runm pause` / `runm resume`).
//!
//! Owns the two ways runm freezes a microVM:
//! - QEMU: its QMP monitor (`-qmp unix:<dir>/qmp.sock`), commands `stop` and
//!   `cont`. Only the vCPUs stop; QEMU's main loop keeps serving its sockets,
//!   and the guest's clocks do not jump when it continues.
//! - runm-vmm: it has no control API yet, so the VM process is sent
//!   `SIGSTOP` and `SIGCONT`. That stops the event loop with the vCPUs;
//!   whatever the host sends meanwhile waits in socket buffers. A jailed
//!   runm-vmm runs in its own PID namespace below a waiting parent, the VM
//!   process runm knows: stopping that parent would not stop the VM, so it
//!   is sent `SIGTSTP`, which it turns into `SIGSTOP` of the jailed VMM,
//!   and `SIGCONT`, which it passes on.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors stopping or continuing a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmCtlError {
    /// The QMP socket could not be used.
    #[error("QEMU monitor {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// QEMU answered with an error or something unexpected.
    #[error("QEMU monitor refused '{command}': {answer}")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's answer.
        answer: String,
    },
    /// The VM process could not be signalled.
    #[error("cannot signal the VM process {pid}: {source}")]
    Signal {
        /// Its pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How a VM is stopped and continued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmControl {
    /// QEMU's QMP socket.
    Qmp {
        /// The socket.
        socket: PathBuf,
    },
    /// `SIGSTOP`/`SIGCONT` to the VM process.
    Signals,
    /// `SIGTSTP`/`SIGCONT` to a jailed runm-vmm's waiting parent, which
    /// stops and continues the jailed VMM.
    JailSignals,
}

impl VmControl {
    /// Stops the VM's vCPUs (`vm_pid`: the VM process).
    pub fn pause(&self, vm_pid: i32) -> Result<(), VmCtlError> {
        match self {
            VmControl::Qmp { socket } => qmp(socket, "stop"),
            VmControl::Signals => signal(vm_pid, libc::SIGSTOP),
            VmControl::JailSignals => signal(vm_pid, libc::SIGTSTP),
        }
    }

    /// Continues a VM stopped by [`VmControl::pause`].
    pub fn resume(&self, vm_pid: i32) -> Result<(), VmCtlError> {
        match self {
            VmControl::Qmp { socket } => qmp(socket, "cont"),
            VmControl::Signals | VmControl::JailSignals => signal(vm_pid, libc::SIGCONT),
        }
    }
}

fn signal(pid: i32, sig: i32) -> Result<(), VmCtlError> {
    crate::sys::kill(pid, sig).map_err(|source| VmCtlError::Signal { pid, source })
}

/// One QMP session: read the greeting, negotiate capabilities, run `command`.
fn qmp(socket: &Path, command: &str) -> Result<(), VmCtlError> {
    let io = |source| VmCtlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let stream = crate::sys::connect_unix(socket).map_err(io)?;
    stream.set_read_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);
    let greeting = read_reply(&mut reader).map_err(io)?;
    if greeting.get("QMP").is_none() {
        return Err(VmCtlError::Refused {
            command: "greeting".into(),
            answer: greeting.to_string(),
        });
    }
    for cmd in ["qmp_capabilities", command] {
        let line = format!("{}\n", serde_json::json!({ "execute": cmd }));
        writer.write_all(line.as_bytes()).map_err(io)?;
        let answer = read_reply(&mut reader).map_err(io)?;
        if answer.get("return").is_none() {
            return Err(VmCtlError::Refused {
                command: cmd.into(),
                answer: answer.to_string(),
            });
        }
    }
    Ok(())
}

/// The next QMP message that is not an asynchronous event (`STOP`,
/// `RESUME`, ... arrive between commands and answers).
fn read_reply(r: &mut impl BufRead) -> io::Result<serde_json::Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QEMU closed the monitor connection",
            ));
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if v.get("event").is_none() {
            return Ok(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU monitor: greets, then answers each command line with
    /// `answers` in turn (an event first, as QEMU sends `STOP` before the
    /// `stop` command's answer).
    fn fake_qemu(path: &Path, answers: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            let mut got = Vec::new();
            let mut r = BufReader::new(c.try_clone().unwrap());
            for a in answers {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(line.trim().to_string());
                c.write_all(b"{\"event\": \"STOP\", \"timestamp\": {}}\r\n")
                    .unwrap();
                c.write_all(a.as_bytes()).unwrap();
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            got
        })
    }

    #[test]
    fn qmp_stop_negotiates_then_runs_the_command() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp.sock");
        let t = fake_qemu(&sock, vec!["{\"return\": {}}\n", "{\"return\": {}}\n"]);
        VmControl::Qmp {
            socket: sock.clone(),
        }
        .pause(0)
        .unwrap();
        assert_eq!(
            t.join().unwrap(),
            vec![
                "{\"execute\":\"qmp_capabilities\"}",
                "{\"execute\":\"stop\"}"
            ]
        );
    }

    #[test]
    fn qmp_errors_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp.sock");
        let t = fake_qemu(
            &sock,
            vec![
                "{\"return\": {}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            ],
        );
        let e = VmControl::Qmp { socket: sock }.resume(0).unwrap_err();
        assert!(e.to_string().contains("refused 'cont'"), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
        t.join().unwrap();
        let e = VmControl::Qmp {
            socket: d.path().join("none"),
        }
        .pause(0)
        .unwrap_err();
        assert!(e.to_string().contains("QEMU monitor"), "{e}");
    }

    #[test]
    fn signals_stop_and_continue_a_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let state = || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
        };
        VmControl::Signals.pause(pid).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while state() != 'T' && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(state(), 'T');
        VmControl::Signals.resume(pid).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while state() == 'T' && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_ne!(state(), 'T');
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
