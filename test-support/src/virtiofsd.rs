//! A real virtiofsd under test: serving `<dir>/shared` on `<dir>/vfs.sock`
//! with its own sandboxing on, as runm uses it, and killed on drop together
//! with the processes its sandbox forks.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace::virtiofsd;

/// What a test that needs virtiofsd says when it is missing.
pub const VIRTIOFSD_HOW: &str =
    "these tests need the Rust virtiofsd: run scripts/virtiofsd.sh (as \
     root the first time: it installs libseccomp-dev and libcap-ng-dev), or set RUNM_VIRTIOFSD";

/// A running virtiofsd.
pub struct Virtiofsd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    // Held so that a daemon made by `spawn_in_temp_dir` keeps its directory.
    _dir: Option<tempfile::TempDir>,
}

impl Virtiofsd {
    /// Starts virtiofsd on `dir` (which must exist) and waits until its
    /// socket is there.
    pub fn spawn(dir: &Path) -> Self {
        Self::start(dir, None)
    }

    /// Starts virtiofsd on a temporary directory of its own.
    pub fn spawn_in_temp_dir() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        Self::start(&path, Some(dir))
    }

    fn start(dir: &Path, owned: Option<tempfile::TempDir>) -> Self {
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).expect("shared dir");
        let socket = dir.join("vfs.sock");
        let log = dir.join("virtiofsd.log");
        let child = Command::new(virtiofsd().expect(VIRTIOFSD_HOW))
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&shared)
            .args(["--cache", "never"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .process_group(0)
            .spawn()
            .expect("spawn virtiofsd");
        let mut vfs = Virtiofsd {
            child,
            socket,
            log,
            _dir: owned,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vfs.socket.exists() {
            if let Ok(Some(st)) = vfs.child.try_wait() {
                panic!("virtiofsd exited ({st}) before listening:\n{}", vfs.log());
            }
            assert!(
                Instant::now() < deadline,
                "virtiofsd did not listen in 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The socket file appears at bind, a moment before listen.
        std::thread::sleep(Duration::from_millis(50));
        vfs
    }

    /// The socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it (and what its sandbox forked) and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("KILL");
        }
        let _ = self.child.wait();
    }

    /// Sends SIG`name` to its process group: the process serving the socket
    /// is a child of the one spawned here.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
    }

    /// Whether it exits by itself within `timeout`.
    pub fn exits_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        self.kill();
    }
}
