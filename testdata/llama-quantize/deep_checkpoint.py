#!/usr/bin/env python3
"""Writes a random GPT-2 checkpoint of a given depth and width (Hugging Face layout,
model.safetensors in f32), to see which tensor types llama-quantize picks per layer.

    python3 deep_checkpoint.py OUT_DIR N_LAYER N_EMBD TOKENIZER_DIR
"""
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np


def main():
    out, n_layer, n_embd, tok = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    n_vocab, n_ctx, n_head = 50257, 64, 2
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    tensors = {
        "wte.weight": (n_vocab, n_embd),
        "wpe.weight": (n_ctx, n_embd),
        "ln_f.weight": (n_embd,),
        "ln_f.bias": (n_embd,),
    }
    for i in range(n_layer):
        p = f"h.{i}."
        tensors.update({
            p + "ln_1.weight": (n_embd,), p + "ln_1.bias": (n_embd,),
            p + "attn.c_attn.weight": (n_embd, 3 * n_embd), p + "attn.c_attn.bias": (3 * n_embd,),
            p + "attn.c_proj.weight": (n_embd, n_embd), p + "attn.c_proj.bias": (n_embd,),
            p + "ln_2.weight": (n_embd,), p + "ln_2.bias": (n_embd,),
            p + "mlp.c_fc.weight": (n_embd, 4 * n_embd), p + "mlp.c_fc.bias": (4 * n_embd,),
            p + "mlp.c_proj.weight": (4 * n_embd, n_embd), p + "mlp.c_proj.bias": (n_embd,),
        })
    header, blobs, off = {}, [], 0
    for name, shape in tensors.items():
        a = (rng.standard_normal(shape) * 0.02).astype("<f4")
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": n_vocab,
        "n_positions": n_ctx, "n_ctx": n_ctx, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
        "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256,
        "tie_word_embeddings": True, "activation_function": "gelu_new",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for f in ["vocab.json", "merges.txt"]:
        shutil.copy(tok / f, out / f)


if __name__ == "__main__":
    main()
