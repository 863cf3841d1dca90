//! runm-vmm's host-side start-up, measured one way for the report and for
//! `runm-bench vmm-startup`: runm-vmm's command line, the time from its exec
//! to its first `KVM_RUN` (from its phase marks), and its memory a fixed
//! time after that first `KVM_RUN`, split into guest RAM and its own.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::backends;
use super::error::{ReportError, Result};
use super::model::Backend;
use super::spawn::Running;
use crate::procfs;
use vm_spec::phase::monotonic_ns;
use vm_spec::{Phase, PhaseMark};

/// How runm-vmm is started.
#[derive(Debug, Clone, Copy)]
pub struct VmmLaunch<'a> {
    /// The runm-vmm binary.
    pub vmm: &'a Path,
    /// The guest kernel.
    pub kernel: &'a Path,
    /// The initramfs, if any.
    pub initrd: Option<&'a Path>,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// The file the guest console goes to; `None` turns the console off.
    pub console: Option<&'a Path>,
}

impl VmmLaunch<'_> {
    /// runm-vmm's command line, printing its phase marks.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.vmm);
        cmd.arg("--kernel").arg(self.kernel);
        if let Some(i) = self.initrd {
            cmd.arg("--initrd").arg(i);
        }
        cmd.args(["--vcpus", &self.vcpus.to_string()])
            .args(["--mem-mib", &self.mem_mib.to_string()])
            .arg("--print-phases");
        match self.console {
            Some(f) => cmd.arg("--console").arg(format!("file:{}", f.display())),
            None => cmd.args(["--console", "off"]),
        };
        cmd
    }

    /// Starts it, watching the console file if there is one.
    pub fn spawn(&self) -> Result<Running> {
        let files = self.console.map(Path::to_path_buf).into_iter().collect();
        Running::spawn("runm-vmm", self.command(), files)
    }
}

/// runm-vmm's memory at one moment, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VmmMemory {
    /// Resident set (`VmRSS`).
    pub rss: u64,
    /// Peak resident set (`VmHWM`).
    pub hwm: u64,
    /// Guest RAM touched: the RSS of the guest RAM mapping.
    pub guest: u64,
    /// Proportional set size, and its anonymous and file-backed parts.
    pub pss: u64,
    /// Anonymous PSS.
    pub pss_anon: u64,
    /// File-backed PSS.
    pub pss_file: u64,
}

impl VmmMemory {
    /// Reads process `pid`'s memory; its guest RAM is the anonymous
    /// mapping of `mem_mib`.
    pub fn read(pid: i32, mem_mib: u64) -> Result<Self> {
        let read = |what: &str| {
            let path = format!("/proc/{pid}/{what}");
            std::fs::read_to_string(&path).map_err(ReportError::io(path))
        };
        let status = read("status")?;
        let rollup = read("smaps_rollup")?;
        let maps = procfs::parse_smaps(&read("smaps")?);
        let guest = procfs::guest_mapping(&maps, mem_mib * 1024).ok_or(ReportError::Output {
            what: "runm-vmm".into(),
            detail: "no anonymous mapping of the guest RAM's size in smaps".into(),
        })?;
        Ok(VmmMemory {
            rss: procfs::kb_field(&status, "VmRSS").unwrap_or(0),
            hwm: procfs::kb_field(&status, "VmHWM").unwrap_or(0),
            guest: guest.rss_kb,
            pss: procfs::kb_field(&rollup, "Pss").unwrap_or(0),
            pss_anon: procfs::kb_field(&rollup, "Pss_Anon").unwrap_or(0),
            pss_file: procfs::kb_field(&rollup, "Pss_File").unwrap_or(0),
        })
    }

    /// What runm-vmm holds besides guest RAM.
    pub fn own(&self) -> u64 {
        self.rss.saturating_sub(self.guest)
    }
}

/// One start-up of runm-vmm.
#[derive(Debug, Clone)]
pub struct StartupSample {
    /// Its phases up to the first `KVM_RUN`: (report phase name, ms since
    /// exec), in time order.
    pub phases: Vec<(String, f64)>,
    /// Its memory a fixed time after the first `KVM_RUN`.
    pub memory: VmmMemory,
}

impl StartupSample {
    /// Exec to phase `name` (a `marks::PHASE_*`), ms.
    pub fn phase_ms(&self, name: &str) -> Option<f64> {
        self.phases.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// The time stamp of runm-vmm's first `KVM_RUN` mark, once printed.
fn first_kvm_run_ns(run: &Running) -> Option<u64> {
    run.stderr
        .iter()
        .filter_map(|l| PhaseMark::parse(&l.text))
        .find(|m| m.phase == Phase::FirstKvmRun)
        .map(|m| m.monotonic_ns)
}

/// Waits (up to `timeout`) for the first `KVM_RUN` mark of the runm-vmm
/// in `run`, and reads its memory `sample_after` that moment. runm-vmm
/// keeps running.
pub fn sample(
    run: &mut Running,
    mem_mib: u64,
    sample_after: Duration,
    timeout: Duration,
) -> Result<StartupSample> {
    run.wait_until(timeout, |r| first_kvm_run_ns(r).is_some());
    let Some(first_ns) = first_kvm_run_ns(run) else {
        return Err(ReportError::Output {
            what: run.what.clone(),
            detail: format!("no first_kvm_run mark: {}", run.tail(4)),
        });
    };
    let phases = backends::phases(
        Backend::RunmVmm,
        &[],
        &run.stderr,
        &[],
        None,
        run.t0_ns,
        None,
    );
    let at = first_ns + u64::try_from(sample_after.as_nanos()).unwrap_or(u64::MAX);
    let now = monotonic_ns();
    if at > now {
        std::thread::sleep(Duration::from_nanos(at - now));
    }
    let memory = VmmMemory::read(run.pid, mem_mib)?;
    Ok(StartupSample { phases, memory })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_follows_the_launch() {
        let mut l = VmmLaunch {
            vmm: Path::new("/x/runm-vmm"),
            kernel: Path::new("/k/vmlinux"),
            initrd: None,
            vcpus: 1,
            mem_mib: 128,
            console: None,
        };
        assert_eq!(
            args(&l.command()),
            [
                "--kernel",
                "/k/vmlinux",
                "--vcpus",
                "1",
                "--mem-mib",
                "128",
                "--print-phases",
                "--console",
                "off"
            ]
        );
        l.initrd = Some(Path::new("/i.cpio"));
        l.console = Some(Path::new("/w/console.log"));
        let a = args(&l.command());
        assert_eq!(a[2..4], ["--initrd", "/i.cpio"]);
        assert_eq!(a[a.len() - 2..], ["--console", "file:/w/console.log"]);
        assert_eq!(l.command().get_program(), "/x/runm-vmm");
    }

    #[test]
    fn own_memory_is_what_is_not_guest_ram() {
        let m = VmmMemory {
            rss: 30_000,
            guest: 25_000,
            ..VmmMemory::default()
        };
        assert_eq!(m.own(), 5_000);
        let odd = VmmMemory {
            rss: 1,
            guest: 2,
            ..VmmMemory::default()
        };
        assert_eq!(odd.own(), 0);
    }

    #[test]
    fn a_process_without_marks_is_no_sample() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'runm-vmm: phase kvm_open monotonic_ns=1' >&2"]);
        let mut run = Running::spawn("sh", cmd, Vec::new()).unwrap();
        let e = sample(&mut run, 128, Duration::ZERO, Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("no first_kvm_run mark"), "{e}");
    }
}
