//! runm's command line, runc-compatible: the names and flags of runc and
//! youki's liboci-cli. Options may come before or after the container id;
//! global options may also come after the subcommand. Only this module and
//! `commands/` see clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// runm: run OCI containers, each in its own KVM microVM.
#[derive(Debug, Parser)]
#[command(
    name = "runm",
    version = version_text(),
    about = "runm: an OCI runtime that runs each container in its own KVM microVM (runc-compatible)"
)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `runm --version`, like runc's (version, then the spec version).
const fn version_text() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0")
}

/// Options for every command.
#[derive(Debug, Args, Clone)]
pub struct GlobalOpts {
    /// Root directory for container state.
    #[arg(long, global = true, default_value = crate::state::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Hypervisor: auto (runm-vmm on real KVM, QEMU elsewhere), runm-vmm or qemu.
    /// Overrides the bundle's io.runm.hypervisor annotation.
    #[arg(long, global = true, value_name = "auto|runm-vmm|qemu")]
    pub hypervisor: Option<String>,
    /// linux.cgroupsPath is in systemd's slice:prefix:name form; runm creates
    /// the cgroup systemd would use for that unit (without asking systemd).
    #[arg(long, global = true, hide = true)]
    pub systemd_cgroup: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// logrus-style text.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: build its disk, boot its VM; its process waits for `start`.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start(IdArg),
    /// Print the state of a container (OCI state JSON).
    State(IdArg),
    /// Send a signal to a container's process.
    Kill(KillArgs),
    /// Delete a container and everything runm keeps for it.
    Delete(DeleteArgs),
    /// Create and start a container; without --detach, wait and exit with its status.
    Run(RunArgs),
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// List containers.
    List(ListArgs),
    /// List a container's processes (host pids; the table adds guest pids).
    Ps(PsArgs),
    /// Stop a running container's VM (its vCPUs).
    Pause(IdArg),
    /// Continue a paused container's VM.
    Resume(IdArg),
    /// Change a container's resources (what a running VM allows).
    Update(UpdateArgs),
    /// Write a default config.json for a new bundle.
    Spec(SpecArgs),
    /// Print what runm supports (JSON, like `runc features`).
    Features,
    /// Internal: the per-container process `create` starts.
    #[command(hide = true)]
    Sandbox(SandboxArgs),
    /// Internal: the process `exec --detach` leaves behind to relay stdio.
    #[command(hide = true)]
    ExecRelay(ExecRelayArgs),
}

/// A container id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Container id.
    pub container_id: String,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pseudo terminal's master to (terminal: true).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, hide = true)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    /// Extra file descriptors to pass (not supported: must be 0).
    #[arg(long, default_value_t = 0, hide = true)]
    pub preserve_fds: u32,
    /// Container id.
    pub container_id: String,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pseudo terminal's master to (terminal: true).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Return once started instead of waiting for the process.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits (no delete).
    #[arg(long)]
    pub keep: bool,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, hide = true)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    /// Extra file descriptors to pass (not supported: must be 0).
    #[arg(long, default_value_t = 0, hide = true)]
    pub preserve_fds: u32,
    /// Container id.
    pub container_id: String,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container.
    #[arg(short, long)]
    pub all: bool,
    /// Container id.
    pub container_id: String,
    /// Signal name (TERM, SIGKILL, ...) or number; default SIGTERM.
    pub signal: Option<String>,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete even a running container (its VM is killed).
    #[arg(short, long)]
    pub force: bool,
    /// Container id.
    pub container_id: String,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// JSON file with the OCI process to run (instead of a command line).
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once the process started (a relay process stays behind).
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the pid of the process relaying the exec'd process's stdio.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Run on a pseudo terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket to send the terminal's master to (not supported yet for exec).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Environment variables (KEY=value), added to the container's.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// User: UID[:GID].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids.
    #[arg(short = 'g', long, value_delimiter = ',')]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privileges for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the bounding, effective and permitted sets (as runc).
    #[arg(long)]
    pub cap: Vec<String>,
    /// Extra file descriptors to pass (not supported: must be 0).
    #[arg(long, default_value_t = 0, hide = true)]
    pub preserve_fds: u32,
    /// Container id.
    pub container_id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// OCI `linux.resources` as JSON, from a file or `-` for stdin.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (guest RAM cannot change: only the current size is accepted).
    #[arg(short, long)]
    pub memory: Option<i64>,
    /// CPU CFS quota in microseconds (host cgroup).
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds (host cgroup).
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU shares (host cgroup).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// Pids limit (refused: the workload's processes are in the VM).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Container id.
    pub container_id: String,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `list --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Columns for people.
    Table,
    /// JSON array.
    Json,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Container id.
    pub container_id: String,
    /// ps(1) options (not supported: the processes are inside the VM).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub ps_args: Vec<String>,
}

/// `spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

/// `sandbox` (internal).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Descriptor to report readiness on.
    #[arg(long)]
    pub ready_fd: i32,
    /// Descriptor to wait on before building the VM: `create` writes `go`
    /// once the hooks that prepare the network namespace have run.
    #[arg(long)]
    pub gate_fd: Option<i32>,
    /// Container id.
    pub container_id: String,
}

/// `exec-relay` (internal).
#[derive(Debug, Args)]
pub struct ExecRelayArgs {
    /// Descriptor to report the start on.
    #[arg(long)]
    pub ready_fd: i32,
    /// The process, as the agent protocol's JSON.
    #[arg(long)]
    pub process_json: String,
    /// Container id.
    pub container_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("runm").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_before_or_after_the_id() {
        let a = parse(&["--root", "/r", "create", "--bundle", "/b", "c1"]);
        let b = parse(&["create", "c1", "--bundle", "/b", "--root", "/r"]);
        for cli in [a, b] {
            assert_eq!(cli.global.root, PathBuf::from("/r"));
            match cli.command {
                Command::Create(c) => {
                    assert_eq!(c.container_id, "c1");
                    assert_eq!(c.bundle, PathBuf::from("/b"));
                }
                c => panic!("{c:?}"),
            }
        }
        match parse(&["delete", "c1", "--force"]).command {
            Command::Delete(d) => assert!(d.force),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn kill_signal_is_optional_and_positional() {
        match parse(&["kill", "c1", "KILL", "--all"]).command {
            Command::Kill(k) => {
                assert_eq!(k.signal.as_deref(), Some("KILL"));
                assert!(k.all);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["kill", "c1"]).command {
            Command::Kill(k) => assert_eq!(k.signal, None),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn exec_takes_a_command_after_the_id() {
        match parse(&[
            "exec",
            "--tty",
            "c1",
            "--env",
            "A=b",
            "--",
            "sh",
            "-c",
            "echo -n hi",
        ])
        .command
        {
            Command::Exec(e) => {
                assert!(e.tty);
                assert_eq!(e.env, vec!["A=b"]);
                assert_eq!(e.command, vec!["sh", "-c", "echo -n hi"]);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["exec", "c1", "ls", "-l"]).command {
            Command::Exec(e) => assert_eq!(e.command, vec!["ls", "-l"]),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn containerd_shapes() {
        // As containerd's runc shim calls them (global options first).
        let g = [
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
        ];
        let with = |rest: &[&'static str]| {
            let mut v: Vec<&str> = g.to_vec();
            v.extend_from_slice(rest);
            parse(&v)
        };
        match with(&[
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--no-pivot",
            "--no-new-keyring",
            "--preserve-fds",
            "0",
            "c1",
        ])
        .command
        {
            Command::Create(c) => {
                assert!(c.no_pivot && c.no_new_keyring);
                assert_eq!(c.pid_file, Some(PathBuf::from("/b/init.pid")));
            }
            c => panic!("{c:?}"),
        }
        match with(&["kill", "--all", "c1", "9"]).command {
            Command::Kill(k) => assert!(k.all && k.signal.as_deref() == Some("9")),
            c => panic!("{c:?}"),
        }
        match with(&[
            "exec",
            "--process",
            "/tmp/p.json",
            "--detach",
            "--pid-file",
            "/b/e1.pid",
            "c1",
        ])
        .command
        {
            Command::Exec(e) => assert!(e.detach && e.process.is_some() && e.command.is_empty()),
            c => panic!("{c:?}"),
        }
        match with(&["ps", "--format", "json", "c1"]).command {
            Command::Ps(p) => assert_eq!(p.format, ListFormat::Json),
            c => panic!("{c:?}"),
        }
        match with(&["update", "--resources", "-", "c1"]).command {
            Command::Update(u) => assert_eq!(u.resources, Some(PathBuf::from("-"))),
            c => panic!("{c:?}"),
        }
        assert!(matches!(with(&["pause", "c1"]).command, Command::Pause(_)));
        assert!(matches!(
            with(&["resume", "c1"]).command,
            Command::Resume(_)
        ));
        assert!(matches!(
            with(&["delete", "--force", "c1"]).command,
            Command::Delete(DeleteArgs { force: true, .. })
        ));
    }

    #[test]
    fn global_defaults() {
        let cli = parse(&["list", "--format", "json"]);
        assert_eq!(cli.global.root, PathBuf::from("/run/runm"));
        assert_eq!(cli.global.log_format, LogFormatArg::Text);
        assert!(cli.global.hypervisor.is_none());
        let cli = parse(&["--log-format", "json", "--log", "/l", "state", "x"]);
        assert_eq!(cli.global.log_format, LogFormatArg::Json);
        assert_eq!(cli.global.log, Some(PathBuf::from("/l")));
    }
}
