//! The report harness's errors: one enum for everything that can stop a
//! measurement or the writing of the report.

use std::path::PathBuf;

/// Why a step of the report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The command line could not be understood (the message holds the usage).
    #[error("{0}")]
    Usage(String),
    /// A program needed by a step is missing or could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper command ran but failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was run, for people.
        what: String,
        /// Exit status and the end of its stderr.
        detail: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A run did not finish (or did not say what it should) in time.
    #[error("{what}: no {waited_for} within {secs} s")]
    Timeout {
        /// Which run.
        what: String,
        /// What it was waiting for.
        waited_for: String,
        /// How long it waited.
        secs: u64,
    },
    /// A run finished but its output was not what the workload prints.
    #[error("{what}: {detail}")]
    Output {
        /// Which run.
        what: String,
        /// What was wrong, with the output's end.
        detail: String,
    },
    /// Drawing a plot failed.
    #[error("plot {name}: {detail}")]
    Plot {
        /// The plot's file name.
        name: String,
        /// The drawing backend's message.
        detail: String,
    },
    /// A safety check refused a step (a probe that could touch the host).
    #[error("refused: {0}")]
    Refused(String),
}

impl ReportError {
    /// An [`ReportError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.into();
        move |source| ReportError::Io { path, source }
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, ReportError>;
