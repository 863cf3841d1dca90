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
#   runm.testhost.test_timeout=S   seconds one test may take (default guest_timeout + 120);
#                                  past it, it fails with the end of its logs, what it
#                                  started is killed, and the run goes on
#   runm.testhost.verbose=1        also show the inner guests' consoles as they run
#
# What is in this image (build-image.sh): /usr/bin/runm-vmm (when built),
# /guest/vmlinux (the guest kernel), /guest/initramfs.cpio (inner guest,
# its /init is guest-init.sh), /data/disk.ext4 (test data: /runm-test-data.txt
# holds RUNM-DISK-DATA-OK), /usr/sbin/debugfs, /usr/bin/vsock-echo (also in the
# inner guest), /usr/bin/runm with /usr/sbin/mkfs.ext4, /guest/agent.cpio and
# /bundles/busybox (runm's OCI test), /usr/share/runm/{vmlinux,agent.cpio}
# (links: runm's installed guest images), /usr/bin/podman and /usr/bin/conmon
# with /etc/containers/{containers.conf,policy.json}, containerd,
# containerd-shim-runc-v2 and ctr with /etc/containerd/runm-runtime.toml (the
# README's runtime entry), the CNI plugins bridge, host-local and loopback in
# /usr/lib/cni, /usr/bin/cri-pod, and for the reference check
# /usr/bin/qemu-system-x86_64.

# A real host does not run from its initramfs, whose root (rootfs) no
# process can pivot_root away from, as virtiofsd's sandbox does: move into a
# tmpfs first, as an initramfs hands over to the real root.
if [ "$$" = 1 ] && [ ! -e /.runm-testhost-root ]; then
    /bin/busybox mkdir -p /newroot
    /bin/busybox mount -t tmpfs -o mode=0755 root /newroot
    for f in /*; do
        [ "$f" = /newroot ] || /bin/busybox cp -a "$f" /newroot/
    done
    /bin/busybox touch /newroot/.runm-testhost-root
    exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
# POSIX shared memory, as on any host (Podman keeps its locks there).
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 shm /dev/shm
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
test_timeout=
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case "$arg" in
        runm.testhost.only=*) only=${arg#*=} ;;
        runm.testhost.force_fail=*) force_fail=${arg#*=} ;;
        runm.testhost.guest_timeout=*) guest_timeout=${arg#*=} ;;
        runm.testhost.test_timeout=*) test_timeout=${arg#*=} ;;
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

# run_vmm LOG VCPUS RUNM_TEST [VMM_ARGS...]: boot the inner guest under runm-vmm,
# with VMM_ARGS (devices) added; $extra_cmdline, when set, goes on the guest's
# kernel command line. The one place that knows runm-vmm's command line.
run_vmm() {
    _log=$1 _vcpus=$2 _test=$3
    shift 3
    guest_run "$_log" "$VMM" --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
        --cmdline "$GUEST_CMDLINE${extra_cmdline:+ $extra_cmdline} runm.test=$_test" \
        --mem-mib 256 --vcpus "$_vcpus" --console stdout "$@"
}

# run_vmm_bg LOG VCPUS RUNM_TEST [VMM_ARGS...]: run_vmm in the background, for
# tests that talk to the guest while it runs; wait_vmm collects it.
run_vmm_bg() {
    rm -f "$1.status"
    (
        run_vmm "$@"
        echo "$status $secs" > "$1.status"
    ) &
    vmm_bg_pid=$!
}

# wait_vmm LOG: wait for run_vmm_bg; sets $status and $secs like run_vmm.
wait_vmm() {
    wait "$vmm_bg_pid"
    [ -f "$1.status" ] || fail "$(cat "$T/reason" 2>/dev/null || echo "the background VMM run left no status")"
    read -r status secs < "$1.status"
}

# wait_console LOG TEXT SECS: wait until the console has the line TEXT; 1 if it
# did not come within SECS seconds or the VMM ended first.
wait_console() {
    _i=0
    while [ "$_i" -lt "$3" ]; do
        tr -d '\r' < "$1" 2>/dev/null | grep -qxF "$2" && return 0
        kill -0 "$vmm_bg_pid" 2>/dev/null || { tr -d '\r' < "$1" | grep -qxF "$2"; return; }
        sleep 1
        _i=$((_i + 1))
    done
    return 1
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

# virtio-blk, read-write: the guest reads the image's test file, writes a new
# one; the image, read here with debugfs after runm-vmm exited, holds it.
test_disk_read_write() {
    has_vmm
    command -v debugfs >/dev/null || fail "debugfs is not in the image"
    cp /data/disk.ext4 "$T/disk.ext4"
    run_vmm "$T/console" 1 disk-rw --disk "$T/disk.ext4"
    expect_guest "$T/console"
    read_back=$(console_value "$T/console" RUNM-GUEST-DISK-READ)
    [ "$read_back" = RUNM-DISK-DATA-OK ] || { show_tail "$T/console.txt"; fail "guest read '$read_back' from /dev/vda (expected RUNM-DISK-DATA-OK)"; }
    wrote=$(console_value "$T/console" RUNM-GUEST-DISK-WRITE)
    [ "$wrote" = ok ] || { show_tail "$T/console.txt"; fail "guest write to /dev/vda: '$wrote' (expected ok)"; }
    landed=$(debugfs -R 'cat /runm-written.txt' "$T/disk.ext4" 2>"$T/debugfs.err")
    [ "$landed" = RUNM-DISK-WRITTEN-BY-GUEST ] ||
        fail "the image holds '$landed' in /runm-written.txt after the run (expected RUNM-DISK-WRITTEN-BY-GUEST; debugfs: $(tr '\n' ' ' < "$T/debugfs.err"))"
    pass_detail "${secs} s"
}

# virtio-blk, read-only: the guest sees a read-only disk, can mount it read-only
# and read it, every write fails, and the image is unchanged.
test_disk_read_only() {
    has_vmm
    cp /data/disk.ext4 "$T/disk.ext4"
    before=$(sha256sum < "$T/disk.ext4")
    run_vmm "$T/console" 1 disk-ro --disk "$T/disk.ext4,ro"
    expect_guest "$T/console"
    after=$(sha256sum < "$T/disk.ext4")
    ro=$(console_value "$T/console" RUNM-GUEST-DISK-RO)
    read_back=$(console_value "$T/console" RUNM-GUEST-DISK-READ)
    mount_rw=$(console_value "$T/console" RUNM-GUEST-DISK-MOUNT-RW)
    dd_write=$(console_value "$T/console" RUNM-GUEST-DISK-DD-WRITE)
    forced=$(console_value "$T/console" RUNM-GUEST-DISK-FORCED-WRITE)
    file_write=$(console_value "$T/console" RUNM-GUEST-DISK-FILE-WRITE)
    # A rw mount is refused, or (busybox mount retries read-only) it ends up ro and a file write fails.
    case "$mount_rw/$file_write" in
        failed/|mounted-ro/failed) ;;
        *) mount_rw="$mount_rw, file write '$file_write'" ;;
    esac
    if [ "$ro" != 1 ] || [ "$read_back" != RUNM-DISK-DATA-OK ] || { [ "$mount_rw" != failed ] && [ "$mount_rw" != mounted-ro ]; } ||
        [ "$dd_write" != failed ] || [ "$forced" != failed ]; then
        show_tail "$T/console.txt"
        fail "guest: /sys/block/vda/ro=$ro, read '$read_back', mount rw: $mount_rw, dd write $dd_write, write after blockdev --setrw $forced (expected 1, RUNM-DISK-DATA-OK, failed or mounted-ro, failed, failed)"
    fi
    [ "$before" = "$after" ] || fail "the read-only image changed during the run"
    pass_detail "${secs} s, mount -o rw: $mount_rw"
}

# virtio-vsock both ways: the guest connects to host port 5000 (the socket
# <UDS>_5000 here), and this side reaches the guest's listener on port 6000
# through the UDS with `CONNECT 6000`.
test_vsock_both_ways() {
    has_vmm
    command -v vsock-echo >/dev/null || fail "vsock-echo is not in the image"
    uds=$T/vsock.sock
    vsock-echo unix-listen "${uds}_5000" > "$T/from-guest" 2>"$T/listen.err" </dev/null &
    listener=$!
    run_vmm_bg "$T/console" 1 vsock --vsock "3,$uds"
    if wait_console "$T/console" RUNM-GUEST-VSOCK-LISTENING 120; then
        echo RUNM-VSOCK-HOST-TO-GUEST | vsock-echo unix-connect "$uds" 6000 > "$T/h2g.out" 2>"$T/h2g.err"
        h2g=$?
    else
        h2g="guest never listened"
    fi
    wait_vmm "$T/console"
    kill "$listener" 2>/dev/null
    expect_guest "$T/console"
    g2h=$(cat "$T/from-guest")
    rx=$(console_value "$T/console" RUNM-GUEST-VSOCK-RX)
    if [ "$g2h" != RUNM-VSOCK-GUEST-TO-HOST ] || [ "$rx" != RUNM-VSOCK-HOST-TO-GUEST ]; then
        show_tail "$T/console.txt"
        fail "guest->host: '$g2h' (expected RUNM-VSOCK-GUEST-TO-HOST; listener: $(cat "$T/listen.err")); host->guest: guest got '$rx' (expected RUNM-VSOCK-HOST-TO-GUEST; connect status $h2g, reply $(tr '\n' ' ' < "$T/h2g.err"))"
    fi
    pass_detail "${secs} s, reply '$(head -n 1 "$T/h2g.err")'"
}

# The jail (runm-vmm --jail-*): the vsock round trip of vsock-both-ways with
# the VMM jailed as uid 1000: read from /proc while the guest runs, it has no
# capabilities, no_new_privs, a seccomp filter on every thread, its own mount
# and PID namespaces, and a root holding only the way to its socket directory.
test_vsock_jailed() {
    has_vmm
    command -v vsock-echo >/dev/null || fail "vsock-echo is not in the image"
    mkdir -p "$T/jail" "$T/vs"
    # The jailed VMM connects to and removes sockets in its directory.
    chown 1000:1000 "$T/vs"
    uds=$T/vs/vsock.sock
    vsock-echo unix-listen "${uds}_5000" > "$T/from-guest" 2>"$T/listen.err" </dev/null &
    listener=$!
    _i=0
    while [ ! -S "${uds}_5000" ] && [ "$_i" -lt 20 ]; do sleep 1; _i=$((_i + 1)); done
    chmod 666 "${uds}_5000" || fail "the host listener ${uds}_5000 did not appear"
    run_vmm_bg "$T/console" 1 vsock --vsock "3,$uds" \
        --jail-root "$T/jail" --jail-uid 1000 --jail-gid 1000
    jailed=""
    if wait_console "$T/console" RUNM-GUEST-VSOCK-LISTENING 120; then
        for s in /proc/[0-9]*/status; do
            if grep -q '^Name:.*runm-vmm' "$s" && grep -q '^Uid:.1000' "$s"; then
                jailed=${s%/status}
            fi
        done
        if [ -n "$jailed" ]; then
            grep -E '^(Uid|Gid|CapPrm|CapEff|CapBnd|NoNewPrivs|NSpid)' "$jailed/status" > "$T/jailed.status"
            for t in "$jailed"/task/*; do
                echo "$(cat "$t/comm") $(sed -n 's/^Seccomp:.//p' "$t/status")"
            done > "$T/jailed.threads"
            readlink "$jailed/ns/mnt" > "$T/jailed.mnt"
            ls -A "$jailed/root" > "$T/jailed.root"
        fi
        echo RUNM-VSOCK-HOST-TO-GUEST | vsock-echo unix-connect "$uds" 6000 > "$T/h2g.out" 2>"$T/h2g.err"
        h2g=$?
    else
        h2g="guest never listened"
    fi
    wait_vmm "$T/console"
    kill "$listener" 2>/dev/null
    expect_guest "$T/console"
    [ -n "$jailed" ] || fail "no runm-vmm process ran as uid 1000 while the guest ran"
    grep -q "^Uid:.1000.1000.1000.1000" "$T/jailed.status" || fail "ids: $(tr '\n' ' ' < "$T/jailed.status")"
    for cap in CapPrm CapEff CapBnd; do
        grep -q "^$cap:.0000000000000000" "$T/jailed.status" || fail "$cap is not empty: $(tr '\n' ' ' < "$T/jailed.status")"
    done
    grep -q '^NoNewPrivs:.1' "$T/jailed.status" || fail "no_new_privs is not set"
    grep -q '^NSpid:.[0-9]*.1$' "$T/jailed.status" || fail "not PID 1 of its own PID namespace: $(grep NSpid "$T/jailed.status")"
    unfiltered=$(grep -v '^kvm-' "$T/jailed.threads" | grep -v ' 2$')
    [ -z "$unfiltered" ] || fail "threads without a seccomp filter: $unfiltered"
    grep -q '^vcpu0 2$' "$T/jailed.threads" && grep -q '^event-loop 2$' "$T/jailed.threads" ||
        fail "threads: $(tr '\n' ' ' < "$T/jailed.threads")"
    [ "$(cat "$T/jailed.mnt")" != "$(readlink /proc/self/ns/mnt)" ] || fail "it shares this mount namespace"
    [ "$(cat "$T/jailed.root")" = tmp ] || fail "its root holds '$(tr '\n' ' ' < "$T/jailed.root")', expected only tmp (the way to its sockets)"
    [ -z "$(ls -A "$T/jail")" ] || fail "the jail directory is not empty afterwards"
    g2h=$(cat "$T/from-guest")
    rx=$(console_value "$T/console" RUNM-GUEST-VSOCK-RX)
    if [ "$g2h" != RUNM-VSOCK-GUEST-TO-HOST ] || [ "$rx" != RUNM-VSOCK-HOST-TO-GUEST ]; then
        show_tail "$T/console.txt"
        fail "jailed: guest->host: '$g2h' (listener: $(cat "$T/listen.err")); host->guest: '$rx' (connect status $h2g, $(tr '\n' ' ' < "$T/h2g.err"))"
    fi
    pass_detail "${secs} s, uid 1000, seccomp on $(wc -l < "$T/jailed.threads") threads"
}

# virtio-net over a tap: the tap is made and addressed here, runm-vmm opens it;
# the guest (ip= on its command line) pings this side, and this side pings it.
test_net_ping() {
    has_vmm
    tunctl -t tap0 >"$T/tunctl.out" 2>&1 || fail "tunctl -t tap0: $(cat "$T/tunctl.out")"
    ip addr add 10.0.2.1/24 dev tap0 || fail "ip addr add on tap0 failed"
    ip link set tap0 up || fail "ip link set tap0 up failed"
    extra_cmdline="ip=10.0.2.15::10.0.2.1:255.255.255.0::eth0:off"
    run_vmm_bg "$T/console" 1 net --net tap0,02:00:00:00:00:05
    if wait_console "$T/console" RUNM-GUEST-NET-WAITING 120; then
        ping -c 3 -W 2 10.0.2.15 > "$T/ping.out" 2>&1
        host_ping=$?
    else
        host_ping="guest never waited for our ping"
    fi
    wait_vmm "$T/console"
    tunctl -d tap0 >/dev/null 2>&1
    expect_guest "$T/console"
    guest_ping=$(console_value "$T/console" RUNM-GUEST-PING)
    if [ "$guest_ping" != ok ] || [ "$host_ping" != 0 ]; then
        show_tail "$T/console.txt"
        fail "guest ping of 10.0.2.1: '$guest_ping' (expected ok); ping of the guest 10.0.2.15 from here: status $host_ping: $(tail -n 2 "$T/ping.out" 2>/dev/null | tr '\n' ' ')"
    fi
    pass_detail "${secs} s, guest MAC $(console_value "$T/console" RUNM-GUEST-MAC), $(grep -o '[0-9]* packets received' "$T/ping.out")"
}

# virtio-rng: /dev/hwrng in the guest is virtio_rng and gives 64 bytes, not all zero.
test_hwrng() {
    has_vmm
    run_vmm "$T/console" 1 rng --rng
    expect_guest "$T/console"
    current=$(console_value "$T/console" RUNM-GUEST-RNG-CURRENT)
    hex=$(console_value "$T/console" RUNM-GUEST-RNG-HEX)
    case "$current" in
        virtio_rng*) ;;
        *) show_tail "$T/console.txt"; fail "rng_current is '$current' (expected virtio_rng...)" ;;
    esac
    [ "${#hex}" = 128 ] || { show_tail "$T/console.txt"; fail "guest read ${#hex} hex digits from /dev/hwrng (expected 128: 64 bytes)"; }
    case "$hex" in
        *[!0]*) ;;
        *) fail "64 bytes from /dev/hwrng, all zero" ;;
    esac
    pass_detail "${secs} s, $current"
}

# runm, the OCI runtime, with its own VMM (--hypervisor runm-vmm) here on real
# KVM: a busybox bundle (/bundles/busybox, its workload prints a line on each of
# stdout and stderr and exits 7) runs end to end; runm exits with 7, prints the
# workload's output, and leaves no container or VMM behind.
test_runm_oci_run_exit_status() {
    has_vmm
    command -v runm >/dev/null || fail "runm is not in the image (build it beside runm-vmm: cargo build --release -p runtime-shim)"
    [ -f /guest/agent.cpio ] || fail "the agent initramfs /guest/agent.cpio is not in the image"
    [ -f /bundles/busybox/config.json ] || fail "the bundle /bundles/busybox is not in the image"
    grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    cp -a /bundles/busybox "$T/bundle"
    t0=$(date +%s)
    RUNM_KERNEL=$GUEST_KERNEL RUNM_INITRD=/guest/agent.cpio RUNM_BOOT_TIMEOUT=$guest_timeout \
        timeout -s KILL "$guest_timeout" runm --root "$T/state" --log "$T/log" --hypervisor runm-vmm \
        run r1 --bundle "$T/bundle" > "$T/out" 2> "$T/err" </dev/null
    status=$?
    secs=$(( $(date +%s) - t0 ))
    out=$(cat "$T/out")
    if [ "$status" != 7 ] || [ "$out" != "hello from the guest" ] || ! grep -q '^to-stderr$' "$T/err"; then
        show_tail "$T/err"
        fail "runm run: exit status $status (expected 7), stdout '$out' (expected 'hello from the guest'), to-stderr on stderr: $(grep -c '^to-stderr$' "$T/err"), ${secs} s"
    fi
    left=$(runm --root "$T/state" list --format json 2>&1)
    case "$left" in
        ""|"[]"|null) ;;
        *) fail "runm list after the run: $left (expected no container)" ;;
    esac
    ! pidof runm-vmm >/dev/null || fail "a runm-vmm process is left after the run: $(pidof runm-vmm)"
    pass_detail "${secs} s, $(grep -o 'backend [a-z-]*' "$T/log" | head -n 1)"
}

# --- runm OCI helpers: each test has its own --root ($T/state) ---------------

# oci_bundle JQ_FILTER [JQ_OPTIONS...]: copy /bundles/busybox to $T/bundle and
# apply JQ_FILTER (with JQ_OPTIONS, e.g. --arg) to its config.json; the VM gets
# 128 MiB (the test host has 2 GiB in all).
oci_bundle() {
    has_vmm
    command -v runm >/dev/null || fail "runm is not in the image (build it beside runm-vmm: cargo build --release -p runtime-shim)"
    command -v jq >/dev/null || fail "jq is not in the image"
    [ -f /guest/agent.cpio ] || fail "the agent initramfs /guest/agent.cpio is not in the image"
    [ -f /bundles/busybox/config.json ] || fail "the bundle /bundles/busybox is not in the image"
    grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    cp -a /bundles/busybox "$T/bundle"
    _filter=$1
    shift
    jq "$@" ".annotations[\"io.runm.vm.memory_mib\"] = \"128\" | $_filter" /bundles/busybox/config.json > "$T/bundle/config.json" ||
        fail "jq could not edit the bundle's config.json"
}

# oci SECS ARGS...: runm with the runm-vmm backend and this test's root, killed after SECS.
oci() {
    _secs=$1
    shift
    RUNM_KERNEL=$GUEST_KERNEL RUNM_INITRD=/guest/agent.cpio RUNM_BOOT_TIMEOUT=$guest_timeout \
        timeout -s KILL "$_secs" runm --root "$T/state" --hypervisor runm-vmm "$@"
}

# oci_run_expect ID EXPECTED: `runm run ID` of $T/bundle; fails unless it
# exits 0 with exactly EXPECTED on stdout. Sets $secs to how long it took.
oci_run_expect() {
    t0=$(date +%s)
    oci "$guest_timeout" run "$1" --bundle "$T/bundle" > "$T/out" 2> "$T/err" </dev/null
    status=$?
    secs=$(( $(date +%s) - t0 ))
    out=$(cat "$T/out")
    if [ "$status" != 0 ] || [ "$out" != "$2" ]; then
        show_tail "$T/err"
        fail "runm run $1: exit status $status (expected 0), stdout '$(echo $out)' (expected '$(echo $2)'), ${secs} s"
    fi
}

# oci_status ID: the status in `runm state ID` (jq), or "error: ..." when state fails.
oci_status() {
    oci 30 state "$1" > "$T/state-$1.json" 2> "$T/state-$1.err" </dev/null ||
        { echo "error: $(tr '\n' ' ' < "$T/state-$1.err")"; return; }
    jq -r .status "$T/state-$1.json" 2>&1
}

# oci_wait_status ID STATUS SECS: poll `runm state` until STATUS; 1 after SECS seconds.
oci_wait_status() {
    _i=0
    while [ "$_i" -lt "$3" ]; do
        [ "$(oci_status "$1")" = "$2" ] && return 0
        sleep 1
        _i=$((_i + 1))
    done
    [ "$(oci_status "$1")" = "$2" ]
}

# oci_procs: pids of processes left by this test: runm-vmm, or anything naming $T.
oci_procs() {
    for _d in /proc/[0-9]*; do
        _c=$(tr '\0' ' ' 2>/dev/null < "$_d/cmdline") || continue
        case "$_c" in
            "timeout "*) ;; # busybox timeout's watcher, gone within a second of its command
            *runm-vmm*|*"$T/"*) echo "${_d#/proc/}" ;;
        esac
    done
}

# oci_cleanup IDS...: on the way out (also after a failure) force-delete the
# containers and kill whatever of this test is still running.
oci_cleanup() {
    for _id in "$@"; do
        oci 60 delete --force "$_id" >/dev/null 2>&1 </dev/null
    done
    for _p in $(oci_procs); do kill -9 "$_p" 2>/dev/null; done
}

# oci_nothing_left: no container in `runm list`, nothing under --root, no process of this test.
oci_nothing_left() {
    left=$(oci 30 list --format json 2>&1 </dev/null)
    case "$left" in
        ""|"[]"|null) ;;
        *) fail "runm list after delete: $left (expected no container)" ;;
    esac
    files=$(ls -A "$T/state" 2>/dev/null)
    [ -z "$files" ] || fail "left under --root after delete: $(echo $files)"
    # A jailed runm-vmm ends a moment after its waiting parent, the VM
    # process runm kills and waits for (its parent-death signal).
    procs=$(oci_procs)
    _i=0
    while [ -n "$procs" ] && [ "$_i" -lt 5 ]; do
        sleep 1
        _i=$((_i + 1))
        procs=$(oci_procs)
    done
    [ -z "$procs" ] || fail "processes left after delete: $(for p in $procs; do echo "$p: $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null);"; done)"
}

# The bundle's env, cwd, user and hostname reach the workload in the VM.
test_runm_oci_config() {
    oci_bundle '.process.env = ["PATH=/bin", "HOME=/", "FOO=bar"] | .process.cwd = "/tmp"
        | .process.user = {"uid": 1000, "gid": 1000} | .hostname = "runm-box"
        | .process.args = ["sh", "-c", "echo $FOO; pwd; id -u; id -g; hostname"]'
    trap 'oci_cleanup c1' EXIT
    oci_run_expect c1 "$(printf 'bar\n/tmp\n1000\n1000\nrunm-box')"
    oci_nothing_left
    pass_detail "${secs} s"
}

# create, state (created, pid), start, state (running), exec, kill SIGTERM,
# state (stopped), delete: nothing of the container is left.
test_runm_oci_lifecycle() {
    # PID 1 of a PID namespace ignores signals it has no handler for (as
    # under runc): the workload handles TERM.
    oci_bundle '.process.args = ["sh", "-c", "trap \"exit 143\" TERM; sleep 300 & wait"]'
    trap 'oci_cleanup c1' EXIT
    t0=$(date +%s)
    oci "$guest_timeout" create c1 --bundle "$T/bundle" > "$T/create.out" 2> "$T/create.err" </dev/null ||
        { show_tail "$T/create.err"; fail "runm create failed with status $?"; }
    st=$(oci_status c1)
    pid=$(jq -r .pid "$T/state-c1.json" 2>/dev/null)
    id=$(jq -r .id "$T/state-c1.json" 2>/dev/null)
    [ "$st" = created ] || fail "state after create: '$st' (expected created): $(cat "$T/state-c1.json")"
    case "$pid" in ""|null|0|*[!0-9]*) fail "state after create has pid '$pid': $(cat "$T/state-c1.json")" ;; esac
    [ -d "/proc/$pid" ] || fail "the pid $pid in the state after create does not exist"
    [ "$id" = c1 ] || fail "state after create has id '$id' (expected c1)"
    oci 60 start c1 > "$T/start.out" 2>&1 </dev/null || fail "runm start: status $?: $(cat "$T/start.out")"
    oci_wait_status c1 running 30 || fail "state after start: '$(oci_status c1)' after 30 s (expected running)"
    oci 60 exec c1 -- echo second > "$T/exec.out" 2> "$T/exec.err" </dev/null
    status=$?
    out=$(cat "$T/exec.out")
    [ "$status" = 0 ] && [ "$out" = second ] ||
        fail "runm exec c1 -- echo second: status $status (expected 0), stdout '$out' (expected second), stderr $(tr '\n' ' ' < "$T/exec.err")"
    [ "$(oci_status c1)" = running ] || fail "state after exec: '$(oci_status c1)' (expected running)"
    oci 30 kill c1 SIGTERM > "$T/kill.out" 2>&1 </dev/null || fail "runm kill c1 SIGTERM: status $?: $(cat "$T/kill.out")"
    oci_wait_status c1 stopped 30 || fail "state after kill SIGTERM: '$(oci_status c1)' after 30 s (expected stopped)"
    oci 60 delete c1 > "$T/delete.out" 2>&1 </dev/null || fail "runm delete c1: status $?: $(cat "$T/delete.out")"
    secs=$(( $(date +%s) - t0 ))
    [ ! -d "/proc/$pid" ] || fail "the container's pid $pid still exists after delete"
    oci_nothing_left
    pass_detail "${secs} s"
}

# runm-vmm as runm runs it, jailed: while a container runs (with a volume, so
# virtiofs and its vhost-user watchdog thread are there too), the VMM (PID 1 of
# its own PID namespace, below the waiting parent runm started) runs as the
# vm_user runm's configuration names (runm-vm, 2345:2346) with no capabilities,
# every thread of it and its parent under a seccomp filter, in mount and PID
# namespaces that are not the host's, with a root holding only the way to the
# container's directory. runm pause stops it, runm resume continues it.
test_runm_oci_vmm_jail() {
    mkdir -p "$T/vol"
    oci_bundle ".process.args = [\"sleep\", \"300\"]
        | .mounts += [{\"destination\": \"/vol\", \"type\": \"bind\", \"source\": \"$T/vol\", \"options\": [\"rbind\"]}]"
    echo '{"vm_user": "runm-vm"}' > "$T/runm-config.json"
    export RUNM_CONFIG="$T/runm-config.json"
    trap 'oci_cleanup j1' EXIT
    t0=$(date +%s)
    oci "$guest_timeout" create j1 --bundle "$T/bundle" > "$T/create.out" 2> "$T/create.err" </dev/null ||
        { show_tail "$T/create.err"; fail "runm create failed with status $?"; }
    oci 60 start j1 > "$T/start.out" 2>&1 </dev/null || fail "runm start: status $?: $(cat "$T/start.out")"
    oci_wait_status j1 running 30 || fail "state after start: '$(oci_status j1)' (expected running)"
    vmm= parent=
    for p in $(oci_procs); do
        case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
            *runm-vmm" --jail-pid-ns-child="*) vmm=$p ;;
            *runm-vmm" --config "*) parent=$p ;;
        esac
    done
    [ -n "$vmm" ] && [ -n "$parent" ] ||
        fail "no jailed runm-vmm (pid '$vmm') below a waiting parent (pid '$parent'): $(for p in $(oci_procs); do tr '\0' ' ' < "/proc/$p/cmdline"; echo ';'; done)"
    grep -E '^(Uid|Gid|CapPrm|CapEff|CapBnd|NoNewPrivs|NSpid|Seccomp):' "/proc/$vmm/status" > "$T/vmm.status"
    for t in "/proc/$vmm"/task/* "/proc/$parent"/task/*; do
        echo "$(cat "$t/comm") $(sed -n 's/^Seccomp:.//p' "$t/status")"
    done > "$T/threads"
    mnt=$(readlink "/proc/$vmm/ns/mnt") pidns=$(readlink "/proc/$vmm/ns/pid")
    root=$(ls -A "/proc/$vmm/root" 2>&1 | tr '\n' ' ')
    st=$(tr '\n' ' ' < "$T/vmm.status")
    grep -q '^Uid:.2345.2345.2345.2345$' "$T/vmm.status" || fail "not uid 2345 (runm-vm): $st"
    grep -q '^Gid:.2346.2346.2346.2346$' "$T/vmm.status" || fail "not gid 2346 (runm-vm): $st"
    for cap in CapPrm CapEff CapBnd; do
        grep -q "^$cap:.0000000000000000$" "$T/vmm.status" || fail "$cap is not empty: $st"
    done
    grep -q '^NoNewPrivs:.1$' "$T/vmm.status" || fail "no_new_privs is not set: $st"
    grep -q '^Seccomp:.2$' "$T/vmm.status" || fail "the VMM's main thread has no seccomp filter: $st"
    grep -q '^NSpid:.[0-9]*.1$' "$T/vmm.status" || fail "not PID 1 of its own PID namespace: $st"
    unfiltered=$(grep -v '^kvm-' "$T/threads" | grep -v ' 2$')
    [ -z "$unfiltered" ] || fail "threads without a seccomp filter: $(echo $unfiltered)"
    for thread in vcpu0 event-loop vhost-user-wd; do
        grep -q "^$thread 2$" "$T/threads" || fail "no filtered $thread thread: $(tr '\n' ' ' < "$T/threads")"
    done
    [ "$mnt" != "$(readlink /proc/self/ns/mnt)" ] || fail "the VMM shares the host's mount namespace ($mnt)"
    [ "$pidns" != "$(readlink /proc/self/ns/pid)" ] || fail "the VMM shares the host's PID namespace ($pidns)"
    [ "$root" = "tmp " ] || fail "the VMM's root holds '$root', expected only tmp (the way to the container's directory)"
    [ -z "$(ls -A "$T/state/j1/vmm-jail")" ] || fail "the jail's directory is not empty as the host sees it"

    # Pause and resume reach the jailed VMM through its waiting parent.
    vmm_state() { sed 's/.*) //' "/proc/$vmm/stat" | cut -d' ' -f1; }
    oci 30 pause j1 > "$T/pause.out" 2>&1 </dev/null || fail "runm pause: status $?: $(cat "$T/pause.out")"
    _i=0
    while [ "$(vmm_state)" != T ] && [ "$_i" -lt 10 ]; do sleep 1; _i=$((_i + 1)); done
    [ "$(vmm_state)" = T ] || fail "runm pause: the jailed VMM is in state '$(vmm_state)' (expected T, stopped)"
    [ "$(oci_status j1)" = paused ] || fail "state after pause: '$(oci_status j1)' (expected paused)"
    oci 30 resume j1 > "$T/resume.out" 2>&1 </dev/null || fail "runm resume: status $?: $(cat "$T/resume.out")"
    _i=0
    while [ "$(vmm_state)" = T ] && [ "$_i" -lt 10 ]; do sleep 1; _i=$((_i + 1)); done
    [ "$(vmm_state)" != T ] || fail "runm resume: the jailed VMM is still stopped"
    out=$(oci 60 exec j1 -- sh -c 'echo resumed > /vol/after; cat /vol/after' 2>"$T/exec.err" </dev/null)
    [ "$out" = resumed ] || fail "runm exec after resume: '$out' (expected resumed; stderr $(tr '\n' ' ' < "$T/exec.err"))"
    oci 60 delete --force j1 > "$T/delete.out" 2>&1 </dev/null || fail "runm delete --force j1: $(cat "$T/delete.out")"
    secs=$(( $(date +%s) - t0 ))
    oci_nothing_left
    pass_detail "${secs} s, VMM uid 2345 gid 2346, seccomp on $(wc -l < "$T/threads") threads, own mnt and pid namespaces, paused and resumed"
}

# Two containers at once, each in its own VM: both created and started, both
# running (and each answers exec with its own hostname), both deleted.
test_runm_oci_two_containers() {
    oci_bundle '.process.args = ["sleep", "300"]'
    trap 'oci_cleanup a1 a2' EXIT
    # Each VM as a uid of its own, from a range of two.
    echo '{"vm_uid_range": "302000-302001"}' > "$T/runm-config.json"
    export RUNM_CONFIG="$T/runm-config.json"
    t0=$(date +%s)
    for id in a1 a2; do
        mkdir -p "$T/$id"
        cp -a "$T/bundle/." "$T/$id/"
        jq ".hostname = \"host-$id\"" "$T/bundle/config.json" > "$T/$id/config.json" || fail "jq could not edit $id's config.json"
    done
    # Both VMs boot at the same time.
    oci "$guest_timeout" create a1 --bundle "$T/a1" > "$T/create-a1.out" 2> "$T/create-a1.err" </dev/null &
    c1=$!
    oci "$guest_timeout" create a2 --bundle "$T/a2" > "$T/create-a2.out" 2> "$T/create-a2.err" </dev/null &
    c2=$!
    wait "$c1" || { show_tail "$T/create-a1.err"; fail "runm create a1 failed"; }
    wait "$c2" || { show_tail "$T/create-a2.err"; fail "runm create a2 failed"; }
    for id in a1 a2; do
        oci 60 start "$id" > "$T/start-$id.out" 2>&1 </dev/null || fail "runm start $id: $(cat "$T/start-$id.out")"
    done
    for id in a1 a2; do
        oci_wait_status "$id" running 30 || fail "state of $id: '$(oci_status "$id")' (expected running)"
        out=$(oci 60 exec "$id" -- hostname 2>"$T/exec-$id.err" </dev/null)
        [ "$out" = "host-$id" ] || fail "runm exec $id -- hostname: '$out' (expected host-$id; stderr $(tr '\n' ' ' < "$T/exec-$id.err"))"
    done
    pid1=$(jq -r .pid "$T/state-a1.json") pid2=$(jq -r .pid "$T/state-a2.json")
    [ "$pid1" != "$pid2" ] || fail "both containers have pid $pid1"
    n=$(oci 30 list --format json </dev/null | jq '[.[] | select(.status == "running")] | length')
    [ "$n" = 2 ] || fail "runm list shows $n running containers (expected 2): $(oci 30 list </dev/null 2>&1)"
    for p in $(oci_procs); do tr '\0' ' ' < "/proc/$p/cmdline"; echo; done > "$T/procs"
    # Each VM: a jailed runm-vmm below its waiting parent.
    vmms=$(grep -c '^[^ ]*runm-vmm --jail-pid-ns-child=' "$T/procs")
    [ "$vmms" = 2 ] || fail "$vmms jailed runm-vmm processes run (expected 2): $(tr '\n' ';' < "$T/procs")"
    uids=$(for p in $(oci_procs); do
        case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
            *"runm-vmm --jail-pid-ns-child="*) awk '/^Uid:/ { print $2 }' "/proc/$p/status" ;;
        esac
    done | sort | tr '\n' ' ')
    [ "$uids" = "302000 302001 " ] || fail "the jailed VMMs run as uids '$uids' (expected 302000 and 302001, one each)"
    for id in a1 a2; do
        oci 60 delete --force "$id" > "$T/delete-$id.out" 2>&1 </dev/null || fail "runm delete --force $id: $(cat "$T/delete-$id.out")"
    done
    secs=$(( $(date +%s) - t0 ))
    oci_nothing_left
    pass_detail "${secs} s, VMM uids ${uids% }"
}

# The OCI process and Linux configuration applied in the guest under runm-vmm,
# read from inside the container: PID 1 is the workload, the capability
# bounding set is the configured one (CAP_SYS_ADMIN included), a seccomp
# rule refuses unshare while ls runs, a masked file reads empty, a read-only
# path refuses a write, a configured device node has its numbers, a sysctl
# holds its value.
test_runm_oci_linux() {
    oci_bundle '.process.args = ["sh", "-c", "echo pid=$$; echo bnd=$(grep ^CapBnd: /proc/self/status | cut -f2); unshare -m true 2>/dev/null; echo unshare=$?; ls /bin >/dev/null && echo ls=ok; echo secret=[$(cat /etc/secret 2>&1)]; touch /data/x 2>/dev/null; echo ro=$?; echo dev=$(stat -c %t:%T /dev/mydev); echo shmmax=$(cat /proc/sys/kernel/shmmax)"]
        | .process.capabilities = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"], "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"], "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"]}
        | .linux.seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]}
        | .linux.maskedPaths = ["/etc/secret"] | .linux.readonlyPaths = ["/data"]
        | .linux.devices = [{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 420}]
        | .linux.sysctl = {"kernel.shmmax": "65536"}'
    echo "top secret" > "$T/bundle/rootfs/etc/secret"
    mkdir -p "$T/bundle/rootfs/data"
    trap 'oci_cleanup o1' EXIT
    oci_run_expect o1 "$(printf 'pid=1\nbnd=0000000000200021\nunshare=1\nls=ok\nsecret=[]\nro=1\ndev=1:3\nshmmax=65536')"
    oci_nothing_left
    pass_detail "${secs} s"
}

# Two containers of runm-vmm on one bridge, TCP echoed both ways: c2 (in a
# namespace prepared the CNI way) serves an echo; c1 asks for a new network
# namespace and gets its interface from a prestart hook that moves a veth
# into the namespace of the pid in the state it is given (Docker's way).
test_runm_oci_bridge() {
    ip=/usr/sbin/ip
    [ -x "$ip" ] || fail "iproute2's ip is not in the image"
    trap 'oci_cleanup c1 c2; for n in runm-br runm-c2 runm-h1; do $ip netns del $n 2>/dev/null; done; $ip link del vh1 2>/dev/null' EXIT
    $ip netns add runm-br && $ip netns add runm-c2 || fail "ip netns add"
    $ip -n runm-br link add br0 type bridge && $ip -n runm-br link set br0 up || fail "no bridge (CONFIG_BRIDGE?)"
    $ip -n runm-c2 link add eth0 type veth peer name b2 netns runm-br || fail "veth for c2"
    $ip -n runm-br link set b2 master br0 up
    $ip -n runm-c2 addr add 10.213.20.3/24 dev eth0
    $ip -n runm-c2 link set eth0 up
    # c1's veth waits in the test host's namespace for the hook; its peer is on the bridge.
    $ip link add vh1 type veth peer name b1 netns runm-br || fail "veth for c1"
    $ip -n runm-br link set b1 master br0 up
    oci_bundle '.process.args = ["nc", "-l", "-p", "7100", "-e", "/bin/cat"]
        | .linux.namespaces = ([.linux.namespaces[] | select(.type != "network")] + [{"type": "network", "path": "/run/netns/runm-c2"}])'
    mv "$T/bundle" "$T/b2"
    oci "$guest_timeout" create c2 --bundle "$T/b2" > "$T/c2.out" 2> "$T/c2.err" </dev/null ||
        { show_tail "$T/c2.err"; fail "runm create c2 failed"; }
    oci 60 start c2 > /dev/null 2>&1 </dev/null || fail "runm start c2"
    hook='pid=$(jq -r .pid) && /usr/sbin/ip netns attach runm-h1 "$pid" && /usr/sbin/ip link set vh1 netns runm-h1 && /usr/sbin/ip -n runm-h1 link set vh1 name eth0 && /usr/sbin/ip -n runm-h1 addr add 10.213.20.2/24 dev eth0 && /usr/sbin/ip -n runm-h1 link set eth0 up'
    oci_bundle '.process.args = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do r=$(echo hello-over-the-bridge | nc -w 3 10.213.20.3 7100) && [ -n \"$r\" ] && break; sleep 1; done; echo \"echoed: $r\""]
        | .linux.namespaces = ([.linux.namespaces[] | select(.type != "network")] + [{"type": "network"}])
        | .hooks.prestart = [{"path": "/bin/sh", "args": ["sh", "-c", $hook]}]' --arg hook "$hook"
    oci_run_expect c1 "echoed: hello-over-the-bridge"
    oci 60 delete --force c2 > /dev/null 2>&1 </dev/null
    $ip netns del runm-h1 2>/dev/null
    oci_nothing_left
    pass_detail "${secs} s, prestart hook moved the veth, TCP echo across the bridge"
}

# The root directory and bind mounts through virtio-fs under runm-vmm (one
# virtiofsd per VM, vhost-user-fs in runm-vmm): a write in / lands in the
# bundle's rootfs, a read-only host file and directory are readable and refuse
# writes, a read-write volume carries a file out, and after the run nothing
# names the test in the host's mount table.
test_runm_oci_host_dirs() {
    mkdir -p "$T/host/ro" "$T/host/vol"
    echo "10.1.2.3 from-the-host" > "$T/host/hosts"
    echo "read me" > "$T/host/ro/file"
    oci_bundle ".process.args = [\"sh\", \"-c\", \"echo written > /new-file; cat /etc/hosts /ro/file; (echo x > /ro/file) 2>/dev/null && echo ro-broken || echo ro-holds; echo from-the-guest > /vol/out\"]
        | .mounts += [{\"destination\": \"/etc/hosts\", \"type\": \"bind\", \"source\": \"$T/host/hosts\", \"options\": [\"rbind\", \"ro\"]},
            {\"destination\": \"/ro\", \"type\": \"bind\", \"source\": \"$T/host/ro\", \"options\": [\"bind\", \"ro\"]},
            {\"destination\": \"/vol\", \"type\": \"bind\", \"source\": \"$T/host/vol\", \"options\": [\"rbind\"]}]"
    trap 'oci_cleanup c1' EXIT
    oci_run_expect c1 "$(printf '10.1.2.3 from-the-host\nread me\nro-holds')"
    [ "$(cat "$T/bundle/rootfs/new-file" 2>/dev/null)" = written ] ||
        fail "the container's write in / did not reach the bundle's rootfs"
    [ "$(cat "$T/host/vol/out" 2>/dev/null)" = from-the-guest ] ||
        fail "the container's write in the volume did not reach the host directory"
    [ "$(cat "$T/host/ro/file")" = "read me" ] || fail "the read-only directory's file changed"
    ! grep -q "$T" /proc/self/mountinfo ||
        fail "the host's mount table names the test: $(grep "$T" /proc/self/mountinfo | tr '\n' ';')"
    oci_nothing_left
    pass_detail "${secs} s"
}

# runm's network under runm-vmm: a namespace prepared the CNI way (a veth with
# its MAC, MTU 1400, an address and a default route to a peer namespace) is
# the guest's: eth0 has the veth's MAC, address and MTU, and pings the peer;
# runm-vmm serves it on the tap runm hands down as a descriptor. Afterwards no
# tap or ingress qdisc is left in the namespace.
test_runm_oci_network() {
    # Two interfaces, ping on both, a TCP connection out, and a createRuntime
    # hook on the host that is handed the container's state.
    oci_bundle '.process.args = ["sh", "-c", "echo $(cat /sys/class/net/eth0/address) $(cat /sys/class/net/eth0/mtu) $(ip -o -4 addr show dev eth0 | sed \"s/.* inet \\([^ ]*\\).*/\\1/\"); ping -c 2 -W 5 10.213.9.1 >/dev/null && echo PING-OK; ping -c 2 -W 5 10.213.10.1 >/dev/null && echo PING2-OK; echo tcp-from-guest | nc -w 5 10.213.9.1 7000 && echo TCP-OK"]
        | .linux.namespaces = ([.linux.namespaces[] | select(.type != "network")] + [{"type": "network", "path": "/run/netns/runm-c"}])
        | .process.capabilities = {"bounding": ["CAP_NET_RAW"], "effective": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"]}
        | .hooks.createRuntime = [{"path": "/bin/sh", "args": ["sh", "-c", "cat > '"$T"'/hook.state"]}]'
    trap 'oci_cleanup n1; /usr/sbin/ip netns del runm-c 2>/dev/null; /usr/sbin/ip netns del runm-p 2>/dev/null' EXIT
    # iproute2's (busybox's sh prefers its own applets to PATH).
    ip=/usr/sbin/ip tc=/usr/sbin/tc
    [ -x "$ip" ] && [ -x "$tc" ] || fail "iproute2's ip and tc are not in the image"
    $ip netns add runm-c || fail "ip netns add runm-c"
    $ip netns add runm-p || fail "ip netns add runm-p"
    $ip -n runm-c link add eth0 address 02:42:0a:d5:09:02 mtu 1400 type veth peer name vp0 netns runm-p ||
        fail "no veth pair (CONFIG_VETH in the test host kernel?)"
    $ip -n runm-c link add eth1 type veth peer name vp1 netns runm-p || fail "no second veth pair"
    $ip -n runm-p link set vp0 mtu 1400 up
    $ip -n runm-p link set vp1 up
    $ip -n runm-p addr add 10.213.9.1/24 dev vp0
    $ip -n runm-p addr add 10.213.10.1/24 dev vp1
    $ip -n runm-c link set eth0 up
    $ip -n runm-c link set eth1 up
    $ip -n runm-c addr add 10.213.9.2/24 dev eth0
    $ip -n runm-c addr add 10.213.10.2/24 dev eth1
    $ip -n runm-c route add default via 10.213.9.1
    $ip netns exec runm-p nc -l -p 7000 > "$T/tcp.out" 2>/dev/null &
    oci_run_expect n1 "$(printf '02:42:0a:d5:09:02 1400 10.213.9.2/24\nPING-OK\nPING2-OK\nTCP-OK')"
    [ "$(cat "$T/tcp.out")" = tcp-from-guest ] || fail "the peer's TCP listener got '$(cat "$T/tcp.out")' (expected tcp-from-guest)"
    hook_pid=$(jq -r .pid "$T/hook.state" 2>/dev/null)
    hook_status=$(jq -r .status "$T/hook.state" 2>/dev/null)
    [ "$hook_status" = creating ] && [ "${hook_pid:-0}" -gt 0 ] 2>/dev/null ||
        fail "the createRuntime hook got state '$(cat "$T/hook.state" 2>/dev/null)' (expected status creating and a pid)"
    left=$( { $ip -n runm-c -o link show | grep runmtap; $tc -n runm-c qdisc show | grep ingress; } )
    [ -z "$left" ] || fail "left in the namespace: $(echo $left)"
    oci_nothing_left
    pass_detail "${secs} s, 2 NICs, TCP out, createRuntime hook"
}

# --- Podman on runm ------------------------------------------------------------

# pm ARGS...: podman with runm as its runtime (the image has no other), this
# test's own storage (the vfs driver), run and tmp directories, the cgroupfs
# manager and the file events backend; its containers.conf is the image's,
# runtime-shim/README.md's with runm at /usr/bin/runm.
pm() {
    # TMPDIR: where image copies are staged (else /var/tmp).
    TMPDIR=$T/tmp timeout -s KILL "$guest_timeout" podman --runtime runm --root "$T/storage" --runroot "$T/run" --tmpdir "$T/tmp" \
        --cgroup-manager cgroupfs --events-backend file --storage-driver vfs "$@"
}

# pm_procs: pids of what a Podman run may leave: runm-vmm, virtiofsd, conmon,
# runm, QEMU, or anything naming $T.
pm_procs() {
    for _d in /proc/[0-9]*; do
        _c=$(tr '\0' ' ' 2>/dev/null < "$_d/cmdline") || continue
        case "$(cat "$_d/comm" 2>/dev/null)" in
            runm-vmm|virtiofsd|conmon|runm|qemu-system-x86) echo "${_d#/proc/}"; continue ;;
        esac
        case "$_c" in
            "timeout "*) ;; # busybox timeout's watcher, gone within a second of its command
            *"$T/"*) echo "${_d#/proc/}" ;;
        esac
    done
}

# pm_cleanup: on the way out (also after a failure) remove every container,
# kill what is left and unmount what names $T.
pm_cleanup() {
    pm rm -f -a -t 0 >/dev/null 2>&1 </dev/null
    for _p in $(pm_procs); do kill -9 "$_p" 2>/dev/null; done
    awk -v t="$T/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r _m; do umount -l "$_m"; done
    # Podman's lock segment, made by its first command on this machine.
    rm -f /dev/shm/libpod_lock
}

# A pod in one VM under runm-vmm, as containerd's CRI plugin hands it over:
# the sandbox container boots the VM; a server and a client container join it
# (network, IPC and UTS namespaces at /proc/<sandbox pid>/ns/...), talk over
# the pod's loopback, keep their own roots and exit statuses; one runm-vmm.
test_runm_oci_pod() {
    oci_bundle '.process.args = ["sleep", "300"] | .hostname = "pod-host"'
    trap 'oci_cleanup client web pod' EXIT
    t0=$(date +%s)
    mkdir -p "$T/vol"
    for id in pod web client; do
        mkdir -p "$T/$id"
        cp -a "$T/bundle/." "$T/$id/"
    done
    jq '.annotations += {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod"}' \
        "$T/bundle/config.json" > "$T/pod/config.json" || fail "jq could not edit the pod's config.json"
    oci "$guest_timeout" create pod --bundle "$T/pod" > "$T/create-pod.out" 2>&1 </dev/null ||
        { show_tail "$T/create-pod.out"; fail "runm create pod failed"; }
    oci 60 start pod > "$T/start-pod.out" 2>&1 </dev/null || fail "runm start pod: $(cat "$T/start-pod.out")"
    oci_wait_status pod running 30 || fail "state of pod: '$(oci_status pod)'"
    pid=$(jq -r .pid "$T/state-pod.json")
    # member ID ARGS_JSON: a container of the pod running ARGS_JSON.
    member() {
        jq --arg pid "$pid" --arg vol "$T/vol" --argjson args "$2" '
            .process.args = $args
            | .annotations += {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod"}
            | .linux.namespaces = [{"type": "pid"}, {"type": "mount"},
                {"type": "network", "path": "/proc/\($pid)/ns/net"},
                {"type": "ipc", "path": "/proc/\($pid)/ns/ipc"},
                {"type": "uts", "path": "/proc/\($pid)/ns/uts"}]
            | .mounts += [{"destination": "/vol", "type": "bind", "source": $vol, "options": ["rbind"]}]' \
            "$T/bundle/config.json" > "$T/$1/config.json" || fail "jq could not edit $1's config.json"
    }
    member web '["sh", "-c", "echo served-in-the-pod > /www; exec nc -ll -p 9000 -e cat /www"]'
    member client '["sh", "-c", "test -e /www || echo own-root; hostname; nc 127.0.0.1 9000 > /vol/got; cat /vol/got; exit 3"]'
    oci "$guest_timeout" create web --bundle "$T/web" > "$T/create-web.out" 2>&1 </dev/null ||
        { show_tail "$T/create-web.out"; fail "runm create web (a container of the pod) failed"; }
    oci 60 start web > "$T/start-web.out" 2>&1 </dev/null || fail "runm start web: $(cat "$T/start-web.out")"
    oci "$guest_timeout" run client --bundle "$T/client" > "$T/client.out" 2> "$T/client.err" </dev/null
    status=$?
    out=$(tr '\n' ' ' < "$T/client.out")
    if [ "$status" != 3 ] || [ "$out" != "own-root pod-host served-in-the-pod " ]; then
        show_tail "$T/client.err"
        fail "runm run client: exit status $status (expected 3), stdout '$out' (expected 'own-root pod-host served-in-the-pod ')"
    fi
    [ "$(cat "$T/vol/got" 2>/dev/null)" = served-in-the-pod ] || fail "the volume holds '$(cat "$T/vol/got" 2>&1)'"
    for p in $(oci_procs); do tr '\0' ' ' < "/proc/$p/cmdline"; echo; done > "$T/procs"
    # The VM: a jailed runm-vmm below its waiting parent.
    vmms=$(grep -c '^[^ ]*runm-vmm --jail-pid-ns-child=' "$T/procs")
    [ "$vmms" = 1 ] || fail "$vmms jailed runm-vmm processes run (expected 1 for the pod): $(tr '\n' ';' < "$T/procs")"
    [ "$(oci_status web)" = running ] || fail "web is '$(oci_status web)' after the client's exit (expected running)"
    # What the idle pod (sandbox and web container) costs the host: the
    # proportional set size of all its host processes (VMM, virtiofsd, the
    # sandboxes), the figure RuntimeClass overhead is declared from.
    pss=0
    for p in $(oci_procs); do
        kb=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
        pss=$((pss + ${kb:-0}))
    done
    # One container of the pod paused (its guest cgroup frozen), the VM running on.
    oci 60 pause web > "$T/pause-web.out" 2>&1 </dev/null || fail "runm pause web: $(cat "$T/pause-web.out")"
    [ "$(oci_status web)" = paused ] || fail "web is '$(oci_status web)' after pause (expected paused)"
    out=$(oci 60 exec pod -- echo pod-runs 2>&1 </dev/null)
    [ "$out" = pod-runs ] || fail "runm exec pod while web is paused: '$out'"
    oci 60 resume web > "$T/resume-web.out" 2>&1 </dev/null || fail "runm resume web: $(cat "$T/resume-web.out")"
    [ "$(oci_status web)" = running ] || fail "web is '$(oci_status web)' after resume (expected running)"
    oci 60 kill web KILL > "$T/kill-web.out" 2>&1 </dev/null || fail "runm kill web: $(cat "$T/kill-web.out")"
    oci_wait_status web stopped 30 || fail "web is '$(oci_status web)' after kill (expected stopped)"
    oci 60 delete web > "$T/delete-web.out" 2>&1 </dev/null || fail "runm delete web: $(cat "$T/delete-web.out")"
    oci 60 delete --force pod > "$T/delete-pod.out" 2>&1 </dev/null || fail "runm delete --force pod: $(cat "$T/delete-pod.out")"
    secs=$(( $(date +%s) - t0 ))
    oci_nothing_left
    pass_detail "${secs} s, idle pod's host processes: $((pss / 1024)) MiB PSS (guest RAM 128 MiB)"
}

# Podman drives runm here as on a host with real KVM: `podman --runtime runm
# run --rm --network none` of a busybox image imported from a tar, with the
# image's containers.conf. Podman passes no --hypervisor: runm's automatic
# choice must be runm-vmm on this KVM (seen in /proc while it runs), with the
# guest images found in /usr/share/runm (conmon hands runm no RUNM_*
# variables). The workload's output and `exit 3` come back through conmon and
# Podman, a `-v` volume the guest writes shows on this side, /etc/hosts is the
# one Podman wrote (--add-host), and afterwards nothing is left: no runm-vmm,
# virtiofsd or conmon, no runm state, mount or cgroup, `podman ps -a` empty.
test_runm_podman() {
    has_vmm
    for p in runm podman conmon; do
        command -v "$p" >/dev/null || fail "$p is not in the image (build-image.sh adds it when the build machine has it)"
    done
    [ -f /etc/containers/containers.conf ] || fail "/etc/containers/containers.conf is not in the image"
    for f in vmlinux agent.cpio; do
        [ -f "/usr/share/runm/$f" ] || fail "/usr/share/runm/$f (runm's installed guest image) is not in the image"
    done
    grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    mkdir -p "$T/tmp" "$T/vol"
    trap pm_cleanup EXIT
    image=localhost/runm-busybox:test
    tar -C /bundles/busybox/rootfs -cf "$T/busybox.tar" . || fail "tar of the busybox tree failed"
    pm import "$T/busybox.tar" "$image" > "$T/import.out" 2>&1 </dev/null ||
        { show_tail "$T/import.out"; fail "podman import failed"; }
    t0=$(date +%s)
    pm run --rm --cidfile "$T/cid" --network none --add-host runm-podman-peer:10.1.2.3 \
        -v "$T/vol:/vol" "$image" sh -c 'echo hello from podman on runm
            awk "/runm-podman-peer/ { print \$1, \$2 }" /etc/hosts
            echo from-the-guest > /vol/out
            exit 3' > "$T/out" 2> "$T/err" </dev/null &
    run_pid=$!
    # While it runs: the VMM runm chose (the comm of QEMU's process is cut at 15 bytes).
    seen=
    while kill -0 "$run_pid" 2>/dev/null; do
        for d in /proc/[0-9]*; do
            c=$(cat "$d/comm" 2>/dev/null)
            case "$c" in
                runm-vmm|qemu-system-x86) case " $seen " in *" $c "*) ;; *) seen="$seen $c" ;; esac ;;
            esac
        done
        sleep 1
    done
    wait "$run_pid"
    status=$?
    secs=$(( $(date +%s) - t0 ))
    id=$(cat "$T/cid" 2>/dev/null)
    expected=$(printf 'hello from podman on runm\n10.1.2.3 runm-podman-peer')
    out=$(cat "$T/out")
    if [ "$status" != 3 ] || [ "$out" != "$expected" ]; then
        show_tail "$T/err"
        fail "podman run: exit status $status (expected 3), stdout '$(echo $out)' (expected '$(echo $expected)'), ${secs} s"
    fi
    [ "$seen" = " runm-vmm" ] || fail "VMM processes seen while the container ran:${seen:- none} (expected runm-vmm only)"
    [ "$(cat "$T/vol/out" 2>/dev/null)" = from-the-guest ] ||
        fail "the container's write in the volume did not reach the host directory"
    [ -n "$id" ] || fail "podman wrote no container id to --cidfile"
    # podman run --rm returns once the container is removed; its conmon may
    # take a moment longer to go.
    _i=0
    while [ -n "$(pm_procs)" ] && [ "$_i" -lt 20 ]; do sleep 1; _i=$((_i + 1)); done
    procs=$(pm_procs)
    [ -z "$procs" ] || fail "processes left after the run: $(for p in $procs; do echo "$p: $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null);"; done)"
    [ ! -e "/run/runm/$id" ] || fail "runm state left: /run/runm/$id"
    ! grep -q -e "$T/" -e "$id" /proc/self/mountinfo ||
        fail "mounts left: $(grep -e "$T/" -e "$id" /proc/self/mountinfo | tr '\n' ';')"
    [ ! -e "/sys/fs/cgroup/libpod_parent/libpod-$id" ] || fail "cgroup left: /sys/fs/cgroup/libpod_parent/libpod-$id"
    ps=$(pm ps -a -q 2>&1 </dev/null)
    [ -z "$ps" ] || fail "podman ps -a after the run: $ps (expected no container)"
    pass_detail "${secs} s, $(podman --version), exit 3, runm's automatic choice: runm-vmm"
}

# --- Kubernetes' CRI on runm ----------------------------------------------------

# Where the runc shim keeps a handler's state for containerd's k8s.io
# namespace when its runtime entry sets no Root (the README's sets none).
CRI_HANDLER_ROOT=/run/containerd/runc/k8s.io
# The test's network namespace: containerd, its CNI bridge and the pods'
# addresses exist only there.
CRI_NETNS=runm-cri

# cri_procs: pids of what the CRI test may leave: containerd, its shims
# (comm cut at 15 bytes), runm, runm-vmm, virtiofsd, or anything naming $T.
cri_procs() {
    for _d in /proc/[0-9]*; do
        _c=$(tr '\0' ' ' 2>/dev/null < "$_d/cmdline") || continue
        case "$(cat "$_d/comm" 2>/dev/null)" in
            containerd|containerd-shim|runm|runm-vmm|virtiofsd) echo "${_d#/proc/}"; continue ;;
        esac
        case "$_c" in
            "timeout "*) ;; # busybox timeout's watcher, gone within a second of its command
            *"$T/"*) echo "${_d#/proc/}" ;;
        esac
    done
}

# cri_mounts: mount points under $T or the handler's state, or of a pod's
# network namespace.
cri_mounts() {
    awk -v t="$T/" -v r="$CRI_HANDLER_ROOT/" \
        'index($5, t) == 1 || index($5, r) == 1 || $5 ~ "^/run/netns/cni-" { print $5 }' /proc/self/mountinfo
}

# cri_cleanup: on the way out (also after a failure) stop containerd, kill
# what is left, remove the handler's state (runm delete --force also removes
# its taps and cgroups), unmount, and remove the namespaces.
cri_cleanup() {
    [ -z "$poll_pid" ] || kill "$poll_pid" 2>/dev/null
    [ -z "$containerd_pid" ] || { kill "$containerd_pid" 2>/dev/null; sleep 2; }
    for _p in $(cri_procs); do kill -9 "$_p" 2>/dev/null; done
    for _s in "$CRI_HANDLER_ROOT"/*; do
        [ -e "$_s" ] || continue
        timeout -s KILL 60 runm --root "$CRI_HANDLER_ROOT" delete --force "${_s##*/}" >/dev/null 2>&1 </dev/null
    done
    for _p in $(cri_procs); do kill -9 "$_p" 2>/dev/null; done
    cri_mounts | sort -r | while read -r _m; do umount -l "$_m"; done
    for _n in /run/netns/cni-*; do
        [ -e "$_n" ] && /usr/sbin/ip netns del "${_n##*/}" 2>/dev/null
    done
    /usr/sbin/ip netns del "$CRI_NETNS" 2>/dev/null
    rm -rf /run/containerd /var/lib/cni
}

# ctr_ ARGS...: ctr against this test's containerd, killed after a minute.
ctr_() {
    timeout -s KILL 60 ctr --address "$T/containerd.sock" "$@"
}

# A pod under runm driven by Kubernetes' CRI, as a kubelet drives it:
# containerd with its CRI plugin in a network namespace of the test's own
# (CNI bridge and host-local addresses in a private subnet), its root,
# state and socket under $T, runtime-shim/README.md's runtime entry for runm
# (runm at /usr/bin/runm) as the only runtime; a busybox image and a
# busybox pause image imported with ctr. cri-pod runs the pod scenario of
# the workspace's CRI test (tests/cri-client): a server and a client
# container sharing the pod's localhost, IP, hostname and a volume,
# ExecSync, the streaming Exec, a peer reaching the pod IP, an exit code
# and a restart, then removal and its own leftover checks. runm's
# automatic choice is runm-vmm on this KVM, and the pod lives in ONE
# runm-vmm process from its sandbox to its last container (sampled every
# second). Afterwards, with containerd stopped: no containerd, shim, runm,
# runm-vmm or virtiofsd, nothing naming $T, no mount under $T, no runm
# state, no pod network namespace.
test_runm_cri_pod() {
    has_vmm
    for p in runm containerd containerd-shim-runc-v2 ctr cri-pod; do
        command -v "$p" >/dev/null || fail "$p is not in the image (build-image.sh adds it when the build machine has it)"
    done
    for p in bridge host-local loopback; do
        [ -x "/usr/lib/cni/$p" ] || fail "the CNI plugin /usr/lib/cni/$p is not in the image"
    done
    entry=/etc/containerd/runm-runtime.toml
    [ -f "$entry" ] || fail "$entry (runtime-shim/README.md's runtime entry) is not in the image"
    for f in vmlinux agent.cpio; do
        [ -f "/usr/share/runm/$f" ] || fail "/usr/share/runm/$f (runm's installed guest image) is not in the image"
    done
    grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    mem_start=$(awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
    ip=/usr/sbin/ip
    poll_pid= containerd_pid=
    trap cri_cleanup EXIT
    for d in root state opt cni work; do mkdir -p "$T/$d"; done
    $ip netns add "$CRI_NETNS" || fail "ip netns add $CRI_NETNS"
    $ip -n "$CRI_NETNS" link set lo up
    cat > "$T/cni/10-runm-cri.conflist" <<CONFLIST
{"cniVersion": "1.0.0", "name": "runm-cri", "plugins": [{"type": "bridge", "bridge": "runmcri0",
  "isGateway": true, "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.214.78.0/24"}]], "dataDir": "$T/cni-ipam"}}]}
CONFLIST
    cat > "$T/config.toml" <<CONFIG
version = 2
root = "$T/root"
state = "$T/state"
# Snapshotters other than native and overlayfs probe the host.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$T/containerd.sock"
[ttrpc]
  address = "$T/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$T/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/runm-pause:cri"
  # In the test's namespace: the streaming exec is reached from there.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # No lower oom_score_adj than containerd's own (as the CRI test does).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # The image has no runc: runm is the only runtime, and the default.
    default_runtime_name = "runm"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$T/cni"
    max_conf_num = 1
$(cat "$entry")
CONFIG
    t0=$(date +%s)
    # The shims and runm inherit containerd's environment: boot time for
    # KVM under emulation; runm finds its guest images in /usr/share/runm.
    RUNM_BOOT_TIMEOUT=$guest_timeout nsenter --net="/run/netns/$CRI_NETNS" \
        containerd --config "$T/config.toml" > "$T/containerd.log" 2>&1 </dev/null &
    containerd_pid=$!
    _i=0
    until ctr_ version 2>/dev/null | grep -q '^Server:'; do
        kill -0 "$containerd_pid" 2>/dev/null || { show_tail "$T/containerd.log"; fail "containerd exited at its start"; }
        [ "$_i" -lt 60 ] || { show_tail "$T/containerd.log"; fail "containerd did not answer on $T/containerd.sock within 60 s"; }
        sleep 1
        _i=$((_i + 1))
    done
    up=$(( $(date +%s) - t0 ))
    timeout -s KILL 120 cri-pod images --out "$T/images.tar" > "$T/images.out" 2>&1 </dev/null ||
        fail "cri-pod images: $(tr '\n' ' ' < "$T/images.out")"
    ctr_ -n k8s.io images import "$T/images.tar" > "$T/import.out" 2>&1 </dev/null ||
        { show_tail "$T/import.out"; fail "ctr images import failed"; }
    # While the scenario runs, once a second: the VMM processes, as
    # comm:pid (the comm of QEMU's process is cut at 15 bytes); a jailed
    # runm-vmm's waiting parent (whose child is the VMM) is not one.
    (
        while [ ! -e "$T/poll.stop" ]; do
            _vmms=
            for _d in /proc/[0-9]*; do
                _c=$(cat "$_d/comm" 2>/dev/null)
                case "$_c" in runm-vmm|qemu-system-x86) ;; *) continue ;; esac
                # pid, parent pid (the field after the ')' that ends comm).
                _pp=$(sed 's/.*) [A-Za-z] \([0-9]*\).*/\1/' "$_d/stat" 2>/dev/null)
                _vmms="$_vmms $_c:${_d#/proc/}:$_pp"
            done
            for _v in $_vmms; do
                _pid=${_v#*:}
                _pid=${_pid%%:*}
                case "$_vmms" in *":$_pid "*|*":$_pid") continue ;; esac # a waiting parent
                echo "${_v%:*}"
            done | tr '\n' ' '
            echo
            sleep 1
        done
    ) > "$T/vmms" &
    poll_pid=$!
    t1=$(date +%s)
    timeout -s KILL 1200 cri-pod scenario --socket "$T/containerd.sock" --handler runm --work-dir "$T/work" \
        --netns "/run/netns/$CRI_NETNS" --handler-root "$CRI_HANDLER_ROOT" \
        --no-mounts-under "$T/root" --no-mounts-under "$T/state" \
        --call-timeout "$guest_timeout" --wait-timeout 180 > "$T/scenario.out" 2> "$T/scenario.err" </dev/null
    status=$?
    secs=$(( $(date +%s) - t1 ))
    touch "$T/poll.stop"
    wait "$poll_pid"
    poll_pid=
    sed 's/^/  | /' "$T/scenario.err"
    if [ "$status" != 0 ]; then
        show_tail "$T/containerd.log"
        fail "cri-pod scenario: exit status $status after ${secs} s: $(tail -n 1 "$T/scenario.err")"
    fi
    # Every sample that has a VMM names the same one runm-vmm: runm's
    # automatic choice on KVM, one VM for the pod from its sandbox to its
    # last container.
    seen=$(tr ' ' '\n' < "$T/vmms" | grep . | sort -u | tr '\n' ' ')
    most=$(awk '{ if (NF > n) n = NF } END { print n + 0 }' "$T/vmms")
    with_vm=$(grep -c . "$T/vmms")
    samples=$(wc -l < "$T/vmms")
    case "$most/$(echo $seen | awk '{ print NF }')/$seen" in
        "1/1/runm-vmm:"*) ;;
        *) fail "VMM processes while the pod lived: at most $most at once, seen: ${seen:-none} (expected one runm-vmm for the whole pod)" ;;
    esac
    kill "$containerd_pid"
    _i=0
    while kill -0 "$containerd_pid" 2>/dev/null && [ "$_i" -lt 30 ]; do sleep 1; _i=$((_i + 1)); done
    kill -0 "$containerd_pid" 2>/dev/null && fail "containerd did not stop within 30 s of SIGTERM"
    wait "$containerd_pid"
    code=$?
    containerd_pid=
    [ "$code" = 0 ] || { show_tail "$T/containerd.log"; fail "containerd exited with status $code after SIGTERM (expected 0)"; }
    _i=0
    while [ -n "$(cri_procs)" ] && [ "$_i" -lt 20 ]; do sleep 1; _i=$((_i + 1)); done
    procs=$(cri_procs)
    [ -z "$procs" ] || fail "processes left after the pod and containerd: $(for p in $procs; do echo "$p: $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null);"; done)"
    mounts=$(cri_mounts)
    [ -z "$mounts" ] || fail "mounts left: $(echo $mounts)"
    state=$(ls -A "$CRI_HANDLER_ROOT" 2>/dev/null)
    [ -z "$state" ] || fail "runm state left in $CRI_HANDLER_ROOT: $(echo $state)"
    pod_ns=$(ls /run/netns | grep '^cni-')
    [ -z "$pod_ns" ] || fail "pod network namespaces left: $(echo $pod_ns)"
    pass_detail "${secs} s for the pod scenario (containerd up in ${up} s), one runm-vmm (pid $(echo ${seen#runm-vmm:})) in $with_vm of $samples samples, containerd $(containerd --version | cut -d' ' -f3), MemAvailable at the start $mem_start MiB"
}

# --- runner --------------------------------------------------------------------

listed() { # listed NAME LIST: NAME is in the comma-separated LIST
    case ",$2," in *",$1,"*) return 0 ;; esac
    return 1
}

# children_of PID: the pids whose parent is PID.
children_of() {
    for _s in /proc/[0-9]*/stat; do
        _l=$(cat "$_s" 2>/dev/null) || continue
        [ "$(echo "${_l##*) }" | cut -d' ' -f2)" = "$1" ] || continue
        _p=${_s#/proc/}
        echo "${_p%/stat}"
    done
}

# kill_tree PID: stop PID (so it starts nothing more), then kill its
# descendants and it.
kill_tree() {
    kill -STOP "$1" 2>/dev/null
    for _c in $(children_of "$1"); do kill_tree "$_c"; done
    kill -KILL "$1" 2>/dev/null
}

# run_test FN: run test FN in a subshell, at most $test_timeout seconds; sets
# $ok. A test past its time fails with the end of its logs, and what it left
# running (its processes, and anything naming its directory, such as runm's
# sandboxes, which leave its process tree) is killed: one stuck test (seen
# under load) must not stall the whole run.
run_test() {
    ( "$1" ) &
    _test_pid=$!
    rm -f "$T/.done" "$T/.timed-out"
    (
        _i=0
        while [ ! -e "$T/.done" ] && [ "$_i" -lt "$test_timeout" ]; do
            sleep 1
            _i=$((_i + 1))
        done
        if [ ! -e "$T/.done" ]; then
            : > "$T/.timed-out"
            kill_tree "$_test_pid"
        fi
    ) &
    _watch_pid=$!
    wait "$_test_pid"
    ok=$?
    : > "$T/.done"
    wait "$_watch_pid"
    if [ -e "$T/.timed-out" ]; then
        for _p in $(oci_procs); do kill -9 "$_p" 2>/dev/null; done
        for _f in $(find "$T" -name '*.txt' -o -name 'console*' -o -name '*.err' -o -name '*.log' 2>/dev/null); do
            [ -f "$_f" ] && show_tail "$_f"
        done
        echo "timed out after $test_timeout s (runm.testhost.test_timeout)" > "$T/reason"
        ok=1
    fi
}

echo "testhost: kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB," \
    "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
dmesg | grep -i -e 'kvm[_:]' -e svm | sed 's/^/testhost: dmesg: /'
[ -n "$test_timeout" ] || test_timeout=$((guest_timeout + 120))
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
        run_test "$fn"
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
