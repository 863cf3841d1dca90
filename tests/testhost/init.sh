#!/bin/busybox sh
# /init of the runm TEST HOST: a Linux with kvm_amd running under QEMU's
# software emulation (tests/testhost/run.sh), where /dev/kvm is ordinary KVM.
#
# It runs every test function below, in file order, and prints for each
#     RESULT <name> PASS <detail>     or     RESULT <name> FAIL <reason>
# then the summary line `testhost: N passed, M failed`, then resets the
# machine (QEMU runs with -no-reboot, so it exits). A test that cannot run
# FAILs with the reason; nothing is skipped.
#
# Adding a test: write one function `test_<name>() { ... }` (underscores in
# the function name become dashes in the test name). It runs in a subshell
# with $T set to its own scratch directory; it passes by returning 0 and
# fails with `fail "reason"`. `pass_detail "text"` adds a note to the PASS line.
#
# Kernel command line options (run.sh sets them):
#   runm.testhost.only=a,b         run only these tests
#   runm.testhost.force_fail=a,b   report these tests as failed (checks the runner)
#   runm.testhost.guest_timeout=S  seconds one inner guest may take (default 180)
#   runm.testhost.verbose=1        also show the inner guests' consoles as they run
#
# What is in this image (build-image.sh): /usr/bin/runm-vmm (when built),
# /guest/vmlinux (the guest kernel), /guest/initramfs.cpio (inner guest,
# its /init is guest-init.sh), /data/disk.ext4 (test data), and for the
# reference check /usr/bin/qemu-system-x86_64.

/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
# Kernel messages would interleave with the result lines: keep them in dmesg.
dmesg -n 1

VMM=/usr/bin/runm-vmm
GUEST_KERNEL=/guest/vmlinux
GUEST_INITRD=/guest/initramfs.cpio
# Keep the inner command line minimal: runm-vmm decides its own defaults.
GUEST_CMDLINE="console=ttyS0 reboot=k panic=1"
# QEMU's microvm has no i8042: its guest resets by triple fault.
QEMU_GUEST_CMDLINE="console=ttyS0 reboot=t panic=1"

only=
force_fail=
guest_timeout=180
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case "$arg" in
        runm.testhost.only=*) only=${arg#*=} ;;
        runm.testhost.force_fail=*) force_fail=${arg#*=} ;;
        runm.testhost.guest_timeout=*) guest_timeout=${arg#*=} ;;
        runm.testhost.verbose=*) verbose=${arg#*=} ;;
    esac
done

# --- helpers for tests --------------------------------------------------------

# fail REASON: end the current test (it runs in a subshell) as failed.
fail() {
    echo "$*" > "$T/reason"
    exit 1
}

# pass_detail TEXT: a note shown on the PASS line.
pass_detail() {
    echo "$*" > "$T/detail"
}

# has_vmm: fail the test unless runm-vmm is in the image and runs here.
has_vmm() {
    [ -x "$VMM" ] || fail "runm-vmm is not in the test host image (build it: cargo build -p vmm; or pass run.sh --vmm PATH)"
}

# guest_run LOG COMMAND...: run an inner VMM with a time limit, its console
# (stdout and stderr) into LOG; sets $status and $secs.
guest_run() {
    log=$1
    shift
    t0=$(date +%s)
    : > "$log"
    tail_pid=
    if [ "$verbose" = 1 ]; then
        tail -f "$log" &
        tail_pid=$!
    fi
    timeout -s KILL "$guest_timeout" "$@" > "$log" 2>&1 </dev/null
    status=$?
    [ -z "$tail_pid" ] || { sleep 1; kill "$tail_pid"; }
    secs=$(( $(date +%s) - t0 ))
    tr -d '\r' < "$log" > "$log.txt"
    if [ "$secs" -ge "$guest_timeout" ]; then
        show_tail "$log.txt"
        fail "timed out after ${guest_timeout} s: $*"
    fi
}

# run_vmm LOG VCPUS RUNM_TEST: boot the inner guest under runm-vmm.
# The one place that knows runm-vmm's command line.
run_vmm() {
    guest_run "$1" "$VMM" --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
        --cmdline "$GUEST_CMDLINE runm.test=$3" --mem-mib 256 --vcpus "$2" --console stdout
}

# console_has LOG TEXT: the (CR-stripped) console log has a line equal to TEXT.
console_has() {
    grep -qxF "$2" "$1.txt"
}

# console_value LOG KEY: the value of the last `KEY=value` line in the console log.
console_value() {
    sed -n "s/^$2=//p" "$1.txt" | tail -n 1
}

# show_tail FILE: the end of a log, indented, for the reader of a failure.
show_tail() {
    echo "--- last lines of $1"
    tail -n 25 "$1" | sed 's/^/  | /'
}

# expect_guest LOG: the guest's user space ran, said it was done, and the VMM exited 0.
expect_guest() {
    if ! console_has "$1" RUNM-GUEST-USERSPACE-OK; then
        show_tail "$1.txt"
        fail "no RUNM-GUEST-USERSPACE-OK on the guest console (exit status $status, ${secs} s)"
    fi
    if ! console_has "$1" RUNM-GUEST-DONE; then
        show_tail "$1.txt"
        fail "guest did not finish its test (exit status $status, ${secs} s)"
    fi
    if [ "$status" -ne 0 ]; then
        show_tail "$1.txt"
        fail "VMM exited with status $status after the guest reset (expected 0)"
    fi
}

# --- tests, run in this order -----------------------------------------------

test_kvm_available() {
    if [ ! -e /dev/kvm ]; then
        dmesg | grep -i kvm
        fail "/dev/kvm does not exist (kvm_amd did not load: see the dmesg lines above)"
    fi
    ( exec 3<>/dev/kvm ) 2>"$T/err" || fail "/dev/kvm does not open read-write: $(cat "$T/err")"
    # KVM on a host kernel without a TSC frequency starts guests that hang silently.
    if dmesg | grep -q 'could not calculate TSC khz'; then
        fail "the test host kernel does not know its TSC frequency (run.sh passes tsc_early_khz)"
    fi
    pass_detail "$(dmesg | grep -o 'kvm_amd: Nested Paging enabled' | head -n 1)"
}

test_runm_vmm_boots_userspace() {
    has_vmm
    run_vmm "$T/console" 1 boot
    expect_guest "$T/console"
    pass_detail "${secs} s"
}

test_two_vcpus() {
    has_vmm
    run_vmm "$T/console" 2 smp
    expect_guest "$T/console"
    nproc=$(console_value "$T/console" RUNM-GUEST-NPROC)
    cpus=$(console_value "$T/console" RUNM-GUEST-CPUINFO)
    if [ "$nproc" != 2 ] || [ "$cpus" != 2 ]; then
        fail "guest sees nproc=$nproc, /proc/cpuinfo processors=$cpus (expected 2 and 2)"
    fi
    pass_detail "${secs} s"
}

# Reference check of the test host itself: QEMU with KVM (kvm_amd) boots the
# same guest kernel and initramfs to user space with 2 vCPUs. It tells a broken
# test host apart from a broken runm-vmm. Present only when the image holds QEMU.
test_qemu_in_testhost_kvm() {
    command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is not in the image (built with --no-qemu)"
    guest_run "$T/console" qemu-system-x86_64 -M microvm -enable-kvm -cpu host -m 256 -smp 2 \
        -no-user-config -nodefaults -display none -serial stdio -no-reboot \
        -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$QEMU_GUEST_CMDLINE runm.test=smp"
    expect_guest "$T/console"
    nproc=$(console_value "$T/console" RUNM-GUEST-NPROC)
    [ "$nproc" = 2 ] || fail "guest under QEMU/KVM sees nproc=$nproc (expected 2)"
    pass_detail "${secs} s"
}

# --- runner --------------------------------------------------------------------

listed() { # listed NAME LIST: NAME is in the comma-separated LIST
    case ",$2," in *",$1,"*) return 0 ;; esac
    return 1
}

echo "testhost: kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB," \
    "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
dmesg | grep -i -e 'kvm[_:]' -e svm | sed 's/^/testhost: dmesg: /'
passed=0
failed=0
tests=$(sed -n 's/^\(test_[a-z0-9_]*\)() {$/\1/p' /init)
for fn in $tests; do
    name=$(echo "${fn#test_}" | tr _ -)
    if [ -n "$only" ] && ! listed "$name" "$only"; then
        continue
    fi
    T=/tmp/$name
    mkdir -p "$T"
    echo "=== $name"
    if listed "$name" "$force_fail"; then
        echo "forced to fail by runm.testhost.force_fail" > "$T/reason"
        ok=1
    else
        ( "$fn" )
        ok=$?
    fi
    if [ "$ok" -eq 0 ]; then
        passed=$((passed + 1))
        echo "RESULT $name PASS $(cat "$T/detail" 2>/dev/null)"
    else
        failed=$((failed + 1))
        reason=$(cat "$T/reason" 2>/dev/null)
        echo "RESULT $name FAIL ${reason:-exited with status $ok}"
    fi
done
echo "testhost: $passed passed, $failed failed"
sync
# No ACPI in the test host kernel, so poweroff would only halt: reset instead;
# QEMU runs with -no-reboot and exits.
reboot -f
