//! runm's benchmarks (a program, not a test).
//!
//! `runm-bench vmm-startup [--runs N] [--boot-to-init]` measures what
//! runm-vmm costs the host when it starts a VM: the wall time from exec to the
//! first `KVM_RUN`, and its resident memory beside guest RAM. These host-side
//! costs are real on any KVM; guest boot times on a PVM host are not (its
//! guests run through KVM's instruction emulator), and are labelled so.
//!
//! `runm-bench report [--runs N] [--out DIR]` writes the container-versus-VM
//! report (see the `report` module).

mod procfs;
mod report;
mod stats;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use vm_spec::{HostKvm, Phase, PhaseMark};

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

/// CLOCK_MONOTONIC in nanoseconds: the clock runm-vmm's phase lines use.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn runm_vmm() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RUNM_VMM") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| repo_root().join(d))
        .unwrap_or_else(|| repo_root().join("target"));
    let p = target.join("release").join("runm-vmm");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no {}: build it with `cargo build --release -p vmm --bin runm-vmm` (or set RUNM_VMM)",
            p.display()
        ))
    }
}

fn guest_kernel() -> Result<PathBuf, String> {
    let script = repo_root().join("guest-kernel-config/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("build.sh printed no directory")?;
    Ok(PathBuf::from(dir.trim()).join("vmlinux"))
}

/// An uncompressed newc initramfs with a static busybox and an /init that
/// reboots, like the one the boot test uses (about the size of the initrd in
/// the Firecracker peer measurement). `None` without a static busybox.
fn busybox_initramfs(dir: &Path) -> Option<PathBuf> {
    let busybox = std::fs::read("/bin/busybox").ok()?;
    let init = b"#!/bin/busybox sh\n/bin/busybox reboot -f\n";
    let mut data = Vec::new();
    let mut ino = 0u32;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), body: &[u8]| {
        ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let namesize = u32::try_from(name.len() + 1).unwrap_or(0);
        let filesize = u32::try_from(body.len()).unwrap_or(0);
        data.extend_from_slice(b"070701");
        for f in [
            ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ] {
            data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        data.extend_from_slice(name.as_bytes());
        data.push(0);
        data.resize(data.len().next_multiple_of(4), 0);
        data.extend_from_slice(body);
        data.resize(data.len().next_multiple_of(4), 0);
    };
    entry("bin", 0o040755, (0, 0), &[]);
    entry("dev", 0o040755, (0, 0), &[]);
    entry("dev/console", 0o020600, (5, 1), &[]);
    entry("bin/busybox", 0o100755, (0, 0), &busybox);
    entry("init", 0o100755, (0, 0), init);
    entry("TRAILER!!!", 0, (0, 0), &[]);
    data.resize(data.len().next_multiple_of(512), 0);
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, data).ok()?;
    Some(path)
}

/// What kind of KVM this host has.
fn host_kind() -> &'static str {
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
#[derive(Debug, Default)]
struct Run {
    exec_to_kvm_open_ms: f64,
    exec_to_vcpus_start_ms: f64,
    exec_to_first_run_ms: f64,
    rss_kb: u64,
    hwm_kb: u64,
    guest_rss_kb: u64,
    pss_kb: u64,
    pss_anon_kb: u64,
    pss_file_kb: u64,
    init_s: Option<f64>,
}

impl Run {
    fn own_kb(&self) -> u64 {
        self.rss_kb.saturating_sub(self.guest_rss_kb)
    }
}

/// A runm-vmm process, ended (SIGTERM, then SIGKILL) by its own pid when dropped.
struct VmmProcess {
    child: Child,
    lines: Receiver<String>,
    stderr: Vec<String>,
}

impl VmmProcess {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// Waits for the mark of `phase` on stderr, its time in ns; collects
    /// the other lines.
    fn wait_phase(&mut self, phase: Phase, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let name = phase.name();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => match PhaseMark::parse(&l) {
                    Some(m) if m.phase == phase => return Ok(m.monotonic_ns),
                    _ => self.stderr.push(l),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no '{name}' mark within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string());
                    return Err(format!(
                        "runm-vmm ended ({}) before its '{name}' mark:\n{}",
                        status.unwrap_or_else(|e| e.to_string()),
                        self.stderr.join("\n")
                    ));
                }
            }
        }
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

struct Setup {
    vmm: PathBuf,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    workdir: PathBuf,
}

fn one_run(o: &Options, s: &Setup, index: usize) -> Result<Run, String> {
    let console_path = s.workdir.join(format!("console-{index}.log"));
    let mut cmd = Command::new(&s.vmm);
    cmd.arg("--kernel").arg(&s.kernel);
    if let Some(i) = &s.initrd {
        cmd.arg("--initrd").arg(i);
    }
    cmd.args(["--vcpus", &o.vcpus.to_string()])
        .args(["--mem-mib", &o.mem_mib.to_string()])
        .arg("--print-phases");
    if o.boot_to_init {
        cmd.arg("--console")
            .arg(format!("file:{}", console_path.display()));
    } else {
        cmd.args(["--console", "off"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let t0 = monotonic_ns();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", s.vmm.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut p = VmmProcess {
        child,
        lines,
        stderr: Vec::new(),
    };

    let t = Duration::from_secs(30);
    let kvm_open = p.wait_phase(Phase::KvmOpen, t)?;
    let vcpus_start = p.wait_phase(Phase::VcpusStart, t)?;
    let first_run = p.wait_phase(Phase::FirstKvmRun, t)?;

    // Sample memory a fixed time after the first KVM_RUN.
    let sample_at = first_run + o.sample_ms * 1_000_000;
    let now = monotonic_ns();
    if sample_at > now {
        std::thread::sleep(Duration::from_nanos(sample_at - now));
    }
    let pid = p.pid();
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{what}"))
            .map_err(|e| format!("cannot read /proc/{pid}/{what}: {e}"))
    };
    let status = read("status")?;
    let rollup = read("smaps_rollup")?;
    let smaps = read("smaps")?;
    let maps = procfs::parse_smaps(&smaps);
    let guest = procfs::guest_mapping(&maps, o.mem_mib * 1024)
        .ok_or("no anonymous mapping of the guest RAM's size in smaps")?;
    let mut run = Run {
        exec_to_kvm_open_ms: ms_between(t0, kvm_open),
        exec_to_vcpus_start_ms: ms_between(t0, vcpus_start),
        exec_to_first_run_ms: ms_between(t0, first_run),
        rss_kb: procfs::kb_field(&status, "VmRSS").unwrap_or(0),
        hwm_kb: procfs::kb_field(&status, "VmHWM").unwrap_or(0),
        guest_rss_kb: guest.rss_kb,
        pss_kb: procfs::kb_field(&rollup, "Pss").unwrap_or(0),
        pss_anon_kb: procfs::kb_field(&rollup, "Pss_Anon").unwrap_or(0),
        pss_file_kb: procfs::kb_field(&rollup, "Pss_File").unwrap_or(0),
        init_s: None,
    };

    if o.boot_to_init {
        let deadline = Instant::now() + o.init_timeout;
        loop {
            let text = std::fs::read(&console_path).unwrap_or_default();
            if text.windows(9).any(|w| w == b"Run /init") {
                run.init_s = Some(ms_between(t0, monotonic_ns()) / 1000.0);
                break;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("runm-vmm ended ({st}) before `Run /init`"));
            }
            if Instant::now() > deadline {
                return Err(format!("no `Run /init` within {:?}", o.init_timeout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(p);
    Ok(run)
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
    if args.first().map(String::as_str) == Some("report") {
        return report::main(&args[1..]);
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
    let vmm = runm_vmm()?;
    let kernel = match &o.kernel {
        Some(k) => k.clone(),
        None => guest_kernel()?,
    };
    let workdir = std::env::temp_dir().join(format!("runm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let initrd = busybox_initramfs(&workdir);
    let setup = Setup {
        vmm,
        kernel,
        initrd,
        workdir: workdir.clone(),
    };
    let result = measure(o, &setup);
    let _ = std::fs::remove_dir_all(&workdir);
    result
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
            r.exec_to_kvm_open_ms,
            r.exec_to_vcpus_start_ms,
            r.exec_to_first_run_ms,
            mib(r.rss_kb as f64),
            mib(r.guest_rss_kb as f64),
            mib(r.own_kb() as f64),
            mib(r.pss_kb as f64),
            mib(r.pss_anon_kb as f64),
            mib(r.pss_file_kb as f64),
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
        &col(&|r| r.exec_to_first_run_ms),
        "ms",
        "-",
        PEER_FC_EXEC_TO_RUN_MS,
    );
    row(
        "  of which exec -> KVM opened",
        &col(&|r| r.exec_to_kvm_open_ms),
        "ms",
        "",
        "",
    );
    row(
        "  of which build (memory, kernel, vCPUs)",
        &col(&|r| r.exec_to_vcpus_start_ms - r.exec_to_kvm_open_ms),
        "ms",
        "",
        "about 19 ms loading",
    );
    row(
        "VMM own memory (RSS - guest)",
        &col(&|r| mib(r.own_kb() as f64)),
        "MiB",
        &format!("<= {FC_PUBLISHED_OVERHEAD_MIB} MiB"),
        PEER_FC_OWN_MB,
    );
    row(
        "VMM RSS total",
        &col(&|r| mib(r.rss_kb as f64)),
        "MiB",
        "",
        "",
    );
    row(
        "VMM peak RSS (VmHWM)",
        &col(&|r| mib(r.hwm_kb as f64)),
        "MiB",
        "",
        "",
    );
    row(
        "guest memory touched",
        &col(&|r| mib(r.guest_rss_kb as f64)),
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

    #[test]
    fn ms_between_clamps_at_zero() {
        assert_eq!(ms_between(1_000_000, 3_500_000), 2.5);
        assert_eq!(ms_between(5, 1), 0.0);
    }
}
