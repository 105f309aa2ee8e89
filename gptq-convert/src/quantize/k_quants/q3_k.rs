//! Q3_K: three-bit levels with a signed 6-bit scale per 16 values.

use gptq_core::quant::types::BlockQ3K;
use gptq_core::quant::types::q3_k::{pack_scales, unpack_scales};

use super::super::rounding::{nearest_int, to_f16};
use super::super::search::{make_q3_quants, make_qx_quants};
use super::{QK_K, pack_2bit, sum_squares};

/// Quantizes a row (whole super-blocks) into Q3_K, as ggml's `quantize_q3_K`.
pub fn quantize(x: &[f32], y: &mut [BlockQ3K], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let mut l = [0i8; QK_K];
        match qw {
            None => choose_scales_ref(xb, yb, &mut l),
            Some(qw) => choose_scales_weighted(xb, &qw[QK_K * i..QK_K * (i + 1)], yb, &mut l),
        }
        requantize(xb, yb, &mut l);
        pack(yb, &l);
    }
}

/// ggml's `quantize_row_q3_K_ref` scales: [`make_q3_quants`] per sub-block,
/// then each scale as the nearest of 64 steps of the largest one (by magnitude).
fn choose_scales_ref(x: &[f32], y: &mut BlockQ3K, l: &mut [i8; QK_K]) {
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * (j + 1)], &mut l[16 * j..16 * (j + 1)]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let levels: [u8; 16] = std::array::from_fn(|j| {
            // `int8_t l = nearest_int(..)`: wrap to a byte, then clamp.
            let q = nearest_int(iscale * scales[j]) as i8;
            (q.clamp(-32, 31) + 32) as u8
        });
        y.scales = pack_scales(&levels);
        y.d = to_f16(1.0 / iscale).0;
    } else {
        y.scales = [0; 12];
        y.d = to_f16(0.0).0;
    }
}

/// ggml's `quantize_row_q3_K_impl` scales: importance-weighted
/// [`make_qx_quants`] per sub-block, then again over the sixteen scales
/// (weighted by each sub-block's total importance) for the 6-bit levels.
fn choose_scales_weighted(x: &[f32], qw: &[f32], y: &mut BlockQ3K, l: &mut [i8; QK_K]) {
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let (mut scales, mut sw) = ([0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        let xs = &x[16 * j..16 * (j + 1)];
        let weight: [f32; 16] =
            std::array::from_fn(|k| qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt());
        for w in weight {
            sw[j] += w;
        }
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * (j + 1)], Some(&weight));
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
    y.scales = pack_scales(&ls.map(|q| q as u8));
    y.d = to_f16(d_block).0;
}

/// Levels for the scales as stored: `round(x / scale)` in -4..4, offset by 4.
fn requantize(x: &[f32], y: &BlockQ3K, l: &mut [i8; QK_K]) {
    let d = y.d.to_f32();
    let sc = unpack_scales(&y.scales);
    for j in 0..16 {
        let dl = d * f32::from(sc[j] as i8 - 32);
        if dl == 0.0 {
            continue;
        }
        for k in 16 * j..16 * (j + 1) {
            l[k] = (nearest_int(x[k] / dl).clamp(-4, 3) + 4) as i8;
        }
    }
}

/// Splits the levels (0..8) into the high-bit mask and the packed low bits.
fn pack(y: &mut BlockQ3K, l: &[i8; QK_K]) {
    y.hmask = [0; QK_K / 8];
    let mut low = [0u8; QK_K];
    for (j, &q) in l.iter().enumerate() {
        let mut q = q as u8;
        if q > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            q -= 4;
        }
        low[j] = q;
    }
    y.qs = pack_2bit(&low);
}
