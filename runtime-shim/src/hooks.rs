//! The OCI hooks runm runs on the host: `prestart` and `createRuntime`
//! during `create` (after the container's network namespace exists and a
//! process is in it, before the VM is built, so that a hook can move an
//! interface in: Docker's `libnetwork-setkey`), `poststart` after `start`,
//! `poststop` at `delete`.
//!
//! Each hook gets the OCI state on stdin, its own `args` (the first is its
//! `argv[0]`) and `env` (the whole environment when given, runm's own
//! otherwise, as runc does), and is killed with its process group when its
//! `timeout` passes. Its output is kept for the error, never mixed with the
//! container's stdio. A failing `prestart` or `createRuntime` hook fails
//! `create`; a failing `poststart` or `poststop` hook is a warning, and the
//! others still run (the runtime specification's rules).
//!
//! `createContainer` and `startContainer` hooks would run inside the
//! container, which is in the guest: they are reported as not applied.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};
use rustix::fs::{memfd_create, MemfdFlags};

/// Most of a hook's output kept for its error.
const OUTPUT_LIMIT: u64 = 4096;

/// The hook points runm runs on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Before the VM is built; deprecated by the specification, used by Docker.
    Prestart,
    /// Right after `prestart`, in the same place.
    CreateRuntime,
    /// After the container's process started.
    Poststart,
    /// After the container was deleted.
    Poststop,
}

impl HookKind {
    /// The name in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// This kind's hooks in `hooks`.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook could not be started.
    #[error("{kind} hook #{index} ({path}) could not be started: {source}")]
    Spawn {
        /// Its kind.
        kind: &'static str,
        /// Its place in the list.
        index: usize,
        /// Its program.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The hook exited unsuccessfully.
    #[error("{kind} hook #{index} ({path}) failed ({status}){output}")]
    Failed {
        /// Its kind.
        kind: &'static str,
        /// Its place in the list.
        index: usize,
        /// Its program.
        path: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it printed, as `: <text>`, or nothing.
        output: String,
    },
    /// The hook did not end within its timeout.
    #[error("{kind} hook #{index} ({path}) did not finish within its timeout of {secs} s and was killed{output}")]
    Timeout {
        /// Its kind.
        kind: &'static str,
        /// Its place in the list.
        index: usize,
        /// Its program.
        path: PathBuf,
        /// The timeout.
        secs: i64,
        /// The end of what it printed, as `: <text>`, or nothing.
        output: String,
    },
}

/// Checks what runm needs of a hook before anything runs: an absolute path
/// and a positive timeout. The error is for people.
pub fn check(kind: &str, index: usize, hook: &Hook) -> Result<(), String> {
    if !hook.path().is_absolute() {
        return Err(format!(
            "hooks.{kind}[{index}].path '{}' is not an absolute path",
            hook.path().display()
        ));
    }
    if let Some(t) = hook.timeout() {
        if t <= 0 {
            return Err(format!(
                "hooks.{kind}[{index}].timeout is {t}: it must be greater than zero"
            ));
        }
    }
    Ok(())
}

/// Runs the `kind` hooks of `hooks` in order with `state` (the OCI state
/// JSON) on stdin; stops at the first failure.
pub fn run(kind: HookKind, hooks: Option<&Hooks>, state: &str) -> Result<(), HookError> {
    for (index, hook) in hooks
        .map(|h| kind.of(h))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        run_one(kind.name(), index, hook, state)?;
    }
    Ok(())
}

/// Runs every `kind` hook; failures are warnings (`poststart`, `poststop`).
pub fn run_warning(kind: HookKind, hooks: Option<&Hooks>, state: &str) {
    for (index, hook) in hooks
        .map(|h| kind.of(h))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Err(e) = run_one(kind.name(), index, hook, state) {
            crate::logging::warn(&e.to_string());
        }
    }
}

/// An anonymous file: what a hook reads and writes, so that neither side
/// can block the other however much or little it reads.
fn scratch() -> io::Result<File> {
    Ok(File::from(memfd_create("runm-hook", MemfdFlags::CLOEXEC)?))
}

fn run_one(kind: &'static str, index: usize, hook: &Hook, state: &str) -> Result<(), HookError> {
    let path = hook.path().clone();
    let spawn_err = |source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    };
    let mut stdin = scratch().map_err(spawn_err)?;
    stdin.write_all(state.as_bytes()).map_err(spawn_err)?;
    stdin.seek(SeekFrom::Start(0)).map_err(spawn_err)?;
    let mut output = scratch().map_err(spawn_err)?;

    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args().as_deref().filter(|a| !a.is_empty()) {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    if let Some(env) = hook.env() {
        cmd.env_clear();
        for e in env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(output.try_clone().map_err(spawn_err)?))
        .stderr(Stdio::from(output.try_clone().map_err(spawn_err)?))
        // Its own group, so that a timeout ends what it started too.
        .process_group(0);
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // Set apart from the spawn so that the child's pid is its group's id.
    let group = i32::try_from(child.id()).unwrap_or(0);
    log::debug!(
        "{kind} hook #{index}: {} (pid {})",
        path.display(),
        child.id()
    );

    let deadline = hook
        .timeout()
        .and_then(|t| u64::try_from(t).ok())
        .map(|t| Instant::now() + Duration::from_secs(t));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => return Err(spawn_err(e)),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // A pid of 0 (never) is refused by kill_group.
            let _ = crate::sys::kill_group(group, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            break Err(hook.timeout().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let printed = tail(&mut output);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(status) => Err(HookError::Failed {
            kind,
            index,
            path,
            status,
            output: printed,
        }),
        Err(secs) => Err(HookError::Timeout {
            kind,
            index,
            path,
            secs,
            output: printed,
        }),
    }
}

/// The end of what a hook printed, as `: <text>` on one line, or nothing.
fn tail(output: &mut File) -> String {
    let len = output.seek(SeekFrom::End(0)).unwrap_or(0);
    let from = len.saturating_sub(OUTPUT_LIMIT);
    let mut bytes = Vec::new();
    if output.seek(SeekFrom::Start(from)).is_err() || output.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(v: serde_json::Value) -> Hook {
        serde_json::from_value(v).unwrap()
    }

    fn hooks(kind: &str, list: serde_json::Value) -> Hooks {
        serde_json::from_value(serde_json::json!({ kind: list })).unwrap()
    }

    #[test]
    fn a_hook_gets_the_state_its_args_and_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        // argv[0] as the hook's own command line shows it; $0 and $1 are
        // the arguments after the script.
        let script = format!(
            "echo \"$(tr '\\0' '\\n' < /proc/$$/cmdline | head -n 1) $0 $1 [$FOO] [$HOME]\" > {o}; cat >> {o}",
            o = out.display()
        );
        let h = hooks(
            "prestart",
            serde_json::json!([{
                "path": "/bin/sh",
                "args": ["my-hook", "-c", script, "zeroth", "first"],
                "env": ["FOO=bar=baz"],
            }]),
        );
        run(HookKind::Prestart, Some(&h), "{\"id\":\"c1\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "my-hook zeroth first [bar=baz] []\n{\"id\":\"c1\"}"
        );
        // No hooks of a kind, or none at all: nothing runs.
        run(HookKind::Poststop, Some(&h), "{}").unwrap();
        run(HookKind::Prestart, None, "{}").unwrap();
    }

    #[test]
    fn failures_name_the_hook_and_say_what_it_printed() {
        let h = hooks(
            "createRuntime",
            serde_json::json!([
                {"path": "/bin/true"},
                {"path": "/bin/sh", "args": ["sh", "-c", "echo no network for you >&2; exit 3"]},
                {"path": "/bin/sh", "args": ["sh", "-c", "echo never >&2; exit 1"]},
            ]),
        );
        let e = run(HookKind::CreateRuntime, Some(&h), "{}")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "createRuntime hook #1 (/bin/sh) failed (exit status: 3): no network for you"
        );
        let h = hooks("prestart", serde_json::json!([{"path": "/no/such/hook"}]));
        let e = run(HookKind::Prestart, Some(&h), "{}").unwrap_err();
        assert!(matches!(e, HookError::Spawn { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("prestart hook #0 (/no/such/hook) could not be started"),
            "{e}"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child");
        let script = format!(
            "sleep 1000 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let h = hooks(
            "prestart",
            serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", script], "timeout": 1}]),
        );
        let t = Instant::now();
        let e = run(HookKind::Prestart, Some(&h), "{}")
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(
            e,
            "prestart hook #0 (/bin/sh) did not finish within its timeout of 1 s and was killed: started"
        );
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{}/stat", pid.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(Instant::now() < until, "the hook's child outlived it");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn paths_and_timeouts_are_checked() {
        let rel = hook(serde_json::json!({"path": "hook"}));
        assert!(check("prestart", 0, &rel)
            .unwrap_err()
            .contains("hooks.prestart[0].path 'hook' is not an absolute path"));
        let zero = hook(serde_json::json!({"path": "/h", "timeout": 0}));
        assert!(check("poststop", 2, &zero)
            .unwrap_err()
            .contains("hooks.poststop[2].timeout is 0"));
        check(
            "poststart",
            0,
            &hook(serde_json::json!({"path": "/h", "timeout": 5})),
        )
        .unwrap();
    }
}
