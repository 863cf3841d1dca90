//! The report's text: [`Measurements`] turned into the document's blocks
//! (host, deployment-model comparison, latency and phases, memory and
//! density, workloads, network, isolation, what is missing), and the files
//! written to the output directory: `report.md`, `report.html`, the SVGs and
//! `measurements.json`.

use std::fs;
use std::path::{Path, PathBuf};

use super::doc::{self, Block, Table};
use super::error::{ReportError, Result};
use super::model::{Backend, BackendResult, HostKind, IsolationFacts, Measurements, PodShape};
use super::plots;
use super::probes::{limit_text, mount_is_readonly};
use super::summary::{fmt_num, fmt_ratio, fmt_spread, kib_to_mib, median_ratio};
use crate::stats;

/// The report's title.
pub const TITLE: &str = "runm: the same workload as a process, a container and a microVM";

/// The VM backends whose phases get a timeline.
const TIMELINES: [Backend; 5] = [
    Backend::RunmQemu,
    Backend::RunmOwnVmm,
    Backend::QemuDirect,
    Backend::RunmVmm,
    Backend::Runc,
];

/// What the pods section measures and why it matters.
const POD_TEXT: &str = "Kubernetes and Podman run containers in pods: a sandbox container \
     (CRI's \"pause\", Podman's infra container) holds the pod's network, IPC and UTS \
     namespaces, and the pod's containers join them. With runc the pod shares the host kernel \
     like every container; the containers join the sandbox's namespaces by \
     `/proc/<pid>/ns/...` paths. runm gives the pod one VM: the sandbox container boots it, and \
     each further container runs inside it (its own root and PID namespace, the pod's network, \
     IPC and UTS namespaces, and a small host process of its own), so the pod's containers \
     share one guest kernel and are isolated from other pods by the VM. The last row is the \
     same two containers without a pod, a VM each. Each shape runs the idle `sleep` workload \
     in every container, the sandbox's included, started the way an engine starts them (the \
     sandbox first, its containers once it runs). Start-up: from the first start command to \
     the `ready` line of both workload containers (the sandbox's is not counted); memory: \
     summed PSS of every host process of all its containers once they are idle, read as the \
     density figures are.";

/// The caption every table carries.
fn caption(m: &Measurements) -> String {
    format!(
        "{}; {} runs each, median (min-max)",
        m.host.banner(),
        m.runs
    )
}

fn mib(kib: f64) -> String {
    fmt_num(kib / 1024.0)
}

/// The warning at the top when VM figures are not from hardware KVM.
pub fn emulation_warning(m: &Measurements) -> Option<String> {
    match m.host.kind {
        HostKind::RealKvm => None,
        HostKind::Pvm => Some(format!(
            "Host kind: PVM KVM. Every VM figure in this report comes from software emulation \
             (QEMU TCG) or, for runm-vmm's boot, from PVM's instruction emulation: they show \
             how the models differ, not how fast VMs are on real KVM. Host-side costs (runm-vmm's \
             exec to first KVM_RUN, memory) and all process and container figures are real. \
             Host: {}.",
            m.host.cpu_model
        )),
        HostKind::NoKvm => Some(
            "No usable KVM on this host: every VM figure comes from software emulation (QEMU \
             TCG), not from hardware virtualization."
                .into(),
        ),
    }
}

fn host_table(m: &Measurements) -> Table {
    let h = &m.host;
    let guest_kernel = m
        .isolation
        .iter()
        .find(|f| f.backend.is_vm())
        .map_or("-".to_string(), |f| f.kernel_release.clone());
    let mut t = Table::new(&["", ""]);
    let rows = [
        ("host kind", h.kind.label().to_string()),
        ("CPU", format!("{} ({} CPUs)", h.cpu_model, h.cpus)),
        (
            "memory",
            format!("{} GiB", fmt_num(h.mem_total_kib as f64 / 1024.0 / 1024.0)),
        ),
        ("host kernel", h.kernel.clone()),
        ("guest kernel", guest_kernel),
        ("runc", h.runc.clone()),
        ("QEMU", h.qemu.clone()),
        ("VMs run by", h.vm_execution.clone()),
        ("date", h.date.clone()),
        (
            "load average (start / end)",
            format!(
                "{} / {} (other work on the host shows here)",
                h.load_start, h.load_end
            ),
        ),
        (
            "workloads",
            format!(
                "CPU loop {} iterations; {} getppid + {} writes to /dev/null; {} MiB \
                 write+fsync+read; VMs {} MiB, 1 vCPU",
                m.sizes.cpu_iterations,
                m.sizes.syscalls,
                m.sizes.syscalls,
                m.sizes.io_mib,
                m.sizes.vm_mem_mib
            ),
        ),
    ];
    for (k, v) in rows {
        t.row(vec![k.into(), v]);
    }
    t
}

fn backends_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "backend",
        "deployment model",
        "how it runs here",
        "measured",
    ]);
    for r in &m.backends {
        let model = match r.backend.deployment() {
            super::model::Deployment::Traditional => "traditional",
            super::model::Deployment::Container => "container",
            super::model::Deployment::Virtualized => "virtualized",
        };
        let measured = match (&r.unavailable, r.backend) {
            (Some(why), _) => format!("no: {why}"),
            (None, Backend::RunmVmm) => {
                "host-side start-up and memory; one boot to `Run /init`".into()
            }
            (None, _) => "yes".into(),
        };
        t.row(vec![
            r.backend.label().into(),
            model.into(),
            r.execution.clone(),
            measured,
        ]);
    }
    t
}

fn bare(m: &Measurements) -> Option<&BackendResult> {
    m.backend(Backend::Bare)
}

fn latency_table(m: &Measurements) -> Table {
    let mut t = Table::new(&["backend", "hello-world start to exit", "× bare"]);
    let base = bare(m).map(|b| b.hello_ms.clone()).unwrap_or_default();
    for r in measured(m).filter(|r| r.backend != Backend::RunmVmm) {
        t.row(vec![
            r.backend.label().into(),
            fmt_spread(&r.hello_ms, "ms"),
            fmt_ratio(median_ratio(&r.hello_ms, &base)),
        ]);
    }
    t
}

fn measured(m: &Measurements) -> impl Iterator<Item = &BackendResult> {
    m.backends.iter().filter(|r| r.unavailable.is_none())
}

fn phases_table(m: &Measurements) -> Table {
    let mut t = Table::new(&["backend", "phase", "ms since start", "since previous phase"]);
    for r in measured(m) {
        let mut prev: Option<f64> = None;
        for p in &r.phases {
            let med = stats::median(&p.ms);
            let delta = match (med, prev) {
                (Some(a), Some(b)) => format!("+{} ms", fmt_num(a - b)),
                (Some(a), None) => format!("+{} ms", fmt_num(a)),
                _ => "-".into(),
            };
            t.row(vec![
                r.backend.label().into(),
                p.name.clone(),
                fmt_spread(&p.ms, "ms"),
                delta,
            ]);
            prev = med.or(prev);
        }
    }
    t
}

fn memory_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "backend",
        "PSS of one idle instance",
        "guest RAM touched",
        "the rest (runtime, VMM)",
        "× bare",
    ]);
    let base = bare(m).map(|b| b.pss_kib.clone()).unwrap_or_default();
    for r in measured(m) {
        let own: Vec<f64> = r
            .pss_kib
            .iter()
            .zip(r.guest_touched_kib.iter())
            .map(|(p, g)| p - g)
            .collect();
        t.row(vec![
            if r.backend == Backend::RunmVmm {
                "runm-vmm (200 ms after its first KVM_RUN)".into()
            } else {
                r.backend.label().into()
            },
            fmt_spread(&kib_to_mib(&r.pss_kib), "MiB"),
            if r.backend.is_vm() {
                fmt_spread(&kib_to_mib(&r.guest_touched_kib), "MiB")
            } else {
                "-".into()
            },
            if r.backend.is_vm() {
                fmt_spread(&kib_to_mib(&own), "MiB")
            } else {
                fmt_spread(&kib_to_mib(&r.pss_kib), "MiB")
            },
            fmt_ratio(median_ratio(&r.pss_kib, &base)),
        ]);
    }
    t
}

fn density_table(m: &Measurements) -> Table {
    let mut header = vec!["backend".to_string()];
    for n in &m.sizes.density {
        header.push(format!("{n} at once: total (each)"));
    }
    let mut t = Table {
        header,
        rows: Vec::new(),
    };
    for r in measured(m).filter(|r| !r.density.is_empty()) {
        let mut row = vec![r.backend.label().to_string()];
        for n in &m.sizes.density {
            row.push(match r.density.iter().find(|p| p.instances == *n) {
                Some(p) => format!(
                    "{} MiB ({})",
                    mib(p.total_pss_kib),
                    mib(p.total_pss_kib / *n as f64)
                ),
                None => "-".into(),
            });
        }
        t.rows.push(row);
    }
    t
}

/// The pod shapes side by side: start-up and idle host memory, as
/// multiples of the runc pod's.
fn pods_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "shape",
        "containers / VMs",
        "execution",
        "start-up: first start to both workloads ready",
        "× runc pod",
        "host memory, idle (PSS of all its host processes)",
        "guest RAM touched",
        "× runc pod",
    ]);
    let runc = m.pod(PodShape::RuncPod).filter(|r| r.unavailable.is_none());
    let base =
        |f: fn(&super::model::PodResult) -> &Vec<f64>| runc.map(f).cloned().unwrap_or_default();
    let (base_start, base_pss) = (base(|r| &r.startup_ms), base(|r| &r.pss_kib));
    for r in m.pods.iter().filter(|r| r.unavailable.is_none()) {
        let s = r.shape;
        t.row(vec![
            s.label().into(),
            format!("{} / {}", s.containers(), s.vms()),
            r.execution.clone(),
            fmt_spread(&r.startup_ms, "ms"),
            fmt_ratio(median_ratio(&r.startup_ms, &base_start)),
            fmt_spread(&kib_to_mib(&r.pss_kib), "MiB"),
            if s.vms() > 0 {
                fmt_spread(&kib_to_mib(&r.guest_touched_kib), "MiB")
            } else {
                "-".into()
            },
            fmt_ratio(median_ratio(&r.pss_kib, &base_pss)),
        ]);
    }
    t
}

/// What one VM per pod saves against a VM per container, in words, from
/// the medians (and the density runs' two VMs, measured apart), or `None`
/// when either runm shape is missing.
pub fn pod_saving_text(m: &Measurements) -> Option<String> {
    let med = |s: PodShape, f: fn(&super::model::PodResult) -> &Vec<f64>| {
        m.pod(s)
            .filter(|r| r.unavailable.is_none())
            .and_then(|r| stats::median(f(r)))
    };
    let pod_pss = med(PodShape::RunmPod, |r| &r.pss_kib)?;
    let two_pss = med(PodShape::RunmTwoVms, |r| &r.pss_kib)?;
    let pod_start = med(PodShape::RunmPod, |r| &r.startup_ms)?;
    let two_start = med(PodShape::RunmTwoVms, |r| &r.startup_ms)?;
    let mut text = format!(
        "On this host ({}; {}), the pod's one VM holds {} MiB of host memory against {} MiB for \
         two VMs: {} MiB less (×{}), with a third container (the sandbox) in it. Its start-up \
         takes {} ms against {} ms: the pod's containers wait for the sandbox's VM to boot and \
         then start inside it, while the two VMs boot side by side, sharing the host's CPUs.",
        m.host.kind.label(),
        m.pod(PodShape::RunmPod)
            .map_or("", |r| r.execution.as_str()),
        mib(pod_pss),
        mib(two_pss),
        mib(two_pss - pod_pss),
        fmt_num(pod_pss / two_pss),
        fmt_num(pod_start),
        fmt_num(two_start),
    );
    if let Some(p) = m
        .backend(Backend::RunmQemu)
        .and_then(|r| r.density.iter().find(|p| p.instances == 2))
    {
        text.push_str(&format!(
            " The density runs' two idle runm microVMs at once, measured apart: {} MiB.",
            mib(p.total_pss_kib)
        ));
    }
    Some(text)
}

fn workloads_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "backend",
        "CPU loop",
        "× bare",
        "system calls",
        "× bare",
        "file write+fsync+read",
        "× bare",
    ]);
    let b = bare(m);
    let base = |f: fn(&BackendResult) -> &Vec<f64>| b.map(|b| f(b).clone()).unwrap_or_default();
    let (cb, sb, fb) = (
        base(|r| &r.cpu_ms),
        base(|r| &r.syscall_ms),
        base(|r| &r.fileio_ms),
    );
    for r in measured(m).filter(|r| !r.cpu_ms.is_empty()) {
        t.row(vec![
            r.backend.label().into(),
            fmt_spread(&r.cpu_ms, "ms"),
            fmt_ratio(median_ratio(&r.cpu_ms, &cb)),
            fmt_spread(&r.syscall_ms, "ms"),
            fmt_ratio(median_ratio(&r.syscall_ms, &sb)),
            fmt_spread(&r.fileio_ms, "ms"),
            fmt_ratio(median_ratio(&r.fileio_ms, &fb)),
        ]);
        if !r.fileio_blk_ms.is_empty() {
            t.row(vec![
                format!("{}, root on virtio-blk (ext4 image)", r.backend.label()),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                fmt_spread(&r.fileio_blk_ms, "ms"),
                fmt_ratio(median_ratio(&r.fileio_blk_ms, &fb)),
            ]);
        }
    }
    t
}

fn network_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "backend",
        "execution",
        "TCP round trip",
        "× bare",
        "TCP stream",
        "path to the peer",
    ]);
    let base = m.backend(Backend::Bare);
    let rb = base.map(|r| r.tcp_rtt_us.clone()).unwrap_or_default();
    for (b, text) in &m.network {
        let Some(r) = m.backend(*b) else { continue };
        let measured = !r.tcp_rtt_us.is_empty() || !r.tcp_stream_mib_s.is_empty();
        let path = match (&r.unavailable, measured) {
            (Some(why), _) => format!("not measured: {why}"),
            _ => text.clone(),
        };
        t.row(vec![
            b.label().into(),
            r.execution.clone(),
            fmt_spread(&r.tcp_rtt_us, "µs"),
            fmt_ratio(median_ratio(&r.tcp_rtt_us, &rb)),
            fmt_spread(&r.tcp_stream_mib_s, "MiB/s"),
            path,
        ]);
    }
    t
}

/// What the workload's view of /proc/sysrq-trigger means.
pub fn sysrq_text(f: &IsolationFacts) -> String {
    if !f.sysrq_exists {
        format!(
            "absent: this kernel has no /proc/sysrq-trigger (built without CONFIG_MAGIC_SYSRQ); \
             /proc/sys is mounted `{}`",
            f.proc_sys_mount
        )
    } else if mount_is_readonly(&f.sysrq_mount) {
        format!(
            "present, read-only bind mount `{}`: access(W_OK) → {}",
            f.sysrq_mount, f.sysrq_access
        )
    } else {
        format!(
            "present, on `{}`: access(W_OK) → {}",
            f.sysrq_mount, f.sysrq_access
        )
    }
}

/// What the isolation table says about crashing the kernel.
pub fn crash_text(f: &IsolationFacts) -> String {
    if let Some(c) = &f.crash {
        let neighbour = match c.neighbour_survived {
            Some(true) => "a neighbouring VM started before it kept running",
            Some(false) => "a neighbouring VM started before it did NOT survive",
            None => "no neighbour",
        };
        return format!(
            "done: {}; {} ({}); {}; host boot id {}, host uptime {} → {} s",
            c.action,
            c.instance_result,
            if c.console.is_empty() {
                "no console lines".into()
            } else {
                format!("console: {}", c.console)
            },
            neighbour,
            if c.host_boot_id_unchanged {
                "unchanged"
            } else {
                "CHANGED"
            },
            fmt_num(c.host_uptime_s.0),
            fmt_num(c.host_uptime_s.1)
        );
    }
    match f.backend {
        Backend::Bare => format!(
            "not tried: a bare process's kernel is the host's, so it would crash the host ({})",
            if f.sysrq_access == "writable" {
                "the file is writable by this root process"
            } else {
                "the write would fail here anyway"
            }
        ),
        Backend::Runc => {
            let why = if !f.sysrq_exists {
                "the host kernel has no /proc/sysrq-trigger, so the write fails (ENOENT); where it \
                 exists runc's default config bind-mounts it read-only (readonlyPaths), as it did \
                 /proc/sys here"
                    .to_string()
            } else if mount_is_readonly(&f.sysrq_mount) {
                "read-only bind mount: the write fails with EROFS".into()
            } else {
                format!(
                    "NOT protected by a read-only mount (access: {})",
                    f.sysrq_access
                )
            };
            format!("refused, shown without writing: {why}; if it were allowed it would crash the shared host kernel")
        }
        _ => "not run".into(),
    }
}

fn memory_limit_text(f: &IsolationFacts) -> String {
    match &f.memory_limit {
        Some(ml) => format!(
            "{}: touched {} of {} MiB, {}; {}",
            ml.limit, ml.reached_mib, ml.asked_mib, ml.exit, ml.ended_by
        ),
        None => "not probed".into(),
    }
}

fn isolation_table(m: &Measurements) -> Table {
    let cols: Vec<&IsolationFacts> = m.isolation.iter().collect();
    let mut header = vec!["what the workload sees"];
    for f in &cols {
        header.push(f.backend.label());
    }
    let mut t = Table::new(&header);
    let mut row = |name: &str, cell: &dyn Fn(&IsolationFacts) -> String| {
        let mut r = vec![name.to_string()];
        r.extend(cols.iter().map(|f| cell(f)));
        t.row(r);
    };
    row("kernel release (uname -r)", &|f| {
        format!(
            "{} ({})",
            f.kernel_release,
            if f.same_kernel_as_host {
                "the host's kernel: same boot id"
            } else {
                "its own kernel: another boot id"
            }
        )
    });
    row("PID 1 (/proc/1/comm)", &|f| {
        format!("`{}`; the workload is pid {}", f.pid1_comm, f.own_pid)
    });
    row("processes visible", &|f| {
        if f.same_kernel_as_host && f.processes_seen + 3 >= f.host_processes {
            format!(
                "{} (host: {}): the host's processes",
                f.processes_seen, f.host_processes
            )
        } else if f.same_kernel_as_host {
            format!(
                "{} of the host's {}: own PID namespace",
                f.processes_seen, f.host_processes
            )
        } else {
            format!(
                "{} of its own kernel (kernel threads included); the host's {} are invisible",
                f.processes_seen, f.host_processes
            )
        }
    });
    row("host mounts visible (/proc/mounts)", &|f| {
        format!(
            "{} of the host's {} (it sees {} mounts)",
            f.host_mounts_seen, f.host_mounts, f.mounts_seen
        )
    });
    row("host devices visible (/dev)", &|f| {
        format!(
            "{} entries (host: {}); host block devices: {}",
            f.dev_entries,
            f.host_dev_entries,
            if f.host_block_devices_seen.is_empty() {
                format!("none of {}", f.host_block_devices)
            } else {
                f.host_block_devices_seen.join(", ")
            }
        )
    });
    row("hostname", &|f| f.hostname.clone());
    row("memory and CPUs it sees", &|f| {
        format!("MemTotal {} MiB; CPUs: {}", f.mem_total_kib / 1024, f.cpus)
    });
    row("effective capabilities", &|f| f.cap_eff.clone());
    row("cgroup memory limit it sees", &|f| {
        let t = limit_text(&f.cgroup_memory_limit);
        if f.backend.is_vm() && t != "none" && !t.ends_with("MiB") {
            "none inside the guest: the limit is the VM's RAM".into()
        } else {
            t
        }
    });
    row("memory limit enforced, and how", &memory_limit_text);
    row("/proc/sysrq-trigger", &sysrq_text);
    row("crashing its own kernel", &crash_text);
    t
}

fn facts_of(m: &Measurements, b: Backend) -> Option<&IsolationFacts> {
    m.isolation(b)
}

/// The comparison of the three deployment models, each cell filled with
/// what was measured (`-` where the model was not measured).
pub fn models_table(m: &Measurements) -> Table {
    let mut t = Table::new(&[
        "",
        "traditional (bare process)",
        "virtualized (runm microVM)",
        "container (runc)",
    ]);
    let vm = [Backend::RunmOwnVmm, Backend::RunmQemu]
        .into_iter()
        .find(|b| m.backend(*b).is_some_and(|r| r.unavailable.is_none()))
        .unwrap_or(Backend::RunmQemu);
    let order = [Backend::Bare, vm, Backend::Runc];
    let h = &m.host;
    let na = || "-".to_string();
    let base = bare(m);
    let mut row = |name: &str, cell: &dyn Fn(Backend) -> String| {
        let mut r = vec![name.to_string()];
        r.extend(order.iter().map(|b| cell(*b)));
        t.row(r);
    };
    row("machine", &|b| match b {
        Backend::Bare => format!(
            "this host: {} CPUs ({}), {} GiB",
            h.cpus,
            h.cpu_model,
            fmt_num(h.mem_total_kib as f64 / 1048576.0)
        ),
        Backend::Runc => facts_of(m, b).map_or_else(na, |f| {
            format!(
                "the same host: it sees {} CPUs and MemTotal {} MiB (the host's)",
                f.cpus,
                f.mem_total_kib / 1024
            )
        }),
        _ => facts_of(m, b).map_or_else(na, |f| {
            format!(
                "a VM of its own: it sees CPUs: {}, MemTotal {} MiB (the probe's bundle asks for \
                 32 MiB: runm gives it its smallest VM, 128 MiB; the other runs use {} MiB); {}",
                f.cpus,
                f.mem_total_kib / 1024,
                m.sizes.vm_mem_mib,
                m.backend(b).map_or(String::new(), |r| r.execution.clone())
            )
        }),
    });
    row("operating system", &|b| {
        facts_of(m, b).map_or_else(na, |f| match b {
            Backend::Bare => format!("host kernel {}; PID 1 `{}`", f.kernel_release, f.pid1_comm),
            Backend::Runc => format!(
                "host kernel {} shared (same boot id); PID 1 is the workload itself (`{}`)",
                f.kernel_release, f.pid1_comm
            ),
            _ => format!(
                "own guest kernel {} (another boot id); PID 1 `{}` (runm's agent)",
                f.kernel_release, f.pid1_comm
            ),
        })
    });
    row("resources", &|b| {
        facts_of(m, b).map_or_else(na, |f| {
            f.memory_limit.as_ref().map_or_else(na, |ml| {
                format!(
                    "{}; {} of {} MiB touched, {}",
                    ml.limit, ml.reached_mib, ml.asked_mib, ml.ended_by
                )
            })
        })
    });
    row("isolation", &|b| {
        facts_of(m, b).map_or_else(na, |f| {
            format!(
                "{} processes visible (host {}), {} of {} host mounts, host block devices: {}",
                f.processes_seen,
                f.host_processes,
                f.host_mounts_seen,
                f.host_mounts,
                if f.host_block_devices_seen.is_empty() {
                    "none".into()
                } else {
                    f.host_block_devices_seen.join(", ")
                }
            )
        })
    });
    row("failure propagation", &|b| {
        facts_of(m, b).map_or_else(na, crash_text)
    });
    row("cost", &|b| {
        m.backend(b)
            .filter(|r| r.unavailable.is_none())
            .map_or_else(na, |r| {
                let ratio = |v: &Vec<f64>, f: fn(&BackendResult) -> &Vec<f64>| {
                    if b == Backend::Bare {
                        String::new()
                    } else {
                        format!(" ({})", fmt_ratio(base.and_then(|bb| median_ratio(v, f(bb)))))
                    }
                };
                format!(
                    "hello-world {} ms{}; idle PSS {} MiB{}; CPU loop {} ms{}; system calls {} ms{}",
                    stats::median(&r.hello_ms).map_or("-".into(), fmt_num),
                    ratio(&r.hello_ms, |x| &x.hello_ms),
                    stats::median(&r.pss_kib).map_or("-".into(), |v| fmt_num(v / 1024.0)),
                    ratio(&r.pss_kib, |x| &x.pss_kib),
                    stats::median(&r.cpu_ms).map_or("-".into(), fmt_num),
                    ratio(&r.cpu_ms, |x| &x.cpu_ms),
                    stats::median(&r.syscall_ms).map_or("-".into(), fmt_num),
                    ratio(&r.syscall_ms, |x| &x.syscall_ms),
                )
            })
    });
    t
}

fn missing(m: &Measurements) -> Vec<String> {
    let mut v = Vec::new();
    for r in &m.backends {
        if let Some(why) = &r.unavailable {
            v.push(format!("{}: not measured: {why}", r.backend.label()));
        }
        for n in &r.notes {
            v.push(format!("{}: {n}", r.backend.label()));
        }
    }
    for r in &m.pods {
        if let Some(why) = &r.unavailable {
            v.push(format!("{}: not measured: {why}", r.shape.label()));
        }
        for n in &r.notes {
            v.push(format!("{}: {n}", r.shape.label()));
        }
    }
    v.push(
        "phases inside runm's guest: runm boots its guest with `quiet`, so the console has no \
         `Run /init` line; the agent's first console line marks /init instead, and kernel entry \
         is estimated from the one timestamped line left (the reset)"
            .into(),
    );
    v.extend(m.notes.iter().cloned());
    v
}

/// The report as blocks, with the SVG files its figures are.
pub struct Document {
    /// The blocks, in order.
    pub blocks: Vec<Block>,
    /// The figures' files: (name, SVG text).
    pub svgs: Vec<(String, String)>,
}

/// The whole document.
pub fn document(m: &Measurements) -> Result<Document> {
    let cap = caption(m);
    let mut b = vec![Block::Heading(1, TITLE.into())];
    if let Some(w) = emulation_warning(m) {
        b.push(Block::Warning(w));
    }
    b.push(Block::Para(
        "The same busybox bundle and the same static benchmark program run as a bare host \
         process (traditional deployment), in a runc container (container deployment) and in a \
         runm microVM (virtualized deployment); QEMU's microvm machine booting the same guest \
         kernel directly is the peer VMM. Generated by `runm-bench report`."
            .into(),
    ));
    b.push(Block::Heading(2, "Host".into()));
    b.push(Block::Table(host_table(m), String::new()));
    b.push(Block::Heading(2, "Backends".into()));
    b.push(Block::Table(backends_table(m), cap.clone()));
    b.push(Block::Heading(
        2,
        "The three deployment models, measured".into(),
    ));
    b.push(Block::Table(models_table(m), cap.clone()));

    let mut svgs: Vec<(String, String)> = Vec::new();
    let mut figure = |b: &mut Vec<Block>, name: &str, svg: String, text: String| {
        b.push(Block::Figure(name.into(), svg.clone(), text));
        svgs.push((name.into(), svg));
    };
    b.push(Block::Heading(2, "Start-to-exit latency".into()));
    b.push(Block::Table(latency_table(m), cap.clone()));
    figure(
        &mut b,
        "latency.svg",
        plots::latency(m)?,
        format!("hello-world latency; {}", m.host.banner()),
    );
    b.push(Block::Heading(2, "Start-up phases".into()));
    b.push(Block::Para(
        "Milliseconds from the moment the harness started the command. VMM started: QEMU \
         created the console file; first KVM_RUN and the other runm-vmm phases: its \
         `--print-phases` marks; kernel entry: estimated from console timestamps; /init: \
         `Run /init` on the console (runm: the agent's first line); workload start: the \
         workload's first line reached the harness; exit: the command exited."
            .into(),
    ));
    b.push(Block::Table(phases_table(m), cap.clone()));
    for backend in TIMELINES {
        if let Some(svg) = plots::timeline(m, backend) {
            let name = format!("timeline-{}.svg", backend.short());
            let note = if backend == Backend::RunmVmm && m.host.kind == HostKind::Pvm {
                " (PVM-emulated boot: not a performance figure)"
            } else {
                ""
            };
            figure(
                &mut b,
                &name,
                svg?,
                format!(
                    "start-up timeline of {}{note}; {}",
                    backend.label(),
                    m.host.banner()
                ),
            );
        }
    }
    b.push(Block::Heading(2, "Host memory per instance".into()));
    b.push(Block::Para(
        "PSS (proportional set size, /proc/PID/smaps_rollup) summed over every host process of \
         one instance running an idle `sleep` workload: the process itself; `runc run` and the \
         container; `runm run`, runm's sandbox and QEMU (whose PSS includes the guest RAM it \
         touched). Guest RAM touched: the RSS of the VMM's guest-memory mapping. Under \
         software emulation the rest of QEMU's share includes its cache of translated guest \
         code, which a KVM-backed VMM does not have."
            .into(),
    ));
    b.push(Block::Table(memory_table(m), cap.clone()));
    figure(
        &mut b,
        "memory.svg",
        plots::memory(m)?,
        format!("memory per idle instance; {}", m.host.banner()),
    );
    b.push(Block::Heading(3, "Density".into()));
    b.push(Block::Table(density_table(m), cap.clone()));
    figure(
        &mut b,
        "density.svg",
        plots::density(m)?,
        format!("N idle instances at once; {}", m.host.banner()),
    );
    b.push(Block::Heading(
        3,
        "Pods: one VM for several containers".into(),
    ));
    b.push(Block::Para(POD_TEXT.into()));
    b.push(Block::Table(pods_table(m), cap.clone()));
    if let Some(t) = pod_saving_text(m) {
        b.push(Block::Para(t));
    }
    b.push(Block::Heading(2, "Workloads".into()));
    b.push(Block::Para(
        "Times measured inside the workload (its own clock), so start-up is not in them. The \
         file I/O writes to /tmp of the root file system: the bundle directory on the host's \
         disk for the process and runc; for runm the same directory shared over virtio-fs (its \
         default: every write and fsync crosses to virtiofsd on the host), and in a row of its \
         own a copy of it in an ext4 image on virtio-blk (io.runm.rootfs=image: the guest's \
         own page cache and file system, the host sees block writes); the read comes from the \
         page cache."
            .into(),
    ));
    b.push(Block::Table(workloads_table(m), cap.clone()));
    figure(
        &mut b,
        "workloads.svg",
        plots::workloads(m)?,
        format!("workloads relative to bare; {}", m.host.banner()),
    );
    b.push(Block::Heading(2, "Network".into()));
    b.push(Block::Para(format!(
        "TCP between the workload and a peer network namespace the report makes (a veth pair \
         with addresses that exist only there, the workload's side prepared as CNI would): the \
         mean of {} one-byte round trips (Nagle off) per run, and {} MiB streamed per run, \
         timed by the workload until the peer acknowledged the last byte. Figures of a backend \
         under software emulation show what emulation costs, not what the design costs.",
        m.sizes.net_rounds, m.sizes.net_mib
    )));
    b.push(Block::Table(network_table(m), cap.clone()));
    b.push(Block::Heading(2, "Isolation probes".into()));
    b.push(Block::Para(
        "Each answer comes from the workload program reading /proc, /dev, mountinfo and \
         access(2) inside its model, compared with the host's own view read at the same time. \
         Nothing is written on the host or in the container: the only write, `c` to \
         /proc/sysrq-trigger, happens inside a microVM's guest, and the program refuses it when \
         its kernel's boot id is the host's."
            .into(),
    ));
    b.push(Block::Table(isolation_table(m), cap.clone()));
    b.push(Block::Heading(2, "Not measured, and notes".into()));
    b.push(Block::List(missing(m)));
    Ok(Document { blocks: b, svgs })
}

/// Writes the report into `out` and returns the Markdown file's path.
pub fn write(m: &Measurements, out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out).map_err(ReportError::io(out))?;
    let Document { blocks, svgs } = document(m)?;
    for (name, svg) in &svgs {
        let p = out.join(name);
        fs::write(&p, svg).map_err(ReportError::io(&p))?;
    }
    let md = out.join("report.md");
    fs::write(&md, doc::markdown(&blocks)).map_err(ReportError::io(&md))?;
    let html = out.join("report.html");
    fs::write(&html, doc::html(TITLE, &blocks)).map_err(ReportError::io(&html))?;
    let json = out.join("measurements.json");
    let text = serde_json::to_string_pretty(m).unwrap_or_default();
    fs::write(&json, text).map_err(ReportError::io(&json))?;
    Ok(md)
}

/// The key tables as Markdown, for the console.
pub fn key_tables(m: &Measurements) -> String {
    let cap = caption(m);
    let mut blocks = Vec::new();
    if let Some(w) = emulation_warning(m) {
        blocks.push(Block::Warning(w));
    }
    blocks.extend([
        Block::Table(latency_table(m), cap.clone()),
        Block::Table(phases_table(m), cap.clone()),
        Block::Table(memory_table(m), cap.clone()),
        Block::Table(density_table(m), cap.clone()),
        Block::Table(pods_table(m), cap.clone()),
        Block::Table(workloads_table(m), cap.clone()),
        Block::Table(isolation_table(m), cap.clone()),
        Block::Table(models_table(m), cap),
    ]);
    doc::markdown(&blocks)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::report::model::*;

    fn phase(name: &str, ms: &[f64]) -> Phase {
        Phase {
            name: name.into(),
            ms: ms.to_vec(),
        }
    }

    /// A fixed set of measurements: a PVM host, three runs.
    pub fn fixture() -> Measurements {
        let host = HostInfo {
            kind: HostKind::Pvm,
            cpu_model: "AMD EPYC 7B13".into(),
            cpus: 2,
            mem_total_kib: 24 * 1024 * 1024,
            kernel: "6.18.44-host".into(),
            runc: "1.1.5+ds1".into(),
            qemu: "7.2.22".into(),
            vm_execution: "software emulation (QEMU TCG); runm-vmm figures PVM-emulated".into(),
            load_start: "0.50 0.40 0.30".into(),
            load_end: "1.50 0.90 0.50".into(),
            date: "2026-11-22 00:00 UTC".into(),
        };
        let mut bare = BackendResult::new(Backend::Bare, "host process on the host kernel");
        bare.hello_ms = vec![1.0, 1.2, 0.8];
        bare.phases = vec![
            phase("workload start", &[0.6, 0.7, 0.5]),
            phase("exit", &[1.0, 1.2, 0.8]),
        ];
        bare.pss_kib = vec![512.0, 512.0, 512.0];
        bare.cpu_ms = vec![100.0, 110.0, 90.0];
        bare.syscall_ms = vec![50.0, 50.0, 50.0];
        bare.fileio_ms = vec![20.0, 25.0, 15.0];
        bare.tcp_rtt_us = vec![20.0, 22.0, 18.0];
        bare.tcp_stream_mib_s = vec![2000.0, 2100.0, 1900.0];
        bare.density = vec![DensityPoint {
            instances: 1,
            total_pss_kib: 512.0,
            guest_touched_kib: 0.0,
        }];
        let mut runc =
            BackendResult::new(Backend::Runc, "namespaces and cgroups on the host kernel");
        runc.hello_ms = vec![50.0, 55.0, 45.0];
        runc.pss_kib = vec![10240.0, 10240.0, 10240.0];
        runc.cpu_ms = vec![100.0, 100.0, 100.0];
        runc.syscall_ms = vec![55.0, 55.0, 55.0];
        runc.fileio_ms = vec![20.0, 20.0, 20.0];
        let mut runm = BackendResult::new(Backend::RunmQemu, "QEMU TCG: software emulation");
        runm.hello_ms = vec![3000.0, 3100.0, 2900.0];
        runm.phases = vec![
            phase("VMM started", &[100.0, 110.0, 90.0]),
            phase("kernel entry (est.)", &[400.0, 400.0, 400.0]),
            phase("/init", &[1500.0, 1500.0, 1500.0]),
            phase("workload start", &[2000.0, 2000.0, 2000.0]),
            phase("exit", &[3000.0, 3100.0, 2900.0]),
        ];
        runm.pss_kib = vec![131072.0, 131072.0, 131072.0];
        runm.guest_touched_kib = vec![102400.0, 102400.0, 102400.0];
        runm.cpu_ms = vec![1000.0, 1000.0, 1000.0];
        runm.syscall_ms = vec![1000.0, 1000.0, 1000.0];
        runm.fileio_ms = vec![400.0, 400.0, 400.0];
        runm.fileio_blk_ms = vec![100.0, 100.0, 100.0];
        runm.tcp_rtt_us = vec![400.0, 400.0, 400.0];
        runm.tcp_stream_mib_s = vec![30.0, 30.0, 30.0];
        runm.density = vec![
            DensityPoint {
                instances: 1,
                total_pss_kib: 131072.0,
                guest_touched_kib: 102400.0,
            },
            DensityPoint {
                instances: 2,
                total_pss_kib: 262144.0,
                guest_touched_kib: 204800.0,
            },
        ];
        let mut own = BackendResult::new(Backend::RunmOwnVmm, "runm-vmm on KVM");
        own.unavailable = Some("not usable for user space on this PVM KVM host".into());
        let mut vmm = BackendResult::new(
            Backend::RunmVmm,
            "runm-vmm on PVM KVM: guest boot PVM-emulated",
        );
        vmm.phases = vec![
            phase("KVM opened", &[2.0, 2.0, 2.0]),
            phase("first KVM_RUN", &[20.0, 21.0, 19.0]),
        ];
        vmm.pss_kib = vec![30720.0, 30720.0, 30720.0];
        vmm.guest_touched_kib = vec![25600.0, 25600.0, 25600.0];
        let facts = |b: Backend, kernel: &str, same: bool, pid1: &str| IsolationFacts {
            backend: b,
            kernel_release: kernel.into(),
            same_kernel_as_host: same,
            pid1_comm: pid1.into(),
            own_pid: "1".into(),
            processes_seen: 1,
            host_processes: 80,
            mounts_seen: 7,
            host_mounts_seen: 1,
            host_mounts: 30,
            dev_entries: 14,
            host_dev_entries: 150,
            host_block_devices_seen: vec![],
            host_block_devices: 1,
            hostname: "runm-bench".into(),
            mem_total_kib: 24 * 1024 * 1024,
            cpus: "2".into(),
            cap_eff: "00000000a80425fb".into(),
            cgroup_memory_limit: "33554432".into(),
            netdevs: vec!["lo".into()],
            sysrq_exists: false,
            sysrq_mount: "/proc rw,relatime".into(),
            sysrq_access: "ENOENT (no such file)".into(),
            proc_sys_mount: "/proc/sys ro,relatime".into(),
            memory_limit: None,
            crash: None,
        };
        let mut f_bare = facts(Backend::Bare, "6.18.44-host", true, "systemd");
        f_bare.processes_seen = 80;
        f_bare.host_mounts_seen = 30;
        f_bare.memory_limit = Some(MemoryLimitOutcome {
            limit: "none".into(),
            asked_mib: 64,
            reached_mib: 64,
            exit: "exit 0".into(),
            ended_by: "not ended: every MiB was touched".into(),
        });
        let mut f_runc = facts(Backend::Runc, "6.18.44-host", true, "runm-bench-work");
        f_runc.memory_limit = Some(MemoryLimitOutcome {
            limit: "bundle limit 32 MiB → cgroup memory limit".into(),
            asked_mib: 256,
            reached_mib: 30,
            exit: "exit 137 (SIGKILL)".into(),
            ended_by: "ended by the host kernel's OOM killer".into(),
        });
        let mut f_runm = facts(Backend::RunmQemu, "6.12.117", false, "init");
        f_runm.sysrq_exists = true;
        f_runm.sysrq_access = "writable".into();
        f_runm.host_mounts_seen = 0;
        f_runm.crash = Some(CrashOutcome {
            action: "`c` written to /proc/sysrq-trigger inside the guest".into(),
            instance_result: "the VM ended (exit 1)".into(),
            console: "sysrq: Trigger a crash / Kernel panic - not syncing: sysrq triggered crash"
                .into(),
            neighbour_survived: Some(true),
            host_boot_id_unchanged: true,
            host_uptime_s: (1000.0, 1010.0),
        });
        Measurements {
            host,
            runs: 3,
            sizes: WorkloadSizes {
                cpu_iterations: 50_000_000,
                syscalls: 200_000,
                io_mib: 16,
                vm_mem_mib: 256,
                density: vec![1, 2],
                net_rounds: 1000,
                net_mib: 16,
            },
            backends: vec![bare, runc, runm, own, vmm],
            isolation: vec![f_bare, f_runc, f_runm],
            pods: pods_fixture(),
            network: vec![
                (Backend::Bare, "veth".into()),
                (Backend::RunmQemu, "tap and mirred".into()),
            ],
            notes: vec![],
        }
    }

    /// The three pod shapes: the runc pod, the runm pod measured, the two
    /// VMs with one failed run, one shape not measured.
    fn pods_fixture() -> Vec<PodResult> {
        let mut runc = PodResult::new(
            PodShape::RuncPod,
            "namespaces and cgroups on the host kernel",
        );
        runc.startup_ms = vec![100.0, 120.0, 80.0];
        runc.pss_kib = vec![30720.0, 30720.0, 30720.0];
        let mut pod = PodResult::new(PodShape::RunmPod, "QEMU TCG: software emulation");
        pod.startup_ms = vec![6000.0, 6500.0, 5500.0];
        pod.pss_kib = vec![184320.0, 184320.0, 184320.0];
        pod.guest_touched_kib = vec![122880.0, 122880.0, 122880.0];
        let mut two = PodResult::new(PodShape::RunmTwoVms, "QEMU TCG: software emulation");
        two.startup_ms = vec![5000.0, 5000.0];
        two.pss_kib = vec![266240.0, 266240.0];
        two.guest_touched_kib = vec![204800.0, 204800.0];
        two.notes = vec!["run 3: timed out".into()];
        vec![runc, pod, two]
    }

    #[test]
    fn pods_table_snapshot() {
        let m = fixture();
        let md = doc::markdown(&[Block::Table(pods_table(&m), String::new())]);
        assert_eq!(
            md,
            "| shape | containers / VMs | execution | start-up: first start to both workloads ready | × runc pod | host memory, idle (PSS of all its host processes) | guest RAM touched | × runc pod |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | runc pod (sandbox + 2 containers) | 3 / 0 | namespaces and cgroups on the host kernel | 100 ms (80.0-120) | ×1.00 | 30.0 MiB | - | ×1.00 |\n\
             | runm pod, one VM (sandbox + 2 containers) | 3 / 1 | QEMU TCG: software emulation | 6000 ms (5500-6500) | ×60.0 | 180 MiB | 120 MiB | ×6.00 |\n\
             | runm, 2 containers in 2 VMs (no pod) | 2 / 2 | QEMU TCG: software emulation | 5000 ms | ×50.0 | 260 MiB | 200 MiB | ×8.67 |\n\n"
        );
        // A shape that was not measured has no row, but is listed with why.
        let mut m = fixture();
        m.pods[0].unavailable = Some("runc not found".into());
        let md = doc::markdown(&[Block::Table(pods_table(&m), String::new())]);
        assert!(!md.contains("runc pod (sandbox"), "{md}");
        assert!(md.contains("| runm pod, one VM (sandbox + 2 containers) | 3 / 1 | QEMU TCG: software emulation | 6000 ms (5500-6500) | - |"), "{md}");
        let notes = missing(&m);
        assert!(
            notes.contains(
                &"runc pod (sandbox + 2 containers): not measured: runc not found".to_string()
            ),
            "{notes:?}"
        );
        assert!(
            notes.contains(&"runm, 2 containers in 2 VMs (no pod): run 3: timed out".to_string()),
            "{notes:?}"
        );
    }

    #[test]
    fn pod_saving_names_host_and_density() {
        let m = fixture();
        let t = pod_saving_text(&m).unwrap();
        assert!(
            t.starts_with("On this host (PVM KVM; QEMU TCG: software emulation)"),
            "{t}"
        );
        assert!(
            t.contains(
                "holds 180 MiB of host memory against 260 MiB for two VMs: 80.0 MiB less (×0.692)"
            ),
            "{t}"
        );
        assert!(t.contains("takes 6000 ms against 5000 ms"), "{t}");
        assert!(
            t.ends_with("two idle runm microVMs at once, measured apart: 256 MiB."),
            "{t}"
        );
        let mut m = fixture();
        m.pods[2].unavailable = Some("not asked for".into());
        assert_eq!(pod_saving_text(&m), None, "nothing to compare with");
        let Document { blocks, .. } = document(&fixture()).unwrap();
        let md = doc::markdown(&blocks);
        assert!(md.contains("### Pods: one VM for several containers"));
        assert!(
            md.contains("the pod shares the host kernel")
                || md.contains("With runc the pod shares the host kernel")
        );
        assert!(md.contains("80.0 MiB less"));
    }

    #[test]
    fn measurements_without_pods_still_load() {
        let mut v = serde_json::to_value(fixture()).unwrap();
        v.as_object_mut().unwrap().remove("pods");
        let m: Measurements = serde_json::from_value(v).unwrap();
        assert!(m.pods.is_empty());
        assert!(document(&m).is_ok());
        assert_eq!(pod_saving_text(&m), None);
    }

    #[test]
    fn network_table_snapshot() {
        let md = doc::markdown(&[Block::Table(network_table(&fixture()), String::new())]);
        assert_eq!(
            md,
            "| backend | execution | TCP round trip | × bare | TCP stream | path to the peer |\n\
             | --- | --- | --- | --- | --- | --- |\n\
             | bare process | host process on the host kernel | 20.0 µs (18.0-22.0) | ×1.00 | 2000 MiB/s (1900-2100) | veth |\n\
             | runm microVM (QEMU) | QEMU TCG: software emulation | 400 µs | ×20.0 | 30.0 MiB/s | tap and mirred |\n\n"
        );
    }

    #[test]
    fn latency_table_snapshot() {
        let md = doc::markdown(&[Block::Table(latency_table(&fixture()), String::new())]);
        assert_eq!(
            md,
            "| backend | hello-world start to exit | × bare |\n\
             | --- | --- | --- |\n\
             | bare process | 1.00 ms (0.800-1.20) | ×1.00 |\n\
             | runc container | 50.0 ms (45.0-55.0) | ×50.0 |\n\
             | runm microVM (QEMU) | 3000 ms (2900-3100) | ×3000 |\n\n"
        );
    }

    #[test]
    fn memory_and_density_tables_snapshot() {
        let m = fixture();
        let md = doc::markdown(&[Block::Table(memory_table(&m), String::new())]);
        assert!(
            md.contains("| bare process | 0.500 MiB | - | 0.500 MiB | ×1.00 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| runm microVM (QEMU) | 128 MiB | 100 MiB | 28.0 MiB | ×256 |\n"),
            "{md}"
        );
        assert!(md.contains("| runm-vmm (200 ms after its first KVM_RUN) | 30.0 MiB | 25.0 MiB | 5.00 MiB | ×60.0 |\n"), "{md}");
        let md = doc::markdown(&[Block::Table(density_table(&m), String::new())]);
        assert!(md.starts_with("| backend | 1 at once: total (each) | 2 at once: total (each) |\n"));
        assert!(
            md.contains("| runm microVM (QEMU) | 128 MiB (128) | 256 MiB (128) |\n"),
            "{md}"
        );
        assert!(
            md.contains("| bare process | 0.500 MiB (0.500) | - |\n"),
            "{md}"
        );
    }

    #[test]
    fn workloads_and_phases_tables_snapshot() {
        let m = fixture();
        let md = doc::markdown(&[Block::Table(workloads_table(&m), String::new())]);
        assert!(
            md.contains(
                "| runm microVM (QEMU) | 1000 ms | ×10.0 | 1000 ms | ×20.0 | 400 ms | ×20.0 |\n"
            ),
            "{md}"
        );
        // The root over virtio-fs (the row above) and on virtio-blk.
        assert!(
            md.contains(
                "| runm microVM (QEMU), root on virtio-blk (ext4 image) |  |  |  |  | 100 ms | ×5.00 |\n"
            ),
            "{md}"
        );
        let md = doc::markdown(&[Block::Table(phases_table(&m), String::new())]);
        assert!(
            md.contains("| runm microVM (QEMU) | /init | 1500 ms | +1100 ms |\n"),
            "{md}"
        );
        assert!(
            md.contains("| runm-vmm | first KVM_RUN | 20.0 ms (19.0-21.0) | +18.0 ms |\n"),
            "{md}"
        );
    }

    #[test]
    fn isolation_table_tells_the_models_apart() {
        let md = doc::markdown(&[Block::Table(isolation_table(&fixture()), String::new())]);
        assert!(md.starts_with(
            "| what the workload sees | bare process | runc container | runm microVM (QEMU) |\n"
        ));
        assert!(md.contains(
            "| kernel release (uname -r) | 6.18.44-host (the host's kernel: same boot id) | \
             6.18.44-host (the host's kernel: same boot id) | 6.12.117 (its own kernel: another boot id) |"
        ), "{md}");
        assert!(md.contains("80 (host: 80): the host's processes"));
        assert!(md.contains("1 of the host's 80: own PID namespace"));
        assert!(md.contains(
            "refused, shown without writing: the host kernel has no /proc/sysrq-trigger"
        ));
        assert!(
            md.contains("a neighbouring VM started before it kept running; host boot id unchanged")
        );
        assert!(md.contains(
            "touched 30 of 256 MiB, exit 137 (SIGKILL); ended by the host kernel's OOM killer"
        ));
        assert!(md.contains("not tried: a bare process's kernel is the host's"));
    }

    #[test]
    fn models_table_is_filled_from_measurements() {
        let md = doc::markdown(&[Block::Table(models_table(&fixture()), String::new())]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "|  | traditional (bare process) | virtualized (runm microVM) | container (runc) |"
        );
        let rows: Vec<&str> = lines[2..8]
            .iter()
            .map(|l| l.split(" | ").next().unwrap().trim_start_matches("| "))
            .collect();
        assert_eq!(
            rows,
            vec![
                "machine",
                "operating system",
                "resources",
                "isolation",
                "failure propagation",
                "cost"
            ]
        );
        assert!(md.contains("own guest kernel 6.12.117 (another boot id); PID 1 `init`"));
        assert!(md.contains("hello-world 3000 ms (×3000); idle PSS 128 MiB (×256)"));
        assert!(md.contains("host kernel 6.18.44-host shared (same boot id)"));
    }

    #[test]
    fn the_report_warns_and_names_the_host_everywhere() {
        let m = fixture();
        let Document { blocks, svgs } = document(&m).unwrap();
        let md = doc::markdown(&blocks);
        assert!(md.contains(
            "> **Host kind: PVM KVM. Every VM figure in this report comes from software emulation"
        ));
        // Every table has a caption naming the host, CPU, kernel, runc and QEMU.
        for b in &blocks {
            if let Block::Table(_, cap) = b {
                if !cap.is_empty() {
                    assert!(cap.contains("PVM KVM") && cap.contains("AMD EPYC 7B13"));
                    assert!(cap.contains("runc 1.1.5+ds1") && cap.contains("QEMU 7.2.22"));
                }
            }
        }
        let names: Vec<&str> = svgs.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"timeline-runm-qemu.svg"));
        assert!(names.contains(&"timeline-runm-vmm.svg"));
        assert!(names.contains(&"latency.svg") && names.contains(&"density.svg"));
        assert!(md.contains("PVM-emulated boot: not a performance figure"));
        assert!(md.contains("runm microVM (runm-vmm): not measured: not usable for user space"));
        let html = doc::html(TITLE, &blocks);
        assert!(html.contains("<svg") && html.contains("class=\"warn\""));
    }

    #[test]
    fn report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let md = write(&fixture(), dir.path()).unwrap();
        assert!(md.ends_with("report.md"));
        for f in [
            "report.html",
            "measurements.json",
            "latency.svg",
            "memory.svg",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let json: Measurements = serde_json::from_str(
            &fs::read_to_string(dir.path().join("measurements.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json, fixture());
    }
}
