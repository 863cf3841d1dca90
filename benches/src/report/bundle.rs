//! What the workloads run from: the static benchmark program (built here
//! with `+crt-static`), the busybox root file system and one OCI bundle per
//! run (a `config.json` like `runc spec`'s, pointing at the shared root
//! file system), and the initramfs for QEMU's direct boot (busybox, the
//! program, and an /init that runs it and resets the machine).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use test_support::images::{self, elf_is_static, Applets};
use test_support::Cpio;

use super::error::{ReportError, Result};
use super::spawn;

/// Where the program lives inside the root file system.
pub const WORKLOAD_IN_ROOTFS: &str = "/bin/runm-bench-workload";
/// The busybox applets linked in the root file system.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "sleep", "uname", "hostname", "mount", "reboot", "true",
];

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
pub fn make_rootfs(dir: &Path, workload: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    images::busybox_tree(&root, Applets::Only(APPLETS)).map_err(|e| ReportError::Command {
        what: "making the busybox root file system".into(),
        detail: e.to_string(),
    })?;
    let run = root.join("run");
    fs::create_dir_all(&run).map_err(ReportError::io(&run))?;
    install_workload(&root, workload)?;
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
    /// A network namespace to join (a path, as CNI prepares one); a new,
    /// empty one otherwise.
    pub netns: Option<PathBuf>,
    /// runm: the root copied into an ext4 image on virtio-blk
    /// (`io.runm.rootfs=image`) instead of shared over virtio-fs.
    pub root_image: bool,
    /// A container of a pod: the CRI annotations and, for a container
    /// joining the pod's sandbox, its namespaces.
    pub pod: Option<PodBundle>,
    /// `/proc/sysrq-trigger` left writable (the crash probe).
    pub sysrq: bool,
}

/// Annotation naming a CRI container's kind (`sandbox` or `container`).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Annotation naming the id of a CRI container's pod sandbox.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A pod's container, as containerd's CRI plugin writes its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodBundle {
    /// The id of the pod's sandbox container (its own id for the sandbox).
    pub sandbox_id: String,
    /// For a container joining the pod: the sandbox container's host pid,
    /// whose network, IPC and UTS namespaces it joins by path. `None` for
    /// the sandbox container itself.
    pub sandbox_pid: Option<i32>,
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
    let mut readonly = vec!["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"];
    if !spec.sysrq {
        readonly.push("/proc/sysrq-trigger");
    }
    let network = match &spec.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    };
    let mut config = json!({
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
                {"type": "pid"}, network, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": readonly
        }
    });
    let mut annotations = serde_json::Map::new();
    if spec.root_image {
        annotations.insert("io.runm.rootfs".into(), "image".into());
    }
    if let Some(pod) = &spec.pod {
        let kind = if pod.sandbox_pid.is_some() {
            "container"
        } else {
            "sandbox"
        };
        annotations.insert(CRI_CONTAINER_TYPE.into(), kind.into());
        annotations.insert(CRI_SANDBOX_ID.into(), pod.sandbox_id.clone().into());
        if let Some(pid) = pod.sandbox_pid {
            let ns = |t: &str, n: &str| json!({"type": t, "path": format!("/proc/{pid}/ns/{n}")});
            config["linux"]["namespaces"] = json!([
                {"type": "pid"}, {"type": "mount"},
                ns("network", "net"), ns("ipc", "ipc"), ns("uts", "uts")
            ]);
            // The UTS namespace and its hostname are the sandbox's; runc
            // refuses to set a hostname in a namespace it did not make.
            if let Some(c) = config.as_object_mut() {
                c.remove("hostname");
            }
        }
    }
    if !annotations.is_empty() {
        config["annotations"] = Value::Object(annotations);
    }
    config
}

/// Writes a bundle directory holding only config.json.
pub fn write_bundle(dir: &Path, config: &Value) -> Result<()> {
    fs::create_dir_all(dir).map_err(ReportError::io(dir))?;
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    fs::write(&path, text).map_err(ReportError::io(&path))
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
    let mut cpio = Cpio::new();
    cpio.dir("bin", 0o755)
        .dir("dev", 0o755)
        .char_dev("dev/console", 5, 1)
        .dir("proc", 0o755)
        .dir("tmp", 0o1777)
        .file("bin/busybox", 0o755, busybox)
        .symlink("bin/sh", "busybox")
        .file("bin/runm-bench-workload", 0o755, workload)
        .file("init", 0o755, DIRECT_INIT.as_bytes());
    cpio.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_runc_like_with_our_args() {
        let spec = BundleSpec {
            args: vec!["bench".into(), "10".into()],
            memory_limit: Some(32 << 20),
            ..BundleSpec::default()
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
        let crash = BundleSpec {
            sysrq: true,
            ..BundleSpec::default()
        };
        let c = config_json(Path::new("/r"), &crash, "h");
        let ro = c["linux"]["readonlyPaths"].as_array().unwrap();
        assert!(!ro.contains(&json!("/proc/sysrq-trigger")) && ro.contains(&json!("/proc/sys")));
        let c = config_json(Path::new("/r"), &BundleSpec::default(), "h");
        assert!(c["linux"]["resources"].get("memory").is_none());
        assert!(
            c.get("annotations").is_none(),
            "the root is shared by default"
        );
        let image = BundleSpec {
            root_image: true,
            ..BundleSpec::default()
        };
        let c = config_json(Path::new("/r"), &image, "h");
        assert_eq!(c["annotations"]["io.runm.rootfs"], json!("image"));
    }

    #[test]
    fn pod_bundles_carry_cri_annotations_and_join_the_sandbox() {
        let sandbox = BundleSpec {
            pod: Some(PodBundle {
                sandbox_id: "pod1".into(),
                sandbox_pid: None,
            }),
            ..BundleSpec::default()
        };
        let c = config_json(Path::new("/r"), &sandbox, "h");
        assert_eq!(c["annotations"][CRI_CONTAINER_TYPE], json!("sandbox"));
        assert_eq!(c["annotations"][CRI_SANDBOX_ID], json!("pod1"));
        assert_eq!(c["hostname"], json!("h"));
        assert!(c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.get("path").is_none()));

        let member = BundleSpec {
            pod: Some(PodBundle {
                sandbox_id: "pod1".into(),
                sandbox_pid: Some(4242),
            }),
            root_image: true,
            ..BundleSpec::default()
        };
        let c = config_json(Path::new("/r"), &member, "h");
        assert_eq!(c["annotations"][CRI_CONTAINER_TYPE], json!("container"));
        assert_eq!(c["annotations"][CRI_SANDBOX_ID], json!("pod1"));
        assert_eq!(c["annotations"]["io.runm.rootfs"], json!("image"));
        assert!(
            c.get("hostname").is_none(),
            "the UTS namespace is the pod's"
        );
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        let path = |t: &str| {
            ns.iter()
                .find(|n| n["type"] == t)
                .map(|n| n.get("path").cloned())
        };
        assert_eq!(path("network"), Some(Some(json!("/proc/4242/ns/net"))));
        assert_eq!(path("ipc"), Some(Some(json!("/proc/4242/ns/ipc"))));
        assert_eq!(path("uts"), Some(Some(json!("/proc/4242/ns/uts"))));
        assert_eq!(path("pid"), Some(None), "its own PID namespace");
        assert_eq!(path("mount"), Some(None), "its own mount namespace");
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
        let root = make_rootfs(dir.path(), &fake).unwrap();
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
