//! `runm create ID --bundle DIR [--pid-file F] [--console-socket S]`: check
//! the bundle and its bind mounts' sources, build the container's disk image
//! if it asks for one (`io.runm.rootfs=image`), make its host cgroups (`linux.cgroupsPath`),
//! open or make its network namespace, start its sandbox inside that
//! namespace (the sandbox joins the cgroups, boots the VM and has the agent
//! prepare the container), run the `prestart` and `createRuntime` hooks
//! while the sandbox waits (its pid is the one in the namespace), and return
//! once it is `created`, or with the error, leaving nothing behind.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{self, Accel, Choice, Hypervisor, HypervisorRequest, KvmAccess};
use crate::bundle::{self, ContainerPlan, NetworkNamespace};
use crate::cgroup::{self, vm_memory_bytes, Cgroups, HostLimits, DEFAULT_CPU_PERIOD};
use crate::cli::CreateArgs;
use crate::commands::{absolute, console_pty, Ctx};
use crate::config::Config;
use crate::error::RunmError;
use crate::hooks::{self, HookKind};
use crate::logging;
use crate::network::NetNs;
use crate::rootfs;
use crate::sandbox::{self, PodPlan, SandboxPlan};
use crate::share::SharePlan;
use crate::state::{ContainerDir, ContainerLock, State, Status};
use crate::sys;

/// Default seconds a VM gets to boot and prepare the container
/// (`$RUNM_BOOT_TIMEOUT` overrides): generous, for software emulation on a
/// busy host.
const DEFAULT_BOOT_TIMEOUT: u64 = 120;

/// Host memory a VM process may use beyond guest RAM, by backend (MiB):
/// QEMU's software emulation keeps a translation cache and device state
/// (measured: about 100 MiB beside a 256 MiB guest running busybox); QEMU
/// with KVM less; runm-vmm is small. The sandbox (a few MiB) is in it too.
const OVERHEAD_QEMU_TCG_MIB: u64 = 256;
/// See [`OVERHEAD_QEMU_TCG_MIB`].
const OVERHEAD_QEMU_KVM_MIB: u64 = 128;
/// See [`OVERHEAD_QEMU_TCG_MIB`].
const OVERHEAD_RUNM_VMM_MIB: u64 = 64;

/// The host memory allowance beyond guest RAM for `choice`, or the bundle's
/// `io.runm.vm.host_overhead_mib` (where runm's configuration allows it).
pub fn host_overhead_mib(plan: &ContainerPlan, choice: &Choice) -> u64 {
    plan.host_overhead_mib
        .unwrap_or(match (choice.hypervisor, choice.accel) {
            (Hypervisor::Qemu, Accel::Tcg) => OVERHEAD_QEMU_TCG_MIB,
            (Hypervisor::Qemu, Accel::Kvm) => OVERHEAD_QEMU_KVM_MIB,
            (Hypervisor::RunmVmm, _) => OVERHEAD_RUNM_VMM_MIB,
        })
}

/// The limits written into the host cgroups. Memory: guest RAM plus the VM
/// process's overhead, always (the guest alone may use all of its RAM, so
/// a bundle's own limit would get the VM process killed by the host, and no
/// limit would let a guest's VM process use the host without bound). CPU:
/// the bundle's quota, period and shares, or else a quota of the vCPUs plus
/// one (the VM process's own threads). Pids: runm's configured maximum.
pub fn host_limits(
    plan: &ContainerPlan,
    overhead_mib: u64,
    pids_max: u64,
) -> Result<HostLimits, RunmError> {
    let memory = vm_memory_bytes(plan.sizing.mem_mib, overhead_mib).ok_or_else(|| {
        RunmError::Usage(format!(
            "guest RAM {} MiB plus host overhead {overhead_mib} MiB overflows",
            plan.sizing.mem_mib
        ))
    })?;
    let (cpu_quota, cpu_period) = match plan.host.cpu_quota {
        Some(q) => (Some(q), plan.host.cpu_period),
        None => {
            let period = plan.host.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
            let quota = (u64::from(plan.sizing.vcpus) + 1)
                .checked_mul(period)
                .and_then(|q| i64::try_from(q).ok())
                .ok_or_else(|| {
                    RunmError::Usage(format!("linux.resources.cpu.period {period} is too large"))
                })?;
            (Some(quota), Some(period))
        }
    };
    Ok(HostLimits {
        memory_bytes: Some(memory),
        cpu_shares: plan.host.cpu_shares,
        cpu_quota,
        cpu_period,
        pids_max: Some(pids_max),
    })
}

/// Makes the container's host cgroups: where the bundle says, or where runm
/// puts containers that name none. No cgroup, no VM.
fn host_cgroups(
    ctx: &Ctx,
    plan: &ContainerPlan,
    config: &Config,
    limits: &HostLimits,
) -> Result<Cgroups, RunmError> {
    let p = cgroup::placement(
        plan.cgroups_path.as_deref(),
        &plan.container.id,
        &ctx.root,
        ctx.systemd_cgroup,
        config,
    )?;
    let cg = Cgroups::create(&p, limits)?;
    log::debug!(
        "container {}: host cgroups {:?}, limits {limits:?}",
        plan.container.id,
        cg.dirs
    );
    Ok(cg)
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Where the sandbox writes the container's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master (terminal containers).
    pub console_socket: Option<PathBuf>,
    /// `run` without `--detach`: stdio stays this process's, so a terminal
    /// container needs no console socket.
    pub foreground: bool,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
}

/// A container that reached `created`.
#[derive(Debug)]
pub struct Created {
    /// Its directory.
    pub dir: ContainerDir,
    /// The sandbox process (our child).
    pub sandbox: Child,
    /// Whether its process has a terminal.
    pub terminal: bool,
}

/// Undoes a failed create: stops the sandbox (which takes its VM with it),
/// undoes what it added to the network namespace, removes the container's
/// directory (and the namespace runm made in it), and runs the `poststop`
/// hooks once hooks have run.
struct Cleanup<'a> {
    dir: &'a ContainerDir,
    sandbox: Option<Child>,
    armed: bool,
    /// The state for `poststop`, once `prestart` hooks started.
    poststop: Option<(Option<oci_spec::runtime::Hooks>, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(mut child) = self.sandbox.take() {
            // After a failure the sandbox kills its VM and exits by itself.
            let until = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(st) = self.dir.load() {
            crate::commands::delete::stop_processes(self.dir, None, st.runm.vm);
            crate::commands::delete::release_network(&st);
            if let Some(cg) = &st.runm.cgroups {
                cg.remove();
            }
        }
        if let Err(e) = self.dir.remove() {
            log::error!("{e}");
        }
        if let Some((h, state)) = self.poststop.take() {
            hooks::run_warning(HookKind::Poststop, h.as_ref(), &state);
        }
    }
}

/// The network namespace the sandbox will live in: the engine's (checked
/// before anything is made), a new one runm binds in the container's
/// directory, or none.
fn network_namespace(plan: &ContainerPlan, dir: &ContainerDir) -> Result<Option<NetNs>, RunmError> {
    Ok(match &plan.network {
        NetworkNamespace::Host => None,
        NetworkNamespace::Join(path) => Some(NetNs::open_for_container(path)?),
        NetworkNamespace::New => Some(NetNs::create_bound(&dir.netns_file())?),
    })
}

/// What the sandbox shares with the guest through virtio-fs: the root
/// directory (unless it is copied into an image) and the bind mounts.
fn share_plan(plan: &ContainerPlan, virtiofsd: Option<PathBuf>) -> Option<SharePlan> {
    Some(SharePlan {
        root: (!plan.root_image).then(|| (plan.bundle.clone(), plan.root_path.clone())),
        root_readonly: plan.container.root.readonly,
        mount_points: crate::share::root_mount_points(&plan.container.mounts),
        binds: plan.binds.clone(),
        virtiofsd: virtiofsd?,
    })
}

/// The pod a container of a pod joins: its sandbox container must be
/// there, created or running, with a VM of its own, and in the network
/// namespace the container names.
fn pod_of(ctx: &Ctx, sandbox: &str, plan: &ContainerPlan) -> Result<PodPlan, RunmError> {
    let refuse = |why: String| {
        RunmError::Usage(format!(
            "container {} of the pod whose sandbox container is {sandbox}: {why}",
            plan.container.id
        ))
    };
    let dir = ctx.dir(sandbox)?;
    let st = ctx
        .load(&dir)
        .map_err(|e| refuse(format!("cannot find the sandbox container: {e}")))?;
    if !matches!(st.status, Status::Created | Status::Running) {
        return Err(refuse(format!(
            "the sandbox container is {}, not created or running",
            st.status
        )));
    }
    let Some(pid) = st.runm.sandbox.filter(|p| p.alive()).map(|p| p.pid) else {
        return Err(refuse("the sandbox container's process is gone".into()));
    };
    if st.runm.vm.is_none() {
        return Err(refuse("the sandbox container has no VM of its own".into()));
    }
    if plan.root_image {
        return Err(refuse(
            "io.runm.rootfs=image: a container of a pod shares its root with the pod's VM".into(),
        ));
    }
    if let NetworkNamespace::Join(path) = &plan.network {
        let id = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
        };
        let pods = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if id(path).is_none() || id(path) != id(&pods) {
            return Err(refuse(format!(
                "its network namespace {} is not the sandbox container's",
                path.display()
            )));
        }
    }
    Ok(PodPlan {
        root: ctx.root.clone(),
        sandbox: sandbox.to_string(),
        sandbox_pid: pid,
    })
}

/// A copy of `fd` numbered 10 or more, so that placing descriptors at 3
/// and 4 in the sandbox never overwrites one still to be placed.
fn above_placed(fd: &OwnedFd) -> Result<OwnedFd, RunmError> {
    rustix::io::fcntl_dupfd_cloexec(fd, 10)
        .map_err(|e| RunmError::io("cannot duplicate", "a pipe")(e.into()))
}

fn boot_timeout() -> u64 {
    std::env::var("RUNM_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT)
}

/// Creates the container.
pub fn create(ctx: &Ctx, req: CreateRequest) -> Result<Created, RunmError> {
    let dir = ctx.dir(&req.id)?;
    if req.preserve_fds > 0 {
        return Err(RunmError::Usage(
            "--preserve-fds is not supported: descriptors cannot be passed into a VM".into(),
        ));
    }
    if dir.exists() {
        return Err(crate::state::StateError::Exists(req.id.clone()).into());
    }
    // Everything that can be checked without side effects comes first, so a
    // bad bundle or host leaves nothing behind.
    let config = Config::load()?;
    let (mut plan, root_dir) = bundle::load(&req.bundle, &req.id, &config)?;
    let pod = plan
        .pod
        .as_deref()
        .map(|sandbox| pod_of(ctx, sandbox, &plan))
        .transpose()?;
    if !plan.ignored.is_empty() {
        logging::warn(&format!(
            "not applied inside the microVM (the VM is the isolation boundary): {}",
            plan.ignored.join(", ")
        ));
    }
    match &plan.network {
        // The pod's, plumbed by its sandbox.
        NetworkNamespace::Join(_) if pod.is_some() => {}
        NetworkNamespace::Join(path) => drop(NetNs::open_for_container(path)?),
        NetworkNamespace::Host => logging::warn(
            "config.json asks for no network namespace (the host's network), which a VM cannot share: the container has loopback only",
        ),
        NetworkNamespace::New => {}
    }
    if !plan.host_namespaces.is_empty() {
        logging::warn(&format!(
            "config.json asks for the host's {} namespace{} (not in linux.namespaces), which a VM \
             cannot share: the container has its own in the guest",
            plan.host_namespaces.join(", "),
            if plan.host_namespaces.len() > 1 {
                "s"
            } else {
                ""
            }
        ));
    }
    let terminal = plan.container.process.terminal;
    if terminal && req.console_socket.is_none() && !req.foreground {
        return Err(RunmError::Usage(
            "process.terminal is true: give --console-socket (or use `runm run` without --detach)"
                .into(),
        ));
    }
    if !terminal && req.console_socket.is_some() {
        return Err(RunmError::Usage(
            "--console-socket needs process.terminal = true in config.json".into(),
        ));
    }
    let request: HypervisorRequest = ctx
        .hypervisor
        .as_deref()
        .or(plan.hypervisor.as_deref())
        .unwrap_or("auto")
        .parse()?;
    let choice = backend::choose(request, &KvmAccess::probe())?;
    let program = backend::find_vm_program(choice.hypervisor)?;
    let images = backend::find_guest_images()?;
    // A pod's sandbox always shares: its VM takes the pod's containers.
    let virtiofsd = if plan.root_image && plan.binds.is_empty() && !plan.pod_sandbox {
        None
    } else {
        Some(backend::find_virtiofsd()?)
    };
    logging::notice(&format!(
        "container {}: backend {} ({}), accelerator {}: {}",
        req.id,
        match choice.hypervisor {
            backend::Hypervisor::RunmVmm => "runm-vmm",
            backend::Hypervisor::Qemu => "qemu",
        },
        program.display(),
        match choice.accel {
            backend::Accel::Kvm => "kvm",
            backend::Accel::Tcg => "tcg",
        },
        choice.reason
    ));

    dir.create()?;
    let _lock = ContainerLock::acquire(&dir)?;
    let mut cleanup = Cleanup {
        dir: &dir,
        sandbox: None,
        armed: true,
        poststop: None,
    };
    let mut state = State::new(
        &req.id,
        &plan.bundle,
        &plan.rootfs,
        plan.annotations.clone(),
    );
    dir.save(&state)?;
    let host_overhead_mib = host_overhead_mib(&plan, &choice);
    let limits = host_limits(&plan, host_overhead_mib, config.cgroup.pids_max)?;
    let cgroups = host_cgroups(ctx, &plan, &config, &limits)?;
    // Saved before anything else can fail, so the cleanup finds them.
    state.runm.cgroups = Some(cgroups.clone());
    if let Err(e) = dir.save(&state) {
        cgroups.remove();
        return Err(e.into());
    }
    state.runm.hooks = plan.hooks.clone();
    let netns = network_namespace(&plan, &dir)?;
    // A pod's container leaves its pod's namespace to the pod's sandbox.
    state.runm.netns = netns
        .as_ref()
        .filter(|_| pod.is_none())
        .map(|n| n.path().to_path_buf());
    dir.save(&state)?;
    if plan.root_image {
        // Through the directory opened when the bundle was checked, not
        // root.path again: a symlink swapped in since changes nothing.
        let size = rootfs::build_image(&root_dir.path(), &dir.rootfs_image())?;
        log::debug!("container {}: root image {} MiB", req.id, size >> 20);
    }
    drop(root_dir);
    let share = share_plan(&plan, virtiofsd);
    if pod.is_some() {
        // Its entry of the pod's share (the mount points above were worked
        // out from the plain names).
        crate::share::in_pod_share(&mut plan.container);
    }
    let boot_timeout_secs = boot_timeout();
    let sb_plan = SandboxPlan {
        container: plan.container.clone(),
        sizing: plan.sizing,
        choice,
        program,
        images,
        pid_file: req.pid_file.as_deref().map(absolute),
        boot_timeout_secs,
        cgroups: Some(cgroups),
        host_overhead_mib,
        netns: state.runm.netns.clone(),
        share,
        vm_user: Some(config.vm_user.clone()).filter(|u| !u.is_empty()),
        vm_uids: config.vm_uids().map_err(RunmError::Usage)?,
        pod,
    };
    let text = serde_json::to_vec_pretty(&sb_plan).unwrap_or_default();
    crate::state::write_atomic(&dir.plan_file(), &text)?;

    let slave = match &req.console_socket {
        Some(s) => Some(console_pty(s)?),
        None => None,
    };
    let (ready_r, ready_w) = sys::pipe().map_err(RunmError::io("cannot create a pipe", "ready"))?;
    let ready_w = above_placed(&ready_w)?;
    // The sandbox waits for these hooks before it plumbs the namespace:
    // they are what may put the interfaces in.
    let host_hooks = plan.hooks.as_ref().is_some_and(|h| {
        !HookKind::Prestart.of(h).is_empty() || !HookKind::CreateRuntime.of(h).is_empty()
    });
    let gate = if host_hooks {
        let (r, w) = sys::pipe().map_err(RunmError::io("cannot create a pipe", "gate"))?;
        Some((above_placed(&r)?, w))
    } else {
        None
    };
    let mut cmd = ctx.runm()?;
    cmd.args(["sandbox", "--ready-fd", "3"]);
    let mut placed = vec![(ready_w.as_raw_fd(), 3)];
    if let Some((r, _)) = &gate {
        cmd.args(["--gate-fd", "4"]);
        placed.push((r.as_raw_fd(), 4));
    }
    cmd.arg(&req.id);
    if let Some(slave) = &slave {
        let dup = |what| {
            slave
                .try_clone()
                .map(Stdio::from)
                .map_err(RunmError::io(what, "pty"))
        };
        cmd.stdin(dup("cannot pass the terminal")?)
            .stdout(dup("cannot pass the terminal")?)
            .stderr(dup("cannot pass the terminal")?);
    }
    sys::configure_child(
        &mut cmd,
        sys::ChildSetup {
            setsid: true,
            dup2: placed,
            chdir_root: true,
            // In the namespace from its start: its pid is the process the
            // hooks are told is in the container's network namespace.
            netns: netns.as_ref().map(|n| n.as_fd().as_raw_fd()),
            ..sys::ChildSetup::default()
        },
    );
    let child = cmd
        .spawn()
        .map_err(RunmError::io("cannot start the sandbox", "runm sandbox"))?;
    drop(ready_w);
    drop(slave);
    let sandbox_pid = i32::try_from(child.id()).unwrap_or(0);
    cleanup.sandbox = Some(child);
    if let Some((gate_r, gate_w)) = gate {
        drop(gate_r);
        let mut hook_state = state.clone();
        hook_state.pid = sandbox_pid;
        let json = hook_state.oci_json_text();
        hook_state.status = crate::state::Status::Stopped;
        cleanup.poststop = Some((plan.hooks.clone(), hook_state.oci_json_text()));
        hooks::run(HookKind::Prestart, plan.hooks.as_ref(), &json)?;
        hooks::run(HookKind::CreateRuntime, plan.hooks.as_ref(), &json)?;
        sys::write_all(&gate_w, b"go\n")
            .map_err(RunmError::io("cannot tell the sandbox to go on", "gate"))?;
    }
    drop(netns);
    sandbox::wait_ready(&ready_r, Duration::from_secs(boot_timeout_secs + 30))?;
    cleanup.armed = false;
    let sandbox = cleanup
        .sandbox
        .take()
        .ok_or_else(|| RunmError::Usage("lost the sandbox".into()))?;
    drop(cleanup);
    Ok(Created {
        dir: dir.clone(),
        sandbox,
        terminal,
    })
}

/// The command.
pub fn run(ctx: &Ctx, a: CreateArgs) -> Result<i32, RunmError> {
    create(
        ctx,
        CreateRequest {
            id: a.container_id,
            bundle: a.bundle,
            pid_file: a.pid_file,
            console_socket: a.console_socket,
            foreground: false,
            preserve_fds: a.preserve_fds,
        },
    )?;
    Ok(0)
}
