//! runm-vmm's log, bounded: many messages are triggered by the guest (a
//! driver poking registers that are not there, a vsock peer misbehaving), and
//! a guest doing so in a loop must not fill the host's disk.
//!
//! Two limits: each call site may log [`BURST`] lines per [`WINDOW`], past
//! which its lines are counted and summed up in one line when the next window
//! opens; and the whole log stops, with a last line saying so, at a byte cap.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one call site may log per [`WINDOW`].
pub const BURST: u32 = 10;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Default cap of the log.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

struct Site {
    window_start: Instant,
    count: u32,
    suppressed: u64,
}

struct State {
    out: Box<dyn Write + Send>,
    written: u64,
    full: bool,
    // Keyed by (file, line): one entry per call site in the code, so its size
    // is bounded by the program, not by the guest.
    sites: BTreeMap<(String, u32), Site>,
}

/// A `log` backend writing `runm-vmm: LEVEL: message` lines, rate-limited per
/// call site and capped in bytes.
pub struct Logger {
    level: log::LevelFilter,
    max_bytes: u64,
    state: Mutex<State>,
}

impl Logger {
    /// A logger writing to `out` up to `max_bytes`.
    pub fn new(level: log::LevelFilter, max_bytes: u64, out: Box<dyn Write + Send>) -> Self {
        Logger {
            level,
            max_bytes,
            state: Mutex::new(State {
                out,
                written: 0,
                full: false,
                sites: BTreeMap::new(),
            }),
        }
    }

    /// Makes this the process's logger (once per process).
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        log::set_logger(Box::leak(Box::new(self)))?;
        log::set_max_level(level);
        Ok(())
    }

    fn emit(&self, state: &mut State, line: &str) {
        if state.full {
            return;
        }
        let len = line.len() as u64;
        if state.written.saturating_add(len) > self.max_bytes {
            state.full = true;
            let last = format!(
                "runm-vmm: warn: log limit of {} bytes reached; further messages are dropped\n",
                self.max_bytes
            );
            // The last line may pass the cap by its own length, once.
            let _ = state.out.write_all(last.as_bytes());
            return;
        }
        state.written += len;
        // Logging is best effort: a closed stderr must not stop the VM.
        let _ = state.out.write_all(line.as_bytes());
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut state = devices::bus::lock(&self.state);
        let state = &mut *state;
        let now = Instant::now();
        let key = (r.file().unwrap_or("?").to_string(), r.line().unwrap_or(0));
        let site = state.sites.entry(key).or_insert(Site {
            window_start: now,
            count: 0,
            suppressed: 0,
        });
        let mut summary = None;
        if now.duration_since(site.window_start) >= WINDOW {
            if site.suppressed > 0 {
                summary = Some(site.suppressed);
            }
            site.window_start = now;
            site.count = 0;
            site.suppressed = 0;
        }
        site.count = site.count.saturating_add(1);
        let allowed = site.count <= BURST;
        if !allowed {
            site.suppressed += 1;
        }
        if let Some(n) = summary {
            let line = format!(
                "runm-vmm: {}: {n} more like the next were suppressed ({}:{})\n",
                r.level().as_str().to_lowercase(),
                r.file().unwrap_or("?"),
                r.line().unwrap_or(0)
            );
            self.emit(state, &line);
        }
        if allowed {
            let line = format!(
                "runm-vmm: {}: {}\n",
                r.level().as_str().to_lowercase(),
                r.args()
            );
            self.emit(state, &line);
        }
    }

    fn flush(&self) {
        let _ = devices::bus::lock(&self.state).out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(logger: &Logger, line: u32, msg: &str) {
        logger.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .file(Some("x.rs"))
                .line(Some(line))
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn one_site_gets_its_burst_then_is_counted() {
        let out = Shared::default();
        let logger = Logger::new(log::LevelFilter::Debug, 1 << 20, Box::new(out.clone()));
        for i in 0..1000 {
            record(&logger, 1, &format!("poke {i}"));
        }
        record(&logger, 2, "another site");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("poke").count(), BURST as usize, "{text}");
        assert!(text.contains("another site"));
    }

    #[test]
    fn suppressed_lines_are_summed_up_when_the_window_opens() {
        let out = Shared::default();
        let logger = Logger::new(log::LevelFilter::Debug, 1 << 20, Box::new(out.clone()));
        for _ in 0..25 {
            record(&logger, 1, "poke");
        }
        // Age the window rather than sleeping through it.
        for s in devices::bus::lock(&logger.state).sites.values_mut() {
            s.window_start -= WINDOW;
        }
        record(&logger, 1, "poke");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("15 more like the next were suppressed (x.rs:1)"),
            "{text}"
        );
    }

    #[test]
    fn the_log_stops_at_its_cap() {
        let out = Shared::default();
        let logger = Logger::new(log::LevelFilter::Debug, 500, Box::new(out.clone()));
        for site in 0..100 {
            record(&logger, site, "a line from a different site each time");
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("log limit of 500 bytes reached; further messages are dropped\n"));
        assert!(text.len() < 500 + 100, "{} bytes", text.len());
    }
}
