//! What the report measured: plain data, filled by [`super::measure`], drawn
//! by [`super::render`] and [`super::plots`], and saved as JSON beside the
//! report so a report can be checked against its raw numbers.

use serde::{Deserialize, Serialize};

/// The kind of KVM of the host: figures from different kinds are never
/// comparable, so every table and plot names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostKind {
    /// `kvm_pvm`: a VM without hardware nesting; guest user space cannot run
    /// under it, so VMs here run under software emulation.
    Pvm,
    /// `kvm_intel` or `kvm_amd`: hardware virtualization.
    RealKvm,
    /// No usable `/dev/kvm`: VMs only under software emulation.
    NoKvm,
}

impl HostKind {
    /// The short name used in captions.
    pub fn label(self) -> &'static str {
        match self {
            HostKind::Pvm => "PVM KVM",
            HostKind::RealKvm => "real KVM",
            HostKind::NoKvm => "no KVM (software emulation only)",
        }
    }
}

/// The host the figures come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Its kind of KVM.
    pub kind: HostKind,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// MemTotal in KiB.
    pub mem_total_kib: u64,
    /// Host kernel release.
    pub kernel: String,
    /// `runc --version`'s version, or why there is none.
    pub runc: String,
    /// `qemu-system-x86_64 --version`'s version, or why there is none.
    pub qemu: String,
    /// How VMs run here, for people: "software emulation (QEMU TCG)" etc.
    pub vm_execution: String,
    /// Load average when the measurements began and ended (other work on a
    /// shared host shows here).
    pub load_start: String,
    /// Load average at the end.
    pub load_end: String,
    /// When the report was made (UTC).
    pub date: String,
}

impl HostInfo {
    /// One line naming everything a figure needs to be told apart from
    /// figures of other hosts.
    pub fn banner(&self) -> String {
        format!(
            "host: {} · CPU: {} ({} CPUs) · host kernel {} · runc {} · QEMU {} · VMs: {}",
            self.kind.label(),
            self.cpu_model,
            self.cpus,
            self.kernel,
            self.runc,
            self.qemu,
            self.vm_execution
        )
    }
}

/// The three deployment models of DEPLOYMENT-MODELS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deployment {
    /// One OS, many apps: a bare host process.
    Traditional,
    /// Shared kernel: a runc container.
    Container,
    /// A VM per app: runm's microVM.
    Virtualized,
}

/// One way of running the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Backend {
    /// The workload as a plain host process.
    Bare,
    /// Debian's runc, `runc run`.
    Runc,
    /// runm with `--hypervisor qemu`.
    RunmQemu,
    /// runm with `--hypervisor runm-vmm` (real KVM only: on PVM guest user
    /// space cannot run).
    RunmOwnVmm,
    /// QEMU's microvm machine booting the guest kernel with a trivial init:
    /// the peer VMM, without runm's runtime around it.
    QemuDirect,
    /// runm-vmm by itself booting the guest kernel: its host-side start-up
    /// (`--print-phases`) and, on a PVM host, a boot to `Run /init`
    /// (PVM-emulated).
    RunmVmm,
}

impl Backend {
    /// Every backend, in the order of the report's tables.
    pub const ALL: [Backend; 6] = [
        Backend::Bare,
        Backend::Runc,
        Backend::RunmQemu,
        Backend::RunmOwnVmm,
        Backend::QemuDirect,
        Backend::RunmVmm,
    ];

    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Bare => "bare process",
            Backend::Runc => "runc container",
            Backend::RunmQemu => "runm microVM (QEMU)",
            Backend::RunmOwnVmm => "runm microVM (runm-vmm)",
            Backend::QemuDirect => "QEMU microvm direct",
            Backend::RunmVmm => "runm-vmm",
        }
    }

    /// A short name for file names and plot labels.
    pub fn short(self) -> &'static str {
        match self {
            Backend::Bare => "bare",
            Backend::Runc => "runc",
            Backend::RunmQemu => "runm-qemu",
            Backend::RunmOwnVmm => "runm-own-vmm",
            Backend::QemuDirect => "qemu-direct",
            Backend::RunmVmm => "runm-vmm",
        }
    }

    /// Which deployment model it stands for.
    pub fn deployment(self) -> Deployment {
        match self {
            Backend::Bare => Deployment::Traditional,
            Backend::Runc => Deployment::Container,
            Backend::RunmQemu | Backend::RunmOwnVmm | Backend::QemuDirect | Backend::RunmVmm => {
                Deployment::Virtualized
            }
        }
    }

    /// Whether it runs a guest kernel.
    pub fn is_vm(self) -> bool {
        self.deployment() == Deployment::Virtualized
    }
}

/// One boot or start-up phase over the runs: milliseconds from the start of
/// the command (spawn) to the phase, one value per run (NaN where a run did
/// not show it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// The phase's name (see [`super::marks`]'s `PHASE_*`).
    pub name: String,
    /// Milliseconds since spawn, per run.
    pub ms: Vec<f64>,
}

/// Memory of N idle instances run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityPoint {
    /// How many instances.
    pub instances: usize,
    /// The summed PSS of all their host processes, KiB.
    pub total_pss_kib: f64,
    /// The summed guest RAM the VMM processes have touched, KiB (0 for
    /// processes and containers).
    pub guest_touched_kib: f64,
}

/// Everything measured for one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendResult {
    /// Which backend.
    pub backend: Backend,
    /// How its code runs here ("host CPU", "software emulation (TCG)", ...).
    pub execution: String,
    /// Why it was not measured, when it was not.
    pub unavailable: Option<String>,
    /// Start-to-exit latency of the hello-world workload, ms per run.
    pub hello_ms: Vec<f64>,
    /// The phases of the hello-world runs (for runm-vmm: of its own runs).
    pub phases: Vec<Phase>,
    /// PSS of one idle instance's host processes, KiB per run.
    pub pss_kib: Vec<f64>,
    /// Guest RAM touched by one idle instance, KiB per run (VMs only).
    pub guest_touched_kib: Vec<f64>,
    /// The CPU-bound loop, ms per run.
    pub cpu_ms: Vec<f64>,
    /// The system-call loop, ms per run.
    pub syscall_ms: Vec<f64>,
    /// The file write+fsync+read, ms per run (runm: in its root directory
    /// over virtio-fs).
    pub fileio_ms: Vec<f64>,
    /// runm only: the same with the root on virtio-blk (an ext4 image).
    #[serde(default)]
    pub fileio_blk_ms: Vec<f64>,
    /// Memory of N idle instances at once.
    pub density: Vec<DensityPoint>,
    /// TCP round trip to the peer namespace, µs per run (the mean of the
    /// run's round trips).
    #[serde(default)]
    pub tcp_rtt_us: Vec<f64>,
    /// TCP stream to the peer namespace, MiB/s per run.
    #[serde(default)]
    pub tcp_stream_mib_s: Vec<f64>,
    /// What people should know about these figures.
    pub notes: Vec<String>,
}

impl BackendResult {
    /// An empty result for `backend`.
    pub fn new(backend: Backend, execution: impl Into<String>) -> Self {
        BackendResult {
            backend,
            execution: execution.into(),
            unavailable: None,
            hello_ms: Vec::new(),
            phases: Vec::new(),
            pss_kib: Vec::new(),
            guest_touched_kib: Vec::new(),
            cpu_ms: Vec::new(),
            syscall_ms: Vec::new(),
            fileio_ms: Vec::new(),
            fileio_blk_ms: Vec::new(),
            density: Vec::new(),
            tcp_rtt_us: Vec::new(),
            tcp_stream_mib_s: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// The shapes of the pod measurement: a sandbox container and two
/// containers joining its network, IPC and UTS namespaces, as Kubernetes
/// and Podman run a pod; and, to compare, two containers of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodShape {
    /// runc: the sandbox container and two containers joining its
    /// namespaces by `/proc/<pid>/ns/...` paths, on the host kernel.
    RuncPod,
    /// runm: the sandbox container boots the pod's VM; the two containers
    /// run inside that VM.
    RunmPod,
    /// runm: two containers on their own, a VM each (no pod).
    RunmTwoVms,
}

impl PodShape {
    /// Every shape, in the order of the report's table.
    pub const ALL: [PodShape; 3] = [PodShape::RuncPod, PodShape::RunmPod, PodShape::RunmTwoVms];

    /// Its name in the table.
    pub fn label(self) -> &'static str {
        match self {
            PodShape::RuncPod => "runc pod (sandbox + 2 containers)",
            PodShape::RunmPod => "runm pod, one VM (sandbox + 2 containers)",
            PodShape::RunmTwoVms => "runm, 2 containers in 2 VMs (no pod)",
        }
    }

    /// The backend that runs it.
    pub fn backend(self) -> Backend {
        match self {
            PodShape::RuncPod => Backend::Runc,
            PodShape::RunmPod | PodShape::RunmTwoVms => Backend::RunmQemu,
        }
    }

    /// Whether it is a pod (a sandbox container the two others join).
    pub fn is_pod(self) -> bool {
        self != PodShape::RunmTwoVms
    }

    /// How many containers it starts, sandbox included.
    pub fn containers(self) -> usize {
        if self.is_pod() {
            3
        } else {
            2
        }
    }

    /// How many VMs it boots.
    pub fn vms(self) -> usize {
        match self {
            PodShape::RuncPod => 0,
            PodShape::RunmPod => 1,
            PodShape::RunmTwoVms => 2,
        }
    }
}

/// The figures of one pod shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodResult {
    /// Which shape.
    pub shape: PodShape,
    /// How its code runs here (as [`BackendResult::execution`]).
    pub execution: String,
    /// Why it was not measured, when it was not.
    pub unavailable: Option<String>,
    /// From the first container's start command to both workload
    /// containers printing `ready`, ms per run.
    pub startup_ms: Vec<f64>,
    /// PSS of all the shape's host processes, idle, KiB per run.
    pub pss_kib: Vec<f64>,
    /// Guest RAM its VMM processes touched, KiB per run (VMs only).
    pub guest_touched_kib: Vec<f64>,
    /// What people should know about these figures.
    pub notes: Vec<String>,
}

impl PodResult {
    /// An empty result for `shape`.
    pub fn new(shape: PodShape, execution: impl Into<String>) -> Self {
        PodResult {
            shape,
            execution: execution.into(),
            unavailable: None,
            startup_ms: Vec::new(),
            pss_kib: Vec::new(),
            guest_touched_kib: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// How a memory limit showed itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryLimitOutcome {
    /// The limit the bundle asked for and what the backend made of it.
    pub limit: String,
    /// How much the workload tried to touch, MiB.
    pub asked_mib: u64,
    /// How much it had touched when it ended, MiB.
    pub reached_mib: u64,
    /// Its exit status as the runtime reported it.
    pub exit: String,
    /// Who ended it, as far as the output shows.
    pub ended_by: String,
}

/// What happened when the workload crashed its own kernel (VMs), or why the
/// same write is refused (containers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashOutcome {
    /// What was done.
    pub action: String,
    /// What the runtime reported for the crashed instance.
    pub instance_result: String,
    /// The guest console's last kernel lines, if any.
    pub console: String,
    /// Whether a neighbouring instance started before it was still running
    /// after it (None when there was no neighbour).
    pub neighbour_survived: Option<bool>,
    /// Whether the host's boot id was the same before and after.
    pub host_boot_id_unchanged: bool,
    /// Host uptime before and after, seconds.
    pub host_uptime_s: (f64, f64),
}

/// The isolation facts one model's workload saw, beside the host's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationFacts {
    /// Which backend ran the probe.
    pub backend: Backend,
    /// `uname -r` as the workload sees it.
    pub kernel_release: String,
    /// Whether that kernel's boot id is the host's (same kernel instance).
    pub same_kernel_as_host: bool,
    /// `/proc/1/comm` as the workload sees it.
    pub pid1_comm: String,
    /// The workload's own pid.
    pub own_pid: String,
    /// Processes it sees in /proc.
    pub processes_seen: usize,
    /// Processes the host had at the time.
    pub host_processes: usize,
    /// Mounts it sees.
    pub mounts_seen: usize,
    /// How many of them are the host's own (same source, point and type).
    pub host_mounts_seen: usize,
    /// The host's mount count.
    pub host_mounts: usize,
    /// Entries of its /dev.
    pub dev_entries: usize,
    /// Entries of the host's /dev.
    pub host_dev_entries: usize,
    /// The host's block devices (from /sys/block) that appear in its /dev.
    pub host_block_devices_seen: Vec<String>,
    /// The host's block device count.
    pub host_block_devices: usize,
    /// Its hostname.
    pub hostname: String,
    /// MemTotal it sees, KiB.
    pub mem_total_kib: u64,
    /// CPUs it sees.
    pub cpus: String,
    /// Its effective capabilities (hex, from /proc/self/status).
    pub cap_eff: String,
    /// The cgroup memory limit it sees.
    pub cgroup_memory_limit: String,
    /// Network interfaces it sees.
    pub netdevs: Vec<String>,
    /// Whether /proc/sysrq-trigger exists for it.
    pub sysrq_exists: bool,
    /// The mount covering /proc/sysrq-trigger: point and flags.
    pub sysrq_mount: String,
    /// access(W_OK) on it.
    pub sysrq_access: String,
    /// The mount covering /proc/sys: point and flags (runc makes it
    /// read-only, like sysrq-trigger).
    pub proc_sys_mount: String,
    /// The memory-limit probe, when run.
    pub memory_limit: Option<MemoryLimitOutcome>,
    /// The kernel-crash probe, when run (or the refusal shown).
    pub crash: Option<CrashOutcome>,
}

/// The workload sizes used, so the report can say what was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSizes {
    /// Iterations of the CPU loop.
    pub cpu_iterations: u64,
    /// getppid calls (as many writes to /dev/null again).
    pub syscalls: u64,
    /// MiB written, fsynced and read.
    pub io_mib: u64,
    /// Guest RAM of every VM, MiB.
    pub vm_mem_mib: u64,
    /// Instance counts of the density runs.
    pub density: Vec<usize>,
    /// TCP round trips per network run.
    #[serde(default)]
    pub net_rounds: u64,
    /// MiB streamed per network run.
    #[serde(default)]
    pub net_mib: u64,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// The host.
    pub host: HostInfo,
    /// Repetitions per figure.
    pub runs: usize,
    /// What was run.
    pub sizes: WorkloadSizes,
    /// Per backend, in [`Backend::ALL`] order.
    pub backends: Vec<BackendResult>,
    /// Per model that could run the probe.
    pub isolation: Vec<IsolationFacts>,
    /// The network path of each backend to the peer namespace, or why
    /// there is none (the figures are in [`BackendResult`]).
    pub network: Vec<(Backend, String)>,
    /// The pod shapes, in [`PodShape::ALL`] order (empty in reports made
    /// before pods were measured).
    #[serde(default)]
    pub pods: Vec<PodResult>,
    /// Report-wide notes (steps that failed, with why).
    pub notes: Vec<String>,
}

impl Measurements {
    /// The result of `backend`, if it was part of the run.
    pub fn backend(&self, backend: Backend) -> Option<&BackendResult> {
        self.backends.iter().find(|b| b.backend == backend)
    }

    /// The result of pod shape `shape`, if it was part of the run.
    pub fn pod(&self, shape: PodShape) -> Option<&PodResult> {
        self.pods.iter().find(|p| p.shape == shape)
    }

    /// The isolation facts of `backend`, if probed.
    pub fn isolation(&self, backend: Backend) -> Option<&IsolationFacts> {
        self.isolation.iter().find(|f| f.backend == backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_shapes_count_their_containers_and_vms() {
        let facts: Vec<(Backend, bool, usize, usize)> = PodShape::ALL
            .iter()
            .map(|s| (s.backend(), s.is_pod(), s.containers(), s.vms()))
            .collect();
        assert_eq!(
            facts,
            vec![
                (Backend::Runc, true, 3, 0),
                (Backend::RunmQemu, true, 3, 1),
                (Backend::RunmQemu, false, 2, 2),
            ]
        );
        assert!(PodShape::RunmPod.label().contains("one VM"));
    }
}
