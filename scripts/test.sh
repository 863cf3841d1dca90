#!/usr/bin/env bash
# Runs every test runm has, on this host:
#   formatting and lints, unit tests, device tests against real guest memory,
#   KVM tests on this host's /dev/kvm (tiny guests, the guest kernel's boot),
#   containerd, Podman and Docker driving runm,
#   the software-emulated KVM test host (runm-vmm's whole path, guest user
#   space included), and a bounded fuzz campaign of the device parsers and the
#   host side of the agent protocol.
# Installs what it needs first (scripts/setup.sh). Takes about 45-55 minutes
# on a fresh 2-core machine (packages, kernel and virtiofsd builds included),
# about 15 when cached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

step() { echo "[test] $*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --quiet --workspace --all-targets --all-features -- -D warnings
step "cargo build (binaries the integration tests drive)"
cargo build --quiet --workspace --bins
step "cargo test"
cargo test --workspace -- --test-threads=2
step "fuzzing the virtio device parsers and the agent protocol (bounded: 20 s a target)"
bash devices/fuzz/run.sh 20
