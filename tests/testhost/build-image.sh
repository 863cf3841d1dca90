#!/usr/bin/env bash
# Builds the initramfs of the runm test host (see run.sh).
#
#   tests/testhost/build-image.sh [--vmm PATH | --no-vmm] [--no-qemu] [--guest-kernel DIR]
#
# --vmm PATH          the runm-vmm binary to put in the image (default: the newest
#                     of target/release/runm-vmm and target/debug/runm-vmm; when
#                     there is none the image has no runm-vmm and its tests FAIL)
# --no-vmm            leave runm-vmm out
# --no-qemu           leave out QEMU, which serves only the reference check
#                     qemu-in-testhost-kvm
# --guest-kernel DIR  directory with the guest kernel's vmlinux (default: the
#                     output of guest-kernel-config/build.sh --flavor guest)
#
# Two uncompressed newc cpio archives, cached under $RUNM_CACHE_DIR/testhost
# (default ~/.cache/runm) by the hash of everything that goes into them:
#   vsock-echo-<hash>             vsock-echo.c compiled with gcc -static
#   guest-initramfs-<hash>.cpio   the inner guest: busybox, vsock-echo, /init = guest-init.sh
#   image-<hash>/testhost.cpio    the test host: busybox, runm-vmm and the shared
#                                 libraries it loads, the guest kernel and initramfs,
#                                 test data (/data/disk.ext4), debugfs, vsock-echo,
#                                 runm (beside runm-vmm) with mkfs.ext4, the agent
#                                 initramfs and a busybox bundle, podman and conmon
#                                 with runtime-shim/README.md's containers.conf,
#                                 containerd, its runc shim, ctr, the CNI plugins
#                                 bridge, host-local and loopback, cri-pod, and
#                                 README.md's containerd runtime entry for runm,
#                                 QEMU (optional), /init = init.sh
# Progress goes to stderr; the last line on stdout is the test host cpio's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
vmm=auto
with_qemu=1
guest_kernel=
while [ $# -gt 0 ]; do
    case "$1" in
        --vmm) vmm=${2:?--vmm needs a path}; shift 2 ;;
        --vmm=*) vmm=${1#*=}; shift ;;
        --no-vmm) vmm=none; shift ;;
        --no-qemu) with_qemu=0; shift ;;
        --guest-kernel) guest_kernel=${2:?--guest-kernel needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

say() { echo "[testhost-image] $*" >&2; }

cache=${RUNM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runm}/testhost

# --- tools ---------------------------------------------------------------------
busybox=$(command -v busybox || true)
need=()
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    need+=(busybox-static)     # a dynamically linked busybox would need its libraries
fi
command -v cpio >/dev/null || need+=(cpio)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v jq >/dev/null || need+=(jq)
command -v podman >/dev/null || need+=(podman)
command -v conmon >/dev/null || need+=(conmon)
command -v containerd >/dev/null && command -v containerd-shim-runc-v2 >/dev/null &&
    command -v ctr >/dev/null || need+=(containerd)
for plugin in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$plugin" ] || { need+=(containernetworking-plugins); break; }
done
if [ "$with_qemu" = 1 ] && ! command -v qemu-system-x86_64 >/dev/null; then
    need+=(qemu-system-x86)
fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-image.sh: need root to install ${need[*]}" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    busybox=$(command -v busybox)
fi

# --- inputs --------------------------------------------------------------------
if [ "$vmm" = auto ]; then
    vmm=none
    target=${CARGO_TARGET_DIR:-$repo/target}
    for candidate in "$target/release/runm-vmm" "$target/debug/runm-vmm"; do
        if [ -x "$candidate" ] && { [ "$vmm" = none ] || [ "$candidate" -nt "$vmm" ]; }; then
            vmm=$candidate
        fi
    done
    [ "$vmm" != none ] || say "no runm-vmm under $target/{release,debug}: the image has none, its tests will FAIL"
elif [ "$vmm" != none ] && [ ! -x "$vmm" ]; then
    echo "build-image.sh: runm-vmm binary '$vmm' does not exist or is not executable" >&2
    exit 2
fi
if [ -z "$guest_kernel" ]; then
    guest_kernel=$("$repo/guest-kernel-config/build.sh" --flavor guest | tail -n 1)
fi
[ -f "$guest_kernel/vmlinux" ] || { echo "build-image.sh: no vmlinux in '$guest_kernel'" >&2; exit 2; }

# The staging tree is described as a list of "source<TAB>destination" lines;
# the cache key is the hash of the destinations and the sources' contents.
manifest=()
add() { manifest+=("$1	$2"); }
# add_with_libs FILE DEST: FILE and every shared library ldd says it loads,
# each library at the path it has here (the loader's default search path).
add_with_libs() {
    add "$1" "$2"
    local lib
    while read -r lib; do
        add "$lib" "${lib#/}"
    done < <(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}
key_of() { # key_of EXTRA...: hash of the manifest's contents, the extras and this script
    {
        printf '%s\n' "$@"
        sha256sum "$here/build-image.sh" | cut -d' ' -f1
        local line
        for line in "${manifest[@]}"; do
            echo "${line#*	} $(sha256sum < "${line%%	*}" | cut -d' ' -f1)"
        done
    } | sha256sum | cut -c1-16
}
# stage DIR: copy the manifest into DIR, with busybox's applet links and /dev/console.
stage() {
    local dir=$1 line dest
    mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run}
    for line in "${manifest[@]}"; do
        dest=$dir/${line#*	}
        mkdir -p "$(dirname "$dest")"
        cp -L "${line%%	*}" "$dest"
    done
    local applet
    for applet in $("$busybox" --list-full); do
        [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
    done
    # The kernel opens /dev/console for /init; without the node (not root here)
    # the init scripts reopen it after mounting devtmpfs.
    mknod -m 600 "$dir/dev/console" c 5 1 2>/dev/null || true
}
# pack DIR OUT: an uncompressed newc cpio, files owned by root.
pack() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$2"
}

# runm, for the OCI scenarios: the one beside runm-vmm (built together).
runm=none
if [ "$vmm" != none ] && [ -x "$(dirname "$vmm")/runm" ]; then
    runm=$(dirname "$vmm")/runm
else
    say "no runm beside runm-vmm: the image has none, the runm tests will FAIL"
fi

# cached_file NAME: stdin into $cache/NAME-<hash of its content>; prints that path.
cached_file() {
    local data out
    data=$(cat)
    out=$cache/$1-$(printf '%s\n' "$data" | sha256sum | cut -c1-16)
    mkdir -p "$cache"
    [ -f "$out" ] || { printf '%s\n' "$data" > "$out.tmp" && mv "$out.tmp" "$out"; }
    echo "$out"
}

# --- vsock-echo: the vsock test's relay, for both the test host and the guest ----
command -v gcc >/dev/null || { echo "build-image.sh: need gcc (with static libc) for vsock-echo" >&2; exit 1; }
vsock_echo=$cache/vsock-echo-$( { sha256sum < "$here/vsock-echo.c"; gcc --version | head -n 1; } | sha256sum | cut -c1-16)
if [ ! -x "$vsock_echo" ]; then
    say "compiling vsock-echo (gcc -static)"
    mkdir -p "$cache"
    gcc -static -Os -s -Wall -o "$vsock_echo.tmp" "$here/vsock-echo.c"
    mv "$vsock_echo.tmp" "$vsock_echo"
fi

# --- the inner guest's initramfs -----------------------------------------------
manifest=()
add "$busybox" bin/busybox
add "$here/guest-init.sh" init
add "$vsock_echo" usr/bin/vsock-echo
guest_cpio=$cache/guest-initramfs-$(key_of guest).cpio
if [ ! -f "$guest_cpio" ]; then
    say "building the inner guest initramfs"
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.guest.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    stage "$tmp/root"
    chmod 755 "$tmp/root/init"
    pack "$tmp/root" "$tmp/initramfs.cpio"
    mv "$tmp/initramfs.cpio" "$guest_cpio"
    rm -rf "$tmp"
    trap - EXIT
fi
say "inner guest initramfs: $guest_cpio ($(( $(stat -c %s "$guest_cpio") / 1024 )) KiB)"

# --- the test host's initramfs -------------------------------------------------
manifest=()
add "$busybox" bin/busybox
add "$here/init.sh" init
add "$guest_kernel/vmlinux" guest/vmlinux
add "$guest_cpio" guest/initramfs.cpio
add "$vsock_echo" usr/bin/vsock-echo
[ "$vmm" = none ] || add_with_libs "$vmm" usr/bin/runm-vmm
if [ "$with_qemu" = 1 ]; then
    add_with_libs "$(command -v qemu-system-x86_64)" usr/bin/qemu-system-x86_64
    for fw in bios-microvm.bin pvh.bin linuxboot_dma.bin; do
        add "/usr/share/qemu/$fw" "usr/share/qemu/$fw"
    done
fi
# debugfs reads the disk tests' images after the guest wrote them.
add_with_libs "$(command -v debugfs)" usr/sbin/debugfs
if [ "$runm" != none ]; then
    add_with_libs "$runm" usr/bin/runm
    # runm shares the bundle's rootfs and bind mounts through virtiofsd, and
    # turns the rootfs into an ext4 image when asked.
    add_with_libs "${RUNM_VIRTIOFSD:-$("$repo/scripts/virtiofsd.sh" | tail -n 1)}" usr/libexec/virtiofsd
    add_with_libs "$(command -v mkfs.ext4)" usr/sbin/mkfs.ext4
    # The OCI tests edit bundle configs and read runm's state JSON with jq.
    add_with_libs "$(command -v jq)" usr/bin/jq
    # The network test makes namespaces and veths and looks for qdiscs left:
    # iproute2's ip and tc (before busybox's in PATH).
    add_with_libs "$(command -v ip)" usr/sbin/ip
    add_with_libs "$(command -v tc)" usr/sbin/tc
    add "$("$repo/guest-agent/build-initramfs.sh" | tail -n 1)" guest/agent.cpio
    # A busybox bundle (its bin/ gets the applet links in stage_bundle): config.json
    # from `runm spec`, non-interactive, writable root, the workload below.
    spec=$(mktemp -d)
    "$runm" spec --bundle "$spec"
    config=$(jq '.process.terminal = false
        | .process.args = ["sh", "-c", "echo hello from the guest; echo to-stderr >&2; exit 7"]
        | .process.env = ["PATH=/bin", "HOME=/"] | .root.readonly = false' "$spec/config.json" |
        cached_file bundle-config)
    rm -rf "$spec"
    add "$config" bundles/busybox/config.json
    add "$(echo "root:x:0:0:root:/:/bin/sh" | cached_file bundle-passwd)" bundles/busybox/rootfs/etc/passwd
    add "$busybox" bundles/busybox/rootfs/bin/busybox
    # The host's users, as on any host: runm's VM process runs as its
    # configuration's vm_user (nobody by default); runm-vm is the one
    # test_runm_oci_vmm_jail configures.
    add "$(printf '%s\n' 'root:x:0:0:root:/:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        'runm-vm:x:2345:2346:runm VMs:/nonexistent:/bin/false' | cached_file host-passwd)" etc/passwd
    add "$(printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' 'runm-vm:x:2346:' | cached_file host-group)" etc/group
    # Podman drives runm here as on any host: podman and conmon with their
    # libraries, and runtime-shim/README.md's containers.conf with runm at
    # /usr/bin/runm. conmon gives runm an environment of its own (no RUNM_*),
    # so runm finds its guest images where an installed runm does:
    # /usr/share/runm beside /usr/bin (links made after staging).
    add_with_libs "$(command -v podman)" usr/bin/podman
    add_with_libs "$(command -v conmon)" usr/bin/conmon
    readme_runm='runm = ["/usr/local/bin/runm"]'
    containers_conf=$(awk '/^## Podman$/ { p = 1 } p && /^```toml$/ { b = 1; next } b && /^```$/ { exit } b { print }' \
        "$repo/runtime-shim/README.md")
    case "$containers_conf" in
        *"$readme_runm"*) ;;
        *) echo "build-image.sh: runtime-shim/README.md's Podman section has no toml block naming $readme_runm" >&2; exit 1 ;;
    esac
    add "$(printf '%s\n' "${containers_conf/"$readme_runm"/runm = [\"/usr/bin/runm\"]}" | cached_file containers-conf)" \
        etc/containers/containers.conf
    # `podman import` copies the image under a signature policy.
    add "$(echo '{"default": [{"type": "insecureAcceptAnything"}]}' | cached_file policy-json)" etc/containers/policy.json
    # Kubernetes' CRI drives runm here as on any host: containerd with its
    # runc shim (which runs runm) and ctr, the CNI plugins the pod network
    # needs, cri-pod (the pod scenario a kubelet would drive, built beside
    # runm), and the containerd runtime entry of runtime-shim/README.md
    # with runm at /usr/bin/runm, for the test to put in its configuration.
    for tool in containerd containerd-shim-runc-v2 ctr; do
        add_with_libs "$(command -v "$tool")" "usr/bin/$tool"
    done
    for plugin in bridge host-local loopback; do
        add_with_libs "/usr/lib/cni/$plugin" "usr/lib/cni/$plugin"
    done
    # A host's /etc/hosts and /etc/resolv.conf: containerd's CRI plugin
    # makes each pod's from them (no name server: the pods resolve nothing).
    add "$(printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' | cached_file etc-hosts)" etc/hosts
    add "$(echo '# no name server in the test host' | cached_file etc-resolv-conf)" etc/resolv.conf
    # cri-pod writes the images' archive with GNU tar's --owner (busybox's has none).
    add_with_libs "$(command -v tar)" usr/bin/tar
    if [ -x "$(dirname "$runm")/cri-pod" ]; then
        add_with_libs "$(dirname "$runm")/cri-pod" usr/bin/cri-pod
    else
        say "no cri-pod beside runm (cargo build -p cri-client): the image has none, the CRI test will FAIL"
    fi
    readme_binary='BinaryName = "/usr/local/bin/runm"'
    cri_entry=$(awk '/^<!-- cri-runtime-entry: begin -->$/ { p = 1; next } /^<!-- cri-runtime-entry: end -->$/ { exit }
        p && /^```/ { next } p { print }' "$repo/runtime-shim/README.md")
    case "$cri_entry" in
        *"$readme_binary"*) ;;
        *) echo "build-image.sh: runtime-shim/README.md has no cri-runtime-entry block naming $readme_binary" >&2; exit 1 ;;
    esac
    add "$(printf '%s\n' "${cri_entry/"$readme_binary"/BinaryName = \"/usr/bin/runm\"}" | cached_file cri-runtime-entry)" \
        etc/containerd/runm-runtime.toml
fi
image=$cache/image-$(key_of "$(mkfs.ext4 -V 2>&1 | sed -n 1p)")
if [ -f "$image/testhost.cpio" ]; then
    say "cached: $image/testhost.cpio"
    echo "$image/testhost.cpio"
    exit 0
fi

say "building the test host initramfs (runm-vmm: $vmm, QEMU: $([ "$with_qemu" = 1 ] && echo yes || echo no))"
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
stage "$tmp/root"
chmod 755 "$tmp/root/init"
if [ "$runm" != none ]; then
    mkdir -p "$tmp/root/bundles/busybox/rootfs/"{dev,proc,sys,tmp}
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$tmp/root/bundles/busybox/rootfs/bin/$applet"
    done
    mkdir -p "$tmp/root/usr/share/runm"
    ln -s /guest/vmlinux "$tmp/root/usr/share/runm/vmlinux"
    ln -s /guest/agent.cpio "$tmp/root/usr/share/runm/agent.cpio"
    # /var/run is /run, as on any host: containerd binds pod network
    # namespaces under /var/run/netns, iproute2 its own under /run/netns.
    mkdir -p "$tmp/root/var"
    ln -s /run "$tmp/root/var/run"
fi
# A debug build carries ~20 MiB of debug info the test host does not need.
if [ "$vmm" != none ] && command -v strip >/dev/null; then
    strip --strip-debug "$tmp/root/usr/bin/runm-vmm"
    [ "$runm" = none ] || strip --strip-debug "$tmp/root/usr/bin/runm"
    [ ! -f "$tmp/root/usr/bin/cri-pod" ] || strip --strip-debug "$tmp/root/usr/bin/cri-pod"
fi

# Test data for the disk tests: a small ext4 with a known file.
mkdir -p "$tmp/disk" "$tmp/root/data"
echo "RUNM-DISK-DATA-OK" > "$tmp/disk/runm-test-data.txt"
mkfs.ext4 -q -F -L runm-test -E root_owner=0:0 -d "$tmp/disk" "$tmp/root/data/disk.ext4" 8M >/dev/null

pack "$tmp/root" "$tmp/testhost.cpio"
mkdir -p "$tmp/out"
mv "$tmp/testhost.cpio" "$tmp/out/"
mv -T "$tmp/out" "$image" 2>/dev/null || true    # a concurrent build may have won
rm -rf "$tmp"
trap - EXIT
say "test host initramfs: $image/testhost.cpio ($(( $(stat -c %s "$image/testhost.cpio") / 1048576 )) MiB)"

# Keep the three newest of each; each runm-vmm build makes a new image.
for pattern in 'image-*' 'guest-initramfs-*' 'vsock-echo-*' 'bundle-config-*' 'containers-conf-*' 'cri-runtime-entry-*' \
    'etc-hosts-*' 'etc-resolv-conf-*'; do
    find "$cache" -maxdepth 1 -name "$pattern" -printf '%T@ %p\n' | sort -rn | tail -n +4 |
        cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
done
echo "$image/testhost.cpio"
