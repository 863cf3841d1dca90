//! The hypervisors runm can run a container's VM on, and how to reach the
//! agent inside it.
//!
//! Owns the choice between runm-vmm and QEMU (`--hypervisor`,
//! `io.runm.hypervisor`, or `auto` from what `/dev/kvm` is), where the guest
//! kernel and agent initramfs are found, what a container's VM is made of
//! (written as runm-vmm's `vm.json`, or as QEMU's command line, both from
//! the `vm_spec` crate), and connecting to the agent channel:
//! a virtio-serial port under QEMU (a Unix socket QEMU serves), vsock under
//! runm-vmm (its Unix socket, with Firecracker's `CONNECT <port>` handshake).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vm_spec::{
    AgentPort, AgentTransport, ConfigError, Console, CpuTemplateName, DiskConfig, FsConfig,
    GuestArgs, GuestVmm, HostKvm, NetConfig, QemuAccel, QemuMicrovm, VmConfig, VsockConfig,
};

use crate::bundle::VmSizing;
use crate::state::ContainerDir;

/// vsock context id of the guest (each VM has its own vsock device, so every
/// guest can use the same one).
const GUEST_CID: u64 = 3;

/// Errors choosing or preparing a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Not `auto`, `runm-vmm` or `qemu`.
    #[error("unknown hypervisor '{0}' (auto, runm-vmm or qemu)")]
    UnknownHypervisor(String),
    /// runm-vmm was asked for where KVM is unusable.
    #[error("runm-vmm needs KVM, but {0}; use --hypervisor qemu (software emulation)")]
    NoKvm(String),
    /// Guest kernel or initramfs missing.
    #[error("guest {what} {path} not found: set {env} or install it as {default}")]
    GuestFile {
        /// `kernel` or `agent initramfs`.
        what: &'static str,
        /// The path tried.
        path: PathBuf,
        /// The environment variable that overrides it.
        env: &'static str,
        /// The default location.
        default: String,
    },
    /// The VM program was not found.
    #[error("{program} not found ({hint})")]
    NoProgram {
        /// Which.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// The VM config cannot be expressed as runm-vmm's JSON.
    #[error(transparent)]
    VmConfig(#[from] ConfigError),
    /// Writing the VM config failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The user runm's configuration names for the VM process.
    #[error("vm_user '{user}' (runm's configuration): {why}")]
    VmUser {
        /// The name.
        user: String,
        /// What is wrong with it.
        why: String,
    },
    /// The agent channel could not be opened in time.
    #[error("cannot connect to the guest agent: {0}")]
    Connect(String),
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HypervisorRequest {
    /// Decide from the host's KVM.
    #[default]
    Auto,
    /// runm's own VMM.
    RunmVmm,
    /// QEMU's microvm machine.
    Qemu,
}

impl FromStr for HypervisorRequest {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s {
            "auto" => Ok(Self::Auto),
            "runm-vmm" => Ok(Self::RunmVmm),
            "qemu" => Ok(Self::Qemu),
            _ => Err(BackendError::UnknownHypervisor(s.to_string())),
        }
    }
}

/// A VM program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hypervisor {
    /// runm-vmm.
    RunmVmm,
    /// qemu-system-x86_64 -M microvm.
    Qemu,
}

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// The decision, with its reason for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Which VM program.
    pub hypervisor: Hypervisor,
    /// With which accelerator.
    pub accel: Accel,
    /// Why, in a few words.
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.hypervisor, self.accel) {
            (Hypervisor::RunmVmm, _) => write!(f, "runm-vmm/kvm"),
            (Hypervisor::Qemu, Accel::Kvm) => write!(f, "qemu/kvm"),
            (Hypervisor::Qemu, Accel::Tcg) => write!(f, "qemu/tcg"),
        }
    }
}

/// What this host's KVM is, and whether runm may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmAccess {
    /// Its kind.
    pub kind: HostKvm,
    /// `/dev/kvm` can be opened read-write by us.
    pub usable: bool,
}

impl KvmAccess {
    /// Looks at this host.
    pub fn probe() -> Self {
        KvmAccess {
            kind: HostKvm::detect(),
            usable: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(vm_spec::host::KVM_DEVICE)
                .is_ok(),
        }
    }

    fn real(&self) -> bool {
        self.usable && self.kind.is_hardware()
    }

    fn why_not_real(&self) -> &'static str {
        match (self.kind, self.usable) {
            (HostKvm::Missing, _) => "/dev/kvm is missing",
            (_, false) => "/dev/kvm cannot be opened",
            (HostKvm::Pvm, true) => "/dev/kvm is PVM (kvm_pvm), where guest user space cannot run",
            (HostKvm::Hardware, true) => "/dev/kvm is real KVM",
        }
    }
}

/// Chooses the backend for `req` on a host with `kvm`.
pub fn choose(req: HypervisorRequest, kvm: &KvmAccess) -> Result<Choice, BackendError> {
    let qemu = |why: String| {
        let accel = if kvm.real() { Accel::Kvm } else { Accel::Tcg };
        Choice {
            hypervisor: Hypervisor::Qemu,
            accel,
            reason: why,
        }
    };
    match req {
        HypervisorRequest::RunmVmm => {
            if !kvm.usable {
                return Err(BackendError::NoKvm(kvm.why_not_real().to_string()));
            }
            let reason = if kvm.kind.is_pvm() {
                "asked for; /dev/kvm is PVM: the guest kernel boots, guest user space will not run"
            } else {
                "asked for"
            };
            Ok(Choice {
                hypervisor: Hypervisor::RunmVmm,
                accel: Accel::Kvm,
                reason: reason.into(),
            })
        }
        HypervisorRequest::Qemu => Ok(qemu(if kvm.real() {
            "asked for; /dev/kvm is real KVM".into()
        } else {
            format!(
                "asked for; {}: software emulation, slow",
                kvm.why_not_real()
            )
        })),
        HypervisorRequest::Auto => {
            if kvm.real() {
                Ok(Choice {
                    hypervisor: Hypervisor::RunmVmm,
                    accel: Accel::Kvm,
                    reason: "auto: /dev/kvm is real KVM".into(),
                })
            } else {
                Ok(qemu(format!(
                    "auto: {}: software emulation, slow",
                    kvm.why_not_real()
                )))
            }
        }
    }
}

/// The guest kernel and the agent initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestImages {
    /// vmlinux (or bzImage).
    pub kernel: PathBuf,
    /// Uncompressed cpio with the agent as `/init`.
    pub initrd: PathBuf,
}

/// `$RUNM_KERNEL`/`$RUNM_INITRD`, else the installed `vmlinux`/`agent.cpio` ([`crate::guest_images`]).
pub fn find_guest_images() -> Result<GuestImages, BackendError> {
    let find = |env: &'static str, file: &str, what: &'static str| {
        let default = crate::guest_images::installed(file);
        let path = std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| default.clone());
        if path.is_file() {
            Ok(std::fs::canonicalize(&path).unwrap_or(path))
        } else {
            Err(BackendError::GuestFile {
                what,
                path,
                env,
                default: default.display().to_string(),
            })
        }
    };
    Ok(GuestImages {
        kernel: find("RUNM_KERNEL", "vmlinux", "kernel")?,
        initrd: find("RUNM_INITRD", "agent.cpio", "agent initramfs")?,
    })
}

/// Finds a program: `$env`, else a file next to the runm executable (for
/// runm-vmm, built and installed together), else `$PATH`.
fn find_program(
    name: &str,
    env: &str,
    beside_runm: bool,
    hint: &str,
) -> Result<PathBuf, BackendError> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BackendError::NoProgram {
                program: p.display().to_string(),
                hint: format!("named by ${env}"),
            })
        };
    }
    if beside_runm {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(BackendError::NoProgram {
        program: name.to_string(),
        hint: hint.to_string(),
    })
}

/// How the host reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentChannel {
    /// A Unix socket carrying the virtio-serial port's bytes (QEMU serves it).
    Serial {
        /// The socket.
        socket: PathBuf,
    },
    /// runm-vmm's vsock Unix socket; `CONNECT <port>` reaches a guest port.
    Vsock {
        /// The socket.
        socket: PathBuf,
        /// The agent's vsock port.
        port: u32,
    },
}

/// A VM ready to be started: the program, its arguments, its agent channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The VM program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where the agent is.
    pub channel: AgentChannel,
    /// How the VM is paused and resumed.
    pub control: crate::vmctl::VmControl,
}

/// What the VM is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec<'a> {
    /// Kernel and initramfs.
    pub images: &'a GuestImages,
    /// RAM and vCPUs.
    pub sizing: VmSizing,
    /// The container's directory (image, sockets, console log).
    pub dir: &'a ContainerDir,
    /// The root image (`<dir>/rootfs.img`) as the first disk, read-only
    /// if `Some(true)`; `None` when the root is shared.
    pub root_image: Option<bool>,
    /// virtiofsd's socket as the VM process names it (relative to `dir`,
    /// see [`ContainerDir::local`]), when the guest has the share
    /// ([`guest_agent::proto::SHARE_TAG`]).
    pub share: Option<PathBuf>,
    /// The guest's NICs: taps the VM process inherits as descriptors.
    pub nets: &'a [NetConfig],
    /// The user the VM process drops to (runm's configuration, `vm_user`):
    /// QEMU's `-runas`, runm-vmm's jail; `None`: it stays root, unjailed.
    pub vm_user: Option<&'a str>,
}

/// The VM program for `hypervisor`: `$RUNM_QEMU` or `qemu-system-x86_64` on
/// `PATH`; `$RUNM_VMM`, `runm-vmm` beside runm, or on `PATH`.
pub fn find_vm_program(hypervisor: Hypervisor) -> Result<PathBuf, BackendError> {
    match hypervisor {
        Hypervisor::Qemu => find_program(
            "qemu-system-x86_64",
            "RUNM_QEMU",
            false,
            "install qemu-system-x86, or set RUNM_QEMU",
        ),
        Hypervisor::RunmVmm => find_program(
            "runm-vmm",
            "RUNM_VMM",
            true,
            "install it beside runm or on PATH, or set RUNM_VMM",
        ),
    }
}

/// Where the project's setup installs virtiofsd, looked at last. (Debian's
/// `/usr/lib/qemu/virtiofsd` is QEMU's old C daemon, which runm does not use.)
const LIBEXEC_VIRTIOFSD: &str = "/usr/libexec/virtiofsd";

/// The virtio-fs daemon (the Rust virtiofsd): `$RUNM_VIRTIOFSD`, `virtiofsd`
/// beside runm, on `PATH`, or in `/usr/libexec`.
pub fn find_virtiofsd() -> Result<PathBuf, BackendError> {
    let found = find_program(
        "virtiofsd",
        "RUNM_VIRTIOFSD",
        true,
        "the setup installs it in /usr/libexec (scripts/virtiofsd.sh --install DIR), \
         or set RUNM_VIRTIOFSD",
    );
    let named = std::env::var_os("RUNM_VIRTIOFSD").is_some_and(|v| !v.is_empty());
    match found {
        Err(BackendError::NoProgram { .. }) if !named && Path::new(LIBEXEC_VIRTIOFSD).is_file() => {
            Ok(PathBuf::from(LIBEXEC_VIRTIOFSD))
        }
        found => found,
    }
}

/// Prepares the VM process for `choice` (writes `vm.json` for runm-vmm).
pub fn prepare(choice: &Choice, program: &Path, vm: &VmSpec<'_>) -> Result<Launch, BackendError> {
    match choice.hypervisor {
        Hypervisor::Qemu => {
            // Its user checked (never root), its empty root made.
            if let Some(user) = vm.vm_user {
                vm_ids(user)?;
                empty_root(vm.dir)?;
            }
            Ok(Launch {
                program: program.to_path_buf(),
                args: qemu_args(choice.accel, vm),
                channel: AgentChannel::Serial {
                    socket: vm.dir.agent_socket(),
                },
                control: crate::vmctl::VmControl::Qmp {
                    socket: vm.dir.qmp_socket(),
                },
            })
        }
        Hypervisor::RunmVmm => {
            let jail = vm.vm_user.map(|user| vmm_jail(vm.dir, user)).transpose()?;
            let control = if jail.is_some() {
                // The VM process is the jail's waiting parent.
                crate::vmctl::VmControl::JailSignals
            } else {
                crate::vmctl::VmControl::Signals
            };
            let path = vm.dir.vm_config();
            let text = runm_vmm_config(vm, jail).to_json()?;
            std::fs::write(&path, text).map_err(|source| BackendError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(Launch {
                program: program.to_path_buf(),
                args: vec!["--config".into(), path.into()],
                channel: AgentChannel::Vsock {
                    socket: vm.dir.vsock_socket(),
                    port: guest_agent::proto::AGENT_VSOCK_PORT,
                },
                // runm-vmm has no control API (yet): the process is stopped.
                control,
            })
        }
    }
}

/// runm-vmm's jail for a VM of `dir` run as `user` (a name from
/// `/etc/passwd`, its uid and primary gid): its root is an empty directory
/// of the container's, made here and removed with it; the VMM gets its own
/// mount and PID namespaces, no capabilities, and the vsock socket (named
/// relative to its working directory, the container's directory) stays
/// reachable inside.
fn vmm_jail(dir: &ContainerDir, user: &str) -> Result<vm_spec::JailConfig, BackendError> {
    let (uid, gid) = vm_ids(user)?;
    Ok(vm_spec::JailConfig::new(empty_root(dir)?, uid, gid))
}

/// The empty directory of the container's that the VM process (QEMU or
/// runm-vmm) takes as its root once it has opened what it needs.
fn empty_root(dir: &ContainerDir) -> Result<PathBuf, BackendError> {
    let root = dir.vmm_jail();
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(BackendError::Write { path: root, source }),
    }
    Ok(root)
}

/// The uid and gid of the VM's `user`: numeric `uid:gid` (as QEMU's
/// `-runas` takes it, what a per-VM uid is given as), or a name from
/// `/etc/passwd` with its primary gid. Never root.
fn vm_ids(user: &str) -> Result<(u32, u32), BackendError> {
    let numeric = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
    let (uid, gid) = match numeric {
        Some(ids) => ids,
        None => passwd_user(user)?,
    };
    if uid == 0 || gid == 0 {
        return Err(BackendError::VmUser {
            user: user.to_string(),
            why: format!("it is uid {uid} gid {gid}; the VMM's user must not be root (\"\" runs it unjailed)"),
        });
    }
    Ok((uid, gid))
}

/// `user`'s uid and primary gid from `/etc/passwd`.
fn passwd_user(user: &str) -> Result<(u32, u32), BackendError> {
    let passwd = Path::new("/etc/passwd");
    let text = std::fs::read_to_string(passwd).map_err(|e| BackendError::VmUser {
        user: user.to_string(),
        why: format!("cannot read {}: {e}", passwd.display()),
    })?;
    passwd_ids(&text, user).ok_or_else(|| BackendError::VmUser {
        user: user.to_string(),
        why: format!("no such user in {}", passwd.display()),
    })
}

/// The uid and primary gid of `user` in the text of an `/etc/passwd`.
fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// What runm asks of every guest's command line: a quiet boot (the boot
/// log costs time on a slow console).
fn runm_guest() -> GuestArgs {
    GuestArgs {
        quiet: true,
        ..GuestArgs::default()
    }
}

/// The container's root image, the guest's first disk, if it has one.
fn root_disk(vm: &VmSpec<'_>) -> Vec<DiskConfig> {
    vm.root_image
        .map(|read_only| DiskConfig {
            path: vm.dir.rootfs_image(),
            read_only,
        })
        .into_iter()
        .collect()
}

/// The guest's share, if it has one.
fn share(vm: &VmSpec<'_>) -> Vec<FsConfig> {
    vm.share
        .iter()
        .map(|socket| FsConfig {
            tag: guest_agent::proto::SHARE_TAG.into(),
            socket: socket.clone(),
        })
        .collect()
}

/// QEMU's arguments: a microvm with the root image on virtio-blk, the NICs
/// on virtio-net, the agent on a virtio-serial port and a QMP monitor socket
/// for pause and resume.
pub fn qemu_args(accel: Accel, vm: &VmSpec<'_>) -> Vec<OsString> {
    QemuMicrovm {
        accel: match accel {
            Accel::Kvm => QemuAccel::Kvm,
            Accel::Tcg => QemuAccel::Tcg,
        },
        mem_mib: vm.sizing.mem_mib,
        vcpus: vm.sizing.vcpus,
        kernel: vm.images.kernel.clone(),
        initrd: Some(vm.images.initrd.clone()),
        guest: runm_guest(),
        console: Console::File(vm.dir.console_log()),
        disks: root_disk(vm),
        fs: share(vm),
        nets: vm.nets.to_vec(),
        agent: Some(AgentPort {
            socket: vm.dir.local(vm.dir.agent_socket()),
            name: guest_agent::proto::AGENT_SERIAL_PORT_NAME.into(),
        }),
        qmp: Some(vm.dir.local(vm.dir.qmp_socket())),
        seccomp: true,
        run_as: vm.vm_user.map(str::to_owned),
        // Once it has opened everything, an empty root (the directory
        // runm-vmm's jail would use).
        chroot: vm.vm_user.map(|_| vm.dir.vmm_jail()),
    }
    .args()
}

/// runm-vmm's `vm.json`: the agent on vsock, the NICs on inherited taps,
/// in `jail` when it has one.
pub fn runm_vmm_config(vm: &VmSpec<'_>, jail: Option<vm_spec::JailConfig>) -> VmConfig {
    VmConfig {
        kernel: vm.images.kernel.clone(),
        initrd: Some(vm.images.initrd.clone()),
        cmdline: Some(vm_spec::kernel_cmdline(
            GuestVmm::RunmVmm,
            Some(AgentTransport::Vsock),
            &runm_guest(),
        )),
        mem_mib: vm.sizing.mem_mib,
        vcpus: vm.sizing.vcpus,
        console: Console::File(vm.dir.console_log()),
        cpu_template: CpuTemplateName::Auto,
        disks: root_disk(vm),
        vsock: Some(VsockConfig {
            cid: GUEST_CID,
            uds: vm.dir.local(vm.dir.vsock_socket()),
        }),
        nets: vm.nets.to_vec(),
        rng: false,
        fs: share(vm),
        console_max_bytes: vm_spec::config::DEFAULT_CONSOLE_MAX_BYTES,
        jail,
    }
}

/// Connects to the agent channel, retrying until `deadline` while
/// `vm_running()` says the VM is still there (the socket appears when the VM
/// process has started; a vsock port answers once the agent listens).
pub fn connect_agent(
    channel: &AgentChannel,
    deadline: Instant,
    vm_running: &mut dyn FnMut() -> bool,
) -> Result<UnixStream, BackendError> {
    let mut pause = Duration::from_millis(5);
    loop {
        let attempt = match channel {
            AgentChannel::Serial { socket } => {
                crate::sys::connect_unix(socket).map_err(|e| e.to_string())
            }
            AgentChannel::Vsock { socket, port } => vsock_connect(socket, *port, deadline),
        };
        let last = match attempt {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        if !vm_running() {
            return Err(BackendError::Connect(format!("the VM exited ({last})")));
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Connect(format!("timed out ({last})")));
        }
        // The socket appears within milliseconds, the agent after the guest
        // booted: start fast, then back off (each vsock attempt costs the
        // VMM a connection).
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Firecracker-style host-initiated vsock: write `CONNECT <port>\n` on the
/// VMM's Unix socket, read `OK <host port>\n`.
fn vsock_connect(socket: &Path, port: u32, deadline: Instant) -> Result<UnixStream, String> {
    let mut s = crate::sys::connect_unix(socket).map_err(|e| e.to_string())?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    // Byte by byte: nothing after the newline belongs to this handshake.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut b) {
            Ok(0) => {
                return Err("the VMM closed the vsock connection (agent not listening yet?)".into())
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line);
    if !line.starts_with("OK ") {
        return Err(format!("vsock handshake answered '{line}'"));
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: KvmAccess = KvmAccess {
        kind: HostKvm::Hardware,
        usable: true,
    };
    const PVM: KvmAccess = KvmAccess {
        kind: HostKvm::Pvm,
        usable: true,
    };
    const NONE: KvmAccess = KvmAccess {
        kind: HostKvm::Missing,
        usable: false,
    };
    const LOCKED: KvmAccess = KvmAccess {
        kind: HostKvm::Hardware,
        usable: false,
    };

    #[test]
    fn virtiofsd_named_by_the_environment_is_used_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("virtiofsd");
        std::fs::write(&bin, b"").unwrap();
        // Only this test touches RUNM_VIRTIOFSD.
        std::env::set_var("RUNM_VIRTIOFSD", &bin);
        assert_eq!(find_virtiofsd().unwrap(), bin);
        let missing = dir.path().join("missing");
        std::env::set_var("RUNM_VIRTIOFSD", &missing);
        let e = find_virtiofsd().unwrap_err().to_string();
        std::env::remove_var("RUNM_VIRTIOFSD");
        assert!(e.contains("missing") && e.contains("RUNM_VIRTIOFSD"), "{e}");
    }

    #[test]
    fn auto_picks_runm_vmm_on_real_kvm_and_qemu_elsewhere() {
        let c = choose(HypervisorRequest::Auto, &REAL).unwrap();
        assert_eq!((c.hypervisor, c.accel), (Hypervisor::RunmVmm, Accel::Kvm));
        let c = choose(HypervisorRequest::Auto, &PVM).unwrap();
        assert_eq!((c.hypervisor, c.accel), (Hypervisor::Qemu, Accel::Tcg));
        assert!(c.reason.contains("PVM"), "{}", c.reason);
        let c = choose(HypervisorRequest::Auto, &NONE).unwrap();
        assert_eq!((c.hypervisor, c.accel), (Hypervisor::Qemu, Accel::Tcg));
        assert!(c.reason.contains("missing"), "{}", c.reason);
        assert_eq!(c.to_string(), "qemu/tcg");
    }

    #[test]
    fn explicit_choices() {
        let c = choose(HypervisorRequest::Qemu, &REAL).unwrap();
        assert_eq!((c.hypervisor, c.accel), (Hypervisor::Qemu, Accel::Kvm));
        let c = choose(HypervisorRequest::Qemu, &PVM).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        let c = choose(HypervisorRequest::RunmVmm, &PVM).unwrap();
        assert_eq!(c.hypervisor, Hypervisor::RunmVmm);
        assert!(c.reason.contains("user space will not run"));
        let e = choose(HypervisorRequest::RunmVmm, &NONE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/kvm is missing"), "{e}");
        let e = choose(HypervisorRequest::RunmVmm, &LOCKED)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/kvm cannot be opened"), "{e}");
        let c = choose(HypervisorRequest::Auto, &LOCKED).unwrap();
        assert_eq!((c.hypervisor, c.accel), (Hypervisor::Qemu, Accel::Tcg));
        assert!("runm-vmm".parse::<HypervisorRequest>().is_ok());
        assert!("firecracker"
            .parse::<HypervisorRequest>()
            .unwrap_err()
            .to_string()
            .contains("unknown hypervisor 'firecracker'"));
    }

    fn fixtures() -> (GuestImages, ContainerDir) {
        (
            GuestImages {
                kernel: "/k/vmlinux".into(),
                initrd: "/k/agent.cpio".into(),
            },
            ContainerDir::new(Path::new("/run/runm"), "c1").unwrap(),
        )
    }

    #[test]
    fn qemu_command_line() {
        let (images, dir) = fixtures();
        let vm = VmSpec {
            images: &images,
            sizing: VmSizing {
                mem_mib: 256,
                vcpus: 2,
            },
            dir: &dir,
            root_image: Some(true),
            share: None,
            vm_user: Some("nobody"),
            nets: &[],
        };
        let args: Vec<String> = qemu_args(Accel::Tcg, &vm)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let line = args.join(" ");
        assert_eq!(
            line,
            "-M microvm,acpi=off -accel tcg -cpu max -m 256 -smp 2 -nodefaults -no-user-config \
             -nographic -no-reboot -kernel /k/vmlinux -initrd /k/agent.cpio \
             -append console=ttyS0 panic=-1 quiet reboot=t runm.channel=serial \
             -serial file:/run/runm/c1/console.log -device virtio-blk-device,drive=disk0 \
             -drive id=disk0,format=raw,if=none,file=/run/runm/c1/rootfs.img,readonly=on \
             -device virtio-serial-device \
             -chardev socket,id=agent,server=on,wait=off,path=agent.sock \
             -device virtserialport,chardev=agent,name=runm.agent \
             -qmp unix:qmp.sock,server=on,wait=off \
             -sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny \
             -chroot /run/runm/c1/vmm-jail -runas nobody"
        );
        let kvm: Vec<String> = qemu_args(Accel::Kvm, &vm)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(kvm.join(" ").contains("-accel kvm -cpu host"));
    }

    #[test]
    fn runm_vmm_config_has_every_device() {
        let (images, dir) = fixtures();
        let vm = VmSpec {
            images: &images,
            sizing: VmSizing {
                mem_mib: 300,
                vcpus: 1,
            },
            dir: &dir,
            root_image: Some(false),
            share: None,
            vm_user: None,
            nets: &[],
        };
        let c = runm_vmm_config(&vm, None);
        assert_eq!(c.jail, None);
        assert_eq!(c.mem_mib, 300);
        let vsock = c.vsock.as_ref().unwrap();
        assert_eq!(vsock.cid, 3);
        // Sockets by their names in the container's directory, where the
        // VM process runs: a long root must not overflow a socket address.
        assert_eq!(vsock.uds, Path::new("vsock.sock"));
        assert_eq!(c.disks[0].path, Path::new("/run/runm/c1/rootfs.img"));
        assert_eq!(c.console, Console::File("/run/runm/c1/console.log".into()));
        assert_eq!(
            c.base_cmdline(),
            "console=ttyS0 panic=-1 quiet reboot=k 8250.nr_uarts=1 runm.channel=vsock"
        );
    }

    /// What runm writes as `vm.json` is what runm-vmm's `--config` reads.
    #[test]
    fn vm_json_is_read_back_by_runm_vmm_parser() {
        let tmp = tempfile::tempdir().unwrap();
        let images = GuestImages {
            kernel: tmp.path().join("vmlinux"),
            initrd: tmp.path().join("agent.cpio"),
        };
        std::fs::write(&images.kernel, b"kernel").unwrap();
        std::fs::write(&images.initrd, b"initrd").unwrap();
        let dir = ContainerDir::new(tmp.path(), "c1").unwrap();
        std::fs::create_dir_all(dir.rootfs_image().parent().unwrap()).unwrap();
        std::fs::write(dir.rootfs_image(), b"ext4").unwrap();
        let nets = [NetConfig::inherited(5, Some("02:42:0a:58:00:05".into()))];
        let vm = VmSpec {
            images: &images,
            sizing: VmSizing {
                mem_mib: 64,
                vcpus: 2,
            },
            dir: &dir,
            root_image: Some(true),
            share: None,
            vm_user: Some("nobody"),
            nets: &nets,
        };
        let choice = Choice {
            hypervisor: Hypervisor::RunmVmm,
            accel: Accel::Kvm,
            reason: "test".into(),
        };
        let launch = prepare(&choice, Path::new("/bin/runm-vmm"), &vm).unwrap();
        assert_eq!(
            launch.args,
            [OsString::from("--config"), dir.vm_config().into()]
        );
        let read = VmConfig::from_file(&dir.vm_config()).unwrap();
        let jail = read.jail.clone().expect("runm-vmm is jailed");
        assert_eq!(read, runm_vmm_config(&vm, Some(jail.clone())));
        // nobody, as this host's passwd has it; an empty root in the
        // container's directory; its own PID namespace, so pausing goes
        // through the waiting parent.
        let nobody = passwd_ids(&std::fs::read_to_string("/etc/passwd").unwrap(), "nobody");
        assert_eq!(Some((jail.uid, jail.gid)), nobody);
        assert_eq!(jail.root, dir.vmm_jail());
        assert!(std::fs::read_dir(&jail.root).unwrap().next().is_none());
        assert!(jail.new_pid_ns);
        assert_eq!(launch.control, crate::vmctl::VmControl::JailSignals);
        let unjailed = VmSpec {
            vm_user: None,
            ..vm.clone()
        };
        let launch = prepare(&choice, Path::new("/bin/runm-vmm"), &unjailed).unwrap();
        assert_eq!(launch.control, crate::vmctl::VmControl::Signals);
        assert_eq!(VmConfig::from_file(&dir.vm_config()).unwrap().jail, None);
        let root = VmSpec {
            vm_user: Some("root"),
            ..vm.clone()
        };
        let e = prepare(&choice, Path::new("/bin/runm-vmm"), &root)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vm_user 'root'") && e.contains("must not be root"),
            "{e}"
        );
        let unknown = VmSpec {
            vm_user: Some("no-such-user-here"),
            ..vm.clone()
        };
        let e = prepare(&choice, Path::new("/bin/runm-vmm"), &unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such user in /etc/passwd"), "{e}");
        // A per-VM uid comes as uid:gid.
        let per_vm = VmSpec {
            vm_user: Some("200007:200007"),
            ..vm.clone()
        };
        prepare(&choice, Path::new("/bin/runm-vmm"), &per_vm).unwrap();
        let jail = VmConfig::from_file(&dir.vm_config()).unwrap().jail.unwrap();
        assert_eq!((jail.uid, jail.gid), (200007, 200007));
        let e = vm_ids("0:5").unwrap_err().to_string();
        assert!(e.contains("must not be root"), "{e}");
        assert!(read.disks[0].read_only);
        assert_eq!(read.vcpus, 2);
        assert_eq!(read.nets, nets);
    }

    #[test]
    fn passwd_lines_give_uid_and_primary_gid() {
        let text =
            "root:x:0:0:root:/root:/bin/bash\nrunm-vm:x:1234:1235::/:/bin/false\nbad:x:y:1:::\n";
        assert_eq!(passwd_ids(text, "runm-vm"), Some((1234, 1235)));
        assert_eq!(passwd_ids(text, "root"), Some((0, 0)));
        assert_eq!(passwd_ids(text, "runm"), None);
        assert_eq!(passwd_ids(text, "bad"), None);
    }

    #[test]
    fn vsock_handshake() {
        use std::os::unix::net::UnixListener;
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("v.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 13];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            c.write_all(b"OK 1073741824\nrest").unwrap();
            let (mut c2, _) = l.accept().unwrap();
            c2.read_exact(&mut buf).unwrap();
            drop(c2);
            c
        });
        let ch = AgentChannel::Vsock {
            socket: sock.clone(),
            port: 1024,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = connect_agent(&ch, deadline, &mut || true).unwrap();
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest", "nothing after the OK line is consumed");
        let e = vsock_connect(&sock, 1024, deadline).unwrap_err();
        assert!(e.contains("closed"), "{e}");
        drop(t.join().unwrap());
        let e = connect_agent(&ch, Instant::now(), &mut || false).unwrap_err();
        assert!(e.to_string().contains("the VM exited"), "{e}");
    }
}
