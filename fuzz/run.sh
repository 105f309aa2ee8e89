#!/usr/bin/env bash
# Runs one fuzz target for a while from its committed seeds and its working
# corpus, with the limits every run uses:
#   fuzz/run.sh TARGET SECONDS [more libFuzzer flags]
# -rss_limit_mb / -malloc_limit_mb: an input that makes a reader hold or ask
# for more memory is a crash (the readers' caps are far below these);
# -timeout: an input that takes longer than 10 s is a hang.
# Built artifacts must exist (`cargo +nightly fuzz build` in fuzz/).
set -euo pipefail
cd "$(dirname "$0")"
target=$1
seconds=$2
shift 2
dict=""
case $target in
    pytorch_*) dict=dict/pickle.dict ;;
    gguf_parse) dict=dict/gguf.dict ;;
    hf_config | hf_vocab) dict=dict/json.dict ;;
    safetensors) dict=dict/safetensors.dict ;;
    serve_request) dict=dict/serve.dict ;;
esac
mkdir -p "corpus/$target" "seeds/$target" artifacts/"$target"
# FUZZ_TARGET_DIR picks another build (e.g. one without ASan for long runs:
# `cargo +nightly fuzz build -s none --target-dir target-nosan`).
bin=${FUZZ_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/$target
exec "$bin" "corpus/$target" "seeds/$target" \
    -artifact_prefix="artifacts/$target/" \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 \
    ${dict:+-dict=$dict} "$@"
