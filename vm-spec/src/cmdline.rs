//! The guest kernel command line: every argument runm's guests boot with,
//! and which VMM needs which.
//!
//! Every guest gets `console=ttyS0` and `panic=-1` (a panic resets at once,
//! so a broken guest ends its VM process instead of sitting there). How the
//! guest resets differs per VMM ([`Reset`]): runm-vmm emulates the i8042 and
//! turns its reset command into its exit; QEMU's microvm has none. runm-vmm
//! appends its device entries and CPU template arguments itself when it
//! builds the VM.

use std::sync::LazyLock;

/// The VMM a guest runs under: it decides how the guest resets and which
/// serial ports it probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestVmm {
    /// runm-vmm: an i8042 for the reset, one serial port (COM1).
    RunmVmm,
    /// QEMU's `microvm` machine.
    QemuMicrovm,
}

impl GuestVmm {
    /// How a guest resets under this VMM.
    pub fn reset(self) -> Reset {
        match self {
            GuestVmm::RunmVmm => Reset::Keyboard,
            GuestVmm::QemuMicrovm => Reset::TripleFault,
        }
    }
}

/// How the guest kernel resets the machine (`reboot=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Through the keyboard controller (`reboot=k`): runm-vmm's i8042 turns
    /// it into the VMM's exit. QEMU's microvm has no i8042: there the kernel
    /// spins about 1.5 s (under TCG) before falling back to a triple fault.
    Keyboard,
    /// A triple fault (`reboot=t`): immediate; with `-no-reboot` it ends QEMU.
    TripleFault,
}

impl Reset {
    /// The kernel argument.
    pub fn arg(self) -> &'static str {
        match self {
            Reset::Keyboard => "reboot=k",
            Reset::TripleFault => "reboot=t",
        }
    }
}

/// How the host reaches runm's agent in the guest (`runm.channel=`, read by
/// the agent at boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// vsock (runm-vmm).
    Vsock,
    /// A virtio-serial port (QEMU).
    Serial,
}

impl AgentTransport {
    /// The kernel argument.
    pub fn arg(self) -> &'static str {
        match self {
            AgentTransport::Vsock => "runm.channel=vsock",
            AgentTransport::Serial => "runm.channel=serial",
        }
    }
}

/// What the guest asks of its command line beyond what the VMM decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestArgs {
    /// `quiet`: only warnings on the console (runm's guests; the boot log
    /// costs time on a slow console).
    pub quiet: bool,
    /// Arguments for `/init`, after `--`.
    pub init_args: Vec<String>,
    /// Another reset than the VMM's own: only to measure what it costs.
    pub reset: Option<Reset>,
}

/// The command line for a guest under `vmm`, reached over `agent` if it runs
/// runm's agent.
pub fn kernel_cmdline(vmm: GuestVmm, agent: Option<AgentTransport>, guest: &GuestArgs) -> String {
    let mut args: Vec<&str> = vec!["console=ttyS0", "panic=-1"];
    if guest.quiet {
        args.push("quiet");
    }
    args.push(guest.reset.unwrap_or(vmm.reset()).arg());
    if vmm == GuestVmm::RunmVmm {
        // runm-vmm emulates COM1 only: probing three more ports costs exits.
        args.push("8250.nr_uarts=1");
    }
    if let Some(a) = agent {
        args.push(a.arg());
    }
    if !guest.init_args.is_empty() {
        args.push("--");
        args.extend(guest.init_args.iter().map(String::as_str));
    }
    args.join(" ")
}

/// runm-vmm's command line when its config gives none.
pub fn default_cmdline() -> &'static str {
    static DEFAULT: LazyLock<String> =
        LazyLock::new(|| kernel_cmdline(GuestVmm::RunmVmm, None, &GuestArgs::default()));
    &DEFAULT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runm_vmm_default_resets_through_the_i8042() {
        assert_eq!(
            default_cmdline(),
            "console=ttyS0 panic=-1 reboot=k 8250.nr_uarts=1"
        );
    }

    #[test]
    fn runm_guests() {
        let runm = GuestArgs {
            quiet: true,
            ..GuestArgs::default()
        };
        assert_eq!(
            kernel_cmdline(GuestVmm::RunmVmm, Some(AgentTransport::Vsock), &runm),
            "console=ttyS0 panic=-1 quiet reboot=k 8250.nr_uarts=1 runm.channel=vsock"
        );
        assert_eq!(
            kernel_cmdline(GuestVmm::QemuMicrovm, Some(AgentTransport::Serial), &runm),
            "console=ttyS0 panic=-1 quiet reboot=t runm.channel=serial"
        );
    }

    #[test]
    fn init_args_and_measured_reset() {
        let mut g = GuestArgs {
            init_args: vec!["bench".into(), "5".into()],
            ..GuestArgs::default()
        };
        assert_eq!(
            kernel_cmdline(GuestVmm::QemuMicrovm, None, &g),
            "console=ttyS0 panic=-1 reboot=t -- bench 5"
        );
        g.reset = Some(Reset::Keyboard);
        g.init_args.clear();
        assert_eq!(
            kernel_cmdline(GuestVmm::QemuMicrovm, None, &g),
            "console=ttyS0 panic=-1 reboot=k"
        );
    }
}
