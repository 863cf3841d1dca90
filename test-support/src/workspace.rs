//! Where the workspace's artifacts are: its root, cargo's target directory,
//! the binaries built there, and the guest images the project's build
//! scripts make (each script prints the path of what it made as its last
//! stdout line, and caches it).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};

/// Why an artifact cannot be found or made.
#[derive(thiserror::Error)]
pub enum WorkspaceError {
    /// An override variable names no file.
    #[error("{var}={} is not a file", path.display())]
    NotAFile {
        /// The variable.
        var: &'static str,
        /// What it names.
        path: PathBuf,
    },
    /// The binary was not built.
    #[error(
        "no {name} under {}/{{{profiles}}}: build it first with \
         `cargo build{release} -p {package} --bin {name}` (or set {var})",
        target.display()
    )]
    NotBuilt {
        /// The binary.
        name: &'static str,
        /// Its package.
        package: &'static str,
        /// The variable that overrides it.
        var: &'static str,
        /// Cargo's target directory.
        target: PathBuf,
        /// The profiles looked in, comma-separated.
        profiles: String,
        /// ` --release` when only release builds were looked for.
        release: &'static str,
    },
    /// A build script could not be started.
    #[error("cannot run {}: {source}", script.display())]
    Spawn {
        /// The script.
        script: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A build script failed (its stderr went to ours).
    #[error("{} failed ({status})", script.display())]
    Failed {
        /// The script.
        script: PathBuf,
        /// How it ended.
        status: ExitStatus,
    },
    /// A build script printed no path, or one that is not there.
    #[error("{} named {path:?} as its artifact, which is not a file", script.display())]
    NoArtifact {
        /// The script.
        script: PathBuf,
        /// Its last stdout line.
        path: String,
    },
}

/// Shown as its message, so that `expect` in a test prints what is wrong.
impl std::fmt::Debug for WorkspaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What this module's functions return.
pub type Result<T> = std::result::Result<T, WorkspaceError>;

/// The workspace's top directory.
pub fn repo_root() -> PathBuf {
    // This crate is one of the workspace's members, one level down.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root
/// when relative), else `target/` in the root.
pub fn target_dir() -> PathBuf {
    let root = repo_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
}

/// A cargo build profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`.
    Debug,
    /// `target/release`.
    Release,
}

impl Profile {
    /// The profile this code was built with, then the other: a test finds
    /// the binaries the same `cargo test` built first.
    pub fn this_first() -> [Profile; 2] {
        if cfg!(debug_assertions) {
            [Profile::Debug, Profile::Release]
        } else {
            [Profile::Release, Profile::Debug]
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// A binary of the workspace, and the variable that points to another one.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name.
    pub name: &'static str,
    /// The package that builds it.
    pub package: &'static str,
    /// The environment variable that names a binary to use instead.
    pub var: &'static str,
}

/// runm-vmm, the VMM.
pub const RUNM_VMM: Binary = Binary {
    name: "runm-vmm",
    package: "vmm",
    var: "RUNM_VMM",
};

/// runm, the OCI runtime.
pub const RUNM: Binary = Binary {
    name: "runm",
    package: "runtime-shim",
    var: "RUNM_BIN",
};

impl Binary {
    /// `$VAR` if set, else the binary built in the first of `profiles` that
    /// has it; the error names the command that builds it.
    pub fn find(&self, profiles: &[Profile]) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.var) {
            let path = PathBuf::from(p);
            if !path.is_file() {
                return Err(WorkspaceError::NotAFile {
                    var: self.var,
                    path,
                });
            }
            return Ok(path);
        }
        let target = target_dir();
        if let Some(p) = profiles
            .iter()
            .map(|pr| target.join(pr.dir()).join(self.name))
            .find(|p| p.is_file())
        {
            return Ok(p);
        }
        Err(WorkspaceError::NotBuilt {
            name: self.name,
            package: self.package,
            var: self.var,
            target,
            profiles: profiles
                .iter()
                .map(|p| p.dir())
                .collect::<Vec<_>>()
                .join(","),
            release: if profiles == [Profile::Release] {
                " --release"
            } else {
                ""
            },
        })
    }
}

/// Runs the build script `script` (a path under the root) and returns the
/// path it prints as its last non-empty stdout line. Its stderr is ours:
/// a first kernel build shows its progress.
pub fn build_script_output(script: &str) -> Result<PathBuf> {
    let script = repo_root().join(script);
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| WorkspaceError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(WorkspaceError::Failed {
            script,
            status: out.status,
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(PathBuf::from(last))
}

/// `$var` if set (it must name a file), else what `make` returns (checked
/// to be a file), made once per process: the scripts take seconds even
/// when cached, and tests ask often. Concurrent callers wait for the first.
fn cached(
    cell: &Mutex<Option<PathBuf>>,
    var: &'static str,
    script: &str,
    make: impl FnOnce(PathBuf) -> PathBuf,
) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(WorkspaceError::NotAFile { var, path })
        };
    }
    let mut slot = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = &*slot {
        return Ok(p.clone());
    }
    let path = make(build_script_output(script)?);
    if !path.is_file() {
        return Err(WorkspaceError::NoArtifact {
            script: repo_root().join(script),
            path: path.display().to_string(),
        });
    }
    *slot = Some(path.clone());
    Ok(path)
}

/// The guest kernel's `vmlinux`: `$RUNM_KERNEL`, else the one
/// `guest-kernel-config/build.sh` builds (or has cached).
pub fn guest_kernel() -> Result<PathBuf> {
    static KERNEL: Mutex<Option<PathBuf>> = Mutex::new(None);
    cached(
        &KERNEL,
        "RUNM_KERNEL",
        "guest-kernel-config/build.sh",
        |dir| dir.join("vmlinux"),
    )
}

/// The guest agent's initramfs: `$RUNM_INITRD`, else the one
/// `guest-agent/build-initramfs.sh` builds (or has cached).
pub fn agent_initramfs() -> Result<PathBuf> {
    static INITRD: Mutex<Option<PathBuf>> = Mutex::new(None);
    cached(
        &INITRD,
        "RUNM_INITRD",
        "guest-agent/build-initramfs.sh",
        |p| p,
    )
}

/// The Rust virtiofsd (virtio-fs backend): `$RUNM_VIRTIOFSD`, else the one
/// `scripts/virtiofsd.sh` builds (or has cached). That script needs root the
/// first time, to install libseccomp-dev and libcap-ng-dev.
pub fn virtiofsd() -> Result<PathBuf> {
    static VIRTIOFSD: Mutex<Option<PathBuf>> = Mutex::new(None);
    cached(&VIRTIOFSD, "RUNM_VIRTIOFSD", "scripts/virtiofsd.sh", |p| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        let root = repo_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{}", root.display());
        assert!(root.join("guest-kernel-config/build.sh").is_file());
    }

    #[test]
    fn a_missing_binary_names_the_command_that_builds_it() {
        let absent = Binary {
            name: "no-such-binary",
            package: "nowhere",
            var: "RUNM_TEST_SUPPORT_NO_SUCH_VAR",
        };
        let e = absent.find(&[Profile::Release]).unwrap_err().to_string();
        assert!(
            e.contains("cargo build --release -p nowhere --bin no-such-binary"),
            "{e}"
        );
        assert!(e.contains("{release}"), "{e}");
        let e = absent.find(&Profile::this_first()).unwrap_err().to_string();
        assert!(e.contains("{debug,release}") || e.contains("{release,debug}"));
        assert!(e.contains("`cargo build -p nowhere"), "{e}");
    }

    #[test]
    fn a_failing_build_script_is_an_error_with_its_name() {
        let e = build_script_output("no/such/script.sh").unwrap_err();
        assert!(matches!(e, WorkspaceError::Failed { .. }), "{e}");
        assert!(e.to_string().contains("no/such/script.sh"), "{e}");
    }
}
