//! runm's benchmarks (a program, not a test).
//!
//! `runm-bench vmm-startup [--runs N] [--boot-to-init]` measures what
//! runm-vmm costs the host when it starts a VM: the wall time from exec to the
//! first `KVM_RUN`, and its resident memory beside guest RAM. These host-side
//! costs are real on any KVM; guest boot times on a PVM host are not (its
//! guests run through KVM's instruction emulator), and are labelled so. The
//! measurement is the report's own (`report::vmm_startup`); this command
//! prints it in more detail, beside Firecracker's figures.
//!
//! `runm-bench report [--runs N] [--out DIR]` writes the container-versus-VM
//! report (see the `report` module).
//!
//! `runm-bench create-cost [--runs N]` prints what `runm create` costs the
//! host before the guest boots, for a busybox and a Debian root file system,
//! shared over virtio-fs and copied into an image (see `create_cost`).

mod create_cost;
mod procfs;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use report::marks;
use report::spawn::Running;
use report::vmm_startup::{self, StartupSample, VmmLaunch};
use test_support::images;
use test_support::workspace::{self, Profile};

use vm_spec::HostKvm;

/// Firecracker's published figures (its SPECIFICATION): VMM memory overhead
/// and start to guest `/init`, on hardware KVM.
const FC_PUBLISHED_OVERHEAD_MIB: f64 = 5.0;
const FC_PUBLISHED_START_TO_INIT_MS: f64 = 125.0;
/// Firecracker measured on a PVM host like this one (1 vCPU, 128 MiB, the same
/// kind of minimal vmlinux with a 1.9 MB initrd, 5 runs).
const PEER_FC_EXEC_TO_RUN_MS: &str = "30.7 median (25.4-32.8)";
const PEER_FC_OWN_MB: &str = "about 4.3 MB (29.5 MB peak RSS, 25.1 MB of it guest)";
const PEER_FC_INIT: &str = "63-77 s (PVM-emulated)";

const USAGE: &str = "\
usage: runm-bench vmm-startup [--runs N] [--boot-to-init] [--sample-ms MS]
                              [--kernel VMLINUX] [--vcpus N] [--mem-mib MIB]

  vmm-startup     exec of runm-vmm to its first KVM_RUN, and its memory beside
                  guest RAM sampled MS ms (default 200) after that first KVM_RUN
  --runs N        repetitions (default 5)
  --boot-to-init  also wait for `Run /init` on the guest console (PVM hosts:
                  minutes per run, and not a performance figure)
  --kernel        guest vmlinux (default: guest-kernel-config/build.sh's)

runm-vmm is taken from $RUNM_VMM or target/release/runm-vmm; build it with
`cargo build --release -p vmm --bin runm-vmm`.";

#[derive(Debug)]
struct Options {
    runs: usize,
    boot_to_init: bool,
    sample_ms: u64,
    kernel: Option<PathBuf>,
    vcpus: u8,
    mem_mib: u64,
    init_timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        runs: 5,
        boot_to_init: false,
        sample_ms: 200,
        kernel: None,
        vcpus: 1,
        mem_mib: 128,
        init_timeout: Duration::from_secs(900),
    };
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("vmm-startup") => {}
        Some("-h" | "--help") | None => return Err(USAGE.into()),
        Some(other) => return Err(format!("unknown benchmark '{other}'\n{USAGE}")),
    }
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: '{v}' is not a number"))
        };
        match a.as_str() {
            "--runs" => {
                o.runs = usize::try_from(num("--runs", value("--runs")?)?)
                    .map_err(|_| "--runs: too large".to_string())?
            }
            "--sample-ms" => o.sample_ms = num("--sample-ms", value("--sample-ms")?)?,
            "--kernel" => o.kernel = Some(PathBuf::from(value("--kernel")?)),
            "--vcpus" => {
                o.vcpus = u8::try_from(num("--vcpus", value("--vcpus")?)?)
                    .map_err(|_| "--vcpus: at most 255".to_string())?
            }
            "--mem-mib" => o.mem_mib = num("--mem-mib", value("--mem-mib")?)?,
            "--init-timeout-secs" => {
                o.init_timeout =
                    Duration::from_secs(num("--init-timeout-secs", value("--init-timeout-secs")?)?)
            }
            "--boot-to-init" => o.boot_to_init = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

/// What kind of KVM this host has.
pub(crate) fn host_kind() -> &'static str {
    if is_pvm() {
        "PVM KVM (kvm_pvm: no hardware nesting; guests run in ring 3 with shadow \
         paging and a stock kernel's privileged code through KVM's emulator)"
    } else if Path::new("/sys/module/kvm_intel").is_dir() {
        "hardware KVM (kvm_intel)"
    } else if Path::new("/sys/module/kvm_amd").is_dir() {
        "hardware KVM (kvm_amd)"
    } else {
        "KVM of unknown kind"
    }
}

fn is_pvm() -> bool {
    HostKvm::detect().is_pvm()
}

/// One run's measurements.
struct Run {
    /// Exec to the first KVM_RUN, and the memory after it.
    startup: StartupSample,
    /// Exec to `Run /init` on the console, s (with --boot-to-init).
    init_s: Option<f64>,
}

impl Run {
    /// Exec to runm-vmm's phase `name`, ms (NaN if it printed none).
    fn ms(&self, name: &str) -> f64 {
        self.startup.phase_ms(name).unwrap_or(f64::NAN)
    }
}

struct Setup {
    vmm: PathBuf,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    workdir: PathBuf,
}

fn one_run(o: &Options, s: &Setup, index: usize) -> Result<Run, String> {
    let console = s.workdir.join(format!("console-{index}.log"));
    let launch = VmmLaunch {
        vmm: &s.vmm,
        kernel: &s.kernel,
        initrd: s.initrd.as_deref(),
        vcpus: o.vcpus,
        mem_mib: o.mem_mib,
        console: o.boot_to_init.then_some(console.as_path()),
    };
    // Dropping `run` kills runm-vmm (by its pid) when the run is done.
    let mut run = launch.spawn().map_err(|e| e.to_string())?;
    let startup = vmm_startup::sample(
        &mut run,
        o.mem_mib,
        Duration::from_millis(o.sample_ms),
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    let mut init_s = None;
    if o.boot_to_init {
        let init_ms = |r: &Running| {
            r.files
                .first()?
                .iter()
                .find(|l| l.text.contains("Run /init"))
                .map(|l| l.ms)
        };
        if !run.wait_until(o.init_timeout, |r| init_ms(r).is_some()) {
            return Err(match run.exit {
                Some((_, how)) => format!("runm-vmm ended ({how}) before `Run /init`"),
                None => format!("no `Run /init` within {:?}", o.init_timeout),
            });
        }
        init_s = init_ms(&run).map(|ms| ms / 1000.0);
    }
    Ok(Run { startup, init_s })
}

fn mib(kb: f64) -> f64 {
    kb / 1024.0
}

fn row(label: &str, values: &[f64], unit: &str, published: &str, peer: &str) {
    match stats::summarize(values) {
        Some(s) => println!(
            "  {label:<40} {:>8.1} {unit:<3} {:>7.1}-{:<7.1}  {published:<20} {peer}",
            s.median, s.min, s.max
        ),
        None => println!("  {label:<40} {:>8}", "n/a"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("report") => return report::main(&args[1..]),
        Some("create-cost") => return create_cost::main(&args[1..]),
        _ => {}
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match bench(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runm-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(o: &Options) -> Result<(), String> {
    let vmm = workspace::RUNM_VMM
        .find(&[Profile::Release])
        .map_err(|e| e.to_string())?;
    let kernel = match &o.kernel {
        Some(k) => k.clone(),
        None => workspace::guest_kernel().map_err(|e| e.to_string())?,
    };
    let workdir = tempfile::Builder::new()
        .prefix("runm-bench-")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?;
    // The busybox initramfs of the Firecracker peer measurement (about its
    // size), with an /init that reboots; none without a static busybox.
    let initrd = workdir.path().join("initramfs.cpio");
    let initrd = images::busybox_initramfs("#!/bin/busybox sh\n/bin/busybox reboot -f\n")
        .ok()
        .and_then(|image| std::fs::write(&initrd, image).ok())
        .map(|()| initrd);
    measure(
        o,
        &Setup {
            vmm,
            kernel,
            initrd,
            workdir: workdir.path().to_path_buf(),
        },
    )
}

fn measure(o: &Options, s: &Setup) -> Result<(), String> {
    let pvm = is_pvm();
    println!("runm-vmm start-up: host-side costs");
    println!("  host KVM: {}", host_kind());
    println!("  runm-vmm: {}", s.vmm.display());
    println!(
        "  guest: {} ({:.1} MB), initrd {}, {} vCPU, {} MiB, console {}",
        s.kernel.display(),
        std::fs::metadata(&s.kernel).map_or(0.0, |m| m.len() as f64 / 1e6),
        s.initrd
            .as_ref()
            .map_or("none (no static busybox)".to_string(), |p| {
                format!(
                    "busybox cpio ({:.1} MB, uncompressed)",
                    std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1e6)
                )
            }),
        o.vcpus,
        o.mem_mib,
        if o.boot_to_init { "to a file" } else { "off" }
    );
    println!(
        "  memory sampled {} ms after the first KVM_RUN; VMM own = VmRSS - RSS of the guest RAM mapping",
        o.sample_ms
    );
    println!();

    let mut runs = Vec::new();
    for i in 0..o.runs {
        let r = one_run(o, s, i)?;
        println!(
            "  run {}: exec->KVM open {:.1} ms, ->vCPUs start {:.1} ms, ->first KVM_RUN {:.1} ms; \
             RSS {:.1} MiB = guest {:.1} + VMM {:.1} MiB (PSS {:.1}: anon {:.1}, file {:.1}){}",
            i + 1,
            r.ms(marks::PHASE_KVM_OPEN),
            r.ms(marks::PHASE_VCPUS_START),
            r.ms(marks::PHASE_FIRST_KVM_RUN),
            mib(r.startup.memory.rss as f64),
            mib(r.startup.memory.guest as f64),
            mib(r.startup.memory.own() as f64),
            mib(r.startup.memory.pss as f64),
            mib(r.startup.memory.pss_anon as f64),
            mib(r.startup.memory.pss_file as f64),
            r.init_s
                .map_or(String::new(), |t| format!("; `Run /init` after {t:.1} s"))
        );
        runs.push(r);
    }

    let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    println!();
    println!(
        "  {:<40} {:>8}     {:<15}  {:<20} Firecracker on this host",
        "", "median", "min-max", "Firecracker (pub.)"
    );
    row(
        "exec -> first KVM_RUN",
        &col(&|r| r.ms(marks::PHASE_FIRST_KVM_RUN)),
        "ms",
        "-",
        PEER_FC_EXEC_TO_RUN_MS,
    );
    row(
        "  of which exec -> KVM opened",
        &col(&|r| r.ms(marks::PHASE_KVM_OPEN)),
        "ms",
        "",
        "",
    );
    row(
        "  of which build (memory, kernel, vCPUs)",
        &col(&|r| r.ms(marks::PHASE_VCPUS_START) - r.ms(marks::PHASE_KVM_OPEN)),
        "ms",
        "",
        "about 19 ms loading",
    );
    row(
        "VMM own memory (RSS - guest)",
        &col(&|r| mib(r.startup.memory.own() as f64)),
        "MiB",
        &format!("<= {FC_PUBLISHED_OVERHEAD_MIB} MiB"),
        PEER_FC_OWN_MB,
    );
    row(
        "VMM RSS total",
        &col(&|r| mib(r.startup.memory.rss as f64)),
        "MiB",
        "",
        "",
    );
    row(
        "VMM peak RSS (VmHWM)",
        &col(&|r| mib(r.startup.memory.hwm as f64)),
        "MiB",
        "",
        "",
    );
    row(
        "guest memory touched",
        &col(&|r| mib(r.startup.memory.guest as f64)),
        "MiB",
        "",
        "",
    );
    if o.boot_to_init {
        let inits = col(&|r| r.init_s.unwrap_or(f64::NAN));
        println!();
        if pvm {
            println!("  [PVM-emulated, not a performance figure]");
        }
        row(
            "exec -> `Run /init` on the console",
            &inits,
            "s",
            &format!("~{FC_PUBLISHED_START_TO_INIT_MS} ms"),
            PEER_FC_INIT,
        );
    } else {
        println!();
        println!(
            "  start to guest /init: Firecracker publishes ~{FC_PUBLISHED_START_TO_INIT_MS} ms on \
             hardware KVM; measure ours with --boot-to-init{}",
            if pvm {
                " (on this PVM host it is emulated: not a performance figure)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_with_defaults() {
        let o = parse_args(&args("vmm-startup")).unwrap();
        assert_eq!((o.runs, o.boot_to_init, o.sample_ms), (5, false, 200));
        let o = parse_args(&args("vmm-startup --runs 3 --boot-to-init --mem-mib 256")).unwrap();
        assert_eq!((o.runs, o.boot_to_init, o.mem_mib), (3, true, 256));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(parse_args(&args("")).is_err());
        assert!(parse_args(&args("fly")).is_err());
        assert!(parse_args(&args("vmm-startup --runs")).is_err());
        assert!(parse_args(&args("vmm-startup --runs x")).is_err());
        assert!(parse_args(&args("vmm-startup --runs 0")).is_err());
        assert!(parse_args(&args("vmm-startup --vcpus 300")).is_err());
        assert!(parse_args(&args("vmm-startup --fast")).is_err());
    }
}
