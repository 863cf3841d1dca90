#!/usr/bin/env bash
# The main job, shown: the same busybox container run by runc (namespaces and
# cgroups on this host's kernel) and by runm (its own microVM), each with what
# it printed and how long it took, with this host's kind and the backend runm
# chose named. Sets up first (scripts/setup.sh: Debian packages, the guest
# kernel, the build).
#
#   scripts/demo.sh              runc and runm side by side
#   scripts/demo.sh --vmm-boot   the guest kernel under runm-vmm alone, with a
#                                tiny busybox initramfs and the guest's console
#
# runm uses runm-vmm where /dev/kvm is real KVM, and QEMU (software emulation)
# where it is missing or PVM, on which guest user space cannot run. With
# --vmm-boot on real KVM the guest's /init prints and resets the VM; on a PVM
# host the kernel boots to `Run /init` (about a minute, emulated) and the guest
# dies at its first system call, which runm-vmm reports as a kernel panic.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=containers
case "${1:-}" in
    "") ;;
    --vmm-boot) mode=vmm-boot ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (--vmm-boot, --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "demo.sh: one argument at most" >&2; exit 2; }

say() { echo "[demo] $*" >&2; }

bash scripts/setup.sh
kernel="$(guest-kernel-config/build.sh --flavor guest 2>/dev/null | tail -n1)/vmlinux"

if [ -d /sys/module/kvm_pvm ]; then
    host_kind="PVM KVM: /dev/kvm is PVM (kvm_pvm), where guest user space cannot run"
elif [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    host_kind="real KVM"
elif [ -e /dev/kvm ]; then
    host_kind="no usable KVM: /dev/kvm cannot be opened"
else
    host_kind="no KVM: /dev/kvm is missing"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/runm-demo.XXXXXX")
runc_id=demo-runc-$$
runm_id=demo-runm-$$
cleanup() {
    if [ "$mode" = containers ]; then
        runc --root "$work/runc-root" delete --force "$runc_id" >/dev/null 2>&1 || true
        target/debug/runm --root "$work/runm-root" delete --force "$runm_id" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$mode" = vmm-boot ]; then
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
    say "host: $host_kind"
    if [ -d /sys/module/kvm_pvm ]; then
        # 2-vCPU guests sometimes stall for good under PVM's emulation.
        vcpus=1
        say "PVM: 1 vCPU; expect one to two minutes to 'Run /init', then a panic at the guest's first system call"
    fi
    say "runm-vmm --kernel $kernel --initrd initrd.cpio --vcpus $vcpus --mem-mib 128"
    set +e
    target/debug/runm-vmm --kernel "$kernel" --initrd "$work/initrd.cpio" --vcpus "$vcpus" --mem-mib 128 --log-level info
    rc=$?
    set -e
    say "runm-vmm exited $rc"
    exit $rc
fi

initrd=$(guest-agent/build-initramfs.sh 2>/dev/null | tail -n1)

# The bundle: a static busybox, its applets, and a script saying what the
# container sees of the machine it runs on.
bundle=$work/bundle
mkdir -p "$bundle"/rootfs/{bin,dev,proc,sys,tmp,etc}
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/:/bin/sh" > "$bundle/rootfs/etc/passwd"
cat > "$bundle/rootfs/hello.sh" <<'HELLO'
echo "hello from $(hostname): kernel $(uname -r), PID $$, $(nproc) CPU(s), $(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo) of RAM"
HELLO
cat > "$bundle/config.json" <<'CONFIG'
{
  "ociVersion": "1.2.0",
  "root": {"path": "rootfs", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/sh", "/hello.sh"],
    "env": ["PATH=/bin"],
    "cwd": "/",
    "noNewPrivileges": true
  },
  "hostname": "demo",
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
  }
}
CONFIG

# timed NAME COMMAND...: runs COMMAND with its output in $work/NAME.out and
# .err, sets `status` and `took` (seconds, two decimals).
timed() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s%N)
    set +e
    "$@" > "$work/$name.out" 2> "$work/$name.err" < /dev/null
    status=$?
    set -e
    t1=$(date +%s%N)
    took=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", ns / 1e9 }')
}

# show NAME: what the container printed, stdout then stderr.
show() {
    cat "$work/$1.out"
    if [ -s "$work/$1.err" ]; then
        echo "(stderr)"
        cat "$work/$1.err"
    fi
}

echo "host: $(uname -sr), $(nproc) CPUs, $host_kind"
echo "bundle: busybox $(/bin/busybox | head -n1 | awk '{print $2}'), /bin/sh /hello.sh"
echo

timed runc runc --root "$work/runc-root" run --bundle "$bundle" "$runc_id"
echo "== runc $(runc --version | head -n1 | awk '{print $3}'): the container's processes on this host's kernel"
echo "runc run: exit status $status after $took s; the container printed:"
show runc
runc_status=$status
echo

timed runm env RUNM_KERNEL="$kernel" RUNM_INITRD="$initrd" \
    target/debug/runm --root "$work/runm-root" --log "$work/runm.log" run --bundle "$bundle" "$runm_id"
# runm is quiet on success: which backend it chose (and why) is in its log.
backend=$(grep -o 'backend [^"]*' "$work/runm.log" | head -n1 || true)
case "$backend" in
    *"accelerator tcg"*) how="software emulation (QEMU TCG)" ;;
    *"backend runm-vmm"*) how="runm-vmm on KVM" ;;
    *"accelerator kvm"*) how="QEMU on KVM" ;;
    *) how="backend unknown (see the log below)" ;;
esac
echo "== runm: the same bundle in its own microVM, $how"
echo "runm chose: ${backend:-nothing logged}"
if [ "$status" -ne 0 ] && [ ! -s "$work/runm.out" ]; then
    echo "runm's log:"
    cat "$work/runm.log"
fi
echo "runm run: exit status $status after $took s; the container printed:"
show runm
[ "$runc_status" -eq 0 ] && [ "$status" -eq 0 ]
