//! `runm run ID --bundle DIR [--detach] [--keep]`: create and start; without
//! `--detach`, wait for the container's process, forward the signals runm
//! receives to it, exit with its status and delete the container.

use std::os::unix::process::ExitStatusExt;

use crate::cli::RunArgs;
use crate::commands::create::{self, CreateRequest, Created};
use crate::commands::{delete, start, Ctx};
use crate::error::RunmError;
use crate::state::ProcessRef;
use crate::sys;

/// Tears down a container whose start failed.
fn abandon(ctx: &Ctx, mut c: Created) {
    if let Err(e) = delete::delete(ctx, &c.dir.id, true) {
        log::error!("{e}");
    }
    let _ = c.sandbox.kill();
    let _ = c.sandbox.wait();
}

/// The command.
pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32, RunmError> {
    let id = a.container_id.clone();
    // Blocked before any thread exists, so the forwarding thread is the one
    // that sees them; children get a clean mask from std's Command.
    let sigset = if a.detach {
        None
    } else {
        // SIGWINCH too: passed on like the others, the sandbox (which
        // shares our terminal) then gives the guest's pty its size.
        Some(
            sys::block_signals(&sys::relayed_signals())
                .map_err(RunmError::io("cannot block signals", "run"))?,
        )
    };
    let mut created = create::create(
        ctx,
        CreateRequest {
            id: id.clone(),
            bundle: a.bundle,
            pid_file: a.pid_file,
            console_socket: a.console_socket,
            foreground: !a.detach,
            preserve_fds: a.preserve_fds,
        },
    )?;
    // A terminal container run in the foreground uses our terminal: raw, so
    // that the guest's pty alone interprets keys and output.
    let stdin = rustix::stdio::stdin();
    let raw = if created.terminal && !a.detach && rustix::termios::isatty(stdin) {
        sys::make_raw(stdin).ok()
    } else {
        None
    };
    if let Err(e) = start::start(ctx, &id) {
        if let Some(t) = &raw {
            sys::restore_termios(stdin, t);
        }
        abandon(ctx, created);
        return Err(e);
    }
    if a.detach {
        return Ok(0);
    }
    if let Some(set) = sigset {
        let pid = i32::try_from(created.sandbox.id()).unwrap_or(0);
        let sandbox = ProcessRef::of(pid);
        std::thread::spawn(move || loop {
            let Ok(sig) = set.wait() else { return };
            if let Some(sb) = &sandbox {
                sb.signal(sig);
            }
        });
    }
    let status = created.sandbox.wait();
    if let Some(t) = &raw {
        sys::restore_termios(stdin, t);
    }
    let code = match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(255),
        Err(e) => {
            log::error!("cannot wait for the sandbox: {e}");
            255
        }
    };
    if !a.keep {
        delete::delete(ctx, &id, true)?;
    }
    Ok(code)
}
