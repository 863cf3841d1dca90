//! `runm-bench report`: the container-versus-VM overhead and isolation
//! report. The same busybox bundle with the same static benchmark program
//! runs as a bare host process, in a runc container, in runm microVMs on
//! every backend this host offers, and under QEMU's microvm booting the same
//! guest kernel directly; runm-vmm's host-side start-up is measured by
//! itself. The figures (latency and phases, memory and density, workloads,
//! isolation probes) go into a Markdown and a self-contained HTML report
//! with SVG plots.
//!
//! This module owns the command line and the order of the steps: finding
//! and building what is needed, the temporary work directory, measuring,
//! writing. The steps themselves live in the submodules.

pub mod backends;
pub mod bundle;
pub mod doc;
pub mod error;
pub mod host;
pub mod marks;
pub mod measure;
pub mod model;
pub mod net;
pub mod plots;
pub mod probes;
pub mod procs;
pub mod render;
pub mod spawn;
pub mod summary;
pub mod vmm_startup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use test_support::workspace::{self, Binary, Profile};

use backends::{Env, Tools};
use error::{ReportError, Result};
use measure::Plan;
use model::Backend;

/// The command's usage.
pub const USAGE: &str = "\
usage: runm-bench report [--runs N] [--out DIR] [--bundle DIR] [--only LIST]
                         [--density LIST] [--no-pvm-boot] [--quick] [--no-build]

  Runs the same workloads as a bare process, a runc container, runm microVMs
  and QEMU's direct boot, and writes report.md, report.html, SVG plots and
  measurements.json.

  --runs N        repetitions of every figure (default 5)
  --out DIR       where the report goes (default target/report)
  --bundle DIR    use this OCI bundle's root file system (the benchmark
                  program is copied into its /bin); default: a busybox one
  --only LIST     backends to run, comma-separated, of: bare, runc,
                  runm-qemu, runm-own-vmm, qemu-direct, runm-vmm
  --density LIST  instance counts run at once for density (default 1,2,4)
  --no-pvm-boot   skip runm-vmm's boot to `Run /init` (minutes on PVM hosts)
  --quick         smaller workloads (a tenth), for a first look
  --no-build      do not build runm, runm-vmm and the benchmark program

  Needs: runc, qemu-system-x86_64, busybox-static, e2fsprogs; the guest kernel
  and agent initramfs come from $RUNM_KERNEL and $RUNM_INITRD, else from
  guest-kernel-config/build.sh and guest-agent/build-initramfs.sh. Run as root.";

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to measure.
    pub plan: Plan,
    /// The output directory.
    pub out: PathBuf,
    /// An existing bundle to take the root file system from.
    pub bundle: Option<PathBuf>,
    /// Whether to build the binaries first.
    pub build: bool,
}

fn parse_list<T>(v: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()).ok_or_else(|| ReportError::Usage(format!("{what}: '{s}'?\n{USAGE}"))))
        .collect()
}

/// Parses the arguments after `report`.
pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        plan: Plan::default(),
        out: test_support::repo_root().join("target").join("report"),
        bundle: None,
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| ReportError::Usage(format!("{name} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--runs" => {
                let v = value("--runs")?;
                o.plan.runs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ReportError::Usage(format!("--runs: 1 to 100, not '{v}'")))?;
            }
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--bundle" => o.bundle = Some(PathBuf::from(value("--bundle")?)),
            "--only" => {
                o.plan.backends = parse_list(&value("--only")?, "--only", |s| {
                    Backend::ALL.into_iter().find(|b| b.short() == s)
                })?;
            }
            "--density" => {
                // Bounded: this is a 2-core shared machine, and each VM
                // instance holds up to its guest RAM.
                o.plan.density = parse_list(&value("--density")?, "--density", |s| {
                    s.parse().ok().filter(|n| (1..=8).contains(n))
                })?;
            }
            "--no-pvm-boot" => o.plan.pvm_boot = false,
            "--quick" => {
                o.plan.cpu_iterations /= 10;
                o.plan.syscalls /= 10;
                o.plan.io_mib = (o.plan.io_mib / 4).max(1);
                o.plan.net_rounds /= 10;
                o.plan.net_mib = (o.plan.net_mib / 8).max(1);
            }
            "--no-build" => o.build = false,
            "-h" | "--help" => return Err(ReportError::Usage(USAGE.into())),
            other => {
                return Err(ReportError::Usage(format!(
                    "unknown option '{other}'\n{USAGE}"
                )))
            }
        }
    }
    Ok(o)
}

/// `runm-bench report ARGS`: the entry point.
pub fn main(args: &[String]) -> ExitCode {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runm-bench report: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Builds runm and runm-vmm (release) so the report measures the tree's
/// own code; cargo makes this a no-op when they are up to date.
fn build_binaries(repo: &Path) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo).args([
        "build",
        "--release",
        "-p",
        "runtime-shim",
        "--bin",
        "runm",
        "-p",
        "vmm",
        "--bin",
        "runm-vmm",
    ]);
    spawn::output("building runm and runm-vmm", &mut cmd).map(|_| ())
}

/// Finds the programs (the workspace's release builds first) and the guest
/// images (building them through the project's scripts, which cache them);
/// what is missing makes its backends "not measured".
fn find_tools() -> Tools {
    let built = |b: Binary| {
        b.find(&[Profile::Release])
            .ok()
            .or_else(|| host::which(b.name))
    };
    Tools {
        runc: host::which("runc"),
        runm: built(workspace::RUNM),
        qemu: std::env::var_os("RUNM_QEMU")
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .or_else(|| host::which("qemu-system-x86_64")),
        runm_vmm: built(workspace::RUNM_VMM),
        kernel: workspace::guest_kernel().ok(),
        agent_initrd: workspace::agent_initramfs().ok(),
    }
}

fn run(o: &Options) -> Result<()> {
    let repo = test_support::repo_root();
    if o.build {
        println!("report: building runm, runm-vmm and the benchmark program (release)");
        build_binaries(&repo)?;
    }
    let workload = if o.build {
        bundle::build_workload(&repo)?
    } else {
        let p =
            repo.join("target/bench-workload/x86_64-unknown-linux-gnu/release/runm-bench-workload");
        bundle::check_static(&p)?;
        p
    };
    let busybox = test_support::images::busybox().map_err(|e| ReportError::Command {
        what: "looking for a static busybox".into(),
        detail: e.to_string(),
    })?;
    let tools = find_tools();
    let work = tempfile::Builder::new()
        .prefix("runm-report-")
        .tempdir()
        .map_err(ReportError::io(std::env::temp_dir()))?;
    let rootfs = match &o.bundle {
        Some(b) => {
            let root = bundle::bundle_rootfs(b)?;
            bundle::install_workload(&root, &workload)?;
            root
        }
        None => bundle::make_rootfs(work.path(), &workload)?,
    };
    let initrd = work.path().join("direct.cpio");
    let bb = std::fs::read(&busybox).map_err(ReportError::io(&busybox))?;
    let wl = std::fs::read(&workload).map_err(ReportError::io(&workload))?;
    std::fs::write(&initrd, bundle::direct_boot_initramfs(&bb, &wl))
        .map_err(ReportError::io(&initrd))?;

    let host_info = host::info(&tools);
    println!("report: {}", host_info.banner());
    let env = Env::new(tools, work.path().to_path_buf(), rootfs, initrd);
    let m = measure::measure(&env, host_info, &o.plan);
    drop(env);
    // Nothing of ours may outlive the report.
    let left = measure::leftovers();
    for p in &left {
        procs::kill(*p, libc::SIGKILL);
    }
    if !left.is_empty() {
        println!(
            "report: killed {} leftover process(es): {left:?}",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let md = render::write(&m, &o.out)?;
    println!();
    println!("{}", render::key_tables(&m));
    println!(
        "report: written {} (and report.html, SVGs, measurements.json)",
        md.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_default_and_parse() {
        let o = parse_args(&[]).unwrap();
        assert_eq!(o.plan.runs, 5);
        assert!(o.out.ends_with("target/report"));
        assert_eq!(o.plan.density, vec![1, 2, 4]);
        let o = parse_args(&args(
            "--runs 3 --out /x --only bare,runc --density 1,2 --no-pvm-boot",
        ))
        .unwrap();
        assert_eq!(o.plan.runs, 3);
        assert_eq!(o.out, PathBuf::from("/x"));
        assert_eq!(o.plan.backends, vec![Backend::Bare, Backend::Runc]);
        assert_eq!(o.plan.density, vec![1, 2]);
        assert!(!o.plan.pvm_boot);
        let q = parse_args(&args("--quick")).unwrap();
        assert_eq!(q.plan.cpu_iterations, Plan::default().cpu_iterations / 10);
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            "--runs",
            "--runs 0",
            "--runs x",
            "--only vmware",
            "--density 100",
            "--fast",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }
}
