//! Matrix products `y = x · Wᵀ` over stored weights: activations are quantized
//! once per call (for quantized weights), then the output rows are split into
//! coarse ranges that run on the rayon pool, each handed to the kernel path's
//! tile function. One code path serves decode (one token: a matrix-vector
//! product) and prefill (many tokens: the kernel reuses each weight block for
//! several tokens).

use rayon::prelude::*;

use super::blocks::{BlockQ8_0, QK};
use super::dispatch::Kernels;
use super::matrix::{Matrix, WeightData};
use super::team::Par;
use super::tile::{FloatActs, OutTile, QuantActs, RowSplit};

/// Row ranges are multiples of this, so that kernels that compute several rows
/// at once rarely see a ragged range.
const ROW_ALIGN: usize = 16;

/// Parallel tasks per worker thread on the rayon pool: a few, so that a thread
/// that is descheduled for a moment does not hold up the whole product.
const TASKS_PER_THREAD: usize = 4;

/// Parallel tasks per thread of a decode step's team: one contiguous weight
/// stream per thread. Each extra task restarts a stream (its first lines
/// miss the prefetch distance). `gptq bench -p 0 -n 64` on the 355M shape,
/// Q4_0, 2 threads, alternated 4 times: 1 task 117.5 t/s (median), 2 tasks
/// 112.0, 4 tasks 108.6, 8 tasks 103.5.
const TEAM_TASKS_PER_THREAD: usize = 1;

/// Up to this many rows of activations are quantized on the calling thread (a
/// batched decode step's few rows: cheaper than a parallel loop, and a step
/// on a [`Team`](super::team::Team) keeps rayon's pool out of its loops).
const QUANTIZE_SERIAL_MAX: usize = 16;

/// Space for the quantized activations of one product, allocated once.
#[derive(Clone, Debug, Default)]
pub struct MatmulScratch {
    blocks: Vec<BlockQ8_0>,
    sums: Vec<i16>,
}

impl MatmulScratch {
    /// Scratch for products of up to `max_tokens` rows of up to `max_cols` columns.
    pub fn new(max_tokens: usize, max_cols: usize) -> MatmulScratch {
        let n = max_tokens * max_cols.div_ceil(QK);
        MatmulScratch {
            blocks: vec![BlockQ8_0::ZERO; n],
            sums: vec![0; n],
        }
    }

    /// Bytes held.
    pub fn n_bytes(&self) -> usize {
        std::mem::size_of_val(self.blocks.as_slice()) + std::mem::size_of_val(self.sums.as_slice())
    }
}

/// `y[t][r] = Σ_c w[r][c] · x[t][c]` for `t < n_tok`: `x` holds `n_tok` rows of
/// `w.cols()` values and `y` receives `n_tok` rows of `w.rows()` values. The
/// row ranges run on the rayon pool.
///
/// # Panics
/// When `x` or `y` is shorter than that, or the scratch is too small; the model
/// sizes everything from validated hyper-parameters, so these are bugs.
pub fn matmul(
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    matmul_on(Par::Pool, k, w, x, n_tok, y, scratch);
}

/// [`matmul`] with its row ranges run by `par`.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_on(
    par: Par<'_>,
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    product(par, k, w, x, n_tok, y, scratch, false);
}

/// [`matmul_on`] for `n_tok` independent decode tokens (one per session of a
/// batch): each token's output row is bitwise the one `matmul_on` gives it
/// alone (`n_tok = 1`), while one pass over the weights serves them all. The
/// products for many tokens ([`matmul_on`]) use register tiles whose sums
/// may be ordered differently.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_decode_on(
    par: Par<'_>,
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    product(par, k, w, x, n_tok, y, scratch, true);
}

#[allow(clippy::too_many_arguments)]
fn product(
    par: Par<'_>,
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
    decode: bool,
) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(x.len() >= n_tok * cols, "matmul: x too short");
    assert!(y.len() >= n_tok * rows, "matmul: y too short");
    let x = &x[..n_tok * cols];
    let y = &mut y[..n_tok * rows];
    match w.data() {
        WeightData::Q8_0(d) => {
            let acts = quantize(k, x, n_tok, cols, scratch);
            let nb = acts.nb;
            let f = if decode {
                k.table.gemv_q8_0
            } else {
                k.table.gemm_q8_0
            };
            for_row_tiles(par, rows, n_tok, y, |tile| {
                let r0 = tile.r0();
                f(&d[r0 * nb..(r0 + tile.rows()) * nb], &acts, tile)
            });
        }
        WeightData::Q4_0(d) => {
            let acts = quantize(k, x, n_tok, cols, scratch);
            let nb = acts.nb;
            let f = if decode {
                k.table.gemv_q4_0
            } else {
                k.table.gemm_q4_0
            };
            for_row_tiles(par, rows, n_tok, y, |tile| {
                let r0 = tile.r0();
                f(&d[r0 * nb..(r0 + tile.rows()) * nb], &acts, tile)
            });
        }
        WeightData::F16(d) => {
            let acts = FloatActs { x, n_tok, cols };
            for_row_tiles(par, rows, n_tok, y, |tile| {
                let r0 = tile.r0();
                (k.table.gemm_f16)(&d[r0 * cols..(r0 + tile.rows()) * cols], &acts, tile)
            });
        }
        WeightData::F32(d) => {
            let acts = FloatActs { x, n_tok, cols };
            for_row_tiles(par, rows, n_tok, y, |tile| {
                let r0 = tile.r0();
                (k.table.gemm_f32)(&d[r0 * cols..(r0 + tile.rows()) * cols], &acts, tile)
            });
        }
    }
}

fn quantize<'s>(
    k: &Kernels,
    x: &[f32],
    n_tok: usize,
    cols: usize,
    scratch: &'s mut MatmulScratch,
) -> QuantActs<'s> {
    assert!(
        cols.is_multiple_of(QK),
        "matmul: quantized rows must be whole blocks"
    );
    let nb = cols / QK;
    let n = n_tok * nb;
    assert!(scratch.blocks.len() >= n, "matmul: scratch too small");
    let blocks = &mut scratch.blocks[..n];
    let sums = &mut scratch.sums[..n];
    let quantize_acts = k.table.quantize_acts;
    if n_tok > QUANTIZE_SERIAL_MAX {
        x.par_chunks(cols)
            .zip(blocks.par_chunks_mut(nb))
            .zip(sums.par_chunks_mut(nb))
            .for_each(|((xr, br), sr)| quantize_acts(xr, br, sr));
    } else {
        for ((xr, br), sr) in x
            .chunks(cols)
            .zip(blocks.chunks_mut(nb))
            .zip(sums.chunks_mut(nb))
        {
            quantize_acts(xr, br, sr);
        }
    }
    QuantActs {
        blocks: &scratch.blocks[..n],
        sums: &scratch.sums[..n],
        n_tok,
        nb,
    }
}

/// Runs `f` on row ranges of the output covering all `rows`, in parallel.
fn for_row_tiles(
    par: Par<'_>,
    rows: usize,
    n_tok: usize,
    y: &mut [f32],
    f: impl Fn(&mut OutTile<'_>) + Sync,
) {
    let tasks = rayon::current_num_threads()
        * match par {
            Par::Pool => TASKS_PER_THREAD,
            Par::Team(_) => TEAM_TASKS_PER_THREAD,
        };
    let chunk = rows
        .div_ceil(tasks)
        .next_multiple_of(ROW_ALIGN)
        .max(ROW_ALIGN);
    let split = RowSplit::new(y, n_tok, rows, chunk);
    let n = split.n_tiles();
    if n == 1 {
        // SAFETY: the only tile of this split, taken once.
        let mut tile = unsafe { split.tile(0) };
        f(&mut tile);
        return;
    }
    par.for_each(n, &|c| {
        // SAFETY: `for_each` runs each index of `0..n` exactly once, so every
        // tile index is taken by one task only.
        let mut tile = unsafe { split.tile(c) };
        f(&mut tile);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::reference;
    use half::f16;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// The expected `y[t][r]` of a case, from `(r, t)`.
    type Want<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;

    #[test]
    fn matmul_matches_rowwise_reference_for_every_type() {
        let mut s = 7u64;
        let (rows, cols, n_tok) = (67, 96, 5);
        let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..n_tok * cols).map(|_| lcg(&mut s)).collect();
        let mut w8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
        let mut w4 = vec![crate::quant::BlockQ4_0::ZERO; rows * cols / QK];
        reference::quantize_row_q8_0(&wf, &mut w8);
        reference::quantize_row_q4_0(&wf, &mut w4);
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let k = Kernels::scalar();
        let mut scratch = MatmulScratch::new(n_tok, cols);
        let nb = cols / QK;
        let mut xq = vec![BlockQ8_0::ZERO; n_tok * nb];
        for t in 0..n_tok {
            reference::quantize_acts_q8_0(
                &x[t * cols..(t + 1) * cols],
                &mut xq[t * nb..(t + 1) * nb],
            );
        }
        let cases: Vec<(WeightData<'_>, Want<'_>)> = vec![
            (
                WeightData::F32(&wf),
                Box::new(|r, t| {
                    reference::vec_dot_f32(
                        &wf[r * cols..(r + 1) * cols],
                        &x[t * cols..(t + 1) * cols],
                    )
                }),
            ),
            (
                WeightData::F16(&wh),
                Box::new(|r, t| {
                    reference::vec_dot_f16_f32(
                        &wh[r * cols..(r + 1) * cols],
                        &x[t * cols..(t + 1) * cols],
                    )
                }),
            ),
            (
                WeightData::Q8_0(&w8),
                Box::new(|r, t| {
                    reference::vec_dot_q8_0_q8_0(
                        &w8[r * nb..(r + 1) * nb],
                        &xq[t * nb..(t + 1) * nb],
                    )
                }),
            ),
            (
                WeightData::Q4_0(&w4),
                Box::new(|r, t| {
                    reference::vec_dot_q4_0_q8_0(
                        &w4[r * nb..(r + 1) * nb],
                        &xq[t * nb..(t + 1) * nb],
                    )
                }),
            ),
        ];
        for (data, want) in cases {
            let m = Matrix::new(data, rows, cols).unwrap();
            let mut y = vec![f32::NAN; n_tok * rows];
            matmul(&k, &m, &x, n_tok, &mut y, &mut scratch);
            for t in 0..n_tok {
                for r in 0..rows {
                    assert_eq!(y[t * rows + r], want(r, t), "{data:?} r{r} t{t}");
                }
            }
        }
    }

    /// Each row of a decode product over several tokens is bitwise the
    /// single-token product's, on every path this CPU runs, every weight
    /// type, ragged shapes and token counts across the kernels' register
    /// and stack groups; and the scalar path agrees with the reference.
    #[test]
    fn decode_products_equal_single_token_products_bitwise() {
        let mut s = 11u64;
        for path in crate::quant::KernelPath::available() {
            let k = Kernels::new(path).unwrap();
            for (rows, cols) in [(67, 96), (33, 160), (48, 768), (20, 3072), (5, 8192)] {
                let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
                let mut w8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
                let mut w4 = vec![crate::quant::BlockQ4_0::ZERO; rows * cols / QK];
                reference::quantize_row_q8_0(&wf, &mut w8);
                reference::quantize_row_q4_0(&wf, &mut w4);
                let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
                let max_tok = 23;
                let x: Vec<f32> = (0..max_tok * cols).map(|_| 3.0 * lcg(&mut s)).collect();
                let mut scratch = MatmulScratch::new(max_tok, cols);
                for data in [
                    WeightData::F32(&wf),
                    WeightData::F16(&wh),
                    WeightData::Q8_0(&w8),
                    WeightData::Q4_0(&w4),
                ] {
                    let m = Matrix::new(data, rows, cols).unwrap();
                    let mut alone = vec![f32::NAN; max_tok * rows];
                    for t in 0..max_tok {
                        matmul_on(
                            Par::Pool,
                            &k,
                            &m,
                            &x[t * cols..(t + 1) * cols],
                            1,
                            &mut alone[t * rows..(t + 1) * rows],
                            &mut scratch,
                        );
                    }
                    for n_tok in [1, 2, 3, 4, 5, 8, 11, max_tok] {
                        let mut y = vec![f32::NAN; n_tok * rows];
                        matmul_decode_on(Par::Pool, &k, &m, &x, n_tok, &mut y, &mut scratch);
                        for (i, (a, b)) in y.iter().zip(&alone).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{path} {data:?} {rows}x{cols}, {n_tok} tokens: token {} row {}",
                                i / rows,
                                i % rows
                            );
                        }
                    }
                }
            }
        }
    }
}
