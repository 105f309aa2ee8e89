//! The scalar kernel path: plain loops over the reference routines. Always
//! available; `GPTQ_KERNEL=scalar` forces it.

use half::f16;

use super::blocks::{BlockQ4_0, BlockQ8_0};
use super::reference;
use super::tile::{FloatActs, OutTile, QuantActs};

pub(super) fn quantize_acts(x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
    reference::quantize_acts_q8_0(x, q);
    reference::block_sums(q, sums);
}

pub(super) fn gemm_q8_0(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(a.nb).take(out.rows()).enumerate() {
        for t in 0..a.n_tok {
            out.set(t, i, reference::vec_dot_q8_0_q8_0(wr, a.row(t)));
        }
    }
}

pub(super) fn gemm_q4_0(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(a.nb).take(out.rows()).enumerate() {
        for t in 0..a.n_tok {
            out.set(t, i, reference::vec_dot_q4_0_q8_0(wr, a.row(t)));
        }
    }
}

pub(super) fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, reference::vec_dot_f16_f32(wr, x.row(t)));
        }
    }
}

pub(super) fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, reference::vec_dot_f32(wr, x.row(t)));
        }
    }
}

pub(super) fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    reference::vec_dot_f32(x, y)
}

pub(super) fn dot_f16(x: &[f16], y: &[f32]) -> f32 {
    reference::vec_dot_f16_f32(x, y)
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
