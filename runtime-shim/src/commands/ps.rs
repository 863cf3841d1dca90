//! `runm ps ID [--format table|json]`: the container's processes, as pids
//! inside its VM (the agent's view; they are not host pids).

use std::time::Duration;

use crate::cli::{ListFormat, PsArgs};
use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;

/// The command.
pub fn run(ctx: &Ctx, a: PsArgs) -> Result<i32, RunmError> {
    if !a.ps_args.is_empty() {
        crate::logging::warn(
            "ps options are not supported (the processes are inside the VM); ignoring them",
        );
    }
    let dir = ctx.dir(&a.container_id)?;
    let st = ctx.load(&dir)?;
    if !st.status.can_exec() {
        return Err(st.wrong_status("it has no processes").into());
    }
    let (resp, _) = control::request(&dir.control_socket(), &Request::Ps, Duration::from_secs(90))?;
    let pids = resp.pids.unwrap_or_default();
    match a.format {
        ListFormat::Json => println!("{}", serde_json::json!(pids)),
        ListFormat::Table => {
            println!("PID");
            for p in pids {
                println!("{p}");
            }
        }
    }
    Ok(0)
}
