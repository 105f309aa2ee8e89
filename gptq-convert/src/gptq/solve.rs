//! GPTQ on one weight matrix (Frantar, Ashkboos, Hoefler, Alistarh 2022,
//! Algorithm 1): columns (input features) are quantized one at a time in
//! processing order, and each column's rounding error is spread over the
//! columns not yet quantized, weighted by the inverse Hessian's Cholesky
//! factor. Updates inside a batch of `block` columns are applied at once to
//! the batch; the rest of the matrix receives the whole batch's errors in one
//! matrix product ("lazy batch updates").
//!
//! Every output row is independent (the Hessian is shared), so rows are split
//! into fixed tiles that run in parallel; the ggml block structure fixes the
//! groups: the 32 (or 256) consecutive input features of one row that share a
//! block's scales. A block's scales are chosen by the type's own quantizer
//! ([`RowGrid::choose`], ggml's search, importance-weighted when weights are
//! given) from the row's current weights when GPTQ reaches the block's first
//! column (with act-order, the first in processing order); each value is then
//! rounded to the nearest value those stored scales represent. Any block type
//! of [`crate::quantize::QUANTIZABLE`] works: Q4_0 … Q8_0, the K-quants, IQ4.
//!
//! The weighted searches of ggml's legacy and K types also weigh by the
//! row's mean square (`sigma2`); here a block is chosen on its own, so that
//! mean is the block's, from the weights as compensation has left them.

use anyhow::{Result, bail};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use gptq_core::gguf::GgmlType;
use rayon::prelude::*;

use super::inverse::InverseFactor;
use crate::quantize::grid::RowGrid;

/// Options of [`gptq_matrix`].
#[derive(Clone, Copy, Debug)]
pub struct SolveOptions {
    /// Columns per lazy batch (128 in the paper).
    pub block: usize,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions { block: 128 }
    }
}

/// Rows per parallel task. Fixed, so the result does not depend on the
/// thread count.
const ROW_TILE: usize = 32;

/// Quantizes `w` (`rows × cols`, row-major, output features by input features)
/// with GPTQ into `ty`'s blocks and returns them, row after row (ggml's
/// layout). `importance`, one weight per input feature, goes to the type's
/// quantizer when it picks a block's scales.
pub fn gptq_matrix(
    w: &[f32],
    rows: usize,
    cols: usize,
    f: &InverseFactor,
    ty: GgmlType,
    importance: Option<&[f32]>,
    opts: SolveOptions,
) -> Result<Vec<u8>> {
    if w.len() != rows * cols || f.u.len() != cols * cols {
        bail!(
            "GPTQ: a {rows}×{cols} matrix with a factor of {} values",
            f.u.len()
        );
    }
    let len = ty.block_size();
    if len < 2 || !cols.is_multiple_of(len) {
        bail!("GPTQ: rows of {cols} values are not whole {ty} blocks");
    }
    if importance.is_some_and(|q| q.len() != cols) {
        bail!("GPTQ: importance weights for {cols} columns expected");
    }
    let row_bytes = cols / len * ty.type_size();
    let mut out = vec![0u8; rows * row_bytes];
    let ctx = Ctx::new(f, ty, importance, cols, opts.block.max(1));
    out.par_chunks_mut(ROW_TILE * row_bytes)
        .zip(w.par_chunks(ROW_TILE * cols))
        .try_for_each(|(dst, src)| ctx.tile(src, dst))?;
    Ok(out)
}

struct Ctx<'a> {
    f: &'a InverseFactor,
    ty: GgmlType,
    importance: Option<&'a [f32]>,
    cols: usize,
    block: usize,
    /// `pos[c]`: when column `c` is processed.
    pos: Vec<usize>,
    /// `first[g]`: when the first column of block `g` is processed.
    first: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn new(
        f: &'a InverseFactor,
        ty: GgmlType,
        importance: Option<&'a [f32]>,
        cols: usize,
        block: usize,
    ) -> Ctx<'a> {
        let len = ty.block_size();
        let mut pos = vec![0; cols];
        for (i, &c) in f.perm.iter().enumerate() {
            pos[c] = i;
        }
        let first = (0..cols / len)
            .map(|g| (g * len..(g + 1) * len).map(|c| pos[c]).min().unwrap_or(0))
            .collect();
        Ctx {
            f,
            ty,
            importance,
            cols,
            block,
            pos,
            first,
        }
    }

    /// Quantizes the rows of `src` into `dst`.
    fn tile(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        let (n, len) = (self.cols, self.ty.block_size());
        let m = src.len() / n;
        let bb = self.ty.type_size();
        let n_blocks = n / len;
        let u = &self.f.u;
        // The tile's weights in processing order; dead columns are zero.
        let mut wp = vec![0.0f32; m * n];
        for (r, row) in src.chunks_exact(n).enumerate() {
            for (i, &c) in self.f.perm.iter().enumerate() {
                wp[r * n + i] = if self.f.dead[c] { 0.0 } else { row[c] };
            }
        }
        let mut grids: Vec<Option<RowGrid>> = vec![None; m * n_blocks];
        let mut err = vec![0.0f32; m * self.block];
        let mut values = vec![0.0f32; len];
        for i1 in (0..n).step_by(self.block) {
            let i2 = (i1 + self.block).min(n);
            let b = i2 - i1;
            for i in i1..i2 {
                let c = self.f.perm[i];
                let g = c / len;
                let d = u[i * n + i];
                for r in 0..m {
                    if self.first[g] == i {
                        // The block's scales, from the row's current weights.
                        for (k, v) in values.iter_mut().enumerate() {
                            let p = self.pos[g * len + k];
                            let mut x = wp[r * n + p];
                            if p >= i2 {
                                // Not yet updated by this batch's errors.
                                for (kk, e) in err[r * self.block..][..i - i1].iter().enumerate() {
                                    x -= e * u[(i1 + kk) * n + p];
                                }
                            }
                            *v = x;
                        }
                        let imp = self.importance.map(|q| &q[g * len..(g + 1) * len]);
                        grids[r * n_blocks + g] = Some(RowGrid::choose(self.ty, &values, imp)?);
                    }
                    let Some(grid) = grids[r * n_blocks + g].as_mut() else {
                        bail!("GPTQ: block {g} was not chosen at its first column");
                    };
                    let row = &mut wp[r * n..(r + 1) * n];
                    let v = grid.set(c % len, row[i]);
                    let e = (row[i] - v) / d;
                    err[r * self.block + (i - i1)] = e;
                    let ui = &u[i * n + i + 1..i * n + i2];
                    for (x, &h) in row[i + 1..i2].iter_mut().zip(ui) {
                        *x -= e * h;
                    }
                }
            }
            if i2 < n {
                // wp[:, i2..] -= E[:, ..b] · U[i1..i2, i2..]
                // Row-major with a stride, as the transpose of a column-major
                // view: faer 0.24.4's `from_row_major_slice_with_stride_mut`
                // lays the elements out column-major (and writes past the
                // slice).
                let dst_m =
                    MatMut::from_column_major_slice_with_stride_mut(&mut wp[i2..], n - i2, m, n)
                        .transpose_mut();
                let e = MatRef::from_row_major_slice_with_stride(&err, m, b, self.block);
                let uu = MatRef::from_row_major_slice_with_stride(&u[i1 * n + i2..], b, n - i2, n);
                matmul(dst_m, Accum::Add, e, uu, -1.0f32, Par::Seq);
            }
        }
        for (k, grid) in grids.into_iter().enumerate() {
            let Some(grid) = grid else {
                bail!("GPTQ: a block was never reached");
            };
            dst[k * bb..(k + 1) * bb].copy_from_slice(&grid.into_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::inverse::inverse_factor;
    use super::*;
    use crate::quantize::quantize_rows;
    use gptq_core::quant::types::dequantize_row;

    /// A small deterministic generator (xorshift), so the tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Calibration inputs with correlated features and a few large ones, like
    /// a transformer's.
    fn inputs(rng: &mut Rng, tokens: usize, cols: usize) -> Vec<f32> {
        let mut x = vec![0.0f32; tokens * cols];
        for t in 0..tokens {
            let common = rng.next();
            for c in 0..cols {
                let scale = if c % 29 == 3 { 12.0 } else { 1.0 };
                x[t * cols + c] = scale * (0.6 * common + rng.next());
            }
        }
        x
    }

    fn xtx(x: &[f32], cols: usize) -> Vec<f64> {
        let mut h = vec![0.0f64; cols * cols];
        for row in x.chunks_exact(cols) {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += f64::from(row[i]) * f64::from(row[j]);
                }
            }
        }
        h
    }

    fn dequantize(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * cols];
        let rb = bytes.len() / rows;
        for (o, b) in out.chunks_exact_mut(cols).zip(bytes.chunks_exact(rb)) {
            dequantize_row(ty, b, o).unwrap();
        }
        out
    }

    /// `Σ_rows δ H δᵀ`: the squared output error over the calibration inputs.
    fn output_error(w: &[f32], q: &[f32], h: &[f64], cols: usize) -> f64 {
        w.chunks_exact(cols)
            .zip(q.chunks_exact(cols))
            .map(|(a, b)| {
                let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| f64::from(x - y)).collect();
                (0..cols)
                    .map(|i| {
                        (0..cols)
                            .map(|j| d[i] * h[i * cols + j] * d[j])
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    /// The algorithm written directly, in f64: after each column, the
    /// optimal update of the remaining weights from the full inverse
    /// Hessian of the remaining columns, which is then shrunk by Gaussian
    /// elimination (the OBS form GPTQ's Cholesky formulation equals).
    fn reference(
        w: &[f32],
        rows: usize,
        cols: usize,
        h: &[f64],
        damp: f64,
        act_order: bool,
        ty: GgmlType,
    ) -> Vec<f32> {
        let len = ty.block_size();
        let mean = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
        let mut hd = h.to_vec();
        for i in 0..cols {
            hd[i * cols + i] += damp * mean;
        }
        let hinv = {
            let m = faer::Mat::<f64>::from_fn(cols, cols, |i, j| hd[i * cols + j]);
            use faer::linalg::solvers::DenseSolveCore;
            let inv = m.llt(faer::Side::Lower).unwrap().inverse();
            (0..cols * cols)
                .map(|k| inv[(k / cols, k % cols)])
                .collect::<Vec<f64>>()
        };
        let mut order: Vec<usize> = (0..cols).collect();
        if act_order {
            order.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        }
        let mut out = vec![0.0f32; rows * cols];
        for r in 0..rows {
            let mut wr: Vec<f64> = w[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let mut hi = hinv.clone();
            let mut done = vec![false; cols];
            let mut grids = vec![None; cols / len];
            for &col in &order {
                let g = col / len;
                if grids[g].is_none() {
                    let vals: Vec<f32> = wr[g * len..(g + 1) * len]
                        .iter()
                        .map(|&v| v as f32)
                        .collect();
                    grids[g] = Some(RowGrid::choose(ty, &vals, None).unwrap());
                }
                let q = grids[g].as_mut().unwrap().set(col % len, wr[col] as f32);
                let e = (wr[col] - f64::from(q)) / hi[col * cols + col];
                for j in 0..cols {
                    if !done[j] && j != col {
                        wr[j] -= e * hi[col * cols + j];
                    }
                }
                wr[col] = f64::from(q);
                done[col] = true;
                let pivot = hi[col * cols + col];
                let rowc: Vec<f64> = hi[col * cols..(col + 1) * cols].to_vec();
                for i in 0..cols {
                    let f = hi[i * cols + col] / pivot;
                    for j in 0..cols {
                        hi[i * cols + j] -= f * rowc[j];
                    }
                }
            }
            for (o, v) in out[r * cols..(r + 1) * cols].iter_mut().zip(&wr) {
                *o = *v as f32;
            }
        }
        out
    }

    fn case(ty: GgmlType, act_order: bool, block: usize) {
        let (rows, cols, tokens) = (8, 96, 400);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next() * 0.1).collect();
        let x = inputs(&mut rng, tokens, cols);
        let h = xtx(&x, cols);
        let f = inverse_factor(&h, cols, act_order, 0.01).unwrap();
        let bytes = gptq_matrix(&w, rows, cols, &f, ty, None, SolveOptions { block }).unwrap();
        let got = dequantize(ty, &bytes, rows, cols);
        let want = reference(&w, rows, cols, &h, 0.01, act_order, ty);
        let same = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| (*a - *b).abs() <= 1e-6)
            .count();
        assert!(
            same * 100 >= got.len() * 99,
            "{ty} act_order {act_order} block {block}: {same} of {} values agree with the reference",
            got.len()
        );
        // Error compensation beats rounding to nearest on the calibration inputs.
        let rtn = dequantize(ty, &quantize_rows(ty, &w, cols, None).unwrap(), rows, cols);
        let (e_gptq, e_rtn) = (
            output_error(&w, &got, &h, cols),
            output_error(&w, &rtn, &h, cols),
        );
        assert!(
            e_gptq < e_rtn,
            "{ty}: GPTQ error {e_gptq} not below RTN's {e_rtn}"
        );
    }

    #[test]
    fn matches_the_direct_algorithm_and_beats_rounding() {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            for act_order in [false, true] {
                // Lazy batches smaller than, equal to and larger than the matrix.
                for block in [32, 64, 128] {
                    case(ty, act_order, block);
                }
            }
        }
    }

    #[test]
    fn same_bytes_on_any_thread_count() {
        let (rows, cols) = (70, 256);
        let mut rng = Rng(7);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let x = inputs(&mut rng, 300, cols);
        let f = inverse_factor(&xtx(&x, cols), cols, true, 0.01).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    gptq_matrix(
                        &w,
                        rows,
                        cols,
                        &f,
                        GgmlType::Q4_K,
                        None,
                        SolveOptions::default(),
                    )
                    .unwrap()
                })
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }

    /// Every block type, 256 columns (one K block, eight 32-blocks): GPTQ
    /// beats rounding to nearest on correlated inputs, and with uncorrelated
    /// inputs (a diagonal Hessian: nothing to compensate) every value is the
    /// nearest one its block's scales represent, never further from the
    /// weight than round-to-nearest's.
    #[test]
    fn every_block_type_beats_rounding_and_reduces_to_it() {
        let (rows, cols) = (6, 256);
        let mut rng = Rng(0x5EED);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next() * 0.1).collect();
        let x = inputs(&mut rng, 600, cols);
        let h = xtx(&x, cols);
        let f = inverse_factor(&h, cols, false, 0.01).unwrap();
        let mut eye = vec![0.0f64; cols * cols];
        for i in 0..cols {
            eye[i * cols + i] = 1.0;
        }
        let fd = inverse_factor(&eye, cols, false, 0.01).unwrap();
        for ty in crate::quantize::QUANTIZABLE
            .iter()
            .copied()
            .filter(|t| t.block_size() > 1)
        {
            let rtn = dequantize(ty, &quantize_rows(ty, &w, cols, None).unwrap(), rows, cols);
            let opts = SolveOptions::default();
            let got = dequantize(
                ty,
                &gptq_matrix(&w, rows, cols, &f, ty, None, opts).unwrap(),
                rows,
                cols,
            );
            let (e_gptq, e_rtn) = (
                output_error(&w, &got, &h, cols),
                output_error(&w, &rtn, &h, cols),
            );
            assert!(
                e_gptq < e_rtn,
                "{ty}: GPTQ error {e_gptq} not below RTN's {e_rtn}"
            );
            let diag = dequantize(
                ty,
                &gptq_matrix(&w, rows, cols, &fd, ty, None, opts).unwrap(),
                rows,
                cols,
            );
            let sq =
                |q: &[f32]| -> f64 { w.iter().zip(q).map(|(a, b)| f64::from(a - b).powi(2)).sum() };
            assert!(
                sq(&diag) <= sq(&rtn),
                "{ty}: diagonal-Hessian GPTQ {} further than RTN {}",
                sq(&diag),
                sq(&rtn)
            );
        }
    }
}
