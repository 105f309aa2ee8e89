#!/usr/bin/env bash
# NEON kernels under emulation: builds gptq-core's tests for aarch64 and runs
# them under qemu-aarch64 three times:
#   1. qemu's default CPU, which has the dot-product and int8 matrix-multiply
#      extensions: the `smmla` table (`neon+i8mm`), and the others;
#   2. QEMU_CPU=neoverse-n1, which has dotprod but not i8mm: the `sdot` table;
#   3. QEMU_CPU=cortex-a53, which has neither: the widening-multiply table.
# Installs what it needs (apt packages, the rustup target); safe to rerun.
# Exits non-zero when anything fails. Called by .ci/run; runs on its own too.
set -euo pipefail
cd "$(dirname "$0")/.."
# Checked again here: the steps before may have replaced it.
source .ci/devnull.sh
exec </dev/null

TARGET=aarch64-unknown-linux-gnu
export CARGO_TERM_COLOR=never
export DEBIAN_FRONTEND=noninteractive
# Cross linker and qemu runner for the target (see the file).
CARGO=(cargo --config .ci/qemu-aarch64.toml)

start=$SECONDS
say() { echo "-- neon: $* ($((SECONDS - start)) s)"; }

# Cross linker, target C library, user-mode emulator.
need=()
for pkg in qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -E)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${need[@]}"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    say "adding the rust target $TARGET"
    rustup target add "$TARGET"
fi

# Every unit test (the kernels' own tests are in src/quant/neon/tests.rs), plus the
# integration tests that run the forward pass through the kernels (model_load)
# and map GGUF files (gguf_roundtrip). The tokenizer oracle is left to the
# host: it is pure string processing and costs 20 s per emulated run.
TESTS=(-p gptq-core --lib --test model_load --test gguf_roundtrip)

say "building gptq-core's tests for $TARGET"
"${CARGO[@]}" test --target "$TARGET" "${TESTS[@]}" --no-run

status=0
# `GPTQ_REQUIRE_KERNELS` names the tables each emulated CPU must run and
# test (a kernel test that skips one fails), and each path must choose the
# last one named: so each run is known to exercise the kernels it is meant to.
say "tests on qemu's default CPU (dotprod, i8mm: neon+i8mm table)"
env -u QEMU_CPU GPTQ_REQUIRE_KERNELS=scalar,neon,neon+dotprod,neon+i8mm \
    "${CARGO[@]}" test --target "$TARGET" "${TESTS[@]}" --no-fail-fast || status=1

say "tests on QEMU_CPU=neoverse-n1 (dotprod, no i8mm: neon+dotprod table)"
env QEMU_CPU=neoverse-n1 GPTQ_REQUIRE_KERNELS=scalar,neon,neon+dotprod \
    "${CARGO[@]}" test --target "$TARGET" "${TESTS[@]}" --no-fail-fast || status=1

say "tests on QEMU_CPU=cortex-a53 (no dotprod: neon table)"
env QEMU_CPU=cortex-a53 GPTQ_REQUIRE_KERNELS=scalar,neon \
    "${CARGO[@]}" test --target "$TARGET" "${TESTS[@]}" --no-fail-fast || status=1

if [ "$status" -ne 0 ]; then
    say "FAILED"
else
    say "ok"
fi
exit "$status"
