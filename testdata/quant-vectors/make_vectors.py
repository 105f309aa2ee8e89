#!/usr/bin/env python3
"""Makes the block-format test vectors in this folder with gguf-py (`pip install gguf`).

For each type, `<type>.dequant.bin` holds random blocks (whose f16 scales are finite, with
edge cases: zero scales, negative scales and mins, subnormal and largest scales; in the
256-element types the last two blocks have all sub-scale bits set and all clear) and what `gguf.quants.dequantize` makes of them. For the types gguf-py can also
quantize, `<type>.quant.bin` holds random rows (with edge cases: zeros, ties, one outlier)
and `gguf.quants.quantize`'s bytes for them.

File layout (little-endian): magic b"GQV1", u32 ggml type id, u32 kind (0 dequant, 1 quant),
u32 block count, then for kind 0 the blocks' bytes followed by the f32 values, for kind 1
the f32 values followed by the blocks' bytes.

Run once; the outputs are committed, so the tests need neither Python nor a network.
    python3 testdata/quant-vectors/make_vectors.py
"""
import struct
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = Path(__file__).resolve().parent

# Byte offsets of the f16 scale fields of each block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q8_0: [0],
    T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0],
}
# Byte ranges of the sub-scale fields, for the extreme-sub-scale blocks.
SUB_SCALES = {
    T.Q2_K: (0, 16), T.Q3_K: (96, 108), T.Q4_K: (4, 16), T.Q5_K: (4, 16),
    T.Q6_K: (192, 208), T.IQ4_XS: (2, 8),
}
N_BLOCKS = {32: 32, 256: 8}


def finite_f16(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (bits & 0x7C00) == 0x7C00
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint32).astype(np.uint16)
        bad = (bits & 0x7C00) == 0x7C00
    return bits


def edge_scales(i, n_fields):
    """f16 bit patterns for the first few blocks: zero, negative, subnormal, largest."""
    table = [
        [0x0000] * n_fields,            # zero scale (and zero min)
        [0x8000] * n_fields,            # negative zero
        [0xBC00, 0xC000][:n_fields],    # negative d (-1) and negative min (-2)
        [0x0001, 0x83FF][:n_fields],    # subnormals
        [0x7BFF, 0xFBFF][:n_fields],    # +-65504
        [0x3C00, 0x0000][:n_fields],    # d 1, min 0
    ]
    return table[i] if i < len(table) else None


def dequant_blocks(qtype, rng):
    block, size = GGML_QUANT_SIZES[qtype]
    n = N_BLOCKS[block]
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint16).astype(np.uint8)
    fields = F16_FIELDS[qtype]
    n_edge = 6 if block == 32 else 5
    for b in range(n):
        bits = edge_scales(b, len(fields)) if b < n_edge else None
        if bits is None:
            bits = finite_f16(rng, len(fields))
        for off, v in zip(fields, bits):
            raw[b, off:off + 2] = np.frombuffer(struct.pack("<H", int(v)), dtype=np.uint8)
    if qtype in SUB_SCALES:
        lo, hi = SUB_SCALES[qtype]
        # Extreme sub-scales on two blocks with ordinary scales: all bits set, all clear.
        raw[n - 2, lo:hi] = 0xFF
        raw[n - 1, lo:hi] = 0x00
        for off in fields:
            raw[n - 2, off:off + 2] = np.frombuffer(struct.pack("<H", 0x3555), dtype=np.uint8)
            raw[n - 1, off:off + 2] = np.frombuffer(struct.pack("<H", 0xB555), dtype=np.uint8)
    return raw


def bf16_blocks(rng):
    bits = rng.integers(0, 1 << 16, size=256, dtype=np.uint32).astype(np.uint16)
    bits[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7F7F]  # zeros, infinities, subnormal, largest
    return bits.view(np.uint8).reshape(256, 2)


def quant_rows(block, rng):
    n = N_BLOCKS[block] * block
    x = rng.standard_normal(n).astype(np.float32) * np.float32(0.05)
    x[:block] = 0.0                                      # an all-zero block
    x[block:2 * block] = np.float32(1.0)                 # a constant block
    x[2 * block + 5] = np.float32(40.0)                  # one outlier
    x[3 * block:4 * block] = (np.arange(block, dtype=np.float32) - 8) / np.float32(2)  # ties
    x[4 * block:5 * block] *= np.float32(-1e-30)         # tiny values (f16 scale underflows)
    x[5 * block:6 * block] = -np.abs(x[5 * block:6 * block])  # negative only
    return x


def write(name, qtype, kind, n_blocks, first, second):
    path = OUT / name
    with open(path, "wb") as f:
        f.write(b"GQV1")
        f.write(struct.pack("<III", int(qtype), kind, n_blocks))
        f.write(first.tobytes())
        f.write(second.tobytes())
    print(f"{name}: {path.stat().st_size} bytes")


def main():
    rng = np.random.default_rng(20240901)
    for qtype in F16_FIELDS:
        raw = dequant_blocks(qtype, rng)
        y = gguf.quants.dequantize(raw.reshape(-1), qtype).astype(np.float32)
        write(f"{qtype.name.lower()}.dequant.bin", qtype, 0, raw.shape[0], raw, y)
    raw = bf16_blocks(rng)
    y = gguf.quants.dequantize(raw.reshape(-1), T.BF16).astype(np.float32)
    write("bf16.dequant.bin", T.BF16, 0, raw.shape[0], raw, y)

    for qtype in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        block, _ = GGML_QUANT_SIZES[qtype]
        x = quant_rows(block, rng)
        q = gguf.quants.quantize(x.reshape(-1, block), qtype).reshape(-1)
        write(f"{qtype.name.lower()}.quant.bin", qtype, 1, x.size // block, x, q)
    x = rng.standard_normal(256).astype(np.float32) * np.float32(3.0)
    x[:8] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 3.4e38, -1.00390625], dtype=np.float32)
    # Exact halfway cases in bf16 (round to even both ways).
    x[8:10] = np.array([1.00390625, 1.01171875], dtype=np.float32)
    q = gguf.quants.quantize(x, T.BF16).reshape(-1)
    write("bf16.quant.bin", T.BF16, 1, x.size, x, q)
    print(f"gguf {metadata.version('gguf')}, numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
