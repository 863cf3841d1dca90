//! QEMU's `microvm` command line for a runm guest: runm's QEMU backend, the
//! benchmarks' direct boot and the agent's QEMU tests all start QEMU from
//! [`QemuMicrovm::args`].
//!
//! The machine: `-M microvm,acpi=off` (the guest kernel has no ACPI, and
//! only without it does QEMU announce the virtio-mmio devices on the kernel
//! command line), no default devices, `-no-reboot` so that the guest's reset
//! ends QEMU, the console on the one serial port, disks on virtio-blk, and
//! runm's agent on a virtio-serial port whose host end is a Unix socket,
//! NICs on virtio-net over taps (inherited descriptors, or taps by name).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::cmdline::{kernel_cmdline, AgentTransport, GuestArgs, GuestVmm};
use crate::config::{parse_mac, Console, DiskConfig, FsConfig, NetConfig, DEFAULT_MEM_MIB};
use crate::host::HostKvm;

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuAccel {
    /// KVM, with the host's CPU model.
    Kvm,
    /// Software emulation (TCG), with QEMU's `max` CPU model.
    Tcg,
}

impl QemuAccel {
    /// KVM where guests run on hardware virtualization; TCG elsewhere (on
    /// PVM guest user space cannot run).
    pub fn for_host(kvm: HostKvm) -> Self {
        if kvm.is_hardware() {
            QemuAccel::Kvm
        } else {
            QemuAccel::Tcg
        }
    }
}

/// The virtio-serial port runm's agent talks on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPort {
    /// The Unix socket QEMU listens on for the host's end.
    pub socket: PathBuf,
    /// The port's name, which the agent looks for in the guest.
    pub name: String,
}

/// One QEMU microvm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuMicrovm {
    /// How guest code runs.
    pub accel: QemuAccel,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// Its initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// What the guest asks of its kernel command line; the reset and the
    /// agent channel follow from QEMU and [`QemuMicrovm::agent`].
    pub guest: GuestArgs,
    /// Where the serial console goes.
    pub console: Console,
    /// virtio-blk disks, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// vhost-user-fs devices (virtio-fs served by a daemon such as
    /// virtiofsd). With any, guest RAM is a shared memfd the daemon maps.
    pub fs: Vec<FsConfig>,
    /// virtio-net NICs, in the order the guest sees them. A tap given by
    /// descriptor must be inherited by QEMU (close-on-exec cleared on that
    /// descriptor alone); one by name is attached in QEMU's namespace.
    pub nets: Vec<NetConfig>,
    /// runm's agent channel.
    pub agent: Option<AgentPort>,
    /// A QMP monitor socket (pause and resume).
    pub qmp: Option<PathBuf>,
    /// QEMU's own seccomp filter (`-sandbox on`, with what a VM never
    /// needs denied: obsolete calls, privilege changes, spawning, resource
    /// control).
    pub seccomp: bool,
    /// A user QEMU drops to once it has opened everything (`-runas`).
    pub run_as: Option<String>,
    /// An empty directory QEMU changes its root to once it has opened
    /// everything (`-chroot`), before it drops to `run_as`.
    pub chroot: Option<PathBuf>,
}

impl QemuMicrovm {
    /// A machine booting `kernel` with defaults for the rest: 1 vCPU,
    /// [`DEFAULT_MEM_MIB`], the console on stdout, no devices.
    pub fn new(accel: QemuAccel, kernel: impl Into<PathBuf>) -> Self {
        QemuMicrovm {
            accel,
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            kernel: kernel.into(),
            initrd: None,
            guest: GuestArgs::default(),
            console: Console::Stdout,
            disks: Vec::new(),
            fs: Vec::new(),
            nets: Vec::new(),
            agent: None,
            qmp: None,
            seccomp: false,
            run_as: None,
            chroot: None,
        }
    }

    /// The guest's kernel command line.
    pub fn cmdline(&self) -> String {
        let agent = self.agent.as_ref().map(|_| AgentTransport::Serial);
        kernel_cmdline(GuestVmm::QemuMicrovm, agent, &self.guest)
    }

    /// `qemu-system-x86_64`'s arguments.
    pub fn args(&self) -> Vec<OsString> {
        let (accel, cpu) = match self.accel {
            QemuAccel::Kvm => ("kvm", "host"),
            QemuAccel::Tcg => ("tcg", "max"),
        };
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        // A vhost-user daemon maps guest RAM: it must be a shared memfd.
        let machine = if self.fs.is_empty() {
            "microvm,acpi=off"
        } else {
            "microvm,acpi=off,memory-backend=mem"
        };
        push(&["-M", machine, "-accel", accel, "-cpu", cpu]);
        push(&["-m", &self.mem_mib.to_string()]);
        if !self.fs.is_empty() {
            let mem = format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                self.mem_mib
            );
            push(&["-object", &mem]);
        }
        push(&["-smp", &self.vcpus.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        if let Some(initrd) = &self.initrd {
            a.push("-initrd".into());
            a.push(initrd.clone().into());
        }
        a.push("-append".into());
        a.push(self.cmdline().into());
        a.push("-serial".into());
        a.push(match &self.console {
            Console::Stdout => "stdio".into(),
            Console::Off => "null".into(),
            // The legacy `file:` form takes the rest as the path, commas
            // included.
            Console::File(p) => concat("file:", p.as_os_str().as_bytes(), ""),
        });
        for (i, d) in self.disks.iter().enumerate() {
            a.push("-device".into());
            a.push(format!("virtio-blk-device,drive=disk{i}").into());
            a.push("-drive".into());
            let opts = format!("id=disk{i},format=raw,if=none,file=");
            let ro = if d.read_only { ",readonly=on" } else { "" };
            a.push(concat(&opts, &escape(&d.path), ro));
        }
        for (i, f) in self.fs.iter().enumerate() {
            a.push("-chardev".into());
            a.push(concat(
                &format!("socket,id=fs{i},path="),
                &escape(&f.socket),
                "",
            ));
            a.push("-device".into());
            // The tag is the device's configuration; QEMU takes it as an
            // option value, so a comma in it is escaped like a path's.
            a.push(concat(
                &format!("vhost-user-fs-device,chardev=fs{i},tag="),
                &escape(Path::new(&f.tag)),
                "",
            ));
        }
        for (i, n) in self.nets.iter().enumerate() {
            // runm's taps carry a virtio-net header on every frame
            // (IFF_VNET_HDR): QEMU reads that from a descriptor it is given
            // (and refuses vnet_hdr= beside fd=); a tap it opens by name
            // is asked for one.
            let id = format!("tap,id=net{i},");
            let tap = match (n.tap_fd, &n.tap) {
                (Some(fd), _) => concat(&id, format!("fd={fd}").as_bytes(), ""),
                (None, Some(name)) => concat(
                    &format!("{id}ifname="),
                    &escape(Path::new(name)),
                    ",script=no,downscript=no,vnet_hdr=on",
                ),
                (None, None) => continue,
            };
            a.push("-netdev".into());
            a.push(tap);
            a.push("-device".into());
            // Written from the parsed bytes: nothing but a MAC reaches QEMU.
            let mac = n.mac.as_deref().and_then(|m| parse_mac(m).ok()).map(|m| {
                format!(
                    ",mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                )
            });
            a.push(format!("virtio-net-device,netdev=net{i}{}", mac.unwrap_or_default()).into());
        }
        if let Some(agent) = &self.agent {
            a.push("-device".into());
            a.push("virtio-serial-device".into());
            a.push("-chardev".into());
            a.push(concat(
                "socket,id=agent,server=on,wait=off,path=",
                &escape(&agent.socket),
                "",
            ));
            a.push("-device".into());
            a.push(format!("virtserialport,chardev=agent,name={}", agent.name).into());
        }
        if let Some(qmp) = &self.qmp {
            a.push("-qmp".into());
            a.push(concat("unix:", &escape(qmp), ",server=on,wait=off"));
        }
        if self.seccomp {
            // -runas drops privileges through set*id after the filter is in
            // place, so then those calls stay allowed (as nobody, without
            // capabilities, they cannot raise anything again).
            let privileges = if self.run_as.is_some() {
                ""
            } else {
                "elevateprivileges=deny,"
            };
            a.push("-sandbox".into());
            a.push(format!("on,obsolete=deny,{privileges}spawn=deny,resourcecontrol=deny").into());
        }
        if let Some(dir) = &self.chroot {
            a.push("-chroot".into());
            a.push(dir.into());
        }
        if let Some(user) = &self.run_as {
            a.push("-runas".into());
            a.push(user.into());
        }
        a
    }
}

/// A path inside a QEMU option value, where `,` separates options: a
/// literal comma is written twice. Bytes, not text: any path works.
fn escape(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    out
}

fn concat(before: &str, path: &[u8], after: &str) -> OsString {
    let mut v = before.as_bytes().to_vec();
    v.extend_from_slice(path);
    v.extend_from_slice(after.as_bytes());
    OsString::from_vec(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Reset;

    fn line(m: &QemuMicrovm) -> Vec<String> {
        m.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    /// The value after the first `flag`.
    fn after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).unwrap();
        &args[i + 1]
    }

    /// Every value after `flag`.
    fn all_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn a_guest_resets_with_a_triple_fault_and_qemu_exits() {
        let m = QemuMicrovm::new(QemuAccel::Tcg, "/k/vmlinux");
        let a = line(&m);
        assert!(a.contains(&"-no-reboot".to_string()));
        assert_eq!(after(&a, "-append"), "console=ttyS0 panic=-1 reboot=t");
        assert_eq!(after(&a, "-M"), "microvm,acpi=off");
        assert_eq!(after(&a, "-kernel"), "/k/vmlinux");
        assert_eq!(after(&a, "-serial"), "stdio");
        assert!(!a.contains(&"-initrd".to_string()));
    }

    #[test]
    fn virtio_fs_shares_guest_memory_with_its_daemon() {
        let mut m = QemuMicrovm::new(QemuAccel::Tcg, "/k");
        m.mem_mib = 300;
        m.fs = vec![FsConfig {
            tag: "runm".into(),
            socket: "/c/v,fs.sock".into(),
        }];
        let a = line(&m);
        assert_eq!(after(&a, "-M"), "microvm,acpi=off,memory-backend=mem");
        assert_eq!(
            after(&a, "-object"),
            "memory-backend-memfd,id=mem,size=300M,share=on"
        );
        assert_eq!(after(&a, "-chardev"), "socket,id=fs0,path=/c/v,,fs.sock");
        assert_eq!(
            after(&a, "-device"),
            "vhost-user-fs-device,chardev=fs0,tag=runm"
        );
        // Without a share, private anonymous memory as before.
        let a = line(&QemuMicrovm::new(QemuAccel::Tcg, "/k"));
        assert!(!a.contains(&"-object".to_string()));
    }

    #[test]
    fn a_sandboxed_qemu_drops_to_its_user() {
        let mut m = QemuMicrovm::new(QemuAccel::Tcg, "/k");
        m.seccomp = true;
        let a = line(&m);
        assert_eq!(
            after(&a, "-sandbox"),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        );
        assert!(!a.contains(&"-runas".to_string()));
        m.run_as = Some("nobody".into());
        let a = line(&m);
        assert_eq!(
            after(&a, "-sandbox"),
            "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
        );
        assert_eq!(after(&a, "-runas"), "nobody");
        assert!(!a.contains(&"-chroot".to_string()));
        m.chroot = Some("/c/jail".into());
        assert_eq!(after(&line(&m), "-chroot"), "/c/jail");
    }

    #[test]
    fn accelerator_and_cpu_model_go_together() {
        let tcg = line(&QemuMicrovm::new(QemuAccel::Tcg, "/k"));
        assert_eq!((after(&tcg, "-accel"), after(&tcg, "-cpu")), ("tcg", "max"));
        let kvm = line(&QemuMicrovm::new(QemuAccel::Kvm, "/k"));
        assert_eq!(
            (after(&kvm, "-accel"), after(&kvm, "-cpu")),
            ("kvm", "host")
        );
        assert_eq!(QemuAccel::for_host(HostKvm::Hardware), QemuAccel::Kvm);
        assert_eq!(QemuAccel::for_host(HostKvm::Pvm), QemuAccel::Tcg);
        assert_eq!(QemuAccel::for_host(HostKvm::Missing), QemuAccel::Tcg);
    }

    #[test]
    fn runm_guest_with_disk_agent_and_qmp() {
        let mut m = QemuMicrovm::new(QemuAccel::Tcg, "/k/vmlinux");
        m.mem_mib = 256;
        m.vcpus = 2;
        m.initrd = Some("/k/agent.cpio".into());
        m.guest.quiet = true;
        m.console = Console::File("/c/console,1.log".into());
        m.disks = vec![
            DiskConfig {
                path: "/c/root,fs.img".into(),
                read_only: true,
            },
            DiskConfig {
                path: "/c/data.img".into(),
                read_only: false,
            },
        ];
        m.agent = Some(AgentPort {
            socket: "/c/agent.sock".into(),
            name: "runm.agent".into(),
        });
        m.qmp = Some("/c/qmp.sock".into());
        let a = line(&m);
        assert_eq!((after(&a, "-m"), after(&a, "-smp")), ("256", "2"));
        assert_eq!(after(&a, "-initrd"), "/k/agent.cpio");
        assert_eq!(
            after(&a, "-append"),
            "console=ttyS0 panic=-1 quiet reboot=t runm.channel=serial"
        );
        assert_eq!(after(&a, "-serial"), "file:/c/console,1.log");
        assert_eq!(
            all_after(&a, "-drive"),
            [
                "id=disk0,format=raw,if=none,file=/c/root,,fs.img,readonly=on",
                "id=disk1,format=raw,if=none,file=/c/data.img",
            ]
        );
        assert_eq!(
            all_after(&a, "-device"),
            [
                "virtio-blk-device,drive=disk0",
                "virtio-blk-device,drive=disk1",
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=runm.agent",
            ]
        );
        assert_eq!(
            after(&a, "-chardev"),
            "socket,id=agent,server=on,wait=off,path=/c/agent.sock"
        );
        assert_eq!(after(&a, "-qmp"), "unix:/c/qmp.sock,server=on,wait=off");
    }

    #[test]
    fn nics_on_inherited_and_named_taps() {
        let mut m = QemuMicrovm::new(QemuAccel::Tcg, "/k");
        m.nets = vec![
            NetConfig::inherited(7, Some("02:42:0a:58:00:05".into())),
            NetConfig::named("tap1", None),
        ];
        let a = line(&m);
        assert_eq!(
            all_after(&a, "-netdev"),
            [
                "tap,id=net0,fd=7",
                "tap,id=net1,ifname=tap1,script=no,downscript=no,vnet_hdr=on",
            ]
        );
        assert_eq!(
            all_after(&a, "-device"),
            [
                "virtio-net-device,netdev=net0,mac=02:42:0a:58:00:05",
                "virtio-net-device,netdev=net1",
            ]
        );
    }

    #[test]
    fn init_args_and_a_measured_reset() {
        let mut m = QemuMicrovm::new(QemuAccel::Tcg, "/k");
        m.guest.init_args = vec!["bench".into(), "5".into()];
        assert_eq!(m.cmdline(), "console=ttyS0 panic=-1 reboot=t -- bench 5");
        m.guest.reset = Some(Reset::Keyboard);
        m.guest.init_args.clear();
        m.console = Console::Off;
        assert_eq!(m.cmdline(), "console=ttyS0 panic=-1 reboot=k");
        assert_eq!(after(&line(&m), "-serial"), "null");
    }

    #[test]
    fn paths_need_not_be_text() {
        use std::ffi::OsStr;
        let p = Path::new(OsStr::from_bytes(b"/d/\xff,x.img"));
        assert_eq!(escape(p), b"/d/\xff,,x.img");
    }
}
