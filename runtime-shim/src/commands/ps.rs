//! `runm ps ID [--format table|json]`: the container's processes.
//!
//! A runm container has two kinds of processes: host processes (its sandbox,
//! which is the container's pid; the VM process; one relay per exec'd
//! process, whose pid is what `exec --pid-file` wrote) and the workload's
//! processes inside the VM, whose pids mean nothing on the host.
//!
//! `--format json` prints the host pids, as runc prints the host pids of a
//! container's cgroup. containerd's runc shim uses this list for `ctr task
//! ps` (and CRI's ListPids): it matches each pid against the pids it got
//! from `create` and `exec --pid-file` to say which exec each one is, and
//! expects pids it can find on the host. Guest pids there would be numbers
//! that name unrelated host processes. The table shows both: the host
//! processes with their roles, then the guest pids from the agent.

use std::time::Duration;

use crate::cli::{ListFormat, PsArgs};
use crate::commands::list::table;
use crate::commands::Ctx;
use crate::control::{self, HostRole, Request};
use crate::error::RunmError;
use crate::state::Status;

/// The command.
pub fn run(ctx: &Ctx, a: PsArgs) -> Result<i32, RunmError> {
    if !a.ps_args.is_empty() {
        crate::logging::warn(
            "ps options are not supported (the workload's processes are inside the VM); ignoring them",
        );
    }
    let dir = ctx.dir(&a.container_id)?;
    let st = ctx.load(&dir)?;
    if !st.status.has_sandbox() {
        return Err(st.wrong_status("it has no processes").into());
    }
    let sock = dir.control_socket();
    let (resp, _) = control::request(&sock, &Request::HostPids, Duration::from_secs(30))?;
    let host = resp.host.unwrap_or_default();
    match a.format {
        ListFormat::Json => {
            let pids: Vec<i32> = host.iter().map(|p| p.pid).collect();
            println!("{}", serde_json::json!(pids));
        }
        ListFormat::Table => {
            let mut rows = vec![vec!["PID".to_string(), "WHERE".into(), "WHAT".into()]];
            for p in &host {
                let what = match p.role {
                    HostRole::Sandbox => "sandbox (the container's pid)".to_string(),
                    HostRole::Vm => format!("VM process ({})", st.runm.backend),
                    HostRole::Exec => match p.guest_pid {
                        Some(g) => format!("exec relay of guest pid {g}"),
                        None => "exec relay".to_string(),
                    },
                };
                rows.push(vec![p.pid.to_string(), "host".into(), what]);
            }
            if st.status == Status::Paused {
                rows.push(vec![
                    "-".into(),
                    "guest".into(),
                    "(paused: listed after resume)".into(),
                ]);
            } else {
                let (resp, _) = control::request(&sock, &Request::Ps, Duration::from_secs(90))?;
                for g in resp.pids.unwrap_or_default() {
                    rows.push(vec![g.to_string(), "guest".into(), "-".into()]);
                }
            }
            print!("{}", table(&rows));
        }
    }
    Ok(0)
}
