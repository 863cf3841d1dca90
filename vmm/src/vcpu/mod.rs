//! vCPUs: their boot state (registers, CPUID, MSRs, LAPIC), one thread each,
//! and the run loop that dispatches exits until the guest stops or the VMM
//! asks the thread to end.

pub mod cpuid;
pub mod exit;
pub mod msr;
pub mod regs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use self::cpuid::CpuTemplate;
use self::exit::{dispatch, ExitAction, GuestStop, IoBuses};
use crate::seccomp::{self, SeccompError, SeccompMode, ThreadKind};
use crate::vm::Vm;

/// Errors creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {index}: {source}")]
    Create {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A KVM_SET_* call failed while configuring the vCPU.
    #[error("cannot set {what} of vCPU {index}: {source}")]
    Set {
        what: &'static str,
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Building the boot MSR list failed.
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    /// Spawning the vCPU thread failed.
    #[error("cannot start the thread of vCPU {index}: {source}")]
    Spawn {
        index: u8,
        #[source]
        source: std::io::Error,
    },
    /// Registering the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The vCPU thread's seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// How a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    /// The guest stopped (halt, triple fault, system event).
    Guest(GuestStop),
    /// The VMM asked the thread to stop.
    Requested,
    /// The vCPU failed; the message says how, with the guest's RIP.
    Failed(String),
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the (empty) handler for the kick signal: its only job is to make
/// KVM_RUN return EINTR. Called once before vCPU threads start.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    register_signal_handler(kick_signal(), noop).map_err(VcpuError::Signal)
}

/// A configured vCPU, not yet running.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    announce_first_run: bool,
    seccomp: SeccompMode,
}

impl Vcpu {
    /// Creates vCPU `index` and sets its CPUID, MSRs, LAPIC and boot
    /// registers for a 64-bit Linux entry at `entry` (the BSP) or for waiting
    /// on the INIT/SIPI of the BSP (the APs keep KVM's reset state).
    pub fn new(
        vm: &Vm,
        index: u8,
        count: u8,
        supported: &CpuId,
        template: CpuTemplate,
        entry: Option<u64>,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Create { index, source })?;
        let set = |what| {
            move |source| VcpuError::Set {
                what,
                index,
                source,
            }
        };

        let table = cpuid::build(supported, template, index, count);
        fd.set_cpuid2(&table).map_err(set("CPUID"))?;
        if index == 0 {
            // Hosts may override CPUID bits (PVM does): say what the guest really sees.
            if let Ok(back) = fd.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES) {
                for (f, i, s, g) in cpuid::diff(&table, &back) {
                    log::info!(
                        "cpuid {f:#x}.{i}: set {s:08x?}, vCPU reports {g:08x?} (the host changed it)"
                    );
                }
            }
        }
        let msrs = msr::boot_msrs()?;
        let n = fd.set_msrs(&msrs).map_err(set("MSRs"))?;
        if n != msrs.as_slice().len() {
            log::warn!(
                "vCPU {index}: KVM took {n} of {} boot MSRs",
                msrs.as_slice().len()
            );
        }
        set_lint(&fd).map_err(set("LAPIC"))?;
        if let Some(entry) = entry {
            fd.set_fpu(&regs::boot_fpu()).map_err(set("FPU"))?;
            fd.set_regs(&regs::boot_regs(entry))
                .map_err(set("registers"))?;
            let base = fd.get_sregs().map_err(set("special registers"))?;
            fd.set_sregs(&regs::boot_sregs(&base))
                .map_err(set("special registers"))?;
        }
        Ok(Vcpu {
            index,
            fd,
            announce_first_run: false,
            seccomp: SeccompMode::On,
        })
    }

    /// Wraps a vCPU the caller configured itself (tests with tiny guests).
    pub fn from_fd(index: u8, fd: VcpuFd) -> Self {
        Vcpu {
            index,
            fd,
            announce_first_run: false,
            seccomp: SeccompMode::On,
        }
    }

    /// Print the [`vm_spec::Phase::FirstKvmRun`] mark on stderr just
    /// before this vCPU first enters the guest (for the start-up benchmark).
    pub fn announce_first_run(&mut self) {
        self.announce_first_run = true;
    }

    /// How the thread's seccomp filter is installed ([`SeccompMode::On`]
    /// unless changed here, for debugging).
    pub fn set_seccomp(&mut self, mode: SeccompMode) {
        self.seccomp = mode;
    }

    /// Starts the vCPU's thread, which installs its seccomp filter before the
    /// first `KVM_RUN`. `on_end` runs on that thread when it ends, whatever
    /// the reason, so the VMM's event loop learns of it.
    pub fn start<F>(
        mut self,
        io: IoBuses,
        stop: Arc<AtomicBool>,
        on_end: F,
    ) -> Result<VcpuHandle, VcpuError>
    where
        F: FnOnce(u8, VcpuEnd) + Send + 'static,
    {
        let index = self.index;
        let filter = seccomp::filter(ThreadKind::Vcpu, self.seccomp)?;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let end = match filter.map(|f| seccomp::install(ThreadKind::Vcpu, &f)) {
                    Some(Err(e)) => VcpuEnd::Failed(format!("vCPU {index}: {e}")),
                    _ => self.run(&io, &stop),
                };
                on_end(index, end);
            })
            .map_err(|source| VcpuError::Spawn { index, source })?;
        Ok(VcpuHandle {
            thread: Some(thread),
        })
    }

    fn run(&mut self, io: &IoBuses, stop: &AtomicBool) -> VcpuEnd {
        if self.announce_first_run {
            let mark = vm_spec::PhaseMark::now(vm_spec::Phase::FirstKvmRun);
            eprintln!("{mark}");
        }
        loop {
            if stop.load(Ordering::Acquire) {
                return VcpuEnd::Requested;
            }
            match dispatch(self.fd.run(), io) {
                ExitAction::Continue | ExitAction::Interrupted => {}
                ExitAction::Stop(s) => return VcpuEnd::Guest(s),
                ExitAction::InternalError => {
                    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member
                    // of the kvm_run exit union is the one KVM filled in.
                    let suberror =
                        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    return VcpuEnd::Failed(format!(
                        "KVM internal error (suberror {suberror}: {}) on vCPU {} at guest RIP {}",
                        suberror_name(suberror),
                        self.index,
                        self.rip()
                    ));
                }
                ExitAction::Fail(msg) => {
                    return VcpuEnd::Failed(format!(
                        "{msg} on vCPU {} at guest RIP {}",
                        self.index,
                        self.rip()
                    ))
                }
            }
        }
    }

    fn rip(&self) -> String {
        self.fd
            .get_regs()
            .map_or_else(|e| format!("unknown ({e})"), |r| format!("{:#x}", r.rip))
    }
}

fn suberror_name(s: u32) -> &'static str {
    match s {
        1 => "instruction emulation failed",
        2 => "simultaneous exceptions",
        3 => "delivery event",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}

/// LINT0 delivers the PIC's ExtINT, LINT1 delivers NMIs: what firmware sets up
/// and what Linux expects of a PC.
fn set_lint(fd: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_EXTINT: u32 = 0x7;
    const APIC_MODE_NMI: u32 = 0x4;
    let mut lapic = fd.get_lapic()?;
    for (off, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let reg = &mut lapic.regs[off..off + 4];
        // The register file is c_char bytes; reinterpret them, no value changes.
        let bytes: [u8; 4] = std::array::from_fn(|i| u8::from_ne_bytes(reg[i].to_ne_bytes()));
        let v = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (d, s) in reg.iter_mut().zip(v.to_le_bytes()) {
            *d = libc::c_char::from_ne_bytes([s]);
        }
    }
    fd.set_lapic(&lapic)
}

/// A running vCPU thread.
pub struct VcpuHandle {
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Stops the thread: the caller has set the shared stop flag; this kicks
    /// the thread out of KVM_RUN until it has ended. A kick can land just before
    /// the thread enters KVM_RUN, so it is repeated until the thread is gone.
    pub fn stop_and_join(&mut self, timeout: Duration) -> bool {
        let Some(t) = self.thread.take() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() {
            if Instant::now() > deadline {
                log::error!("a vCPU thread did not stop within {timeout:?}");
                return false;
            }
            let _ = t.kill(kick_signal());
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().is_ok()
    }
}
