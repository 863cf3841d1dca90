#!/bin/busybox sh
# /init of the INNER test guest: the tiny Linux that runm-vmm (or, for the
# reference check, QEMU) boots inside the test host.
#
# It reads `runm.test=NAME` from the kernel command line, prints the marker
# that proves guest user space runs, prints what test NAME asks for, then
# resets the machine (`reboot -f`; with `reboot=k` the kernel resets through
# the i8042, and the VMM exits).
#
# Adding a guest-side check: add a case below that prints `RUNM-GUEST-<WHAT>=<value>`
# lines, and match them in the test host's test function (init.sh).

# Output before /dev exists would be lost: mount it first, then reopen the console.
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys

test=
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case "$arg" in
        runm.test=*) test=${arg#runm.test=} ;;
    esac
done

echo "RUNM-GUEST-USERSPACE-OK"
case "$test" in
    ""|boot) ;;
    smp)
        echo "RUNM-GUEST-NPROC=$(nproc)"
        echo "RUNM-GUEST-CPUINFO=$(grep -c '^processor' /proc/cpuinfo)"
        ;;
    *) echo "RUNM-GUEST-UNKNOWN-TEST=$test" ;;
esac
echo "RUNM-GUEST-DONE"
reboot -f
# reboot -f does not return; if it ever does, say so (PID 1 exiting panics the kernel).
echo "RUNM-GUEST-REBOOT-FAILED"
sleep 5
