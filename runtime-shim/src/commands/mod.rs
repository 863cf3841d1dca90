//! One module per runm command: each turns parsed arguments into calls on
//! the library modules and returns the exit status. What they share is here:
//! the global context ([`Ctx`]) and dispatch.

pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command as ProcessCommand;

use crate::cli::{Cli, Command, GlobalOpts, LogFormatArg};
use crate::error::RunmError;
use crate::logging;
use crate::state::{ContainerDir, State};
use crate::sys;

/// What every command needs from the global options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Runtime root (absolute).
    pub root: PathBuf,
    /// Log file (absolute).
    pub log: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormatArg,
    /// Debug logging.
    pub debug: bool,
    /// `--hypervisor`.
    pub hypervisor: Option<String>,
    /// `--systemd-cgroup`: `linux.cgroupsPath` is `slice:prefix:name`.
    pub systemd_cgroup: bool,
}

/// `p` made absolute against the current directory (child processes run
/// elsewhere).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

impl Ctx {
    fn new(g: &GlobalOpts) -> Self {
        Ctx {
            root: absolute(&g.root),
            log: g.log.as_deref().map(absolute),
            log_format: g.log_format,
            debug: g.debug,
            hypervisor: g.hypervisor.clone(),
            systemd_cgroup: g.systemd_cgroup,
        }
    }

    /// The container's directory (validates the id).
    pub fn dir(&self, id: &str) -> Result<ContainerDir, RunmError> {
        Ok(ContainerDir::new(&self.root, id)?)
    }

    /// The container's state, with a gone sandbox counted as stopped.
    pub fn load(&self, dir: &ContainerDir) -> Result<State, RunmError> {
        let mut st = dir.load()?;
        st.refresh();
        Ok(st)
    }

    /// This runm binary with the global options, for the processes runm
    /// leaves behind (the sandbox, the exec relay).
    pub fn runm(&self) -> Result<ProcessCommand, RunmError> {
        let exe =
            std::env::current_exe().map_err(RunmError::io("cannot find", "/proc/self/exe"))?;
        let mut cmd = ProcessCommand::new(exe);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = &self.log {
            cmd.arg("--log").arg(log);
        }
        cmd.arg("--log-format").arg(match self.log_format {
            LogFormatArg::Text => "text",
            LogFormatArg::Json => "json",
        });
        if self.debug {
            cmd.arg("--debug");
        }
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        Ok(cmd)
    }
}

/// Runs the command; returns the process's exit status.
pub fn dispatch(cli: Cli) -> i32 {
    let ctx = Ctx::new(&cli.global);
    let format = cli.global.log_format.into();
    // The sandbox's stderr belongs to the container: it logs to --log or to
    // a file in the container's directory, never to stderr.
    let (log_file, people) = match &cli.command {
        Command::Sandbox(a) => (
            Some(ctx.log.clone().unwrap_or_else(|| {
                ContainerDir::new(&ctx.root, &a.container_id)
                    .map(|d| d.sandbox_log())
                    .unwrap_or_else(|_| PathBuf::from("/dev/null"))
            })),
            false,
        ),
        Command::ExecRelay(_) => (ctx.log.clone(), false),
        _ => (ctx.log.clone(), true),
    };
    if let Err(e) = logging::init(log_file.as_deref(), format, ctx.debug, people) {
        eprintln!("runm: {e}");
        return 1;
    }
    let result = match cli.command {
        Command::Create(a) => create::run(&ctx, a),
        Command::Start(a) => start::run(&ctx, &a.container_id),
        Command::State(a) => state::run(&ctx, &a.container_id),
        Command::Kill(a) => kill::run(&ctx, a),
        Command::Delete(a) => delete::run(&ctx, &a.container_id, a.force),
        Command::Run(a) => run::run(&ctx, a),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Pause(a) => pause::run(&ctx, &a.container_id, true),
        Command::Resume(a) => pause::run(&ctx, &a.container_id, false),
        Command::Update(a) => update::run(&ctx, a),
        Command::Spec(a) => spec::run(&a.bundle),
        Command::Features => features::run(),
        Command::Sandbox(a) => Ok(crate::sandbox::main(
            &ctx.root,
            &a.container_id,
            a.ready_fd,
            a.gate_fd,
        )),
        Command::ExecRelay(a) => exec::relay_main(&ctx, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::error(&e.to_string());
            1
        }
    }
}

/// Opens a pty, sends its master over the console socket (runc's protocol),
/// and returns the slave in raw mode: the guest's own pty does the line
/// discipline, this one only carries bytes.
pub(crate) fn console_pty(socket: &Path) -> Result<OwnedFd, RunmError> {
    let (master, slave, name) =
        sys::open_pty().map_err(RunmError::io("cannot open a pseudo terminal", "/dev/ptmx"))?;
    sys::make_raw(&slave).map_err(RunmError::io("cannot set raw mode on", &name))?;
    let sock = UnixStream::connect(socket)
        .map_err(RunmError::io("cannot connect to console socket", socket))?;
    sys::send_fd(&sock, name.as_bytes(), master.as_fd()).map_err(RunmError::io(
        "cannot send the terminal to console socket",
        socket,
    ))?;
    Ok(slave)
}
