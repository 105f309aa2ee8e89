//! The 32-element types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, each as ggml's
//! `quantize_<type>` does it: the reference rounding (`quantize_row_<type>_ref`)
//! without importance weights, the weighted scale search
//! (`quantize_row_<type>_impl`) with them. Q8_0 has only the first.
//!
//! Every function takes one whole row: with weights, ggml scales them by the
//! row's mean square (`sigma2`).

use gptq_core::quant::types::{BlockQ4_1, BlockQ5_0, BlockQ5_1};
use gptq_core::quant::{BlockQ4_0, BlockQ8_0, QK};

use super::rounding::{c_max, to_f16, trunc_i8};
use super::search::{ScaleSteps, make_qkx_quants, make_qx_quants};

/// The scale search settings ggml's weighted asymmetric quantizers use.
const QKX3_STEPS: ScaleSteps = ScaleSteps {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// The importance of each element of a row: ggml's `qw · sqrt(sigma2 + x²)`
/// with `sigma2` the row's mean square.
fn row_weights(x: &[f32], qw: &[f32]) -> Vec<f32> {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    x.iter()
        .zip(qw)
        .map(|(&v, &w)| w * (sigma2 + v * v).sqrt())
        .collect()
}

/// The value of largest magnitude in a block (the first on ties).
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The smallest and largest value of a block.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Packs 32 four-bit levels: element `j` low nibble, `j + 16` high nibble.
fn pack_nibbles(l: &[u8]) -> [u8; 16] {
    std::array::from_fn(|j| (l[j] & 0x0f) | ((l[j + 16] & 0x0f) << 4))
}

/// Packs 32 five-bit levels into Q5's low nibbles and the `qh` bit word.
fn pack_five_bits(l: &[u8]) -> ([u8; 4], [u8; 16]) {
    let mut qh = 0u32;
    for (j, &q) in l.iter().enumerate() {
        qh |= u32::from((q & 0x10) >> 4) << j;
    }
    (qh.to_le_bytes(), pack_nibbles(l))
}

/// Q4_0: `d = max / -8` from the value of largest magnitude, levels
/// `trunc(x/d + 8.5)`; with weights, [`make_qx_quants`] picks the scale.
pub fn quantize_q4_0(x: &[f32], y: &mut [BlockQ4_0], qw: Option<&[f32]>) {
    let weights = qw.map(|qw| row_weights(x, qw));
    for (b, (xb, yb)) in x.chunks_exact(QK).zip(y.iter_mut()).enumerate() {
        if let Some(w) = &weights {
            let mut l = [0i8; QK];
            let d = make_qx_quants(8, xb, &mut l, Some(&w[QK * b..QK * (b + 1)]));
            yb.d = to_f16(d).0;
            yb.qs = pack_nibbles(&l.map(|q| q as u8));
            continue;
        }
        let d = signed_max(xb) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = to_f16(d).0;
        let l: [u8; QK] = std::array::from_fn(|j| trunc_i8(xb[j] * id + 8.5).min(15) as u8);
        yb.qs = pack_nibbles(&l);
    }
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, levels `trunc((x - min)/d + 0.5)`;
/// with weights, [`make_qkx_quants`] picks scale and minimum.
pub fn quantize_q4_1(x: &[f32], y: &mut [BlockQ4_1], qw: Option<&[f32]>) {
    let weights = qw.map(|qw| row_weights(x, qw));
    for (b, (xb, yb)) in x.chunks_exact(QK).zip(y.iter_mut()).enumerate() {
        if let Some(w) = &weights {
            let mut l = [0u8; QK];
            let (d, neg_min) =
                make_qkx_quants(15, xb, &w[QK * b..QK * (b + 1)], &mut l, QKX3_STEPS);
            yb.d = to_f16(d).0;
            yb.m = to_f16(-neg_min).0;
            yb.qs = pack_nibbles(&l);
            continue;
        }
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = to_f16(d).0;
        yb.m = to_f16(min).0;
        let l: [u8; QK] = std::array::from_fn(|j| trunc_i8((xb[j] - min) * id + 0.5).min(15) as u8);
        yb.qs = pack_nibbles(&l);
    }
}

/// Q5_0: `d = max / -16`, levels `trunc(x/d + 16.5)`; with weights,
/// [`make_qx_quants`] picks the scale.
pub fn quantize_q5_0(x: &[f32], y: &mut [BlockQ5_0], qw: Option<&[f32]>) {
    let weights = qw.map(|qw| row_weights(x, qw));
    for (b, (xb, yb)) in x.chunks_exact(QK).zip(y.iter_mut()).enumerate() {
        let (d, l): (f32, [u8; QK]) = if let Some(w) = &weights {
            let mut l = [0i8; QK];
            let d = make_qx_quants(16, xb, &mut l, Some(&w[QK * b..QK * (b + 1)]));
            (d, l.map(|q| q as u8))
        } else {
            let d = signed_max(xb) / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            (
                d,
                std::array::from_fn(|j| trunc_i8(xb[j] * id + 16.5).min(31) as u8),
            )
        };
        yb.d = to_f16(d).0;
        (yb.qh, yb.qs) = pack_five_bits(&l);
    }
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, levels `(x - min)/d + 0.5`
/// truncated; with weights, [`make_qkx_quants`] picks scale and minimum.
pub fn quantize_q5_1(x: &[f32], y: &mut [BlockQ5_1], qw: Option<&[f32]>) {
    let weights = qw.map(|qw| row_weights(x, qw));
    for (b, (xb, yb)) in x.chunks_exact(QK).zip(y.iter_mut()).enumerate() {
        let (d, m, l) = if let Some(w) = &weights {
            let mut l = [0u8; QK];
            let (d, neg_min) =
                make_qkx_quants(31, xb, &w[QK * b..QK * (b + 1)], &mut l, QKX3_STEPS);
            (d, -neg_min, l)
        } else {
            let (min, max) = min_max(xb);
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            // ggml converts straight to uint8_t here, without the clamp of Q4_1.
            let l: [u8; QK] = std::array::from_fn(|j| ((xb[j] - min) * id + 0.5) as i32 as u8);
            (d, min, l)
        };
        yb.d = to_f16(d).0;
        yb.m = to_f16(m).0;
        (yb.qh, yb.qs) = pack_five_bits(&l);
    }
}

/// Q8_0: `d = amax / 127`, levels `round(x/d)` (half away from zero). ggml
/// ignores importance weights for Q8_0.
pub fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, &v| c_max(m, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = to_f16(d).0;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gptq_core::quant::types::q4_0::quantize_row_q4_0;
    use gptq_core::quant::types::q8_0::quantize_row_q8_0;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 61) as f32 - 30.0) * 0.013)
            .collect()
    }

    #[test]
    fn q4_0_and_q8_0_equal_the_runtime_reference() {
        let x = ramp(256);
        let (mut a, mut b) = (vec![BlockQ4_0::ZERO; 8], vec![BlockQ4_0::ZERO; 8]);
        quantize_q4_0(&x, &mut a, None);
        quantize_row_q4_0(&x, &mut b);
        assert_eq!(a, b);
        let (mut a, mut b) = (vec![BlockQ8_0::ZERO; 8], vec![BlockQ8_0::ZERO; 8]);
        quantize_q8_0(&x, &mut a);
        quantize_row_q8_0(&x, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn weighted_paths_round_trip_closely() {
        let x = ramp(64);
        let qw = vec![1.0; 64];
        let mut y = vec![BlockQ5_1::ZERO; 2];
        quantize_q5_1(&x, &mut y, Some(&qw));
        let mut out = [0.0; 32];
        y[0].dequantize(&mut out);
        for (a, b) in x.iter().zip(&out) {
            assert!((a - b).abs() < 0.02, "{a} {b}");
        }
    }
}
