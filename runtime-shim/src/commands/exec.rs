//! `runm exec ID [--process F | ARGS...]`: run another process in a running
//! container. The process runs inside the VM; on the host, a relay (this
//! runm, or with `--detach` a runm left behind whose pid goes to
//! `--pid-file`) carries its stdio over the sandbox's control socket,
//! forwards signals to it, and exits with its exit status.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_agent::proto::{self, Frame, Message, ProcessSpec, Stream};

use crate::cli::{ExecArgs, ExecRelayArgs};
use crate::commands::{absolute, console_pty, Ctx};
use crate::control::{self, Request};
use crate::error::RunmError;
use crate::sandbox::{self, SandboxPlan};
use crate::state::{ContainerDir, ContainerLock};
use crate::sys;

/// Status when the VM went away before the process's status arrived.
const STATUS_LOST: i32 = 255;

/// `KEY=value` entries of `extra` replace same-named ones of `env`.
fn merge_env(env: &mut Vec<String>, extra: &[String]) {
    for e in extra {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(e.clone());
    }
}

/// `UID[:GID]`.
fn parse_user(s: &str) -> Result<(u32, Option<u32>), RunmError> {
    let bad = || {
        RunmError::Usage(format!("--user '{s}': give UID or UID:GID (numbers: names are resolved inside the container's image, which runm cannot read here)"))
    };
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u.parse().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

/// The process to run: from `--process`, or the container's own process
/// with the command line, environment, directory and user replaced (as runc does).
fn build_process(dir: &ContainerDir, a: &ExecArgs) -> Result<ProcessSpec, RunmError> {
    let mut p = base_process(dir, a)?;
    // runc: each --cap joins the bounding, effective and permitted sets of
    // the process (a process file without capabilities gets the container's
    // in the guest, so they are added to those).
    if !a.cap.is_empty() {
        let caps = match p.capabilities {
            Some(c) => c,
            None => read_plan(dir)?
                .container
                .process
                .capabilities
                .unwrap_or_default(),
        };
        let mut caps = caps;
        for name in &a.cap {
            let bit = crate::bundle::capability_bit(name)
                .ok_or_else(|| RunmError::Usage(format!("--cap: unknown capability {name:?}")))?;
            caps.bounding |= bit;
            caps.effective |= bit;
            caps.permitted |= bit;
        }
        p.capabilities = Some(caps);
    }
    Ok(p)
}

fn read_plan(dir: &ContainerDir) -> Result<SandboxPlan, RunmError> {
    let plan_path = dir.plan_file();
    let text = std::fs::read(&plan_path).map_err(RunmError::io("cannot read", &plan_path))?;
    serde_json::from_slice(&text)
        .map_err(|e| RunmError::Usage(format!("corrupt {}: {e}", plan_path.display())))
}

/// The process from `--process`, or the container's with the command line's changes.
fn base_process(dir: &ContainerDir, a: &ExecArgs) -> Result<ProcessSpec, RunmError> {
    if let Some(path) = &a.process {
        let text = std::fs::read(path).map_err(RunmError::io("cannot read process file", path))?;
        let p: oci_spec::runtime::Process = serde_json::from_slice(&text).map_err(|e| {
            RunmError::Usage(format!("malformed process file {}: {e}", path.display()))
        })?;
        return crate::bundle::process_spec(&p)
            .map_err(|e| RunmError::Usage(format!("{}: {e}", path.display())));
    }
    if a.command.is_empty() {
        return Err(RunmError::Usage(
            "exec needs a command after the container id, or --process FILE".into(),
        ));
    }
    let mut p = read_plan(dir)?.container.process;
    p.args = a.command.clone();
    merge_env(&mut p.env, &a.env);
    if let Some(cwd) = &a.cwd {
        if !cwd.starts_with('/') {
            return Err(RunmError::Usage(format!(
                "--cwd '{cwd}' is not an absolute path"
            )));
        }
        p.cwd = cwd.clone();
    }
    if let Some(u) = &a.user {
        let (uid, gid) = parse_user(u)?;
        p.uid = uid;
        p.gid = gid.unwrap_or(p.gid);
    }
    if !a.additional_gids.is_empty() {
        p.additional_gids = a.additional_gids.clone();
    }
    p.terminal = a.tty;
    p.no_new_privileges |= a.no_new_privs;
    Ok(p)
}

/// The command.
pub fn run(ctx: &Ctx, a: ExecArgs) -> Result<i32, RunmError> {
    if a.preserve_fds > 0 {
        return Err(RunmError::Usage(
            "--preserve-fds is not supported: descriptors cannot be passed into a VM".into(),
        ));
    }
    let sigset = if a.detach {
        None
    } else {
        // Our terminal's size changes (SIGWINCH) resize the process's.
        Some(
            sys::block_signals(&sys::relayed_signals())
                .map_err(RunmError::io("cannot block signals", "exec"))?,
        )
    };
    let dir = ctx.dir(&a.container_id)?;
    let lock = ContainerLock::acquire(&dir)?;
    let st = ctx.load(&dir)?;
    if !st.status.can_exec() {
        return Err(st
            .wrong_status("exec needs a created or running container")
            .into());
    }
    let process = build_process(&dir, &a)?;
    if a.console_socket.is_some() && !process.terminal {
        return Err(RunmError::Usage("--console-socket needs --tty".into()));
    }
    let slave = match &a.console_socket {
        Some(s) => Some(console_pty(s)?),
        None => None,
    };
    if a.detach {
        let pid = spawn_relay(ctx, &dir, &process, slave)?;
        if let Some(f) = &a.pid_file {
            crate::state::write_atomic(&absolute(f), pid.to_string().as_bytes())?;
        }
        return Ok(0);
    }
    let fds = stdio_fds(slave.as_ref()).map_err(RunmError::io("cannot duplicate", "stdio"))?;
    let (resp, conn) = control::request(
        &dir.control_socket(),
        &Request::Exec {
            process: process.clone(),
            client_pid: i32::try_from(std::process::id()).ok(),
        },
        Duration::from_secs(90),
    )?;
    drop(lock);
    if let Some(f) = &a.pid_file {
        crate::state::write_atomic(&absolute(f), std::process::id().to_string().as_bytes())?;
    }
    let process_id = resp.process_id.unwrap_or(0);
    let terminal = process.terminal && slave.is_none();
    Ok(pump(
        &dir,
        conn,
        process_id,
        Tty {
            raw: terminal,
            sized: terminal,
        },
        fds,
        sigset,
    ))
}

/// Starts the relay that `--detach` leaves behind; returns its pid once the
/// process runs.
fn spawn_relay(
    ctx: &Ctx,
    dir: &ContainerDir,
    process: &ProcessSpec,
    slave: Option<OwnedFd>,
) -> Result<i32, RunmError> {
    let json = serde_json::to_string(process).unwrap_or_default();
    let (ready_r, ready_w) = sys::pipe().map_err(RunmError::io("cannot create a pipe", "ready"))?;
    let mut cmd = ctx.runm()?;
    cmd.args([
        "exec-relay",
        "--ready-fd",
        "3",
        "--process-json",
        &json,
        &dir.id,
    ]);
    if let Some(slave) = &slave {
        let dup = || {
            slave
                .try_clone()
                .map(Stdio::from)
                .map_err(RunmError::io("cannot pass the terminal", "pty"))
        };
        cmd.stdin(dup()?).stdout(dup()?).stderr(dup()?);
    }
    sys::configure_child(
        &mut cmd,
        sys::ChildSetup {
            setsid: true,
            dup2: vec![(ready_w.as_raw_fd(), 3)],
            chdir_root: true,
            ..sys::ChildSetup::default()
        },
    );
    let mut child = cmd
        .spawn()
        .map_err(RunmError::io("cannot start", "runm exec-relay"))?;
    drop(ready_w);
    match sandbox::wait_ready(&ready_r, Duration::from_secs(120)) {
        Ok(pid) => Ok(pid),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e.into())
        }
    }
}

/// `runm exec-relay`: the detached relay.
pub fn relay_main(ctx: &Ctx, a: ExecRelayArgs) -> Result<i32, RunmError> {
    let sigset = sys::block_signals(&sys::relayed_signals()).ok();
    let ready =
        sys::adopt_fd(a.ready_fd).map_err(RunmError::io("no ready descriptor", "exec-relay"))?;
    let _ = sys::set_cloexec(&ready);
    let process: ProcessSpec = serde_json::from_str(&a.process_json)
        .map_err(|e| RunmError::Usage(format!("malformed --process-json: {e}")))?;
    let dir = ctx.dir(&a.container_id)?;
    // With a terminal, our stdio is the console's pty: as its session's
    // leader we get its size changes.
    let sized = process.terminal && sys::take_controlling_terminal(rustix::stdio::stdin()).is_ok();
    let fds = match stdio_fds(None) {
        Ok(fds) => fds,
        Err(e) => {
            let e = RunmError::io("cannot duplicate", "stdio")(e);
            sandbox::report_ready(&ready, Err(&e.to_string()));
            return Err(e);
        }
    };
    match control::request(
        &dir.control_socket(),
        &Request::Exec {
            process,
            client_pid: i32::try_from(std::process::id()).ok(),
        },
        Duration::from_secs(90),
    ) {
        Ok((resp, conn)) => {
            let pid = i32::try_from(std::process::id()).unwrap_or(0);
            sandbox::report_ready(&ready, Ok(pid));
            drop(ready);
            Ok(pump(
                &dir,
                conn,
                resp.process_id.unwrap_or(0),
                Tty { raw: false, sized },
                fds,
                sigset,
            ))
        }
        Err(e) => {
            sandbox::report_ready(&ready, Err(&e.to_string()));
            Err(e.into())
        }
    }
}

/// Our ends of an exec'd process's stdio (in, out, err): copies of the
/// terminal `terminal` for all three, else of our own 0-2.
fn stdio_fds(terminal: Option<&OwnedFd>) -> io::Result<[OwnedFd; 3]> {
    let [i, o, e] = match terminal {
        Some(t) => [t.as_fd(); 3],
        None => [
            rustix::stdio::stdin(),
            rustix::stdio::stdout(),
            rustix::stdio::stderr(),
        ],
    };
    Ok([
        i.try_clone_to_owned()?,
        o.try_clone_to_owned()?,
        e.try_clone_to_owned()?,
    ])
}

/// What the relay does with its terminal (its stdin, if one).
struct Tty {
    /// Raw mode while the process runs (our own terminal, not a console's).
    raw: bool,
    /// The process's terminal follows its size, now and on SIGWINCH.
    sized: bool,
}

/// Sends the size of the terminal `tty` as the process's, if it is one.
fn send_size(writer: &Mutex<UnixStream>, tty: &OwnedFd, process_id: u32) {
    if let Some((rows, cols)) = sys::terminal_size(tty) {
        let frame = Frame::Control(Box::new(Message::Resize {
            process_id,
            rows,
            cols,
        }));
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = proto::write_frame(&mut *w, &frame);
    }
}

/// Relays stdio between `fds` (in, out, err) and the exec'd process until it
/// exits; returns its status.
fn pump(
    dir: &ContainerDir,
    conn: UnixStream,
    process_id: u32,
    tty: Tty,
    fds: [OwnedFd; 3],
    sigset: Option<sys::SigSet>,
) -> i32 {
    let [input, output, error] = fds;
    // Shared with the stdin and signal threads, which may outlive this function.
    let input = Arc::new(input);
    let saved = if tty.raw && rustix::termios::isatty(&input) {
        sys::make_raw(&input).ok()
    } else {
        None
    };
    // Frames to the sandbox come from two threads: one writer, one frame at a time.
    let writer = conn.try_clone().ok().map(|c| Arc::new(Mutex::new(c)));
    let sized = tty.sized && rustix::termios::isatty(&input);
    if let (true, Some(w)) = (sized, &writer) {
        send_size(w, &input, process_id);
    }
    if let Some(set) = sigset {
        let sock = dir.control_socket();
        let (writer, input) = (writer.clone(), Arc::clone(&input));
        std::thread::spawn(move || loop {
            let Ok(signal) = set.wait() else { return };
            if signal == sys::RESIZE_SIGNAL {
                if let (true, Some(w)) = (sized, &writer) {
                    send_size(w, &input, process_id);
                }
                continue;
            }
            let req = Request::Kill {
                signal,
                all: false,
                process_id: Some(process_id),
            };
            let _ = control::request(&sock, &req, Duration::from_secs(10));
        });
    }
    if let Some(out) = writer {
        let stdin = Arc::clone(&input);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = sys::read(&stdin, &mut buf).unwrap_or(0);
                let frame = Frame::Data {
                    process_id,
                    stream: Stream::Stdin,
                    data: buf[..n].to_vec(),
                };
                let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
                if proto::write_frame(&mut *w, &frame).is_err() || n == 0 {
                    return;
                }
            }
        });
    }
    let mut conn = conn;
    let status = loop {
        match proto::read_frame(&mut conn) {
            Ok(Some(Frame::Data { stream, data, .. })) => {
                let fd = if stream == Stream::Stderr {
                    &error
                } else {
                    &output
                };
                let _ = sys::write_all(fd, &data);
            }
            Ok(Some(Frame::Control(m))) => {
                if let Message::Exited { status, .. } = *m {
                    break status;
                }
            }
            Ok(None) | Err(_) => {
                crate::logging::error(&format!(
                    "container {}: the VM went away before the exec'd process reported its exit",
                    dir.id
                ));
                break STATUS_LOST;
            }
        }
    };
    if let Some(t) = &saved {
        sys::restore_termios(&input, t);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_replaces_keys() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        merge_env(&mut env, &["A=2".to_string(), "B=3".to_string()]);
        assert_eq!(env, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("1000:100").unwrap(), (1000, Some(100)));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
    }
}
