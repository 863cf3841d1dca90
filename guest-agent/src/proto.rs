//! The host-agent protocol, defined once for both sides.
//!
//! A byte stream (a vsock connection under runm-vmm, a virtio-serial port
//! under QEMU) carries frames: a 4-byte big-endian length, then that many
//! bytes of body. The body's first byte is its kind: `0` a JSON control
//! [`Message`], `1` stream data (`u32` process id, big-endian; `u8` stream;
//! the bytes). Stdio travels as data frames so it needs no encoding; empty
//! stdin data means end of input. The first frames each way are `Hello` and
//! `Ready`, both carrying [`PROTOCOL_VERSION`]; a peer with another version is
//! refused with an `Error`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Version of this protocol. Bump on any incompatible change.
/// 2: `ConfigureNetwork` / `NetworkConfigured`.
/// 3: the container's namespaces, capabilities, seccomp, paths, devices,
/// sysctls and resources, which an older agent would silently not apply.
/// 5: several containers per guest: `Create` gives the init process's id
/// and the container whose namespaces to share, the root's place in the
/// share; `Start`, `Exec`, `Signal`, `Ps` and the new `Delete` name their
/// container; `Exited` of an init names the container it stopped.
/// 6: `Resize`. 7: `Freeze` / `Frozen` (one container of a pod paused).
pub const PROTOCOL_VERSION: u32 = 7;
/// vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Name of the virtio-serial port the agent uses where there is no vsock.
pub const AGENT_SERIAL_PORT_NAME: &str = "runm.agent";
/// Largest frame body accepted: bounds what a peer can make the other allocate.
pub const MAX_FRAME: usize = 1 << 20;
/// Process id of a container's own (init) process unless `Create` gives
/// another; process ids are the host's to choose and unique in a guest
/// while the process lives (`exec` processes of a one-container guest get
/// 1, 2, ...).
pub const INIT_PROCESS: u32 = 0;
/// The virtio-fs tag of the directory the host shares with the guest: the
/// containers' root file systems (by default at [`SHARE_ROOTFS`], see
/// [`RootSpec::source`]) and their bind mounts' sources (by default below
/// [`SHARE_MOUNTS`]).
pub const SHARE_TAG: &str = "runm";
/// The root file system's directory in the share unless [`RootSpec::source`]
/// names another.
pub const SHARE_ROOTFS: &str = "rootfs";
/// The directory in the share holding one entry per bind mount (`0`, `1`, ...).
pub const SHARE_MOUNTS: &str = "mounts";

const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The stream failed.
    #[error("agent channel i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame larger than [`MAX_FRAME`] (or empty).
    #[error("frame of {0} bytes is out of bounds (1..={MAX_FRAME})")]
    FrameSize(usize),
    /// An unknown frame kind or stream.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A control message that is not valid JSON for [`Message`].
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
}

/// A standard stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Host to process.
    Stdin,
    /// Process to host (also the terminal's output when `terminal` is set).
    Stdout,
    /// Process to host.
    Stderr,
}

impl Stream {
    fn to_byte(self) -> u8 {
        match self {
            Stream::Stdin => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
    fn from_byte(b: u8) -> Result<Self, ProtoError> {
        match b {
            0 => Ok(Stream::Stdin),
            1 => Ok(Stream::Stdout),
            2 => Ok(Stream::Stderr),
            _ => Err(ProtoError::Malformed(format!("unknown stream {b}"))),
        }
    }
}

/// A resource limit (`process.rlimits` of the OCI spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A process to run (the OCI `process` object, as far as the guest needs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in `PATH` from `env` if it has no slash.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute).
    #[serde(default = "root_dir")]
    pub cwd: String,
    /// User id.
    #[serde(default)]
    pub uid: u32,
    /// Group id.
    #[serde(default)]
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Run on a pseudo terminal (stdout carries its output).
    #[serde(default)]
    pub terminal: bool,
    /// Resource limits.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Set PR_SET_NO_NEW_PRIVS before exec.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// The capability sets; `None` for an `exec` process means the
    /// container's, for the container's process no capabilities (as runc).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// `/proc/<pid>/oom_score_adj`, if given (-1000..=1000).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// The file mode creation mask, if given (else the agent's, 0022).
    #[serde(default)]
    pub umask: Option<u32>,
}

/// The five capability sets, one bit per capability number (`CAP_CHOWN` is
/// bit 0), as `/proc/<pid>/status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Ambient set.
    pub ambient: u64,
}

fn root_dir() -> String {
    "/".into()
}

/// The container's root file system inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSpec {
    /// Block device, e.g. `/dev/vda`; for `virtiofs`, the share's tag.
    pub device: String,
    /// File system type: `ext4` (a block device) or `virtiofs` (the host's
    /// directory [`source`](Self::source) in the share).
    pub fstype: String,
    /// Mount it read-only.
    #[serde(default)]
    pub readonly: bool,
    /// For `virtiofs`: the root's directory, relative to the share
    /// (`<id>/rootfs` when several containers share one guest); by default
    /// [`SHARE_ROOTFS`]. Unused for a block device.
    #[serde(default = "share_rootfs")]
    pub source: String,
}

fn share_rootfs() -> String {
    SHARE_ROOTFS.into()
}

/// A mount inside the container (the OCI `mounts` entries the guest performs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Where, inside the container's root.
    pub destination: String,
    /// File system type (`proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`, `ext4`, ...).
    #[serde(rename = "type")]
    pub fstype: String,
    /// Source: a device for block mounts; for `bind`, the entry of the
    /// share it binds (a path relative to the share, [`SHARE_MOUNTS`]`/N`);
    /// else informational.
    #[serde(default)]
    pub source: String,
    /// mount(8)-style options (`nosuid`, `ro`, `mode=755`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// One line of `/proc/<pid>/uid_map` or `gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// First id inside the container.
    pub container_id: u32,
    /// First id in the guest.
    pub host_id: u32,
    /// How many.
    pub size: u32,
}

/// A device node to create in the container (`linux.devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Absolute path inside the container.
    pub path: String,
    /// `c` (or `u`), `b` or `p`.
    #[serde(rename = "type")]
    pub kind: char,
    /// Major number (not for `p`).
    #[serde(default)]
    pub major: u32,
    /// Minor number (not for `p`).
    #[serde(default)]
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner, inside the container.
    #[serde(default)]
    pub uid: u32,
    /// Group, inside the container.
    #[serde(default)]
    pub gid: u32,
}

/// One BPF instruction (`struct sock_filter`): code, jt, jf, k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction(pub u16, pub u8, pub u8, pub u32);

/// A compiled seccomp profile: filters loaded in order, each with the
/// `SECCOMP_FILTER_FLAG_*` bits. The kernel runs them all and takes the
/// most restrictive answer, which is how one profile's several actions are
/// expressed (see the runtime's seccomp compiler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompSpec {
    /// `SECCOMP_FILTER_FLAG_*`.
    #[serde(default)]
    pub flags: u32,
    /// The programs.
    pub filters: Vec<Vec<BpfInstruction>>,
}

/// Limits of the container's cgroup inside the guest (`linux.resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourcesSpec {
    /// `memory.max` in bytes.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// `cpu.max`: quota and period in microseconds.
    #[serde(default)]
    pub cpu_max: Option<(u64, u64)>,
    /// `cpu.weight` (1..=10000).
    #[serde(default)]
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

/// The container's Linux configuration the guest applies (the OCI `linux`
/// object, as far as it concerns the inside of the VM). The container
/// always gets new PID and mount namespaces, and new IPC and UTS ones unless
/// `Create` names a container to share them (and the network) with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LinuxSpec {
    /// A new user namespace with these mappings.
    #[serde(default)]
    pub user_namespace: bool,
    /// A new cgroup namespace rooted at the container's cgroup.
    #[serde(default)]
    pub cgroup_namespace: bool,
    /// `uidMappings`.
    #[serde(default)]
    pub uid_mappings: Vec<IdMapping>,
    /// `gidMappings`.
    #[serde(default)]
    pub gid_mappings: Vec<IdMapping>,
    /// Paths hidden from the container.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Device nodes to create.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// Propagation of the container's root (`shared`, `rslave`, ...).
    #[serde(default)]
    pub rootfs_propagation: Option<String>,
    /// `key=value` kernel parameters (`net.ipv4.ip_forward`), written in the
    /// container's namespaces.
    #[serde(default)]
    pub sysctl: Vec<(String, String)>,
    /// The container's cgroup limits.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// The seccomp filter of every process of the container.
    #[serde(default)]
    pub seccomp: Option<SeccompSpec>,
}

/// What the agent builds before `Start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's id: names it in later requests, its cgroup and its
    /// directory in the guest, so one path component of letters, digits and
    /// `_ + - .` (not `.`, no `..`, not starting with `-`, at most 255 bytes).
    /// Unique among the guest's containers until `Delete`.
    pub id: String,
    /// Hostname to set.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Root file system.
    pub root: RootSpec,
    /// Mounts, in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// The container's process.
    pub process: ProcessSpec,
    /// Namespaces, security and resources.
    #[serde(default)]
    pub linux: LinuxSpec,
}

/// An Ethernet address; on the wire `"02:42:0a:58:00:05"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address (six hex bytes separated by ':')");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would take "+2".
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An address with its prefix length (`10.88.0.5/16`); a route's
/// destination (`0.0.0.0/0` for a default route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    /// The address.
    pub address: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether the prefix length fits the address family.
    pub fn is_valid(&self) -> bool {
        let max = if self.address.is_ipv4() { 32 } else { 128 };
        self.prefix_len <= max
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// A route through one guest interface (the main table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Where to: `0.0.0.0/0` or `::/0` for the default route.
    pub destination: IpNet,
    /// Next hop; none for a route to a directly attached network.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Metric (priority).
    #[serde(default)]
    pub metric: Option<u32>,
    /// The gateway is reachable on the link although no prefix covers it
    /// (`onlink`).
    #[serde(default)]
    pub on_link: bool,
}

/// A static neighbour (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourSpec {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// Its Ethernet address.
    pub mac: MacAddr,
}

/// One guest network interface, as the host prepared it: the guest's NIC
/// with this MAC gets this name, MTU, addresses, routes and neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// Name to give it (the host interface's, e.g. `eth0`).
    pub name: String,
    /// The MAC of the guest NIC, which identifies it.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Addresses.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Routes through this interface.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Static neighbours on this interface.
    #[serde(default)]
    pub neighbours: Vec<NeighbourSpec>,
}

/// Control messages. Host to agent: `Hello`, `ConfigureNetwork`, `Create`,
/// `Start`, `Exec`, `Signal`, `Ps`, `Delete`, `Freeze`, `Shutdown`. Agent to
/// host: `Ready`, `NetworkConfigured`, `Created`, `Started`, `Exited`,
/// `Processes`, `Deleted`, `Frozen`, `Error`.
///
/// A guest holds several containers, each named by its id: a pod's sandbox
/// container first, then members created with `share_namespaces_with` it.
/// Every request is answered in order by its reply or by `Error`, except
/// `Signal`, whose success has no reply, and `Shutdown`. A container's init
/// exiting is reported by `Exited` naming the container; the container then
/// stays (stopped, its mounts gone) until `Delete`, after which its id may
/// be created again. The guest powers off on `Shutdown` or when the host
/// closes the channel; a guest that never had a member container (the one
/// container of `runm run`) also by itself shortly after its last
/// container stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First host message.
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Configure the guest's network before the first `Create`: loopback up,
    /// then each interface found by its MAC. Sent once; an empty list leaves
    /// the guest with loopback only.
    ConfigureNetwork {
        /// The interfaces.
        interfaces: Vec<InterfaceSpec>,
    },
    /// Prepare a container (mounts, cgroup, namespaces); its init process
    /// waits for `Start`. Answered by `Created`.
    Create {
        /// What to build (boxed: it is much larger than the other messages).
        container: Box<ContainerSpec>,
        /// The process id of its init process (its stdio frames, `Started`,
        /// `Exited`): not in use by a live process.
        #[serde(default)]
        init_process: u32,
        /// The id of a running container of this guest whose network, IPC
        /// and UTS namespaces the new one joins (a pod's sandbox); none: new
        /// IPC and UTS namespaces, the guest's network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        share_namespaces_with: Option<String>,
    },
    /// Run a created container's init process. Answered by `Started`.
    Start {
        /// Which container.
        container: String,
    },
    /// Run another process in a running container. Answered by `Started`.
    Exec {
        /// Which container.
        container: String,
        /// Host-chosen id, not in use by a live process.
        process_id: u32,
        /// The process.
        process: ProcessSpec,
    },
    /// A process's terminal has a new size (its host side was resized);
    /// only a failure is answered (`Error`).
    Resize {
        /// Which process (one started with a terminal).
        process_id: u32,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Deliver a signal; only a failure is answered (`Error`).
    Signal {
        /// Which container.
        container: String,
        /// Which of its processes (ignored with `all`).
        process_id: u32,
        /// Signal number.
        signal: i32,
        /// To every process of the container instead.
        all: bool,
    },
    /// List a running container's processes. Answered by `Processes`.
    Ps {
        /// Which container.
        container: String,
    },
    /// Release a stopped container (its cgroup, its id). Answered by
    /// `Deleted`.
    Delete {
        /// Which container.
        container: String,
    },
    /// Stop (or continue) every process of a running container, through
    /// its guest cgroup's freezer: one container of a pod paused while the
    /// VM runs on. Answered by `Frozen`.
    Freeze {
        /// Which container.
        container: String,
        /// Stop (true) or continue (false).
        frozen: bool,
    },
    /// Power the guest off now.
    Shutdown,
    /// First agent message.
    Ready {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u32,
        /// The guest kernel's release (`uname -r`).
        kernel: String,
    },
    /// The network was configured.
    NetworkConfigured,
    /// The container was prepared.
    Created,
    /// A process is running.
    Started {
        /// Which.
        process_id: u32,
        /// Its pid inside the guest.
        pid: u32,
    },
    /// A process ended; its output streams have been flushed before this.
    Exited {
        /// Which.
        process_id: u32,
        /// Exit code, or 128 + signal number if it was killed.
        status: i32,
        /// Set when it was a container's init process: that container
        /// stopped (the rest of its processes die with its PID namespace).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// Answer to `Ps`: guest pids of the container's processes.
    Processes {
        /// The pids.
        pids: Vec<u32>,
    },
    /// Answer to `Delete`.
    Deleted,
    /// Answer to `Freeze`: the container's processes are stopped (or go on).
    Frozen,
    /// A request failed.
    Error {
        /// What went wrong, for people.
        message: String,
    },
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control message (boxed: it is much larger than a data frame's header).
    Control(Box<Message>),
    /// Stdio bytes of a process.
    Data {
        /// Which process.
        process_id: u32,
        /// Which stream.
        stream: Stream,
        /// The bytes; empty stdin means end of input.
        data: Vec<u8>,
    },
}

/// Writes one frame (one `write_all`, so frames from threads sharing a locked
/// writer never interleave).
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> Result<(), ProtoError> {
    let mut body = Vec::new();
    match frame {
        Frame::Control(m) => {
            body.push(KIND_CONTROL);
            serde_json::to_writer(&mut body, m.as_ref())?;
        }
        Frame::Data {
            process_id,
            stream,
            data,
        } => {
            body.reserve(6 + data.len());
            body.push(KIND_DATA);
            body.extend_from_slice(&process_id.to_be_bytes());
            body.push(stream.to_byte());
            body.extend_from_slice(data);
        }
    }
    if body.len() > MAX_FRAME {
        return Err(ProtoError::FrameSize(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::FrameSize(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// Writes a control message.
pub fn send<W: Write>(w: &mut W, m: Message) -> Result<(), ProtoError> {
    write_frame(w, &Frame::Control(Box::new(m)))
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::FrameSize(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    match body[0] {
        KIND_CONTROL => Ok(Some(Frame::Control(Box::new(serde_json::from_slice(
            &body[1..],
        )?)))),
        KIND_DATA => {
            if body.len() < 6 {
                return Err(ProtoError::Malformed(
                    "data frame shorter than its header".into(),
                ));
            }
            let process_id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
            let stream = Stream::from_byte(body[5])?;
            Ok(Some(Frame::Data {
                process_id,
                stream,
                data: body[6..].to_vec(),
            }))
        }
        k => Err(ProtoError::Malformed(format!("unknown frame kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).unwrap();
        let back = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn every_message_round_trips() {
        let process = ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "exit 7".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/tmp".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            terminal: true,
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096,
            }],
            no_new_privileges: true,
            capabilities: Some(Capabilities {
                bounding: 0x20_0021,
                effective: 0x21,
                inheritable: 0x20,
                permitted: 0x21,
                ambient: 0x20,
            }),
            oom_score_adj: Some(-500),
            umask: Some(0o027),
        };
        let container = ContainerSpec {
            id: "c1".into(),
            hostname: Some("box".into()),
            root: RootSpec {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
                source: "c1/rootfs".into(),
            },
            mounts: vec![MountSpec {
                destination: "/proc".into(),
                fstype: "proc".into(),
                source: "proc".into(),
                options: vec!["nosuid".into()],
            }],
            process: process.clone(),
            linux: LinuxSpec {
                user_namespace: true,
                cgroup_namespace: true,
                uid_mappings: vec![IdMapping {
                    container_id: 0,
                    host_id: 100_000,
                    size: 65_536,
                }],
                gid_mappings: vec![IdMapping {
                    container_id: 0,
                    host_id: 100_000,
                    size: 65_536,
                }],
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                devices: vec![DeviceSpec {
                    path: "/dev/fuse".into(),
                    kind: 'c',
                    major: 10,
                    minor: 229,
                    mode: 0o666,
                    uid: 0,
                    gid: 0,
                }],
                rootfs_propagation: Some("rslave".into()),
                sysctl: vec![("kernel.shmmax".into(), "65536".into())],
                resources: ResourcesSpec {
                    memory_max: Some(1 << 28),
                    cpu_max: Some((50_000, 100_000)),
                    cpu_weight: Some(100),
                    pids_max: Some(64),
                },
                seccomp: Some(SeccompSpec {
                    flags: 2,
                    filters: vec![vec![BpfInstruction(6, 0, 0, 0x7fff_0000)]],
                }),
            },
        };
        for m in [
            Message::Hello {
                version: PROTOCOL_VERSION,
            },
            Message::ConfigureNetwork {
                interfaces: vec![sample_interface()],
            },
            Message::NetworkConfigured,
            Message::Create {
                container: Box::new(container.clone()),
                init_process: 0,
                share_namespaces_with: None,
            },
            Message::Create {
                container: Box::new(container),
                init_process: 100,
                share_namespaces_with: Some("pod".into()),
            },
            Message::Start {
                container: "c1".into(),
            },
            Message::Exec {
                container: "c1".into(),
                process_id: 1,
                process,
            },
            Message::Signal {
                container: "c1".into(),
                process_id: 0,
                signal: 15,
                all: true,
            },
            Message::Ps {
                container: "c1".into(),
            },
            Message::Resize {
                process_id: 3,
                rows: 40,
                cols: 120,
            },
            Message::Delete {
                container: "c1".into(),
            },
            Message::Shutdown,
            Message::Ready {
                version: 1,
                kernel: "6.12".into(),
            },
            Message::Created,
            Message::Started {
                process_id: 0,
                pid: 42,
            },
            Message::Exited {
                process_id: 0,
                status: 7,
                container: None,
            },
            Message::Exited {
                process_id: 100,
                status: 0,
                container: Some("c1".into()),
            },
            Message::Processes { pids: vec![1, 2] },
            Message::Deleted,
            Message::Freeze {
                container: "c1".into(),
                frozen: true,
            },
            Message::Frozen,
            Message::Error {
                message: "no".into(),
            },
        ] {
            round_trip(Frame::Control(Box::new(m)));
        }
        round_trip(Frame::Data {
            process_id: 3,
            stream: Stream::Stderr,
            data: b"\0\xffbytes".to_vec(),
        });
        round_trip(Frame::Data {
            process_id: 0,
            stream: Stream::Stdin,
            data: vec![],
        });
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let mut buf = Vec::new();
        send(
            &mut buf,
            Message::Exited {
                process_id: 0,
                status: 7,
                container: None,
            },
        )
        .unwrap();
        assert_eq!(&buf[5..], br#"{"type":"exited","process_id":0,"status":7}"#);
        assert_eq!(
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            buf.len() - 4
        );
        let init_exit = serde_json::to_string(&Message::Exited {
            process_id: 100,
            status: 0,
            container: Some("m1".into()),
        })
        .unwrap();
        assert_eq!(
            init_exit,
            r#"{"type":"exited","process_id":100,"status":0,"container":"m1"}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::Start {
                container: "m1".into()
            })
            .unwrap(),
            r#"{"type":"start","container":"m1"}"#
        );
    }

    /// What a one-container host leaves out means what it meant before
    /// several containers: init process 0, no shared namespaces, the root at
    /// `rootfs` in the share.
    #[test]
    fn create_defaults_keep_the_one_container_meaning() {
        let m: Message = serde_json::from_str(
            r#"{"type":"create","container":{"id":"c","root":{"device":"runm","fstype":"virtiofs"},
                "process":{"args":["true"]}}}"#,
        )
        .unwrap();
        let Message::Create {
            container,
            init_process,
            share_namespaces_with,
        } = m
        else {
            panic!("not a create: {m:?}");
        };
        assert_eq!(init_process, INIT_PROCESS);
        assert_eq!(share_namespaces_with, None);
        assert_eq!(container.root.source, SHARE_ROOTFS);
        // A request naming no container is refused, not guessed.
        assert!(serde_json::from_str::<Message>(r#"{"type":"start"}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"type":"ps"}"#).is_err());
    }

    #[test]
    fn several_frames_in_one_stream_and_clean_eof() {
        let mut buf = Vec::new();
        send(&mut buf, Message::Shutdown).unwrap();
        write_frame(
            &mut buf,
            &Frame::Data {
                process_id: 0,
                stream: Stream::Stdout,
                data: b"hi".to_vec(),
            },
        )
        .unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Control(Box::new(Message::Shutdown)))
        );
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Data { .. })
        ));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_frames_are_errors_not_allocations() {
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(ProtoError::FrameSize(_))
        ));
        let zero = 0u32.to_be_bytes();
        assert!(matches!(
            read_frame(&mut zero.as_slice()),
            Err(ProtoError::FrameSize(0))
        ));
        let mut bad_kind = 1u32.to_be_bytes().to_vec();
        bad_kind.push(9);
        assert!(matches!(
            read_frame(&mut bad_kind.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut short_data = 3u32.to_be_bytes().to_vec();
        short_data.extend_from_slice(&[1, 0, 0]);
        assert!(matches!(
            read_frame(&mut short_data.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut bad_stream = 6u32.to_be_bytes().to_vec();
        bad_stream.extend_from_slice(&[1, 0, 0, 0, 0, 7]);
        assert!(matches!(
            read_frame(&mut bad_stream.as_slice()),
            Err(ProtoError::Malformed(_))
        ));
        let mut bad_json = 3u32.to_be_bytes().to_vec();
        bad_json.extend_from_slice(&[0, b'{', b'}']);
        assert!(matches!(
            read_frame(&mut bad_json.as_slice()),
            Err(ProtoError::Json(_))
        ));
        let mut truncated = 10u32.to_be_bytes().to_vec();
        truncated.push(0);
        assert!(matches!(
            read_frame(&mut truncated.as_slice()),
            Err(ProtoError::Io(_))
        ));
    }

    #[test]
    fn oversized_frames_are_refused_on_write() {
        let f = Frame::Data {
            process_id: 0,
            stream: Stream::Stdout,
            data: vec![0; MAX_FRAME],
        };
        assert!(matches!(
            write_frame(&mut Vec::new(), &f),
            Err(ProtoError::FrameSize(_))
        ));
    }

    fn sample_interface() -> InterfaceSpec {
        InterfaceSpec {
            name: "eth0".into(),
            mac: MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x05]),
            mtu: 1500,
            addresses: vec![
                IpNet {
                    address: "10.88.0.5".parse().unwrap(),
                    prefix_len: 16,
                },
                IpNet {
                    address: "fd00::5".parse().unwrap(),
                    prefix_len: 64,
                },
            ],
            routes: vec![RouteSpec {
                destination: IpNet {
                    address: "0.0.0.0".parse().unwrap(),
                    prefix_len: 0,
                },
                gateway: Some("10.88.0.1".parse().unwrap()),
                source: None,
                metric: Some(100),
                on_link: false,
            }],
            neighbours: vec![NeighbourSpec {
                address: "10.88.0.1".parse().unwrap(),
                mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            }],
        }
    }

    #[test]
    fn network_description_is_readable_json() {
        let json = serde_json::to_value(sample_interface()).unwrap();
        assert_eq!(json["mac"], "02:42:0a:58:00:05");
        assert_eq!(json["addresses"][0]["address"], "10.88.0.5");
        assert_eq!(json["addresses"][0]["prefix_len"], 16);
        assert_eq!(json["routes"][0]["gateway"], "10.88.0.1");
        assert_eq!(json["neighbours"][0]["mac"], "02:00:00:00:00:01");
        // Optional parts may be left out.
        let minimal: InterfaceSpec =
            serde_json::from_str(r#"{"name":"eth1","mac":"02:00:00:00:00:02","mtu":9000}"#)
                .unwrap();
        assert!(minimal.addresses.is_empty() && minimal.routes.is_empty());
        let route: RouteSpec =
            serde_json::from_str(r#"{"destination":{"address":"::","prefix_len":0}}"#).unwrap();
        assert_eq!(route.gateway, None);
        assert!(!route.on_link);
    }

    #[test]
    fn mac_addresses_parse_strictly() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "02-42-ac-11-00-02",
            "zz:42:ac:11:00:02",
            "+2:42:ac:11:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<MacAddr>(r#""nope""#).is_err());
    }

    #[test]
    fn prefix_lengths_are_checked_per_family() {
        let net = |a: &str, p| IpNet {
            address: a.parse().unwrap(),
            prefix_len: p,
        };
        assert!(net("10.0.0.1", 32).is_valid());
        assert!(!net("10.0.0.1", 33).is_valid());
        assert!(net("fd00::1", 128).is_valid());
        assert!(!net("fd00::1", 129).is_valid());
        assert_eq!(net("fd00::1", 64).to_string(), "fd00::1/64");
    }

    #[test]
    fn process_spec_defaults() {
        let p: ProcessSpec = serde_json::from_str(r#"{"args":["true"]}"#).unwrap();
        assert_eq!(p.cwd, "/");
        assert_eq!(p.uid, 0);
        assert!(!p.terminal);
        assert_eq!(p.capabilities, None);
        let l: LinuxSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(l, LinuxSpec::default());
        let i: BpfInstruction = serde_json::from_str("[32, 0, 1, 4]").unwrap();
        assert_eq!(i, BpfInstruction(32, 0, 1, 4));
    }
}
