//! Activation-aware scaling (after AWQ, Lin et al. 2023), folded into the
//! operation before each matrix so the float model computes the same
//! function: input feature `j` of a matrix is multiplied by `s_j` in the
//! matrix's column `j` and divided by `s_j` where it is produced.
//!
//! - `attn_qkv` (input: the first LayerNorm): LayerNorm weight and bias ÷ s.
//! - `attn_output` (input: the heads' outputs, linear in the values): the
//!   value rows of `attn_qkv` and their biases ÷ s.
//! - `ffn_up` (input: the second LayerNorm): LayerNorm weight and bias ÷ s.
//! - `ffn_down` follows a GELU, which no scale passes through: left alone.
//!
//! Inputs with large activations get larger weights, so rounding loses less
//! of what they carry. Per matrix, `s = mean|x|^α` (normalised so that
//! `max·min = 1`) with α searched on a grid by the output error of
//! round-to-nearest, `Σ_rows δᵀ (XᵀX) δ` for `δ = W - Q(W·s)/s`; α = 0 (no
//! scaling) is on the grid, so scaling never loses on calibration data.

use std::collections::HashMap;

use anyhow::{Context, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use gptq_core::gguf::GgmlType;
use gptq_core::model::{ActivationObserver, HParams, Site};
use gptq_core::quant::types::dequantize_row;
use rayon::prelude::*;

use crate::gptq::hessian::Hessian;
use crate::gptq::layerwise::LayerF32;
use crate::quantize::quantize_rows;

/// Grid of exponents searched.
const GRID: usize = 20;

/// The sites whose inputs can be rescaled.
pub const SCALED: [Site; 3] = [Site::AttnQkv, Site::AttnOut, Site::FfnUp];

/// Per-input statistics of the scalable matrices' inputs over the
/// calibration set: mean absolute value and `XᵀX`.
#[derive(Clone, Debug)]
pub struct InputStats {
    abs: HashMap<Site, (Vec<f64>, u64)>,
    h: HashMap<Site, Hessian>,
}

impl InputStats {
    /// Empty statistics for a model of shape `hp`.
    pub fn new(hp: &HParams) -> InputStats {
        let d = hp.n_embd;
        InputStats {
            abs: SCALED.iter().map(|&s| (s, (vec![0.0; d], 0))).collect(),
            h: SCALED.iter().map(|&s| (s, Hessian::new(d))).collect(),
        }
    }
}

impl ActivationObserver for InputStats {
    fn observe(&mut self, _: usize, site: Site, rows: &[f32], n: usize) {
        let (Some((abs, count)), Some(h)) = (self.abs.get_mut(&site), self.h.get_mut(&site)) else {
            return;
        };
        for row in rows.chunks_exact(abs.len()) {
            for (a, &x) in abs.iter_mut().zip(row) {
                *a += f64::from(x.abs());
            }
        }
        *count += n as u64;
        h.add(rows, n);
    }
}

/// `w` (`rows × cols`) rounded to `ty` (with importance weights when given,
/// as the file's quantizer will) and expanded back.
fn round_trip(ty: GgmlType, w: &[f32], cols: usize, imp: Option<&[f32]>) -> Result<Vec<f32>> {
    let bytes = quantize_rows(ty, w, cols, imp)?;
    let rb = bytes.len() / (w.len() / cols).max(1);
    let mut out = vec![0.0f32; w.len()];
    out.par_chunks_mut(cols)
        .zip(bytes.par_chunks(rb))
        .try_for_each(|(o, b)| dequantize_row(ty, b, o))
        .with_context(|| format!("expanding {ty}"))?;
    Ok(out)
}

/// `Σ_rows δ H δᵀ` for `δ = w - q`.
fn output_error(w: &[f32], q: &[f32], h: &[f32], cols: usize) -> f64 {
    let delta: Vec<f32> = w.iter().zip(q).map(|(a, b)| a - b).collect();
    const TILE: usize = 64;
    let hm = MatRef::from_row_major_slice(h, cols, cols);
    delta
        .par_chunks(TILE * cols)
        .map(|d| {
            let m = d.len() / cols;
            let mut dh = vec![0.0f32; d.len()];
            matmul(
                MatMut::from_row_major_slice_mut(&mut dh, m, cols),
                Accum::Replace,
                MatRef::from_row_major_slice(d, m, cols),
                hm,
                1.0f32,
                Par::Seq,
            );
            d.iter()
                .zip(&dh)
                .map(|(a, b)| f64::from(a * b))
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum::<f64>()
        .max(0.0)
}

/// The best scales for one matrix (`rows × cols`, `[out, in]`) of type `ty`.
/// `imp`: the inputs' importance weights (mean squares), if the file's
/// quantizer uses them; input `j` scaled by `1/s_j` has `imp_j / s_j²`.
fn search(
    ty: GgmlType,
    w: &[f32],
    cols: usize,
    mean_abs: &[f64],
    h: &[f32],
    imp: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let mut best = (f64::INFINITY, vec![1.0f32; cols]);
    let floor = mean_abs
        .iter()
        .copied()
        .filter(|&a| a > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 1.0 };
    for k in 0..GRID {
        let alpha = k as f64 / GRID as f64;
        let mut s: Vec<f64> = mean_abs.iter().map(|&a| a.max(floor).powf(alpha)).collect();
        let (mx, mn) = s
            .iter()
            .fold((0.0f64, f64::INFINITY), |(a, b), &v| (a.max(v), b.min(v)));
        let norm = (mx * mn).sqrt();
        for v in &mut s {
            *v /= norm;
        }
        let s: Vec<f32> = s.iter().map(|&v| v as f32).collect();
        let scaled: Vec<f32> = w
            .chunks_exact(cols)
            .flat_map(|row| row.iter().zip(&s).map(|(a, b)| a * b))
            .collect();
        let imp_s: Option<Vec<f32>> =
            imp.map(|q| q.iter().zip(&s).map(|(a, b)| a / (b * b)).collect());
        let q = round_trip(ty, &scaled, cols, imp_s.as_deref())?;
        let back: Vec<f32> = q
            .chunks_exact(cols)
            .flat_map(|row| row.iter().zip(&s).map(|(a, b)| a / b))
            .collect();
        let err = output_error(w, &back, h, cols);
        if err < best.0 {
            best = (err, s);
        }
    }
    Ok(best.1)
}

/// Searches and folds the scales of one block's scalable matrices into `w`
/// (F32, matrices `[out, in]`); returns the scales applied per site. Matrices
/// of a type without blocks (F32, F16) are left alone.
pub fn search_layer(
    hp: &HParams,
    w: &mut LayerF32,
    stats: &InputStats,
    types: &dyn Fn(&str) -> GgmlType,
    importance: &HashMap<Site, Vec<f32>>,
) -> Result<Vec<(Site, Vec<f32>)>> {
    let d = hp.n_embd;
    let mut applied = Vec::new();
    for site in SCALED {
        let name = match site {
            Site::AttnQkv => "attn_qkv.weight",
            Site::AttnOut => "attn_output.weight",
            _ => "ffn_up.weight",
        };
        let ty = types(name);
        if ty.block_size() < 2 || !d.is_multiple_of(ty.block_size()) {
            continue;
        }
        let (abs, count) = &stats.abs[&site];
        let mean: Vec<f64> = abs.iter().map(|a| a / (*count).max(1) as f64).collect();
        let h: Vec<f32> = stats.h[&site].values().iter().map(|&v| v as f32).collect();
        let imp = importance.get(&site).map(Vec::as_slice);
        let s = search(ty, &w.t[name], d, &mean, &h, imp)?;
        if s.iter().all(|&v| v == 1.0) {
            continue;
        }
        // Fold: columns × s, the producer ÷ s.
        for row in w.t.get_mut(name).expect("present").chunks_exact_mut(d) {
            for (a, b) in row.iter_mut().zip(&s) {
                *a *= b;
            }
        }
        let divide = |v: &mut [f32]| {
            for (a, b) in v.iter_mut().zip(&s) {
                *a /= b;
            }
        };
        match site {
            Site::AttnQkv => {
                divide(w.t.get_mut("attn_norm.weight").expect("present"));
                divide(w.t.get_mut("attn_norm.bias").expect("present"));
            }
            Site::FfnUp => {
                divide(w.t.get_mut("ffn_norm.weight").expect("present"));
                divide(w.t.get_mut("ffn_norm.bias").expect("present"));
            }
            _ => {
                // Value rows 2d..3d of the fused projection, and their biases.
                let qkv = w.t.get_mut("attn_qkv.weight").expect("present");
                for (j, row) in qkv[2 * d * d..].chunks_exact_mut(d).enumerate() {
                    for a in row.iter_mut() {
                        *a /= s[j];
                    }
                }
                divide(&mut w.t.get_mut("attn_qkv.bias").expect("present")[2 * d..]);
            }
        }
        applied.push((site, s));
    }
    Ok(applied)
}
