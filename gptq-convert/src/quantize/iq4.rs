//! IQ4_NL and IQ4_XS: four-bit indices into ggml's non-linear table, with the
//! scale search of ggml's `quantize_row_iq4_nl_impl`. llama-quantize runs the
//! search (`ntry = 7`) with or without importance weights, so there is one path
//! here; without weights each value counts `x²`.

use gptq_core::quant::types::iq4_nl::{KVALUES, QK4_NL};
use gptq_core::quant::types::{BlockIq4Nl, BlockIq4Xs, QK_K};

use super::rounding::{nearest_int, to_f16};
use super::search::{GROUP_MAX_EPS, best_index};

/// Scale candidates tried on each side of the starting one.
const NTRY: i32 = 7;

/// Quantizes a row (whole blocks of 32) into IQ4_NL, as ggml's `quantize_iq4_nl`.
pub fn quantize_iq4_nl(x: &[f32], y: &mut [BlockIq4Nl], qw: Option<&[f32]>) {
    for (b, (xb, yb)) in x.chunks_exact(QK4_NL).zip(y.iter_mut()).enumerate() {
        let qw = qw.map(|w| &w[QK4_NL * b..QK4_NL * (b + 1)]);
        let weight = weights(xb, qw);
        let mut l = [0u8; QK4_NL];
        let d = sub_block_scale(xb, &weight, &mut l).unwrap_or(0.0);
        yb.d = to_f16(d).0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (o, &v) in l.iter_mut().zip(xb) {
            *o = best_index(&KVALUES, id * v) as u8;
        }
        yb.qs = pack(&l);
    }
}

/// Quantizes a row (whole super-blocks) into IQ4_XS, as ggml's `quantize_iq4_xs`:
/// a scale per sub-block of 32 as for IQ4_NL, then those scales as signed 6-bit
/// steps of the largest one (by magnitude) and the indices chosen again for the
/// scales as stored.
pub fn quantize_iq4_xs(x: &[f32], y: &mut [BlockIq4Xs], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let qw = qw.map(|w| &w[QK_K * i..QK_K * (i + 1)]);
        let weight = weights(xb, qw);
        let mut scales = [0.0f32; 8];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        let mut scratch = [0u8; 32];
        for s in 0..8 {
            let r = 32 * s..32 * (s + 1);
            if let Some(d) = sub_block_scale(&xb[r.clone()], &weight[r], &mut scratch) {
                scales[s] = d;
                if d.abs() > amax_scale {
                    amax_scale = d.abs();
                    max_scale = d;
                }
            }
        }
        let d = -max_scale / 32.0;
        yb.d = to_f16(d).0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.scales_h = 0;
        yb.scales_l = [0; 4];
        for s in 0..8 {
            let ls = nearest_int(id * scales[s]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let mut l = [0u8; 32];
            for (o, &v) in l.iter_mut().zip(&xb[32 * s..32 * (s + 1)]) {
                *o = best_index(&KVALUES, idl * v) as u8;
            }
            yb.qs[16 * s..16 * (s + 1)].copy_from_slice(&pack(&l));
            let ls = (ls + 32) as u8;
            yb.scales_l[s / 2] |= (ls & 0x0f) << (4 * (s % 2));
            yb.scales_h |= u16::from(ls >> 4) << (2 * s);
        }
    }
}

/// The weight of each value: `qw · sqrt(sigma2 + x²)` with `sigma2` twice the
/// block's mean square, or `x²` without importance weights.
fn weights(x: &[f32], qw: Option<&[f32]>) -> Vec<f32> {
    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / x.len() as f32;
    match qw {
        Some(qw) => x
            .iter()
            .zip(qw)
            .map(|(&v, &w)| w * (sigma2 + v * v).sqrt())
            .collect(),
        None => x.iter().map(|&v| v * v).collect(),
    }
}

/// The scale of one group of 32 values: start from `max / 127` (so the value of
/// largest magnitude maps to the table's -127 end), take the weighted
/// least-squares scale for the nearest indices, then try 15 more starting points
/// and keep the best fit. `None` for an all-zero group. `l` receives the indices
/// of the first fit (what ggml leaves in its buffer).
fn sub_block_scale(x: &[f32], w: &[f32], l: &mut [u8]) -> Option<f32> {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let v0 = f32::from(KVALUES[0]);
    let fit = |id: f32, l: Option<&mut [u8]>| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        let mut l = l;
        for j in 0..x.len() {
            let k = best_index(&KVALUES, id * x[j]);
            if let Some(l) = l.as_deref_mut() {
                l[j] = k as u8;
            }
            let q = f32::from(KVALUES[k]);
            sumqx += w[j] * q * x[j];
            sumq2 += w[j] * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / v0;
    let (sumqx, sumq2) = fit(1.0 / d, Some(l));
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + v0) / max;
        let (sumqx, sumq2) = fit(id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// Packs 32 indices: element `j` in the low nibble of byte `j`, `j + 16` in its
/// high nibble.
fn pack(l: &[u8]) -> [u8; 16] {
    std::array::from_fn(|j| l[j] | (l[j + 16] << 4))
}
