//! Q5_K: five-bit levels with a 6-bit scale and a 6-bit minimum per 32 values;
//! the scales are found and packed as Q4_K's ([`super::q4_k`]).

use gptq_core::quant::types::BlockQ5K;

use super::QK_K;
use super::q4_k::{choose_scales_ref, choose_scales_weighted, requantize};

/// Quantizes a row (whole super-blocks) into Q5_K, as ggml's `quantize_q5_K`.
pub fn quantize(x: &[f32], y: &mut [BlockQ5K], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let mut l = [0u8; QK_K];
        let header = match qw {
            None => choose_scales_ref(xb, 31, &mut l),
            Some(qw) => choose_scales_weighted(xb, &qw[QK_K * i..QK_K * (i + 1)], 31, &mut l),
        };
        (yb.d, yb.dmin, yb.scales) = (header.d, header.dmin, header.scales);
        requantize(xb, &header, 31, &mut l);
        yb.qh = [0; QK_K / 8];
        for (c, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            for (k, b) in q.iter_mut().enumerate() {
                let (mut lo, mut hi) = (l[64 * c + k], l[64 * c + 32 + k]);
                if lo > 15 {
                    lo -= 16;
                    yb.qh[k] |= 1 << (2 * c);
                }
                if hi > 15 {
                    hi -= 16;
                    yb.qh[k] |= 2 << (2 * c);
                }
                *b = lo | (hi << 4);
            }
        }
    }
}
