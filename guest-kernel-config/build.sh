#!/usr/bin/env bash
# Builds runm's guest kernel from Debian's linux-source-6.12.
#
#   guest-kernel-config/build.sh [--flavor guest|testhost]
#
# guest     microvm.config: the kernel every runm microVM boots.
# testhost  microvm.config + testhost.config: the kernel of the software-emulated
#           machine that gives runm-vmm ordinary KVM in the tests.
#
# The result is cached under $RUNM_CACHE_DIR (default ~/.cache/runm) by the hash
# of the fragments, the patches, this script and the source package version, so
# a second run with nothing changed only hashes and prints. Progress goes to
# stderr; the last line on stdout is the directory holding vmlinux, bzImage and
# the full .config.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
flavor=guest
while [ $# -gt 0 ]; do
    case "$1" in
        --flavor) flavor=${2:?--flavor needs a value}; shift 2 ;;
        --flavor=*) flavor=${1#*=}; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
case "$flavor" in
    guest) fragments=("$here/microvm.config") ;;
    testhost) fragments=("$here/microvm.config" "$here/testhost.config") ;;
    *) echo "build.sh: unknown flavor '$flavor' (guest or testhost)" >&2; exit 2 ;;
esac

say() { echo "[guest-kernel] $*" >&2; }

cache=${RUNM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runm}
tarball=/usr/src/linux-source-6.12.tar.xz

need=()
[ -f "$tarball" ] || need+=(linux-source-6.12)
for tool in flex:flex bison:bison bc:bc make:make gcc:gcc xz:xz-utils perl:perl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
for pkg in libelf-dev libssl-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh: need root to install ${need[*]}" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# One build at a time per cache: concurrent callers (parallel tests, two
# shells) wait here and then find the result cached.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9

srcver=$(dpkg-query -W -f '${Version}' linux-source-6.12 2>/dev/null || stat -c %s "$tarball")
key=$( { echo "$srcver"; echo "$flavor"; cat "${fragments[@]}" "$here"/patches/*.patch "$here/build.sh"; } | sha256sum | cut -c1-16)
out="$cache/kernel/$flavor-$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
    say "cached: $out"
    echo "$out"
    exit 0
fi

# One patched source tree per source version and patch set, shared by the flavors;
# each flavor builds out of tree in its own directory so rebuilds are incremental.
patchkey=$( { echo "$srcver"; cat "$here"/patches/*.patch; } | sha256sum | cut -c1-16)
src="$cache/src/linux-6.12-$patchkey"
if [ ! -f "$src/.runm-ready" ]; then
    say "extracting $tarball (about 15 s)"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xf "$tarball" -C "$src.tmp" --strip-components=1
    for p in "$here"/patches/*.patch; do
        say "applying $(basename "$p")"
        patch -s -p1 -d "$src.tmp" < "$p"
    done
    touch "$src.tmp/.runm-ready"
    mv "$src.tmp" "$src"
fi

build="$cache/build/$flavor-$patchkey"
mkdir -p "$build"
cat "${fragments[@]}" > "$build/runm.fragment"
say "configuring $flavor (allnoconfig + $(basename -a "${fragments[@]}" | tr '\n' ' '))"
make -s -C "$src" O="$build" KCONFIG_ALLCONFIG="$build/runm.fragment" allnoconfig >"$build/config.log" 2>&1 || {
    tail -20 "$build/config.log" >&2; exit 1; }

# Every option the fragments ask for must have survived Kconfig's dependency
# resolution: a silently dropped option is a guest that cannot boot.
missing=()
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*) grep -qxF "$line" "$build/.config" || missing+=("$line") ;;
        "# CONFIG_"*" is not set") grep -q "^${line#\# }" "$build/.config" 2>/dev/null && missing+=("$line") ;;
    esac
done < "$build/runm.fragment"
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: Kconfig did not keep these options (a dependency is missing):" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

jobs=$(( $(nproc) + 1 ))
say "building vmlinux and bzImage with make -j$jobs (about 5 min on 2 cores the first time; log: $build/build.log)"
start=$(date +%s)
( make -C "$src" O="$build" -j"$jobs" vmlinux bzImage >"$build/build.log" 2>&1 ) &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && say "still building ($(( $(date +%s) - start )) s, $(grep -c '^  CC' "$build/build.log" || true) files compiled)"
done
if ! wait "$pid"; then
    tail -30 "$build/build.log" >&2
    echo "build.sh: kernel build failed (log: $build/build.log)" >&2
    exit 1
fi
say "built in $(( $(date +%s) - start )) s"

mkdir -p "$out.tmp"
cp "$build/vmlinux" "$out.tmp/vmlinux"
cp "$build/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$build/.config" "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
say "kernel: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes)"
echo "$out"
