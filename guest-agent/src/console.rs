//! The agent's own log: `runm-agent: ...` lines on the guest console.
//!
//! Owns `/dev/console` for the agent. Nothing the agent says goes to a
//! container process's stdio: that belongs to the workload and the host.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};

static CONSOLE: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens `/dev/console` for the log (after devtmpfs is mounted). Until then,
/// and if it cannot be opened, lines go to the agent's stderr, which the
/// kernel points at the console for PID 1.
pub fn open() {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/console");
    if let Ok(file) = file {
        let _ = CONSOLE.set(Mutex::new(file));
    }
}

/// Writes one log line (one `write`, so lines from threads do not mix).
pub fn write_line(args: fmt::Arguments<'_>) {
    let line = format!("runm-agent: {args}\n");
    if let Some(console) = CONSOLE.get() {
        let mut file = console.lock().unwrap_or_else(|e| e.into_inner());
        if file.write_all(line.as_bytes()).is_ok() {
            return;
        }
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Logs a formatted line on the console.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_line(format_args!($($arg)*))
    };
}
pub(crate) use log;
