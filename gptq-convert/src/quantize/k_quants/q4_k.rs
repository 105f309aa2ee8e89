//! Q4_K: four-bit levels with a 6-bit scale and a 6-bit minimum per 32 values.
//! Q5_K (in [`super::q5_k`]) shares the scale search and the scale packing.

use gptq_core::quant::types::BlockQ4K;
use gptq_core::quant::types::q4_k::scale_min;

use super::super::rounding::{nearest_int, to_f16};
use super::super::search::{ScaleSteps, make_qkx_quants, make_qp_quants};
use super::{QK_K, pack_k4, sum_squares};

/// Quantizes a row (whole super-blocks) into Q4_K, as ggml's `quantize_q4_K`.
pub fn quantize(x: &[f32], y: &mut [BlockQ4K], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let mut l = [0u8; QK_K];
        let header = match qw {
            None => choose_scales_ref(xb, 15, &mut l),
            Some(qw) => choose_scales_weighted(xb, &qw[QK_K * i..QK_K * (i + 1)], 15, &mut l),
        };
        (yb.d, yb.dmin, yb.scales) = (header.d, header.dmin, header.scales);
        requantize(xb, &header, 15, &mut l);
        for (c, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            for (k, b) in q.iter_mut().enumerate() {
                *b = l[64 * c + k] | (l[64 * c + 32 + k] << 4);
            }
        }
    }
}

/// The scale part of a Q4_K or Q5_K block.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub d: half::f16,
    pub dmin: half::f16,
    pub scales: [u8; 12],
}

/// ggml's `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref` scales: per
/// sub-block of 32 a search weighted by `rms + |x|`, then scales and minimums
/// as the nearest of 64 steps of their maxima. `nmax` is 15 (Q4_K) or 31 (Q5_K).
pub(super) fn choose_scales_ref(x: &[f32], nmax: i32, l: &mut [u8; QK_K]) -> Header {
    let steps = if nmax == 15 {
        ScaleSteps {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        }
    } else {
        ScaleSteps {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        }
    };
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let av_x = (sum_squares(xs) / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|k| av_x + xs[k].abs());
        (scales[j], mins[j]) =
            make_qkx_quants(nmax, xs, &weights, &mut l[32 * j..32 * (j + 1)], steps);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // `uint8_t ls = nearest_int(..); ls = MIN(63, ls)`: wrap to a byte, then clamp.
    let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
    Header {
        d: to_f16(max_scale / 63.0).0,
        dmin: to_f16(max_min / 63.0).0,
        scales: pack_k4(&ls, &lm),
    }
}

/// ggml's `quantize_row_q4_K_impl` / `quantize_row_q5_K_impl` scales:
/// importance-weighted searches per sub-block, then the scales and minimums
/// quantized with [`make_qp_quants`] weighted by each sub-block's importance.
/// Q5_K clamps the levels to 63, Q4_K packs them as they come (as ggml does).
pub(super) fn choose_scales_weighted(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    l: &mut [u8; QK_K],
) -> Header {
    const STEPS: ScaleSteps = ScaleSteps {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let weights: [f32; 32] =
            std::array::from_fn(|k| qw[32 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt());
        for w in weights {
            sw[j] += w;
        }
        (scales[j], mins[j]) =
            make_qkx_quants(nmax, xs, &weights, &mut l[32 * j..32 * (j + 1)], STEPS);
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if nmax == 31 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    Header {
        d: to_f16(d_block).0,
        dmin: to_f16(m_block).0,
        scales: pack_k4(&ls, &lm),
    }
}

/// Levels for the scales as stored: `round((x + min) / scale)` in `0..=nmax`.
pub(super) fn requantize(x: &[f32], h: &Header, nmax: i32, l: &mut [u8; QK_K]) {
    let (d, dmin) = (h.d.to_f32(), h.dmin.to_f32());
    for j in 0..8 {
        let (sc, m) = scale_min(j, &h.scales);
        let dl = d * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * f32::from(m);
        for k in 32 * j..32 * (j + 1) {
            l[k] = nearest_int((x[k] + ml) / dl).clamp(0, nmax) as u8;
        }
    }
}
