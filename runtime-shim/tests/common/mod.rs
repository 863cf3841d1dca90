//! Helpers shared by runm's integration tests: running the `runm` binary with
//! a private `--root` and bounded time, building bundles, and looking for
//! processes a container left behind.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::images::{self, Applets};

/// The runm binary under test.
pub const RUNM: &str = env!("CARGO_BIN_EXE_runm");

/// What a finished runm invocation left.
#[derive(Debug)]
pub struct Out {
    /// Exit status (128 + signal if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Panics unless the exit status is 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "runm failed: {self:?}");
        self
    }

    /// runm's own lines on stderr (`runm: ...`, or log records written
    /// there), as opposed to what a workload printed.
    pub fn runm_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| {
                l.starts_with("runm: ") || l.starts_with("time=\"") || l.starts_with("{\"level\"")
            })
            .collect()
    }

    /// Panics unless runm failed with exactly one `runm: ` line on stderr,
    /// an error containing `needle` (warnings and notices go to the log).
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(self.code, 0, "runm should have failed: {self:?}");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("runm: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected: {self:?}");
        assert!(
            errors[0].contains(needle),
            "error should mention {needle:?}: {self:?}"
        );
        self
    }
}

/// A runm with its own temporary root and environment.
pub struct Runm {
    /// Keeps the temporary directory (root and scratch files) alive.
    pub tmp: tempfile::TempDir,
    /// The `--root`.
    pub root: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// How long one invocation may take.
    pub timeout: Duration,
}

impl Runm {
    /// A fresh root under a new temporary directory.
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("runm-test-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("root");
        // runm's configuration: the defaults (this file does not exist until
        // a test writes it), whatever the host's /etc/runm says.
        let config = tmp.path().join("runm-config.json");
        Runm {
            tmp,
            root,
            env: vec![("RUNM_CONFIG".into(), config.to_string_lossy().into_owned())],
            timeout: Duration::from_secs(240),
        }
    }

    /// Sets an environment variable for every invocation.
    pub fn with_env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env
            .push((k.into(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    /// The command, with `--root`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(RUNM);
        c.arg("--root").arg(&self.root).args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs runm to completion (bounded) with stdin closed and stdout/stderr
    /// captured through files: a container's sandbox inherits them and may
    /// keep writing after runm returned, which pipes would make us wait for.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_cmd(self.command(args))
    }

    /// As [`Runm::run`], for a prepared command.
    pub fn run_cmd(&self, mut cmd: Command) -> Out {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out_path = self.tmp.path().join(format!("out.{n}"));
        let err_path = self.tmp.path().join(format!("err.{n}"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let mut child = cmd.spawn().expect("runm runs");
        let code = wait_bounded(&mut child, self.timeout)
            .unwrap_or_else(|| panic!("runm {cmd:?} did not finish in {:?}", self.timeout));
        Out {
            code,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// `runm state ID` as JSON.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]).ok();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state JSON: {e}: {out:?}"))
    }

    /// Waits until `runm state ID` says `status`.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> serde_json::Value {
        let until = Instant::now() + timeout;
        loop {
            let st = self.state(id);
            if st["status"] == status {
                return st;
            }
            assert!(Instant::now() < until, "{id} never became {status}: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Entries left under the root (container directories).
    pub fn leftovers(&self) -> Vec<String> {
        match fs::read_dir(&self.root) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Host processes whose command line mentions this root (runm sandboxes,
    /// exec relays and VM processes all do), waiting up to `grace` for them
    /// to go away.
    pub fn processes(&self, grace: Duration) -> Vec<String> {
        let needle = self.root.to_string_lossy().into_owned();
        let until = Instant::now() + grace;
        loop {
            let found = processes_mentioning(&needle);
            if found.is_empty() || Instant::now() >= until {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that nothing of any container remains: no directory under the
    /// root, no process.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.leftovers(),
            Vec::<String>::new(),
            "state left under the root"
        );
        assert_eq!(
            self.processes(Duration::from_secs(10)),
            Vec::<String>::new(),
            "processes left"
        );
    }
}

impl Drop for Runm {
    /// Kills whatever a failed test left running (by pid, only processes
    /// that name this test's root), then detaches what it left mounted
    /// there (the network namespaces runm binds), so that neither the host's
    /// mount table nor the temporary directory keeps it.
    fn drop(&mut self) {
        let needle = self.root.to_string_lossy().into_owned();
        for p in processes_mentioning(&needle) {
            if let Some(pid) = p.split(' ').next().and_then(|s| s.parse::<i32>().ok()) {
                // SAFETY: kill(2) on a pid we just found; no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for m in mounts_under(&self.root) {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Waits for `child` at most `timeout`; kills it on timeout (returns None).
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<i32> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            return Some(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pid cmdline` of every live process (not zombies) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{pid} {cmd}"));
        }
    }
    found
}

/// Writes a bundle at `dir`: `config.json` from `runm spec`, made
/// non-interactive (no terminal, writable root, `PATH=/bin`) with `args`,
/// then passed to `edit`; `rootfs/` with a few files (and busybox if `busybox`).
pub fn bundle(dir: &Path, args: &[&str], busybox: bool, edit: impl FnOnce(&mut serde_json::Value)) {
    fs::create_dir_all(dir.join("rootfs")).unwrap();
    let _ = fs::remove_file(dir.join("config.json"));
    let out = Command::new(RUNM)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "runm spec: {out:?}");
    let path = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(args);
    c["process"]["env"] = serde_json::json!(["PATH=/bin", "HOME=/"]);
    c["root"]["readonly"] = false.into();
    edit(&mut c);
    fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    rootfs(&dir.join("rootfs"), busybox);
}

/// A minimal root file system at `dir`: the usual mount points, an
/// `/etc/passwd`, and with `busybox` a static busybox with its applets as
/// symbolic links in `/bin`.
pub fn rootfs(dir: &Path, busybox: bool) {
    if busybox {
        images::busybox_tree(dir, Applets::All).expect("a busybox root file system");
    } else {
        images::root_tree(dir).expect("a root file system");
    }
}

/// A runm for tests that boot VMs: the guest images in its environment, a
/// boot timeout for software emulation on a busy host, and the
/// one-guest-at-a-time lock held (each guest takes a core).
pub fn vm_runm() -> (std::sync::MutexGuard<'static, ()>, Runm) {
    let guard = test_support::one_guest_at_a_time();
    let (k, i) = guest_images();
    let r = Runm::new()
        .with_env("RUNM_KERNEL", k)
        .with_env("RUNM_INITRD", i)
        .with_env("RUNM_BOOT_TIMEOUT", "180");
    (guard, r)
}

/// A path as runm's arguments take it.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// (kernel, initramfs) for runm's VMs: `$RUNM_KERNEL`/`$RUNM_INITRD`, else
/// what the project's build scripts make (cached by them).
pub fn guest_images() -> (PathBuf, PathBuf) {
    (
        test_support::guest_kernel().expect("the guest kernel"),
        test_support::agent_initramfs().expect("the agent initramfs"),
    )
}

/// Runs a host tool (`ip`, `tc`, ...) that must succeed; its stdout.
pub fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A program on PATH, or a clear failure saying `how` to get it.
pub fn need(program: &str, how: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is needed for this test: {how}"))
}

/// Waits until `f` holds, or fails with `what`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Mount points at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&d))
        .collect()
}

/// The hex SHA-256 of `data` (containerd names its shims' sockets so).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What a daemon a test started looks like while the test waits for it.
pub enum DaemonProbe {
    /// It answers its clients.
    Answers,
    /// Not yet (what the last try said).
    Not(String),
    /// It exited (with its log).
    Exited(String),
}

/// Waits up to 60 s until `probe` says the daemon `name` answers; fails
/// with what it said if it exits first or never answers.
pub fn wait_for_daemon(name: &str, mut probe: impl FnMut() -> DaemonProbe) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match probe() {
            DaemonProbe::Answers => return,
            DaemonProbe::Exited(log) => panic!("{name} exited:\n{log}"),
            DaemonProbe::Not(why) => assert!(
                std::time::Instant::now() < until,
                "{name} did not answer within 60 s: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Pids of the live (not zombie) processes, this one aside, in the network
/// namespace with inode `ino`.
pub fn pids_in_netns(ino: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
                && !fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .collect()
}

/// Section `## title` of runm's README (what follows its heading, up to the
/// next `## `): where the engines' configuration the tests use verbatim is.
pub fn readme_section(title: &str) -> String {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("\n## ")
        .find_map(|s| s.strip_prefix(title)?.strip_prefix('\n'))
        .unwrap_or_else(|| panic!("runm's README has a section \"{title}\""))
        .to_string()
}

/// The first ```` ```lang ```` block of `text`, without its fences.
pub fn fenced_block(text: &str, lang: &str) -> String {
    text.split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no ```{lang} block in: {text}"))
        .to_string()
}
