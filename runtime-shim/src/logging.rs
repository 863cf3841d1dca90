//! Where runm's messages go: the `--log` file (or stderr) in runc's formats.
//!
//! `--log-format text` writes logrus-style lines (`time="..." level=info
//! msg="..."`), `json` writes one JSON object per line
//! (`{"level":"error","msg":"...","time":"..."}`); containerd reads the last
//! `error` line of the log to report why a runtime command failed.
//!
//! Quiet on success, as runc is: engines hand `create`, `run` and `exec` the
//! workload's own stdio, so whatever runm wrote there would become the
//! container's output. Errors go to stderr (a plain `runm: ...` line) and to
//! the log. Warnings and notices ([`warn`], [`notice`]) go to the log only;
//! without `--log` they reach stderr only with `--debug`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `time="..." level=... msg="..."`.
    #[default]
    Text,
    /// `{"level":...,"msg":...,"time":...}`.
    Json,
}

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file cannot be opened.
    #[error("cannot open log file {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Logger {
    format: LogFormat,
    /// The `--log` file; stderr when absent.
    file: Option<Mutex<File>>,
    /// Debug with `--debug` (then, without a log file, warnings, notices and
    /// routine records go to stderr), else info.
    level: log::LevelFilter,
    /// Whether people also get `runm: ...` lines on stderr. The sandbox turns
    /// this off: its stderr belongs to the workload.
    stderr_notices: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Most bytes a `--log` file grows to: some records are the guest's doing
/// (its agent's errors), and the file is often on a tmpfs.
pub const LOG_MAX_BYTES: u64 = 8 << 20;

/// Appends `line` to `f` unless that would take it beyond `max` bytes; then
/// the file starts over (with a record saying so): the newest records are
/// the ones engines read.
fn write_capped(f: &mut File, line: &str, max: u64) {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len.saturating_add(line.len() as u64) > max {
        let _ = f.set_len(0);
        let note = format!("runm: log reached {max} bytes and was truncated\n");
        let _ = f.write_all(note.as_bytes());
    }
    let _ = f.write_all(line.as_bytes());
}

/// Sets up logging once per process. `stderr_notices` is false in the
/// sandbox, whose stderr is the container's.
pub fn init(
    file: Option<&Path>,
    format: LogFormat,
    debug: bool,
    stderr_notices: bool,
) -> Result<(), LogError> {
    let file = match file {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| LogError::Open {
                    path: p.display().to_string(),
                    source,
                })?,
        )),
        None => None,
    };
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = Logger {
        format,
        file,
        level,
        stderr_notices,
    };
    if LOGGER.set(logger).is_ok() {
        if let Some(l) = LOGGER.get() {
            let _ = log::set_logger(l);
            log::set_max_level(level);
        }
    }
    Ok(())
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Without a log file and without --debug, stderr gets errors only,
        // as `runm:` lines.
        if self.file.is_none() && !self.debug() {
            if self.stderr_notices && record.level() == log::Level::Error {
                eprintln!("runm: {}", record.args());
            }
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        self.write_line(&format_record(
            self.format,
            level,
            &record.args().to_string(),
            &rfc3339_now(),
        ));
    }

    fn flush(&self) {}
}

impl Logger {
    fn debug(&self) -> bool {
        self.level >= log::LevelFilter::Debug
    }

    fn write_line(&self, line: &str) {
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    write_capped(&mut f, line, LOG_MAX_BYTES);
                }
            }
            None => {
                if self.stderr_notices {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
        }
    }

    /// Records `msg` at `level`: in the log file when there is one; on
    /// stderr as a `runm:` line for errors, and for the rest only with
    /// `--debug` and no log file.
    fn tell(&self, level: &str, prefix: &str, msg: &str) {
        let to_stderr = level == "error" || (self.file.is_none() && self.debug());
        if self.stderr_notices && to_stderr {
            eprintln!("runm: {prefix}{msg}");
        }
        // The log file always gets the record; with no file, a JSON record
        // goes to stderr beside the line above (runc's behaviour), a text one
        // would only repeat it.
        if self.file.is_some() || (to_stderr && self.format == LogFormat::Json) {
            self.write_line(&format_record(self.format, level, msg, &rfc3339_now()));
        }
    }
}

/// One log line (with its newline) in `format`.
pub fn format_record(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let v = serde_json::json!({"level": level, "msg": msg, "time": time});
            format!("{v}\n")
        }
        LogFormat::Text => {
            let quoted = serde_json::Value::String(msg.to_string()).to_string();
            format!("time=\"{time}\" level={level} msg={quoted}\n")
        }
    }
}

fn tell(level: &str, prefix: &str, msg: &str) {
    match LOGGER.get() {
        Some(l) => l.tell(level, prefix, msg),
        None if level == "error" => eprintln!("runm: {prefix}{msg}"),
        None => {}
    }
}

/// An error: `runm: <msg>` on stderr, an `error` record in the log.
pub fn error(msg: &str) {
    tell("error", "", msg);
}

/// A warning (ignored configuration, ...): the log, or stderr with `--debug`.
pub fn warn(msg: &str) {
    tell("warning", "warning: ", msg);
}

/// Something worth knowing (which backend was chosen, and why): the log,
/// or stderr with `--debug`.
pub fn notice(msg: &str) {
    tell("info", "", msg);
}

/// Now as RFC 3339 in UTC with nanoseconds, e.g. `2026-11-21T23:09:00.123456789Z`.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        for i in 0..1000 {
            write_capped(&mut f, &format!("record {i:04} {}\n", "x".repeat(80)), 4096);
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.len() <= 4096, "{}", text.len());
        assert!(text.starts_with("runm: log reached 4096 bytes"), "{text}");
        assert!(text.contains("record 0999"), "the newest record is kept");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_302_245, 0), "2026-11-21T23:04:05.000000000Z");
    }

    #[test]
    fn json_records_are_runc_shaped() {
        let line = format_record(LogFormat::Json, "error", "it \"broke\"", "T");
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "it \"broke\"");
        assert_eq!(v["time"], "T");
        let text = format_record(LogFormat::Text, "info", "a \"b\"", "T");
        assert_eq!(text, "time=\"T\" level=info msg=\"a \\\"b\\\"\"\n");
    }
}
