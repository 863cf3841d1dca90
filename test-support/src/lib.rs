//! What runm's tests and benchmarks share, so that each exists once:
//!
//! - [`workspace`]: the workspace's root, its built binaries (`runm`,
//!   `runm-vmm`) and the guest images its build scripts make (the guest
//!   kernel, the agent's initramfs, virtiofsd), each overridable by runm's
//!   variables.
//! - [`cpio`]: a newc cpio writer for initramfs images.
//! - [`images`]: small guest images from the host's static busybox: a
//!   root tree, an initramfs, an ext4 disk, an OCI image archive.
//! - [`vmm`]: runm-vmm as a child process under test, and the guest whose
//!   init prints a marker.
//! - [`virtiofsd`]: a real virtiofsd serving a temporary directory.
//!
//! Test code only: production crates never depend on this one. What
//! production code owns stays there and tests use it from there (the clock
//! of runm-vmm's phase marks is `vm_spec::phase::monotonic_ns`, host KVM
//! detection is `vm_spec::HostKvm`).

pub mod cpio;
pub mod images;
pub mod virtiofsd;
pub mod vmm;
pub mod workspace;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use cpio::Cpio;
pub use virtiofsd::Virtiofsd;
pub use vmm::{ext4_root, initramfs, read_console, runm_vmm, Vmm, INIT_MARKER, RUST_PANIC};
pub use workspace::{agent_initramfs, guest_kernel, repo_root, virtiofsd};

/// Guest boots are slow under emulation and use both cores: a test that
/// boots a guest holds this for the whole boot.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// Waits for the other guest-booting tests of this test binary to finish
/// theirs; the guard lets the next one go (even after a failed test).
pub fn one_guest_at_a_time() -> MutexGuard<'static, ()> {
    ONE_GUEST.lock().unwrap_or_else(PoisonError::into_inner)
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
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }
}
