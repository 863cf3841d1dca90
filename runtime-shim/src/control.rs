//! The sandbox's control socket (`<root>/<id>/control.sock`): how later runm
//! commands reach a running container.
//!
//! One request per connection: the client writes one JSON [`Request`] line,
//! the sandbox answers one JSON [`Response`] line. After a successful
//! `exec` that is not detached, the same connection carries the exec'd
//! process's stdio in the agent protocol's frames ([`guest_agent::proto`]):
//! the client sends stdin data frames (empty data = end of input), the
//! sandbox sends stdout/stderr data frames and finally an `Exited` control
//! frame. The socket lives in the container's 0700 directory, so only its
//! owner can reach it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use guest_agent::proto::ProcessSpec;
use serde::{Deserialize, Serialize};

/// Longest request or response line accepted.
const MAX_LINE: u64 = 1 << 20;

/// Errors on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The sandbox is not there.
    #[error("cannot reach the container's sandbox at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// Not valid JSON for the other side.
    #[error("control socket: malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// The other side hung up without answering.
    #[error("the container's sandbox closed the control connection without answering")]
    Closed,
    /// The sandbox refused the request.
    #[error("{0}")]
    Refused(String),
}

/// What a runm command asks of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run the container's process.
    Start,
    /// Deliver a signal to the container's process (or all its processes).
    Kill {
        /// Signal number.
        signal: i32,
        /// To every process of the container.
        all: bool,
        /// To this exec'd process instead of the container's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process_id: Option<u32>,
    },
    /// Run another process; the connection then carries its stdio.
    Exec {
        /// The process.
        process: ProcessSpec,
        /// The host process relaying its stdio (the pid `exec --pid-file`
        /// names), listed by `ps` as the exec'd process's host pid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_pid: Option<i32>,
    },
    /// List the container's processes (guest pids).
    Ps,
    /// List the container's host processes (answered without the guest).
    HostPids,
    /// Stop the VM's vCPUs.
    Pause,
    /// Continue a paused VM.
    Resume,
    /// Tear the VM down now (`delete` of a created container, `delete --force`).
    Destroy,
    /// From the sandbox of another container of this pod (this container
    /// is the pod's sandbox): run it in this VM. After the answer the
    /// connection carries that container's agent frames, which this
    /// sandbox relays to and from the agent.
    Attach {
        /// The container's id.
        container: String,
    },
}

/// One host process of a container, as `HostPids` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProcess {
    /// Host pid.
    pub pid: i32,
    /// What it is.
    pub role: HostRole,
    /// For an exec relay: the exec'd process's pid inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_pid: Option<u32>,
}

/// What a container's host process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostRole {
    /// The sandbox: the container's pid.
    Sandbox,
    /// The VM process (runm-vmm or QEMU).
    Vm,
    /// The relay of an exec'd process (`runm exec`, or its detached relay).
    Exec,
}

/// The sandbox's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    /// Why the request failed; `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `ps`: guest pids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    /// `exec`: the process id the agent protocol uses for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<u32>,
    /// `start`/`exec`: the process's pid inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_pid: Option<u32>,
    /// `host_pids`: the container's host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Vec<HostProcess>>,
}

impl Response {
    /// A failure.
    pub fn error(msg: impl Into<String>) -> Self {
        Response {
            error: Some(msg.into()),
            ..Response::default()
        }
    }
}

/// Writes one JSON line.
pub fn write_line<T: Serialize>(w: &mut impl Write, v: &T) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(v)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()?;
    Ok(())
}

/// Reads one JSON line byte by byte (so nothing after it is consumed: the
/// connection may go on in another framing). `Ok(None)` at end of stream.
pub fn read_line<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
) -> Result<Option<T>, ControlError> {
    let mut line = Vec::new();
    let mut limited = BufReader::with_capacity(1, (&mut *r).take(MAX_LINE));
    limited.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&line)?))
}

/// Connects to a sandbox's control socket.
pub fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    crate::sys::connect_unix(path).map_err(|source| ControlError::Connect {
        path: path.display().to_string(),
        source,
    })
}

/// Sends `req` and waits (at most `timeout`) for the answer; a refusal
/// becomes [`ControlError::Refused`]. Returns the stream for what follows.
pub fn request(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<(Response, UnixStream), ControlError> {
    let mut s = connect(path)?;
    write_line(&mut s, req)?;
    s.set_read_timeout(Some(timeout))?;
    let resp: Response = read_line(&mut s)?.ok_or(ControlError::Closed)?;
    s.set_read_timeout(None)?;
    match resp.error {
        Some(e) => Err(ControlError::Refused(e)),
        None => Ok((resp, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let mut buf = Vec::new();
        write_line(
            &mut buf,
            &Request::Kill {
                signal: 15,
                all: true,
                process_id: None,
            },
        )
        .unwrap();
        assert_eq!(buf, b"{\"op\":\"kill\",\"signal\":15,\"all\":true}\n");
        write_line(&mut buf, &Request::Start).unwrap();
        buf.extend_from_slice(b"trailing");
        let mut r = buf.as_slice();
        let a: Request = read_line(&mut r).unwrap().unwrap();
        let b: Request = read_line(&mut r).unwrap().unwrap();
        assert_eq!(
            a,
            Request::Kill {
                signal: 15,
                all: true,
                process_id: None
            }
        );
        assert_eq!(b, Request::Start);
        assert_eq!(r, b"trailing", "nothing past the line is consumed");
        assert_eq!(read_line::<Request>(&mut &b""[..]).unwrap(), None);
        assert!(read_line::<Request>(&mut &b"{\"op\":\"fly\"}\n"[..]).is_err());
    }

    #[test]
    fn request_round_trip_and_refusal() {
        use std::os::unix::net::UnixListener;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sock");
        let l = UnixListener::bind(&p).unwrap();
        let t = std::thread::spawn(move || {
            for resp in [
                Response {
                    pids: Some(vec![1, 7]),
                    ..Response::default()
                },
                Response::error("container is stopped"),
            ] {
                let (mut c, _) = l.accept().unwrap();
                let _: Request = read_line(&mut c).unwrap().unwrap();
                write_line(&mut c, &resp).unwrap();
            }
        });
        let (r, _) = request(&p, &Request::Ps, Duration::from_secs(5)).unwrap();
        assert_eq!(r.pids, Some(vec![1, 7]));
        let e = request(&p, &Request::Start, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "container is stopped");
        t.join().unwrap();
        assert!(matches!(
            request(&d.path().join("none"), &Request::Ps, Duration::from_secs(1)),
            Err(ControlError::Connect { .. })
        ));
    }
}
