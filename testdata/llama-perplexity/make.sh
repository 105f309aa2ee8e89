#!/usr/bin/env bash
# Records llama-perplexity (llama.cpp c392e50) on llama-quantize's mixes of the
# fixture models, for gptq-convert/tests/llama_perplexity.rs. Run from the
# repository root:
#
#   testdata/llama-perplexity/make.sh /work/peers/llama.cpp/build/bin
#
# For trained-small (256 wide: K types throughout) and tiny-scaled (64 wide:
# the fallback types IQ4_NL, Q5_0, Q5_1, Q8_0 appear): gptq-convert's F32 file
# with output.weight, each mix made by llama-quantize from it, and
# llama-perplexity over the text excerpt the test uses (the start of
# heldout-books.txt up to the last line end before byte 24000), chunks of the
# model's context. Writes testdata/llama-perplexity/ppl.json.
set -euo pipefail
BIN=$(realpath "$1")
ROOT=$(git rev-parse --show-toplevel)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MIXES="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL IQ4_XS BF16"
cargo build --release -q -p gptq-convert
python3 - "$ROOT/testdata/text/heldout-books.txt" "$TMP/text.txt" <<'PY'
import sys
raw = open(sys.argv[1], 'rb').read()[:24000]
open(sys.argv[2], 'wb').write(raw[:raw.rindex(b'\n') + 1])
PY
out="{\n  \"llama_cpp\": \"c392e50\",\n  \"text\": \"heldout-books.txt up to the last line end before byte 24000\",\n  \"ppl\": ["
sep=""
for model in trained-small tiny-scaled; do
  ctx=$([ $model = trained-small ] && echo 256 || echo 128)
  f32=$TMP/$model-f32.gguf
  "$ROOT/target/release/gptq-convert" "$ROOT/testdata/$model" -o "$f32" --type f32 --output-weight --quiet
  for mix in $MIXES; do
    "$BIN/llama-quantize" "$f32" "$TMP/q.gguf" "$mix" >/dev/null 2>&1
    ppl=$("$BIN/llama-perplexity" -m "$TMP/q.gguf" -f "$TMP/text.txt" -c $ctx -b $ctx -t 2 2>&1 \
      | grep -o 'Final estimate: PPL = [0-9.]*' | awk '{print $5}')
    echo "$model $mix $ppl" >&2
    out="$out$sep\n    {\"model\": \"$model\", \"mix\": \"$mix\", \"ctx\": $ctx, \"ppl\": $ppl}"
    sep=","
  done
done
printf "$out\n  ]\n}\n" > "$ROOT/testdata/llama-perplexity/ppl.json"
