//! The scalar kernel path: plain loops over the reference routines. Always
//! available; `GPTQ_KERNEL=scalar` forces it.

use half::{bf16, f16};

use super::tile::{FloatActs, OutTile, QuantActs};
use super::types::bf16::vec_dot_bf16_f32;
use super::types::float::{vec_dot_f16_f32, vec_dot_f32};
use super::types::{ActBlock, VecDot};

/// Quantizes a row of activations with the partner type's reference
/// quantizer.
pub(super) fn quantize<A: ActBlock>(x: &[f32], q: &mut [A], sums: &mut [i16]) {
    A::quantize(x, q, sums)
}

/// Weight rows of any block type times quantized activations: the type's
/// reference dot, row by row and token by token.
pub(super) fn gemm<W: VecDot>(w: &[W], a: &QuantActs<'_, W::Partner>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(a.nb).take(out.rows()).enumerate() {
        for t in 0..a.n_tok {
            out.set(t, i, W::dot(wr, a.row(t)));
        }
    }
}

pub(super) fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, vec_dot_f16_f32(wr, x.row(t)));
        }
    }
}

pub(super) fn gemm_bf16(w: &[bf16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, vec_dot_bf16_f32(wr, x.row(t)));
        }
    }
}

pub(super) fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, vec_dot_f32(wr, x.row(t)));
        }
    }
}

pub(super) fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    vec_dot_f32(x, y)
}

pub(super) fn dot_f16(x: &[f16], y: &[f32]) -> f32 {
    vec_dot_f16_f32(x, y)
}

/// `y += alpha · x`
pub(super) fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// `y += alpha · x` with `x` in half precision.
pub(super) fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v.to_f32();
    }
}

/// `out = (x - mean) / sqrt(var + eps) · w + b`
pub(super) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() == n && b.len() == n && out.len() == n && n > 0);
    let mean = x.iter().sum::<f32>() / n as f32;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..n {
        out[i] = (x[i] - mean) * inv * w[i] + b[i];
    }
}

/// GPT-2's GELU (tanh approximation, "gelu_new"), in place.
pub(super) fn gelu(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// `y += x`
pub(super) fn add(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o += v;
    }
}

/// Softmax in place, stable (the maximum is subtracted first); returns nothing.
pub(super) fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// One query's attention over an f32 cache: the scores by [`dot_f32`], the
/// [`softmax`], then the values summed by [`axpy_f32`].
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend(q, k, v, stride, n, scale, scores, out, dot_f32, axpy_f32)
}

/// [`attend_f32`] over an f16 cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend(q, k, v, stride, n, scale, scores, out, dot_f16, axpy_f16)
}

/// One query's attention over `n` positions whose keys and values are
/// `k[p·stride ..][..hd]` and `v[p·stride ..][..hd]`, composed of a dot
/// product per position, the softmax and an axpy per position.
#[allow(clippy::too_many_arguments)]
fn attend<T>(
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    dot: fn(&[T], &[f32]) -> f32,
    axpy: fn(f32, &[T], &mut [f32]),
) {
    let hd = out.len();
    assert!(q.len() == hd && scores.len() >= n, "attend: sizes");
    let scores = &mut scores[..n];
    for (p, s) in scores.iter_mut().enumerate() {
        *s = dot(&k[p * stride..p * stride + hd], q) * scale;
    }
    softmax(scores);
    out.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        axpy(w, &v[p * stride..p * stride + hd], out);
    }
}

#[cfg(test)]
mod tests;
