//! The 32-element quantizers and BF16 against the `gguf` Python package
//! (gguf-py 0.19.0, `gguf.quants.quantize`, which reproduces ggml's reference
//! quantizers): random rows with edge cases (zeros, a constant block, ties, an
//! outlier, values whose scale underflows f16, NaN and infinities for BF16), made
//! by `testdata/quant-vectors/make_vectors.py`.

use std::path::PathBuf;

use gptq_convert::quantize::quantize_row;
use gptq_core::gguf::GgmlType;

#[test]
fn reference_quantizers_match_gguf_py_byte_for_byte() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/quant-vectors");
    for name in ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16"] {
        let raw = std::fs::read(dir.join(format!("{name}.quant.bin"))).unwrap();
        assert_eq!(&raw[..4], b"GQV1");
        let word = |i: usize| u32::from_le_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap());
        let ty = GgmlType::from_id(word(0)).unwrap();
        assert_eq!(word(1), 1, "{name}: not a quantization vector");
        let n = word(2) as usize * ty.block_size();
        let x: Vec<f32> = raw[16..16 + 4 * n]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want = &raw[16 + 4 * n..];
        let got = quantize_row(ty, &x, None).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "{ty}: byte {i} (block {}) differs: gptq {:#04x}, gguf-py {:#04x}",
                i / ty.type_size(),
                got[i],
                want[i]
            );
        }
    }
}
