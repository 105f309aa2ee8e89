#!/usr/bin/env bash
# Records what llama-quantize (llama.cpp c392e50) makes of gptq-convert's F32 files, so that
# gptq-convert/tests/llama_quantize_identity.rs can check gptq-convert's quantizers and mixes
# byte for byte without llama.cpp. Run from the repository root:
#
#   testdata/llama-quantize/make_manifest.sh /work/peers/llama.cpp/build/bin
#
# Needs: the peer's llama-quantize and llama-imatrix, python3 with gguf (pip install gguf)
# and numpy. Writes testdata/llama-quantize/{manifest.json,*.imatrix}.
#  - trained-small (256 wide, 4 layers) and tiny-scaled (64 wide, 2 layers: every matrix but
#    ffn_down has rows that are not whole K blocks, so the fallback types appear): every mix,
#    without and with an importance matrix (llama-imatrix --process-output over 64 chunks of
#    128 tokens of wiki.test.raw), the sha256 of every weight matrix;
#  - a random 48-layer, 64-wide checkpoint (gpt2-xl's depth; its rows fall back like
#    gpt2-xl's): the type llama-quantize picks for each matrix, for every mix.
set -euo pipefail
BIN=$(realpath "$1")
ROOT=$(git rev-parse --show-toplevel)
HERE=$ROOT/testdata/llama-quantize
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MIXES="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL IQ4_XS"

cargo build --release -q -p gptq-convert
CONVERT=$ROOT/target/release/gptq-convert
head -c 400000 "$ROOT/testdata/text/wiki.test.raw" > "$TMP/calib.txt"

entries=()
record() { # model mix imatrix(0/1) file [--types-only]
  local json
  json=$(python3 "$HERE/hash_tensors.py" "$4" ${5:-})
  entries+=("{\"model\": \"$1\", \"mix\": \"$2\", \"imatrix\": $([ "$3" = 1 ] && echo true || echo false), \"file\": $json}")
}

for model in trained-small tiny-scaled; do
  f32=$TMP/$model-f32.gguf
  "$CONVERT" "$ROOT/testdata/$model" -o "$f32" --type f32 --output-weight --quiet
  "$BIN/llama-imatrix" -m "$f32" -f "$TMP/calib.txt" -o "$HERE/$model.imatrix" -c 128 --chunks 64 \
      --process-output -t 2 >/dev/null 2>&1
  for mix in $MIXES; do
    "$BIN/llama-quantize" "$f32" "$TMP/out.gguf" "$mix" >/dev/null 2>&1
    record "$model" "$mix" 0 "$TMP/out.gguf"
    "$BIN/llama-quantize" --imatrix "$HERE/$model.imatrix" "$f32" "$TMP/out.gguf" "$mix" >/dev/null 2>&1
    record "$model" "$mix" 1 "$TMP/out.gguf"
  done
done

python3 "$HERE/deep_checkpoint.py" "$TMP/deep" 48 64 "$ROOT/testdata/tokenizer"
"$CONVERT" "$TMP/deep" -o "$TMP/deep-f32.gguf" --type f32 --output-weight --quiet
for mix in $MIXES; do
  "$BIN/llama-quantize" "$TMP/deep-f32.gguf" "$TMP/out.gguf" "$mix" >/dev/null 2>&1
  record deep-48x64 "$mix" 0 "$TMP/out.gguf" --types-only
done

{
  echo "{"
  echo "  \"llama_cpp\": \"$(git -C "$BIN/../.." rev-parse --short=7 HEAD 2>/dev/null || echo unknown)\","
  echo "  \"gguf_py\": \"$(python3 -c 'from importlib import metadata; print(metadata.version("gguf"))')\","
  echo "  \"commands\": ["
  echo "    \"gptq-convert testdata/MODEL -o MODEL-f32.gguf --type f32 --output-weight\","
  echo "    \"llama-imatrix -m MODEL-f32.gguf -f <first 400000 bytes of testdata/text/wiki.test.raw> -o testdata/llama-quantize/MODEL.imatrix -c 128 --chunks 64 --process-output -t 2\","
  echo "    \"llama-quantize MODEL-f32.gguf out.gguf MIX\","
  echo "    \"llama-quantize --imatrix testdata/llama-quantize/MODEL.imatrix MODEL-f32.gguf out.gguf MIX\","
  echo "    \"deep-48x64: python3 testdata/llama-quantize/deep_checkpoint.py deep 48 64 testdata/tokenizer, then as above without an imatrix (types only)\""
  echo "  ],"
  echo "  \"files\": ["
  n=${#entries[@]}
  for i in "${!entries[@]}"; do
    sep=","; [ $((i + 1)) -eq "$n" ] && sep=""
    echo "    ${entries[$i]}$sep"
  done
  echo "  ]"
  echo "}"
} > "$HERE/manifest.json"
echo "wrote $HERE/manifest.json (${#entries[@]} files)"
