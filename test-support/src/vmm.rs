//! runm-vmm under test: a child process the tests wait on, signal and read,
//! and the guest it boots, whose `/init` prints [`INIT_MARKER`] and
//! reboots.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::images::{self, Applets};
use crate::workspace::{Profile, RUNM_VMM};

/// What a Rust panic prints ("thread 'main' panicked at src/..."), unlike
/// runm-vmm's report of a guest kernel panic ("guest kernel panicked: ...").
pub const RUST_PANIC: &str = "panicked at";

/// What the guest's init prints when it runs.
pub const INIT_MARKER: &str = "runm-guest-init: hello from user space";

/// The init script: print the marker, reboot at once.
fn marker_init() -> String {
    format!("#!/bin/busybox sh\n/bin/busybox echo '{INIT_MARKER}'\n/bin/busybox reboot -f\n")
}

/// The runm-vmm binary the tests run: `$RUNM_VMM`, else the one built in
/// this test's profile, else the other's; fails with the command that
/// builds it.
pub fn runm_vmm() -> PathBuf {
    RUNM_VMM
        .find(&Profile::this_first())
        .expect("the runm-vmm binary")
}

/// An uncompressed initramfs in `dir` whose /init (a busybox shell script)
/// prints [`INIT_MARKER`] and reboots at once.
pub fn initramfs(dir: &Path) -> PathBuf {
    let image = images::busybox_initramfs(&marker_init()).expect("the test initramfs");
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, image).expect("write the initramfs");
    path
}

/// An ext4 image in `dir` (labelled `root`) holding a static busybox and an
/// `/sbin/init` that prints [`INIT_MARKER`] and reboots: a root disk for
/// the guest kernel.
pub fn ext4_root(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    images::busybox_tree(&root, Applets::Only(&[])).expect("the root tree");
    let sbin = root.join("sbin");
    std::fs::create_dir_all(&sbin).expect("rootfs /sbin");
    let init = sbin.join("init");
    std::fs::write(&init, marker_init()).expect("write init");
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod init");
    let img = dir.join("root.ext4");
    images::ext4_image(&root, &img, "32M", "root").expect("the root disk");
    img
}

/// A runm-vmm process whose stderr goes to a file (no pipe to fill up) and
/// that is killed, by its own pid, if the test ends before it does.
pub struct Vmm {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Vmm {
    /// runm-vmm with `args`, its stderr in `dir`.
    pub fn spawn(dir: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(runm_vmm());
        cmd.args(args);
        Self::spawn_cmd(dir, cmd, "spawn runm-vmm")
    }

    /// Like [`Vmm::spawn`], in a network namespace of its own (`unshare -n`,
    /// which execs runm-vmm under the same pid), so a tap it creates lives and
    /// dies there and the host's interfaces are never touched.
    pub fn spawn_in_new_netns(dir: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new("unshare");
        cmd.arg("--net").arg(runm_vmm()).args(args);
        Self::spawn_cmd(dir, cmd, "spawn unshare --net runm-vmm")
    }

    fn spawn_cmd(dir: &Path, mut cmd: Command, what: &str) -> Self {
        let stderr_path = dir.join("runm-vmm.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect(what);
        Vmm {
            child,
            stderr_path,
            status: None,
        }
    }

    /// The exit status if it has ended.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for runm-vmm");
        }
        self.status
    }

    /// Waits up to `timeout` for it to end by itself.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `sig` to this process only.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped
        // (poll() has not seen it end), so the pid is still ours.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The console file's text so far (empty if not there yet).
pub fn read_console(path: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}
