//! `runm features`: what runm supports, as JSON shaped like `runc features`
//! (OCI runtime-spec features.md).

use crate::error::RunmError;

/// The features document.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        // The hooks that run on the host; createContainer and startContainer
        // would run inside the container, which is in the guest.
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        // Options of the kernel file system mounts the guest agent performs.
        "mountOptions": [
            "async", "atime", "defaults", "dev", "diratime", "exec", "lazytime",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime",
            "nomand", "norelatime", "nostrictatime", "nosuid", "relatime", "ro",
            "rw", "strictatime", "sync"
        ],
        "linux": {
            // Every container has its own kernel: all of these are separate
            // from the host's by construction.
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": [],
            // linux.cgroupsPath holds the sandbox and VM processes; systemd
            // paths are mapped to the cgroup systemd would use.
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
            "netDevices": {"enabled": false}
        },
        "annotations": {
            "io.runm.version": env!("CARGO_PKG_VERSION"),
            "io.runm.isolation": "microvm",
            "io.runm.hypervisors": "runm-vmm,qemu",
            "io.runm.vm.memory_mib": "guest RAM in MiB (default: linux.resources.memory.limit, else 256; at least 128, at most the host's limit; allowed by default)",
            "io.runm.vm.vcpus": "vCPU count (default: ceil(cpu quota / period), else 1; at most the host's CPUs; allowed by default)",
            "io.runm.vm.host_overhead_mib": "host memory for the VM process beyond guest RAM, added to the host cgroup's limit (default by backend: 256 qemu/tcg, 128 qemu/kvm, 64 runm-vmm; only where runm's configuration enables it)",
            "io.runm.hypervisor": "auto, runm-vmm or qemu (only where runm's configuration enables it)"
        },
        "potentiallyUnsafeConfigAnnotations": []
    })
}

/// The command.
pub fn run() -> Result<i32, RunmError> {
    // Through oci-spec's type: its field order is the specification's.
    let text = serde_json::from_value::<oci_spec::runtime::Features>(features())
        .and_then(|f| serde_json::to_string_pretty(&f))
        .unwrap_or_default();
    println!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_oci_features() {
        let f: oci_spec::runtime::Features = serde_json::from_value(features()).unwrap();
        assert_eq!(f.oci_version_min(), "1.0.0");
    }
}
