#!/usr/bin/env bash
# Installs runm for people and engines (Podman, Docker, containerd) to use:
# builds the release binaries, the guest kernel and the agent initramfs, and
# puts them where runm looks for them.
#
#   scripts/install.sh [--prefix DIR]      install (again: only what changed)
#   scripts/install.sh --uninstall [--prefix DIR]
#
#   runm, runm-vmm,        /usr/local/bin     (DIR/bin with --prefix)
#   virtiofsd
#   vmlinux, agent.cpio    /usr/share/runm    (DIR/share/runm with --prefix;
#                                              runm finds it from DIR/bin/runm)
#
# Safe to run again: files already up to date are left as they are. Replaced
# files are swapped in whole (a running runm keeps its old file). Missing
# Debian packages runm needs to build and run (e2fsprogs; qemu-system-x86
# where /dev/kvm is not real KVM) are installed with apt-get. Progress goes to
# stderr; --uninstall removes exactly what an install puts there.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "[install] $*" >&2; }
die() { echo "install.sh: $*" >&2; exit 1; }

prefix=
uninstall=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] && [ -n "$2" ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; [ -n "$prefix" ] || die "--prefix needs a directory"; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (--prefix DIR, --uninstall, --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$prefix" ]; then
    case "$prefix" in /*) ;; *) prefix=$PWD/$prefix ;; esac
    bindir=$prefix/bin
    datadir=$prefix/share/runm
else
    bindir=/usr/local/bin
    datadir=/usr/share/runm
fi

# What is installed, by name (uninstall removes exactly these).
# virtiofsd serves host directories to the guest (virtio-fs); runm finds it
# beside itself.
bin_files=(runm runm-vmm virtiofsd)
data_files=(vmlinux agent.cpio)

if [ "$uninstall" = 1 ]; then
    for f in "${bin_files[@]/#/$bindir/}" "${data_files[@]/#/$datadir/}"; do
        if [ -e "$f" ] || [ -L "$f" ]; then
            rm -f "$f"
            say "removed $f"
        fi
    done
    if [ -d "$datadir" ]; then
        if rmdir "$datadir" 2>/dev/null; then
            say "removed $datadir"
        else
            say "warning: $datadir holds files an install did not put there: left in place"
        fi
    fi
    say "runm is uninstalled from $bindir and $datadir"
    exit 0
fi

# Debian packages: to build (cpio and file for the initramfs; the kernel
# build installs its own) and to run (mkfs.ext4; QEMU where KVM cannot run
# guest user space).
packages=(cpio file e2fsprogs)
if [ ! -e /dev/kvm ] || [ -d /sys/module/kvm_pvm ]; then
    packages+=(qemu-system-x86)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "need root to install Debian packages: ${missing[*]}"
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; install a Rust toolchain (rustup) first"

say "guest kernel (cached after the first build)"
kernel=$("$repo/guest-kernel-config/build.sh" --flavor guest | tail -n1)/vmlinux
say "agent initramfs"
initrd=$("$repo/guest-agent/build-initramfs.sh" | tail -n1)
say "virtiofsd (cached after the first build)"
virtiofsd=$("$repo/scripts/virtiofsd.sh" | tail -n1)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
say "release binaries: runm, runm-vmm"
cargo build --quiet --release --manifest-path "$repo/Cargo.toml" --target-dir "$target_dir" \
    -p runtime-shim -p vmm --bin runm --bin runm-vmm >&2

tmp=
trap '[ -z "$tmp" ] || rm -f "$tmp"' EXIT
# put SRC DEST MODE: copies SRC to DEST unless it is there already, through a
# temporary file in DEST's directory renamed over DEST.
put() {
    local src=$1 dst=$2 mode=$3
    [ -f "$src" ] || die "$src was not built"
    if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$src" "$dst" &&
        [ "$(stat -c %a "$dst")" = "$mode" ]; then
        say "up to date: $dst"
        return
    fi
    mkdir -p "$(dirname "$dst")"
    tmp=$(mktemp "$dst.new.XXXXXX")
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dst"
    tmp=
    say "installed: $dst"
}
put "$target_dir/release/runm" "$bindir/runm" 755
put "$target_dir/release/runm-vmm" "$bindir/runm-vmm" 755
put "$virtiofsd" "$bindir/virtiofsd" 755
put "$kernel" "$datadir/vmlinux" 644
put "$initrd" "$datadir/agent.cpio" 644
say "runm is installed: $bindir/runm (engines: --runtime $bindir/runm)"
