//! `runm start ID`: run the process of a created container, then its
//! `poststart` hooks.

use std::time::Duration;

use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::hooks::{self, HookKind};
use crate::state::{ContainerLock, Status};

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
    if st.runm.hooks.is_some() {
        let mut running = st.clone();
        running.status = Status::Running;
        hooks::run_warning(
            HookKind::Poststart,
            st.runm.hooks.as_ref(),
            &running.oci_json_text(),
        );
    }
    Ok(())
}

/// The command.
pub fn run(ctx: &Ctx, id: &str) -> Result<i32, RunmError> {
    start(ctx, id)?;
    Ok(0)
}
