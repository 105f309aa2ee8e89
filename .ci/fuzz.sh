#!/usr/bin/env bash
# CI: every fuzz target briefly from its committed seeds (regressions and
# shallow bugs), and the Miri tests. Needs the nightly toolchain (with miri and
# rust-src) and cargo-fuzz; installs them when missing.
#   FUZZ_SECONDS (default 10): time per target; the targets run two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
# Checked again here: the steps before may have replaced it.
source .ci/devnull.sh
exec </dev/null
seconds=${FUZZ_SECONDS:-10}
start=$SECONDS
note() { echo "-- $* ($((SECONDS - start)) s)"; }

rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --version 0.13.2 --locked
fi
note "toolchain: $(rustc +nightly --version), $(cargo +nightly fuzz --version)"

cd fuzz
cargo +nightly fuzz build
note "fuzz targets built"
# The seed generator is no fuzz target, so the build above skips it: checked
# here, or a broken generator goes unnoticed until the seeds need remaking.
cargo +nightly check -q --example make_seeds
note "seed generator (examples/make_seeds.rs) checked"
targets=$(cargo +nightly fuzz list)
failed=()
run_pair() {
    local pids=() names=()
    for t in "$@"; do
        ./run.sh "$t" "$seconds" >"target/$t.log" 2>&1 &
        pids+=($!)
        names+=("$t")
    done
    for i in "${!pids[@]}"; do
        local t=${names[$i]}
        if wait "${pids[$i]}"; then
            echo "$t: $(grep -E '^#[0-9]+.*(DONE|pulse)' "target/$t.log" | tail -1)"
        else
            echo "$t: FAILED"; tail -40 "target/$t.log"; failed+=("$t")
        fi
    done
}
set -- $targets
while [ $# -gt 0 ]; do
    if [ $# -ge 2 ]; then run_pair "$1" "$2"; shift 2; else run_pair "$1"; shift; fi
done
note "fuzz targets ran ${seconds} s each"
cd ..

# Miri: the GGUF reader and writer (and the in-memory file Miri reads instead
# of a mapping), the Q8_0 and Q4_0 scalar references (quantize, dequantize, dot),
# dequantization of every type, block packing and the scratch buffers: the code
# next to `unsafe` (the mapping, the block casts). The sampler and the tokenizer
# are safe Rust covered by their fuzz targets; under Miri their tests take
# minutes each (the BPE merge test alone over 3 minutes), so they stay out.
# Tree Borrows: under Stacked Borrows every test that runs rayon's pool stops
# inside crossbeam's deque (a retag error in the dependency, not in this code);
# rayon's threads outlive main, so leaks are ignored.
source .ci/devnull.sh  # again: Miri's rustc reads its `-` input from /dev/null
MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-tree-borrows -Zmiri-ignore-leaks" \
    cargo +nightly miri test -p gptq-core --lib -- \
    gguf:: quant::types::q8_0 quant::types::q4_0 quant::types::dequant quant::pack \
    quant::scratch
note "miri"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that found a crash: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
