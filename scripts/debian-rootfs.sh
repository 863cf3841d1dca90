#!/usr/bin/env bash
# Builds a Debian 12 minimal root file system (debootstrap --variant=minbase)
# for benchmarks that need a realistic one (about 130 MB), and caches it.
#
#   scripts/debian-rootfs.sh
#
# The mirror is the first Debian one in this machine's apt sources (no other
# network is used). The tree is kept in $RUNM_CACHE_DIR (default
# ~/.cache/runm)/debian-rootfs/bookworm-minbase and reused. Needs root and
# debootstrap (scripts/setup.sh installs it). Progress goes to stderr; the
# last line on stdout is the directory.
set -euo pipefail

say() { echo "[debian-rootfs] $*" >&2; }

cache=${RUNM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runm}
dir="$cache/debian-rootfs/bookworm-minbase"
if [ -f "$dir/.complete" ]; then
    say "cached: $dir"
    echo "$dir"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debian-rootfs.sh: debootstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-rootfs.sh: debootstrap needs root" >&2; exit 1; }
mirror=$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]*/debian/?' | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
tmp="$dir.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
say "debootstrap --variant=minbase bookworm from $mirror (about 30 s)"
debootstrap --variant=minbase bookworm "$tmp" "$mirror" >&2
# What a container image leaves out: the package caches.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
say "built: $dir ($(du -sm "$dir" | cut -f1) MB)"
echo "$dir"
