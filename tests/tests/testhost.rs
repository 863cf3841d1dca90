//! runm-vmm's whole path, guest user space included, under ordinary KVM: the
//! test host is a Linux with kvm_amd booted under QEMU's software emulation
//! (`tests/testhost/run.sh`), and the tests run inside it (`tests/testhost/init.sh`).
//!
//! Builds nothing of the workspace: it tests the runm-vmm binary found at
//! `$RUNM_VMM`, else `target/{debug,release}/runm-vmm` (so `cargo build` first). The
//! guest and test host kernels and the image are built by the scripts on first
//! use (minutes the first time, cached after that).

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use test_support::{one_guest_at_a_time, repo_root, runm_vmm};

    /// The tests that must PASS inside the test host, in the order they run.
    const EXPECTED: &[&str] = &[
        "kvm-available",
        "runm-vmm-boots-userspace",
        "two-vcpus",
        "qemu-in-testhost-kvm",
        "disk-read-write",
        "disk-read-only",
        "vsock-both-ways",
        "vsock-jailed",
        "net-ping",
        "hwrng",
        "runm-oci-run-exit-status",
        "runm-oci-config",
        "runm-oci-lifecycle",
        "runm-oci-vmm-jail",
        "runm-oci-two-containers",
        "runm-oci-linux",
        "runm-oci-host-dirs",
        "runm-oci-network",
        "runm-oci-bridge",
        "runm-oci-pod",
        "runm-podman",
        "runm-cri-pod",
    ];

    struct Run {
        success: bool,
        stdout: String,
    }

    fn run_testhost(args: &[&str]) -> Run {
        let script = repo_root().join("tests/testhost/run.sh");
        let start = Instant::now();
        // stderr is inherited: the build and boot progress shows as it happens.
        let output = Command::new("bash")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        eprintln!(
            "run.sh {} -> {} in {:.0} s (software emulation)\n{stdout}",
            args.join(" "),
            output.status,
            start.elapsed().as_secs_f64()
        );
        Run {
            success: output.status.success(),
            stdout,
        }
    }

    #[test]
    fn testhost_suite_passes() {
        // Fails with the command that builds it when there is no binary.
        let vmm = runm_vmm();
        // A software-emulated machine with 2 vCPUs: one at a time.
        let _machine = one_guest_at_a_time();
        let vmm = vmm.to_str().expect("runm-vmm path is UTF-8");
        let run = run_testhost(&["--vmm", vmm]);

        let missing: Vec<&str> = EXPECTED
            .iter()
            .copied()
            .filter(|name| {
                !run.stdout
                    .lines()
                    .any(|line| line.starts_with(&format!("RESULT {name} PASS")))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "tests without a PASS line: {missing:?}\n{}",
            run.stdout
        );
        assert!(
            run.stdout
                .lines()
                .any(|line| line == format!("testhost: {} passed, 0 failed", EXPECTED.len())),
            "no summary line with {} passed, 0 failed:\n{}",
            EXPECTED.len(),
            run.stdout
        );
        assert!(run.success, "run.sh failed:\n{}", run.stdout);
    }

    /// The runner must turn a failed test into a failure: force one and look.
    #[test]
    fn testhost_runner_reports_a_failed_test() {
        // The same image as the suite's (cached); this test does not use runm-vmm.
        let vmm = runm_vmm();
        let vmm_arg = vmm.to_str().expect("runm-vmm path is UTF-8");
        let _machine = one_guest_at_a_time();
        let args = [
            "--vmm",
            vmm_arg,
            "--only",
            "kvm-available",
            "--force-fail",
            "kvm-available",
        ];
        let run = run_testhost(&args);

        assert!(
            !run.success,
            "run.sh exited 0 with a failed test:\n{}",
            run.stdout
        );
        assert!(
            run.stdout
                .lines()
                .any(|line| line.starts_with("RESULT kvm-available FAIL forced")),
            "no forced FAIL line:\n{}",
            run.stdout
        );
        assert!(
            run.stdout
                .lines()
                .any(|line| line == "testhost: 0 passed, 1 failed"),
            "no summary line with 0 passed, 1 failed:\n{}",
            run.stdout
        );
    }
}
