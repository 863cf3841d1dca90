#!/usr/bin/env bash
# Bounded fuzzing campaign over the virtio device targets and the host side of
# the agent protocol, for CI and by hand.
#
#   devices/fuzz/run.sh [SECONDS]        # SECONDS per target, default 20
#
# Which engine runs, in order of preference (the script prints the one used):
#   1. cargo-fuzz + a nightly toolchain: libFuzzer, coverage-guided, with
#      AddressSanitizer (`cargo +nightly fuzz run`).
#   2. cargo-fuzz on the stable toolchain: libFuzzer, coverage-guided, without
#      a sanitizer (`-s none`: -Zsanitizer needs nightly, the coverage
#      instrumentation does not).
#   3. No cargo-fuzz: the stable driver `stable_fuzz` (src/bin), which feeds
#      inputs from a seeded PRNG through the same target functions. Not
#      coverage-guided; the input formats are valid-by-default to make up.
# cargo-fuzz is not installed here unless FUZZ_INSTALL_CARGO_FUZZ=1 (it takes
# minutes to build); set FUZZ_ENGINE=stable|cargo-fuzz to force an engine and
# FUZZ_SEED to fix the stable driver's seed.
#
# Builds are debug builds (`--dev`): the campaign is short, compile time
# dominates. Crashing inputs land in devices/fuzz/artifacts/<target>/; replay
# one with `cargo fuzz run <target> <file>` or
# `cargo run --no-default-features --bin stable_fuzz -- <target> --replay <file>`.
set -euo pipefail

SECONDS_PER_TARGET="${1:-20}"
TARGETS=(virtio_block virtio_rng virtio_vsock virtio_net agent_proto)
cd "$(dirname "$0")"

if [[ "${FUZZ_INSTALL_CARGO_FUZZ:-0}" == 1 ]] && ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

engine="${FUZZ_ENGINE:-}"
if [[ -z "$engine" ]]; then
    if cargo fuzz --version >/dev/null 2>&1; then
        engine=cargo-fuzz
    else
        engine=stable
    fi
fi

status=0
case "$engine" in
cargo-fuzz)
    toolchain=()
    sanitizer=(-s none)
    if rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=(+nightly)
        sanitizer=(-s address)
    fi
    echo "fuzz engine: cargo-fuzz (libFuzzer) ${toolchain[*]:-stable} ${sanitizer[*]}, ${SECONDS_PER_TARGET}s per target"
    for t in "${TARGETS[@]}"; do
        mkdir -p "corpus/$t"
        if ! cargo "${toolchain[@]}" fuzz run --dev "${sanitizer[@]}" "$t" "corpus/$t" -- \
            -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -max_len=4096 -len_control=0 \
            -rss_limit_mb=2048 -print_final_stats=1; then
            echo "fuzz: $t FAILED (artifacts in devices/fuzz/artifacts/$t)"
            status=1
        fi
    done
    ;;
stable)
    echo "fuzz engine: stable random driver (cargo-fuzz not available), ${SECONDS_PER_TARGET}s per target"
    cargo build --no-default-features --bin stable_fuzz
    seed=(); [[ -n "${FUZZ_SEED:-}" ]] && seed=(--seed "$FUZZ_SEED")
    for t in "${TARGETS[@]}"; do
        if ! ./target/debug/stable_fuzz "$t" --seconds "$SECONDS_PER_TARGET" "${seed[@]}"; then
            echo "fuzz: $t FAILED (artifacts in devices/fuzz/artifacts/$t)"
            status=1
        fi
    done
    ;;
*)
    echo "unknown FUZZ_ENGINE=$engine (cargo-fuzz or stable)" >&2
    exit 64
    ;;
esac
if [[ $status == 0 ]]; then
    echo "fuzz: ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET}s each without a failure"
fi
exit $status
