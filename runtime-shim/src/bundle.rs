//! The OCI bundle: `config.json` read with oci-spec and turned into what the
//! guest agent builds ([`ContainerSpec`]) and how big the VM is ([`VmSizing`]).
//!
//! Owns the mapping from the OCI configuration to runm's world and the policy
//! for what runm does not honour:
//! - honoured: `process` (args, env, cwd, user uid/gid/additionalGids,
//!   terminal, rlimits, noNewPrivileges, capabilities, oomScoreAdj), `root`
//!   (path, readonly: the directory itself reaches the guest through
//!   virtio-fs, or a copy in an ext4 image with `io.runm.rootfs=image`),
//!   `hostname`, `mounts` of kernel file systems (proc, sysfs, tmpfs, devpts,
//!   mqueue, cgroup as cgroup2, ...) done inside the guest, bind mounts of
//!   host files and directories (through the same virtio-fs share, see
//!   [`crate::share`]; their propagation to or from the host is not), `linux.resources.memory.limit` (guest RAM) and
//!   `linux.resources.cpu` quota/period (vCPUs), `annotations` (and runm's
//!   own `io.runm.*`); inside the guest, as runc does on a host: new PID,
//!   mount, IPC and UTS namespaces (user and cgroup ones when listed, with
//!   `uidMappings`/`gidMappings`), `linux.seccomp` (compiled here, see
//!   [`crate::seccomp`]), `maskedPaths`, `readonlyPaths`, `devices`,
//!   `rootfsPropagation`, `sysctl`, and memory, CPU and pids limits in a
//!   cgroup of the guest;
//!   `linux.cgroupsPath` with the memory limit and CPU quota, period and
//!   shares are also applied on the host, to the sandbox and VM processes
//!   (`create` does that with [`crate::cgroup`]);
//! - held to runm's own configuration ([`crate::config`]), because the
//!   bundle is not trusted: `io.runm.*` annotations only where enabled, guest
//!   RAM and vCPUs within the host's limits (a request above them is refused,
//!   a resource limit above them is already kept by the largest VM allowed),
//!   and `root.path` opened without following a symlink out of the bundle
//!   (relative) or any symlink at all (absolute), then used only through
//!   the open directory ([`RootDir`]), so it cannot be swapped afterwards;
//! - the network namespace: one named by path (`linux.namespaces` entry
//!   `network` with a `path`, as CNI, netavark and containerd prepare it) is
//!   joined, and its interfaces become the guest's; one asked for without a
//!   path is made by runm for the container; none at all (the host's
//!   network, which a VM cannot share) leaves the guest loopback only;
//! - hooks: `prestart`, `createRuntime`, `poststart` and `poststop` run on
//!   the host ([`crate::hooks`]);
//! - refused with an error: bind mounts of what is not a file or a
//!   directory (device nodes, sockets), other mounts of host paths, and
//!   joining other existing namespaces (`linux.namespaces[].path`): a VM
//!   cannot share them with the host, and pretending would give the workload
//!   something other than what it asked for;
//! - refused with an error too: unknown capability names, seccomp system
//!   call names no x86 table has, devices of an unknown type, sysctl keys
//!   that leave /proc/sys, all before anything is made;
//! - accepted with a warning: what runm does not apply (AppArmor/SELinux
//!   labels of the host, device cgroup rules, the hooks that run inside the
//!   container (`createContainer`, `startContainer`), other resource
//!   limits, ...). None of them
//!   weakens isolation from the host: the workload has its own kernel, and
//!   the VM is a stronger boundary than what each of these adds to runc. They
//!   do weaken isolation *inside* the VM (between processes of the same
//!   container), which is why they are reported, never silently dropped.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use guest_agent::proto::{
    Capabilities, ContainerSpec, DeviceSpec, IdMapping, LinuxSpec, MountSpec, ProcessSpec,
    ResourcesSpec, Rlimit, RootSpec, SHARE_MOUNTS, SHARE_ROOTFS, SHARE_TAG,
};
use oci_spec::runtime::{Hooks, Linux, LinuxNamespaceType, Process, Spec};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Limits};
use crate::share::HostBind;

/// Guest RAM when the bundle sets no memory limit.
pub const DEFAULT_MEM_MIB: u64 = 256;
/// Least guest RAM: the guest kernel and agent need room beside the workload.
pub const MIN_MEM_MIB: u64 = 128;
/// vCPUs when the bundle sets no CPU quota.
pub const DEFAULT_VCPUS: u8 = 1;
/// Most vCPUs runm-vmm supports.
pub const MAX_VCPUS: u8 = vm_spec::config::MAX_VCPUS;
/// Annotation overriding guest RAM (MiB).
pub const ANNOTATION_MEMORY: &str = "io.runm.vm.memory_mib";
/// Annotation overriding the vCPU count.
pub const ANNOTATION_VCPUS: &str = "io.runm.vm.vcpus";
/// Annotation overriding the memory the VM process may use on the host
/// beyond guest RAM (MiB), added to the host cgroup's memory limit.
pub const ANNOTATION_HOST_OVERHEAD: &str = "io.runm.vm.host_overhead_mib";
/// Annotation choosing the hypervisor (`runm-vmm`, `qemu`, `auto`).
pub const ANNOTATION_HYPERVISOR: &str = "io.runm.hypervisor";
/// Annotation choosing how the root file system reaches the guest:
/// `virtiofs` (the default: the directory itself, shared) or `image` (a
/// copy in an ext4 image on a virtio-blk disk, built at `create`).
pub const ANNOTATION_ROOTFS: &str = "io.runm.rootfs";
/// The root file system's device inside the guest (the first virtio-blk
/// disk), with `io.runm.rootfs=image`.
pub const GUEST_ROOT_DEVICE: &str = "/dev/vda";

/// Errors in a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle directory is not there.
    #[error("bundle directory {path}: {source}")]
    BundleDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No readable `config.json`.
    #[error("cannot read {path} (no config.json in the bundle?): {source}")]
    NoConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `config.json` is not a valid OCI configuration.
    #[error("malformed {path}: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The root file system directory is missing.
    #[error("root file system {rootfs} (root.path in {config}) {why}")]
    Rootfs {
        /// The directory.
        rootfs: PathBuf,
        /// The config file naming it.
        config: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Something runm cannot do in a microVM.
    #[error("{0}: not supported in a microVM")]
    Unsupported(String),
    /// A bind mount's source cannot be shared with the guest.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
    /// A value is missing or wrong.
    #[error("{config}: {what}")]
    Invalid {
        /// The config file.
        config: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// How big the VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSizing {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
}

/// The container's network namespace, from `linux.namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkNamespace {
    /// None asked for: runc would share the host's network, which a VM
    /// cannot; the guest has loopback only.
    Host,
    /// A new one: runm makes it for the container.
    New,
    /// The namespace at this path, prepared by the engine.
    Join(PathBuf),
}

/// Everything `create` needs from a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The root file system directory (absolute).
    pub rootfs: PathBuf,
    /// `root.path` as given (relative to the bundle, or absolute).
    pub root_path: PathBuf,
    /// What the agent builds.
    pub container: ContainerSpec,
    /// VM size.
    pub sizing: VmSizing,
    /// `io.runm.hypervisor`, if given (and enabled).
    pub hypervisor: Option<String>,
    /// `io.runm.vm.host_overhead_mib`, if given (and enabled, within the limit).
    pub host_overhead_mib: Option<u64>,
    /// The bundle's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Configuration runm accepts but does not apply (see the module docs).
    pub ignored: Vec<String>,
    /// `linux.cgroupsPath`, if given and not empty.
    pub cgroups_path: Option<String>,
    /// What of `linux.resources` can also be applied on the host.
    pub host: HostResources,
    /// The namespaces `config.json` leaves to the host (`pid`, `ipc`, `uts`
    /// not listed, as `docker run --pid host`): a VM cannot share them, the
    /// container gets its own in the guest all the same.
    pub host_namespaces: Vec<&'static str>,
    /// The network namespace.
    pub network: NetworkNamespace,
    /// The hooks (runm runs those of the host, see [`crate::hooks`]).
    pub hooks: Option<Hooks>,
    /// The root file system is copied into an ext4 image
    /// ([`ANNOTATION_ROOTFS`] `image`) instead of shared.
    pub root_image: bool,
    /// The bind mounts, numbered as the guest's mounts name them.
    pub binds: Vec<HostBind>,
    /// For a container of a pod (not its sandbox): the id of the pod's
    /// sandbox container, in whose VM it runs.
    pub pod: Option<String>,
    /// The container is a pod's sandbox (CRI, CRI-O): its VM takes the
    /// pod's further containers, so it always shares host directories.
    pub pod_sandbox: bool,
}

/// The part of `linux.resources` runm applies to the host cgroup of the
/// sandbox and VM (as given; `create` turns it into host limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostResources {
    /// `memory.limit` (bytes; positive only).
    pub memory_limit: Option<u64>,
    /// `cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// `cpu.quota` (microseconds per period; positive only).
    pub cpu_quota: Option<i64>,
    /// `cpu.period` (microseconds).
    pub cpu_period: Option<u64>,
}

impl HostResources {
    /// Reads them from `linux.resources`.
    pub fn of(r: Option<&oci_spec::runtime::LinuxResources>) -> Self {
        let mem = r.and_then(|r| r.memory().as_ref());
        let cpu = r.and_then(|r| r.cpu().as_ref());
        HostResources {
            memory_limit: mem
                .and_then(|m| m.limit())
                .and_then(|l| u64::try_from(l).ok())
                .filter(|l| *l > 0),
            cpu_shares: cpu.and_then(|c| c.shares()).filter(|s| *s > 0),
            cpu_quota: cpu.and_then(|c| c.quota()).filter(|q| *q > 0),
            cpu_period: cpu.and_then(|c| c.period()).filter(|p| *p > 0),
        }
    }
}

/// The root file system directory, open (`O_PATH`): everything after
/// [`load`] reaches it through this descriptor, never through `root.path`
/// again, so a symlink swapped in afterwards changes nothing.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    /// The open directory.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// A path to the open directory that this process and its children
    /// (same user) can use while this process runs.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }
}

/// Reads `<bundle>/config.json`, maps it under runm's `config` and opens
/// the root file system.
pub fn load(
    bundle: &Path,
    id: &str,
    config: &Config,
) -> Result<(ContainerPlan, RootDir), BundleError> {
    let bundle = fs::canonicalize(bundle).map_err(|source| BundleError::BundleDir {
        path: bundle.to_path_buf(),
        source,
    })?;
    let (spec, raw) = read_config(&bundle)?;
    let plan = plan(&spec, &raw, &bundle, id, config, &config.host_limits())?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let dir = open_root(&bundle, &root)?;
    for b in &plan.binds {
        crate::share::open_source(b)?;
    }
    Ok((plan, dir))
}

/// Opens `root` (`root.path`): a relative path beneath `bundle`, through
/// symlinks only where they stay beneath it; an absolute one through no
/// symlink at all (what it names is the host's business, and a symlink in it
/// is how a hostile bundle would point elsewhere).
pub fn open_root(bundle: &Path, root: &Path) -> Result<RootDir, BundleError> {
    let rootfs = bundle.join(root);
    let fail = |why: String| BundleError::Rootfs {
        rootfs: rootfs.clone(),
        config: bundle.join("config.json"),
        why,
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let absolute = root.is_absolute();
    let opened = if absolute {
        openat2_retrying(
            CWD,
            root,
            flags,
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    } else {
        rustix::fs::open(bundle, flags, Mode::empty()).and_then(|b| {
            openat2_retrying(
                &b,
                root,
                flags,
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            )
        })
    };
    match opened {
        Ok(fd) => Ok(RootDir { fd }),
        Err(rustix::io::Errno::NOENT) => Err(fail("does not exist".into())),
        Err(rustix::io::Errno::NOTDIR) => Err(fail("is not a directory".into())),
        Err(rustix::io::Errno::XDEV) => Err(fail(
            "leads out of the bundle directory (through a symlink or '..'): refused".into(),
        )),
        Err(rustix::io::Errno::LOOP) if absolute => Err(fail(
            "has a symlink in it: an absolute root.path must name the directory without symlinks"
                .into(),
        )),
        Err(rustix::io::Errno::NOSYS) => Err(fail(
            "cannot be opened safely: this kernel has no openat2 (Linux 5.6 or later needed)"
                .into(),
        )),
        Err(e) => Err(fail(format!("cannot be opened: {}", io::Error::from(e)))),
    }
}

/// openat2 answers EAGAIN when a rename elsewhere raced the lookup.
fn openat2_retrying<Fd: std::os::fd::AsFd>(
    dir: Fd,
    path: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(&dir, path, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            r => return r,
        }
    }
}

/// Reads and parses `config.json` both as an oci-spec [`Spec`] (what runm
/// uses) and as plain JSON (to find what it does not).
pub fn read_config(bundle: &Path) -> Result<(Spec, serde_json::Value), BundleError> {
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(|source| BundleError::NoConfig {
        path: path.clone(),
        source,
    })?;
    let malformed = |source| BundleError::Malformed {
        path: path.clone(),
        source,
    };
    let raw: serde_json::Value = serde_json::from_slice(&text).map_err(malformed)?;
    // Before the typed parse, whose error for these would list every
    // variant instead of naming the field.
    check_names(&raw).map_err(|what| BundleError::Invalid {
        config: path.clone(),
        what,
    })?;
    let spec: Spec = serde_json::from_slice(&text).map_err(malformed)?;
    Ok((spec, raw))
}

/// Maps a parsed configuration (no file system access), holding it to
/// runm's configuration `runm` and the host's `limits`.
pub fn plan(
    spec: &Spec,
    raw: &serde_json::Value,
    bundle: &Path,
    id: &str,
    runm: &Config,
    limits: &Limits,
) -> Result<ContainerPlan, BundleError> {
    let config = bundle.join("config.json");
    let invalid = |what: &str| BundleError::Invalid {
        config: config.clone(),
        what: what.to_string(),
    };
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("no root (root.path) given"))?;
    if root.path().as_os_str().is_empty() {
        return Err(invalid("root.path is empty"));
    }
    let rootfs = bundle.join(root.path());
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("no process given"))?;
    let mut process = process_spec(process).map_err(|what| invalid(&what))?;
    // runc: a process without capabilities has none.
    process
        .capabilities
        .get_or_insert_with(Capabilities::default);
    let linux = match spec.linux() {
        Some(l) => linux_spec(l).map_err(|what| invalid(&what))?,
        None => LinuxSpec::default(),
    };

    let mut mounts = Vec::new();
    let mut binds = Vec::new();
    let mut unhonoured = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if let Some(mount) = mount_spec(m, bundle, &mut binds, &mut unhonoured)? {
            mounts.push(mount);
        }
    }
    let annotations_of = spec.annotations().as_ref();
    let pod = pod_member(annotations_of).map(|(_, sandbox)| sandbox);
    let mut network = NetworkNamespace::Host;
    let mut listed = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        listed.push(ns.typ());
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Network, Some(path)) => {
                if !path.is_absolute() {
                    return Err(invalid(&format!(
                        "the network namespace path '{}' is not absolute",
                        path.display()
                    )));
                }
                network = NetworkNamespace::Join(path.clone());
            }
            (LinuxNamespaceType::Network, None) => network = NetworkNamespace::New,
            // A pod's containers share its sandbox's: in its VM, where
            // the agent joins them to the sandbox container's.
            (LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts, Some(_)) if pod.is_some() => {}
            (LinuxNamespaceType::Pid, Some(path)) if pod.is_some() => {
                return Err(BundleError::Unsupported(format!(
                    "joining the pod's PID namespace {} (a shared process namespace): the \
                     containers of a pod have PID namespaces of their own in its VM",
                    path.display()
                )))
            }
            (typ, Some(path)) => {
                return Err(BundleError::Unsupported(format!(
                    "joining the existing {typ:?} namespace {}",
                    path.display()
                )))
            }
            _ => {}
        }
    }
    let host_namespaces = [
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
    ]
    .into_iter()
    .filter(|(typ, _)| !listed.contains(typ))
    .map(|(_, name)| name)
    .collect();
    let hooks = spec.hooks().clone();
    for (kind, list) in hooks.iter().flat_map(|h| {
        [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ]
    }) {
        for (i, hook) in list.iter().flatten().enumerate() {
            crate::hooks::check(kind, i, hook).map_err(|what| invalid(&what))?;
        }
    }

    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for name in annotations.keys().filter(|k| k.starts_with("io.runm.")) {
        if !runm.annotation_enabled(name) {
            return Err(invalid(&format!(
                "annotation {name} is not enabled by runm's configuration ({}: \
                 enable_annotations); only the host may choose it",
                runm.source.display()
            )));
        }
    }
    let sizing = sizing(spec, &annotations, limits).map_err(|what| invalid(&what))?;
    let hypervisor = annotations.get(ANNOTATION_HYPERVISOR).cloned();
    let host_overhead_mib = match annotations.get(ANNOTATION_HOST_OVERHEAD) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|m| *m <= limits.max_host_overhead_mib)
                .ok_or_else(|| {
                    invalid(&format!(
                        "annotation {ANNOTATION_HOST_OVERHEAD}='{v}': give a number of MiB, \
                         at most {} (runm's configuration: max_host_overhead_mib)",
                        limits.max_host_overhead_mib
                    ))
                })?,
        ),
    };
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let root_image = match annotations.get(ANNOTATION_ROOTFS).map(String::as_str) {
        None | Some("virtiofs") => false,
        Some("image") => true,
        Some(other) => {
            return Err(invalid(&format!(
                "annotation {ANNOTATION_ROOTFS}='{other}': give virtiofs or image"
            )))
        }
    };
    let mut ignored = ignored_fields(raw);
    ignored.extend(unhonoured);

    Ok(ContainerPlan {
        bundle: bundle.to_path_buf(),
        rootfs,
        root_path: root.path().clone(),
        container: ContainerSpec {
            id: id.to_string(),
            hostname,
            root: RootSpec {
                device: if root_image {
                    GUEST_ROOT_DEVICE
                } else {
                    SHARE_TAG
                }
                .to_string(),
                fstype: if root_image { "ext4" } else { "virtiofs" }.to_string(),
                readonly: root.readonly().unwrap_or(false),
                source: SHARE_ROOTFS.to_string(),
            },
            mounts,
            process,
            linux,
        },
        sizing,
        hypervisor,
        host_overhead_mib,
        annotations,
        ignored,
        cgroups_path: spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty()),
        host: HostResources::of(spec.linux().as_ref().and_then(|l| l.resources().as_ref())),
        host_namespaces,
        network,
        hooks,
        root_image,
        binds,
        pod,
        pod_sandbox: pod_sandbox(annotations_of),
    })
}

/// The OCI `process` as the agent needs it. The error is for people.
pub fn process_spec(p: &Process) -> Result<ProcessSpec, String> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err("process.args must not be empty".into());
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(format!("process.cwd '{cwd}' is not an absolute path"));
    }
    let mut rlimits = Vec::new();
    for r in p.rlimits().iter().flatten() {
        let kind = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| "process.rlimits has a type runm cannot name".to_string())?;
        rlimits.push(Rlimit {
            kind,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let capabilities = match p.capabilities() {
        Some(c) => Some(Capabilities {
            bounding: cap_mask(c.bounding().as_ref(), "bounding")?,
            effective: cap_mask(c.effective().as_ref(), "effective")?,
            inheritable: cap_mask(c.inheritable().as_ref(), "inheritable")?,
            permitted: cap_mask(c.permitted().as_ref(), "permitted")?,
            ambient: cap_mask(c.ambient().as_ref(), "ambient")?,
        }),
        None => None,
    };
    let oom_score_adj = p.oom_score_adj();
    if let Some(adj) = oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(format!("process.oomScoreAdj {adj} is outside -1000..1000"));
        }
    }
    let user = p.user();
    Ok(ProcessSpec {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        terminal: p.terminal().unwrap_or(false),
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        capabilities,
        oom_score_adj,
        umask: user.umask(),
    })
}

/// Capability names by number (linux/capability.h).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit of a capability name (`CAP_` prefix optional, any case, as runc
/// reads them).
pub fn capability_bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES
        .iter()
        .position(|c| *c == full)
        .map(|n| 1u64 << n)
}

fn cap_mask(set: Option<&oci_spec::runtime::Capabilities>, which: &str) -> Result<u64, String> {
    let mut mask = 0;
    for cap in set.into_iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        mask |= capability_bit(&name)
            .ok_or_else(|| format!("process.capabilities.{which}: unknown capability {name:?}"))?;
    }
    Ok(mask)
}

/// Checks the names the typed parse would reject with a vague message:
/// capability names and device types.
fn check_names(raw: &serde_json::Value) -> Result<(), String> {
    for which in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        let pointer = format!("/process/capabilities/{which}");
        for cap in raw
            .pointer(&pointer)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let name = cap.as_str().unwrap_or_default();
            if capability_bit(name).is_none() {
                return Err(format!(
                    "process.capabilities.{which}: unknown capability {cap}"
                ));
            }
        }
    }
    for (i, d) in raw
        .pointer("/linux/devices")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = d.get("type").and_then(|t| t.as_str());
        if !matches!(kind, Some("c" | "b" | "u" | "p")) {
            return Err(format!(
                "linux.devices[{i}] ({}): type {} is not c, b, u or p",
                d.get("path").and_then(|p| p.as_str()).unwrap_or("?"),
                d.get("type")
                    .map_or("(none)".to_string(), ToString::to_string)
            ));
        }
    }
    Ok(())
}

/// Propagation values of `rootfsPropagation`.
const PROPAGATIONS: &[&str] = &[
    "shared",
    "slave",
    "private",
    "unbindable",
    "rshared",
    "rslave",
    "rprivate",
    "runbindable",
];

fn id_mappings(m: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> Vec<IdMapping> {
    m.into_iter()
        .flatten()
        .map(|m| IdMapping {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        })
        .collect()
}

fn absolute_paths(list: Option<&Vec<String>>, field: &str) -> Result<Vec<String>, String> {
    let list = list.cloned().unwrap_or_default();
    for p in &list {
        if !p.starts_with('/') || p.contains('\0') {
            return Err(format!("linux.{field}: {p:?} is not an absolute path"));
        }
    }
    Ok(list)
}

/// The `linux` object as the guest applies it. The error is for people.
pub fn linux_spec(l: &Linux) -> Result<LinuxSpec, String> {
    let has = |t: LinuxNamespaceType| {
        l.namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let user_namespace = has(LinuxNamespaceType::User);
    let uid_mappings = id_mappings(l.uid_mappings().as_ref());
    let gid_mappings = id_mappings(l.gid_mappings().as_ref());
    if user_namespace == uid_mappings.is_empty() || user_namespace == gid_mappings.is_empty() {
        return Err(if user_namespace {
            "a user namespace needs linux.uidMappings and linux.gidMappings".into()
        } else {
            "linux.uidMappings/gidMappings need a user namespace in linux.namespaces".into()
        });
    }
    let mut devices = Vec::new();
    for (i, d) in l.devices().iter().flatten().enumerate() {
        let path = d.path().to_string_lossy().into_owned();
        if !path.starts_with('/') {
            return Err(format!("linux.devices[{i}]: path {path:?} is not absolute"));
        }
        let kind = d.typ().as_str().chars().next().unwrap_or('a');
        if !matches!(kind, 'c' | 'b' | 'u' | 'p') {
            return Err(format!(
                "linux.devices[{i}] ({path}): type {kind:?} is not c, b, u or p"
            ));
        }
        let number = |n: i64, what: &str| {
            u32::try_from(n)
                .map_err(|_| format!("linux.devices[{i}] ({path}): {what} {n} is out of range"))
        };
        devices.push(DeviceSpec {
            path: path.clone(),
            kind,
            major: number(d.major(), "major")?,
            minor: number(d.minor(), "minor")?,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let rootfs_propagation = l.rootfs_propagation().clone().filter(|p| !p.is_empty());
    if let Some(p) = &rootfs_propagation {
        if !PROPAGATIONS.contains(&p.as_str()) {
            return Err(format!(
                "linux.rootfsPropagation {p:?} is not one of {}",
                PROPAGATIONS.join(", ")
            ));
        }
    }
    let mut sysctl: Vec<(String, String)> = l
        .sysctl()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        // runc writes /proc/sys/ + the key with dots as slashes.
        if k.is_empty()
            || k.replace('.', "/")
                .split('/')
                .any(|c| c.is_empty() || c == "..")
            || k.contains('\0')
        {
            return Err(format!(
                "linux.sysctl: {k:?} is not a kernel parameter name"
            ));
        }
    }
    let seccomp = l
        .seccomp()
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(LinuxSpec {
        user_namespace,
        // Always: the guest's cgroup2 hierarchy is the VM's, not the host's,
        // and a container mounting it sees its own cgroup (and limits) at
        // the root, as runc's containers do (a bind of their cgroup on v1
        // hosts, a cgroup namespace on v2 ones).
        cgroup_namespace: true,
        uid_mappings,
        gid_mappings,
        masked_paths: absolute_paths(l.masked_paths().as_ref(), "maskedPaths")?,
        readonly_paths: absolute_paths(l.readonly_paths().as_ref(), "readonlyPaths")?,
        devices,
        rootfs_propagation,
        sysctl,
        resources: guest_resources(l.resources().as_ref()),
        seccomp,
    })
}

/// The cgroup v2 limits of the container inside the guest.
fn guest_resources(r: Option<&oci_spec::runtime::LinuxResources>) -> ResourcesSpec {
    let host = HostResources::of(r);
    ResourcesSpec {
        memory_max: host.memory_limit,
        cpu_max: host
            .cpu_quota
            .and_then(|q| u64::try_from(q).ok())
            .map(|q| (q, host.cpu_period.unwrap_or(100_000))),
        // runc's conversion of cgroup v1 shares (2..262144) to v2 weight.
        cpu_weight: host
            .cpu_shares
            .map(|s| 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142),
        pids_max: r
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .and_then(|l| u64::try_from(l).ok())
            .filter(|l| *l > 0),
    }
}

/// Kernel file systems the agent mounts inside the guest.
const GUEST_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "mqueue",
    "cgroup2",
    "devtmpfs",
    "ramfs",
    "securityfs",
    "debugfs",
    "hugetlbfs",
    "binfmt_misc",
    "configfs",
    "tracefs",
    "pstore",
    "fusectl",
];

/// Annotations that make a container a member of a pod (containerd's CRI
/// plugin; CRI-O and Podman): (container type key, sandbox id key).
const POD_ANNOTATIONS: &[(&str, &str)] = &[
    (
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri.sandbox-id",
    ),
    (
        "io.kubernetes.cri-o.ContainerType",
        "io.kubernetes.cri-o.SandboxID",
    ),
];

/// The sandbox id of a pod member (a container that is not its pod's
/// sandbox), with the annotation that names it.
fn pod_member(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Option<(&'static str, String)> {
    let a = annotations?;
    POD_ANNOTATIONS.iter().find_map(|(kind, sandbox)| {
        let member = a.get(*kind).is_some_and(|k| k == "container");
        let id = a.get(*sandbox).filter(|id| !id.is_empty())?;
        member.then(|| (*sandbox, id.clone()))
    })
}

/// Whether the container is a pod's sandbox (CRI's and CRI-O's type
/// annotation; Podman's infra container carries none).
fn pod_sandbox(annotations: Option<&std::collections::HashMap<String, String>>) -> bool {
    annotations.is_some_and(|a| {
        POD_ANNOTATIONS
            .iter()
            .any(|(kind, _)| a.get(*kind).is_some_and(|k| k == "sandbox"))
    })
}

/// Propagation options a bind mount of a VM cannot honour: nothing the
/// guest mounts reaches the host, nor the other way.
const HOST_PROPAGATION: &[&str] = &["shared", "rshared", "slave", "rslave"];

/// A mount the guest performs, `None` for one it skips, or the error for one
/// it cannot do. A bind mount of a host path (type `bind`, or the `bind` or
/// `rbind` option) becomes entry `N` of the share (`binds[N]`), which the
/// guest binds into place; what it cannot honour goes to `unhonoured`.
fn mount_spec(
    m: &oci_spec::runtime::Mount,
    bundle: &Path,
    binds: &mut Vec<HostBind>,
    unhonoured: &mut Vec<String>,
) -> Result<Option<MountSpec>, BundleError> {
    let options = m.options().clone().unwrap_or_default();
    let destination = m.destination().to_string_lossy().into_owned();
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_bind = options.iter().any(|o| o == "bind" || o == "rbind");
    let fstype = m.typ().clone().unwrap_or_default();
    if is_bind || fstype == "bind" || fstype == "rbind" {
        if source.is_empty() {
            return Err(BundleError::Unsupported(format!(
                "bind mount at {destination} without a source"
            )));
        }
        if !destination.starts_with('/') || destination == "/" {
            return Err(BundleError::Unsupported(format!(
                "bind mount of {source} at '{destination}' (not an absolute path below /)"
            )));
        }
        let recursive = fstype == "rbind" || options.iter().any(|o| o == "rbind");
        let mut kept = Vec::new();
        let mut readonly = false;
        for o in options.iter().flat_map(|o| o.split(',')) {
            match o {
                "bind" | "rbind" | "" => {}
                "ro" => {
                    readonly = true;
                    kept.push(o.to_string());
                }
                "rw" => {
                    readonly = false;
                    kept.push(o.to_string());
                }
                o if HOST_PROPAGATION.contains(&o) => {
                    unhonoured.push(format!("mounts {destination}: propagation {o}"))
                }
                o => kept.push(o.to_string()),
            }
        }
        let n = binds.len();
        binds.push(HostBind {
            // Relative to the bundle, as runc resolves it from there.
            source: bundle.join(&source),
            destination: destination.clone(),
            recursive,
            readonly,
        });
        return Ok(Some(MountSpec {
            destination,
            fstype: if recursive { "rbind" } else { "bind" }.to_string(),
            source: format!("{SHARE_MOUNTS}/{n}"),
            options: kept,
        }));
    }
    // cgroup v1 hierarchies need named controllers; the guest kernel's
    // unified hierarchy gives the workload the same view of its own limits.
    let fstype = if fstype == "cgroup" {
        "cgroup2".to_string()
    } else {
        fstype
    };
    if !GUEST_FILESYSTEMS.contains(&fstype.as_str()) {
        let what = if fstype.is_empty() { "(none)" } else { &fstype };
        return Err(BundleError::Unsupported(format!(
            "mount of type {what} from host source {source} at {destination}"
        )));
    }
    Ok(Some(MountSpec {
        destination,
        fstype,
        source,
        options,
    }))
}

/// Guest RAM and vCPUs from the resources and the `io.runm.vm.*`
/// annotations, within `limits`: resource limits above them are clamped
/// (the largest VM allowed keeps them), annotations above them refused (they
/// ask for a size, and the host does not give it).
fn sizing(
    spec: &Spec,
    annotations: &BTreeMap<String, String>,
    limits: &Limits,
) -> Result<VmSizing, String> {
    let max_mem = limits.max_memory_mib;
    if max_mem < MIN_MEM_MIB {
        return Err(format!(
            "runm's configuration allows at most {max_mem} MiB of guest RAM, less than the \
             {MIN_MEM_MIB} MiB a guest needs"
        ));
    }
    let max_vcpus = u8::try_from(limits.max_vcpus.clamp(1, u32::from(MAX_VCPUS))).unwrap_or(1);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let mut mem_mib = DEFAULT_MEM_MIB.min(max_mem);
    if let Some(limit) = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
    {
        if limit > 0 {
            let limit = u64::try_from(limit).unwrap_or(u64::MAX);
            mem_mib = limit.div_ceil(1 << 20).clamp(MIN_MEM_MIB, max_mem);
        }
    }
    let mut vcpus = DEFAULT_VCPUS;
    if let Some(cpu) = resources.and_then(|r| r.cpu().as_ref()) {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            if quota > 0 && period > 0 {
                let quota = u64::try_from(quota).unwrap_or(u64::MAX);
                let want = quota.div_ceil(period);
                vcpus = u8::try_from(want.min(u64::from(max_vcpus))).unwrap_or(max_vcpus);
            }
        }
    }
    if let Some(pod) = pod_sizing(annotations, max_mem, max_vcpus)? {
        (mem_mib, vcpus) = pod;
    }
    if let Some(v) = annotations.get(ANNOTATION_MEMORY) {
        mem_mib = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|m| (MIN_MEM_MIB..=max_mem).contains(m))
            .ok_or_else(|| {
                format!(
                    "annotation {ANNOTATION_MEMORY}='{v}': give a number of MiB from \
                     {MIN_MEM_MIB} to {max_mem} (this host's limit)"
                )
            })?;
    }
    if let Some(v) = annotations.get(ANNOTATION_VCPUS) {
        vcpus = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=u64::from(max_vcpus)).contains(n))
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| {
                format!(
                    "annotation {ANNOTATION_VCPUS}='{v}': give a number from 1 to {max_vcpus} \
                     (this host's limit)"
                )
            })?;
    }
    Ok(VmSizing { mem_mib, vcpus })
}

/// containerd's annotations of a pod's sandbox container with the pod's
/// resources: the sums of its containers' limits, as kubelet computes them
/// (`PodSandboxConfig.linux.resources`).
const CRI_SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// See [`CRI_SANDBOX_MEMORY`].
const CRI_SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// See [`CRI_SANDBOX_MEMORY`].
const CRI_SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// Guest RAM of a pod's VM beside its containers' limits: the guest kernel,
/// the agent and the sandbox container's own process.
pub const POD_BASE_MEM_MIB: u64 = 128;

/// The size of a pod's VM from its sandbox container's [`CRI_SANDBOX_MEMORY`]
/// and CPU annotations: [`POD_BASE_MEM_MIB`] plus the containers' memory,
/// and as many vCPUs as their CPU quota needs, within this host's limits;
/// `None` when the pod states neither.
fn pod_sizing(
    annotations: &BTreeMap<String, String>,
    max_mem: u64,
    max_vcpus: u8,
) -> Result<Option<(u64, u8)>, String> {
    let number = |key: &str| -> Result<Option<u64>, String> {
        annotations
            .get(key)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .map_err(|_| format!("annotation {key}='{v}' is not a number"))
            })
            .transpose()
    };
    let memory = number(CRI_SANDBOX_MEMORY)?.filter(|m| *m > 0);
    let quota = number(CRI_SANDBOX_CPU_QUOTA)?.filter(|q| *q > 0);
    let period = number(CRI_SANDBOX_CPU_PERIOD)?.filter(|p| *p > 0);
    if memory.is_none() && quota.is_none() {
        return Ok(None);
    }
    let mem_mib = match memory {
        Some(bytes) => POD_BASE_MEM_MIB
            .saturating_add(bytes.div_ceil(1 << 20))
            .clamp(MIN_MEM_MIB, max_mem),
        None => DEFAULT_MEM_MIB.min(max_mem),
    };
    let vcpus = match (quota, period) {
        (Some(q), Some(p)) => {
            u8::try_from(q.div_ceil(p).clamp(1, u64::from(max_vcpus))).unwrap_or(max_vcpus)
        }
        _ => DEFAULT_VCPUS,
    };
    Ok(Some((mem_mib, vcpus)))
}

/// Configuration runm accepts but does not apply, by JSON pointer.
const NOT_APPLIED: &[&str] = &[
    "/process/apparmorProfile",
    "/process/selinuxLabel",
    "/process/ioPriority",
    "/process/scheduler",
    "/process/execCPUAffinity",
    "/process/consoleSize",
    "/process/user/username",
    "/domainname",
    "/hooks/createContainer",
    "/hooks/startContainer",
    "/linux/mountLabel",
    "/linux/intelRdt",
    "/linux/personality",
    "/linux/timeOffsets",
    "/linux/memoryPolicy",
    "/linux/netDevices",
    "/linux/resources/devices",
    "/linux/resources/blockIO",
    "/linux/resources/hugepageLimits",
    "/linux/resources/network",
    "/linux/resources/rdma",
    "/linux/resources/unified",
    "/linux/resources/memory/reservation",
    "/linux/resources/memory/swap",
    "/linux/resources/memory/kernel",
    "/linux/resources/memory/kernelTCP",
    "/linux/resources/memory/swappiness",
    "/linux/resources/memory/disableOOMKiller",
    "/linux/resources/cpu/cpus",
    "/linux/resources/cpu/mems",
    "/linux/resources/cpu/realtimeRuntime",
    "/linux/resources/cpu/realtimePeriod",
    "/linux/resources/cpu/idle",
    "/linux/resources/cpu/burst",
];

/// Dotted names of the [`NOT_APPLIED`] fields present (non-empty) in `raw`.
pub fn ignored_fields(raw: &serde_json::Value) -> Vec<String> {
    let present = |v: &serde_json::Value| match v {
        serde_json::Value::Null => false,
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        serde_json::Value::String(s) => !s.is_empty(),
        _ => true,
    };
    NOT_APPLIED
        .iter()
        .filter(|p| raw.pointer(p).is_some_and(present))
        .map(|p| p[1..].replace('/', "."))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> (Spec, serde_json::Value) {
        (serde_json::from_value(v.clone()).unwrap(), v)
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        })
    }

    fn plan_with(v: serde_json::Value, config: &Config) -> Result<ContainerPlan, BundleError> {
        let (spec, raw) = parse(v);
        plan(
            &spec,
            &raw,
            Path::new("/b"),
            "c1",
            config,
            &config.limits(4, 8192),
        )
    }

    fn plan_of(v: serde_json::Value) -> Result<ContainerPlan, BundleError> {
        plan_with(v, &Config::default())
    }

    fn all_annotations() -> Config {
        Config {
            enable_annotations: vec!["io.runm.*".into()],
            ..Config::default()
        }
    }

    #[test]
    fn minimal_config_maps_with_defaults() {
        let p = plan_of(minimal()).unwrap();
        assert_eq!(p.rootfs, Path::new("/b/rootfs"));
        assert_eq!(
            p.sizing,
            VmSizing {
                mem_mib: 256,
                vcpus: 1
            }
        );
        assert_eq!(p.container.id, "c1");
        // The root directory itself, shared: no copy.
        assert_eq!(p.container.root.device, "runm");
        assert_eq!(p.container.root.fstype, "virtiofs");
        assert!(!p.root_image);
        assert!(!p.container.root.readonly);
        let mut v = minimal();
        v["annotations"] = serde_json::json!({"io.runm.rootfs": "image"});
        let p2 = plan_of(v.clone()).unwrap();
        assert_eq!(
            (
                p2.container.root.device.as_str(),
                p2.container.root.fstype.as_str()
            ),
            ("/dev/vda", "ext4")
        );
        assert!(p2.root_image);
        v["annotations"] = serde_json::json!({"io.runm.rootfs": "nfs"});
        let e = plan_of(v).unwrap_err().to_string();
        assert!(e.contains("io.runm.rootfs='nfs'"), "{e}");
        assert_eq!(p.container.process.args, vec!["sh"]);
        assert_eq!(p.container.hostname, None);
        assert!(p.ignored.is_empty(), "{:?}", p.ignored);
        assert!(p.hypervisor.is_none());
    }

    #[test]
    fn process_fields_map_to_the_agent_spec() {
        let mut v = minimal();
        v["process"] = serde_json::json!({
            "terminal": true,
            "args": ["sh", "-c", "exit 7"],
            "env": ["PATH=/bin", "A=b"],
            "cwd": "/tmp",
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}],
            "noNewPrivileges": true,
        });
        v["hostname"] = "box".into();
        v["root"]["readonly"] = true.into();
        let p = plan_of(v).unwrap();
        let pr = &p.container.process;
        assert_eq!(pr.args, vec!["sh", "-c", "exit 7"]);
        assert_eq!(pr.env, vec!["PATH=/bin", "A=b"]);
        assert_eq!(pr.cwd, "/tmp");
        assert_eq!((pr.uid, pr.gid), (1000, 100));
        assert_eq!(pr.additional_gids, vec![10, 20]);
        assert!(pr.terminal && pr.no_new_privileges);
        assert_eq!(
            pr.rlimits,
            vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 512,
                hard: 1024
            }]
        );
        assert_eq!(p.container.hostname.as_deref(), Some("box"));
        assert!(p.container.root.readonly);
    }

    #[test]
    fn bad_process_and_root_are_errors_naming_the_file() {
        let mut v = minimal();
        v["process"]["args"] = serde_json::json!([]);
        let e = plan_of(v).unwrap_err().to_string();
        assert!(e.contains("/b/config.json") && e.contains("args"), "{e}");
        let mut v = minimal();
        v["process"]["cwd"] = "tmp".into();
        assert!(plan_of(v).unwrap_err().to_string().contains("absolute"));
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("process");
        assert!(plan_of(v).unwrap_err().to_string().contains("no process"));
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("root");
        assert!(plan_of(v).unwrap_err().to_string().contains("no root"));
    }

    #[test]
    fn resources_size_the_vm() {
        let mut v = minimal();
        v["linux"] = serde_json::json!({"resources": {
            "memory": {"limit": 512u64 * 1024 * 1024 + 1},
            "cpu": {"quota": 150000, "period": 100000},
        }});
        let p = plan_of(v.clone()).unwrap();
        assert_eq!(
            p.sizing,
            VmSizing {
                mem_mib: 513,
                vcpus: 2
            }
        );
        v["linux"]["resources"]["memory"]["limit"] = (64 * 1024 * 1024).into();
        v["linux"]["resources"]["cpu"]["quota"] = 1_000_000.into();
        let p = plan_of(v.clone()).unwrap();
        assert_eq!(
            p.sizing.mem_mib, MIN_MEM_MIB,
            "small limits get the minimum"
        );
        assert_eq!(p.sizing.vcpus, 4, "capped at the host's CPUs");
        v["linux"]["resources"]["memory"]["limit"] = (-1).into();
        v["linux"]["resources"]["cpu"]["quota"] = (-1).into();
        assert_eq!(
            plan_of(v).unwrap().sizing,
            VmSizing {
                mem_mib: 256,
                vcpus: 1
            },
            "unlimited means defaults"
        );
    }

    #[test]
    fn annotations_override_sizing_and_choose_the_hypervisor() {
        let mut v = minimal();
        v["linux"] = serde_json::json!({"resources": {"memory": {"limit": 1u64 << 30}}});
        v["annotations"] = serde_json::json!({
            "io.runm.vm.memory_mib": "300",
            "io.runm.vm.vcpus": "3",
            "io.runm.hypervisor": "qemu",
        });
        let p = plan_with(v.clone(), &all_annotations()).unwrap();
        assert_eq!(
            p.sizing,
            VmSizing {
                mem_mib: 300,
                vcpus: 3
            }
        );
        assert_eq!(p.hypervisor.as_deref(), Some("qemu"));
        assert_eq!(p.annotations.len(), 3);
        v["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("io.runm.hypervisor");
        v["annotations"]["io.runm.vm.memory_mib"] = "lots".into();
        let e = plan_of(v.clone()).unwrap_err().to_string();
        assert!(e.contains("io.runm.vm.memory_mib='lots'"), "{e}");
        v["annotations"]["io.runm.vm.memory_mib"] = "64".into();
        assert!(plan_of(v.clone()).is_err());
        v["annotations"]["io.runm.vm.memory_mib"] = "128".into();
        v["annotations"]["io.runm.vm.vcpus"] = "0".into();
        assert!(plan_of(v)
            .unwrap_err()
            .to_string()
            .contains("io.runm.vm.vcpus"));
    }

    #[test]
    fn a_pods_vm_is_sized_from_its_containers_limits() {
        let mut v = minimal();
        v["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-memory": (200u64 << 20).to_string(),
            "io.kubernetes.cri.sandbox-cpu-quota": "150000",
            "io.kubernetes.cri.sandbox-cpu-period": "100000",
        });
        let p = plan_of(v.clone()).unwrap();
        assert_eq!(
            (p.sizing.mem_mib, p.sizing.vcpus),
            (POD_BASE_MEM_MIB + 200, 2),
            "the base plus the containers' memory; 1.5 CPUs need 2 vCPUs"
        );
        // A pod asking for more than the host gives gets the largest VM.
        v["annotations"]["io.kubernetes.cri.sandbox-memory"] = (1u64 << 50).to_string().into();
        v["annotations"]["io.kubernetes.cri.sandbox-cpu-quota"] = "100000000".into();
        let p = plan_of(v.clone()).unwrap();
        let limits = Config::default().limits(4, 8192);
        assert_eq!(p.sizing.mem_mib, limits.max_memory_mib);
        assert_eq!(u32::from(p.sizing.vcpus), limits.max_vcpus);
        v["annotations"]["io.kubernetes.cri.sandbox-memory"] = "lots".into();
        let e = plan_of(v).unwrap_err().to_string();
        assert!(
            e.contains("sandbox-memory") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn pod_members_name_their_sandbox() {
        for (kind, sandbox) in POD_ANNOTATIONS {
            let mut v = minimal();
            v["annotations"] = serde_json::json!({*kind: "container", *sandbox: "pod-1"});
            v["linux"]["namespaces"] = serde_json::json!([
                {"type": "network", "path": "/proc/7/ns/net"},
                {"type": "ipc", "path": "/proc/7/ns/ipc"},
                {"type": "uts", "path": "/proc/7/ns/uts"},
                {"type": "pid"}, {"type": "mount"}
            ]);
            let p = plan_of(v.clone()).unwrap();
            assert_eq!(p.pod.as_deref(), Some("pod-1"));
            assert!(!p.pod_sandbox);
            // A shared process namespace cannot be had in a VM's guest.
            v["linux"]["namespaces"][3] =
                serde_json::json!({"type": "pid", "path": "/proc/7/ns/pid"});
            let e = plan_of(v.clone()).unwrap_err().to_string();
            assert!(e.contains("PID namespace"), "{e}");
            // Outside a pod, another container's IPC namespace is refused.
            v["annotations"] = serde_json::json!({});
            v["linux"]["namespaces"][3] = serde_json::json!({"type": "pid"});
            let e = plan_of(v.clone()).unwrap_err().to_string();
            assert!(e.contains("joining the existing"), "{e}");
            // The sandbox container itself is an ordinary one.
            v["annotations"] = serde_json::json!({*kind: "sandbox", *sandbox: "pod-1"});
            v["linux"]["namespaces"] = serde_json::json!([{"type": "network"}]);
            let p = plan_of(v).unwrap();
            assert!(p.pod.is_none() && p.pod_sandbox);
        }
    }

    #[test]
    fn guest_mounts_pass_host_mounts_fail() {
        let mut v = minimal();
        v["mounts"] = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "size=65536k"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        ]);
        let p = plan_of(v.clone()).unwrap();
        let types: Vec<_> = p
            .container
            .mounts
            .iter()
            .map(|m| m.fstype.as_str())
            .collect();
        assert_eq!(types, vec!["proc", "tmpfs", "cgroup2"]);
        assert_eq!(p.container.mounts[1].options, vec!["nosuid", "size=65536k"]);
        // Bind mounts become entries of the share, numbered in order; the
        // guest gets their options but not what a VM cannot honour.
        v["mounts"] = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "rshared", "ro"]},
            {"destination": "/etc/hosts", "source": "/etc/hosts", "options": ["bind", "nosuid"]},
            {"destination": "/cfg", "type": "none", "source": "cfg", "options": ["bind"]}
        ]);
        let p = plan_of(v.clone()).unwrap();
        let m = &p.container.mounts;
        assert_eq!(
            (m[1].fstype.as_str(), m[1].source.as_str()),
            ("rbind", "mounts/0")
        );
        assert_eq!(m[1].options, vec!["ro"]);
        assert_eq!(
            (m[2].fstype.as_str(), m[2].source.as_str()),
            ("bind", "mounts/1")
        );
        assert_eq!(m[2].options, vec!["nosuid"]);
        assert_eq!(m[3].source, "mounts/2");
        assert_eq!(p.binds.len(), 3);
        assert!(p.binds[0].recursive && p.binds[0].readonly);
        assert!(!p.binds[1].recursive && !p.binds[1].readonly);
        assert_eq!(p.binds[1].source, Path::new("/etc/hosts"));
        assert!(p.binds[2].source.is_absolute(), "relative to the bundle");
        assert!(
            p.ignored
                .iter()
                .any(|i| i.contains("/data") && i.contains("rshared")),
            "{:?}",
            p.ignored
        );
        assert_eq!(p.container.root.fstype, "virtiofs");
        assert!(!p.root_image);
        v["mounts"] = serde_json::json!([
            {"destination": "relative", "type": "bind", "source": "/srv"}
        ]);
        assert!(plan_of(v.clone())
            .unwrap_err()
            .to_string()
            .contains("not an absolute path"));
        v["mounts"] = serde_json::json!([
            {"destination": "/d", "type": "ext4", "source": "/dev/sdb"}
        ]);
        assert!(plan_of(v).unwrap_err().to_string().contains("type ext4"));
    }

    #[test]
    fn network_namespaces_are_joined_or_made_others_are_refused() {
        let mut v = minimal();
        assert_eq!(plan_of(v.clone()).unwrap().network, NetworkNamespace::Host);
        assert_eq!(
            plan_of(v.clone()).unwrap().host_namespaces,
            ["pid", "ipc", "uts"]
        );
        v["linux"] = serde_json::json!({"namespaces": [{"type": "pid"}, {"type": "network"}]});
        assert_eq!(plan_of(v.clone()).unwrap().network, NetworkNamespace::New);
        // `docker run --ipc host --uts host` lists neither.
        assert_eq!(plan_of(v.clone()).unwrap().host_namespaces, ["ipc", "uts"]);
        v["linux"]["namespaces"][1]["path"] = "/var/run/netns/x".into();
        assert_eq!(
            plan_of(v.clone()).unwrap().network,
            NetworkNamespace::Join("/var/run/netns/x".into())
        );
        v["linux"]["namespaces"][1]["path"] = "netns/x".into();
        let e = plan_of(v.clone()).unwrap_err().to_string();
        assert!(e.contains("'netns/x' is not absolute"), "{e}");
        v["linux"]["namespaces"] = serde_json::json!([
            {"type": "network", "path": "/var/run/netns/x"},
            {"type": "ipc", "path": "/proc/1/ns/ipc"},
        ]);
        let e = plan_of(v).unwrap_err().to_string();
        assert!(
            e.contains("/proc/1/ns/ipc") && e.contains("not supported"),
            "{e}"
        );
    }

    #[test]
    fn host_hooks_are_kept_and_checked() {
        let mut v = minimal();
        v["hooks"] = serde_json::json!({
            "prestart": [{"path": "/bin/true"}],
            "poststop": [{"path": "/bin/true", "timeout": 3}],
        });
        let p = plan_of(v.clone()).unwrap();
        let hooks = p.hooks.unwrap();
        assert_eq!(hooks.prestart().as_ref().unwrap().len(), 1);
        assert!(p.ignored.is_empty(), "{:?}", p.ignored);
        v["hooks"]["createRuntime"] = serde_json::json!([{"path": "/bin/true", "timeout": -1}]);
        let e = plan_of(v.clone()).unwrap_err().to_string();
        assert!(
            e.contains("hooks.createRuntime[0].timeout is -1") && e.contains("/b/config.json"),
            "{e}"
        );
        v["hooks"]["createRuntime"] = serde_json::json!([]);
        v["hooks"]["startContainer"] = serde_json::json!([{"path": "/bin/true"}]);
        assert_eq!(plan_of(v).unwrap().ignored, vec!["hooks.startContainer"]);
    }

    #[test]
    fn fields_not_applied_are_listed() {
        let mut v = minimal();
        v["process"]["apparmorProfile"] = "docker-default".into();
        v["linux"] = serde_json::json!({
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": [],
            "namespaces": [{"type": "pid"}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 1},
                          "cpu": {"shares": 1024}},
            "cgroupsPath": "/default/c1",
        });
        v["hooks"] = serde_json::json!({"createContainer": [{"path": "/bin/true"}]});
        let p = plan_of(v).unwrap();
        assert_eq!(
            p.ignored,
            vec![
                "process.apparmorProfile",
                "hooks.createContainer",
                "linux.resources.devices"
            ]
        );
        // Applied on the host where a cgroup can be made (create decides).
        assert_eq!(p.cgroups_path.as_deref(), Some("/default/c1"));
        assert_eq!(
            p.host,
            HostResources {
                memory_limit: Some(1),
                cpu_shares: Some(1024),
                ..HostResources::default()
            }
        );
        // ... and in the guest.
        assert_eq!(p.container.linux.resources.memory_max, Some(1));
        assert_eq!(p.container.linux.resources.cpu_weight, Some(39));
    }

    #[test]
    fn linux_settings_map_to_the_agent_spec() {
        let mut v = minimal();
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"],
            "effective": ["CAP_KILL"],
            "inheritable": [],
            "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "ambient": ["CAP_KILL"],
        });
        v["process"]["oomScoreAdj"] = 500.into();
        v["process"]["user"]["umask"] = 0o077.into();
        v["linux"] = serde_json::json!({
            "namespaces": [{"type": "pid"}, {"type": "user"}, {"type": "cgroup"}, {"type": "network"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 10}],
            "maskedPaths": ["/proc/kcore", "/proc/acpi"],
            "readonlyPaths": ["/proc/sys"],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                         "fileMode": 0o640, "uid": 1, "gid": 2},
                        {"path": "/dev/pipe", "type": "p"}],
            "rootfsPropagation": "rslave",
            "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"},
            "resources": {"pids": {"limit": 20}, "cpu": {"quota": 50000, "period": 100000}},
        });
        let p = plan_of(v.clone()).unwrap();
        assert!(p.ignored.is_empty(), "{:?}", p.ignored);
        let c = p.container.process.capabilities.unwrap();
        assert_eq!(c.bounding, 1 | 1 << 5 | 1 << 21);
        assert_eq!(
            (c.effective, c.inheritable, c.permitted, c.ambient),
            (1 << 5, 0, 1 << 5 | 1, 1 << 5)
        );
        assert_eq!(p.container.process.oom_score_adj, Some(500));
        assert_eq!(p.container.process.umask, Some(0o077));
        let l = &p.container.linux;
        assert!(l.user_namespace && l.cgroup_namespace);
        assert_eq!(
            l.uid_mappings,
            vec![IdMapping {
                container_id: 0,
                host_id: 100_000,
                size: 65_536
            }]
        );
        assert_eq!(l.gid_mappings[0].host_id, 200_000);
        assert_eq!(l.masked_paths, vec!["/proc/kcore", "/proc/acpi"]);
        assert_eq!(l.readonly_paths, vec!["/proc/sys"]);
        assert_eq!(
            l.devices[0],
            DeviceSpec {
                path: "/dev/fuse".into(),
                kind: 'c',
                major: 10,
                minor: 229,
                mode: 0o640,
                uid: 1,
                gid: 2
            }
        );
        assert_eq!((l.devices[1].kind, l.devices[1].mode), ('p', 0o666));
        assert_eq!(l.rootfs_propagation.as_deref(), Some("rslave"));
        assert_eq!(
            l.sysctl,
            vec![
                ("kernel.shmmax".to_string(), "65536".to_string()),
                ("net.ipv4.ip_forward".into(), "1".into())
            ]
        );
        assert_eq!(l.resources.pids_max, Some(20));
        assert_eq!(l.resources.cpu_max, Some((50_000, 100_000)));

        // No capabilities object: none at all, as runc.
        let p = plan_of(minimal()).unwrap();
        assert_eq!(
            p.container.process.capabilities,
            Some(Capabilities::default())
        );
    }

    #[test]
    fn bad_linux_settings_are_errors_naming_the_field() {
        let bad = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
            let mut v = minimal();
            v["linux"] = serde_json::json!({});
            edit(&mut v);
            let e = plan_of(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        };
        bad(
            &|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "user"}]),
            "uidMappings",
        );
        bad(
            &|v| v["linux"]["rootfsPropagation"] = "sideways".into(),
            "rootfsPropagation",
        );
        bad(
            &|v| v["linux"]["sysctl"] = serde_json::json!({"kernel..x": "1"}),
            "linux.sysctl",
        );
        bad(
            &|v| v["linux"]["sysctl"] = serde_json::json!({"../../etc/passwd": "1"}),
            "linux.sysctl",
        );
        bad(
            &|v| v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore"]),
            "maskedPaths",
        );
        bad(
            &|v| v["process"]["oomScoreAdj"] = 5000.into(),
            "oomScoreAdj",
        );
        bad(
            &|v| {
                v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getpid", "fly"], "action": "SCMP_ACT_ERRNO"}]})
            },
            "unknown system call \"fly\"",
        );
    }

    #[test]
    fn unknown_capabilities_and_device_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |v: serde_json::Value| {
            fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
            read_config(dir.path()).map(drop).unwrap_err().to_string()
        };
        let mut v = minimal();
        v["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_KILL", "CAP_FLY"]});
        let e = write(v);
        assert!(
            e.ends_with("process.capabilities.bounding: unknown capability \"CAP_FLY\""),
            "{e}"
        );
        let mut v = minimal();
        v["linux"] = serde_json::json!({"devices": [{"path": "/dev/x", "type": "x", "major": 1, "minor": 1}]});
        let e = write(v);
        assert!(
            e.contains("linux.devices[0] (/dev/x): type \"x\" is not c, b, u or p"),
            "{e}"
        );
        assert_eq!(capability_bit("net_admin"), Some(1 << 12));
        assert_eq!(capability_bit("CAP_CHECKPOINT_RESTORE"), Some(1 << 40));
    }

    #[test]
    fn files_and_rootfs_errors_name_the_file() {
        let c = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path(), "c", &c).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("cannot read"),
            "{e}"
        );
        fs::write(dir.path().join("config.json"), "{ nope").unwrap();
        let e = load(dir.path(), "c", &c).unwrap_err().to_string();
        assert!(
            e.starts_with("malformed ") && e.contains("config.json"),
            "{e}"
        );
        fs::write(dir.path().join("config.json"), minimal().to_string()).unwrap();
        let e = load(dir.path(), "c", &c).unwrap_err().to_string();
        assert!(e.contains("rootfs") && e.contains("does not exist"), "{e}");
        fs::write(dir.path().join("rootfs"), "").unwrap();
        let e = load(dir.path(), "c", &c).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        fs::remove_file(dir.path().join("rootfs")).unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        let (_, root) = load(dir.path(), "c", &c).unwrap();
        assert_eq!(
            fs::canonicalize(root.path()).unwrap(),
            fs::canonicalize(dir.path().join("rootfs")).unwrap()
        );
        let e = load(&dir.path().join("nope"), "c", &c)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bundle directory"), "{e}");
    }

    /// A bundle with `root.path` = `root` in `dir`.
    fn bundle_with_root(dir: &Path, root: &str) {
        let mut v = minimal();
        v["root"]["path"] = root.into();
        fs::write(dir.join("config.json"), v.to_string()).unwrap();
    }

    #[test]
    fn root_path_symlinks_out_of_place_are_refused() {
        let c = Config::default();
        let t = tempfile::tempdir().unwrap();
        let bundle = t.path().join("bundle");
        let outside = t.path().join("outside");
        fs::create_dir_all(bundle.join("real/sub")).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, bundle.join(name)).unwrap();
        };
        link(&outside, "abs-out");
        link(Path::new("../outside"), "rel-out");
        link(Path::new("real"), "inside");
        link(Path::new("/"), "slash");
        std::os::unix::fs::symlink(&outside, bundle.join("real/escape")).unwrap();

        // Relative: symlinks that stay beneath the bundle are followed.
        for (ok, expect) in [
            ("real", "real"),
            ("inside", "real"),
            ("inside/sub", "real/sub"),
            ("./real", "real"),
        ] {
            bundle_with_root(&bundle, ok);
            let (_, root) = load(&bundle, "c", &c).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(
                fs::canonicalize(root.path()).unwrap(),
                fs::canonicalize(bundle.join(expect)).unwrap(),
                "{ok}"
            );
        }
        for bad in [
            "abs-out",
            "rel-out",
            "slash",
            "real/escape",
            "abs-out/sub",
            "../outside",
        ] {
            bundle_with_root(&bundle, bad);
            let e = load(&bundle, "c", &c).unwrap_err().to_string();
            assert!(
                e.contains(&format!("root file system {}", bundle.join(bad).display()))
                    && e.contains("leads out of the bundle directory"),
                "{bad}: {e}"
            );
        }

        // Absolute: no symlink anywhere in it.
        let real = fs::canonicalize(bundle.join("real")).unwrap();
        bundle_with_root(&bundle, real.to_str().unwrap());
        load(&bundle, "c", &c).unwrap();
        let canon_bundle = fs::canonicalize(&bundle).unwrap();
        for bad in [
            canon_bundle.join("abs-out"),
            canon_bundle.join("inside"),
            canon_bundle.join("abs-out/sub"),
        ] {
            bundle_with_root(&bundle, bad.to_str().unwrap());
            let e = load(&bundle, "c", &c).unwrap_err().to_string();
            assert!(e.contains("has a symlink in it"), "{}: {e}", bad.display());
        }
    }

    #[test]
    fn untrusted_annotations_are_refused_unless_enabled() {
        let mut v = minimal();
        v["annotations"] = serde_json::json!({"io.runm.hypervisor": "runm-vmm"});
        let e = plan_of(v.clone()).unwrap_err().to_string();
        assert!(
            e.contains("annotation io.runm.hypervisor is not enabled")
                && e.contains("/etc/runm/config.json")
                && e.contains("/b/config.json"),
            "{e}"
        );
        v["annotations"] = serde_json::json!({"io.runm.vm.host_overhead_mib": "100000"});
        let e = plan_of(v.clone()).unwrap_err().to_string();
        assert!(
            e.contains("io.runm.vm.host_overhead_mib is not enabled"),
            "{e}"
        );
        let e = plan_with(v.clone(), &all_annotations())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 4096"), "{e}");
        v["annotations"] = serde_json::json!({"io.runm.vm.host_overhead_mib": "100"});
        assert_eq!(
            plan_with(v.clone(), &all_annotations())
                .unwrap()
                .host_overhead_mib,
            Some(100)
        );
        // Other annotations are the workload's business.
        v["annotations"] = serde_json::json!({"org.example/x": "y"});
        plan_of(v).unwrap();
    }

    #[test]
    fn oversized_vms_are_refused_or_capped() {
        let mut v = minimal();
        for (name, value, why) in [
            (
                "io.runm.vm.vcpus",
                "1000",
                "from 1 to 4 (this host's limit)",
            ),
            ("io.runm.vm.vcpus", "5", "from 1 to 4"),
            ("io.runm.vm.vcpus", "18446744073709551617", "from 1 to 4"),
            (
                "io.runm.vm.memory_mib",
                "1048576",
                "from 128 to 8192 (this host's limit)",
            ),
            (
                "io.runm.vm.memory_mib",
                "18446744073709551615",
                "from 128 to 8192",
            ),
        ] {
            v["annotations"] = serde_json::json!({ name: value });
            let e = plan_of(v.clone()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{name}='{value}'")) && e.contains(why),
                "{e}"
            );
        }
        v["annotations"] =
            serde_json::json!({"io.runm.vm.vcpus": "4", "io.runm.vm.memory_mib": "8192"});
        assert_eq!(
            plan_of(v.clone()).unwrap().sizing,
            VmSizing {
                mem_mib: 8192,
                vcpus: 4
            }
        );
        // A configured maximum below the host's.
        let small = Config {
            max_memory_mib: Some(512),
            max_vcpus: Some(2),
            ..Config::default()
        };
        assert!(plan_with(v.clone(), &small).is_err());
        // Resource limits above the maximum: the largest VM allowed keeps them.
        v.as_object_mut().unwrap().remove("annotations");
        v["linux"] = serde_json::json!({"resources": {
            "memory": {"limit": i64::MAX},
            "cpu": {"quota": i64::MAX, "period": 1},
        }});
        assert_eq!(
            plan_with(v, &small).unwrap().sizing,
            VmSizing {
                mem_mib: 512,
                vcpus: 2
            }
        );
        let tiny = Config {
            max_memory_mib: Some(64),
            ..Config::default()
        };
        let e = plan_with(minimal(), &tiny).unwrap_err().to_string();
        assert!(e.contains("at most 64 MiB"), "{e}");
    }
}
