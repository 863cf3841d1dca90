//! VM supervision: the container's VM process from spawn to teardown.
//!
//! Owns starting the VM process (runm-vmm or QEMU, as [`crate::backend`]
//! prepares it) as the sandbox's child, which is placed in the sandbox's
//! cgroups and killed if the sandbox dies, with the container's taps; bringing
//! it up to the agent's `Created` (connect, version handshake,
//! `ConfigureNetwork`, `Create`), with a failure reported
//! with the end of the VM's and the guest's output; noticing its exit without
//! reaping it, so that its pid stays the sandbox's to kill until the
//! lifecycle knows it is gone; killing it; the power-off watchdog; and
//! removing its sockets at the end.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_agent::proto::Message;

use super::network::SandboxNetwork;
use super::{io_err, lock, SandboxError, SandboxPlan, Shared};
use crate::agent_client;
use crate::backend::{self, VmSpec};
use crate::lifecycle::{Event, STATUS_UNKNOWN};
use crate::state::{ContainerDir, ProcessRef};
use crate::sys;
use crate::vmctl::VmControl;

/// After the container's process exited and the agent was told to power
/// the guest off, how long before the VM is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// The last non-empty lines of `path`, joined, or `None`.
fn tail(path: &Path, lines: usize) -> Option<String> {
    let text = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if all.is_empty() {
        return None;
    }
    Some(all[all.len().saturating_sub(lines)..].join(" | "))
}

/// The end of the VM process's output, virtiofsd's errors and the guest console, as context
/// for a boot failure or a VM that ended without an exit status.
pub(super) fn console_tail(dir: &ContainerDir) -> String {
    let mut out = String::new();
    if let Some(t) = tail(&dir.vmm_log(), 3) {
        out.push_str(&format!("; the VM process said: {t}"));
    }
    // The share's daemon, when it failed (it also logs harmless warnings).
    if let Some(t) = tail(&dir.virtiofsd_log(), 2).filter(|t| t.contains("ERROR")) {
        out.push_str(&format!("; virtiofsd said: {t}"));
    }
    if let Some(t) = tail(&dir.console_log(), 5) {
        out.push_str(&format!(
            "; guest console ({}) ends with: {t}",
            dir.console_log().display()
        ));
    }
    out
}

/// A VM child that is killed unless set-up completes.
pub(super) struct VmGuard {
    child: Option<Child>,
}

impl VmGuard {
    /// How the VM process ended, if it did within `wait` (a VM whose
    /// channel just failed is often on its way out).
    fn exited(&mut self, wait: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + wait;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// The error for a boot that failed with `what`.
    fn boot_error(&mut self, dir: &ContainerDir, what: String) -> SandboxError {
        let what = match self.exited(Duration::from_secs(1)) {
            Some(status) => {
                format!("the VM exited ({status}) before the guest agent answered ({what})")
            }
            None => what,
        };
        SandboxError::Boot {
            what,
            context: console_tail(dir),
        }
    }

    /// The VM process, identified for `state.json`.
    pub(super) fn process(&self) -> Option<ProcessRef> {
        self.child
            .as_ref()
            .and_then(|c| ProcessRef::of(i32::try_from(c.id()).unwrap_or(0)))
    }

    /// Set-up is complete: the VM is the sandbox's to supervise.
    pub(super) fn keep(mut self) -> Result<Child, SandboxError> {
        self.child
            .take()
            .ok_or_else(|| SandboxError::Start("lost its VM".into()))
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A VM whose agent has prepared the container.
pub(super) struct Booted {
    /// The VM process, killed if set-up fails from here on.
    pub vm: VmGuard,
    /// The agent channel.
    pub stream: UnixStream,
    /// How the VM is paused and resumed.
    pub control: VmControl,
}

/// Starts the VM process with the taps of `network` and has its agent
/// configure the guest's network and prepare the container.
pub(super) fn boot(
    dir: &ContainerDir,
    plan: &SandboxPlan,
    mut network: Option<&mut SandboxNetwork>,
    shared: bool,
) -> Result<Booted, SandboxError> {
    let nets = network
        .as_deref()
        .map(SandboxNetwork::vm_nets)
        .unwrap_or_default();
    let vm_spec = VmSpec {
        images: &plan.images,
        sizing: plan.sizing,
        dir,
        root_image: (plan.container.root.fstype != "virtiofs")
            .then_some(plan.container.root.readonly),
        share: shared.then(|| dir.local(dir.virtiofs_socket())),
        nets: &nets,
        vm_user: plan.vm_user.as_deref(),
    };
    let launch = backend::prepare(&plan.choice, &plan.program, &vm_spec)?;
    let vmm_log = fs::File::create(dir.vmm_log()).map_err(io_err("cannot create the VM log"))?;
    let vmm_log2 = vmm_log
        .try_clone()
        .map_err(io_err("cannot create the VM log"))?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        // Its sockets are named relative to the container's directory
        // (see ContainerDir::local).
        .current_dir(&dir.path)
        .stdin(Stdio::null())
        .stdout(vmm_log)
        .stderr(vmm_log2);
    sys::configure_child(
        &mut cmd,
        sys::ChildSetup {
            // The VM must not outlive its sandbox, whatever kills the sandbox.
            parent_death_signal: Some(libc::SIGKILL),
            // The taps, at the numbers the VM's arguments name.
            dup2: network
                .as_deref()
                .map(|n| n.inherited_fds().into_iter().map(|fd| (fd, fd)).collect())
                .unwrap_or_default(),
            ..sys::ChildSetup::default()
        },
    );
    log::debug!(
        "sandbox {}: {} {:?}",
        dir.id,
        launch.program.display(),
        launch.args
    );
    let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        program: launch.program.display().to_string(),
        source,
    })?;
    if let Some(n) = network.as_deref_mut() {
        n.vm_started();
    }
    let mut guard = VmGuard { child: Some(child) };

    let deadline = Instant::now() + Duration::from_secs(plan.boot_timeout_secs);
    let mut vm_running = || {
        guard
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    };
    let connected = backend::connect_agent(&launch.channel, deadline, &mut vm_running);
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => return Err(guard.boot_error(dir, e.to_string())),
    };
    let kernel = match agent_client::handshake(&mut stream, deadline) {
        Ok(k) => k,
        Err(e) => return Err(guard.boot_error(dir, e.to_string())),
    };
    log::info!(
        "container {}: guest agent ready, guest kernel {kernel}",
        dir.id
    );
    let interfaces = network
        .as_deref()
        .map(SandboxNetwork::interfaces)
        .unwrap_or_default();
    if let Err(e) = agent_client::configure_network(&mut stream, interfaces, deadline) {
        return Err(guard.boot_error(dir, format!("configuring the guest's network: {e}")));
    }
    if let Err(e) = agent_client::create(&mut stream, plan.container.clone(), None, deadline) {
        return Err(guard.boot_error(dir, e.to_string()));
    }
    Ok(Booted {
        vm: guard,
        stream,
        control: launch.control,
    })
}

/// Waits until the VM process `pid` (the sandbox's child) has exited,
/// leaving it unreaped.
pub(super) fn wait_exited(pid: i32) {
    let _ = sys::wait_exited_no_reap(pid);
}

/// Kills the VM process. Only while the lifecycle says it has not exited:
/// until then it is the sandbox's unreaped child, so the pid is still its.
pub(super) fn kill(pid: i32) {
    let _ = sys::kill(pid, libc::SIGKILL);
}

/// The container's process has exited: the agent waits for `Shutdown`
/// to reset the guest (it gives up waiting after a second by itself).
/// If the VM is still there after a grace period, it is killed.
pub(super) fn poweroff_watchdog(shared: &Arc<Shared>) {
    // Armed first: a guest that does not read cannot hold the send (it
    // times out) beyond the grace.
    let deadline = Instant::now() + POWEROFF_GRACE;
    let _ = shared.agent.send(Message::Shutdown);
    let mut inner = lock(&shared.inner);
    while inner.life.vm_running() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!(
                "container {}: the guest did not power off; killing the VM",
                shared.dir.id
            );
            shared.feed(
                &mut inner,
                Event::Terminate {
                    status: STATUS_UNKNOWN,
                },
            );
            return;
        }
        inner = shared
            .changed
            .wait_timeout(inner, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Removes the sockets of the sandbox and its VM.
pub(super) fn remove_sockets(dir: &ContainerDir) {
    for sock in [
        dir.control_socket(),
        dir.agent_socket(),
        dir.vsock_socket(),
        dir.qmp_socket(),
        dir.virtiofs_socket(),
    ] {
        if fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(&sock);
        }
    }
}
