//! `runm pause ID` and `runm resume ID`: stop and continue the container's
//! VM (its vCPUs; see [`crate::vmctl`] for how). A paused container's
//! status is `paused`; it can be resumed, killed (SIGKILL ends its VM at
//! once, other signals wait for the resume) or deleted with `--force`.

use std::time::Duration;

use crate::commands::Ctx;
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::state::ContainerLock;

/// Pauses (`pause = true`) or resumes the container.
pub fn run(ctx: &Ctx, id: &str, pause: bool) -> Result<i32, RunmError> {
    let dir = ctx.dir(id)?;
    let _lock = ContainerLock::acquire(&dir)?;
    let st = ctx.load(&dir)?;
    let (allowed, req, what) = if pause {
        (
            st.status.can_pause(),
            Request::Pause,
            "only a running container can be paused",
        )
    } else {
        (
            st.status.can_resume(),
            Request::Resume,
            "only a paused container can be resumed",
        )
    };
    if !allowed {
        return Err(st.wrong_status(what).into());
    }
    control::request(&dir.control_socket(), &req, Duration::from_secs(30))?;
    Ok(0)
}
