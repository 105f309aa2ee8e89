//! `Σ exp(v − max)` over a row of logits, the normaliser of every
//! log-softmax the scoring tools take (perplexity, KL divergence, importance
//! matrices): 50,257 exponentials per scored token.
//!
//! Written by hand because the obvious `map(|v| f64::from((v - max).exp()))
//! .sum()` costs a libm call per value and one dependent f64 addition after
//! another (a sixth of a perplexity run of a small model). Here the
//! exponential is a branch-free polynomial the compiler vectorises on every
//! target, and the sum runs in sixteen f64 accumulators in a fixed order
//! (the same result on every machine).

/// Independent f64 partial sums: enough to cover the adds' latency and fill
/// the vectors of every target.
const LANES: usize = 16;

/// `e^x` for finite `x <= 0` within 2 ulp of the exact value (below −87.3 a
/// value under 1.2e-38, where f32 is subnormal, is given as 0). `-inf` gives 0
/// and NaN gives NaN.
///
/// Cody–Waite reduction `x = n·ln 2 + r` (`|r| <= ln 2 / 2`, `ln 2` split in
/// two parts so that `n·C1` is exact) and Cephes' degree-6 minimax
/// polynomial for `e^r`, scaled by `2^n` through the exponent bits.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let under = x < -87.3;
    let xc = if under { -87.3 } else { x };
    // `n + ROUND` holds the integer n in its low mantissa bits: n and 2^n
    // come from them with no float-to-integer conversion (which would keep
    // the loop from vectorising).
    let biased = (xc * LOG2E + ROUND).to_bits();
    let n = f32::from_bits(biased) - ROUND;
    let r = (xc - n * C1) - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n in [-126, 0]: a normal power of two, exponent field n + 127.
    let scale = f32::from_bits(biased.wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    let v = e * scale;
    if under { 0.0 } else { v }
}

/// `Σ exp(v − max)` over `logits` in f64, `max` their largest value (finite,
/// or the sum is NaN or 0 as the exact formula's would be). The scoring
/// tools call the kernel path's copy ([`Kernels::exp_sum`](crate::Kernels::exp_sum)),
/// this code compiled for the path's vectors (without them the baseline x86
/// build runs it four f32 lanes wide): the same operations in the same
/// order, so the same bits.
pub fn exp_sum(logits: &[f32], max: f32) -> f64 {
    exp_sum_body(logits, max)
}

/// [`exp_sum`]'s body, inlined into each kernel path's copy.
#[inline(always)]
pub(crate) fn exp_sum_body(logits: &[f32], max: f32) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(exp_nonpositive(v - max));
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f64::from(exp_nonpositive(v - max));
    }
    // A fixed pairwise order.
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            acc[i] += acc[i + n];
        }
    }
    acc[0]
}

/// The largest of `logits` (NaN when one is NaN, as `exp_sum` then is).
pub fn max_logit(logits: &[f32]) -> f32 {
    max_logit_body(logits)
}

/// [`max_logit`]'s body, inlined into each kernel path's copy.
#[inline(always)]
pub(crate) fn max_logit_body(logits: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            *a = if v > *a || v.is_nan() { v } else { *a };
        }
    }
    for (a, &v) in m.iter_mut().zip(chunks.remainder()) {
        *a = if v > *a || v.is_nan() { v } else { *a };
    }
    let mut best = f32::NEG_INFINITY;
    for v in m {
        if v.is_nan() {
            return v;
        }
        best = best.max(v);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 step over [-90, 0] (and a dense sweep near 0): within 2 ulp
    /// of the f64 exponential, or 0 below the cut.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = 0.0f32;
        let mut worst = 0.0f64;
        while x > -90.0 {
            let got = exp_nonpositive(x);
            let want = f64::from(x).exp();
            if x < -87.3 {
                assert_eq!(got, 0.0, "{x}");
            } else {
                let ulp = f64::from(f32::EPSILON) * want;
                let err = (f64::from(got) - want).abs() / ulp;
                worst = worst.max(err);
                assert!(err <= 2.0, "exp({x}) = {got}, want {want}: {err} ulp");
            }
            x = if x > -1.0 {
                x - 1.0 / 4096.0
            } else {
                x - 0.013
            };
        }
        assert!(worst > 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    /// Every kernel path's copy gives the portable code's bits (ragged rows,
    /// values far below the maximum, a NaN); paths this CPU lacks are named.
    #[test]
    fn every_path_gives_the_same_bits() {
        let row: Vec<f32> = (0..50_257u32)
            .map(|i| ((i.wrapping_mul(2_246_822_519) >> 8) as f32 / 16_777_216.0) * 120.0 - 100.0)
            .collect();
        let mut with_nan = row[..100].to_vec();
        with_nan[37] = f32::NAN;
        for path in crate::KernelPath::ALL {
            let Ok(k) = crate::Kernels::new(*path) else {
                eprintln!("exp_sum: {} not run (this CPU lacks it)", path.name());
                continue;
            };
            for n in [1, 7, 16, 17, 31, 64, 1000, 50_257] {
                let r = &row[..n];
                let m = max_logit(r);
                assert_eq!(
                    k.max_logit(r).to_bits(),
                    m.to_bits(),
                    "{} n={n}",
                    path.name()
                );
                assert_eq!(
                    k.exp_sum(r, m).to_bits(),
                    exp_sum(r, m).to_bits(),
                    "{} n={n}",
                    path.name()
                );
            }
            assert!(k.max_logit(&with_nan).is_nan());
            assert!(k.exp_sum(&with_nan, 0.0).is_nan());
        }
    }

    #[test]
    fn sum_matches_f64() {
        let logits: Vec<f32> = (0..50_257u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0) * 30.0 - 20.0)
            .collect();
        let max = max_logit(&logits);
        assert_eq!(
            max,
            logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        let want: f64 = logits
            .iter()
            .map(|&v| (f64::from(v) - f64::from(max)).exp())
            .sum();
        let got = exp_sum(&logits, max);
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
        // Ragged lengths and a NaN.
        for n in [1, 15, 16, 17, 33] {
            let row = &logits[..n];
            let m = max_logit(row);
            let want: f64 = row
                .iter()
                .map(|&v| (f64::from(v) - f64::from(m)).exp())
                .sum();
            assert!((exp_sum(row, m) - want).abs() <= 1e-6 * want);
        }
        let mut bad = logits[..40].to_vec();
        bad[20] = f32::NAN;
        assert!(max_logit(&bad).is_nan());
        assert!(exp_sum(&bad, max_logit(&bad)).is_nan());
    }
}
