//! NEON's float kernels: the float products (tiles of four rows by one
//! token or two rows by four tokens), LayerNorm, GELU, and the attention
//! composed of the dot, softmax and axpy helpers. They accept any length;
//! the elements past the last full vector go through the scalar code.

use std::arch::aarch64::*;
use std::array::from_fn;

use half::f16;

use super::load_f16x8;
use crate::quant::panels::{MIN_FLOAT_TOKENS, float_panels};
use crate::quant::scalar;
use crate::quant::tile::{FloatActs, OutTile};

/// A float weight element type.
pub(super) trait FloatElem: Copy {
    /// Eight values from `p` as f32.
    ///
    /// # Safety
    /// `p .. p + 8` must be readable.
    unsafe fn load8(p: *const Self) -> [float32x4_t; 2];
    /// The value as f32.
    fn get(self) -> f32;
}

impl FloatElem for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { [vld1q_f32(p), vld1q_f32(p.add(4))] }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}

impl FloatElem for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { load_f16x8(p) }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// Rows `i0 .. i0 + R` by tokens `t0 .. t0 + T` of a float product, eight
/// columns per step in two accumulators each, the ragged tail in scalar.
#[inline(always)]
fn tile_f<W: FloatElem, const R: usize, const T: usize>(
    w: &[W],
    x: &FloatActs<'_>,
    i0: usize,
    t0: usize,
    out: &mut OutTile<'_>,
) {
    let cols = x.cols;
    let wr: [&[W]; R] = from_fn(|r| &w[(i0 + r) * cols..][..cols]);
    let xr: [&[f32]; T] = from_fn(|t| &x.x[(t0 + t) * cols..][..cols]);
    let n8 = cols / 8 * 8;
    // SAFETY: base NEON (aarch64 baseline); every load reads columns
    // c .. c + 8 <= cols of a row slice of length `cols`.
    unsafe {
        let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
        let mut c = 0;
        while c < n8 {
            let wv: [[float32x4_t; 2]; R] = from_fn(|r| W::load8(wr[r].as_ptr().add(c)));
            for t in 0..T {
                let xv = f32::load8(xr[t].as_ptr().add(c));
                for r in 0..R {
                    acc[r][t][0] = vfmaq_f32(acc[r][t][0], wv[r][0], xv[0]);
                    acc[r][t][1] = vfmaq_f32(acc[r][t][1], wv[r][1], xv[1]);
                }
            }
            c += 8;
        }
        for r in 0..R {
            for t in 0..T {
                let mut s = vaddvq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1]));
                for (wv, xv) in wr[r][n8..].iter().zip(&xr[t][n8..]) {
                    s += wv.get() * xv;
                }
                out.set(t0 + t, i0 + r, s);
            }
        }
    }
}

#[inline(always)]
fn rows_f<W: FloatElem, const R: usize>(
    w: &[W],
    x: &FloatActs<'_>,
    i0: usize,
    out: &mut OutTile<'_>,
) {
    let mut t = 0;
    while t + 4 <= x.n_tok {
        tile_f::<W, R, 4>(w, x, i0, t, out);
        t += 4;
    }
    while t < x.n_tok {
        tile_f::<W, R, 1>(w, x, i0, t, out);
        t += 1;
    }
}

/// Every output of a float product: four rows at a time for one token,
/// two rows by four tokens otherwise; ragged edges one by one.
#[inline(always)]
pub(super) fn gemm_f<W: FloatElem>(w: &[W], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    let rows = out.rows();
    assert!(
        w.len() >= rows * x.cols,
        "gemm: weights shorter than the tile"
    );
    assert!(x.x.len() >= x.n_tok * x.cols, "gemm: activations too short");
    let mut i = 0;
    if x.n_tok == 1 {
        while i + 4 <= rows {
            tile_f::<W, 4, 1>(w, x, i, 0, out);
            i += 4;
        }
    } else {
        while i + 2 <= rows {
            rows_f::<W, 2>(w, x, i, out);
            i += 2;
        }
    }
    while i < rows {
        rows_f::<W, 1>(w, x, i, out);
        i += 1;
    }
}

/// F16 weight rows times float activations: as [`gemm_f32`].
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    if x.n_tok >= MIN_FLOAT_TOKENS && !x.decode {
        panels_walk(w, x, out);
    } else {
        gemm_f(w, x, out)
    }
}

/// F32 weight rows times float activations: a prompt of at least
/// [`MIN_FLOAT_TOKENS`] tokens in panels (`quant::panels`), else (fewer
/// tokens, a decode step) the register tiles, which sum each (row, token)
/// alike.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    if x.n_tok >= MIN_FLOAT_TOKENS && !x.decode {
        panels_walk(w, x, out);
    } else {
        gemm_f(w, x, out)
    }
}

/// A zero vector (the panels' accumulators start from it).
#[inline]
#[target_feature(enable = "neon")]
fn zero4() -> float32x4_t {
    vdupq_n_f32(0.0)
}

/// `a·b + c` (the panels' argument order).
#[inline]
#[target_feature(enable = "neon")]
fn fma4(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
    vfmaq_f32(c, a, b)
}

/// Four rows of `src` (`stride` apart, four values each) to four runs of
/// four in `dst` (`dst_stride` apart): the panels' transposition.
#[inline]
fn transpose4(src: &[f32], stride: usize, dst: &mut [f32], dst_stride: usize) {
    for i in 0..4 {
        for k in 0..4 {
            dst[k * dst_stride + i] = src[i * stride + k];
        }
    }
}

// Panels of 4 tokens, tiles of 6 rows × 4 panels: 24 accumulators, four
// panel loads and six broadcasts per 24 FMAs, 29 of the 32 registers.
float_panels!(
    "neon",
    float32x4_t,
    4,
    6,
    4,
    zero4,
    vld1q_f32,
    vdupq_n_f32,
    fma4,
    vst1q_f32,
    4,
    transpose4
);

// Vector helpers

/// Σ x·y over `n` elements of `x` (`W`) and `y` (f32): 16 per step in four
/// accumulators, then the tail in scalar.
#[inline(always)]
pub(super) fn dot_vec<W: FloatElem>(x: &[W], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot: length mismatch");
    let n = x.len();
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read elements
    // i + 8h .. i + 8h + 8 <= n of both slices.
    let mut s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for h in 0..2 {
                let (xv, yv) = (W::load8(px.add(i + 8 * h)), f32::load8(py.add(i + 8 * h)));
                acc[2 * h] = vfmaq_f32(acc[2 * h], xv[0], yv[0]);
                acc[2 * h + 1] = vfmaq_f32(acc[2 * h + 1], xv[1], yv[1]);
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for (a, b) in x[i..].iter().zip(&y[i..]) {
        s += a.get() * b;
    }
    s
}

/// `y += alpha · x`, a multiply then an add (as the scalar path: equal results).
#[inline(always)]
pub(super) fn axpy_vec<W: FloatElem>(alpha: f32, x: &[W], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    let n = x.len();
    let px = x.as_ptr();
    let py = y.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: base NEON (aarch64 baseline); i + 8 <= n, the length of both
        // slices; `y` is borrowed mutably, so nothing else touches it.
        unsafe {
            let xv = W::load8(px.add(i));
            let yv = f32::load8(py.add(i));
            vst1q_f32(py.add(i), vaddq_f32(yv[0], vmulq_n_f32(xv[0], alpha)));
            vst1q_f32(py.add(i + 4), vaddq_f32(yv[1], vmulq_n_f32(xv[1], alpha)));
        }
        i += 8;
    }
    for (o, v) in y[i..].iter_mut().zip(&x[i..]) {
        *o += alpha * v.get();
    }
}

/// `y += x`.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn add(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "add: length mismatch");
    let n = x.len();
    let px = x.as_ptr();
    let py = y.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n, the length of both slices; `y` is exclusively
        // borrowed.
        unsafe {
            vst1q_f32(
                py.add(i),
                vaddq_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i))),
            )
        };
        i += 4;
    }
    scalar::add(&x[i..], &mut y[i..]);
}

/// Σ x, 16 per step in four accumulators, the tail in scalar.
#[inline(always)]
fn sum_vec(x: &[f32]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read i + 4k .. i + 4k + 4 <= n.
    let mut s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = vaddq_f32(*a, vld1q_f32(p.add(i + 4 * k)));
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for v in &x[i..] {
        s += v;
    }
    s
}

/// Σ (x - mean)², as `sum_vec`.
#[inline(always)]
fn sq_dev_vec(x: &[f32], mean: f32) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read i + 4k .. i + 4k + 4 <= n.
    let mut s = unsafe {
        let m = vdupq_n_f32(mean);
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let d = vsubq_f32(vld1q_f32(p.add(i + 4 * k)), m);
                *a = vfmaq_f32(*a, d, d);
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for v in &x[i..] {
        s += (v - mean) * (v - mean);
    }
    s
}

/// `out = (x - mean) / sqrt(var + eps) · w + b`.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() == n && b.len() == n && out.len() == n && n > 0);
    let mean = sum_vec(x) / n as f32;
    let var = sq_dev_vec(x, mean) / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    let (px, pw, pb, po) = (x.as_ptr(), w.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let m = vdupq_n_f32(mean);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n, the length of all four slices; `out` is
        // exclusively borrowed.
        unsafe {
            let d = vmulq_n_f32(vsubq_f32(vld1q_f32(px.add(i)), m), inv);
            let v = vaddq_f32(vmulq_f32(d, vld1q_f32(pw.add(i))), vld1q_f32(pb.add(i)));
            vst1q_f32(po.add(i), v);
        }
        i += 4;
    }
    for j in i..n {
        out[j] = (x[j] - mean) * inv * w[j] + b[j];
    }
}

/// e^x for four lanes: `2^n · p(r)`, `n = round(x·log2 e)`, `r = x - n·ln 2`
/// (in two parts), `p` the degree-7 Taylor polynomial (|r| <= 0.35: relative
/// error below 1e-8 before rounding). Inputs are clamped to [-87, 88], so
/// `2^n` stays a normal float: large negative inputs give about 1.6e-38
/// instead of a subnormal or zero.
#[inline(always)]
fn exp_vec(x: float32x4_t) -> float32x4_t {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0x3f318000: few bits, so n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    // SAFETY: base NEON (aarch64 baseline), registers only.
    unsafe {
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
        let n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
        let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
        let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
        let mut p = vdupq_n_f32(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
        vmulq_f32(p, vreinterpretq_f32_s32(e))
    }
}

/// GPT-2's GELU (tanh approximation), in place.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gelu(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let n = x.len();
    let p = x.as_mut_ptr();
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n; `x` is exclusively borrowed.
        unsafe {
            let u = vld1q_f32(p.add(i));
            let u3 = vmulq_f32(vmulq_f32(u, u), u);
            let z = vmulq_n_f32(vfmaq_n_f32(u, u3, 0.044_715), SQRT_2_OVER_PI);
            // 0.5·u·(1 + tanh z) = u / (1 + e^(-2z)): no cancellation for u < 0.
            let e = exp_vec(vmulq_n_f32(z, -2.0));
            vst1q_f32(p.add(i), vdivq_f32(u, vaddq_f32(one, e)));
        }
        i += 4;
    }
    scalar::gelu(&mut x[i..]);
}

/// Softmax in place, stable (the maximum is subtracted first).
#[inline(always)]
pub(super) fn softmax_vec(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read i .. i + 4 <= n.
    let max = unsafe {
        let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
        while i + 4 <= n {
            // maxNum skips NaNs, as `f32::max` does in the scalar path.
            mv = vmaxnmq_f32(mv, vld1q_f32(p.add(i)));
            i += 4;
        }
        vmaxnmvq_f32(mv)
    };
    let max = x[i..].iter().fold(max, |m, &v| m.max(v));
    i = 0;
    // SAFETY: base NEON; the loads and stores touch i .. i + 4 <= n of `x`,
    // which is exclusively borrowed.
    let mut sum = unsafe {
        let m = vdupq_n_f32(max);
        let mut sv = vdupq_n_f32(0.0);
        while i + 4 <= n {
            let e = exp_vec(vsubq_f32(vld1q_f32(p.add(i)), m));
            vst1q_f32(p.add(i), e);
            sv = vaddq_f32(sv, e);
            i += 4;
        }
        vaddvq_f32(sv)
    };
    for v in x[i..].iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n; `x` is exclusively borrowed.
        unsafe { vst1q_f32(p.add(i), vmulq_n_f32(vld1q_f32(p.add(i)), inv)) };
        i += 4;
    }
    for v in x[i..].iter_mut() {
        *v *= inv;
    }
}

/// One query's attention over an f32 cache: the scores by [`dot_vec`], the
/// [`softmax_vec`], then the values summed by [`axpy_vec`] (the scalar
/// path's composition, with NEON's helpers).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(in crate::quant) fn attend_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend(q, k, v, stride, n, scale, scores, out)
}

/// [`attend_f32`] over an f16 cache.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(in crate::quant) fn attend_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend(q, k, v, stride, n, scale, scores, out)
}

/// One query's attention over `n` positions whose keys and values are
/// `k[p·stride ..][..hd]` and `v[p·stride ..][..hd]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend<W: FloatElem>(
    q: &[f32],
    k: &[W],
    v: &[W],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = out.len();
    assert!(q.len() == hd && scores.len() >= n, "attend: sizes");
    let scores = &mut scores[..n];
    for (p, s) in scores.iter_mut().enumerate() {
        *s = dot_vec(&k[p * stride..p * stride + hd], q) * scale;
    }
    softmax_vec(scores);
    out.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        axpy_vec(w, &v[p * stride..p * stride + hd], out);
    }
}
