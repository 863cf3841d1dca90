#!/usr/bin/env bash
# Builds runm-agent as a static binary and packs it as the guest's initramfs.
#
#   guest-agent/build-initramfs.sh [OUTDIR]
#
# The initramfs is an uncompressed newc cpio (the guest kernel unpacks it
# without decompressing: much faster under emulation) holding /init (the
# agent) and the empty directories it mounts on: dev, proc, sys, run, tmp.
#
# The agent is built with `-C target-feature=+crt-static` for
# x86_64-unknown-linux-gnu in its own target directory (target/agent, or
# $RUNM_AGENT_TARGET_DIR), so the workspace's normal build cache is not
# invalidated by the different flags. The cpio is cached under
# ${RUNM_CACHE_DIR:-~/.cache/runm}/initramfs/ by the hash of the binary and of
# this script. With OUTDIR, it is also copied to OUTDIR/agent.cpio.
# Progress goes to stderr; the last line on stdout is the cpio's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
outdir=
case "${1:-}" in
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    "") ;;
    *) outdir=$1 ;;
esac

say() { echo "[agent-initramfs] $*" >&2; }

for tool in cargo cpio sha256sum file; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-initramfs.sh: $tool is needed" >&2; exit 1; }
done

triple=x86_64-unknown-linux-gnu
target_dir=${RUNM_AGENT_TARGET_DIR:-$repo/target/agent}
say "building runm-agent (static, $triple, release)"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --manifest-path "$repo/Cargo.toml" --release -p guest-agent --bin runm-agent \
    --target "$triple" --target-dir "$target_dir" >&2
bin=$target_dir/$triple/release/runm-agent

# A dynamic /init would fail in the guest with a bare "No such file": catch it here.
kind=$(file -b "$bin")
case "$kind" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-initramfs.sh: $bin is not static: $kind" >&2; exit 1 ;;
esac

cache=${RUNM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runm}
key=$(cat "$bin" "$here/build-initramfs.sh" | sha256sum | cut -c1-16)
out=$cache/initramfs/agent-$key.cpio
if [ -f "$out" ]; then
    say "cached: $out"
else
    mkdir -p "$cache/initramfs"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/runm-initramfs.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{dev,proc,sys,run,tmp}
    chmod 1777 "$stage/tmp"
    install -m 0755 "$bin" "$stage/init"
    # Same bytes for the same binary: fixed times, root ownership, sorted names.
    find "$stage" -exec touch -h -d @0 {} +
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible) > "$out.tmp.$$"
    mv "$out.tmp.$$" "$out"
    say "initramfs: $out ($(stat -c %s "$out") bytes; agent $(stat -c %s "$bin") bytes)"
fi
if [ -n "$outdir" ]; then
    mkdir -p "$outdir"
    cp "$out" "$outdir/agent.cpio"
    out=$(cd "$outdir" && pwd)/agent.cpio
fi
echo "$out"
