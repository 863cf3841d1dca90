//! `runm start ID`: run the process of a created container.

use std::time::Duration;

use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::state::ContainerLock;

/// Starts the container's process; returns when it runs.
pub fn start(ctx: &Ctx, id: &str) -> Result<(), RunmError> {
    let dir = ctx.dir(id)?;
    let _lock = ContainerLock::acquire(&dir)?;
    let st = ctx.load(&dir)?;
    if !st.status.can_start() {
        return Err(st
            .wrong_status("only a created container can be started")
            .into());
    }
    control::request(
        &dir.control_socket(),
        &Request::Start,
        Duration::from_secs(90),
    )?;
    Ok(())
}

/// The command.
pub fn run(ctx: &Ctx, id: &str) -> Result<i32, RunmError> {
    start(ctx, id)?;
    Ok(0)
}
