//! Q2_K: two-bit levels with a 4-bit scale and a 4-bit minimum per 16 values.

use gptq_core::quant::types::BlockQ2K;

use super::super::rounding::{nearest_int, to_f16};
use super::super::search::{ScaleSteps, make_qkx_quants, make_qp_quants};
use super::{QK_K, pack_2bit, sum_squares};

/// Quantizes a row (whole super-blocks) into Q2_K, as ggml's `quantize_q2_K`.
pub fn quantize(x: &[f32], y: &mut [BlockQ2K], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let mut l = [0u8; QK_K];
        match qw {
            None => choose_scales_ref(xb, yb, &mut l),
            Some(qw) => choose_scales_weighted(xb, &qw[QK_K * i..QK_K * (i + 1)], yb, &mut l),
        }
        requantize(xb, yb, &mut l);
        yb.qs = pack_2bit(&l);
    }
}

/// ggml's `quantize_row_q2_K_ref` scales: an |x|-weighted absolute-error search
/// per sub-block, then scales and minimums as nearest fractions of their maxima.
fn choose_scales_ref(x: &[f32], y: &mut BlockQ2K, l: &mut [u8; QK_K]) {
    const STEPS: ScaleSteps = ScaleSteps {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * (j + 1)];
        let weights: [f32; 16] = std::array::from_fn(|k| xs[k].abs());
        (scales[j], mins[j]) =
            make_qkx_quants(3, xs, &weights, &mut l[16 * j..16 * (j + 1)], STEPS);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            y.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        y.d = to_f16(max_scale / 15.0).0;
    } else {
        y.scales = [0; 16];
        y.d = to_f16(0.0).0;
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            y.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        y.dmin = to_f16(max_min / 15.0).0;
    } else {
        y.dmin = to_f16(0.0).0;
    }
}

/// ggml's `quantize_row_q2_K_impl` scales: importance-weighted squared-error
/// searches per sub-block, then the scales and minimums quantized with
/// [`make_qp_quants`] weighted by each sub-block's total importance.
fn choose_scales_weighted(x: &[f32], qw: &[f32], y: &mut BlockQ2K, l: &mut [u8; QK_K]) {
    const STEPS: ScaleSteps = ScaleSteps {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sigma2 = sum_squares(x) / QK_K as f32;
    let (mut scales, mut mins, mut sw) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        let xs = &x[16 * j..16 * (j + 1)];
        let weight: [f32; 16] =
            std::array::from_fn(|k| qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt());
        for w in weight {
            sw[j] += w;
        }
        (scales[j], mins[j]) = make_qkx_quants(3, xs, &weight, &mut l[16 * j..16 * (j + 1)], STEPS);
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.d = to_f16(dm).0;
    y.dmin = to_f16(mm).0;
    for j in 0..16 {
        y.scales[j] = ls[j] | (lm[j] << 4);
    }
}

/// Levels for the scales as stored: `round((x + min) / scale)` in 0..4.
fn requantize(x: &[f32], y: &BlockQ2K, l: &mut [u8; QK_K]) {
    let (d, dmin) = (y.d.to_f32(), y.dmin.to_f32());
    for j in 0..16 {
        let dl = d * f32::from(y.scales[j] & 0x0f);
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * f32::from(y.scales[j] >> 4);
        for k in 16 * j..16 * (j + 1) {
            l[k] = nearest_int((x[k] + ml) / dl).clamp(0, 3) as u8;
        }
    }
}
