#!/usr/bin/env bash
# Records llama-perplexity on llama-quantize's mixes of the fixture models, for
# gptq-convert/tests/llama_perplexity.rs: ik_llama.cpp's (8337e4cd), which the
# test checks, and mainline llama.cpp's (c392e50) beside it. Run from the
# repository root with the two peers' bin folders (../shared/tools/setup-peers.sh):
#
#   testdata/llama-perplexity/make.sh /work/peers/llama.cpp/build/bin \
#       /work/peers/ik_llama.cpp/build/bin
#
# Why ik_llama.cpp is the reference: mainline c392e50 on a CPU with AMX-INT8
# moves Q4_0 (and other legacy) tensors to its AMX backend, whose results on
# these files are not ggml's reference numerics (trained-small Q4_0: 190.08
# there, 179.60 in ik_llama.cpp and 179.53 in gptq on the AMX and AVX2 paths). On CPUs without
# AMX the two peers agree. llama-quantize is mainline's (the files are the same
# bytes as gptq-convert's, see llama_quantize_identity.rs).
#
# For trained-small (256 wide: K types throughout) and tiny-scaled (64 wide:
# the fallback types IQ4_NL, Q5_0, Q5_1, Q8_0 appear): gptq-convert's F32 file
# with output.weight, each mix made by llama-quantize from it, and
# llama-perplexity over the text excerpt the test uses (the start of
# heldout-books.txt up to the last line end before byte 12000), chunks of the
# model's context. Writes testdata/llama-perplexity/ppl.json.
set -euo pipefail
BIN=$(realpath "$1")
IK=$(realpath "$2")
ROOT=$(git rev-parse --show-toplevel)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MIXES="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL IQ4_XS BF16"
CONVERT=${GPTQ_CONVERT:-}
if [ -z "$CONVERT" ]; then
  cargo build --release -q -p gptq-convert
  CONVERT=$ROOT/target/release/gptq-convert
fi
python3 - "$ROOT/testdata/text/heldout-books.txt" "$TMP/text.txt" <<'PY'
import sys
raw = open(sys.argv[1], 'rb').read()[:12000]
open(sys.argv[2], 'wb').write(raw[:raw.rindex(b'\n') + 1])
PY
out="{\n  \"ppl_from\": \"ik_llama.cpp 8337e4cd llama-perplexity\",\n  \"mainline_from\": \"llama.cpp c392e50 llama-perplexity\",\n  \"text\": \"heldout-books.txt up to the last line end before byte 12000\",\n  \"ppl\": ["
sep=""
for model in trained-small tiny-scaled; do
  ctx=$([ $model = trained-small ] && echo 256 || echo 128)
  f32=$TMP/$model-f32.gguf
  "$CONVERT" "$ROOT/testdata/$model" -o "$f32" --type f32 --output-weight --quiet
  for mix in $MIXES; do
    "$BIN/llama-quantize" "$f32" "$TMP/q.gguf" "$mix" >/dev/null 2>&1
    ppl=$("$IK/llama-perplexity" -m "$TMP/q.gguf" -f "$TMP/text.txt" -c $ctx -b $ctx -t 2 2>&1 \
      | grep -o 'Final estimate: PPL.* = [0-9.]*' | awk '{print $NF}')
    main=$("$BIN/llama-perplexity" -m "$TMP/q.gguf" -f "$TMP/text.txt" -c $ctx -b $ctx -t 2 2>&1 \
      | grep -o 'Final estimate: PPL = [0-9.]*' | awk '{print $5}')
    echo "$model $mix ik $ppl mainline $main" >&2
    out="$out$sep\n    {\"model\": \"$model\", \"mix\": \"$mix\", \"ctx\": $ctx, \"ppl\": $ppl, \"mainline\": $main}"
    sep=","
  done
done
printf "$out\n  ]\n}\n" > "$ROOT/testdata/llama-perplexity/ppl.json"
