//! Boot-time duties of PID 1: the guest's own mounts, the kernel command
//! line, the boot-timer poke, and the final reset of the machine.
//!
//! Owns everything the agent does before it talks to the host and after it
//! is done with it. The container's mounts are [`crate::mounts`]'s.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rustix::mount::MountFlags;
use rustix::system::RebootCommand;

use crate::console::log;
use crate::sys;

/// Errors of the boot steps (logged; none of them stops the agent).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A boot mount failed.
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        /// File system type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The boot-timer poke failed.
    #[error("boot timer at {addr:#x}: {source}")]
    BootTimer {
        /// Physical address.
        addr: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the agent reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// AF_VSOCK, port [`crate::proto::AGENT_VSOCK_PORT`] (runm-vmm).
    Vsock,
    /// The virtio-serial port named [`crate::proto::AGENT_SERIAL_PORT_NAME`] (QEMU).
    Serial,
}

/// What the kernel command line tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `runm.channel=vsock|serial` (default vsock).
    pub channel: ChannelKind,
    /// `runm.boot_timer=ADDR`: physical address to write 123 to once the
    /// agent runs (Firecracker's boot-timer device convention).
    pub boot_timer: Option<u64>,
    /// Arguments of ours that could not be understood (logged, then ignored).
    pub warnings: Vec<String>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            channel: ChannelKind::Vsock,
            boot_timer: None,
            warnings: Vec::new(),
        }
    }
}

/// Splits a kernel command line into arguments the way the kernel does:
/// on whitespace, with double quotes grouping (and removed).
pub fn split_cmdline(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    args.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        args.push(cur);
    }
    args
}

/// Parses an unsigned number in decimal or, with `0x`, hexadecimal.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Reads the `runm.*` arguments of a kernel command line.
pub fn parse_cmdline(line: &str) -> BootConfig {
    let mut cfg = BootConfig::default();
    for arg in split_cmdline(line) {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        match key {
            "runm.channel" => match value {
                "vsock" => cfg.channel = ChannelKind::Vsock,
                "serial" => cfg.channel = ChannelKind::Serial,
                other => cfg
                    .warnings
                    .push(format!("unknown runm.channel={other:?}, using vsock")),
            },
            "runm.boot_timer" => match parse_u64(value) {
                Some(addr) => cfg.boot_timer = Some(addr),
                None => cfg
                    .warnings
                    .push(format!("runm.boot_timer={value:?} is not an address")),
            },
            k if k.starts_with("runm.") => cfg.warnings.push(format!("unknown argument {arg:?}")),
            _ => {}
        }
    }
    cfg
}

/// The guest's own mounts, in order: (type, source, target, flags, data).
const BOOT_MOUNTS: &[(&str, &str, &str, MountFlags, &str)] = &[
    (
        "devtmpfs",
        "devtmpfs",
        "/dev",
        MountFlags::NOSUID,
        "mode=0755",
    ),
    (
        "proc",
        "proc",
        "/proc",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "",
    ),
    (
        "sysfs",
        "sysfs",
        "/sys",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "",
    ),
    // The containers' cgroups (crate::cgroups).
    (
        "cgroup2",
        "cgroup2",
        "/sys/fs/cgroup",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "",
    ),
    (
        "tmpfs",
        "tmpfs",
        "/run",
        MountFlags::NOSUID.union(MountFlags::NODEV),
        "mode=0755",
    ),
    (
        "devpts",
        "devpts",
        "/dev/pts",
        MountFlags::NOSUID.union(MountFlags::NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620",
    ),
    (
        "tmpfs",
        "shm",
        "/dev/shm",
        MountFlags::NOSUID.union(MountFlags::NODEV),
        "mode=1777",
    ),
];

/// Mounts what the guest needs (devtmpfs first: the console lives there).
/// Every failure is returned; the agent logs them and carries on, because a
/// PID 1 that stops here leaves nobody to tell the host.
pub fn mount_basics() -> Vec<InitError> {
    let mut errors = Vec::new();
    for &(fstype, source, target, flags, data) in BOOT_MOUNTS {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(target);
        if let Err(source) = mount_one(fstype, source, target, flags, data) {
            errors.push(InitError::Mount {
                fstype,
                target,
                source,
            });
        }
        if target == "/dev" {
            // The kernel could not open a console for PID 1 without a
            // /dev/console in the initramfs; now that /dev exists, give the
            // agent its standard descriptors before anything else takes 0-2.
            ensure_std_fds();
        }
    }
    errors
}

fn mount_one(
    fstype: &str,
    source: &str,
    target: &str,
    flags: MountFlags,
    data: &str,
) -> std::io::Result<()> {
    let data = (!data.is_empty()).then(|| sys::cstr(data)).transpose()?;
    Ok(rustix::mount::mount(
        source,
        target,
        fstype,
        flags,
        data.as_deref(),
    )?)
}

/// Opens `/dev/console` (else `/dev/null`) on any of descriptors 0-2 that is
/// closed, so later descriptors are never mistaken for stdio.
fn ensure_std_fds() {
    use std::os::fd::{AsRawFd, IntoRawFd};
    // open(2) takes the lowest free descriptor: each open lands on a missing
    // one of 0-2 until they are all there, and then on 3 or above.
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/console")
            .or_else(|_| OpenOptions::new().read(true).write(true).open("/dev/null"));
        match file {
            Ok(file) if file.as_raw_fd() <= 2 => {
                // Keep it open as that standard descriptor.
                let _ = file.into_raw_fd();
            }
            _ => return,
        }
    }
}

/// Writes 123 to physical address `addr` through /dev/mem: the signal
/// Firecracker's boot-timer device turns into a "guest boot time" log line.
pub fn poke_boot_timer(addr: u64) -> Result<(), InitError> {
    let err = |source| InitError::BootTimer { addr, source };
    if !Path::new("/dev/mem").exists() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no /dev/mem (the guest kernel is built without CONFIG_DEVMEM)",
        )));
    }
    let mem = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_SYNC | libc::O_CLOEXEC)
        .open("/dev/mem")
        .map_err(err)?;
    mem.write_all_at(&[123], addr).map_err(err)
}

/// Flushes the file systems and resets the machine. The guest kernel runs
/// with `reboot=k`, so the reset reaches the VMM (or QEMU with `-no-reboot`),
/// which then exits. RB_POWER_OFF would not do: without ACPI the kernel has
/// no way to power off, so PID 1 would exit and the kernel panic.
pub fn reset_machine() -> ! {
    log!("syncing and resetting the guest");
    // Whatever is left of the container goes first, so its last writes are
    // in the page cache before the sync.
    let _ = sys::kill_all(libc::SIGKILL);
    rustix::fs::sync();
    if let Err(err) = rustix::system::reboot(RebootCommand::Restart) {
        log!("reboot failed: {err}; halting here");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_defaults_to_vsock() {
        let cfg = parse_cmdline("console=ttyS0 reboot=k panic=-1");
        assert_eq!(cfg, BootConfig::default());
    }

    #[test]
    fn cmdline_channel_and_boot_timer() {
        let cfg = parse_cmdline(
            "console=ttyS0 runm.channel=serial reboot=k runm.boot_timer=0xc0000000 quiet\n",
        );
        assert_eq!(cfg.channel, ChannelKind::Serial);
        assert_eq!(cfg.boot_timer, Some(0xc000_0000));
        assert!(cfg.warnings.is_empty());
        let cfg = parse_cmdline("runm.channel=vsock runm.boot_timer=3221225472");
        assert_eq!(cfg.channel, ChannelKind::Vsock);
        assert_eq!(cfg.boot_timer, Some(0xc000_0000));
    }

    #[test]
    fn cmdline_bad_values_warn_and_keep_defaults() {
        let cfg = parse_cmdline("runm.channel=pigeon runm.boot_timer=0xzz runm.what=1");
        assert_eq!(cfg.channel, ChannelKind::Vsock);
        assert_eq!(cfg.boot_timer, None);
        assert_eq!(cfg.warnings.len(), 3, "{:?}", cfg.warnings);
    }

    #[test]
    fn cmdline_quotes_group_words() {
        assert_eq!(
            split_cmdline(r#"a="b c" runm.channel=serial  "d e"f"#),
            vec!["a=b c", "runm.channel=serial", "d ef"]
        );
        assert_eq!(split_cmdline("  "), Vec::<String>::new());
        assert_eq!(split_cmdline(r#"x="""#), vec!["x="]);
        assert_eq!(
            parse_cmdline(r#"foo="runm.channel=serial" runm.channel="serial""#).channel,
            ChannelKind::Serial
        );
    }

    #[test]
    fn numbers_in_both_bases() {
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("0X10"), Some(16));
        assert_eq!(parse_u64("10"), Some(10));
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64(""), None);
    }
}
