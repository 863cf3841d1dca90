//! runm-vmm: a KVM virtual machine monitor that boots one minimal Linux guest.
//!
//! Data flows one way: a validated [`config::VmConfig`] in, the VM built
//! ([`Vmm::build`]: memory, kernel, boot structures, devices, vCPUs), the loop
//! run ([`Vmm::run`]: vCPU threads plus one event-loop thread) and an
//! [`ExitReport`] out, which the binary turns into its exit status.

// Guest-written numbers and sizes from the configuration are converted in
// this crate: a conversion that could cut or flip one is a bug here (tests
// build their own, small values and may cast).
#![cfg_attr(
    not(test),
    deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)
)]

pub mod boot;
pub mod config;
pub mod console;
pub mod device_manager;
pub mod event_loop;
pub mod jail;
pub mod kvm;
pub mod layout;
pub mod logger;
pub mod memory;
pub mod seccomp;
pub mod signal;
pub mod vcpu;
pub mod vm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::Kvm;

use boot::cmdline::{Cmdline, CmdlineError};
use boot::loader::LoaderError;
use config::{Console, VmConfig};
use device_manager::{DeviceError, DeviceManager, InheritedTaps};
use event_loop::{Controller, EventManager, ExitReason, ExitState};
use event_manager::SubscriberOps;
use seccomp::ThreadKind;
use vcpu::cpuid::CpuTemplate;
use vcpu::exit::GuestStop;
use vcpu::{Vcpu, VcpuEnd, VcpuError, VcpuHandle};
use vm_spec::{Phase, PhaseMark};

/// Everything that can stop a VM from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// KVM could not be opened.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// More vCPUs than KVM allows.
    #[error("vcpu count {asked} is more than KVM allows on this host ({max})")]
    TooManyVcpus { asked: u8, max: usize },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The KVM VM.
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    /// Loading kernel, initrd or command line.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The command line.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// The zero page.
    #[error(transparent)]
    BootParams(#[from] boot::bootparams::BootParamsError),
    /// The MP table.
    #[error(transparent)]
    Mptable(#[from] boot::mptable::MptableError),
    /// Page tables, GDT.
    #[error(transparent)]
    Regs(#[from] vcpu::regs::RegsError),
    /// Devices.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// vCPUs.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The console destination.
    #[error("cannot open console file {path}: {source}")]
    Console {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("cannot read KVM's supported CPUID: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// The event loop.
    #[error("event loop: {0}")]
    EventLoop(String),
    /// Signal handling.
    #[error(transparent)]
    Signal(#[from] signal::SignalError),
    /// A thread's seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The jail.
    #[error(transparent)]
    Jail(#[from] jail::JailError),
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReport {
    /// The guest reset, halted or powered off by itself: success.
    Clean(String),
    /// The guest kernel panicked (the panic line from its console).
    GuestPanic(String),
    /// A vCPU failed: KVM internal error, entry failure, unexpected exit.
    VcpuFailed(String),
    /// SIGINT or SIGTERM.
    Signal(i32),
}

impl ExitReport {
    /// The process exit status: 0 clean, 2 guest panic, 3 vCPU failure,
    /// 128 + N for signal N (1 is left for errors before the guest ran).
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReport::Clean(_) => 0,
            ExitReport::GuestPanic(_) => 2,
            ExitReport::VcpuFailed(_) => 3,
            ExitReport::Signal(n) => 128 + n,
        }
    }
}

impl ExitReport {
    /// What the VM's end amounts to: the exit reason the controller recorded,
    /// and the kernel panic line the console showed, if any (a panicked guest
    /// resets, which must not pass for a clean exit).
    pub fn from_reason(reason: ExitReason, panic: Option<String>) -> Self {
        match (reason, panic) {
            (ExitReason::Signal(n), _) => ExitReport::Signal(n),
            (ExitReason::VcpuFailed(m), _) => ExitReport::VcpuFailed(m),
            (_, Some(line)) => ExitReport::GuestPanic(line),
            (ExitReason::GuestReset, None) => ExitReport::Clean("reset".into()),
            (ExitReason::GuestHalted, None) => ExitReport::Clean("halted".into()),
            (ExitReason::GuestPowerOff, None) => ExitReport::Clean("powered off".into()),
        }
    }
}

impl std::fmt::Display for ExitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReport::Clean(how) => write!(f, "guest {how}"),
            ExitReport::GuestPanic(line) => write!(f, "guest kernel panicked: {line}"),
            ExitReport::VcpuFailed(msg) => write!(f, "{msg}"),
            ExitReport::Signal(n) => write!(f, "stopped by signal {n}"),
        }
    }
}

/// Options of the run that are not part of the VM itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Turn SIGINT/SIGTERM into a clean teardown (the binary does; tests don't).
    pub handle_signals: bool,
    /// Print [`vm_spec::PhaseMark`] lines on stderr for the benchmarks.
    pub print_phases: bool,
    /// The threads' seccomp filters (on unless debugging).
    pub seccomp: seccomp::SeccompMode,
}

/// A built VM, ready to run.
pub struct Vmm {
    // Field order is drop order: vCPUs and the VM go before guest memory.
    vcpus: Vec<Vcpu>,
    devices: DeviceManager,
    _vm: vm::Vm,
    _mem: memory::GuestMemory,
    cmdline: String,
    template: CpuTemplate,
    options: RunOptions,
}

fn phase(options: &RunOptions, phase: Phase) {
    if options.print_phases {
        eprintln!("{}", PhaseMark::now(phase));
    }
}

impl Vmm {
    /// Builds the VM described by `config` on `kvm`, its taps given by
    /// descriptor from `taps` ([`InheritedTaps::claim`]). On failure nothing
    /// is left behind: a console file this call created is removed again.
    pub fn build(
        kvm: &Kvm,
        config: &VmConfig,
        options: RunOptions,
        taps: InheritedTaps,
    ) -> Result<Self, VmmError> {
        config.validate()?;
        let new_console_file = match &config.console {
            Console::File(p) if !p.exists() => Some(p.clone()),
            _ => None,
        };
        let built = Self::build_inner(kvm, config, options, taps);
        if let (Err(_), Some(p)) = (&built, new_console_file) {
            let _ = std::fs::remove_file(p);
        }
        built
    }

    fn build_inner(
        kvm: &Kvm,
        config: &VmConfig,
        options: RunOptions,
        mut taps: InheritedTaps,
    ) -> Result<Self, VmmError> {
        let max = kvm.get_max_vcpus();
        if usize::from(config.vcpus) > max {
            return Err(VmmError::TooManyVcpus {
                asked: config.vcpus,
                max,
            });
        }
        let template = CpuTemplate::resolve(config.cpu_template, kvm::KvmFlavor::detect());
        let console =
            console::open(&config.console, config.console_max_bytes).map_err(|source| {
                VmmError::Console {
                    path: match &config.console {
                        Console::File(p) => p.display().to_string(),
                        other => format!("{other:?}"),
                    },
                    source,
                }
            })?;

        // A vhost-user backend maps guest memory itself: share it then.
        let backing = if config.fs.is_empty() {
            memory::Backing::Anonymous
        } else {
            memory::Backing::SharedMemfd
        };
        let mem = memory::create_with(config.mem_mib, backing)?;
        let vm = vm::Vm::new(kvm, &mem, true)?;
        let mut devices = DeviceManager::new(&vm, console)?;
        devices.add_configured_virtio(&vm, &mem, config, &mut taps)?;

        let kernel = boot::loader::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(p) => Some(boot::loader::load_initrd(&mem, p, kernel.end)?),
            None => None,
        };
        let mut cmdline = Cmdline::new(config.base_cmdline())?;
        cmdline.push(template.kernel_args())?;
        for entry in &devices.cmdline_entries {
            cmdline.push(entry)?;
        }
        boot::loader::write_cmdline(&mem, &cmdline)?;
        let params = boot::bootparams::build(
            config.mem_mib << 20,
            cmdline.as_str().len() + 1,
            initrd,
            kernel.setup_header,
        )?;
        boot::bootparams::write(&mem, &params)?;
        boot::mptable::setup_mptable(&mem, config.vcpus, layout::IRQ_MAX)?;
        vcpu::regs::write_page_tables(&mem)?;
        vcpu::regs::write_gdt_idt(&mem)?;

        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::SupportedCpuid)?;
        let vcpus = (0..config.vcpus)
            .map(|i| {
                let entry = (i == 0).then_some(kernel.entry.0);
                Vcpu::new(&vm, i, config.vcpus, &supported, template, entry)
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Vmm {
            vcpus,
            devices,
            _vm: vm,
            _mem: mem,
            cmdline: cmdline.as_str().to_string(),
            template,
            options,
        })
    }

    /// The kernel command line the guest gets.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The CPU template in use.
    pub fn template(&self) -> CpuTemplate {
        self.template
    }

    /// Runs the VM until the guest ends it, a vCPU fails or a signal arrives.
    pub fn run(mut self) -> Result<ExitReport, VmmError> {
        let state = ExitState::new().map_err(|e| VmmError::EventLoop(e.to_string()))?;
        let signals = if self.options.handle_signals {
            Some(signal::TermSignals::new()?)
        } else {
            None
        };
        let reset = self
            .devices
            .reset_evt
            .try_clone()
            .map_err(|e| VmmError::EventLoop(e.to_string()))?;
        let controller = Arc::new(Mutex::new(Controller::new(state.clone(), reset, signals)));
        let mut em = EventManager::new().map_err(|e| VmmError::EventLoop(format!("{e:?}")))?;
        em.add_subscriber(controller.clone());
        for device in self.devices.subscribers.drain(..) {
            em.add_subscriber(device);
        }

        vcpu::install_kick_handler()?;
        let mode = self.options.seccomp;
        // The virtio-fs watchdogs, each under its own filter: this is after
        // the jail (see `run`), before any vCPU can send a request.
        let watchdog_filter = seccomp::filter(ThreadKind::VhostUserWatchdog, mode)?;
        self.devices.start_fs_watchdogs(|| {
            let filter = watchdog_filter.clone();
            Box::new(move || match &filter {
                Some(f) => {
                    seccomp::install(ThreadKind::VhostUserWatchdog, f).map_err(|e| e.to_string())
                }
                None => Ok(()),
            })
        })?;
        let loop_filter = seccomp::filter(ThreadKind::EventLoop, mode)?;
        let main_filter = seccomp::filter(ThreadKind::Main, mode)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles: Vec<VcpuHandle> = Vec::new();
        let stop_all = |handles: &mut Vec<VcpuHandle>| {
            stop.store(true, Ordering::Release);
            for h in handles {
                h.stop_and_join(Duration::from_secs(5));
            }
        };
        phase(&self.options, Phase::VcpusStart);
        for mut v in self.vcpus.drain(..) {
            if self.options.print_phases && handles.is_empty() {
                v.announce_first_run();
            }
            v.set_seccomp(mode);
            let state = state.clone();
            let h = v.start(self.devices.io.clone(), stop.clone(), move |index, end| {
                let reason = match end {
                    VcpuEnd::Requested => return,
                    VcpuEnd::Guest(GuestStop::Halted) => ExitReason::GuestHalted,
                    VcpuEnd::Guest(GuestStop::Reset) => ExitReason::GuestReset,
                    VcpuEnd::Guest(GuestStop::PowerOff) => ExitReason::GuestPowerOff,
                    VcpuEnd::Failed(msg) => ExitReason::VcpuFailed(msg),
                };
                log::debug!("vCPU {index} ended: {reason:?}");
                state.report(reason);
            });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop_all(&mut handles);
                    return Err(e.into());
                }
            }
        }

        // The devices are served on a thread of their own, under its filter.
        let loop_state = state.clone();
        let loop_controller = controller.clone();
        let event_loop = std::thread::Builder::new().name("event-loop".into()).spawn(
            move || -> Result<(), seccomp::SeccompError> {
                if let Some(f) = &loop_filter {
                    seccomp::install(ThreadKind::EventLoop, f)?;
                }
                while !devices::bus::lock(&loop_controller).done() {
                    if let Err(e) = em.run() {
                        log::error!("event loop: {e:?}");
                        loop_state
                            .report(ExitReason::VcpuFailed(format!("event loop failed: {e:?}")));
                    }
                }
                Ok(())
            },
        );
        let event_loop = match event_loop {
            Ok(t) => t,
            Err(e) => {
                stop_all(&mut handles);
                return Err(VmmError::EventLoop(format!("cannot start its thread: {e}")));
            }
        };
        // Last: a thread inherits its creator's filter.
        let mut failure = None;
        if let Some(f) = &main_filter {
            if let Err(e) = seccomp::install(ThreadKind::Main, f) {
                state.report(ExitReason::VcpuFailed(e.to_string()));
                failure = Some(VmmError::from(e));
            }
        }
        let served = event_loop.join();
        phase(&self.options, Phase::VmExit);
        stop_all(&mut handles);
        self.devices.flush_console();
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(VmmError::EventLoop("its thread panicked".into())),
        }
        if let Some(e) = failure {
            return Err(e);
        }

        let panic = devices::bus::lock(&self.devices.console_watch)
            .panic
            .clone();
        let reason = state.reason().unwrap_or(ExitReason::GuestHalted);
        Ok(ExitReport::from_reason(reason, panic))
    }
}

/// Opens KVM, builds the VM of `config`, enters its jail if it has one, and
/// runs it.
pub fn run(config: &VmConfig, options: RunOptions) -> Result<ExitReport, VmmError> {
    config.validate()?;
    // Before anything of runm-vmm's own is opened (see InheritedTaps).
    let taps = InheritedTaps::claim(config)?;
    let plan = jail::JailPlan::of(config)?;
    if plan.is_some() {
        jail::precheck()?;
    }
    let kvm = kvm::open()?;
    phase(&options, Phase::KvmOpen);
    let new_console_file = match &config.console {
        Console::File(p) if !p.exists() => Some(p.clone()),
        _ => None,
    };
    let vmm = Vmm::build(&kvm, config, options, taps)?;
    // The VM is built: /dev/kvm itself is not needed any more.
    drop(kvm);
    if let Some(plan) = &plan {
        if let Err(e) = jail::enter(plan) {
            if let Some(p) = new_console_file {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        log::info!(
            "jailed in {} as uid {} gid {}",
            plan.config.root.display(),
            plan.config.uid,
            plan.config.gid
        );
    }
    log::info!(
        "booting {} with {} vCPU(s), {} MiB, cpu template {}, cmdline \"{}\"",
        config.kernel.display(),
        config.vcpus,
        config.mem_mib,
        vmm.template().name(),
        vmm.cmdline()
    );
    vmm.run()
}
