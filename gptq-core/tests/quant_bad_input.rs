//! Bad quantized data on the reading side: K-type tensors whose rows are not
//! whole super-blocks, files cut inside a block, and NaN or infinite scales.
//! Each is a clear error or a defined result, never a panic.

use gptq_core::Error;
use gptq_core::gguf::{GgmlType, GgufFile, GgufWriter};
use gptq_core::quant::types::{dequantize_row, validate_row};
use half::f16;

/// A file with one tensor `w` of type `ty`, `dims`, holding `data`.
fn file(ty: GgmlType, dims: &[u64], data: &[u8]) -> Vec<u8> {
    let mut w = GgufWriter::new(32).unwrap();
    w.add_tensor("w", dims, ty).unwrap();
    let mut t = w.begin(Vec::new()).unwrap();
    t.write_tensor("w", data).unwrap();
    t.finish().unwrap()
}

/// Where the tensor info's first dimension is stored: after the name `w`
/// (u64 length + 1 byte) and `n_dims` (u32), in a file without metadata.
const NE0_AT: usize = 4 + 4 + 8 + 8 + 8 + 1 + 4;

#[test]
fn k_rows_that_are_not_whole_super_blocks_are_refused() {
    for (ty, size) in [
        (GgmlType::Q2_K, 84),
        (GgmlType::Q3_K, 110),
        (GgmlType::Q4_K, 144),
        (GgmlType::Q5_K, 176),
        (GgmlType::Q6_K, 210),
        (GgmlType::IQ4_XS, 136),
    ] {
        let mut bytes = file(ty, &[256, 2], &vec![0u8; 2 * size]);
        assert!(GgufFile::parse(&bytes).is_ok());
        // Claim rows of 320 values: 1.25 super-blocks.
        bytes[NE0_AT..NE0_AT + 8].copy_from_slice(&320u64.to_le_bytes());
        match GgufFile::parse(&bytes) {
            Err(Error::Tensor { name, msg }) => {
                assert_eq!(name, "w");
                assert!(
                    msg.contains("row length 320 is not a multiple of the")
                        && msg.contains(&format!("{ty} block size 256")),
                    "{ty}: {msg}"
                );
            }
            other => panic!("{ty}: {other:?}"),
        }
    }
}

#[test]
fn a_file_cut_inside_a_block_is_refused() {
    for (ty, size) in [
        (GgmlType::Q4_K, 144usize),
        (GgmlType::Q5_1, 24),
        (GgmlType::IQ4_NL, 18),
    ] {
        let n = ty.block_size() as u64;
        let bytes = file(ty, &[n, 3], &vec![0u8; 3 * size]);
        let t = GgufFile::parse(&bytes).unwrap().tensors[0].clone();
        let end = (t.offset + t.n_bytes) as usize;
        for cut in [1, size / 2, size - 1] {
            // Cut inside the last block (any padding after the data goes too).
            let short = &bytes[..end - cut];
            match GgufFile::parse(short) {
                Err(Error::Tensor { name, msg }) => {
                    assert_eq!(name, "w");
                    assert!(msg.contains("extends past the end of the file"), "{msg}");
                }
                other => panic!("{ty} cut by {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn non_finite_scales_dequantize_to_non_finite_values_and_fail_validation() {
    // A Q4_K block with a NaN super-block scale, and one with an infinite minimum scale.
    let mut data = vec![0x11u8; 2 * 144];
    data[0..2].copy_from_slice(&f16::NAN.to_le_bytes());
    data[2..4].copy_from_slice(&f16::ONE.to_le_bytes());
    data[144..146].copy_from_slice(&f16::ONE.to_le_bytes());
    data[146..148].copy_from_slice(&f16::NEG_INFINITY.to_le_bytes());
    let bytes = file(GgmlType::Q4_K, &[512, 1], &data);
    let gguf = GgufFile::parse(&bytes).expect("the layout is valid");
    let t = gguf.tensor("w").unwrap();
    let stored = gguf.tensor_data(&bytes, t);
    let mut y = vec![0.0f32; 512];
    dequantize_row(GgmlType::Q4_K, stored, &mut y).unwrap();
    assert!(y[..256].iter().all(|v| v.is_nan()));
    // Sub-block minimums are 0x11 & 63 = 17 (non-zero): -inf · 17 subtracted gives +inf.
    assert!(y[256..].iter().all(|v| !v.is_finite()));
    let e = validate_row(GgmlType::Q4_K, stored)
        .unwrap_err()
        .to_string();
    assert!(e.contains("block 0 is NaN"), "{e}");
    let e = validate_row(GgmlType::Q4_K, &stored[144..])
        .unwrap_err()
        .to_string();
    assert!(e.contains("block 0 is infinite"), "{e}");
}
