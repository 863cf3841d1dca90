//! What the workloads run from: the static benchmark program (built here
//! with `+crt-static`), the busybox root file system and one OCI bundle per
//! run (a `config.json` like `runc spec`'s, pointing at the shared root
//! file system), and the initramfs for QEMU's direct boot (busybox, the
//! program, and an /init that runs it and resets the machine).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::error::{ReportError, Result};
use super::spawn;

/// Where the program lives inside the root file system.
pub const WORKLOAD_IN_ROOTFS: &str = "/bin/runm-bench-workload";
/// The busybox applets linked in the root file system.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "sleep", "uname", "hostname", "mount", "reboot", "true",
];

/// Whether an ELF file is statically linked: it has no PT_INTERP program
/// header (static and static-pie binaries have none).
pub fn elf_is_static(data: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // 64-bit little-endian ELF only (the one target here).
    if data.get(0..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// Builds the benchmark program statically (in its own target directory,
/// so the workspace's build cache keeps its flags) and returns its path.
pub fn build_workload(repo: &Path) -> Result<PathBuf> {
    let triple = "x86_64-unknown-linux-gnu";
    let target_dir = repo.join("target").join("bench-workload");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-p",
            "runm-bench",
            "--bin",
            "runm-bench-workload",
            "--target",
            triple,
            "--target-dir",
        ])
        .arg(&target_dir);
    spawn::output("building runm-bench-workload", &mut cmd)?;
    let bin = target_dir
        .join(triple)
        .join("release")
        .join("runm-bench-workload");
    check_static(&bin)?;
    Ok(bin)
}

/// Refuses a program that is not static: it would fail in the guest and
/// in busybox root file systems with a bare "not found".
pub fn check_static(bin: &Path) -> Result<()> {
    let data = fs::read(bin).map_err(ReportError::io(bin))?;
    if elf_is_static(&data) {
        Ok(())
    } else {
        Err(ReportError::Command {
            what: format!("checking {}", bin.display()),
            detail: "not a static x86_64 ELF program".into(),
        })
    }
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map_err(ReportError::io(to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(ReportError::io(to))
}

/// Makes a busybox root file system in `dir` (bin with the applets, the
/// program, and the directories the runtimes mount on) and returns it.
pub fn make_rootfs(dir: &Path, busybox: &Path, workload: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "run"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(ReportError::io(&p))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(ReportError::io(&tmp))?;
    copy_exec(busybox, &root.join("bin/busybox"))?;
    for a in APPLETS {
        let link = root.join("bin").join(a);
        symlink("busybox", &link).map_err(ReportError::io(&link))?;
    }
    install_workload(&root, workload)?;
    let etc = root.join("etc/passwd");
    fs::write(&etc, "root:x:0:0:root:/:/bin/sh\n").map_err(ReportError::io(&etc))?;
    Ok(root)
}

/// Puts the program into an existing root file system.
pub fn install_workload(rootfs: &Path, workload: &Path) -> Result<()> {
    let to = rootfs.join(WORKLOAD_IN_ROOTFS.trim_start_matches('/'));
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(ReportError::io(parent))?;
    }
    copy_exec(workload, &to)
}

/// The root file system of an existing bundle: its config.json's
/// `root.path`, relative to the bundle unless absolute.
pub fn bundle_rootfs(bundle: &Path) -> Result<PathBuf> {
    let path = bundle.join("config.json");
    let text = fs::read_to_string(&path).map_err(ReportError::io(&path))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ReportError::Output {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let root = v["root"]["path"].as_str().unwrap_or("rootfs");
    Ok(bundle.join(root))
}

/// What differs between the bundles of two runs.
#[derive(Debug, Clone, Default)]
pub struct BundleSpec {
    /// The program's arguments (after the program itself).
    pub args: Vec<String>,
    /// `linux.resources.memory.limit`, bytes.
    pub memory_limit: Option<u64>,
}

/// A config.json like `runc spec`'s default (namespaces, mounts, masked and
/// read-only paths, the three default capabilities), not a terminal,
/// running the program with `spec.args` on the root file system at the
/// absolute path `rootfs`, writable (the file-I/O workload writes /tmp).
pub fn config_json(rootfs: &Path, spec: &BundleSpec, hostname: &str) -> Value {
    let mut args = vec![WORKLOAD_IN_ROOTFS.to_string()];
    args.extend(spec.args.iter().cloned());
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = spec.memory_limit {
        resources["memory"] = json!({ "limit": limit });
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": resources,
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Writes a bundle directory holding only config.json.
pub fn write_bundle(dir: &Path, config: &Value) -> Result<()> {
    fs::create_dir_all(dir).map_err(ReportError::io(dir))?;
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    fs::write(&path, text).map_err(ReportError::io(&path))
}

/// One member of a newc cpio archive.
pub struct CpioEntry<'a> {
    /// Path inside the archive, without a leading `/`.
    pub name: &'a str,
    /// st_mode: type and permission bits.
    pub mode: u32,
    /// (major, minor) for device nodes.
    pub rdev: (u32, u32),
    /// File contents (or a symlink's target).
    pub data: &'a [u8],
}

/// An uncompressed newc ("070701") cpio archive of `entries` with its
/// trailer, padded to 512 bytes. Uncompressed because a guest under
/// emulation unpacks compressed initramfs images very slowly.
pub fn newc_archive(entries: &[CpioEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let namesize = u32::try_from(name.len() + 1).unwrap_or(0);
        let filesize = u32::try_from(data.len()).unwrap_or(0);
        out.extend_from_slice(b"070701");
        for f in [
            ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ] {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    let mut ino = 0u32;
    for e in entries {
        ino += 1;
        put(ino, e.name, e.mode, e.rdev, e.data);
    }
    put(0, "TRAILER!!!", 0, (0, 0), &[]);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// The direct-boot /init: mounts what the program needs, runs it with the
/// arguments the kernel passed to init (everything after `--` on the
/// command line), and resets the machine (`reboot=k` makes the reset reach
/// QEMU, which exits with `-no-reboot`).
pub const DIRECT_INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
/bin/runm-bench-workload \"$@\"
/bin/busybox reboot -f
";

/// The initramfs for QEMU's direct boot of the guest kernel.
pub fn direct_boot_initramfs(busybox: &[u8], workload: &[u8]) -> Vec<u8> {
    let dir = 0o040755;
    let exe = 0o100755;
    newc_archive(&[
        CpioEntry {
            name: "bin",
            mode: dir,
            rdev: (0, 0),
            data: &[],
        },
        CpioEntry {
            name: "dev",
            mode: dir,
            rdev: (0, 0),
            data: &[],
        },
        CpioEntry {
            name: "dev/console",
            mode: 0o020600,
            rdev: (5, 1),
            data: &[],
        },
        CpioEntry {
            name: "proc",
            mode: dir,
            rdev: (0, 0),
            data: &[],
        },
        CpioEntry {
            name: "tmp",
            mode: 0o041777,
            rdev: (0, 0),
            data: &[],
        },
        CpioEntry {
            name: "bin/busybox",
            mode: exe,
            rdev: (0, 0),
            data: busybox,
        },
        CpioEntry {
            name: "bin/sh",
            mode: 0o120777,
            rdev: (0, 0),
            data: b"busybox",
        },
        CpioEntry {
            name: "bin/runm-bench-workload",
            mode: exe,
            rdev: (0, 0),
            data: workload,
        },
        CpioEntry {
            name: "init",
            mode: exe,
            rdev: (0, 0),
            data: DIRECT_INIT.as_bytes(),
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_check_reads_program_headers() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is a normal dynamic executable.
        assert!(!elf_is_static(&me));
        assert!(!elf_is_static(b"#!/bin/sh\n"));
        // A minimal ELF header with no program headers counts as static.
        let mut hdr = vec![0u8; 64];
        hdr[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(elf_is_static(&hdr));
        // One PT_INTERP header makes it dynamic.
        hdr[0x20] = 64;
        hdr[0x36] = 56;
        hdr[0x38] = 1;
        hdr.resize(64 + 56, 0);
        hdr[64] = 3;
        assert!(!elf_is_static(&hdr));
    }

    #[test]
    fn config_is_runc_like_with_our_args() {
        let spec = BundleSpec {
            args: vec!["bench".into(), "10".into()],
            memory_limit: Some(32 << 20),
        };
        let c = config_json(Path::new("/b/rootfs"), &spec, "rb");
        assert_eq!(
            c["process"]["args"],
            json!([WORKLOAD_IN_ROOTFS, "bench", "10"])
        );
        assert_eq!(c["process"]["terminal"], json!(false));
        assert_eq!(c["root"]["path"], json!("/b/rootfs"));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], json!(32 << 20));
        assert!(c["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sysrq-trigger")));
        let c = config_json(Path::new("/r"), &BundleSpec::default(), "h");
        assert!(c["linux"]["resources"].get("memory").is_none());
    }

    #[test]
    fn newc_archive_layout() {
        let a = newc_archive(&[CpioEntry {
            name: "init",
            mode: 0o100755,
            rdev: (0, 0),
            data: b"#!x\n",
        }]);
        assert_eq!(a.len() % 512, 0);
        assert_eq!(&a[..6], b"070701");
        // ino 1, mode 0100755, then uid, gid, nlink 1.
        assert_eq!(&a[6..22], b"00000001000081ed");
        assert_eq!(&a[38..46], b"00000001");
        // filesize 4 and namesize 5 ("init" + NUL).
        assert_eq!(&a[54..62], b"00000004");
        assert_eq!(&a[94..102], b"00000005");
        assert_eq!(&a[110..115], b"init\0");
        // 110 + 5 = 115, padded to 116, then the data.
        assert_eq!(&a[116..120], b"#!x\n");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn direct_init_runs_the_program_with_init_args() {
        assert!(DIRECT_INIT.contains("/bin/runm-bench-workload \"$@\""));
        assert!(DIRECT_INIT.trim_end().ends_with("reboot -f"));
        let a = direct_boot_initramfs(b"BB", b"WL");
        let text = String::from_utf8_lossy(&a);
        for name in [
            "bin/busybox",
            "dev/console",
            "init",
            "bin/runm-bench-workload",
        ] {
            assert!(text.contains(name), "{name}");
        }
    }

    #[test]
    fn rootfs_has_applets_program_and_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("prog");
        fs::write(&fake, b"x").unwrap();
        let root = make_rootfs(dir.path(), &fake, &fake).unwrap();
        for p in ["bin/sh", "bin/busybox", "proc", "sys", "dev", "tmp"] {
            assert!(root.join(p).symlink_metadata().is_ok(), "{p}");
        }
        let w = root.join(WORKLOAD_IN_ROOTFS.trim_start_matches('/'));
        assert_eq!(fs::metadata(w).unwrap().permissions().mode() & 0o777, 0o755);
        let bundle = dir.path().join("b");
        write_bundle(&bundle, &config_json(&root, &BundleSpec::default(), "h")).unwrap();
        assert_eq!(bundle_rootfs(&bundle).unwrap(), root);
    }
}
