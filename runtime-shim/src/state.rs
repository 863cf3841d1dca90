//! The container's persistent state.
//!
//! Owns everything under `<root>/<id>/` that names a container: the directory
//! layout ([`ContainerDir`]), container id validation, `state.json`
//! (written atomically: a temporary file renamed over the old one, so a reader
//! never sees half a file), the per-container `flock` that serialises runm
//! commands on one id ([`ContainerLock`]), and the liveness check that turns a
//! container whose sandbox process is gone into `stopped`. The status it
//! writes, and what each status allows, come from [`crate::lifecycle`].
//!
//! Writers: `create` writes the first state (`creating`); from then on only
//! the container's sandbox process writes it while that process lives (it
//! sees the agent's `Started`/`Exited` first hand). Commands hold the lock
//! among themselves; the sandbox needs no lock because it is the only writer.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::lifecycle::Status;

/// Version of the OCI runtime specification runm implements.
pub const OCI_VERSION: &str = "1.2.0";
/// Default runtime root directory.
pub const DEFAULT_ROOT: &str = "/run/runm";

/// Errors about container state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The id is not acceptable as a container id.
    #[error(
        "invalid container id '{0}': use letters, digits and _ + - . only (not '..', not '/', \
         not a leading '-')"
    )]
    InvalidId(String),
    /// No container with that id.
    #[error("container '{0}' does not exist")]
    NotFound(String),
    /// A container with that id already exists.
    #[error("container '{0}' already exists")]
    Exists(String),
    /// An operation the current status forbids.
    #[error("container '{id}' is {status}: {what}")]
    WrongStatus {
        /// The container.
        id: String,
        /// Its status.
        status: Status,
        /// What cannot be done, for people.
        what: String,
    },
    /// The state file is unreadable.
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Checks a container id: `^[\w+\-.]+$`, not `.`, no `..`, not starting
/// with `-`, at most 1024 bytes. Ids become directory names under the root,
/// so anything that could climb out of it is refused; and they end up as
/// arguments of other programs, where a leading `-` reads as an option.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if id.is_empty()
        || id.len() > 1024
        || !ok_chars
        || id == "."
        || id.contains("..")
        || id.starts_with('-')
    {
        return Err(StateError::InvalidId(id.to_string()));
    }
    Ok(())
}

/// A host process identified by pid and start time, so that a recycled pid is
/// never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Host pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessRef {
    /// The process with this pid as it is now, if it exists.
    pub fn of(pid: i32) -> Option<Self> {
        let (_, start_time) = proc_stat(pid)?;
        Some(ProcessRef { pid, start_time })
    }

    /// This process.
    pub fn current() -> Self {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Self::of(pid).unwrap_or(ProcessRef { pid, start_time: 0 })
    }

    /// True while the process runs (a zombie counts as gone).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && !matches!(state, 'Z' | 'X' | 'x'),
            None => false,
        }
    }

    /// Sends a signal if the process is still this one.
    pub fn signal(&self, sig: i32) -> bool {
        self.alive() && crate::sys::kill(self.pid, sig).is_ok()
    }
}

/// State letter and start time of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=22 follow the state (field 3); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// What runm keeps beside the OCI state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RuntimeInfo {
    /// Creation time (RFC 3339).
    pub created: String,
    /// The bundle's root file system directory.
    pub rootfs: PathBuf,
    /// Uid of the user who created the container.
    pub owner: u32,
    /// The sandbox process (the pid reported as the container's).
    #[serde(default)]
    pub sandbox: Option<ProcessRef>,
    /// The VM process (runm-vmm or QEMU), child of the sandbox.
    #[serde(default)]
    pub vm: Option<ProcessRef>,
    /// Backend and accelerator, e.g. `qemu/tcg`.
    #[serde(default)]
    pub backend: String,
    /// The workload's exit status once stopped.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// The host cgroups of the sandbox and VM (from `linux.cgroupsPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<crate::cgroup::Cgroups>,
    /// The network namespace the sandbox lives in: the engine's, or the one
    /// runm made for the container ([`ContainerDir::netns_file`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// What the sandbox added to that namespace, for teardown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plumbing: Option<crate::network::PlumbRecord>,
    /// The bundle's hooks, for `poststart` and `poststop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// The OCI state as `runm state` prints it, fields in the specification's
/// order. Our own type rather than oci-spec's `State`: that one's status
/// cannot say `paused`, which runc prints and containerd expects.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    /// OCI runtime spec version.
    pub oci_version: &'a str,
    /// Container id.
    pub id: &'a str,
    /// Lifecycle status.
    pub status: Status,
    /// The container's host pid.
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: &'a Path,
    /// The bundle's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

/// `state.json`: the OCI state plus runm's own fields under `runm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// OCI runtime spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Lifecycle status.
    pub status: Status,
    /// The container's host pid (the sandbox process); 0 when there is none.
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// The bundle's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// runm's bookkeeping.
    pub runm: RuntimeInfo,
}

impl State {
    /// A new container in `creating`.
    pub fn new(
        id: &str,
        bundle: &Path,
        rootfs: &Path,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        State {
            oci_version: OCI_VERSION.to_string(),
            id: id.to_string(),
            status: Status::Creating,
            pid: 0,
            bundle: bundle.to_path_buf(),
            annotations,
            runm: RuntimeInfo {
                created: crate::logging::rfc3339_now(),
                rootfs: rootfs.to_path_buf(),
                owner: crate::sys::getuid(),
                ..RuntimeInfo::default()
            },
        }
    }

    /// The OCI state document (`runm state` prints this).
    pub fn oci_state(&self) -> OciState<'_> {
        OciState {
            oci_version: &self.oci_version,
            id: &self.id,
            status: self.status,
            pid: self.pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        }
    }

    /// [`State::oci_state`] as JSON text (pretty, fields in order).
    pub fn oci_json_text(&self) -> String {
        serde_json::to_string_pretty(&self.oci_state()).unwrap_or_default()
    }

    /// Turns a created/running/creating container whose sandbox process is
    /// gone into `stopped` (in memory only). A container still `creating` with
    /// no sandbox yet is left alone: its `create` may still be running.
    pub fn refresh(&mut self) {
        if self.status == Status::Stopped {
            self.pid = 0;
            return;
        }
        if let Some(sb) = self.runm.sandbox {
            if !sb.alive() {
                self.status = Status::Stopped;
                self.pid = 0;
            }
        }
    }

    /// The error for `what` being impossible in the current status.
    pub fn wrong_status(&self, what: impl Into<String>) -> StateError {
        StateError::WrongStatus {
            id: self.id.clone(),
            status: self.status,
            what: what.into(),
        }
    }
}

/// The directory of one container and the names of the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    /// Container id.
    pub id: String,
    /// `<root>/<id>`.
    pub path: PathBuf,
}

impl ContainerDir {
    /// The directory for `id` under `root` (the id is validated).
    pub fn new(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        Ok(ContainerDir {
            id: id.to_string(),
            path: root.join(id),
        })
    }
    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.path.join("lock")
    }
    /// The sandbox's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.path.join("control.sock")
    }
    /// The root file system image.
    pub fn rootfs_image(&self) -> PathBuf {
        self.path.join("rootfs.img")
    }
    /// The directory virtiofsd serves to the guest (see [`crate::share`]).
    pub fn share_dir(&self) -> PathBuf {
        self.path.join("share")
    }
    /// virtiofsd's vhost-user socket.
    pub fn virtiofs_socket(&self) -> PathBuf {
        self.path.join("virtiofs.sock")
    }
    /// virtiofsd's output.
    pub fn virtiofsd_log(&self) -> PathBuf {
        self.path.join("virtiofsd.log")
    }
    /// The guest's serial console.
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    /// The VM process's own stdout/stderr.
    pub fn vmm_log(&self) -> PathBuf {
        self.path.join("vmm.log")
    }
    /// The sandbox's log when runm was given no `--log`.
    pub fn sandbox_log(&self) -> PathBuf {
        self.path.join("sandbox.log")
    }
    /// What `create` hands to the sandbox.
    pub fn plan_file(&self) -> PathBuf {
        self.path.join("plan.json")
    }
    /// runm-vmm's config.
    pub fn vm_config(&self) -> PathBuf {
        self.path.join("vm.json")
    }
    /// The empty directory runm-vmm mounts its jail's root on (the mount
    /// exists only in the VMM's own mount namespace).
    pub fn vmm_jail(&self) -> PathBuf {
        self.path.join("vmm-jail")
    }
    /// QEMU's virtio-serial agent socket.
    pub fn agent_socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }
    /// runm-vmm's vsock socket.
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }
    /// QEMU's QMP monitor socket (pause and resume).
    pub fn qmp_socket(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }
    /// `path`, a file of this directory, as the processes that run in it
    /// name it: the VM process and virtiofsd have the directory as their
    /// working directory and get their sockets by relative names, since a
    /// Unix socket address holds at most 107 bytes and engines' roots can
    /// leave no room (Docker's `<exec-root>/runtime-runc/moby/<64-hex id>/`).
    pub fn local(&self, path: PathBuf) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(name) => name.to_path_buf(),
            Err(_) => path,
        }
    }
    /// The network namespace runm makes for a container that asks for a
    /// new one (a bind mount of its nsfs file).
    pub fn netns_file(&self) -> PathBuf {
        self.path.join("netns")
    }

    /// Creates the directory; fails with [`StateError::Exists`] if it is there.
    pub fn create(&self) -> Result<(), StateError> {
        if let Some(root) = self.path.parent() {
            create_root(root)?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(self.id.clone()))
            }
            Err(e) => Err(io_err("cannot create container directory", &self.path)(e)),
        }
    }

    /// True if the directory exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Reads `state.json`.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_file();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(self.id.clone()))
            }
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let mut text = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: self.state_file(),
            source,
        })?;
        text.push(b'\n');
        write_atomic(&self.state_file(), &text)
    }

    /// Removes the directory and everything in it, the network namespace
    /// bound in it included.
    pub fn remove(&self) -> Result<(), StateError> {
        if let Err(e) = crate::network::NetNs::unbind(&self.netns_file()) {
            log::warn!("container {}: {e}", self.id);
        }
        // Never recursively: what the sandbox bound there is the host's.
        crate::share::remove_layout(&self.share_dir()).map_err(|e| StateError::Io {
            what: "cannot remove the share",
            path: self.share_dir(),
            source: io::Error::other(e.to_string()),
        })?;
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &self.path)(e)),
        }
    }
}

/// Creates the runtime root (mode 0700: the control sockets in it accept
/// commands from whoever can reach them).
pub fn create_root(root: &Path) -> Result<(), StateError> {
    if root.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io_err("cannot create runtime root", root))
}

/// Writes `data` to `path` through a temporary file in the same directory
/// and a rename, so readers see the old or the new content, never a mix.
/// The temporary file has an unpredictable name and is created with
/// `O_EXCL|O_NOFOLLOW`: in a directory others can write to (a pid file's),
/// nobody can have placed a symlink or file there for runm to write through;
/// the rename replaces `path` itself, never what a symlink there points to.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tries = 0;
    let (tmp, mut f) = loop {
        let mut nonce = [0u8; 8];
        rustix::rand::getrandom(&mut nonce, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| io_err("cannot write", path)(e.into()))?;
        let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(nonce)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(io_err("cannot write", path)(e)),
        }
    };
    let result = (|| {
        f.write_all(data)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("cannot write", path))
}

/// An exclusive `flock` on a container's lock file, held until dropped.
#[derive(Debug)]
pub struct ContainerLock {
    _file: File,
}

impl ContainerLock {
    /// Waits for the container's lock. Fails with [`StateError::NotFound`]
    /// if the container does not exist (or was deleted while we waited).
    pub fn acquire(dir: &ContainerDir) -> Result<Self, StateError> {
        Self::acquire_within(dir, None)?.ok_or_else(|| StateError::NotFound(dir.id.clone()))
    }

    /// [`ContainerLock::acquire`], waiting at most `timeout` (`None`: as
    /// long as it takes); `Ok(None)` if another command kept it that long.
    pub fn acquire_within(
        dir: &ContainerDir,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<Self>, StateError> {
        let path = dir.lock_file();
        loop {
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StateError::NotFound(dir.id.clone()))
                }
                Err(e) => return Err(io_err("cannot open lock", &path)(e)),
            };
            match timeout {
                None => crate::sys::flock_exclusive(&file).map_err(io_err("cannot lock", &path))?,
                Some(t) => {
                    if !crate::sys::flock_exclusive_within(&file, t)
                        .map_err(io_err("cannot lock", &path))?
                    {
                        return Ok(None);
                    }
                }
            }
            // `delete` removes the directory while holding the lock: if that
            // happened while we waited, our file is unlinked (or replaced by a
            // new container's), and the lock means nothing.
            let held = file.metadata().map_err(io_err("cannot stat", &path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(ContainerLock { _file: file }))
                }
                Ok(_) => continue,
                Err(_) => return Err(StateError::NotFound(dir.id.clone())),
            }
        }
    }
}

/// Every container directory under `root`, by id, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot read runtime root", root)(e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in [
            "a",
            "abc-1",
            "x.y",
            "A_b+c",
            "1",
            "..x".trim_start_matches('.'),
        ] {
            validate_id(ok).unwrap();
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a..b", "x..", "a b", "a\0", "é", "a:b", "-", "-rf",
            "--help",
        ] {
            assert!(
                matches!(validate_id(bad), Err(StateError::InvalidId(_))),
                "{bad:?} accepted"
            );
        }
        assert!(validate_id(&"a".repeat(1025)).is_err());
        let e = validate_id("../x").unwrap_err().to_string();
        assert!(e.contains("invalid container id '../x'"), "{e}");
    }

    #[test]
    fn sockets_are_named_locally_for_the_processes_in_the_directory() {
        // Docker's root and 64-hex ids: the full path cannot be a socket address.
        let root = Path::new("/var/run/docker/runtime-runc/moby");
        let dir = ContainerDir::new(root, &"ab".repeat(32)).unwrap();
        assert!(dir.virtiofs_socket().as_os_str().len() > 107);
        assert_eq!(dir.local(dir.virtiofs_socket()), Path::new("virtiofs.sock"));
        assert_eq!(dir.local(dir.agent_socket()), Path::new("agent.sock"));
        // A path elsewhere is left as it is.
        assert_eq!(dir.local("/x/y.sock".into()), Path::new("/x/y.sock"));
    }

    #[test]
    fn state_round_trips_atomically_and_prints_oci_fields() {
        let root = tempfile::tempdir().unwrap();
        let dir = ContainerDir::new(root.path(), "c1").unwrap();
        dir.create().unwrap();
        assert!(matches!(dir.create(), Err(StateError::Exists(_))));
        assert!(matches!(dir.load(), Err(StateError::NotFound(_))));
        let mut ann = BTreeMap::new();
        ann.insert("k".to_string(), "v".to_string());
        let mut st = State::new("c1", Path::new("/b"), Path::new("/b/rootfs"), ann);
        dir.save(&st).unwrap();
        assert_eq!(dir.load().unwrap(), st);
        st.status = Status::Created;
        st.pid = 42;
        dir.save(&st).unwrap();
        assert_eq!(dir.load().unwrap().status, Status::Created);
        let names: Vec<_> = fs::read_dir(&dir.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.json"], "no temporary file left");
        let oci: serde_json::Value = serde_json::from_str(&st.oci_json_text()).unwrap();
        assert!(st
            .oci_json_text()
            .trim_start()
            .starts_with("{\n  \"ociVersion\""));
        assert_eq!(oci["ociVersion"], OCI_VERSION);
        assert_eq!(oci["status"], "created");
        assert_eq!(oci["pid"], 42);
        assert_eq!(oci["bundle"], "/b");
        assert_eq!(oci["annotations"]["k"], "v");
        assert!(oci.get("runm").is_none());
        // oci-spec reads it back (for every status it knows).
        let back: oci_spec::runtime::State = serde_json::from_str(&st.oci_json_text()).unwrap();
        assert_eq!(*back.pid(), Some(42));
        st.status = Status::Paused;
        assert!(st.oci_json_text().contains("\"status\": \"paused\""));
        fs::write(dir.state_file(), "{").unwrap();
        assert!(matches!(dir.load(), Err(StateError::Corrupt { .. })));
        dir.remove().unwrap();
        assert!(!dir.exists());
        dir.remove().unwrap();
    }

    #[test]
    fn atomic_writes_replace_symlinks_and_never_write_through_them() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        // A pid file path somebody pointed elsewhere: replaced, not followed.
        let pid_file = t.path().join("init.pid");
        std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
        write_atomic(&pid_file, b"42").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&pid_file)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&pid_file).unwrap(), "42");
        // Predictable temporary names (the old `.<name>.tmp.<pid>`) planted
        // as symlinks are not used either.
        let planted = t
            .path()
            .join(format!(".init.pid.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&pid_file, b"43").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let mut names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                planted.file_name().unwrap().to_str().unwrap(),
                "init.pid",
                "victim"
            ],
            "no temporary file left"
        );
        // Into a directory that is not there: an error naming the file.
        let e = write_atomic(&t.path().join("nope/x.pid"), b"1").unwrap_err();
        assert!(e.to_string().contains("nope/x.pid"), "{e}");
    }

    #[test]
    fn dead_sandbox_means_stopped() {
        let mut st = State::new("c", Path::new("/b"), Path::new("/r"), BTreeMap::new());
        st.status = Status::Running;
        st.pid = 1;
        st.runm.sandbox = Some(ProcessRef::current());
        st.refresh();
        assert_eq!(st.status, Status::Running, "this process is alive");
        let mut gone = ProcessRef::current();
        gone.start_time += 1;
        st.runm.sandbox = Some(gone);
        st.refresh();
        assert_eq!(st.status, Status::Stopped, "a recycled pid is not ours");
        assert_eq!(st.pid, 0);
    }

    #[test]
    fn lock_is_exclusive_and_notices_deletion() {
        let root = tempfile::tempdir().unwrap();
        let dir = ContainerDir::new(root.path(), "c").unwrap();
        assert!(matches!(
            ContainerLock::acquire(&dir),
            Err(StateError::NotFound(_))
        ));
        dir.create().unwrap();
        let held = ContainerLock::acquire(&dir).unwrap();
        // A bounded wait gives up on a lock that stays held.
        let t0 = std::time::Instant::now();
        let short = std::time::Duration::from_millis(100);
        assert!(ContainerLock::acquire_within(&dir, Some(short))
            .unwrap()
            .is_none());
        assert!(t0.elapsed() >= short);
        let d2 = dir.clone();
        let waiter = std::thread::spawn(move || ContainerLock::acquire(&d2).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "second lock must wait");
        dir.remove().unwrap();
        drop(held);
        assert!(matches!(
            waiter.join().unwrap(),
            Err(StateError::NotFound(_))
        ));
    }

    #[test]
    fn list_ids_sorted_and_filtered() {
        let root = tempfile::tempdir().unwrap();
        assert!(list_ids(&root.path().join("none")).unwrap().is_empty());
        for id in ["b", "a"] {
            ContainerDir::new(root.path(), id)
                .unwrap()
                .create()
                .unwrap();
        }
        fs::write(root.path().join("file"), "").unwrap();
        assert_eq!(list_ids(root.path()).unwrap(), vec!["a", "b"]);
    }
}
