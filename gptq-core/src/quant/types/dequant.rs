//! Dequantization of any supported tensor type from its stored bytes: the
//! reference for tools (format checks, converters, inspection), not a hot path.

use half::f16;

use super::bf16::bf16;
use super::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, QuantBlock,
};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Pod, as_bytes, cast_slice};

/// The types [`dequantize_row`] expands.
pub const DEQUANTIZABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Expands `bytes`, stored values of type `ty` (whole blocks, in the file's
/// little-endian layout, at any alignment), into `y`, which must hold exactly
/// the number of values they encode. Non-finite scales give non-finite values,
/// as in ggml; nothing here panics on any bytes.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], y: &mut [f32]) -> Result<()> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if !bytes.len().is_multiple_of(ts) || bytes.len() / ts * bs != y.len() {
        return Err(Error::InvalidArgument(format!(
            "{} bytes of {ty} ({ts} bytes per {bs} values) do not hold {} values",
            bytes.len(),
            y.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in y.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in y.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            let x: Vec<bf16> = bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                .collect();
            super::bf16::dequantize_row(&x, y);
        }
        GgmlType::Q4_0 => each::<BlockQ4_0>(bytes, y),
        GgmlType::Q8_0 => each::<BlockQ8_0>(bytes, y),
        GgmlType::Q4_1 => each::<BlockQ4_1>(bytes, y),
        GgmlType::Q5_0 => each::<BlockQ5_0>(bytes, y),
        GgmlType::Q5_1 => each::<BlockQ5_1>(bytes, y),
        GgmlType::Q2_K => each::<BlockQ2K>(bytes, y),
        GgmlType::Q3_K => each::<BlockQ3K>(bytes, y),
        GgmlType::Q4_K => each::<BlockQ4K>(bytes, y),
        GgmlType::Q5_K => each::<BlockQ5K>(bytes, y),
        GgmlType::Q6_K => each::<BlockQ6K>(bytes, y),
        GgmlType::IQ4_NL => each::<BlockIq4Nl>(bytes, y),
        GgmlType::IQ4_XS => each::<BlockIq4Xs>(bytes, y),
        other => {
            return Err(Error::InvalidArgument(format!(
                "cannot dequantize tensors of type {other}"
            )));
        }
    }
    Ok(())
}

/// Dequantizes every block of `bytes` with the type's scalar reference.
fn each<B: QuantBlock>(bytes: &[u8], y: &mut [f32]) {
    B::dequantize(&blocks::<B>(bytes), y);
}

/// The blocks stored in `bytes` (a whole number of them): a view when the bytes
/// are aligned, else an aligned copy. Every block type here has an even size
/// and alignment 2, so copying through `u16` words lines them up.
fn blocks<B: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [B]> {
    if let Some(view) = cast_slice::<B>(bytes) {
        return std::borrow::Cow::Borrowed(view);
    }
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|w| u16::from_ne_bytes([w[0], w[1]]))
        .collect();
    let copy: &[B] = cast_slice(as_bytes(&words)).unwrap_or(&[]);
    std::borrow::Cow::Owned(copy.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_bytes_decode_like_aligned_ones() {
        let mut buf = vec![0u8; 1 + 2 * 144];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        // Finite scales: d and dmin of both blocks = 1.0 and 0.5.
        for off in [1, 1 + 144] {
            buf[off..off + 2].copy_from_slice(&f16::ONE.to_le_bytes());
            buf[off + 2..off + 4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        }
        let mut a = vec![0.0; 512];
        let mut b = vec![0.0; 512];
        dequantize_row(GgmlType::Q4_K, &buf[1..], &mut a).unwrap();
        let aligned = buf[1..].to_vec();
        dequantize_row(GgmlType::Q4_K, &aligned, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn lengths_and_types_are_checked() {
        let mut y = vec![0.0; 256];
        assert!(dequantize_row(GgmlType::Q6_K, &[0; 209], &mut y).is_err());
        assert!(dequantize_row(GgmlType::Q6_K, &[0; 210], &mut y[..255]).is_err());
        assert!(dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut y).is_err());
        assert!(dequantize_row(GgmlType::Q6_K, &[0; 210], &mut y).is_ok());
    }

    #[test]
    fn non_finite_scales_give_non_finite_values_without_panicking() {
        let mut bytes = [0x55u8; 210];
        bytes[208..210].copy_from_slice(&f16::NAN.to_le_bytes());
        let mut y = vec![0.0; 256];
        dequantize_row(GgmlType::Q6_K, &bytes, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_nan()));
        bytes[208..210].copy_from_slice(&f16::INFINITY.to_le_bytes());
        dequantize_row(GgmlType::Q6_K, &bytes, &mut y).unwrap();
        assert!(y.iter().all(|v| !v.is_finite()));
    }
}
