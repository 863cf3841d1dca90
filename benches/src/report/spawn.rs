//! Running one measured command: spawn it, timestamp every line of its
//! stdout, its stderr and of files it writes (a VM's console log) as they
//! arrive, notice when such a file appears, and its exit; end it by its own
//! pid on timeout or when dropped.
//!
//! Times are milliseconds since the spawn, from the clock runm-vmm's phase
//! marks use (`vm_spec::phase::monotonic_ns`), so its marks land on the
//! same time line.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_spec::phase::monotonic_ns;

use super::error::{ReportError, Result};
use super::marks::TimedLine;
use super::procs;

/// How often watched files are polled: fine enough for phases of VMs that
/// take tens of milliseconds and more, cheap enough for 2 shared cores.
const FILE_POLL: Duration = Duration::from_millis(5);

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(s: ExitStatus) -> Self {
        ExitInfo {
            code: s.code(),
            signal: s.signal(),
        }
    }

    /// Exited with status 0.
    pub fn success(self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(137), _) => write!(f, "exit 137 (SIGKILL)"),
            (Some(c), _) => write!(f, "exit {c}"),
            (None, Some(9)) => write!(f, "killed by SIGKILL"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => write!(f, "unknown end"),
        }
    }
}

enum Event {
    Stdout(TimedLine),
    Stderr(TimedLine),
    FileLine(usize, TimedLine),
    FileAppeared(usize, f64),
    Exited(f64, ExitInfo),
}

/// A running (or finished) command and everything it printed so far.
pub struct Running {
    /// What it is, for messages.
    pub what: String,
    /// Its pid.
    pub pid: i32,
    /// CLOCK_MONOTONIC at spawn, ns.
    pub t0_ns: u64,
    /// Stdout lines so far.
    pub stdout: Vec<TimedLine>,
    /// Stderr lines so far.
    pub stderr: Vec<TimedLine>,
    /// Lines of each watched file so far.
    pub files: Vec<Vec<TimedLine>>,
    /// When each watched file appeared (ms since spawn).
    pub file_appeared: Vec<Option<f64>>,
    /// When it exited (ms since spawn) and how.
    pub exit: Option<(f64, ExitInfo)>,
    events: Receiver<Event>,
    stop_watchers: Arc<AtomicBool>,
}

fn ms_since(t0_ns: u64) -> f64 {
    monotonic_ns().saturating_sub(t0_ns) as f64 / 1e6
}

fn pump_lines(r: impl Read + Send + 'static, t0: u64, tx: Sender<Event>, err: bool) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    let line = TimedLine::new(ms_since(t0), text);
                    let ev = if err {
                        Event::Stderr(line)
                    } else {
                        Event::Stdout(line)
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Polls `path` for new complete lines until `stop`; one last read after it
/// so lines written just before the command ended are not lost.
fn watch_file(idx: usize, path: PathBuf, t0: u64, tx: Sender<Event>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut seen = false;
        let mut offset = 0usize;
        let mut partial = Vec::new();
        loop {
            let last = stop.load(Ordering::Relaxed);
            if let Ok(data) = std::fs::read(&path) {
                if !seen {
                    seen = true;
                    let _ = tx.send(Event::FileAppeared(idx, ms_since(t0)));
                }
                if data.len() > offset {
                    let now = ms_since(t0);
                    partial.extend_from_slice(&data[offset..]);
                    offset = data.len();
                    while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        let _ = tx.send(Event::FileLine(idx, TimedLine::new(now, text)));
                    }
                }
            }
            if last {
                if !partial.is_empty() {
                    let text = String::from_utf8_lossy(&partial).trim_end().to_string();
                    let _ = tx.send(Event::FileLine(idx, TimedLine::new(ms_since(t0), text)));
                }
                break;
            }
            std::thread::sleep(FILE_POLL);
        }
    });
}

impl Running {
    /// Spawns `cmd` (stdin from /dev/null, stdout and stderr captured) and
    /// watches `files`.
    pub fn spawn(what: impl Into<String>, mut cmd: Command, files: Vec<PathBuf>) -> Result<Self> {
        let what = what.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = monotonic_ns();
        let mut child = cmd.spawn().map_err(|source| ReportError::Spawn {
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
        let pid = i32::try_from(child.id()).unwrap_or(0);
        if let Some(out) = child.stdout.take() {
            pump_lines(out, t0, tx.clone(), false);
        }
        if let Some(err) = child.stderr.take() {
            pump_lines(err, t0, tx.clone(), true);
        }
        let n = files.len();
        for (i, f) in files.into_iter().enumerate() {
            watch_file(i, f, t0, tx.clone(), stop.clone());
        }
        // The waiter owns the child: wait(2) returns the moment it exits, so
        // the exit time is not rounded to a polling interval.
        std::thread::spawn(move || {
            let st = child.wait();
            let at = ms_since(t0);
            let info = st.map(ExitInfo::from_status).unwrap_or(ExitInfo {
                code: None,
                signal: None,
            });
            let _ = tx.send(Event::Exited(at, info));
        });
        Ok(Running {
            what,
            pid,
            t0_ns: t0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            files: vec![Vec::new(); n],
            file_appeared: vec![None; n],
            exit: None,
            events,
            stop_watchers: stop,
        })
    }

    fn absorb(&mut self, ev: Event) {
        match ev {
            Event::Stdout(l) => self.stdout.push(l),
            Event::Stderr(l) => self.stderr.push(l),
            Event::FileLine(i, l) => self.files[i].push(l),
            Event::FileAppeared(i, ms) => self.file_appeared[i] = Some(ms),
            Event::Exited(ms, info) => {
                self.exit = Some((ms, info));
                self.stop_watchers.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Takes in whatever has arrived, without waiting.
    pub fn poll(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.absorb(ev);
        }
    }

    /// Waits until `done(self)` holds, the command exits, or `timeout`
    /// passes. Returns whether `done` held.
    pub fn wait_until(&mut self, timeout: Duration, done: impl Fn(&Running) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if self.exit.is_some() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(ev) => self.absorb(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return done(self),
            }
        }
    }

    /// Waits for the exit, then briefly for the output still in flight (the
    /// readers and watchers finish after the exit is seen). On timeout the
    /// command is killed and an error returned.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitInfo> {
        if !self.wait_until(timeout, |r| r.exit.is_some()) && self.exit.is_none() {
            self.kill_tree();
            return Err(ReportError::Timeout {
                what: self.what.clone(),
                waited_for: "exit".into(),
                secs: timeout.as_secs(),
            });
        }
        // Drain the pipes and watchers: they end at EOF / their last read.
        let settle = Instant::now() + Duration::from_millis(300);
        while Instant::now() < settle {
            match self.events.recv_timeout(Duration::from_millis(20)) {
                Ok(ev) => self.absorb(ev),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.poll();
        Ok(self.exit.map(|(_, i)| i).unwrap_or(ExitInfo {
            code: None,
            signal: None,
        }))
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.poll();
        self.exit.is_none()
    }

    /// SIGKILLs the command and every process under it, children first
    /// seen from the top (so none is re-parented away unseen).
    pub fn kill_tree(&mut self) {
        if !self.running() {
            return;
        }
        let tree = procs::descendants(&[self.pid]);
        procs::kill(self.pid, libc::SIGKILL);
        for p in tree {
            procs::kill(p, libc::SIGKILL);
        }
        let _ = self.wait_until(Duration::from_secs(5), |r| r.exit.is_some());
    }

    /// The last `n` lines of stderr and stdout, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let mut all: Vec<&TimedLine> = self.stdout.iter().chain(self.stderr.iter()).collect();
        all.sort_by(|a, b| a.ms.total_cmp(&b.ms));
        let start = all.len().saturating_sub(n);
        all[start..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_tree();
        self.stop_watchers.store(true, Ordering::Relaxed);
    }
}

/// Runs a short helper command to completion and returns its stdout; an
/// error names it with its status and stderr.
pub fn output(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ReportError::Spawn {
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
    if !out.status.success() {
        return Err(ReportError::Command {
            what: what.into(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_and_exit_is_seen() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo one; echo two >&2; sleep 0.3; echo three; exit 3",
        ]);
        let mut r = Running::spawn("sh", cmd, Vec::new()).unwrap();
        let exit = r.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.code, Some(3));
        let out: Vec<&str> = r.stdout.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(out, vec!["one", "three"]);
        assert_eq!(r.stderr[0].text, "two");
        // A line is stamped when it is read, never before it was written.
        assert!(r.stdout[1].ms >= 250.0, "{}", r.stdout[1].ms);
        // The exit and the last line are stamped by different threads, so
        // only lines well before the exit are ordered against it.
        assert!(r.exit.unwrap().0 >= r.stdout[0].ms);
    }

    #[test]
    fn watched_files_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("console.log");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!(
                "sleep 0.05; echo booted > {0}; echo more >> {0}; sleep 30",
                f.display()
            ),
        ]);
        let mut r = Running::spawn("sh", cmd, vec![f]).unwrap();
        assert!(r.wait_until(Duration::from_secs(10), |r| r.files[0].len() == 2));
        assert!(r.file_appeared[0].unwrap() >= 40.0);
        assert_eq!(r.files[0][0].text, "booted");
        let err = r.wait_exit(Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ReportError::Timeout { .. }), "{err}");
        assert!(!r.running(), "killed on timeout");
    }

    #[test]
    fn exit_info_reads_for_people() {
        let e = |code, signal| ExitInfo { code, signal }.to_string();
        assert_eq!(e(Some(0), None), "exit 0");
        assert_eq!(e(Some(137), None), "exit 137 (SIGKILL)");
        assert_eq!(e(None, Some(9)), "killed by SIGKILL");
    }
}
