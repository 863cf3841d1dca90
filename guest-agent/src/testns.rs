//! Test scaffolding: a private network namespace per test, so that nothing a
//! test configures can reach the machine's own interfaces.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Runs `f` on a thread moved into a network namespace of its own. Fails
/// the test (never skips) when no namespace can be made.
pub(crate) fn in_netns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let before = netns_inode();
            // SAFETY: unshare takes flags only; CLONE_NEWNET moves just this
            // thread into a fresh network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "cannot create a private network namespace for this test \
                     (unshare(CLONE_NEWNET): {}); the network tests need root \
                     and refuse to run in the machine's namespace",
                    io::Error::last_os_error()
                );
            }
            assert_ne!(
                before,
                netns_inode(),
                "unshare left the thread in its namespace"
            );
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat own network namespace")
        .ino()
}

/// Runs `ip ARGS` from the calling thread (so in its namespace), and returns
/// its output; fails the test if it fails.
pub(crate) fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS`, output ignored.
pub(crate) fn ip(args: &[&str]) {
    ip_output(args);
}
