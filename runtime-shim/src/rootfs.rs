//! The bundle's root file system as a block device for the guest, when the
//! bundle asks for one (`io.runm.rootfs=image`; by default the directory is
//! shared, see [`crate::share`]).
//!
//! Owns turning `root.path` into an ext4 image (`mkfs.ext4 -d`), one per
//! container at `<root>/<id>/rootfs.img`. The guest mounts that image, so
//! writes inside the container stay in the image and never reach the bundle
//! directory; the image goes away with `runm delete`. The copy costs time
//! and disk at every `create`, which is why it is not the default.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;
/// Room for the file system's own metadata and for the workload's writes.
const HEADROOM: u64 = 64 * MIB;
/// ext4 bytes per inode (`-i`): one inode per 16 KiB of image, like mke2fs's default.
const BYTES_PER_INODE: u64 = 16 * 1024;

/// Errors building the image.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Walking the root file system failed.
    #[error("cannot read root file system {path}: {source}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` is not installed or could not run.
    #[error("cannot run mkfs.ext4 (install e2fsprogs): {0}")]
    NoMkfs(#[source] io::Error),
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed to build {image} from {rootfs}: {stderr}")]
    Mkfs {
        /// The image.
        image: PathBuf,
        /// The source directory.
        rootfs: PathBuf,
        /// What it said.
        stderr: String,
    },
}

/// Bytes and inodes a directory tree uses (symlinks are not followed).
pub fn measure(dir: &Path) -> Result<(u64, u64), RootfsError> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let walk = |source| RootfsError::Walk {
            path: d.clone(),
            source,
        };
        for entry in fs::read_dir(&d).map_err(walk)? {
            let entry = entry.map_err(walk)?;
            let meta = entry.metadata().map_err(walk)?;
            inodes += 1;
            // Allocated blocks, not length: sparse files stay small, small
            // files still take a block.
            bytes += (meta.blocks() * 512).max(meta.len().min(4096));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Image size for `used` bytes: `used * 1.3 + 64 MiB`, rounded up to a MiB.
pub fn image_size(used: u64) -> u64 {
    let size = used.saturating_mul(13) / 10 + HEADROOM;
    size.div_ceil(MIB) * MIB
}

/// Inodes for an image of `size` bytes holding `files` entries: mke2fs's
/// default density, but never fewer than the tree needs plus room to grow.
pub fn inode_count(size: u64, files: u64) -> u64 {
    (size / BYTES_PER_INODE).max(files.saturating_mul(13) / 10 + 1024)
}

/// Builds `image` from the directory `rootfs`; returns the image size.
/// On failure no image is left behind.
pub fn build_image(rootfs: &Path, image: &Path) -> Result<u64, RootfsError> {
    let (used, files) = measure(rootfs)?;
    let size = image_size(used);
    let inodes = inode_count(size, files);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.arg("-q")
        .arg("-d")
        .arg(rootfs)
        .args(["-L", "runm-root", "-N", &inodes.to_string()])
        // No lazy init threads, no resize reservation: the image is used once, now.
        .args([
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-O",
            "^resize_inode",
        ])
        .arg(image)
        .arg(format!("{}k", size / 1024))
        .stdin(Stdio::null());
    // Only stdio: no descriptor runm inherited reaches mkfs.
    crate::sys::configure_child(&mut cmd, crate::sys::ChildSetup::default());
    let out = cmd.output().map_err(RootfsError::NoMkfs)?;
    if !out.status.success() {
        let _ = fs::remove_file(image);
        return Err(RootfsError::Mkfs {
            image: image.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_rule() {
        assert_eq!(image_size(0), 64 * MIB);
        assert_eq!(image_size(10 * MIB), 77 * MIB);
        assert_eq!(image_size(1), 65 * MIB, "rounded up");
        assert_eq!(inode_count(64 * MIB, 10), 4096);
        assert_eq!(inode_count(64 * MIB, 10_000), 14_024);
    }

    #[test]
    fn measures_a_tree() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("bin")).unwrap();
        fs::write(d.path().join("bin/a"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("bin/b")).unwrap();
        let (bytes, inodes) = measure(d.path()).unwrap();
        assert_eq!(inodes, 3);
        assert!(bytes >= 10_000, "{bytes}");
        assert!(measure(&d.path().join("none")).is_err());
    }

    #[test]
    fn builds_an_ext4_image_or_explains() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "x\n").unwrap();
        let img = d.path().join("rootfs.img");
        match build_image(&root, &img) {
            Ok(size) => {
                assert_eq!(fs::metadata(&img).unwrap().len(), size);
                // The ext4 superblock magic 0xEF53 at byte 1024 + 56.
                let data = fs::read(&img).unwrap();
                assert_eq!(&data[1080..1082], &[0x53, 0xef]);
            }
            Err(RootfsError::NoMkfs(_)) => {
                panic!("mkfs.ext4 (e2fsprogs) is needed to run runm and its tests")
            }
            Err(e) => panic!("{e}"),
        }
        let e = build_image(&d.path().join("missing"), &d.path().join("x.img")).unwrap_err();
        assert!(matches!(e, RootfsError::Walk { .. }));
        assert!(!d.path().join("x.img").exists());
    }
}
