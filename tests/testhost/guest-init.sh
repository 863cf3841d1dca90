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
    disk-rw)
        mkdir -p /mnt
        if mount -t ext4 /dev/vda /mnt; then
            echo "RUNM-GUEST-DISK-READ=$(cat /mnt/runm-test-data.txt)"
            if echo RUNM-DISK-WRITTEN-BY-GUEST > /mnt/runm-written.txt && sync && umount /mnt; then
                echo "RUNM-GUEST-DISK-WRITE=ok"
            else
                echo "RUNM-GUEST-DISK-WRITE=failed"
            fi
        else
            echo "RUNM-GUEST-DISK-READ=mount-failed"
        fi
        ;;
    disk-ro)
        mkdir -p /mnt
        echo "RUNM-GUEST-DISK-RO=$(cat /sys/block/vda/ro)"
        if mount -t ext4 -o ro /dev/vda /mnt; then
            echo "RUNM-GUEST-DISK-READ=$(cat /mnt/runm-test-data.txt)"
            umount /mnt
        else
            echo "RUNM-GUEST-DISK-READ=mount-failed"
        fi
        # busybox mount falls back to read-only when rw is refused: look at what it got.
        if mount -t ext4 -o rw /dev/vda /mnt; then
            opts=$(awk '$2 == "/mnt" { split($4, o, ","); print o[1] }' /proc/mounts)
            echo "RUNM-GUEST-DISK-MOUNT-RW=mounted-$opts"
            if echo x > /mnt/runm-ro-write.txt; then
                echo "RUNM-GUEST-DISK-FILE-WRITE=succeeded"
            else
                echo "RUNM-GUEST-DISK-FILE-WRITE=failed"
            fi
            umount /mnt
        else
            echo "RUNM-GUEST-DISK-MOUNT-RW=failed"
        fi
        if dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync; then
            echo "RUNM-GUEST-DISK-DD-WRITE=succeeded"
        else
            echo "RUNM-GUEST-DISK-DD-WRITE=failed"
        fi
        # Also after blockdev --setrw (on this guest kernel the disk's own read-only
        # flag stays, so the guest kernel still refuses with EPERM: the device's
        # refusal of writes is covered by the device's in-process tests).
        blockdev --setrw /dev/vda
        if dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync; then
            echo "RUNM-GUEST-DISK-FORCED-WRITE=succeeded"
        else
            echo "RUNM-GUEST-DISK-FORCED-WRITE=failed"
        fi
        ;;
    vsock)
        vsock-echo listen 6000 > /tmp/vsock-rx </dev/null &
        listener=$!
        sleep 1
        echo "RUNM-GUEST-VSOCK-LISTENING"
        echo RUNM-VSOCK-GUEST-TO-HOST | vsock-echo connect 2 5000 ||
            echo "RUNM-GUEST-VSOCK-CONNECT=failed"
        wait "$listener"
        echo "RUNM-GUEST-VSOCK-RX=$(cat /tmp/vsock-rx)"
        ;;
    net)
        echo "RUNM-GUEST-MAC=$(cat /sys/class/net/eth0/address)"
        if ping -c 3 -W 2 10.0.2.1; then
            echo "RUNM-GUEST-PING=ok"
        else
            echo "RUNM-GUEST-PING=failed"
        fi
        echo "RUNM-GUEST-NET-WAITING"
        # Stay up until the test host's 3 pings came (at most 60 s).
        i=0
        while [ "$i" -lt 60 ]; do
            echos=$(awk '/^Icmp:/ && $3 ~ /^[0-9]+$/ { v = $10 } END { print v + 0 }' /proc/net/snmp)
            [ "$echos" -lt 3 ] || break
            sleep 1
            i=$((i + 1))
        done
        echo "RUNM-GUEST-ICMP-IN-ECHOS=$echos"
        ;;
    rng)
        echo "RUNM-GUEST-RNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current)"
        echo "RUNM-GUEST-RNG-HEX=$(head -c 64 /dev/hwrng | od -An -v -tx1 | tr -d ' \n')"
        ;;
    *) echo "RUNM-GUEST-UNKNOWN-TEST=$test" ;;
esac
echo "RUNM-GUEST-DONE"
reboot -f
# reboot -f does not return; if it ever does, say so (PID 1 exiting panics the kernel).
echo "RUNM-GUEST-REBOOT-FAILED"
sleep 5
