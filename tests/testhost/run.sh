#!/usr/bin/env bash
# Runs runm's test host: a Linux with kvm_amd booted under QEMU's SOFTWARE
# emulation (TCG; -cpu EPYC,+svm,+npt gives it AMD SVM with nested paging), so
# that inside it /dev/kvm is ordinary KVM and runm-vmm's whole path, guest user
# space included, can be tested on machines whose own KVM cannot run it.
#
#   tests/testhost/run.sh [options]
#
# --vmm PATH          runm-vmm binary to test (default: newest of target/{release,debug}/runm-vmm)
# --no-qemu           image without the inner QEMU (drops the qemu-in-testhost-kvm check)
# --only A,B          run only these tests
# --force-fail A,B    report these tests as FAIL (shows that the runner catches failures)
# --timeout SECS      whole run, boot included (default $RUNM_TESTHOST_TIMEOUT or 1200)
# --guest-timeout S   one inner guest run (default 180)
# --test-timeout S    one test (default the guest timeout + 120 s); past it the test fails
#                     with the end of its logs and the run goes on
# --kernel FILE       test host kernel (default: guest-kernel-config/build.sh --flavor testhost)
# --initrd FILE       test host initramfs (default: tests/testhost/build-image.sh)
# --log FILE          keep the serial console log in FILE (default: a temporary file)
# -v, --verbose       stream the serial console to stderr, inner guests' consoles included
#
# The kernels and the image are built on first use and cached (see the build scripts).
# Prints the RESULT lines and the summary on stdout (and on stderr the console
# of each failed test). Exits 0 only if the summary
# line was seen and every test passed; on a timeout or a missing summary it prints
# the console's last 40 lines. QEMU is never started with KVM: this machine's
# KVM cannot host the test host. Nothing is left behind.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
timeout=${RUNM_TESTHOST_TIMEOUT:-1200}
guest_timeout=180
test_timeout=
image_args=()
only=
force_fail=
kernel=
initrd=
keep_log=
verbose=0
while [ $# -gt 0 ]; do
    case "$1" in
        --vmm) image_args+=(--vmm "${2:?--vmm needs a path}"); shift 2 ;;
        --no-vmm|--no-qemu) image_args+=("$1"); shift ;;
        --only) only=${2:?}; shift 2 ;;
        --force-fail) force_fail=${2:?}; shift 2 ;;
        --timeout) timeout=${2:?}; shift 2 ;;
        --guest-timeout) guest_timeout=${2:?}; shift 2 ;;
        --test-timeout) test_timeout=${2:?}; shift 2 ;;
        --kernel) kernel=${2:?}; shift 2 ;;
        --initrd) initrd=${2:?}; shift 2 ;;
        --log) keep_log=${2:?}; shift 2 ;;
        -v|--verbose) verbose=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

say() { echo "[testhost] $*" >&2; }

if ! command -v qemu-system-x86_64 >/dev/null; then
    say "installing qemu-system-x86 (apt-get)"
    [ "$(id -u)" -eq 0 ] || { echo "run.sh: need root to install qemu-system-x86" >&2; exit 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >&2
fi
if [ -z "$kernel" ]; then
    kernel=$("$repo/guest-kernel-config/build.sh" --flavor testhost | tail -n 1)/vmlinux
fi
if [ -z "$initrd" ]; then
    initrd=$("$here/build-image.sh" ${image_args[@]+"${image_args[@]}"} | tail -n 1)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/runm-testhost.XXXXXX")
log=${keep_log:-$tmp/console.log}
qemu_pid=
tail_pid=
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The test host's kernel calibrates its TSC against the PIT, which fails now and
# then under software emulation on a busy machine; KVM on a host without a TSC
# frequency starts guests that hang before their first output. The emulated
# TSC counts at this machine's TSC rate: tell the kernel that rate.
host_tsc_khz() {
    local mhz
    mhz=$(dmesg 2>/dev/null | sed -n -e 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' \
        -e 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -n 1) || true
    [ -n "$mhz" ] || mhz=$(awk -F': *' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
    [ -z "$mhz" ] || awk -v mhz="$mhz" 'BEGIN { printf "%d\n", mhz * 1000 }'
}
tsc_khz=${RUNM_TESTHOST_TSC_KHZ:-$(host_tsc_khz)}

append="console=ttyS0 panic=-1 runm.testhost.guest_timeout=$guest_timeout"
if [ -n "$tsc_khz" ]; then
    append+=" tsc_early_khz=$tsc_khz tsc=reliable"
else
    say "warning: this machine's TSC frequency is unknown (set RUNM_TESTHOST_TSC_KHZ): the test host may not know its own"
fi
[ "$verbose" = 0 ] || append+=" runm.testhost.verbose=1"
[ -z "$only" ] || append+=" runm.testhost.only=$only"
[ -z "$test_timeout" ] || append+=" runm.testhost.test_timeout=$test_timeout"
[ -z "$force_fail" ] || append+=" runm.testhost.force_fail=$force_fail"

say "booting the test host (software emulation; kernel $kernel, initramfs $(( $(stat -c %s "$initrd") / 1048576 )) MiB, timeout ${timeout} s)"
start=$(date +%s)
: > "$log"
# -accel tcg: software emulation, on purpose (see the header).
qemu-system-x86_64 -M microvm,acpi=off -accel tcg -cpu EPYC,+svm,+npt -m 2048 -smp 2 \
    -no-user-config -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" -append "$append" \
    </dev/null >"$log" 2>&1 &
qemu_pid=$!
if [ "$verbose" = 1 ]; then
    tail -n +1 -f --pid="$qemu_pid" "$log" >&2 &
    tail_pid=$!
fi

summary_re='testhost: [0-9]+ passed, [0-9]+ failed'
timed_out=0
summary_at=
while kill -0 "$qemu_pid" 2>/dev/null; do
    now=$(date +%s)
    if [ -z "$summary_at" ] && grep -qE "^$summary_re"$'\r?$' "$log"; then
        summary_at=$now
    fi
    # After the summary the guest resets at once; do not wait on a guest that hangs there.
    if [ -n "$summary_at" ] && [ $((now - summary_at)) -ge 15 ]; then
        say "the test host printed its summary but did not reset: stopping QEMU"
        break
    fi
    if [ $((now - start)) -ge "$timeout" ]; then
        timed_out=1
        break
    fi
    # In the background so that a signal runs the trap at once.
    sleep 1 &
    wait $! || true
done
if kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
fi
qemu_status=0
wait "$qemu_pid" 2>/dev/null || qemu_status=$?
qemu_pid=
if [ -n "$tail_pid" ]; then
    wait "$tail_pid" 2>/dev/null || true
    tail_pid=
fi
elapsed=$(( $(date +%s) - start ))

console=$(tr -d '\r' < "$log")
results=$(grep -E '^RESULT [^ ]+ (PASS|FAIL)' <<<"$console" || true)
summary=$(grep -xE "$summary_re" <<<"$console" | tail -n 1 || true)
[ -z "$results" ] || echo "$results"
[ -z "$summary" ] || echo "$summary"

problem=
if [ "$timed_out" = 1 ]; then
    problem="timed out after ${timeout} s"
elif [ -z "$summary" ]; then
    problem="QEMU exited (status $qemu_status) without the summary line"
fi
if [ -n "$problem" ]; then
    echo "--- last 40 lines of the test host console:" >&2
    tail -n 40 <<<"$console" >&2
    say "FAILED: $problem ($elapsed s)"
    exit 1
fi
failed=$(sed -E 's/.* ([0-9]+) failed/\1/' <<<"$summary")
if [ "$failed" != 0 ] || grep -q ' FAIL' <<<"$results" || ! grep -q ' PASS' <<<"$results"; then
    # What each failed test printed on the console (its runm's stderr
    # tail, its guests' output), from its "=== NAME" line to its RESULT.
    for name in $(sed -nE 's/^RESULT ([^ ]+) FAIL.*/\1/p' <<<"$results"); do
        echo "--- the test host console of $name:" >&2
        awk -v n="$name" '$0 == "=== " n {on=1} on {print} on && index($0, "RESULT " n " ") == 1 {exit}' <<<"$console" | tail -n 60 >&2
    done
    say "FAILED: $summary ($elapsed s, software emulation)"
    exit 1
fi
say "OK: $summary ($elapsed s, software emulation)"
