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
#[derive(Parser, Debug)]
#[command(name = "runm-vmm", version, about)]
struct Cli {
    /// JSON config file (the runtime writes one); cannot be mixed with VM flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "initrd", "cmdline", "mem_mib", "vcpus", "console", "cpu_template", "disk", "vsock", "net", "rng", "fs"])]
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
    /// Log level on stderr: error, warn, info, debug.
    #[arg(long = "log-level", default_value = "warn", value_name = "LEVEL", value_parser = parse_level)]
    log_level: log::LevelFilter,
    /// Print boot phase timestamps (CLOCK_MONOTONIC) on stderr.
    #[arg(long = "print-phases")]
    print_phases: bool,
}

impl Cli {
    fn vm_config(self) -> Result<VmConfig, ConfigError> {
        if let Some(path) = &self.config {
            return VmConfig::from_file(path);
        }
        let mut c = VmConfig::new(self.kernel.unwrap_or_default());
        c.initrd = self.initrd;
        c.cmdline = self.cmdline;
        if let Some(m) = self.mem_mib {
            c.mem_mib = m;
        }
        if let Some(v) = self.vcpus {
            c.vcpus = v;
        }
        if let Some(con) = self.console {
            c.console = con;
        }
        if let Some(t) = self.cpu_template {
            c.cpu_template = t;
        }
        c.disks = self.disk;
        c.vsock = self.vsock;
        c.nets = self.net;
        c.rng = self.rng;
        c.fs = self.fs;
        Ok(c)
    }
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not one of off, error, warn, info, debug, trace"))
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "runm-vmm: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level;
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    let options = RunOptions {
        handle_signals: true,
        print_phases: cli.print_phases,
    };
    let result = cli
        .vm_config()
        .map_err(vmm::VmmError::from)
        .and_then(|config| vmm::run(&config, options));
    match result {
        Ok(report) => {
            let code = report.exit_code();
            if code == 0 {
                log::info!("{report}");
            } else {
                eprintln!("runm-vmm: {report}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("runm-vmm: error: {e}");
            ExitCode::from(1)
        }
    }
}
