//! Dequantization of every block type, bit for bit against the `gguf` Python
//! package (gguf-py 0.19.0, `gguf.quants.dequantize`): random blocks with finite
//! scales and edge cases, made once by `testdata/quant-vectors/make_vectors.py`.

use std::path::PathBuf;

use gptq_core::gguf::GgmlType;
use gptq_core::quant::types::dequantize_row;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/quant-vectors")
}

/// A dequantization vector file: the type, the blocks' bytes, gguf-py's values.
fn read(name: &str) -> (GgmlType, Vec<u8>, Vec<f32>) {
    let path = vectors_dir().join(name);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&raw[..4], b"GQV1", "{name}: bad magic");
    let word = |i: usize| u32::from_le_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap());
    let ty = GgmlType::from_id(word(0)).expect("known type");
    assert_eq!(word(1), 0, "{name}: not a dequantization vector");
    let n_blocks = word(2) as usize;
    let n_bytes = n_blocks * ty.type_size();
    let body = &raw[16..];
    let values: Vec<f32> = body[n_bytes..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), n_blocks * ty.block_size(), "{name}: length");
    (ty, body[..n_bytes].to_vec(), values)
}

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let names = [
        "q4_0", "q8_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
        "iq4_xs", "bf16",
    ];
    for name in names {
        let (ty, bytes, want) = read(&format!("{name}.dequant.bin"));
        assert_eq!(ty.name().to_ascii_lowercase(), name);
        let mut got = vec![f32::NAN; want.len()];
        dequantize_row(ty, &bytes, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{ty}: value {i} (block {}): gptq {g:e}, gguf-py {w:e}",
                i / ty.block_size()
            );
        }
        // Also from unaligned bytes, as a file read into a Vec may be.
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let mut again = vec![f32::NAN; want.len()];
        dequantize_row(ty, &shifted[1..], &mut again).unwrap();
        assert!(
            got.iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}
