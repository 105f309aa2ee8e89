//! ggml's scale searches (ggml-quants.c): for a group of values, find the
//! scale (and for the asymmetric types the minimum) that a weighted squared or
//! absolute error prefers, trying a few candidate scales around the obvious
//! one and keeping the best. Every quantizer builds on these.
//!
//! The arithmetic follows ggml's operation by operation, in f32 and in the same
//! order (sums run from the first element to the last; `a*b*c` is `(a*b)*c`):
//! llama-quantize's ggml-base is compiled without FMA contraction (checked with
//! objdump on the peer build: no `vfmadd` in libggml-base.so), so plain
//! multiplies and adds give the same bits. The integer conversions (`uint8_t`
//! wrapping of a negative level, `MIN` on the wrapped byte) are also kept,
//! because they decide bytes in rare cases.

use super::rounding::{c_max, nearest_int};

/// Below this absolute maximum a group counts as all zeros (`GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// The value of largest magnitude (the first one on ties) and that magnitude.
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric levels `-nmax..nmax` with a weighted least-squares scale
/// (ggml's `make_qx_quants` with `rmse_type = 1`, the only one its quantizers
/// use): tries 19 scales around `-nmax / max` and keeps the one with the best
/// weighted fit, then the least-squares scale for its levels. Writes the
/// levels offset by `nmax` (`0..2·nmax`) into `l` and returns the scale.
/// Weights default to `x²`.
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], weights: Option<&[f32]>) -> f32 {
    debug_assert_eq!(x.len(), l.len());
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let weight = |i: usize| weights.map_or(x[i] * x[i], |w| w[i]);
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let fit = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let q = level(iscale, v) as f32;
            let w = weight(i);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let set_levels = |l: &mut [i8], iscale: f32| {
        for (o, &v) in l.iter_mut().zip(x) {
            *o = (level(iscale, v) + nmax) as i8;
        }
    };

    let iscale = -(nmax as f32) / max;
    set_levels(l, iscale);
    let (sumlx, suml2) = fit(iscale);
    // C's `suml2 ? sumlx/suml2 : 0`: a NaN sum counts as non-zero.
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_levels(l, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric levels for Q3_K without importance weights (ggml's
/// `make_q3_quants` with `do_rmse`): round at `-nmax / max`, then up to five
/// passes that move single levels while the `x²`-weighted fit improves. Writes
/// levels offset by `nmax` into `l` and returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), l.len());
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (o, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *o = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (o, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let old = f32::from(*o);
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != i32::from(*o) {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for o in l.iter_mut() {
        *o += nmax as i8;
    }
    sumlx / suml2
}

/// The candidate scales tried by [`make_qkx_quants`]: `nmax + rmin + rdelta·k`
/// levels across the range, for `k` in `0..=nstep`.
#[derive(Clone, Copy, Debug)]
pub struct ScaleSteps {
    /// Offset of the first candidate, in levels.
    pub rmin: f32,
    /// Step between candidates, in levels.
    pub rdelta: f32,
    /// Number of steps after the first candidate.
    pub nstep: i32,
    /// Minimise the weighted absolute error instead of the squared one.
    pub use_mad: bool,
}

/// Asymmetric levels `0..=nmax` with a scale and a minimum (ggml's
/// `make_qkx2_quants` and `make_qkx3_quants`, which agree whenever weights are
/// given, as every caller does): starting from the range `[min(x, 0), max]`, try
/// each candidate scale, solve the weighted least-squares scale and minimum for
/// its levels (the minimum kept at or below zero), and keep the best. Writes the
/// levels into `l` and returns `(scale, -min)`.
pub fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    steps: ScaleSteps,
) -> (f32, f32) {
    debug_assert!(x.len() == l.len() && x.len() == weights.len());
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if steps.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        best_mad += weights[i] * err(scale * q as f32 + min - x[i]);
    }
    if steps.nstep < 1 {
        return (scale, -min);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=steps.nstep {
        iscale = (steps.rmin + steps.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for i in 0..n {
                mad += weights[i] * err(this_scale * f32::from(aux[i]) + this_min - x[i]);
            }
            if mad < best_mad {
                l.copy_from_slice(aux);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Non-negative levels `0..=nmax` for a group of positive values (the sub-block
/// scales or minimums of a super-block) with importance weights (ggml's
/// `make_qp_quants`): pick the best of nine scales around `nmax / max`, then up
/// to five passes that move single levels while the weighted fit improves.
/// Writes the levels into `l` (a negative level wraps to a large byte, as in
/// ggml) and returns the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], weights: &[f32]) -> f32 {
    debug_assert!(x.len() == l.len() && x.len() == weights.len());
    let max = x.iter().fold(0.0f32, |m, &v| c_max(m, v));
    if max == 0.0 {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (o, &v) in l.iter_mut().zip(x) {
        *o = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * f32::from(l[i]);
        best_mse += weights[i] * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..x.len() {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = weights[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let w = weights[i];
            let old = f32::from(l[i]);
            let mut slx = sumlx - w * x[i] * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new != i32::from(l[i]) {
                    slx += w * x[i] * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    sumlx / suml2
}

/// The index of the table value nearest to `x` in the ascending `values`
/// (ggml's `best_index_int8`; on an exact tie the upper one).
pub fn best_index(values: &[i8; 16], x: f32) -> usize {
    if x <= f32::from(values[0]) {
        return 0;
    }
    if x >= f32::from(values[15]) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < f32::from(values[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - f32::from(values[hi - 1]) < f32::from(values[hi]) - x {
        hi - 1
    } else {
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gptq_core::quant::types::iq4_nl::KVALUES;

    #[test]
    fn qx_levels_reconstruct_the_values() {
        let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.3) * 0.11).collect();
        let mut l = [0i8; 16];
        let d = make_qx_quants(4, &x, &mut l, None);
        for (&v, &q) in x.iter().zip(&l) {
            assert!((0..8).contains(&q));
            assert!(
                (v - d * f32::from(q - 4)).abs() <= d.abs() * 0.75,
                "{v} {q} {d}"
            );
        }
        let mut z = [5i8; 16];
        assert_eq!(make_qx_quants(4, &[0.0; 16], &mut z, None), 0.0);
        assert_eq!(z, [0; 16]);
    }

    #[test]
    fn q3_levels_stay_in_range() {
        let x: Vec<f32> = (0..16).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let mut l = [0i8; 16];
        let d = make_q3_quants(4, &x, &mut l);
        assert!(d.is_finite() && d != 0.0);
        assert!(l.iter().all(|&q| (0..8).contains(&q)));
    }

    #[test]
    fn qkx_keeps_the_minimum_at_or_below_zero() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.1).collect();
        let w = vec![1.0; 32];
        let mut l = [0u8; 32];
        let steps = ScaleSteps {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (scale, neg_min) = make_qkx_quants(15, &x, &w, &mut l, steps);
        assert!(neg_min >= 0.0 && scale > 0.0);
        for (&v, &q) in x.iter().zip(&l) {
            assert!((v - (scale * f32::from(q) - neg_min)).abs() < scale);
        }
        assert_eq!(
            make_qkx_quants(15, &[0.0; 32], &w, &mut l, steps),
            (0.0, -0.0)
        );
    }

    #[test]
    fn qp_levels_fit_positive_values() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let w = [1.0; 8];
        let mut l = [0u8; 8];
        let d = make_qp_quants(63, &x, &mut l, &w);
        for (&v, &q) in x.iter().zip(&l) {
            assert!((v - d * f32::from(q)).abs() <= d);
        }
    }

    #[test]
    fn best_index_picks_the_nearest_table_value() {
        assert_eq!(best_index(&KVALUES, -1000.0), 0);
        assert_eq!(best_index(&KVALUES, 1000.0), 15);
        assert_eq!(best_index(&KVALUES, 0.0), 8); // -10 and 1: 1 is nearer
        assert_eq!(best_index(&KVALUES, -4.5), 8); // exact tie between -10 and 1: upper
        assert_eq!(best_index(&KVALUES, 50.0), 12);
        let _ = best_index(&KVALUES, f32::NAN);
    }
}
