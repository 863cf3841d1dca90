//! `runm state ID`: the OCI state JSON of a container. Reads `state.json`
//! without the lock: it is replaced atomically, and a container being created
//! is reported as `creating` rather than waited for.

use crate::commands::Ctx;
use crate::error::RunmError;

/// The command.
pub fn run(ctx: &Ctx, id: &str) -> Result<i32, RunmError> {
    let dir = ctx.dir(id)?;
    let st = ctx.load(&dir)?;
    println!("{}", st.oci_json_text());
    Ok(0)
}
