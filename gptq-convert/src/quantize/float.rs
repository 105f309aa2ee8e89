//! The float types: F32 as is, F16 rounded to nearest even (ggml's
//! `ggml_fp32_to_fp16_row`), BF16 as ggml rounds it.

use gptq_core::quant::types::bf16;
use half::f16;

/// Little-endian f32 values.
pub fn f32_into(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(4).zip(x) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Little-endian f16 values, rounded to nearest even.
pub fn f16_into(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

/// Little-endian bf16 values, rounded as ggml's `ggml_compute_fp32_to_bf16`.
pub fn bf16_into(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
    }
}
