//! The `runm-vmm` binary: flags or a JSON config in, one VM run, its exit
//! status out (0 clean guest exit, 1 error before the guest ran, 2 guest
//! kernel panic, 3 vCPU failure, 128+N on signal N).

#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vm_spec::{
    ConfigError, Console, CpuTemplateName, DiskConfig, FsConfig, NetConfig, VmConfig, VsockConfig,
};
use vmm::RunOptions;

/// Boot a Linux guest on KVM.
#[derive(Parser, Debug, Clone)]
#[command(name = "runm-vmm", version, about)]
struct Cli {
    /// JSON config file (the runtime writes one); cannot be mixed with VM flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "initrd", "cmdline", "mem_mib", "vcpus", "console", "cpu_template", "disk", "vsock", "net", "rng", "fs", "console_max_bytes", "jail_root"])]
    config: Option<PathBuf>,
    /// Guest kernel: ELF vmlinux or bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line (replaces the default; devices are still appended).
    #[arg(long, value_name = "ARGS")]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long = "mem-mib", alias = "memory", value_name = "MIB")]
    mem_mib: Option<u64>,
    /// Number of vCPUs.
    #[arg(long, value_name = "N")]
    vcpus: Option<u8>,
    /// Console: stdout, off, or file:PATH.
    #[arg(long, value_name = "DEST")]
    console: Option<Console>,
    /// CPU template: auto (pvm on PVM hosts), host, pvm.
    #[arg(long = "cpu-template", value_name = "NAME")]
    cpu_template: Option<CpuTemplateName>,
    /// virtio-blk disk PATH[,ro]; repeat for more.
    #[arg(long, value_name = "PATH[,ro]")]
    disk: Vec<DiskConfig>,
    /// virtio-vsock CID,UDS_PATH.
    #[arg(long, value_name = "CID,UDS")]
    vsock: Option<VsockConfig>,
    /// virtio-net TAP[,MAC] (a tap by name) or fd=N[,MAC] (an inherited,
    /// attached tap); repeat for more.
    #[arg(long, value_name = "TAP[,MAC]")]
    net: Vec<NetConfig>,
    /// virtio-rng fed from the host's getrandom.
    #[arg(long)]
    rng: bool,
    /// virtio-fs TAG,SOCKET served by the vhost-user backend (virtiofsd)
    /// listening on SOCKET; repeat for more.
    #[arg(long, value_name = "TAG,SOCKET")]
    fs: Vec<FsConfig>,
    /// Most bytes a console file holds; past it the oldest half is dropped.
    #[arg(long = "console-max-bytes", value_name = "BYTES")]
    console_max_bytes: Option<u64>,
    /// Jail: an existing empty directory to mount the VMM's root on; the VMM
    /// then runs in its own mount and PID namespaces as --jail-uid/--jail-gid
    /// without capabilities (needs root to start).
    #[arg(long = "jail-root", value_name = "DIR", requires_all = ["jail_uid", "jail_gid"])]
    jail_root: Option<PathBuf>,
    /// Jail: the uid the VMM runs the guest as (not 0).
    #[arg(long = "jail-uid", value_name = "UID", requires = "jail_root")]
    jail_uid: Option<u32>,
    /// Jail: the gid the VMM runs the guest as (not 0).
    #[arg(long = "jail-gid", value_name = "GID", requires = "jail_root")]
    jail_gid: Option<u32>,
    /// Jail: RLIMIT_NOFILE.
    #[arg(long = "jail-max-open-files", value_name = "N", requires = "jail_root")]
    jail_max_open_files: Option<u64>,
    /// Jail: RLIMIT_FSIZE in bytes (default: the largest of the console cap,
    /// the largest writable disk and stdout/stderr's room to grow).
    #[arg(
        long = "jail-max-file-size",
        value_name = "BYTES",
        requires = "jail_root"
    )]
    jail_max_file_size: Option<u64>,
    /// Jail: stay in the host's PID namespace.
    #[arg(long = "jail-no-pid-ns", requires = "jail_root")]
    jail_no_pid_ns: bool,
    /// Set by runm-vmm on the copy of itself it starts in a new PID
    /// namespace, naming the pipe that tells it its parent is alive.
    #[arg(long = "jail-pid-ns-child", hide = true, value_name = "FD")]
    jail_pid_ns_child: Option<i32>,
    /// Log level on stderr: error, warn, info, debug.
    #[arg(long = "log-level", default_value = "warn", value_name = "LEVEL", value_parser = parse_level)]
    log_level: log::LevelFilter,
    /// Most bytes this VMM writes to its log (stderr); then it stops logging.
    #[arg(long = "log-max-bytes", default_value_t = vmm::logger::DEFAULT_MAX_BYTES, value_name = "BYTES")]
    log_max_bytes: u64,
    /// Print boot phase timestamps (CLOCK_MONOTONIC) on stderr.
    #[arg(long = "print-phases")]
    print_phases: bool,
    /// Per-thread seccomp filters: on (a call outside the allowlist kills the
    /// VMM), log (the kernel logs it; for debugging) or off (debugging only).
    #[arg(long, default_value = "on", value_name = "on|off|log")]
    seccomp: vmm::seccomp::SeccompMode,
}

impl Cli {
    fn vm_config(&self) -> Result<VmConfig, ConfigError> {
        if let Some(path) = &self.config {
            return VmConfig::from_file(path);
        }
        let this = self.clone();
        let mut c = VmConfig::new(this.kernel.unwrap_or_default());
        c.initrd = this.initrd;
        c.cmdline = this.cmdline;
        if let Some(m) = self.mem_mib {
            c.mem_mib = m;
        }
        if let Some(v) = self.vcpus {
            c.vcpus = v;
        }
        if let Some(con) = this.console {
            c.console = con;
        }
        if let Some(t) = this.cpu_template {
            c.cpu_template = t;
        }
        c.disks = this.disk;
        c.vsock = this.vsock;
        c.nets = this.net;
        c.rng = this.rng;
        c.fs = this.fs;
        if let Some(m) = this.console_max_bytes {
            c.console_max_bytes = m;
        }
        if let (Some(root), Some(uid), Some(gid)) = (this.jail_root, this.jail_uid, this.jail_gid) {
            let mut j = vm_spec::JailConfig::new(root, uid, gid);
            if let Some(n) = this.jail_max_open_files {
                j.max_open_files = n;
            }
            j.max_file_size = this.jail_max_file_size;
            j.new_pid_ns = !this.jail_no_pid_ns;
            c.jail = Some(j);
        }
        Ok(c)
    }
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not one of off, error, warn, info, debug, trace"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level;
    let _ =
        vmm::logger::Logger::new(level, cli.log_max_bytes, Box::new(std::io::stderr())).install();
    let options = RunOptions {
        handle_signals: true,
        print_phases: cli.print_phases,
        seccomp: cli.seccomp,
    };
    let config = match cli.vm_config().and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => return fail(&vmm::VmmError::from(e)),
    };
    let in_pid_ns = config.jail.as_ref().is_some_and(|j| j.new_pid_ns);
    if let Some(parent_alive) = cli.jail_pid_ns_child {
        if let Err(e) = vmm::jail::child_setup(parent_alive) {
            return fail(&e.into());
        }
    } else if in_pid_ns {
        // This process stays outside as the waiting parent of the jailed VMM.
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        return match vmm::jail::spawn_in_new_pid_ns(&args, cli.seccomp) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => fail(&e.into()),
        };
    }
    match vmm::run(&config, options) {
        Ok(report) => {
            let code = report.exit_code();
            if code == 0 {
                log::info!("{report}");
            } else {
                eprintln!("runm-vmm: {report}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &vmm::VmmError) -> ExitCode {
    eprintln!("runm-vmm: error: {e}");
    ExitCode::from(1)
}
