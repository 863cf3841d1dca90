#!/usr/bin/env bash
# Builds the Rust virtiofsd (the vhost-user virtio-fs daemon runm's VMs share
# host directories through) from crates.io and caches it.
#
#   scripts/virtiofsd.sh [--install DIR]
#
# Debian 12 has no package of it (only QEMU's old C daemon), so it is built
# once per machine with `cargo install --locked` into $RUNM_CACHE_DIR (default
# ~/.cache/runm)/virtiofsd/VERSION, keyed by the version, and reused. With
# --install DIR the binary is also copied to DIR/virtiofsd (where runm looks:
# beside `runm`, or /usr/libexec). Progress goes to stderr; the last line on
# stdout is the path of the binary (the installed copy with --install).
set -euo pipefail

version=1.14.0
install_dir=
while [ $# -gt 0 ]; do
    case "$1" in
        --install) install_dir=${2:?--install needs a directory}; shift 2 ;;
        --install=*) install_dir=${1#*=}; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "virtiofsd.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

say() { echo "[virtiofsd] $*" >&2; }

cache=${RUNM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runm}
root="$cache/virtiofsd/$version"
bin="$root/bin/virtiofsd"

if [ ! -x "$bin" ]; then
    # libseccomp and libcap-ng are linked in (the daemon sandboxes itself).
    need=()
    for pkg in libseccomp-dev libcap-ng-dev pkg-config; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "virtiofsd.sh: need root to install ${need[*]} (apt-get)" >&2
            exit 1
        fi
        say "installing ${need[*]} (apt-get)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "virtiofsd.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
        exit 1
    fi
    # One build at a time per cache; a second caller finds the result.
    mkdir -p "$cache/virtiofsd"
    exec 9>"$cache/virtiofsd/.build.lock"
    flock 9
fi
if [ ! -x "$bin" ]; then
    say "building virtiofsd $version (cargo install --locked; about a minute on 2 cores)"
    rm -rf "$root.tmp"
    # Its own target dir, so the build never touches a workspace's.
    CARGO_TARGET_DIR="$cache/virtiofsd/target" \
        cargo install --quiet --locked --root "$root.tmp" --version "$version" virtiofsd >&2
    rm -rf "$cache/virtiofsd/target"
    rm -rf "$root"
    mv "$root.tmp" "$root"
    say "built $bin"
fi
"$bin" --version >/dev/null 2>&1 || {
    echo "virtiofsd.sh: $bin does not run; remove $root and run this again" >&2
    exit 1
}

if [ -n "$install_dir" ]; then
    mkdir -p "$install_dir"
    # Copy then rename: a daemon running from the old file keeps it.
    cp "$bin" "$install_dir/.virtiofsd.tmp"
    mv -f "$install_dir/.virtiofsd.tmp" "$install_dir/virtiofsd"
    say "installed $install_dir/virtiofsd"
    echo "$install_dir/virtiofsd"
else
    echo "$bin"
fi
