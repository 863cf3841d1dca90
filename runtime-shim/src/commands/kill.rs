//! `runm kill ID [SIGNAL] [--all]`: signal a container's process.

use std::time::Duration;

use crate::cli::KillArgs;
use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::signal::parse_signal;
use crate::state::ContainerLock;

/// Sends `signal` to the container's process (or all its processes).
pub fn kill(ctx: &Ctx, id: &str, signal: i32, all: bool) -> Result<(), RunmError> {
    let dir = ctx.dir(id)?;
    let _lock = ContainerLock::acquire(&dir)?;
    let st = ctx.load(&dir)?;
    if !st.status.can_kill() {
        return Err(st
            // runc's words, which containerd's shim takes for "already
            // gone" (anything else it retries without end).
            .wrong_status(
                "container not running: only a created or running container can be signalled",
            )
            .into());
    }
    control::request(
        &dir.control_socket(),
        &Request::Kill {
            signal,
            all,
            process_id: None,
        },
        Duration::from_secs(30),
    )?;
    Ok(())
}

/// The command.
pub fn run(ctx: &Ctx, a: KillArgs) -> Result<i32, RunmError> {
    let signal = parse_signal(a.signal.as_deref().unwrap_or("SIGTERM"))?;
    kill(ctx, &a.container_id, signal, a.all)?;
    Ok(0)
}
