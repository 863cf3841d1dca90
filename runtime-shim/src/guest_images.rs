//! Where an installed runm finds its guest kernel and agent initramfs when
//! `$RUNM_KERNEL` and `$RUNM_INITRD` do not name them (the variables come
//! first; [`crate::backend::find_guest_images`] reads them).
//!
//! `scripts/install.sh` puts both in `/usr/share/runm`, or, with
//! `--prefix P`, in `P/share/runm` beside `P/bin/runm`: runm looks in the
//! `share/runm` next to its own `bin` directory first, then in
//! `/usr/share/runm`.

use std::path::{Path, PathBuf};

/// The system-wide location, and the one an error names when nothing is
/// installed.
pub const SYSTEM_DIR: &str = "/usr/share/runm";

/// The directories searched, in order: `<dir of runm>/../share/runm` (an
/// install under a prefix), then [`SYSTEM_DIR`].
pub fn search_dirs(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(prefix) = exe.and_then(Path::parent).and_then(Path::parent) {
        dirs.push(prefix.join("share/runm"));
    }
    let system = PathBuf::from(SYSTEM_DIR);
    if !dirs.contains(&system) {
        dirs.push(system);
    }
    dirs
}

/// `file` in the first of `dirs` that has it, else in [`SYSTEM_DIR`].
fn first_in(file: &str, dirs: &[PathBuf]) -> PathBuf {
    dirs.iter()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new(SYSTEM_DIR).join(file))
}

/// Where the installed `file` (`vmlinux`, `agent.cpio`) is, for this runm
/// executable; [`SYSTEM_DIR`]`/file` when it is nowhere.
pub fn installed(file: &str) -> PathBuf {
    let exe = std::env::current_exe().ok();
    first_in(file, &search_dirs(exe.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_of_runm_comes_before_the_system_dir() {
        assert_eq!(
            search_dirs(Some(Path::new("/opt/runm/bin/runm"))),
            vec![
                PathBuf::from("/opt/runm/share/runm"),
                PathBuf::from("/usr/share/runm")
            ]
        );
        assert_eq!(
            search_dirs(Some(Path::new("/usr/bin/runm"))),
            vec![PathBuf::from("/usr/share/runm")],
            "no directory twice"
        );
        assert_eq!(search_dirs(None), vec![PathBuf::from("/usr/share/runm")]);
    }

    #[test]
    fn the_first_dir_holding_the_file_wins() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("vmlinux"), "k").unwrap();
        let dirs = [a.clone(), b.clone()];
        assert_eq!(first_in("vmlinux", &dirs), b.join("vmlinux"));
        std::fs::write(a.join("vmlinux"), "k").unwrap();
        assert_eq!(first_in("vmlinux", &dirs), a.join("vmlinux"));
        // A directory of that name is not the file.
        std::fs::create_dir_all(a.join("agent.cpio")).unwrap();
        assert_eq!(
            first_in("agent.cpio", &dirs),
            Path::new("/usr/share/runm/agent.cpio")
        );
    }
}
