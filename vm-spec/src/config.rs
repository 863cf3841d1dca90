//! The VM runm-vmm boots: [`VmConfig`], validated before anything is created.
//!
//! runm-vmm reads it from a JSON file (`--config`, which runm writes as
//! `vm.json` from this same type) or maps its flags onto it; both end in
//! [`VmConfig::validate`], which checks what needs no KVM. Unknown fields are
//! refused, so a field one side does not know is an error, never ignored.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default guest memory.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Most vCPUs the MP table and IOAPIC layout support.
pub const MAX_VCPUS: u8 = 254;
/// Most virtio devices: each takes one of runm-vmm's IOAPIC lines (5..=23).
pub const MAX_VIRTIO_DEVICES: u8 = 19;
/// Default cap of the console file: past it runm-vmm keeps only the newest half.
pub const DEFAULT_CONSOLE_MAX_BYTES: u64 = 1 << 20;
/// Smallest console cap accepted: room for a few screens of boot messages.
pub const MIN_CONSOLE_MAX_BYTES: u64 = 4096;
/// Default `RLIMIT_NOFILE` of a jailed runm-vmm: its devices' fds with room
/// for the vsock connections a guest may hold open.
pub const DEFAULT_JAIL_MAX_OPEN_FILES: u64 = 1024;
/// Fewest open files a jailed runm-vmm can run with (its fixed fds and a few more).
pub const MIN_JAIL_MAX_OPEN_FILES: u64 = 64;

/// Errors in a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON for a VM.
    #[error("malformed config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The config cannot be written as JSON (a path that is not UTF-8).
    #[error("cannot write the VM config as JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Console {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file, created or appended to.
    File(PathBuf),
    /// Nowhere (the VMM still watches it for a kernel panic).
    Off,
}

impl FromStr for Console {
    type Err = ConfigError;
    /// `stdout`, `off`, or `file:PATH`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdout" => Ok(Console::Stdout),
            "off" | "none" => Ok(Console::Off),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Console::File(PathBuf::from(p))),
                _ => invalid(format!("console '{s}': expected stdout, off or file:PATH")),
            },
        }
    }
}

/// Which CPUID/MSR adjustments the vCPUs get on top of what KVM supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuTemplateName {
    /// `pvm` where the host's KVM is PVM, `host` elsewhere.
    #[default]
    Auto,
    /// What KVM supports, normalised for the vCPU topology.
    Host,
    /// For PVM hosts: hides what KVM's instruction emulator cannot run.
    Pvm,
}

impl FromStr for CpuTemplateName {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            "pvm" => Ok(Self::Pvm),
            _ => invalid(format!("cpu template '{s}': expected auto, host or pvm")),
        }
    }
}

/// The jail runm-vmm enters once it has opened what the VM needs and before
/// the guest runs: its own mount namespace whose root is a fresh, read-only
/// tmpfs on `root` holding only what the VM still reaches by path (the vsock
/// socket's directory), its own PID namespace, `uid`/`gid` with no
/// capabilities and no_new_privs, and resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// An existing, empty directory: the mount point of the jail's root. It
    /// stays empty as the host sees it.
    pub root: PathBuf,
    /// The user the VMM runs as: not 0.
    pub uid: u32,
    /// The group the VMM runs as: not 0. Supplementary groups are dropped.
    pub gid: u32,
    /// `RLIMIT_NOFILE`.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE` in bytes; by default the largest of the console cap,
    /// the largest writable disk, and the VMM's stdout/stderr (when they are
    /// files) plus a console's and a log's worth: the VMM never grows a file
    /// beyond these.
    #[serde(default)]
    pub max_file_size: Option<u64>,
    /// Run in a new PID namespace (runm-vmm stays as a waiting parent that
    /// forwards SIGINT/SIGTERM and exits with the jailed VMM's status).
    #[serde(default = "default_true")]
    pub new_pid_ns: bool,
}

fn default_max_open_files() -> u64 {
    DEFAULT_JAIL_MAX_OPEN_FILES
}
fn default_true() -> bool {
    true
}

impl JailConfig {
    /// A jail at `root` for `uid`/`gid` with the default limits.
    pub fn new(root: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        JailConfig {
            root: root.into(),
            uid,
            gid,
            max_open_files: DEFAULT_JAIL_MAX_OPEN_FILES,
            max_file_size: None,
            new_pid_ns: true,
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let root = self.root.display();
        if !self.root.is_absolute() {
            return invalid(format!("jail root {root} is not an absolute path"));
        }
        if self.root.parent().is_none() {
            return invalid("jail root is /: give a directory of its own");
        }
        match std::fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return invalid(format!("jail root {root} is not a directory")),
            Err(e) => return invalid(format!("jail root {root}: {e}")),
        }
        match std::fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return invalid(format!("jail root {root} is not empty"));
                }
            }
            Err(e) => return invalid(format!("jail root {root}: {e}")),
        }
        if self.uid == 0 || self.gid == 0 {
            return invalid(format!(
                "jail uid {} / gid {}: the jailed VMM must not run as root (0)",
                self.uid, self.gid
            ));
        }
        // (uid_t)-1 means "unchanged" to setresuid.
        if self.uid == u32::MAX || self.gid == u32::MAX {
            return invalid("jail uid or gid 4294967295 is not a valid id");
        }
        if self.max_open_files < MIN_JAIL_MAX_OPEN_FILES {
            return invalid(format!(
                "jail max_open_files {} is too few; give at least {MIN_JAIL_MAX_OPEN_FILES}",
                self.max_open_files
            ));
        }
        if self.max_file_size == Some(0) {
            return invalid("jail max_file_size is 0: the VMM could not write its console");
        }
        Ok(())
    }
}

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    #[serde(default)]
    pub read_only: bool,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    /// `PATH[,ro]`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, opt)) => {
                return invalid(format!("disk '{s}': unknown option '{opt}' (ro or rw)"))
            }
            None => (s, false),
        };
        if path.is_empty() {
            return invalid(format!("disk '{s}': empty path"));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// The virtio-vsock device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub cid: u64,
    /// Host Unix socket; guest connections to port P go to `<uds>_P`.
    pub uds: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = ConfigError;
    /// `CID,UDS`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let Some((cid, uds)) = s.split_once(',') else {
            return invalid(format!("vsock '{s}': expected CID,UDS_PATH"));
        };
        let cid = cid
            .parse()
            .or_else(|_| invalid(format!("vsock '{s}': CID '{cid}' is not a number")))?;
        if uds.is_empty() {
            return invalid(format!("vsock '{s}': empty socket path"));
        }
        Ok(VsockConfig {
            cid,
            uds: PathBuf::from(uds),
        })
    }
}

/// A virtio-net interface on a tap device, named or inherited.
///
/// runm opens the tap in the container's network namespace and hands it
/// over as a descriptor (`tap_fd`), so that runm-vmm needs neither the
/// tap's name nor the namespace; a tap by name (`tap`) is opened or created
/// in runm-vmm's own namespace. Exactly one of the two is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The tap's name (opened if it exists, created otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// An attached tap runm-vmm inherits as this descriptor number (3 or
    /// more: 0 to 2 are its standard streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_fd: Option<i32>,
    /// The guest's MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac: Option<String>,
}

impl FromStr for NetConfig {
    type Err = ConfigError;
    /// `TAP[,MAC]` or `fd=N[,MAC]`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (tap, mac) = match s.split_once(',') {
            Some((t, m)) => (t, Some(m.to_string())),
            None => (s, None),
        };
        let cfg = match tap.strip_prefix("fd=") {
            Some(n) => NetConfig {
                tap: None,
                tap_fd: Some(n.parse().or_else(|_| {
                    invalid(format!("net '{s}': fd '{n}' is not a descriptor number"))
                })?),
                mac,
            },
            None => NetConfig {
                tap: Some(tap.to_string()),
                tap_fd: None,
                mac,
            },
        };
        cfg.check()?;
        Ok(cfg)
    }
}

impl NetConfig {
    /// A tap runm-vmm opens by name.
    pub fn named(tap: impl Into<String>, mac: Option<String>) -> Self {
        NetConfig {
            tap: Some(tap.into()),
            tap_fd: None,
            mac,
        }
    }

    /// A tap runm-vmm inherits as descriptor `fd`.
    pub fn inherited(fd: i32, mac: Option<String>) -> Self {
        NetConfig {
            tap: None,
            tap_fd: Some(fd),
            mac,
        }
    }

    /// What the interface is called in messages: the tap's name or `fd N`.
    pub fn label(&self) -> String {
        match (&self.tap, self.tap_fd) {
            (Some(t), _) => t.clone(),
            (None, Some(fd)) => format!("fd {fd}"),
            (None, None) => "(no tap)".into(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        match (&self.tap, self.tap_fd) {
            (Some(_), Some(_)) => {
                return invalid("net: give a tap by name or by descriptor (tap_fd), not both")
            }
            (None, None) => return invalid("net: no tap given (tap or tap_fd)"),
            // IFNAMSIZ is 16 including the terminating NUL.
            (Some(tap), None) => {
                if tap.is_empty() || tap.len() > 15 || tap.contains(['/', ' ', '\0']) {
                    return invalid(format!("net: '{tap}' is not a valid interface name"));
                }
            }
            (None, Some(fd)) => {
                if fd < 3 {
                    return invalid(format!(
                        "net: tap descriptor {fd} is a standard stream (or negative); inherited taps are 3 or more"
                    ));
                }
            }
        }
        if let Some(mac) = &self.mac {
            parse_mac(mac)?;
        }
        Ok(())
    }
}

/// A virtio-fs device served by a vhost-user backend (virtiofsd) that is
/// already listening on `socket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The name the guest mounts (`mount -t virtiofs TAG DIR`). Its format
    /// is the device's to check (the tag fills its configuration space), when
    /// runm-vmm creates it, before boot.
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
}

impl FromStr for FsConfig {
    type Err = ConfigError;
    /// `TAG,SOCKET`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(',') {
            Some((tag, socket)) if !tag.is_empty() && !socket.is_empty() => Ok(FsConfig {
                tag: tag.to_string(),
                socket: PathBuf::from(socket),
            }),
            _ => invalid(format!("fs '{s}': expected TAG,SOCKET")),
        }
    }
}

impl FsConfig {
    // The backend must be listening before the VM is built: a missing socket
    // is a configuration error, reported before anything is created.
    fn check(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&self.socket) {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            Ok(_) => invalid(format!(
                "fs {}: {} is not a socket",
                self.tag,
                self.socket.display()
            )),
            Err(e) => invalid(format!(
                "fs {}: socket {}: {e}",
                self.tag,
                self.socket.display()
            )),
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return invalid(format!(
            "mac '{s}': expected six hex bytes like 02:00:00:00:00:01"
        ));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() == 2)
            .ok_or_else(|| ConfigError::Invalid(format!("mac '{s}': '{p}' is not a hex byte")))?;
    }
    if mac[0] & 1 != 0 {
        return invalid(format!("mac '{s}' is a multicast address"));
    }
    Ok(mac)
}

/// Everything runm-vmm needs to build and boot one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Initial ramdisk (an uncompressed cpio boots fastest).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; [`crate::cmdline::default_cmdline`] when absent.
    /// runm-vmm appends its device entries and CPU template arguments.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Guest memory in MiB.
    #[serde(default = "default_mem")]
    pub mem_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Console destination.
    #[serde(default)]
    pub console: Console,
    /// CPU template.
    #[serde(default)]
    pub cpu_template: CpuTemplateName,
    /// virtio-blk disks, in the order the guest sees them (vda, vdb, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-vsock.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// virtio-net interfaces.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// virtio-rng fed from the host's getrandom.
    #[serde(default)]
    pub rng: bool,
    /// virtio-fs devices (vhost-user); with any, guest memory is shared with
    /// their backends.
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    /// Most bytes the console file holds; past it the oldest half goes.
    #[serde(default = "default_console_max")]
    pub console_max_bytes: u64,
    /// The jail the VMM runs the guest in; none runs it unconfined.
    #[serde(default)]
    pub jail: Option<JailConfig>,
}

fn default_console_max() -> u64 {
    DEFAULT_CONSOLE_MAX_BYTES
}
fn default_mem() -> u64 {
    DEFAULT_MEM_MIB
}
fn default_vcpus() -> u8 {
    1
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            console: Console::Stdout,
            cpu_template: CpuTemplateName::Auto,
            disks: Vec::new(),
            vsock: None,
            nets: Vec::new(),
            rng: false,
            fs: Vec::new(),
            console_max_bytes: DEFAULT_CONSOLE_MAX_BYTES,
            jail: None,
        }
    }

    /// Reads and validates a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: VmConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as the JSON [`VmConfig::from_file`] reads.
    pub fn to_json(&self) -> Result<String, ConfigError> {
        let mut text = serde_json::to_string_pretty(self).map_err(ConfigError::Serialize)?;
        text.push('\n');
        Ok(text)
    }

    /// Checks what can be checked without KVM: sizes, counts, device options,
    /// that the files named exist and can be read. KVM's own limits (vCPUs)
    /// are checked when the VM is created.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mem_mib == 0 {
            return invalid("memory size is 0 MiB; give at least 16");
        }
        if self.mem_mib < 16 {
            return invalid(format!(
                "memory size {} MiB is too small for a Linux guest; give at least 16",
                self.mem_mib
            ));
        }
        let host_mib = host_memory_mib();
        if self.mem_mib > host_mib {
            return invalid(format!(
                "memory size {} MiB is more than this host has ({} MiB of RAM and swap)",
                self.mem_mib, host_mib
            ));
        }
        if self.vcpus == 0 {
            return invalid("vcpu count is 0; give at least 1");
        }
        if self.vcpus > MAX_VCPUS {
            return invalid(format!(
                "vcpu count {} is more than runm-vmm supports ({MAX_VCPUS})",
                self.vcpus
            ));
        }
        check_readable("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_readable("initrd", initrd)?;
        }
        if let Some(c) = &self.cmdline {
            if c.contains('\0') || c.contains('\n') {
                return invalid("kernel command line contains a NUL or newline");
            }
        }
        for d in &self.disks {
            check_readable("disk", &d.path)?;
        }
        if let Some(v) = &self.vsock {
            // 0-2 are reserved (hypervisor, local, host); u32::MAX means "any".
            if v.cid < 3 || v.cid >= u64::from(u32::MAX) {
                return invalid(format!(
                    "vsock cid {} is reserved or too large (3..=4294967294)",
                    v.cid
                ));
            }
        }
        let mut taps: Vec<String> = Vec::new();
        for n in &self.nets {
            n.check()?;
            let label = n.label();
            if taps.contains(&label) {
                return invalid(format!("net: tap '{label}' given twice"));
            }
            taps.push(label);
        }
        let mut tags: Vec<&str> = Vec::new();
        for f in &self.fs {
            f.check()?;
            if tags.contains(&f.tag.as_str()) {
                return invalid(format!("fs: tag '{}' given twice", f.tag));
            }
            tags.push(&f.tag);
        }
        if self.console_max_bytes < MIN_CONSOLE_MAX_BYTES {
            return invalid(format!(
                "console_max_bytes {} is too small; give at least {MIN_CONSOLE_MAX_BYTES}",
                self.console_max_bytes
            ));
        }
        if let Some(j) = &self.jail {
            j.check()?;
        }
        let devices = self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.rng)
            + self.fs.len();
        let lines = usize::from(MAX_VIRTIO_DEVICES);
        if devices > lines {
            return invalid(format!("{devices} virtio devices; at most {lines} fit"));
        }
        Ok(())
    }

    /// The command line the config asks for, before devices are appended.
    pub fn base_cmdline(&self) -> &str {
        match &self.cmdline {
            Some(c) => c,
            None => crate::cmdline::default_cmdline(),
        }
    }
}

fn check_readable(what: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => invalid(format!("{what} {} is not a regular file", path.display())),
            Err(e) => invalid(format!("{what} {}: {e}", path.display())),
        },
        Err(e) => invalid(format!("{what} {}: {e}", path.display())),
    }
}

/// RAM plus swap of this host, in MiB: more guest memory than that can never
/// be given, even with overcommit.
pub fn host_memory_mib() -> u64 {
    // SAFETY: sysinfo writes only into the zeroed struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return u64::MAX;
    }
    let unit = u64::from(info.mem_unit.max(1));
    info.totalram
        .saturating_add(info.totalswap)
        .saturating_mul(unit)
        / (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kernel_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"not really a kernel").unwrap();
        f
    }

    #[test]
    fn json_with_defaults_parses_and_validates() {
        let k = kernel_file();
        let json = format!(r#"{{"kernel": "{}"}}"#, k.path().display());
        let cfg: VmConfig = serde_json::from_str(&json).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.mem_mib, DEFAULT_MEM_MIB);
        assert_eq!(cfg.vcpus, 1);
        assert_eq!(cfg.console, Console::Stdout);
        assert_eq!(cfg.base_cmdline(), crate::cmdline::default_cmdline());
    }

    #[test]
    fn full_json_round_trips() {
        let k = kernel_file();
        let mut cfg = VmConfig::new(k.path());
        cfg.vcpus = 2;
        cfg.console = Console::File("/tmp/x.log".into());
        cfg.disks.push("/a.img,ro".parse().unwrap());
        cfg.vsock = Some("3,/tmp/v.sock".parse().unwrap());
        cfg.nets.push("tap0,02:00:00:00:00:01".parse().unwrap());
        cfg.nets.push("fd=9,02:00:00:00:00:02".parse().unwrap());
        cfg.rng = true;
        cfg.fs.push("share,/tmp/vfs.sock".parse().unwrap());
        let json = serde_json::to_string(&cfg).unwrap();
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn fs_devices_need_a_listening_socket_and_distinct_tags() {
        let k = kernel_file();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("vfs.sock");
        let mut cfg = VmConfig::new(k.path());
        cfg.fs = vec![format!("share,{}", sock.display()).parse().unwrap()];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("fs share: socket") && e.contains("No such file"),
            "{e}"
        );
        std::fs::write(&sock, b"").unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        std::fs::remove_file(&sock).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        cfg.validate().unwrap();
        cfg.fs.push(cfg.fs[0].clone());
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("tag 'share' given twice"), "{e}");

        let fs = "root,/s".parse::<FsConfig>().unwrap();
        assert_eq!(
            (fs.tag.as_str(), fs.socket.as_path()),
            ("root", Path::new("/s"))
        );
        for bad in ["root", "root,", ",/s", ""] {
            let e = bad.parse::<FsConfig>().unwrap_err().to_string();
            assert!(e.contains("expected TAG,SOCKET"), "{bad}: {e}");
        }
    }

    #[test]
    fn malformed_json_and_unknown_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, "{ not json").unwrap();
        let e = VmConfig::from_file(&p).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("malformed config file"));
        std::fs::write(&p, r#"{"kernel": "/k", "memory": 5}"#).unwrap();
        let e = VmConfig::from_file(&p).unwrap_err();
        assert!(e.to_string().contains("unknown field `memory`"), "{e}");
        let e = VmConfig::from_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn bad_sizes_and_counts_are_refused() {
        let k = kernel_file();
        let mut cfg = VmConfig::new(k.path());
        cfg.mem_mib = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("memory size is 0"));
        cfg.mem_mib = host_memory_mib() + 1;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("more than this host has"));
        cfg.mem_mib = 64;
        cfg.vcpus = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("vcpu count is 0"));
        cfg.vcpus = 255;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("vcpu count 255"));
    }

    #[test]
    fn missing_files_are_named() {
        let mut cfg = VmConfig::new("/nonexistent/vmlinux");
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("kernel /nonexistent/vmlinux"), "{e}");
        let k = kernel_file();
        cfg.kernel = k.path().into();
        cfg.initrd = Some("/nonexistent/initrd".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("initrd /nonexistent/initrd"));
        cfg.initrd = Some(std::env::temp_dir());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }

    #[test]
    fn option_strings_parse_or_explain() {
        assert!(!"a.img".parse::<DiskConfig>().unwrap().read_only);
        assert!("a.img,ro".parse::<DiskConfig>().unwrap().read_only);
        assert!("a.img,xx".parse::<DiskConfig>().is_err());
        assert!(",ro".parse::<DiskConfig>().is_err());
        assert_eq!("7,/s".parse::<VsockConfig>().unwrap().cid, 7);
        assert!("x,/s".parse::<VsockConfig>().is_err());
        assert!("7".parse::<VsockConfig>().is_err());
        assert!("tap0,zz:00:00:00:00:00".parse::<NetConfig>().is_err());
        assert!(
            "tap0,03:00:00:00:00:00".parse::<NetConfig>().is_err(),
            "multicast"
        );
        assert!("a-very-long-interface-name".parse::<NetConfig>().is_err());
        assert_eq!(
            "fd=7,02:00:00:00:00:01".parse::<NetConfig>().unwrap(),
            NetConfig::inherited(7, Some("02:00:00:00:00:01".into()))
        );
        assert_eq!(
            "tap0".parse::<NetConfig>().unwrap(),
            NetConfig::named("tap0", None)
        );
        let e = "fd=x".parse::<NetConfig>().unwrap_err().to_string();
        assert!(e.contains("fd 'x' is not a descriptor number"), "{e}");
        let e = "fd=1".parse::<NetConfig>().unwrap_err().to_string();
        assert!(e.contains("descriptor 1 is a standard stream"), "{e}");
        assert_eq!(
            parse_mac("02:aa:bb:cc:dd:0e").unwrap(),
            [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xe]
        );
        assert_eq!(
            "file:/x".parse::<Console>().unwrap(),
            Console::File("/x".into())
        );
        assert!("file:".parse::<Console>().is_err());
        assert!("tty".parse::<Console>().is_err());
        assert_eq!(
            "pvm".parse::<CpuTemplateName>().unwrap(),
            CpuTemplateName::Pvm
        );
        assert!("fast".parse::<CpuTemplateName>().is_err());
    }

    #[test]
    fn device_checks() {
        let k = kernel_file();
        let mut cfg = VmConfig::new(k.path());
        cfg.vsock = Some(VsockConfig {
            cid: 2,
            uds: "/x".into(),
        });
        assert!(cfg.validate().unwrap_err().to_string().contains("reserved"));
        cfg.vsock = None;
        cfg.nets = vec!["tap0".parse().unwrap(), "tap0".parse().unwrap()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        cfg.nets = vec!["fd=5".parse().unwrap(), "fd=5".parse().unwrap()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tap 'fd 5' given twice"));
        cfg.nets = vec![NetConfig {
            tap: Some("tap0".into()),
            tap_fd: Some(5),
            mac: None,
        }];
        assert!(cfg.validate().unwrap_err().to_string().contains("not both"));
        cfg.nets.clear();
        cfg.disks.push(DiskConfig {
            path: "/nonexistent.img".into(),
            read_only: false,
        });
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("disk /nonexistent.img"));
    }

    #[test]
    fn to_json_is_what_from_file_reads() {
        let k = kernel_file();
        let mut cfg = VmConfig::new(k.path());
        cfg.initrd = Some(k.path().into());
        cfg.cmdline = Some("console=ttyS0 quiet".into());
        cfg.console = Console::Off;
        cfg.cpu_template = CpuTemplateName::Pvm;
        cfg.vsock = Some("3,/tmp/v.sock".parse().unwrap());
        cfg.disks.push(DiskConfig {
            path: k.path().into(),
            read_only: true,
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.json");
        std::fs::write(&p, cfg.to_json().unwrap()).unwrap();
        assert_eq!(VmConfig::from_file(&p).unwrap(), cfg);
    }

    #[test]
    fn a_path_that_is_not_text_cannot_be_written() {
        use std::os::unix::ffi::OsStrExt;
        let cfg = VmConfig::new(std::ffi::OsStr::from_bytes(b"/k\xff"));
        let e = cfg.to_json().unwrap_err();
        assert!(matches!(e, ConfigError::Serialize(_)), "{e}");
    }

    #[test]
    fn jail_options_are_checked() {
        let k = kernel_file();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = VmConfig::new(k.path());
        cfg.jail = Some(JailConfig::new(dir.path(), 1000, 1000));
        cfg.validate().unwrap();
        let err = |cfg: &VmConfig| cfg.validate().unwrap_err().to_string();
        let jail = |f: &dyn Fn(&mut JailConfig)| {
            let mut c = cfg.clone();
            f(c.jail.as_mut().unwrap());
            c
        };
        assert!(err(&jail(&|j| j.uid = 0)).contains("must not run as root"));
        assert!(err(&jail(&|j| j.gid = 0)).contains("must not run as root"));
        assert!(err(&jail(&|j| j.root = "rel".into())).contains("not an absolute path"));
        assert!(err(&jail(&|j| j.root = "/".into())).contains("jail root is /"));
        assert!(err(&jail(&|j| j.root = dir.path().join("nope"))).contains("nope"));
        assert!(err(&jail(&|j| j.root = k.path().into())).contains("not a directory"));
        assert!(err(&jail(&|j| j.max_open_files = 3)).contains("too few"));
        assert!(err(&jail(&|j| j.max_file_size = Some(0))).contains("max_file_size is 0"));
        std::fs::write(dir.path().join("x"), b"").unwrap();
        assert!(err(&cfg).contains("is not empty"), "{}", err(&cfg));
        let mut small = VmConfig::new(k.path());
        small.console_max_bytes = 10;
        assert!(err(&small).contains("console_max_bytes 10"));
    }

    #[test]
    fn jail_json_has_defaults() {
        let k = kernel_file();
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"kernel": "{}", "jail": {{"root": "{}", "uid": 7, "gid": 8}}}}"#,
            k.path().display(),
            dir.path().display()
        );
        let cfg: VmConfig = serde_json::from_str(&json).unwrap();
        cfg.validate().unwrap();
        let j = cfg.jail.unwrap();
        assert_eq!((j.uid, j.gid), (7, 8));
        assert_eq!(j.max_open_files, DEFAULT_JAIL_MAX_OPEN_FILES);
        assert!(j.new_pid_ns && j.max_file_size.is_none());
        assert_eq!(cfg.console_max_bytes, DEFAULT_CONSOLE_MAX_BYTES);
    }

    #[test]
    fn at_most_one_virtio_device_per_interrupt_line() {
        let k = kernel_file();
        let mut cfg = VmConfig::new(k.path());
        cfg.rng = true;
        cfg.disks = (1..usize::from(MAX_VIRTIO_DEVICES))
            .map(|_| DiskConfig {
                path: k.path().into(),
                read_only: true,
            })
            .collect();
        cfg.validate().unwrap();
        cfg.vsock = Some("3,/tmp/v.sock".parse().unwrap());
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("20 virtio devices; at most 19 fit"), "{e}");
    }
}
