//! The measurement plan: which runs, how often, in which order, and how
//! their outcomes become [`Measurements`].
//!
//! Every step is bounded (a timeout per run, a fixed number of runs and
//! instances) and a failed step becomes a note in the report rather than
//! ending it, so one broken backend never hides the others' figures.

use std::collections::BTreeSet;
use std::time::Duration;

use super::backends::{Env, Instance, Outcome, PodRole, RunSpec};
use super::error::{ReportError, Result};
use super::marks::{self, WorkloadLine};
use super::model::{
    Backend, BackendResult, CrashOutcome, DensityPoint, HostInfo, HostKind, IsolationFacts,
    Measurements, MemoryLimitOutcome, Phase, PodResult, PodShape, WorkloadSizes,
};
use super::net::{self, NetPair};
use super::probes::{self, HostView};
use super::procs;
use super::summary::fmt_num;
use super::vmm_startup;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repetitions of each figure.
    pub runs: usize,
    /// The backends to run (others are listed as not measured).
    pub backends: Vec<Backend>,
    /// Instance counts of the density runs.
    pub density: Vec<usize>,
    /// Whether runm-vmm also boots to `Run /init` once (minutes on PVM).
    pub pvm_boot: bool,
    /// CPU loop iterations.
    pub cpu_iterations: u64,
    /// getppid calls.
    pub syscalls: u64,
    /// File I/O MiB.
    pub io_mib: u64,
    /// How long an idle instance settles before its memory is read.
    pub settle: Duration,
    /// TCP round trips per network run.
    pub net_rounds: u64,
    /// MiB streamed per network run.
    pub net_mib: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            runs: 5,
            backends: Backend::ALL.to_vec(),
            density: vec![1, 2, 4],
            pvm_boot: true,
            cpu_iterations: 50_000_000,
            syscalls: 200_000,
            io_mib: 16,
            settle: Duration::from_millis(1000),
            net_rounds: 1000,
            net_mib: 16,
        }
    }
}

/// The memory limit of the memory probes' bundles: small enough that a
/// container hits it at once, and far below anything that could press the
/// host.
const PROBE_LIMIT_BYTES: u64 = 32 << 20;
/// What the memory probe touches under a limit: twice runm's smallest VM
/// (128 MiB), so both runc's cgroup and runm's guest RAM are exceeded.
const PROBE_ALLOC_MIB: u64 = 256;
/// What the bare process touches (no limit: kept small).
const PROBE_BARE_ALLOC_MIB: u64 = 64;

/// A run's time limit by backend: VMs under emulation are slow.
fn timeout(backend: Backend, heavy: bool) -> Duration {
    let secs = match (backend.is_vm(), heavy) {
        (false, false) => 60,
        (false, true) => 300,
        (true, false) => 300,
        (true, true) => 900,
    };
    Duration::from_secs(secs)
}

/// Prints one progress line (the report's console output).
fn say(msg: &str) {
    println!("report: {msg}");
}

fn phase_series(runs: &[Vec<(String, f64)>]) -> Vec<Phase> {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for (n, _) in r {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let mut out: Vec<Phase> = names
        .into_iter()
        .map(|name| Phase {
            ms: runs
                .iter()
                .map(|r| {
                    r.iter()
                        .find(|(n, _)| *n == name)
                        .map_or(f64::NAN, |(_, v)| *v)
                })
                .collect(),
            name,
        })
        .collect();
    // In time order of their medians.
    out.sort_by(|a, b| {
        let m = |p: &Phase| crate::stats::median(&p.ms).unwrap_or(f64::MAX);
        m(a).total_cmp(&m(b))
    });
    out
}

/// Checks that a run ended well and printed the workload's `end`.
fn check(what: &str, o: &Outcome) -> Result<()> {
    let ended = o
        .stdout
        .iter()
        .any(|l| marks::workload_line(&l.text) == Some(WorkloadLine::End));
    if o.exit.success() && ended {
        Ok(())
    } else {
        let tail: Vec<&str> = o
            .stdout
            .iter()
            .chain(o.stderr.iter())
            .map(|l| l.text.as_str())
            .collect();
        let start = tail.len().saturating_sub(4);
        Err(ReportError::Output {
            what: what.into(),
            detail: format!(
                "{} without the workload's end: {}",
                o.exit,
                tail[start..].join(" | ")
            ),
        })
    }
}

/// The measurements of everything in `plan`.
pub fn measure(env: &Env, host: HostInfo, plan: &Plan) -> Measurements {
    let sizes = WorkloadSizes {
        cpu_iterations: plan.cpu_iterations,
        syscalls: plan.syscalls,
        io_mib: plan.io_mib,
        vm_mem_mib: env.vm_mem_mib,
        density: plan.density.clone(),
        net_rounds: plan.net_rounds,
        net_mib: plan.net_mib,
    };
    let mut m = Measurements {
        host,
        runs: plan.runs,
        sizes,
        backends: Vec::new(),
        isolation: Vec::new(),
        network: Vec::new(),
        pods: Vec::new(),
        notes: Vec::new(),
    };
    for backend in Backend::ALL {
        let execution = execution(backend, m.host.kind);
        let mut r = BackendResult::new(backend, execution);
        if !plan.backends.contains(&backend) {
            r.unavailable = Some("not asked for (--only)".into());
        } else if let Some(why) = env.missing(backend) {
            r.unavailable = Some(why);
        }
        match &r.unavailable {
            None => say(&format!("{}: {}", backend.label(), r.execution)),
            Some(why) => say(&format!("{}: not measured: {why}", backend.label())),
        }
        m.backends.push(r);
    }
    // The timed runs go round the backends run by run rather than backend
    // by backend: on a shared host the load drifts, and this way the drift
    // falls on every backend alike instead of on whichever ran last.
    let active: Vec<usize> = (0..m.backends.len())
        .filter(|&k| {
            m.backends[k].unavailable.is_none() && m.backends[k].backend != Backend::RunmVmm
        })
        .collect();
    let mut phase_runs: Vec<Vec<Vec<(String, f64)>>> = vec![Vec::new(); m.backends.len()];
    say("== hello-world, start to exit");
    for i in 0..plan.runs {
        for &k in &active {
            hello_run(env, plan, i, &mut m.backends[k], &mut phase_runs[k]);
        }
    }
    for &k in &active {
        m.backends[k].phases = phase_series(&phase_runs[k]);
        if m.backends[k].backend == Backend::QemuDirect {
            reboot_k_cost(env, &mut m.backends[k]);
        }
    }
    say("== workloads: CPU, system calls, file I/O");
    for i in 0..plan.runs {
        for &k in &active {
            bench_run(env, plan, i, &mut m.backends[k]);
        }
    }
    for &k in &active {
        say(&format!("== memory: {}", m.backends[k].backend.label()));
        memory_runs(env, plan, &mut m.backends[k]);
    }
    if let Some(r) = m
        .backends
        .iter_mut()
        .find(|r| r.backend == Backend::RunmVmm && r.unavailable.is_none())
    {
        say(&format!("== {}", r.backend.label()));
        measure_runm_vmm(env, plan, r);
    }
    say("== pods: a sandbox and two containers");
    m.pods = pod_runs(env, plan);
    m.isolation = isolation(env, plan, &mut m.notes);
    say("== network: TCP to a peer namespace");
    network_runs(env, plan, &active, &mut m);
    m.network = network(&m);
    m.host.load_end = super::host::load();
    m
}

/// How `backend`'s code runs on a host of `kind`.
pub fn execution(backend: Backend, kind: HostKind) -> String {
    match backend {
        Backend::Bare => "host process on the host kernel".into(),
        Backend::Runc => "namespaces and cgroups on the host kernel".into(),
        Backend::RunmQemu | Backend::QemuDirect => match kind {
            HostKind::RealKvm => "QEMU with KVM (hardware virtualization)".into(),
            _ => "QEMU TCG: software emulation".into(),
        },
        Backend::RunmOwnVmm => "runm-vmm on KVM".into(),
        Backend::RunmVmm => match kind {
            HostKind::Pvm => "runm-vmm on PVM KVM: guest boot PVM-emulated".into(),
            _ => "runm-vmm on KVM".into(),
        },
    }
}

/// The bench arguments for `backend`: the file I/O goes to /tmp of the
/// root file system (the bundle directory on the host's disk for the bare
/// process and runc; for runm the same directory over virtio-fs, or with
/// `root_image` an ext4 image copy of it on virtio-blk); QEMU's direct boot
/// has no disk, so it skips the file I/O.
fn bench_args(env: &Env, plan: &Plan, backend: Backend) -> Vec<String> {
    let io_dir = match backend {
        Backend::Bare => env.rootfs.join("tmp").display().to_string(),
        _ => "/tmp".into(),
    };
    let io = if backend == Backend::QemuDirect {
        0
    } else {
        plan.io_mib
    };
    vec![
        "bench".into(),
        plan.cpu_iterations.to_string(),
        plan.syscalls.to_string(),
        io.to_string(),
        io_dir,
    ]
}

/// One hello-world run of `r`'s backend: its latency and phases.
fn hello_run(
    env: &Env,
    plan: &Plan,
    i: usize,
    r: &mut BackendResult,
    phase_runs: &mut Vec<Vec<(String, f64)>>,
) {
    let b = r.backend;
    match env
        .run(b, &RunSpec::args(&["hello"]), timeout(b, false))
        .and_then(|o| check(&format!("{} hello", b.label()), &o).map(|()| o))
    {
        Ok(o) => {
            say(&format!(
                "{} hello {}/{}: {} ms ({})",
                b.short(),
                i + 1,
                plan.runs,
                fmt_num(o.wall_ms),
                o.phases
                    .iter()
                    .map(|(n, v)| format!("{n} {}", fmt_num(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            r.hello_ms.push(o.wall_ms);
            phase_runs.push(o.phases);
        }
        Err(e) => note(r, &format!("hello run {}: {e}", i + 1)),
    }
}

/// One run of the CPU, system-call and file-I/O workloads; for runm also
/// the file I/O with the root on virtio-blk.
fn bench_run(env: &Env, plan: &Plan, i: usize, r: &mut BackendResult) {
    let b = r.backend;
    let spec = RunSpec {
        args: bench_args(env, plan, b),
        memory_limit: None,
        reboot_k: false,
        netns: None,
        root_image: false,
        pod: None,
        sysrq: false,
    };
    if matches!(b, Backend::RunmQemu | Backend::RunmOwnVmm) {
        let blk = RunSpec {
            root_image: true,
            ..spec.clone()
        };
        match env
            .run(b, &blk, timeout(b, true))
            .and_then(|o| check(&format!("{} bench (virtio-blk root)", b.label()), &o).map(|()| o))
        {
            Ok(o) => {
                let res = marks::bench_results(&o.stdout);
                if let Some((_, v)) = res.iter().find(|(k, _)| k == "fileio") {
                    say(&format!(
                        "{} file I/O on virtio-blk {}/{}: {} ms",
                        b.short(),
                        i + 1,
                        plan.runs,
                        fmt_num(*v)
                    ));
                    r.fileio_blk_ms.push(*v);
                }
            }
            Err(e) => note(
                r,
                &format!("bench run {} with the root on virtio-blk: {e}", i + 1),
            ),
        }
    }
    match env
        .run(b, &spec, timeout(b, true))
        .and_then(|o| check(&format!("{} bench", b.label()), &o).map(|()| o))
    {
        Ok(o) => {
            let res = marks::bench_results(&o.stdout);
            let get = |n: &str| res.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
            if let Some(v) = get("cpu") {
                r.cpu_ms.push(v);
            }
            if let Some(v) = get("syscall") {
                r.syscall_ms.push(v);
            }
            if let Some(v) = get("fileio") {
                r.fileio_ms.push(v);
            }
            say(&format!(
                "{} bench {}/{}: {}",
                b.short(),
                i + 1,
                plan.runs,
                res.iter()
                    .map(|(n, v)| format!("{n} {} ms", fmt_num(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Err(e) => note(r, &format!("bench run {}: {e}", i + 1)),
    }
    if b == Backend::QemuDirect && i == 0 {
        r.notes
            .push("no file I/O: the direct boot has an initramfs only, no disk".into());
    }
}

/// Memory of one idle instance (`runs` times), then of N at once.
fn memory_runs(env: &Env, plan: &Plan, r: &mut BackendResult) {
    let b = r.backend;
    // Memory of one idle instance.
    for i in 0..plan.runs {
        match idle_memory(env, plan, b, 1) {
            Ok(p) => {
                say(&format!(
                    "{} idle memory {}/{}: PSS {:.1} MiB, guest RAM touched {:.1} MiB",
                    b.short(),
                    i + 1,
                    plan.runs,
                    p.total_pss_kib / 1024.0,
                    p.guest_touched_kib / 1024.0
                ));
                r.pss_kib.push(p.total_pss_kib);
                if b.is_vm() {
                    r.guest_touched_kib.push(p.guest_touched_kib);
                }
            }
            Err(e) => note(r, &format!("idle memory run {}: {e}", i + 1)),
        }
    }

    // Density: N idle instances at once.
    for &n in &plan.density {
        match idle_memory(env, plan, b, n) {
            Ok(p) => {
                say(&format!(
                    "{} density {n}: PSS {:.1} MiB in all, {:.1} MiB each",
                    b.short(),
                    p.total_pss_kib / 1024.0,
                    p.total_pss_kib / 1024.0 / n as f64
                ));
                r.density.push(p);
            }
            Err(e) => note(r, &format!("density {n}: {e}")),
        }
    }
}

/// One direct-boot hello run with runm-vmm's `reboot=k`, beside the
/// `reboot=t` runs: what the missing i8042 of QEMU's microvm costs at every
/// exit (why QEMU guests reset with a triple fault).
fn reboot_k_cost(env: &Env, r: &mut BackendResult) {
    let spec = RunSpec {
        reboot_k: true,
        ..RunSpec::args(&["hello"])
    };
    let gap = |phases: &[(String, f64)]| {
        let at = |n: &str| phases.iter().find(|(p, _)| p == n).map(|(_, v)| *v);
        Some(at(marks::PHASE_EXIT)? - at(marks::PHASE_WORKLOAD_START)?)
    };
    let with_t: Vec<f64> = r
        .phases
        .iter()
        .find(|p| p.name == marks::PHASE_EXIT)
        .zip(
            r.phases
                .iter()
                .find(|p| p.name == marks::PHASE_WORKLOAD_START),
        )
        .map(|(e, s)| e.ms.iter().zip(&s.ms).map(|(a, b)| a - b).collect())
        .unwrap_or_default();
    match env.run(
        Backend::QemuDirect,
        &spec,
        timeout(Backend::QemuDirect, false),
    ) {
        Ok(o) => {
            let k = gap(&o.phases);
            let msg = format!(
                "workload start to exit: {} ms with `reboot=k` (1 run; runm-vmm's reset, which \
                 runm's QEMU backend once used) against {} ms with `reboot=t`: QEMU 7.2's microvm \
                 has no i8042, so the guest kernel's keyboard-controller reset spins before its \
                 triple-fault fallback",
                k.map_or("-".into(), fmt_num),
                crate::stats::median(&with_t).map_or("-".into(), fmt_num)
            );
            say(&format!("qemu-direct: {msg}"));
            r.notes.push(msg);
        }
        Err(e) => note(r, &format!("reboot=k run: {e}")),
    }
}

fn note(r: &mut BackendResult, msg: &str) {
    say(&format!("{}: {msg}", r.backend.short()));
    r.notes.push(msg.to_string());
}

/// Starts `n` idle instances, waits until all are ready and settled, and
/// reads the memory of all their host processes together.
fn idle_memory(env: &Env, plan: &Plan, b: Backend, n: usize) -> Result<DensityPoint> {
    let mut instances: Vec<Instance> = Vec::new();
    for _ in 0..n {
        instances.push(env.start(b, &RunSpec::args(&["sleep", "900"]))?);
    }
    for inst in &mut instances {
        inst.wait_ready(timeout(b, false))?;
    }
    std::thread::sleep(plan.settle);
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    for inst in &instances {
        pids.extend(inst.pids());
    }
    let (pss, guest) = procs::memory_of(&pids, env.vm_mem_mib);
    drop(instances);
    Ok(DensityPoint {
        instances: n,
        total_pss_kib: pss as f64,
        guest_touched_kib: guest as f64,
    })
}

/// One pod sample: start-up and idle memory.
#[derive(Debug, Clone)]
struct PodSample {
    /// First start command to the last workload container's `ready`, ms.
    startup_ms: f64,
    /// All of the shape's host processes, idle.
    memory: DensityPoint,
}

/// When the `ready` line of `inst` reached the harness, on the clock of
/// spawns (CLOCK_MONOTONIC, ns).
fn ready_at_ns(inst: &Instance) -> Option<u64> {
    inst.run
        .stdout
        .iter()
        .find(|l| marks::workload_line(&l.text) == Some(WorkloadLine::Ready))
        .map(|l| inst.run.t0_ns + (l.ms * 1e6) as u64)
}

/// Starts `shape` with idle workloads the way an engine does (a pod's
/// sandbox first, its containers once it runs), times it from the first
/// start command to both workload containers' `ready`, lets it settle and
/// reads the memory of all its host processes (as [`idle_memory`] does).
fn pod_sample(env: &Env, plan: &Plan, shape: PodShape) -> Result<PodSample> {
    let b = shape.backend();
    let idle = RunSpec::args(&["sleep", "900"]);
    // Dropped in reverse: the containers before the sandbox they joined.
    let mut sandbox: Option<Instance> = None;
    let mut workloads: Vec<Instance> = Vec::new();
    let t0_ns;
    if shape.is_pod() {
        let mut sb = env.start(
            b,
            &RunSpec {
                pod: Some(PodRole::Sandbox),
                ..idle.clone()
            },
        )?;
        t0_ns = sb.run.t0_ns;
        sb.wait_ready(timeout(b, false))?;
        let pid = sb.state_pid().ok_or_else(|| ReportError::Output {
            what: format!("{} pod sandbox", b.label()),
            detail: "`state` shows no pid".into(),
        })?;
        let member = RunSpec {
            pod: Some(PodRole::Member {
                sandbox_id: sb.container_id().unwrap_or_default().to_string(),
                sandbox_pid: pid,
            }),
            ..idle.clone()
        };
        sandbox = Some(sb);
        for _ in 0..2 {
            workloads.push(env.start(b, &member)?);
        }
    } else {
        for _ in 0..2 {
            workloads.push(env.start(b, &idle)?);
        }
        t0_ns = workloads[0].run.t0_ns;
    }
    for w in &mut workloads {
        w.wait_ready(timeout(b, false))?;
    }
    let ready_ns = workloads
        .iter()
        .map(ready_at_ns)
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max())
        .ok_or_else(|| ReportError::Output {
            what: shape.label().into(),
            detail: "a `ready` line went missing".into(),
        })?;
    std::thread::sleep(plan.settle);
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    for inst in workloads.iter().chain(sandbox.iter()) {
        pids.extend(inst.pids());
    }
    let (pss, guest) = procs::memory_of(&pids, env.vm_mem_mib);
    drop(workloads);
    drop(sandbox);
    Ok(PodSample {
        startup_ms: ready_ns.saturating_sub(t0_ns) as f64 / 1e6,
        memory: DensityPoint {
            instances: shape.containers(),
            total_pss_kib: pss as f64,
            guest_touched_kib: guest as f64,
        },
    })
}

/// The pod shapes, `runs` times, round-robin like the other timed runs;
/// a shape whose backend was not asked for or cannot run is listed with why.
fn pod_runs(env: &Env, plan: &Plan) -> Vec<PodResult> {
    let kind = super::host::kind();
    let mut out: Vec<PodResult> = PodShape::ALL
        .into_iter()
        .map(|shape| {
            let b = shape.backend();
            let mut r = PodResult::new(shape, execution(b, kind));
            if !plan.backends.contains(&b) {
                r.unavailable = Some(format!("{} not asked for (--only)", b.short()));
            } else if let Some(why) = env.missing(b) {
                r.unavailable = Some(why);
            }
            r
        })
        .collect();
    for i in 0..plan.runs {
        for r in out.iter_mut().filter(|r| r.unavailable.is_none()) {
            let shape = r.shape;
            match pod_sample(env, plan, shape) {
                Ok(p) => {
                    say(&format!(
                        "{} {}/{}: start-up {} ms; PSS {:.1} MiB, guest RAM touched {:.1} MiB",
                        shape.label(),
                        i + 1,
                        plan.runs,
                        fmt_num(p.startup_ms),
                        p.memory.total_pss_kib / 1024.0,
                        p.memory.guest_touched_kib / 1024.0
                    ));
                    r.startup_ms.push(p.startup_ms);
                    r.pss_kib.push(p.memory.total_pss_kib);
                    if shape.vms() > 0 {
                        r.guest_touched_kib.push(p.memory.guest_touched_kib);
                    }
                }
                Err(e) => {
                    say(&format!("{}: run {}: {e}", shape.label(), i + 1));
                    r.notes.push(format!("run {}: {e}", i + 1));
                }
            }
        }
    }
    out
}

/// When runm-vmm's memory is read: this long after its first KVM_RUN.
const STARTUP_SAMPLE_AFTER: Duration = Duration::from_millis(200);

/// Starts runm-vmm, takes one start-up sample, and ends it.
fn vmm_startup_run(env: &Env) -> Result<vmm_startup::StartupSample> {
    let mut inst = env.start(Backend::RunmVmm, &RunSpec::args(&[]))?;
    vmm_startup::sample(
        &mut inst.run,
        env.vm_mem_mib,
        STARTUP_SAMPLE_AFTER,
        Duration::from_secs(30),
    )
}

/// runm-vmm by itself: exec to its first KVM_RUN and its memory 200 ms
/// later, for `runs` runs; then, if asked, one boot to `Run /init` (on PVM
/// minutes long, and ending in the fault of guest user space).
fn measure_runm_vmm(env: &Env, plan: &Plan, r: &mut BackendResult) {
    let b = Backend::RunmVmm;
    let mut phase_runs = Vec::new();
    for i in 0..plan.runs {
        let res = vmm_startup_run(env);
        match res {
            Ok(vmm_startup::StartupSample { phases, memory }) => {
                say(&format!(
                    "runm-vmm start-up {}/{}: {}; PSS {:.1} MiB (guest RAM touched {:.1} MiB)",
                    i + 1,
                    plan.runs,
                    phases
                        .iter()
                        .map(|(n, v)| format!("{n} {} ms", fmt_num(*v)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    memory.pss as f64 / 1024.0,
                    memory.guest as f64 / 1024.0
                ));
                phase_runs.push(phases);
                r.pss_kib.push(memory.pss as f64);
                r.guest_touched_kib.push(memory.guest as f64);
            }
            Err(e) => note(r, &format!("start-up run {}: {e}", i + 1)),
        }
    }
    if plan.pvm_boot {
        say("runm-vmm: one boot to `Run /init` (PVM-emulated on a PVM host: minutes)");
        match env.run(b, &RunSpec::args(&[]), Duration::from_secs(420)) {
            Ok(o) => {
                let panic = o
                    .console
                    .iter()
                    .chain(o.stderr.iter())
                    .find(|l| l.text.contains("Kernel panic"))
                    .map(|l| {
                        marks::printk(&l.text)
                            .map_or(l.text.as_str(), |(_, m)| m)
                            .to_string()
                    });
                say(&format!(
                    "runm-vmm boot: {} after {} s; {}",
                    o.exit,
                    fmt_num(o.wall_ms / 1000.0),
                    o.phases
                        .iter()
                        .map(|(n, v)| format!("{n} {} s", fmt_num(*v / 1000.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                r.notes.push(format!(
                    "boot to `Run /init` (1 run, {}): {}, {}",
                    if env_is_pvm() {
                        "PVM-emulated, not a performance figure"
                    } else {
                        "hardware KVM"
                    },
                    o.exit,
                    panic.map_or("no kernel panic".into(), |p| format!("then `{}`", p.trim()))
                ));
                phase_runs.push(o.phases);
            }
            Err(e) => note(r, &format!("boot to /init: {e}")),
        }
    }
    r.phases = phase_series(&phase_runs);
    if env_is_pvm() {
        r.notes.push(
            "guest user space cannot run under PVM KVM (its first system call faults): \
             runm's containers run under QEMU TCG on this host"
                .into(),
        );
    }
}

fn env_is_pvm() -> bool {
    super::host::kind() == HostKind::Pvm
}

/// The host's view, read right before a probe.
fn host_view() -> HostView {
    HostView {
        processes: procs::host_process_count(),
        mounts: procs::host_mounts(),
        devs: procs::host_dev_names(),
        block_devices: procs::host_block_devices(),
        boot_id: procs::host_boot().0,
    }
}

/// The isolation probes of every model that ran: facts, memory limit, and
/// (VMs only) the guest kernel crash.
fn isolation(env: &Env, plan: &Plan, notes: &mut Vec<String>) -> Vec<IsolationFacts> {
    let mut out = Vec::new();
    for b in [
        Backend::Bare,
        Backend::Runc,
        Backend::RunmQemu,
        Backend::RunmOwnVmm,
    ] {
        if !plan.backends.contains(&b) || env.missing(b).is_some() {
            continue;
        }
        say(&format!("== isolation probes: {}", b.label()));
        let view = host_view();
        // The probe runs under the memory probe's limit, so the limit each
        // model shows its workload is part of the table.
        let spec = RunSpec {
            memory_limit: (b != Backend::Bare).then_some(PROBE_LIMIT_BYTES),
            ..RunSpec::args(&["probe"])
        };
        let mut facts = match env.run(b, &spec, timeout(b, false)) {
            Ok(o) => probes::facts(b, &probes::parse(&o.stdout), &view),
            Err(e) => {
                notes.push(format!("{} probe: {e}", b.label()));
                continue;
            }
        };
        say(&format!(
            "{} sees kernel {}, PID 1 `{}`, {} processes (host {}), sysrq-trigger: {}",
            b.short(),
            facts.kernel_release,
            facts.pid1_comm,
            facts.processes_seen,
            facts.host_processes,
            facts.sysrq_access
        ));
        match memory_limit_probe(env, b) {
            Ok(ml) => {
                say(&format!(
                    "{} memory probe: {}; touched {} of {} MiB, {} ({})",
                    b.short(),
                    ml.limit,
                    ml.reached_mib,
                    ml.asked_mib,
                    ml.exit,
                    ml.ended_by
                ));
                facts.memory_limit = Some(ml);
            }
            Err(e) => notes.push(format!("{} memory probe: {e}", b.label())),
        }
        if b.is_vm() {
            match crash_probe(env, b) {
                Ok(c) => {
                    say(&format!(
                        "{} crash probe: {}; neighbour survived: {:?}; host boot id unchanged: {}",
                        b.short(),
                        c.instance_result,
                        c.neighbour_survived,
                        c.host_boot_id_unchanged
                    ));
                    facts.crash = Some(c);
                }
                Err(e) => notes.push(format!("{} crash probe: {e}", b.label())),
            }
        }
        out.push(facts);
    }
    out
}

/// Touches more memory than the limit allows and reports who ended it.
fn memory_limit_probe(env: &Env, b: Backend) -> Result<MemoryLimitOutcome> {
    let (asked, limit, limit_text) = match b {
        Backend::Bare => (
            PROBE_BARE_ALLOC_MIB,
            None,
            "none (a host process; only the host's memory bounds it)".to_string(),
        ),
        Backend::Runc => (
            PROBE_ALLOC_MIB,
            Some(PROBE_LIMIT_BYTES),
            format!(
                "bundle limit {} MiB → cgroup memory limit",
                PROBE_LIMIT_BYTES >> 20
            ),
        ),
        _ => (
            PROBE_ALLOC_MIB,
            Some(PROBE_LIMIT_BYTES),
            format!(
                "bundle limit {} MiB → guest RAM of the VM (runm's minimum 128 MiB)",
                PROBE_LIMIT_BYTES >> 20
            ),
        ),
    };
    let spec = RunSpec {
        memory_limit: limit,
        ..RunSpec::args(&["alloc", &asked.to_string()])
    };
    let o = env.run(b, &spec, timeout(b, true))?;
    let reached = marks::alloc_reached(&o.stdout);
    let done = o
        .stdout
        .iter()
        .any(|l| marks::workload_line(&l.text) == Some(WorkloadLine::End));
    let oom_line = o
        .console
        .iter()
        .find(|l| l.text.contains("Out of memory") || l.text.contains("oom-kill"))
        .map(|l| l.text.trim().to_string());
    let ended_by = if done {
        "not ended: every MiB was touched".to_string()
    } else if let Some(l) = oom_line {
        let l = marks::printk(&l)
            .map_or(l.as_str(), |(_, msg)| msg)
            .to_string();
        format!("ended by the guest kernel's OOM killer (console: `{l}`)")
    } else if b == Backend::Runc && (o.exit.code == Some(137) || o.exit.signal == Some(9)) {
        "ended by the host kernel's OOM killer for the container's memory cgroup (SIGKILL)"
            .to_string()
    } else if o.exit.code == Some(137) || o.exit.signal == Some(9) {
        "ended by SIGKILL (an OOM kill)".to_string()
    } else {
        format!("ended otherwise: {}", o.exit)
    };
    Ok(MemoryLimitOutcome {
        limit: limit_text,
        asked_mib: asked,
        reached_mib: reached,
        exit: o.exit.to_string(),
        ended_by,
    })
}

/// Crashes the guest kernel of one VM while a neighbouring VM of the same
/// backend idles, and shows what reached the neighbour and the host.
fn crash_probe(env: &Env, b: Backend) -> Result<CrashOutcome> {
    if !b.is_vm() {
        return Err(ReportError::Refused(format!(
            "{}: a kernel crash probe runs only inside a VM",
            b.label()
        )));
    }
    let (boot_before, up_before) = procs::host_boot();
    if boot_before.len() < 8 {
        return Err(ReportError::Refused(
            "the host's boot id is unreadable: the crash probe cannot prove it stays in the VM"
                .into(),
        ));
    }
    let mut neighbour = env.start(b, &RunSpec::args(&["sleep", "900"]))?;
    neighbour.wait_ready(timeout(b, false))?;
    // The program refuses by itself when the kernel it runs on has the
    // host's boot id; the harness passes the id so it can check.
    let o = env.run(
        b,
        &RunSpec {
            sysrq: true,
            ..RunSpec::args(&["crash-kernel", &boot_before])
        },
        timeout(b, false),
    )?;
    let refused = o
        .stdout
        .iter()
        .find_map(|l| match marks::workload_line(&l.text) {
            Some(WorkloadLine::Error(e)) => Some(e.to_string()),
            _ => None,
        });
    let neighbour_alive =
        neighbour.run.running() && neighbour.state_status().as_deref() == Some("running");
    drop(neighbour);
    let (boot_after, up_after) = procs::host_boot();
    let console: Vec<String> = o
        .console
        .iter()
        .filter(|l| l.text.contains("sysrq: ") || l.text.contains("Kernel panic"))
        .map(|l| {
            marks::printk(&l.text)
                .map_or(l.text.as_str(), |(_, m)| m)
                .trim()
                .to_string()
        })
        .collect();
    let stderr_last = o
        .stderr
        .iter()
        .rev()
        .find(|l| {
            // runm's backend choice and its warnings are not about the crash.
            let t = l.text.trim();
            !t.is_empty() && !t.contains("backend") && !t.contains("warning:")
        })
        .map(|l| l.text.clone());
    Ok(CrashOutcome {
        action: "`c` written to /proc/sysrq-trigger inside the guest".into(),
        instance_result: match refused {
            Some(e) => format!("not crashed: {e}"),
            None => format!(
                "the VM ended ({}){}",
                o.exit,
                stderr_last.map_or(String::new(), |s| format!(": {s}"))
            ),
        },
        console: console.join(" / "),
        neighbour_survived: Some(neighbour_alive),
        host_boot_id_unchanged: boot_before == boot_after,
        host_uptime_s: (up_before, up_after),
    })
}

/// Whether `backend` can take part in the network runs: it runs the
/// workload in a network namespace the report names (QEMU's direct boot and
/// runm-vmm's own runs have no NIC).
fn networked(backend: Backend) -> bool {
    matches!(
        backend,
        Backend::Bare | Backend::Runc | Backend::RunmQemu | Backend::RunmOwnVmm
    )
}

/// TCP between the workload and a peer namespace ([`net`]): round trips
/// and a stream, `runs` times, round-robin over the backends as the other
/// timed runs are.
fn network_runs(env: &Env, plan: &Plan, active: &[usize], m: &mut Measurements) {
    let pair = match NetPair::new() {
        Ok(p) => p,
        Err(e) => {
            m.notes.push(format!("network runs: {e}"));
            return;
        }
    };
    let args = [
        "net".to_string(),
        net::PEER_ADDR.to_string(),
        net::PORT.to_string(),
        plan.net_rounds.to_string(),
        plan.net_mib.to_string(),
    ];
    for i in 0..plan.runs {
        for &k in active {
            let r = &mut m.backends[k];
            let b = r.backend;
            if !networked(b) {
                continue;
            }
            let spec = RunSpec {
                args: args.to_vec(),
                netns: Some(pair.workload_netns()),
                ..RunSpec::args(&[])
            };
            match env
                .run(b, &spec, timeout(b, true))
                .and_then(|o| check(&format!("{} net", b.label()), &o).map(|()| o))
            {
                Ok(o) => {
                    let res = marks::bench_results(&o.stdout);
                    let get = |n: &str| res.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
                    let rtt = get("tcp_rtt").map(|ms| ms * 1000.0 / plan.net_rounds as f64);
                    let stream = get("tcp_stream")
                        .filter(|ms| *ms > 0.0)
                        .map(|ms| plan.net_mib as f64 / (ms / 1000.0));
                    r.tcp_rtt_us.extend(rtt);
                    r.tcp_stream_mib_s.extend(stream);
                    say(&format!(
                        "{} net {}/{}: round trip {} µs, stream {} MiB/s",
                        b.short(),
                        i + 1,
                        plan.runs,
                        rtt.map_or("-".into(), fmt_num),
                        stream.map_or("-".into(), fmt_num),
                    ));
                }
                Err(e) => note(r, &format!("network run {}: {e}", i + 1)),
            }
        }
    }
    drop(pair);
}

/// What each backend's network path to the peer is, for the table.
fn network(m: &Measurements) -> Vec<(Backend, String)> {
    let emulated = m.host.kind != HostKind::RealKvm;
    let mut v = vec![
        (
            Backend::Bare,
            "host process inside the workload namespace: veth to the peer namespace".into(),
        ),
        (
            Backend::Runc,
            "container joining the workload namespace (`linux.namespaces` path): the veth is its eth0"
                .into(),
        ),
    ];
    for b in [Backend::RunmQemu, Backend::RunmOwnVmm] {
        let vmm = if b == Backend::RunmQemu {
            if emulated {
                "QEMU's virtio-net under software emulation: not a performance figure"
            } else {
                "QEMU's virtio-net"
            }
        } else {
            "runm-vmm's virtio-net"
        };
        v.push((
            b,
            format!(
                "runm plumbs the namespace's veth to a tap (tc ingress + mirred both ways) into \
                 the guest's NIC, which has the veth's MAC and address; {vmm}"
            ),
        ));
    }
    v.push((
        Backend::QemuDirect,
        "no NIC (-nodefaults, none configured): not measured".into(),
    ));
    v
}

/// The host processes of this program's own children that are still alive
/// (a run that escaped its clean-up), for the final check.
pub fn leftovers() -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    procs::descendants(&[me])
        .into_iter()
        .filter(|&p| p != me && procs::alive(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_series_align_runs_by_name() {
        let runs = vec![
            vec![("a".to_string(), 1.0), ("b".to_string(), 5.0)],
            vec![("b".to_string(), 7.0)],
        ];
        let s = phase_series(&runs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[0].ms[0], 1.0);
        assert!(s[0].ms[1].is_nan(), "missing in run 2");
        assert_eq!(s[1].ms, vec![5.0, 7.0]);
    }

    #[test]
    fn timeouts_grow_for_vms_and_heavy_runs() {
        assert!(timeout(Backend::RunmQemu, false) > timeout(Backend::Runc, false));
        assert!(timeout(Backend::RunmQemu, true) > timeout(Backend::RunmQemu, false));
    }

    #[test]
    fn execution_names_emulation() {
        assert!(execution(Backend::RunmQemu, HostKind::Pvm).contains("software emulation"));
        assert!(execution(Backend::RunmVmm, HostKind::Pvm).contains("PVM-emulated"));
        assert!(execution(Backend::QemuDirect, HostKind::RealKvm).contains("KVM"));
    }
}
