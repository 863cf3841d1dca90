//! runm with its own VMM (`--hypervisor runm-vmm`), as far as this host's
//! KVM lets it go:
//! - real KVM: a busybox bundle runs end to end;
//! - PVM KVM (guest user space cannot run): runm-vmm accepts the `vm.json`
//!   runm writes and boots the guest kernel; the agent never answers, and
//!   runm tears everything down with a clear error;
//! - no KVM: runm refuses with a clear error.
//!
//! Uses the runm-vmm binary beside runm (`cargo build --workspace --bins`)
//! or `$RUNM_VMM`, the guest kernel and agent initramfs as the QEMU tests do.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::{bundle, guest_images, Runm};

    #[test]
    fn runm_vmm_backend_runs_or_explains() {
        let (kernel, initrd) = guest_images();
        let kvm_usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let pvm = vm_spec::HostKvm::detect().is_pvm();
        // Under PVM the guest kernel alone needs tens of seconds: stop waiting
        // well before the agent could ever answer.
        let boot = if pvm { "15" } else { "120" };
        let r = Runm::new()
            .with_env("RUNM_KERNEL", &kernel)
            .with_env("RUNM_INITRD", &initrd)
            .with_env("RUNM_BOOT_TIMEOUT", boot);
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &["sh", "-c", "echo hello from runm-vmm; exit 3"],
            true,
            |_| {},
        );
        let log = r.tmp.path().join("runm.log");
        let out = r.run(&[
            "--log",
            log.to_str().unwrap(),
            "--hypervisor",
            "runm-vmm",
            "run",
            "v1",
            "--bundle",
            b.to_str().unwrap(),
        ]);
        assert!(
            !out.stderr.contains("runm-vmm not found"),
            "build runm-vmm first (cargo build --workspace --bins): {out:?}"
        );
        if !kvm_usable {
            out.fails_with("runm-vmm needs KVM");
        } else if pvm {
            // The backend notice (in the log, not on stderr) warns of it.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(text.contains("guest user space will not run"), "{text}");
            // Not "the VM exited": runm-vmm took the config and was booting.
            out.fails_with("cannot connect to the guest agent: timed out");
        } else {
            assert_eq!(out.code, 3, "{out:?}");
            assert_eq!(out.stdout, "hello from runm-vmm\n");
        }
        r.assert_clean();
    }
}
