//! `runm delete ID [--force]`: tear a container down and remove everything
//! runm keeps for it: its sandbox and VM processes, the taps and filters in
//! its network namespace (and the namespace, when runm made it), the host
//! cgroups runm made, sockets, disk image, logs and state directory; then
//! run its `poststop` hooks.

use std::time::{Duration, Instant};

use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::hooks::{self, HookKind};
use crate::state::{ContainerDir, ContainerLock, ProcessRef, State, StateError, Status};

/// How long `delete --force` waits for another command's hold on the
/// container before going ahead.
const FORCE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Waits until `p` is gone; false on timeout.
fn wait_gone(p: &ProcessRef, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while p.alive() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops the container's processes: asks the sandbox to kill its VM, then
/// kills what is left.
pub fn stop_processes(dir: &ContainerDir, sandbox: Option<ProcessRef>, vm: Option<ProcessRef>) {
    if let Some(sb) = sandbox.filter(ProcessRef::alive) {
        if let Err(e) = control::request(
            &dir.control_socket(),
            &Request::Destroy,
            Duration::from_secs(10),
        ) {
            log::debug!("container {}: destroy request: {e}", dir.id);
        }
        if !wait_gone(&sb, Duration::from_secs(10)) {
            log::warn!(
                "container {}: sandbox {} did not exit; killing it",
                dir.id,
                sb.pid
            );
            sb.signal(libc::SIGKILL);
            wait_gone(&sb, Duration::from_secs(5));
        }
    }
    // The VM dies with its sandbox; this covers a sandbox killed before it
    // could arrange that.
    if let Some(vm) = vm.filter(ProcessRef::alive) {
        vm.signal(libc::SIGKILL);
        wait_gone(&vm, Duration::from_secs(5));
    }
}

/// Removes what the sandbox added to the container's network namespace,
/// if a sandbox that could not do it itself left a record. The namespace
/// runm made goes with the container's directory.
pub fn release_network(st: &State) {
    if let (Some(path), Some(record)) = (&st.runm.netns, &st.runm.plumbing) {
        if let Err(e) = crate::network::teardown_at(path, record) {
            crate::logging::warn(&format!("container {}: {e}", st.id));
        }
    }
}

/// Deletes the container.
pub fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<(), RunmError> {
    let dir = ctx.dir(id)?;
    // As runc: `delete --force` of a container that is not there succeeds
    // (containerd cleans up with it after failures).
    // --force does not wait long for a command that holds the container
    // (a start or exec waiting on its guest): it ends that command's VM.
    let wait = force.then_some(FORCE_LOCK_WAIT);
    let _lock = match ContainerLock::acquire_within(&dir, wait) {
        Err(StateError::NotFound(_)) if force => return Ok(()),
        Ok(None) => {
            log::warn!(
                "container {id}: another runm command holds it; deleting it anyway (--force)"
            );
            None
        }
        other => other?,
    };
    let st = match ctx.load(&dir) {
        // A directory without a state: what an aborted create left. Ours
        // now (we hold its lock), and nothing in it runs.
        Err(RunmError::State(StateError::NotFound(_))) => {
            dir.remove()?;
            return if force {
                Ok(())
            } else {
                Err(StateError::NotFound(id.to_string()).into())
            };
        }
        other => other?,
    };
    if !force && !st.status.can_delete() {
        let why = if st.status == Status::Running {
            "stop it first or use --force"
        } else {
            "use --force"
        };
        return Err(st.wrong_status(format!("cannot delete it ({why})")).into());
    }
    stop_processes(&dir, st.runm.sandbox, st.runm.vm);
    release_network(&st);
    // Empty now: its processes are gone.
    if let Some(cg) = &st.runm.cgroups {
        cg.remove();
    }
    dir.remove()?;
    let mut stopped = st.clone();
    stopped.status = Status::Stopped;
    stopped.pid = 0;
    hooks::run_warning(
        HookKind::Poststop,
        st.runm.hooks.as_ref(),
        &stopped.oci_json_text(),
    );
    Ok(())
}

/// The command.
pub fn run(ctx: &Ctx, id: &str, force: bool) -> Result<i32, RunmError> {
    delete(ctx, id, force)?;
    Ok(0)
}
