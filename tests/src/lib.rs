//! Helpers the integration tests share: where the workspace's binaries and the
//! guest kernel are, a newc cpio writer for test initramfs images, and a
//! runm-vmm child process the tests can wait on, signal and read.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a Rust panic prints ("thread 'main' panicked at src/..."), unlike
/// runm-vmm's report of a guest kernel panic ("guest kernel panicked: ...").
pub const RUST_PANIC: &str = "panicked at";

/// Guest boots are slow on PVM and use both cores: one at a time.
pub static ONE_GUEST: Mutex<()> = Mutex::new(());

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// `$RUNM_VMM`, else `target/<this profile>/runm-vmm`, else the other
/// profile's; fails with the command that builds it.
pub fn runm_vmm() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNM_VMM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RUNM_VMM={} is not a file", p.display());
        return p;
    }
    let root = repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let (mine, other) = if cfg!(debug_assertions) {
        ("debug", "release")
    } else {
        ("release", "debug")
    };
    for profile in [mine, other] {
        let p = target.join(profile).join("runm-vmm");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no runm-vmm binary under {}/{{debug,release}}: build it first with \
         `cargo build -p vmm --bin runm-vmm` (or set RUNM_VMM)",
        target.display()
    );
}

/// The guest kernel's `vmlinux`, built or taken from the cache once per run.
pub fn guest_vmlinux() -> &'static Path {
    static VMLINUX: OnceLock<PathBuf> = OnceLock::new();
    VMLINUX.get_or_init(|| {
        let script = repo_root().join("guest-kernel-config/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}): the guest kernel could not be built",
            script.display(),
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .expect("build.sh prints the kernel directory as its last line");
        let vmlinux = PathBuf::from(dir.trim()).join("vmlinux");
        assert!(
            vmlinux.is_file(),
            "build.sh named {}, which has no vmlinux",
            dir.trim()
        );
        vmlinux
    })
}

/// A newc ("070701") cpio archive, built in memory: device nodes need no
/// privilege this way, and nothing outside the test is needed.
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn pad4(&mut self) {
        self.data.resize(self.data.len().next_multiple_of(4), 0);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let namesize = u32::try_from(name.len() + 1).expect("short name");
        let filesize = u32::try_from(body.len()).expect("file under 4 GiB");
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(body);
        self.pad4();
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, 0o040755, (0, 0), &[]);
        self
    }

    pub fn file(&mut self, name: &str, mode: u32, body: &[u8]) -> &mut Self {
        self.entry(name, 0o100000 | mode, (0, 0), body);
        self
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        self.entry(name, 0o020600, (major, minor), &[]);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads the archive in 512-byte blocks, as cpio writes it.
        self.data.resize(self.data.len().next_multiple_of(512), 0);
        self.data
    }
}

/// What the guest's init prints when it runs.
pub const INIT_MARKER: &str = "runm-guest-init: hello from user space";

/// An uncompressed initramfs whose /init (a busybox shell script) prints
/// [`INIT_MARKER`] and reboots at once.
pub fn initramfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let bin = std::fs::read(busybox).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): the guest's init needs a static busybox; \
             install Debian's busybox-static (the setup script does)",
            busybox.display()
        )
    });
    assert!(
        bin.starts_with(b"\x7fELF"),
        "{} is not an ELF binary",
        busybox.display()
    );
    let init =
        format!("#!/bin/busybox sh\n/bin/busybox echo '{INIT_MARKER}'\n/bin/busybox reboot -f\n");
    let mut cpio = Cpio::default();
    cpio.dir("bin")
        .dir("dev")
        .dir("proc")
        .dir("sys")
        .char_dev("dev/console", 5, 1)
        .file("bin/busybox", 0o755, &bin)
        .file("init", 0o755, init.as_bytes());
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio.finish()).expect("write the initramfs");
    path
}

/// An ext4 image (`mkfs.ext4 -d`) holding a static busybox and an
/// `/sbin/init` that prints [`INIT_MARKER`] and reboots: a root disk for the
/// guest kernel.
pub fn ext4_root(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "sbin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dirs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copy /bin/busybox (install Debian's busybox-static)");
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\n/bin/busybox echo '{INIT_MARKER}'\n/bin/busybox reboot -f\n"),
    )
    .expect("write init");
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod init");
    let img = dir.join("root.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("32M")
        .output()
        .expect("run mkfs.ext4 (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// A runm-vmm process whose stderr goes to a file (no pipe to fill up) and
/// that is killed, by its own pid, if the test ends before it does.
pub struct Vmm {
    pub child: Child,
    pub stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Vmm {
    pub fn spawn(dir: &Path, args: &[&str]) -> Self {
        let stderr_path = dir.join("runm-vmm.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new(runm_vmm())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn runm-vmm");
        Vmm {
            child,
            stderr_path,
            status: None,
        }
    }

    /// Like [`Vmm::spawn`], in a network namespace of its own (`unshare -n`,
    /// which execs runm-vmm under the same pid), so a tap it creates lives and
    /// dies there and the host's interfaces are never touched.
    pub fn spawn_in_new_netns(dir: &Path, args: &[&str]) -> Self {
        let stderr_path = dir.join("runm-vmm.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new("unshare")
            .arg("--net")
            .arg(runm_vmm())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn unshare --net runm-vmm");
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

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A bound from the environment in seconds, or `default`.
pub fn secs_from_env(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_follow_the_newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"abc");
        let a = c.finish();
        assert_eq!(&a[..6], b"070701");
        // ino 1, mode 0100755, uid, gid, nlink 1, mtime, filesize 3
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[38..46], b"00000001");
        assert_eq!(&a[54..62], b"00000003");
        assert_eq!(&a[94..102], b"00000005", "namesize counts the NUL");
        // 110-byte header + "init\0" = 115, padded to 116, then the body.
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..119], b"abc");
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert_eq!(trailer, 120 + 110, "the trailer follows the padded body");
        assert_eq!(a.len() % 512, 0);
    }
}
