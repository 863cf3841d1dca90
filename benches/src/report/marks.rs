//! Parsing what the measured programs print: the guest kernel's console
//! timestamps and the workload's `runm-bench:` lines; and turning
//! timestamped lines into boot phases, runm-vmm's phase marks
//! ([`vm_spec::PhaseMark`], whose format runm-vmm and the parser share)
//! included.
//!
//! Owns every text format the harness reads from a run but runm-vmm's marks;
//! nothing here runs anything.

use vm_spec::{Phase, PhaseMark};

/// A line of output with the time it reached the harness, in milliseconds
/// since the command was spawned.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedLine {
    /// Arrival, ms since spawn.
    pub ms: f64,
    /// The line without its line ending.
    pub text: String,
}

impl TimedLine {
    /// A line that arrived `ms` after spawn.
    pub fn new(ms: f64, text: impl Into<String>) -> Self {
        TimedLine {
            ms,
            text: text.into(),
        }
    }
}

/// Phase names, shared by the measurements, the tables and the plots.
pub const PHASE_VMM_STARTED: &str = "VMM started";
/// runm-vmm opened /dev/kvm.
pub const PHASE_KVM_OPEN: &str = "KVM opened";
/// runm-vmm built the VM and starts its vCPU threads.
pub const PHASE_VCPUS_START: &str = "vCPUs start";
/// runm-vmm's first `KVM_RUN`.
pub const PHASE_FIRST_KVM_RUN: &str = "first KVM_RUN";
/// Kernel entry, estimated from the console's printk timestamps.
pub const PHASE_KERNEL_ENTRY: &str = "kernel entry (est.)";
/// The guest kernel starts `/init` (the agent under runm).
pub const PHASE_INIT: &str = "/init";
/// The workload's first line reaches the harness.
pub const PHASE_WORKLOAD_START: &str = "workload start";
/// The command exited.
pub const PHASE_EXIT: &str = "exit";

/// A printk line `[    1.425996] message` -> (1.425996 s, "message").
/// Console lines may start with stray carriage returns or other output
/// glued in front, so the first `[` that opens a timestamp is looked for.
pub fn printk(line: &str) -> Option<(f64, &str)> {
    let start = line.find('[')?;
    let rest = &line[start + 1..];
    let end = rest.find(']')?;
    let stamp = rest[..end].trim();
    if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = stamp.parse().ok()?;
    Some((secs, rest[end + 1..].trim_start()))
}

/// One line of the workload's protocol (see the workload program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadLine<'a> {
    /// `start mode=M`: the workload runs.
    Start(&'a str),
    /// `result name=N k=v...`: one measurement.
    Result {
        /// Which measurement.
        name: &'a str,
        /// Its `key=value` fields, `name` excluded.
        fields: Vec<(&'a str, &'a str)>,
    },
    /// `probe KEY VALUE`.
    Probe(&'a str, &'a str),
    /// `ready`: an idle workload is up.
    Ready,
    /// `alloc touched_mib=N`.
    Alloc(u64),
    /// `end`: finished without error.
    End,
    /// `error MESSAGE`.
    Error(&'a str),
    /// Any other `runm-bench:` line (hello's greeting, crash notice...).
    Other(&'a str),
}

/// The workload's protocol line inside `line`, if it is one. The prefix may
/// be preceded by console noise (a VM's serial console interleaves kernel
/// messages), so it is searched for, not only matched at the start.
pub fn workload_line(line: &str) -> Option<WorkloadLine<'_>> {
    let at = line.find("runm-bench: ")?;
    let body = line[at + "runm-bench: ".len()..].trim_end_matches(['\r', '\n']);
    let (word, rest) = body.split_once(' ').unwrap_or((body, ""));
    Some(match word {
        "start" => WorkloadLine::Start(rest.strip_prefix("mode=").unwrap_or(rest)),
        "result" => {
            let fields: Vec<(&str, &str)> = rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let name = fields
                .iter()
                .find(|(k, _)| *k == "name")
                .map(|(_, v)| *v)
                .unwrap_or("");
            WorkloadLine::Result {
                name,
                fields: fields.into_iter().filter(|(k, _)| *k != "name").collect(),
            }
        }
        "probe" => {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            WorkloadLine::Probe(k, v)
        }
        "ready" => WorkloadLine::Ready,
        "alloc" => match rest.strip_prefix("touched_mib=").map(str::parse) {
            Some(Ok(n)) => WorkloadLine::Alloc(n),
            _ => WorkloadLine::Other(body),
        },
        "end" => WorkloadLine::End,
        "error" => WorkloadLine::Error(rest),
        _ => WorkloadLine::Other(body),
    })
}

/// The value of `key` among a result's fields, as a number.
pub fn field_f64(fields: &[(&str, &str)], key: &str) -> Option<f64> {
    fields.iter().find(|(k, _)| *k == key)?.1.parse().ok()
}

/// The measurements of a `bench` run: name -> milliseconds (from the `ns`
/// field of each `result` line).
pub fn bench_results(lines: &[TimedLine]) -> Vec<(String, f64)> {
    lines
        .iter()
        .filter_map(|l| match workload_line(&l.text)? {
            WorkloadLine::Result { name, fields } => {
                Some((name.to_string(), field_f64(&fields, "ns")? / 1e6))
            }
            _ => None,
        })
        .collect()
}

/// Arrival of the first line for which `pred` holds.
pub fn first_arrival(lines: &[TimedLine], pred: impl Fn(&str) -> bool) -> Option<f64> {
    lines.iter().find(|l| pred(&l.text)).map(|l| l.ms)
}

/// Arrival of the workload's `start` line.
pub fn workload_start(lines: &[TimedLine]) -> Option<f64> {
    first_arrival(lines, |t| {
        matches!(workload_line(t), Some(WorkloadLine::Start(_)))
    })
}

/// The most MiB an `alloc` workload reported touching.
pub fn alloc_reached(lines: &[TimedLine]) -> u64 {
    lines
        .iter()
        .filter_map(|l| match workload_line(&l.text)? {
            WorkloadLine::Alloc(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// When the guest kernel was entered, in ms since spawn, estimated from the
/// console: a line printed `t` seconds after kernel entry cannot arrive
/// before entry + `t`, so every timestamped line bounds entry from above by
/// its arrival minus its timestamp, and the tightest bound is the estimate.
/// (Lines the kernel buffered before its console came up arrive late and
/// only loosen their own bound.) Guest and host clocks run at the same rate
/// under both TCG and KVM, which the estimate relies on.
pub fn kernel_entry_estimate(console: &[TimedLine]) -> Option<f64> {
    console
        .iter()
        .filter_map(|l| printk(&l.text).map(|(t, _)| l.ms - t * 1000.0))
        .min_by(f64::total_cmp)
}

/// runm-vmm's phase marks on stderr as (phase, ms since `t0_ns`).
pub fn vmm_phases(stderr: &[TimedLine], t0_ns: u64) -> Vec<(Phase, f64)> {
    stderr
        .iter()
        .filter_map(|l| PhaseMark::parse(&l.text))
        .map(|m| (m.phase, m.monotonic_ns.saturating_sub(t0_ns) as f64 / 1e6))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[(f64, &str)]) -> Vec<TimedLine> {
        v.iter().map(|(ms, t)| TimedLine::new(*ms, *t)).collect()
    }

    #[test]
    fn phase_marks_parse() {
        let marks = vmm_phases(
            &lines(&[
                (1.0, "runm-vmm: phase kvm_open monotonic_ns=1002000000"),
                (2.0, "something else"),
                (2.5, "runm-vmm: phase kvm_open monotonic_ns=x"),
                (2.7, "runm-vmm: error: no kernel"),
                (3.0, "runm-vmm: phase first_kvm_run monotonic_ns=1030500000"),
            ]),
            1_000_000_000,
        );
        assert_eq!(
            marks,
            vec![(Phase::KvmOpen, 2.0), (Phase::FirstKvmRun, 30.5)]
        );
    }

    #[test]
    fn printk_timestamps_parse() {
        assert_eq!(
            printk("[    1.425996] reboot: Restarting system"),
            Some((1.425996, "reboot: Restarting system"))
        );
        assert_eq!(
            printk("\r[    0.812000] Run /init as init process"),
            Some((0.812, "Run /init as init process"))
        );
        assert_eq!(printk("runm-agent: started"), None);
        assert_eq!(printk("[ok] not a stamp"), None);
        assert_eq!(printk("[] empty"), None);
    }

    #[test]
    fn workload_lines_parse() {
        assert_eq!(
            workload_line("runm-bench: start mode=bench"),
            Some(WorkloadLine::Start("bench"))
        );
        assert_eq!(
            workload_line("[    2.1] junk runm-bench: ready\r"),
            Some(WorkloadLine::Ready)
        );
        assert_eq!(
            workload_line("runm-bench: probe mount proc /proc proc"),
            Some(WorkloadLine::Probe("mount", "proc /proc proc"))
        );
        assert_eq!(
            workload_line("runm-bench: alloc touched_mib=31"),
            Some(WorkloadLine::Alloc(31))
        );
        assert_eq!(workload_line("runm-bench: end"), Some(WorkloadLine::End));
        assert_eq!(
            workload_line("runm-bench: error boom"),
            Some(WorkloadLine::Error("boom"))
        );
        assert_eq!(workload_line("hello"), None);
        let Some(WorkloadLine::Result { name, fields }) =
            workload_line("runm-bench: result name=cpu ns=115239141 iterations=5")
        else {
            panic!("not a result");
        };
        assert_eq!(name, "cpu");
        assert_eq!(field_f64(&fields, "ns"), Some(115_239_141.0));
        assert_eq!(field_f64(&fields, "missing"), None);
    }

    #[test]
    fn bench_results_in_ms() {
        let out = lines(&[
            (1.0, "runm-bench: start mode=bench"),
            (2.0, "runm-bench: result name=cpu ns=115000000 iterations=1"),
            (3.0, "runm-bench: result name=syscall ns=2500000 calls=2"),
            (4.0, "runm-bench: end"),
        ]);
        assert_eq!(
            bench_results(&out),
            vec![("cpu".to_string(), 115.0), ("syscall".to_string(), 2.5)]
        );
        assert_eq!(workload_start(&out), Some(1.0));
    }

    #[test]
    fn alloc_progress_is_the_largest_reported() {
        let out = lines(&[
            (1.0, "runm-bench: alloc touched_mib=1"),
            (2.0, "runm-bench: alloc touched_mib=29"),
            (3.0, "Killed"),
        ]);
        assert_eq!(alloc_reached(&out), 29);
        assert_eq!(alloc_reached(&[]), 0);
    }

    #[test]
    fn kernel_entry_is_the_tightest_console_bound() {
        // Entry at 400 ms: a line buffered early arrives late (loose bound),
        // the live ones arrive 2-5 ms after they were printed.
        let console = lines(&[
            (905.0, "[    0.000000] Linux version 6.12"),
            (905.5, "[    0.500000] serial8250: ttyS0 at I/O 0x3f8"),
            (1212.0, "[    0.810000] Run /init as init process"),
            (1213.0, "runm-agent: started"),
        ]);
        assert_eq!(kernel_entry_estimate(&console), Some(402.0));
        assert_eq!(kernel_entry_estimate(&lines(&[(1.0, "no stamps")])), None);
    }
}
