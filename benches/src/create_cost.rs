//! `runm-bench create-cost`: what `runm create` costs the host before the
//! guest boots, for a busybox root file system and a Debian minimal one,
//! with the root shared over virtio-fs (runm's default) and copied into an
//! ext4 image (`io.runm.rootfs=image`), side by side.
//!
//! The VM program is a stand-in that writes the time it was started and
//! exits: `create` does everything up to starting the VM (bundle checks,
//! host cgroups, the image or the share with its virtiofsd, the sandbox)
//! and then tears it all down. From `create`'s start to the stand-in's
//! start is the host-side cost; the block output of `create` and all it
//! waited for (`getrusage`) is what it wrote. The guest's own boot is not
//! in the figure, so the figure is the host's on any kind of host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use test_support::images::{self, Applets};
use test_support::workspace::{self, Profile};

use crate::stats;

const USAGE: &str = "\
usage: runm-bench create-cost [--runs N] [--debian DIR]

  --runs N      repetitions of each case (default 5)
  --debian DIR  a Debian root file system (default: scripts/debian-rootfs.sh's,
                built with debootstrap once and cached; needs root)

Prints, for each root file system and each way it reaches the guest, the
host-side time of `runm create` up to starting the VM process and the bytes
it wrote (median and range over the runs).";

/// One case's runs.
struct Case {
    rootfs: &'static str,
    mode: &'static str,
    ms: Vec<f64>,
    written_mib: Vec<f64>,
}

/// Entry point of `runm-bench create-cost ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    let mut runs = 5usize;
    let mut debian: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--runs", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => {
                    runs = n;
                    it.next();
                }
                _ => return usage(&format!("--runs: '{v}' is not a positive number")),
            },
            ("--debian", Some(v)) => {
                debian = Some(PathBuf::from(v));
                it.next();
            }
            ("-h" | "--help", _) => return usage(""),
            (other, _) => return usage(&format!("unknown or incomplete option '{other}'")),
        }
    }
    match bench(runs, debian) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runm-bench create-cost: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    if !why.is_empty() {
        eprintln!("{why}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Bytes written to storage by this process's waited-for descendants so far.
fn children_written() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, which outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    u64::try_from(ru.ru_oublock).unwrap_or(0) * 512
}

fn debian_rootfs(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(d) = given {
        return Ok(d);
    }
    let script = workspace::repo_root().join("scripts/debian-rootfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} printed no directory", script.display()))
}

/// Size of a tree in MiB, as `du` counts it.
fn tree_mib(dir: &Path) -> String {
    Command::new("du")
        .args(["-sm"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

fn bench(runs: usize, debian: Option<PathBuf>) -> Result<(), String> {
    let runm = workspace::RUNM
        .find(&[Profile::Release, Profile::Debug])
        .map_err(|e| e.to_string())?;
    let kernel = workspace::guest_kernel().map_err(|e| e.to_string())?;
    let initrd = workspace::agent_initramfs().map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("runm-create-cost-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let busybox = work.path().join("busybox-rootfs");
    images::busybox_tree(&busybox, Applets::All).map_err(|e| e.to_string())?;
    let debian = debian_rootfs(debian)?;
    let stand_in = work.path().join("vm-stand-in");
    let mark = work.path().join("vm-started");
    fs::write(
        &stand_in,
        format!("#!/bin/sh\ndate +%s%N > '{}'\nexit 1\n", mark.display()),
    )
    .map_err(|e| e.to_string())?;
    fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let root = work.path().join("state");
    println!(
        "runm create, host side (to the start of the VM process), {runs} runs a case; \
         this host: {}",
        crate::host_kind()
    );
    println!(
        "root file systems: busybox {} MiB, Debian minimal {} MiB ({})",
        tree_mib(&busybox),
        tree_mib(&debian),
        debian.display()
    );
    let mut cases = Vec::new();
    for (name, tree) in [("busybox", &busybox), ("debian", &debian)] {
        for mode in ["virtiofs", "image"] {
            let bundle = work.path().join(format!("bundle-{name}-{mode}"));
            fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
            let spec = Command::new(&runm)
                .args(["spec", "--bundle"])
                .arg(&bundle)
                .status()
                .map_err(|e| e.to_string())?;
            if !spec.success() {
                return Err(format!("runm spec failed ({spec})"));
            }
            let path = bundle.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            // An absolute root.path outside the bundle, as Podman gives it.
            c["root"]["path"] = tree.display().to_string().into();
            c["process"]["terminal"] = false.into();
            c["annotations"] = serde_json::json!({"io.runm.rootfs": mode});
            fs::write(
                &path,
                serde_json::to_vec_pretty(&c).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let mut case = Case {
                rootfs: name,
                mode,
                ms: Vec::new(),
                written_mib: Vec::new(),
            };
            for i in 0..runs {
                let _ = fs::remove_file(&mark);
                let id = format!("cost-{name}-{mode}-{i}");
                let written_before = children_written();
                let t0 = now_ns();
                let out = Command::new(&runm)
                    .arg("--root")
                    .arg(&root)
                    .args(["--hypervisor", "qemu", "create", &id, "--bundle"])
                    .arg(&bundle)
                    .env("RUNM_QEMU", &stand_in)
                    .env("RUNM_KERNEL", &kernel)
                    .env("RUNM_INITRD", &initrd)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| e.to_string())?;
                let written = children_written().saturating_sub(written_before);
                let started: u128 = fs::read_to_string(&mark)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "{id}: the VM stand-in was not started; runm said: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                    })?;
                let ms = started.saturating_sub(t0) as f64 / 1e6;
                case.ms.push(ms);
                case.written_mib
                    .push(written as f64 / f64::from(1u32 << 20));
                eprintln!(
                    "{name} {mode} {}/{runs}: {ms:.1} ms, {:.1} MiB written",
                    i + 1,
                    written as f64 / f64::from(1u32 << 20)
                );
            }
            cases.push(case);
        }
    }
    let left = fs::read_dir(&root).map(|d| d.count()).unwrap_or(0);
    if left > 0 {
        return Err(format!(
            "{left} container directories were left under {}",
            root.display()
        ));
    }
    println!();
    println!("| root file system | reaches the guest as | host-side create, ms (median, min-max) | written, MiB (median) |");
    println!("| --- | --- | --- | --- |");
    for c in &cases {
        let (Some(t), Some(w)) = (stats::summarize(&c.ms), stats::summarize(&c.written_mib)) else {
            continue;
        };
        println!(
            "| {} | {} | {:.1} ({:.1}-{:.1}) | {:.1} |",
            c.rootfs,
            match c.mode {
                "virtiofs" => "virtio-fs share (default)",
                _ => "ext4 image copy",
            },
            t.median,
            t.min,
            t.max,
            w.median
        );
    }
    Ok(())
}
