//! Starting the workload under each backend: as a host process, with runc,
//! with runm (`--hypervisor qemu`), by QEMU booting the guest kernel
//! directly, and under runm-vmm; and reading each one's phases from what it
//! printed.
//!
//! Owns the command lines of the runtimes and VMMs and the clean-up of what
//! they leave: every container gets its own id under a runtime root inside
//! the harness's temporary directory and is deleted (`delete --force`) when
//! its [`Instance`] is dropped; every process left is killed by its pid.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vm_spec::{Console, HostKvm, Phase, QemuAccel, QemuMicrovm, Reset};

use super::bundle::{self, BundleSpec, PodBundle};
use super::error::{ReportError, Result};
use super::marks::{self, TimedLine};
use super::model::{Backend, HostKind};
use super::procs;
use super::spawn::{self, ExitInfo, Running};
use super::vmm_startup::VmmLaunch;

/// The programs and guest images found on this host.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// runc.
    pub runc: Option<PathBuf>,
    /// runm.
    pub runm: Option<PathBuf>,
    /// qemu-system-x86_64.
    pub qemu: Option<PathBuf>,
    /// runm-vmm.
    pub runm_vmm: Option<PathBuf>,
    /// The guest vmlinux.
    pub kernel: Option<PathBuf>,
    /// The guest agent's initramfs (runm's).
    pub agent_initrd: Option<PathBuf>,
}

/// Where the runs happen and with what.
pub struct Env {
    /// The programs.
    pub tools: Tools,
    /// The harness's temporary directory (bundles, runtime roots, logs).
    pub work: PathBuf,
    /// The shared root file system of every bundle.
    pub rootfs: PathBuf,
    /// The direct-boot initramfs (busybox, the program, /init).
    pub direct_initrd: PathBuf,
    /// Guest RAM of every VM, MiB.
    pub vm_mem_mib: u64,
    counter: Cell<u32>,
}

/// What one run asks for.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The workload's arguments.
    pub args: Vec<String>,
    /// The bundle's memory limit, bytes (runc and runm only).
    pub memory_limit: Option<u64>,
    /// QEMU's direct boot only: reset through the keyboard controller
    /// (`reboot=k`, runm-vmm's reset) instead of a triple fault, to measure it.
    pub reboot_k: bool,
    /// The network namespace the workload works in (bare: entered; runc
    /// and runm: named in the bundle).
    pub netns: Option<PathBuf>,
    /// runm: the root on virtio-blk (an ext4 image) instead of virtio-fs.
    pub root_image: bool,
    /// runc and runm: a container of a pod.
    pub pod: Option<PodRole>,
    /// The crash probe: `/proc/sysrq-trigger` writable, as in a privileged
    /// container (every other run has it read-only, as runc's default).
    pub sysrq: bool,
}

/// A container's place in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// The pod's sandbox container (its id is the pod's).
    Sandbox,
    /// A container joining the sandbox container `sandbox_id`, whose
    /// runtime reported `sandbox_pid`.
    Member {
        /// The sandbox container's id.
        sandbox_id: String,
        /// Its pid as its runtime's `state` reports it.
        sandbox_pid: i32,
    },
}

impl RunSpec {
    /// The workload with `args`, no limit.
    pub fn args(args: &[&str]) -> Self {
        RunSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            memory_limit: None,
            reboot_k: false,
            netns: None,
            root_image: false,
            pod: None,
            sysrq: false,
        }
    }
}

/// The runtime's container to delete when an instance is done.
enum Container {
    None,
    Runc {
        bin: PathBuf,
        root: PathBuf,
        id: String,
    },
    Runm {
        bin: PathBuf,
        root: PathBuf,
        id: String,
    },
}

/// One started instance of the workload.
pub struct Instance {
    /// Its backend.
    pub backend: Backend,
    /// The command the harness started.
    pub run: Running,
    container: Container,
    console_in_file: bool,
}

/// How a finished run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the command ended.
    pub exit: ExitInfo,
    /// Spawn to exit, ms.
    pub wall_ms: f64,
    /// The command's stdout.
    pub stdout: Vec<TimedLine>,
    /// The command's stderr.
    pub stderr: Vec<TimedLine>,
    /// The guest console (VMs), else empty.
    pub console: Vec<TimedLine>,
    /// Its phases: (name, ms since spawn), in order.
    pub phases: Vec<(String, f64)>,
}

impl Env {
    /// An environment working in `work`.
    pub fn new(tools: Tools, work: PathBuf, rootfs: PathBuf, direct_initrd: PathBuf) -> Self {
        Env {
            tools,
            work,
            rootfs,
            direct_initrd,
            vm_mem_mib: 256,
            counter: Cell::new(0),
        }
    }

    fn next_id(&self) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        format!("rb{}-{n}", std::process::id())
    }

    /// Why `backend` cannot run here, if it cannot.
    pub fn missing(&self, backend: Backend) -> Option<String> {
        let t = &self.tools;
        let need = |what: &Option<PathBuf>, name: &str| {
            what.is_none().then(|| format!("{name} not found"))
        };
        match backend {
            Backend::Bare => None,
            Backend::Runc => need(&t.runc, "runc"),
            Backend::RunmQemu => need(&t.runm, "runm")
                .or_else(|| need(&t.qemu, "qemu-system-x86_64"))
                .or_else(|| need(&t.kernel, "the guest kernel"))
                .or_else(|| need(&t.agent_initrd, "the agent initramfs")),
            Backend::RunmOwnVmm => match super::host::kind() {
                HostKind::RealKvm => need(&t.runm, "runm")
                    .or_else(|| need(&t.runm_vmm, "runm-vmm"))
                    .or_else(|| need(&t.kernel, "the guest kernel"))
                    .or_else(|| need(&t.agent_initrd, "the agent initramfs")),
                HostKind::Pvm => Some(
                    "not usable for user space on this PVM KVM host: the guest's first system \
                     call faults (its host-side start-up is measured below as runm-vmm, \
                     PVM-emulated)"
                        .into(),
                ),
                HostKind::NoKvm => Some("no usable /dev/kvm".into()),
            },
            Backend::QemuDirect => {
                need(&t.qemu, "qemu-system-x86_64").or_else(|| need(&t.kernel, "the guest kernel"))
            }
            Backend::RunmVmm => need(&t.runm_vmm, "runm-vmm")
                .or_else(|| need(&t.kernel, "the guest kernel"))
                .or_else(|| {
                    (HostKvm::detect() == HostKvm::Missing).then(|| "no /dev/kvm".to_string())
                }),
        }
    }

    fn bundle(&self, id: &str, spec: &RunSpec) -> Result<PathBuf> {
        let dir = self.work.join("bundles").join(id);
        let cfg = bundle::config_json(
            &self.rootfs,
            &BundleSpec {
                args: spec.args.clone(),
                memory_limit: spec.memory_limit,
                netns: spec.netns.clone(),
                root_image: spec.root_image,
                sysrq: spec.sysrq,
                pod: spec.pod.as_ref().map(|role| match role {
                    PodRole::Sandbox => PodBundle {
                        sandbox_id: id.to_string(),
                        sandbox_pid: None,
                    },
                    PodRole::Member {
                        sandbox_id,
                        sandbox_pid,
                    } => PodBundle {
                        sandbox_id: sandbox_id.clone(),
                        sandbox_pid: Some(*sandbox_pid),
                    },
                }),
            },
            "runm-bench",
        );
        bundle::write_bundle(&dir, &cfg)?;
        Ok(dir)
    }

    fn runtime_root(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Starts the workload under `backend`.
    pub fn start(&self, backend: Backend, spec: &RunSpec) -> Result<Instance> {
        if spec.pod.is_some() && !matches!(backend, Backend::Runc | Backend::RunmQemu) {
            return Err(ReportError::Refused(format!(
                "{}: pods are measured with runc and runm's QEMU backend only",
                backend.label()
            )));
        }
        if let Some(why) = self.missing(backend) {
            return Err(ReportError::Refused(format!("{}: {why}", backend.label())));
        }
        let t = &self.tools;
        let what = format!("{} {}", backend.label(), spec.args.join(" "));
        match backend {
            Backend::Bare => {
                let mut cmd = Command::new(
                    self.rootfs
                        .join(bundle::WORKLOAD_IN_ROOTFS.trim_start_matches('/')),
                );
                cmd.args(&spec.args);
                if let Some(ns) = &spec.netns {
                    let ns = std::fs::File::open(ns).map_err(ReportError::io(ns))?;
                    use std::os::fd::AsRawFd;
                    use std::os::unix::process::CommandExt;
                    let fd = ns.as_raw_fd();
                    // SAFETY: setns(2) between fork and exec, on a
                    // descriptor `ns` keeps open until spawn returns; no
                    // allocation.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    return Ok(Instance {
                        backend,
                        run: Running::spawn(what, cmd, Vec::new())?,
                        container: Container::None,
                        console_in_file: false,
                    });
                }
                Ok(Instance {
                    backend,
                    run: Running::spawn(what, cmd, Vec::new())?,
                    container: Container::None,
                    console_in_file: false,
                })
            }
            Backend::Runc => {
                let bin = t.runc.clone().unwrap_or_default();
                let id = self.next_id();
                let b = self.bundle(&id, spec)?;
                let root = self.runtime_root("runc-root");
                let mut cmd = Command::new(&bin);
                cmd.arg("--root")
                    .arg(&root)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&b)
                    .arg(&id);
                Ok(Instance {
                    backend,
                    run: Running::spawn(what, cmd, Vec::new())?,
                    container: Container::Runc { bin, root, id },
                    console_in_file: false,
                })
            }
            Backend::RunmQemu | Backend::RunmOwnVmm => {
                let hypervisor = if backend == Backend::RunmQemu {
                    "qemu"
                } else {
                    "runm-vmm"
                };
                let bin = t.runm.clone().unwrap_or_default();
                let id = self.next_id();
                let b = self.bundle(&id, spec)?;
                let root = self.runtime_root("runm-root");
                let mut cmd = Command::new(&bin);
                cmd.env("RUNM_KERNEL", t.kernel.clone().unwrap_or_default())
                    .env("RUNM_INITRD", t.agent_initrd.clone().unwrap_or_default())
                    .arg("--root")
                    .arg(&root)
                    .args(["--hypervisor", hypervisor, "run", "--keep", "--bundle"])
                    .arg(&b)
                    .arg(&id);
                if let Some(q) = &t.qemu {
                    cmd.env("RUNM_QEMU", q);
                }
                if let Some(v) = &t.runm_vmm {
                    cmd.env("RUNM_VMM", v);
                }
                // --keep: the console log outlives the run for the last
                // lines; the container is deleted with the instance.
                let console = root.join(&id).join("console.log");
                Ok(Instance {
                    backend,
                    run: Running::spawn(what, cmd, vec![console])?,
                    container: Container::Runm { bin, root, id },
                    console_in_file: true,
                })
            }
            Backend::QemuDirect => {
                let mut cmd = Command::new(t.qemu.clone().unwrap_or_default());
                cmd.args(qemu_direct_args(
                    t.kernel.as_deref().unwrap_or(Path::new("")),
                    &self.direct_initrd,
                    self.vm_mem_mib,
                    &spec.args,
                    spec.reboot_k,
                ));
                Ok(Instance {
                    backend,
                    run: Running::spawn(what, cmd, Vec::new())?,
                    container: Container::None,
                    console_in_file: false,
                })
            }
            Backend::RunmVmm => {
                let id = self.next_id();
                let console = self.work.join(format!("{id}-console.log"));
                let cmd = VmmLaunch {
                    vmm: t.runm_vmm.as_deref().unwrap_or(Path::new("")),
                    kernel: t.kernel.as_deref().unwrap_or(Path::new("")),
                    initrd: Some(&self.direct_initrd),
                    vcpus: 1,
                    mem_mib: self.vm_mem_mib,
                    console: Some(&console),
                }
                .command();
                Ok(Instance {
                    backend,
                    run: Running::spawn(what, cmd, vec![console])?,
                    container: Container::None,
                    console_in_file: true,
                })
            }
        }
    }

    /// Runs the workload to its end (killed after `timeout`).
    pub fn run(&self, backend: Backend, spec: &RunSpec, timeout: Duration) -> Result<Outcome> {
        let mut inst = self.start(backend, spec)?;
        let exit = inst.run.wait_exit(timeout)?;
        Ok(inst.outcome(exit))
    }
}

/// QEMU's microvm booting the guest kernel with the direct-boot initramfs:
/// the machine runm's QEMU backend uses, without disk or agent channel; the
/// serial console on stdout; `args` to the trivial init. `reboot_k` resets
/// through the keyboard controller instead of QEMU guests' triple fault, to
/// measure what that costs.
pub fn qemu_direct_args(
    kernel: &Path,
    initrd: &Path,
    mem_mib: u64,
    args: &[String],
    reboot_k: bool,
) -> Vec<OsString> {
    let mut vm = QemuMicrovm::new(QemuAccel::for_host(HostKvm::detect()), kernel);
    vm.mem_mib = mem_mib;
    vm.initrd = Some(initrd.to_path_buf());
    vm.console = Console::Stdout;
    vm.guest.init_args = args.to_vec();
    vm.guest.reset = reboot_k.then_some(Reset::Keyboard);
    vm.args()
}

/// runm-vmm's phases and the report's phase names.
const VMM_MARKS: [(Phase, &str); 3] = [
    (Phase::KvmOpen, marks::PHASE_KVM_OPEN),
    (Phase::VcpusStart, marks::PHASE_VCPUS_START),
    (Phase::FirstKvmRun, marks::PHASE_FIRST_KVM_RUN),
];

/// The phases of one run of `backend` from what it printed, in time order:
/// (name, ms since spawn). `console_appeared` is when the VM's console file
/// was created (QEMU opens it as it starts); `t0_ns` the spawn time for
/// runm-vmm's marks.
pub fn phases(
    backend: Backend,
    stdout: &[TimedLine],
    stderr: &[TimedLine],
    console: &[TimedLine],
    console_appeared: Option<f64>,
    t0_ns: u64,
    exit_ms: Option<f64>,
) -> Vec<(String, f64)> {
    let mut p: Vec<(String, f64)> = Vec::new();
    let mut add = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            p.push((name.to_string(), v));
        }
    };
    match backend {
        Backend::Bare | Backend::Runc => {}
        Backend::RunmQemu | Backend::RunmOwnVmm => {
            add(marks::PHASE_VMM_STARTED, console_appeared);
            add(
                marks::PHASE_KERNEL_ENTRY,
                marks::kernel_entry_estimate(console)
                    .map(|e| e.max(console_appeared.unwrap_or(0.0))),
            );
            add(
                marks::PHASE_INIT,
                marks::first_arrival(console, |t| t.contains("runm-agent: started")),
            );
        }
        Backend::QemuDirect => {
            add(
                marks::PHASE_KERNEL_ENTRY,
                marks::kernel_entry_estimate(stdout),
            );
            add(
                marks::PHASE_INIT,
                marks::first_arrival(stdout, |t| t.contains("Run /init as init process")),
            );
        }
        Backend::RunmVmm => {
            let vmm = marks::vmm_phases(stderr, t0_ns);
            for (mark, name) in VMM_MARKS {
                add(name, vmm.iter().find(|(p, _)| *p == mark).map(|(_, v)| *v));
            }
            add(
                marks::PHASE_KERNEL_ENTRY,
                marks::kernel_entry_estimate(console),
            );
            add(
                marks::PHASE_INIT,
                marks::first_arrival(console, |t| t.contains("Run /init as init process")),
            );
        }
    }
    // Under QEMU's direct boot stdout is the serial console, which carries
    // the workload's lines too.
    // The reader thread can stamp a line after the waiter thread stamped
    // the exit (a busy host schedules them late): a line cannot have come
    // after its writer ended, so the exit bounds it.
    let start = marks::workload_start(stdout);
    add(
        marks::PHASE_WORKLOAD_START,
        match (start, exit_ms) {
            (Some(s), Some(e)) => Some(s.min(e)),
            (s, _) => s,
        },
    );
    add(marks::PHASE_EXIT, exit_ms);
    p.sort_by(|a, b| a.1.total_cmp(&b.1));
    p
}

impl Instance {
    /// The guest console so far (VMs; empty otherwise).
    pub fn console(&self) -> &[TimedLine] {
        match self.backend {
            Backend::QemuDirect => &self.run.stdout,
            _ if self.console_in_file => self.run.files.first().map_or(&[], |v| v.as_slice()),
            _ => &[],
        }
    }

    /// Waits for the workload's `ready` line (an idle workload is up).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let ok = self.run.wait_until(timeout, |r| {
            r.stdout.iter().any(|l| {
                matches!(
                    marks::workload_line(&l.text),
                    Some(marks::WorkloadLine::Ready)
                )
            })
        });
        if ok {
            Ok(())
        } else {
            Err(ReportError::Timeout {
                what: self.run.what.clone(),
                waited_for: "`ready` from the workload".into(),
                secs: timeout.as_secs(),
            })
        }
    }

    /// The container's OCI state as its runtime's `state` command prints it.
    fn state(&self) -> Option<Value> {
        let (bin, root, id) = match &self.container {
            Container::Runc { bin, root, id } | Container::Runm { bin, root, id } => {
                (bin, root, id)
            }
            Container::None => return None,
        };
        let out = spawn::output(
            "state",
            Command::new(bin)
                .arg("--root")
                .arg(root)
                .arg("state")
                .arg(id),
        )
        .ok()?;
        serde_json::from_str(&out).ok()
    }

    /// The runtime's id of the container, if it is one.
    pub fn container_id(&self) -> Option<&str> {
        match &self.container {
            Container::Runc { id, .. } | Container::Runm { id, .. } => Some(id),
            Container::None => None,
        }
    }

    /// The container's pid as its runtime's `state` reports it.
    pub fn state_pid(&self) -> Option<i32> {
        self.state()?["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
    }

    /// The container's status as its runtime's `state` reports it.
    pub fn state_status(&self) -> Option<String> {
        self.state()?["status"].as_str().map(String::from)
    }

    /// Every host process of the instance: the command's tree and the
    /// container process's tree (runm's sandbox runs in its own session).
    pub fn pids(&self) -> BTreeSet<i32> {
        let mut roots = vec![self.run.pid];
        roots.extend(self.state_pid());
        procs::descendants(&roots)
    }

    /// The outcome once the command has exited.
    pub fn outcome(&mut self, exit: ExitInfo) -> Outcome {
        let exit_ms = self.run.exit.map(|(ms, _)| ms);
        let console = self.console().to_vec();
        let phases = phases(
            self.backend,
            &self.run.stdout,
            &self.run.stderr,
            &console,
            self.run.file_appeared.first().copied().flatten(),
            self.run.t0_ns,
            exit_ms,
        );
        Outcome {
            exit,
            wall_ms: exit_ms.unwrap_or(f64::NAN),
            stdout: self.run.stdout.clone(),
            stderr: self.run.stderr.clone(),
            console,
            phases,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let (bin, root, id) = match &self.container {
            Container::Runc { bin, root, id } | Container::Runm { bin, root, id } => {
                (bin.clone(), root.clone(), id.clone())
            }
            Container::None => return,
        };
        // Remember the container's processes first: delete ends them, but
        // anything it missed is killed below by pid.
        let left = self.pids();
        let _ = spawn::output(
            "delete",
            Command::new(&bin)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(&id),
        );
        let _ = self
            .run
            .wait_until(Duration::from_secs(15), |r| r.exit.is_some());
        for p in left {
            if procs::alive(p) {
                procs::kill(p, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(ms: f64, t: &str) -> TimedLine {
        TimedLine::new(ms, t)
    }

    #[test]
    fn pods_are_refused_where_there_is_no_runtime_to_join() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::new(
            Tools::default(),
            dir.path().to_path_buf(),
            dir.path().join("rootfs"),
            dir.path().join("i.cpio"),
        );
        let spec = RunSpec {
            pod: Some(PodRole::Sandbox),
            ..RunSpec::args(&["sleep", "1"])
        };
        for b in [Backend::Bare, Backend::QemuDirect] {
            match env.start(b, &spec) {
                Err(ReportError::Refused(why)) => {
                    assert!(why.contains("pods are measured"), "{why}")
                }
                Err(e) => panic!("{b:?}: {e}"),
                Ok(_) => panic!("{b:?}: a pod started as a plain process"),
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written for a refused pod"
        );
    }

    #[test]
    fn qemu_direct_passes_args_to_init() {
        let text = |a: Vec<OsString>| -> Vec<String> {
            a.into_iter().map(|s| s.into_string().unwrap()).collect()
        };
        let a = text(qemu_direct_args(
            Path::new("/k"),
            Path::new("/i.cpio"),
            256,
            &["bench".into(), "5".into()],
            false,
        ));
        let s = a.join(" ");
        assert!(s.starts_with("-M microvm,acpi=off -accel "));
        assert!(s.contains("-m 256 -smp 1"));
        assert!(s.contains("-kernel /k -initrd /i.cpio"));
        assert!(s.contains("-serial stdio"));
        assert!(s.contains("-append console=ttyS0 panic=-1 reboot=t -- bench 5 "));
        let a = text(qemu_direct_args(
            Path::new("/k"),
            Path::new("/i"),
            128,
            &[],
            true,
        ));
        assert!(a
            .join(" ")
            .contains("-append console=ttyS0 panic=-1 reboot=k -serial"));
    }

    #[test]
    fn runm_qemu_phases_from_console_and_stdout() {
        let console = [
            l(
                950.0,
                "runm-agent: started (kernel 6.12.117, channel Serial, protocol 1)",
            ),
            l(1400.0, "runm-agent: container x started (pid 33)"),
            l(2010.0, "[    1.500000] reboot: Restarting system"),
        ];
        let stdout = [
            l(1450.0, "runm-bench: start mode=hello"),
            l(1451.0, "runm-bench: end"),
        ];
        let p = phases(
            Backend::RunmQemu,
            &stdout,
            &[],
            &console,
            Some(120.0),
            0,
            Some(2100.0),
        );
        let names: Vec<(&str, f64)> = p.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            names,
            vec![
                (marks::PHASE_VMM_STARTED, 120.0),
                (marks::PHASE_KERNEL_ENTRY, 510.0),
                (marks::PHASE_INIT, 950.0),
                (marks::PHASE_WORKLOAD_START, 1450.0),
                (marks::PHASE_EXIT, 2100.0),
            ]
        );
    }

    #[test]
    fn runm_vmm_phases_from_marks() {
        let stderr = [
            l(5.0, "runm-vmm: phase kvm_open monotonic_ns=1004000000"),
            l(9.0, "runm-vmm: phase vcpus_start monotonic_ns=1020000000"),
            l(9.5, "runm-vmm: phase first_kvm_run monotonic_ns=1021000000"),
        ];
        let console = [l(61_000.0, "[   40.000000] Run /init as init process")];
        let p = phases(
            Backend::RunmVmm,
            &[],
            &stderr,
            &console,
            None,
            1_000_000_000,
            Some(62_000.0),
        );
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                marks::PHASE_KVM_OPEN,
                marks::PHASE_VCPUS_START,
                marks::PHASE_FIRST_KVM_RUN,
                marks::PHASE_KERNEL_ENTRY,
                marks::PHASE_INIT,
                marks::PHASE_EXIT
            ]
        );
        assert_eq!(p[2].1, 21.0);
        assert_eq!(p[3].1, 21_000.0);
    }

    #[test]
    fn workload_start_is_bounded_by_exit() {
        let p = phases(
            Backend::Bare,
            &[l(1.31, "runm-bench: start mode=hello")],
            &[],
            &[],
            None,
            0,
            Some(1.22),
        );
        assert_eq!(p[0], (marks::PHASE_WORKLOAD_START.to_string(), 1.22));
    }

    #[test]
    fn bare_phases_are_workload_start_and_exit() {
        let p = phases(
            Backend::Bare,
            &[l(0.8, "runm-bench: start mode=hello")],
            &[],
            &[],
            None,
            0,
            Some(1.1),
        );
        assert_eq!(
            p,
            vec![
                (marks::PHASE_WORKLOAD_START.to_string(), 0.8),
                (marks::PHASE_EXIT.to_string(), 1.1)
            ]
        );
    }
}
