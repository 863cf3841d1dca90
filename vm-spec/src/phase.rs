//! runm-vmm's boot phase marks (`--print-phases`): one stderr line per
//! phase, `runm-vmm: phase NAME monotonic_ns=N`, with N the
//! `CLOCK_MONOTONIC` time in nanoseconds, comparable across processes.
//! runm-vmm writes them with [`PhaseMark`]'s `Display`; the benchmarks read
//! them with [`PhaseMark::parse`] and time their own events with the same
//! clock, [`monotonic_ns`], so both land on one time line.

use std::fmt;

/// What every mark starts with.
const PREFIX: &str = "runm-vmm: phase ";
/// What precedes the timestamp.
const TIME_KEY: &str = "monotonic_ns=";

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of every mark.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, which lives through the
    // call; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A point in runm-vmm's start-up and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `/dev/kvm` is open.
    KvmOpen,
    /// The VM is built; the vCPU threads start.
    VcpusStart,
    /// The boot vCPU enters the guest for the first time.
    FirstKvmRun,
    /// The guest ended; the VM is torn down.
    VmExit,
}

impl Phase {
    /// Every phase, in the order they happen.
    pub const ALL: [Phase; 4] = [
        Phase::KvmOpen,
        Phase::VcpusStart,
        Phase::FirstKvmRun,
        Phase::VmExit,
    ];

    /// Its name in a mark.
    pub fn name(self) -> &'static str {
        match self {
            Phase::KvmOpen => "kvm_open",
            Phase::VcpusStart => "vcpus_start",
            Phase::FirstKvmRun => "first_kvm_run",
            Phase::VmExit => "vm_exit",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One mark: a phase and when it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseMark {
    /// Which phase.
    pub phase: Phase,
    /// `CLOCK_MONOTONIC` when it was reached, nanoseconds.
    pub monotonic_ns: u64,
}

impl PhaseMark {
    /// `phase` reached at `monotonic_ns`.
    pub fn new(phase: Phase, monotonic_ns: u64) -> Self {
        PhaseMark {
            phase,
            monotonic_ns,
        }
    }

    /// `phase` reached now.
    pub fn now(phase: Phase) -> Self {
        PhaseMark::new(phase, monotonic_ns())
    }

    /// A mark from a line of runm-vmm's stderr; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix(PREFIX)?;
        let (name, time) = rest.split_once(' ')?;
        let monotonic_ns = time.trim().strip_prefix(TIME_KEY)?.parse().ok()?;
        Some(PhaseMark {
            phase: Phase::from_name(name)?,
            monotonic_ns,
        })
    }
}

impl fmt::Display for PhaseMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{} {TIME_KEY}{}",
            self.phase.name(),
            self.monotonic_ns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_print_and_parse_back() {
        for (i, phase) in Phase::ALL.into_iter().enumerate() {
            let m = PhaseMark::new(phase, 854_224_186_481 + u64::try_from(i).unwrap());
            assert_eq!(PhaseMark::parse(&m.to_string()), Some(m));
        }
        assert_eq!(
            PhaseMark::new(Phase::FirstKvmRun, 854_224_186_481).to_string(),
            "runm-vmm: phase first_kvm_run monotonic_ns=854224186481"
        );
    }

    #[test]
    fn marks_made_now_follow_the_clock() {
        let before = monotonic_ns();
        let m = PhaseMark::now(Phase::KvmOpen);
        assert!(before > 0);
        assert!(m.monotonic_ns >= before);
        assert!(monotonic_ns() >= m.monotonic_ns);
    }

    #[test]
    fn other_lines_are_not_marks() {
        for line in [
            "runm-vmm: phase kvm_open monotonic_ns=x",
            "runm-vmm: phase kvm_open",
            "runm-vmm: phase x",
            "runm-vmm: phase warp_drive monotonic_ns=5",
            "runm-vmm: phase kvm_open monotonic_ns=-5",
            "runm-vmm: error: no kernel",
            "",
        ] {
            assert_eq!(PhaseMark::parse(line), None, "{line}");
        }
        assert_eq!(
            PhaseMark::parse("  runm-vmm: phase vm_exit monotonic_ns=7\r"),
            Some(PhaseMark::new(Phase::VmExit, 7))
        );
    }
}
