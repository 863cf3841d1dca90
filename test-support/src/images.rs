//! Small guest images built from the host's static busybox: a busybox
//! tree (a bundle's root file system, or the contents of a disk), an
//! initramfs with an `/init` script, an ext4 image of a tree, and an OCI
//! image archive for containerd (no registry).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Cpio;

/// Where Debian's busybox-static installs busybox (first) and where other
/// systems may have it.
const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Why an image cannot be built.
#[derive(thiserror::Error)]
pub enum ImageError {
    /// No busybox on the host.
    #[error("no busybox at {BUSYBOX_PATHS:?}: install busybox-static")]
    NoBusybox,
    /// Busybox is there but cannot serve a guest.
    #[error("{} is not a static binary: install busybox-static", path.display())]
    NotStatic {
        /// The busybox found.
        path: PathBuf,
    },
    /// Reading or writing a file of the image.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A tool the image needs could not be run or failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its error or its stderr.
        detail: String,
    },
}

/// Shown as its message, so that `expect` in a test prints what is wrong.
impl std::fmt::Debug for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What this module's functions return.
pub type Result<T> = std::result::Result<T, ImageError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The host's busybox, checked to be a static ELF binary: a guest has no
/// shared libraries to give it.
pub fn busybox() -> Result<PathBuf> {
    let path = BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(ImageError::NoBusybox)?;
    let data = fs::read(&path).map_err(io(&path))?;
    if !elf_is_static(&data) {
        return Err(ImageError::NotStatic { path });
    }
    Ok(path)
}

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

/// Which busybox applets a tree links in `/bin`.
#[derive(Debug, Clone, Copy)]
pub enum Applets<'a> {
    /// Every applet busybox has (`busybox --list`).
    All,
    /// Only these.
    Only(&'a [&'a str]),
}

/// The skeleton of a root file system at `root`: the usual mount points
/// (`/tmp` world-writable) and an `/etc/passwd` with root.
pub fn root_tree(root: &Path) -> Result<()> {
    for d in ["bin", "dev", "proc", "sys", "etc", "root", "tmp"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    let passwd = root.join("etc/passwd");
    fs::write(&passwd, "root:x:0:0:root:/:/bin/sh\n").map_err(io(&passwd))
}

/// A [`root_tree`] with the static busybox as `/bin/busybox` and
/// `applets` as symbolic links beside it.
pub fn busybox_tree(root: &Path, applets: Applets<'_>) -> Result<()> {
    root_tree(root)?;
    let bb = busybox()?;
    let dest = root.join("bin/busybox");
    fs::copy(&bb, &dest).map_err(io(&dest))?;
    let listed;
    let names: Vec<&str> = match applets {
        Applets::Only(names) => names.to_vec(),
        Applets::All => {
            let out = Command::new(&bb).arg("--list").output().map_err(io(&bb))?;
            listed = String::from_utf8_lossy(&out.stdout).into_owned();
            listed.lines().collect()
        }
    };
    for applet in names
        .into_iter()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = root.join("bin").join(applet);
        match symlink("busybox", &link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(ImageError::Io {
                    path: link,
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// An initramfs holding the static busybox as `/bin/busybox`, the mount
/// points, `/dev/console` and `init_script` as `/init`: the smallest guest
/// user space there is.
pub fn busybox_initramfs(init_script: &str) -> Result<Vec<u8>> {
    let bb = busybox()?;
    let bin = fs::read(&bb).map_err(io(&bb))?;
    let mut cpio = Cpio::new();
    cpio.dir("bin", 0o755)
        .dir("dev", 0o755)
        .dir("proc", 0o755)
        .dir("sys", 0o755)
        .char_dev("dev/console", 5, 1)
        .file("bin/busybox", 0o755, &bin)
        .file("init", 0o755, init_script.as_bytes());
    Ok(cpio.finish())
}

/// An ext4 image `img` of `size` (mkfs's notation: `16M`) holding `tree`,
/// owned by root whoever builds it, labelled `label`.
pub fn ext4_image(tree: &Path, img: &Path, size: &str, label: &str) -> Result<()> {
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d"])
        .arg(tree)
        .arg(img)
        .arg(size);
    run_tool("mkfs.ext4", " (install e2fsprogs)", &mut mkfs).map(drop)
}

/// Runs `cmd` (the program `tool`) to its end: its output, or the error
/// naming the tool with why it could not start (plus `hint`) or its
/// stderr when it failed.
fn run_tool(tool: &'static str, hint: &str, cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|e| ImageError::Tool {
        tool,
        detail: format!("{e}{hint}"),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            tool,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// `tar` of the tree `dir` into `dest`, every entry owned by root.
fn tar_tree(dir: &Path, dest: &Path) -> Result<()> {
    let mut tar = Command::new("tar");
    tar.args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(dest)
        .arg(".");
    run_tool("tar", "", &mut tar).map(drop)
}

/// A tar archive `out` of a busybox tree (all applets): what `podman
/// import` and `docker import` take to make a local image without a
/// registry. The tree is built in `scratch` (which must not exist yet).
pub fn busybox_tar(scratch: &Path, out: &Path) -> Result<()> {
    busybox_tree(scratch, Applets::All)?;
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(scratch).arg("-cf").arg(out).arg(".");
    run_tool("tar", "", &mut tar).map(drop)
}

/// One image of an [`oci_archive`]: its name (what `ctr images import`
/// tags it as) and the command its configuration runs.
pub struct OciImage<'a> {
    /// `registry/name:tag`, e.g. `localhost/busybox:test`.
    pub name: &'a str,
    /// The configuration's `Cmd`.
    pub cmd: &'a [&'a str],
}

/// The `sha256:<hex>` digest and size of a file (`sha256sum`: busybox has
/// it too, so this also works in the test host image).
fn blob_digest(path: &Path) -> Result<(String, u64)> {
    let out = run_tool("sha256sum", "", Command::new("sha256sum").arg(path))?;
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if hex.len() != 64 {
        return Err(ImageError::Tool {
            tool: "sha256sum",
            detail: format!(
                "printed no digest: {:?}",
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    let size = fs::metadata(path).map_err(io(path))?.len();
    Ok((format!("sha256:{hex}"), size))
}

/// An OCI image archive `out` (a tar of an OCI image layout: `oci-layout`,
/// `index.json`, `blobs/sha256/...`) holding `images`, all with the same
/// single uncompressed layer, a busybox tree with every applet, each with
/// its own configuration (`PATH=/bin` and its `Cmd`). `ctr images import`
/// takes it without a registry; several images share the one layer (a
/// pause image and a busybox image, say). Built in `scratch` (which must
/// not exist yet).
pub fn oci_archive(scratch: &Path, out: &Path, images: &[OciImage<'_>]) -> Result<()> {
    let root = scratch.join("rootfs");
    busybox_tree(&root, Applets::All)?;
    let blobs = scratch.join("layout/blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let add_blob = |path: &Path| -> Result<(String, u64)> {
        let (digest, size) = blob_digest(path)?;
        let dest = blobs.join(digest.trim_start_matches("sha256:"));
        fs::copy(path, &dest).map_err(io(&dest))?;
        Ok((digest, size))
    };
    let layer = scratch.join("layer.tar");
    tar_tree(&root, &layer)?;
    let (layer_digest, layer_size) = add_blob(&layer)?;
    let mut manifests = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let write_blob = |name: String, v: serde_json::Value| -> Result<(String, u64)> {
            let p = scratch.join(name);
            fs::write(&p, v.to_string()).map_err(io(&p))?;
            add_blob(&p)
        };
        let (config_digest, config_size) = write_blob(
            format!("config.{i}.json"),
            serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/bin"], "Cmd": image.cmd},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }),
        )?;
        let (manifest_digest, manifest_size) = write_blob(
            format!("manifest.{i}.json"),
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest, "size": layer_size}],
            }),
        )?;
        let tag = image.name.rsplit_once(':').map_or("latest", |(_, t)| t);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"io.containerd.image.name": image.name,
                            "org.opencontainers.image.ref.name": tag},
        }));
    }
    let layout = scratch.join("layout");
    let index = layout.join("index.json");
    let v = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(&index, v.to_string()).map_err(io(&index))?;
    let marker = layout.join("oci-layout");
    fs::write(&marker, r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&marker))?;
    tar_tree(&layout, out)
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
        assert!(elf_is_static(&fs::read(busybox().unwrap()).unwrap()));
    }

    #[test]
    fn a_busybox_tree_links_the_applets_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        busybox_tree(dir.path(), Applets::Only(&["sh", "echo"])).unwrap();
        for p in ["bin/busybox", "bin/sh", "bin/echo", "proc", "dev", "tmp"] {
            assert!(dir.path().join(p).symlink_metadata().is_ok(), "{p}");
        }
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let tmp = fs::metadata(dir.path().join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        // Again over the same tree: nothing to do, no error.
        busybox_tree(dir.path(), Applets::Only(&["sh"])).unwrap();
    }

    #[test]
    fn a_busybox_initramfs_has_init_and_a_console() {
        let a = busybox_initramfs("#!/bin/busybox sh\n").unwrap();
        let text = String::from_utf8_lossy(&a);
        for name in ["bin/busybox\0", "dev/console\0", "init\0", "TRAILER!!!"] {
            assert!(text.contains(name), "{name}");
        }
    }
}
