//! `runm create ID --bundle DIR [--pid-file F] [--console-socket S]`: build
//! the container's disk image, make its host cgroups (`linux.cgroupsPath`),
//! start its sandbox (which joins them, boots the VM and has the agent
//! prepare the container) and return once it is `created`, or with the
//! error, leaving nothing behind.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{self, Accel, Choice, Hypervisor, HypervisorRequest, KvmAccess};
use crate::bundle::{self, ContainerPlan};
use crate::cgroup::{Cgroups, HostLimits};
use crate::cli::CreateArgs;
use crate::commands::{absolute, console_pty, Ctx};
use crate::error::RunmError;
use crate::logging;
use crate::rootfs;
use crate::sandbox::{self, SandboxPlan};
use crate::state::{ContainerDir, ContainerLock, State};
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
/// `io.runm.vm.host_overhead_mib`.
pub fn host_overhead_mib(plan: &ContainerPlan, choice: &Choice) -> Result<u64, RunmError> {
    if let Some(v) = plan.annotations.get(bundle::ANNOTATION_HOST_OVERHEAD) {
        return v.trim().parse().map_err(|_| {
            RunmError::Usage(format!(
                "annotation {}='{v}': give a number of MiB",
                bundle::ANNOTATION_HOST_OVERHEAD
            ))
        });
    }
    Ok(match (choice.hypervisor, choice.accel) {
        (Hypervisor::Qemu, Accel::Tcg) => OVERHEAD_QEMU_TCG_MIB,
        (Hypervisor::Qemu, Accel::Kvm) => OVERHEAD_QEMU_KVM_MIB,
        (Hypervisor::RunmVmm, _) => OVERHEAD_RUNM_VMM_MIB,
    })
}

/// The limits written into the host cgroups: guest RAM plus the VM
/// process's overhead when the bundle limits memory (the guest alone may
/// use all of its RAM, so the bundle's limit itself would get the VM
/// process killed by the host), CPU quota, period and shares as given.
pub fn host_limits(plan: &ContainerPlan, overhead_mib: u64) -> HostLimits {
    HostLimits {
        memory_bytes: plan
            .host
            .memory_limit
            .map(|_| (plan.sizing.mem_mib + overhead_mib) << 20),
        cpu_shares: plan.host.cpu_shares,
        cpu_quota: plan.host.cpu_quota,
        cpu_period: plan.host.cpu_quota.and(plan.host.cpu_period),
    }
}

/// Makes the container's host cgroups, or says why none are made: what the
/// bundle asked for that then goes unapplied is reported as a warning.
fn host_cgroups(
    ctx: &Ctx,
    plan: &ContainerPlan,
    limits: &HostLimits,
) -> Result<Option<Cgroups>, RunmError> {
    let not_applied = |why: String| {
        let mut what = vec!["linux.cgroupsPath"];
        if plan.host.cpu_shares.is_some() {
            what.push("linux.resources.cpu.shares");
        }
        logging::warn(&format!(
            "not applied on the host: {} ({why})",
            what.join(", ")
        ));
    };
    let Some(path) = &plan.cgroups_path else {
        if plan.host.cpu_shares.is_some() {
            logging::warn(
                "not applied: linux.resources.cpu.shares (no linux.cgroupsPath to apply it to)",
            );
        }
        return Ok(None);
    };
    if ctx.systemd_cgroup {
        not_applied("the systemd cgroup driver is not supported; use cgroupfs".into());
        return Ok(None);
    }
    match Cgroups::create(path, limits) {
        Ok(cg) => {
            log::debug!(
                "container {}: host cgroups {:?}",
                plan.container.id,
                cg.dirs
            );
            Ok(Some(cg))
        }
        Err(e) if e.unsupported() => {
            not_applied(e.to_string());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
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

/// Undoes a failed create: stops the sandbox (which takes its VM with it)
/// and removes the container's directory.
struct Cleanup<'a> {
    dir: &'a ContainerDir,
    sandbox: Option<Child>,
    armed: bool,
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
            if let Some(cg) = &st.runm.cgroups {
                cg.remove();
            }
        }
        if let Err(e) = self.dir.remove() {
            log::error!("{e}");
        }
    }
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
    let plan = bundle::load(&req.bundle, &req.id)?;
    if !plan.ignored.is_empty() {
        logging::warn(&format!(
            "not applied inside the microVM (the VM is the isolation boundary): {}",
            plan.ignored.join(", ")
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
    };
    let mut state = State::new(
        &req.id,
        &plan.bundle,
        &plan.rootfs,
        plan.annotations.clone(),
    );
    dir.save(&state)?;
    let host_overhead_mib = host_overhead_mib(&plan, &choice)?;
    let cgroups = host_cgroups(ctx, &plan, &host_limits(&plan, host_overhead_mib))?;
    if let Some(cg) = &cgroups {
        // Saved before anything else can fail, so the cleanup finds them.
        state.runm.cgroups = Some(cg.clone());
        if let Err(e) = dir.save(&state) {
            cg.remove();
            return Err(e.into());
        }
    }
    let size = rootfs::build_image(&plan.rootfs, &dir.rootfs_image())?;
    log::debug!("container {}: root image {} MiB", req.id, size >> 20);
    let boot_timeout_secs = boot_timeout();
    let sb_plan = SandboxPlan {
        container: plan.container.clone(),
        sizing: plan.sizing,
        choice,
        program,
        images,
        pid_file: req.pid_file.as_deref().map(absolute),
        boot_timeout_secs,
        cgroups,
        host_overhead_mib,
    };
    let text = serde_json::to_vec_pretty(&sb_plan).unwrap_or_default();
    crate::state::write_atomic(&dir.plan_file(), &text)?;

    let slave = match &req.console_socket {
        Some(s) => Some(console_pty(s)?),
        None => None,
    };
    let (ready_r, ready_w) = sys::pipe().map_err(RunmError::io("cannot create a pipe", "ready"))?;
    let mut cmd = ctx.runm()?;
    cmd.args(["sandbox", "--ready-fd", "3", &req.id]);
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
            dup2: vec![(ready_w.as_raw_fd(), 3)],
            chdir_root: true,
            ..sys::ChildSetup::default()
        },
    );
    let child = cmd
        .spawn()
        .map_err(RunmError::io("cannot start the sandbox", "runm sandbox"))?;
    drop(ready_w);
    drop(slave);
    cleanup.sandbox = Some(child);
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
