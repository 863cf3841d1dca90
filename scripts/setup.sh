#!/usr/bin/env bash
# Installs what runm needs on a Debian 12 machine and builds it:
# Debian packages (apt-get), the guest kernel (cached), virtiofsd (cached,
# installed in /usr/libexec where runm finds it), the Rust binaries.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[setup] $*" >&2; }

packages=(
    # guest kernel build
    linux-source-6.12 flex bison bc libelf-dev libssl-dev make gcc xz-utils patch
    # guest images (file: build-initramfs.sh checks the agent is static) and
    # the software-emulated KVM test host
    busybox-static cpio file e2fsprogs erofs-utils qemu-system-x86
    # the container column of the comparisons, and tap/netns tests
    runc iproute2
    # containerd drives runm through its runc shim (runtime-shim/tests/containerd.rs),
    # and so does Docker's daemon (runtime-shim/tests/docker.rs)
    containerd docker.io
    # containerd's CRI plugin networks pods with these CNI plugins
    # (runtime-shim/tests/cri.rs); the CRI client's protobuf API is
    # generated with protoc at build time (tests/cri-client)
    containernetworking-plugins protobuf-compiler
    # Podman with runm as its runtime (runtime-shim/tests/podman.rs); netavark
    # for its default network, which needs iptables
    podman conmon netavark iptables
    # virtiofsd (built from crates.io by scripts/virtiofsd.sh) links these
    libseccomp-dev libcap-ng-dev pkg-config
    # a realistic Debian root file system for the benchmarks (scripts/debian-rootfs.sh)
    debootstrap
)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    say "installing ${#missing[@]} Debian packages: ${missing[*]}"
    # The engines' packages would start their daemons (dockerd, containerd)
    # on the host; the tests start their own, in namespaces they make. A
    # policy-rc.d that refuses every start keeps the host as it was.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    apt-get update -qq >&2
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || status=$?
    [ -z "$own_policy" ] || rm -f "$policy"
    [ "$status" = 0 ] || exit "$status"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

say "guest kernel"
guest-kernel-config/build.sh --flavor guest >/dev/null

say "virtiofsd"
if [ "$(id -u)" -eq 0 ]; then
    scripts/virtiofsd.sh --install /usr/libexec >/dev/null
else
    # Without root it stays in the cache; runm finds it through RUNM_VIRTIOFSD.
    say "not root: virtiofsd stays at $(scripts/virtiofsd.sh); set RUNM_VIRTIOFSD to it"
fi

say "building runm and runm-vmm (cargo build)"
cargo build --quiet -p runtime-shim -p vmm --bin runm --bin runm-vmm >&2
say "done"
