#!/usr/bin/env bash
# The main job: set up, build the guest kernel, and boot it under runm-vmm on
# this host's KVM with a tiny busybox initramfs, showing the guest's console.
#
# On a real KVM host the guest's /init runs, prints, and resets the VM, and
# runm-vmm exits 0. On a PVM host (this project's development machines) the
# kernel boots to `Run /init` (slowly: about a minute, emulated) and the guest
# dies at its first system call: runm-vmm then reports the guest kernel panic.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
kernel="$(guest-kernel-config/build.sh --flavor guest)/vmlinux"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox echo "hello from the guest's user space: $(/bin/busybox uname -sr), $(/bin/busybox nproc) CPUs"
/bin/busybox reboot -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

vcpus=2
if [ -d /sys/module/kvm_pvm ]; then
    # 2-vCPU guests sometimes stall for good under PVM's emulation.
    vcpus=1
    echo "[demo] this host's KVM is PVM: 1 vCPU; expect one to two minutes to 'Run /init', then a panic at the guest's first system call" >&2
fi
echo "[demo] runm-vmm --kernel $kernel --initrd initrd.cpio --vcpus $vcpus --mem-mib 128" >&2
set +e
target/debug/runm-vmm --kernel "$kernel" --initrd "$work/initrd.cpio" --vcpus "$vcpus" --mem-mib 128 --log-level info
rc=$?
set -e
echo "[demo] runm-vmm exited $rc" >&2
exit $rc
