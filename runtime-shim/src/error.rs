//! The error a runm command ends with: one variant per module's error, so the
//! binary prints one `runm: <message>` line and exits 1 whatever failed.

use crate::agent_client::AgentError;
use crate::backend::BackendError;
use crate::bundle::BundleError;
use crate::cgroup::CgroupError;
use crate::config::ConfigError;
use crate::control::ControlError;
use crate::hooks::HookError;
use crate::logging::LogError;
use crate::network::NetworkError;
use crate::rootfs::RootfsError;
use crate::sandbox::SandboxError;
use crate::signal::SignalError;
use crate::state::StateError;

/// Any failure of a runm command.
#[derive(Debug, thiserror::Error)]
pub enum RunmError {
    /// Container state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The disk image.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Backend choice or VM preparation.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The sandbox process.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Host cgroups.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// runm's own configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The guest agent.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The control socket.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The container's network namespace.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// An OCI hook.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// A signal name.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// Logging set-up.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Bad usage that the command line parser cannot see.
    #[error("{0}")]
    Usage(String),
    /// A file operation of a command.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RunmError {
    /// An [`RunmError::Io`] for `path`.
    pub fn io(
        what: &'static str,
        path: impl AsRef<std::path::Path>,
    ) -> impl FnOnce(std::io::Error) -> RunmError {
        let path = path.as_ref().display().to_string();
        move |source| RunmError::Io { what, path, source }
    }
}
