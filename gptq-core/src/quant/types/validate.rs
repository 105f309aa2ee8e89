//! ggml's check of stored tensor data (`ggml_validate_row_data`, what
//! llama-quantize runs on everything it writes and llama.cpp on load with
//! `--check-tensors`): every f16 scale of a block, and every value of a float
//! tensor, must be finite.

use half::f16;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Byte offsets of the f16 scale fields in a block of each type.
pub(super) fn scale_offsets(ty: GgmlType) -> Option<&'static [usize]> {
    Some(match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => return None,
    })
}

/// Checks `bytes`, stored data of type `ty`, as ggml does; the error names the
/// first block (or value) whose scale (or value) is NaN or infinite. Types
/// without a check here (integer types, types this crate does not know the
/// layout of) pass.
pub fn validate_row(ty: GgmlType, bytes: &[u8]) -> Result<()> {
    let bad = |i: usize, what: &str, v: f32| {
        Err(Error::InvalidArgument(format!(
            "{ty} data: {what} {i} is {}",
            if v.is_nan() { "NaN" } else { "infinite" }
        )))
    };
    match ty {
        GgmlType::F32 => {
            for (i, b) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if !v.is_finite() {
                    return bad(i, "value", v);
                }
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            for (i, b) in bytes.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                let v = if ty == GgmlType::F16 {
                    f16::from_bits(bits).to_f32()
                } else {
                    f32::from_bits(u32::from(bits) << 16)
                };
                if !v.is_finite() {
                    return bad(i, "value", v);
                }
            }
        }
        _ => {
            let Some(offsets) = scale_offsets(ty) else {
                return Ok(());
            };
            for (i, block) in bytes.chunks_exact(ty.type_size()).enumerate() {
                for &o in offsets {
                    let v = f16::from_le_bytes([block[o], block[o + 1]]).to_f32();
                    if !v.is_finite() {
                        return bad(i, "the scale of block", v);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_scales_are_named_by_block() {
        let mut bytes = vec![0u8; 3 * 176];
        assert!(validate_row(GgmlType::Q5_K, &bytes).is_ok());
        bytes[176 + 2..176 + 4].copy_from_slice(&f16::INFINITY.to_le_bytes());
        let e = validate_row(GgmlType::Q5_K, &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("block 1 is infinite"), "{e}");
        let mut q3 = vec![0u8; 110];
        q3[108..110].copy_from_slice(&f16::NAN.to_le_bytes());
        let e = validate_row(GgmlType::Q3_K, &q3).unwrap_err().to_string();
        assert!(e.contains("block 0 is NaN"), "{e}");
        let f = [1.0f32, f32::NAN];
        let raw: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(
            validate_row(GgmlType::F32, &raw)
                .unwrap_err()
                .to_string()
                .contains("value 1")
        );
        assert!(validate_row(GgmlType::BF16, &[0x80, 0x7f]).is_err());
        assert!(validate_row(GgmlType::I8, &[0xff]).is_ok());
    }
}
