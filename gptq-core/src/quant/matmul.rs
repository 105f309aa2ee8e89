//! Matrix products `y = x · Wᵀ` over stored weights: activations are quantized
//! once per call (for quantized weights, to the weight type's activation
//! partner), then the output rows are split into coarse ranges that run in
//! parallel (on the rayon pool, or on a decode step's team), each handed to
//! the kernel table's product for the weight type. One code path serves decode (one token: a matrix-vector
//! product) and prefill (many tokens: the kernel reuses each weight block for
//! several tokens).

use rayon::prelude::*;

use super::dispatch::Kernels;
use super::matrix::{Matrix, match_weights};
use super::table::{FloatGemm, Gemm, Quantize, VerifiedTable};
use super::team::Par;
use super::tile::{FloatActs, OutTile, QuantActs, RowSplit};
use super::types::{ActBlock, BlockQ8_0, BlockQ8K, VecDot};

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

/// Parallel tasks per thread of a team's product of several tokens (a batch
/// step's sessions, a short prompt). Such a product is bound by
/// instructions, not by the weight stream, so an even split matters more
/// than long streams: with one task per thread, a thread that is descheduled
/// for a moment holds up the whole product while the other spins.
const TEAM_BATCH_TASKS_PER_THREAD: usize = 4;

/// Up to this many rows of activations are quantized on the calling thread (a
/// batched decode step's few rows: cheaper than a parallel loop, and a step
/// on a [`Team`](super::team::Team) keeps rayon's pool out of its loops).
const QUANTIZE_SERIAL_MAX: usize = 16;

/// Space for the quantized activations of one product, for every
/// activation partner the weights need, allocated once.
#[derive(Clone, Debug, Default)]
pub struct MatmulScratch {
    q8_0: Vec<BlockQ8_0>,
    sums: Vec<i16>,
    q8_k: Vec<BlockQ8K>,
}

impl MatmulScratch {
    /// Scratch for products of up to `max_tokens` rows of up to `max_cols`
    /// columns, with weights of any type.
    pub fn new(max_tokens: usize, max_cols: usize) -> MatmulScratch {
        let mut s = MatmulScratch::default();
        s.reserve::<BlockQ8_0>(max_tokens, max_cols);
        s.reserve::<BlockQ8K>(max_tokens, max_cols);
        s
    }

    /// Scratch for products of up to `max_tokens` rows with the matrices
    /// `weights`: only the activation types they need, each sized for the
    /// widest matrix that needs it.
    pub fn for_matrices<'a>(
        max_tokens: usize,
        weights: impl IntoIterator<Item = Matrix<'a>>,
    ) -> MatmulScratch {
        fn need<W: VecDot>(s: &mut MatmulScratch, _: &[W], max_tokens: usize, cols: usize)
        where
            W::Partner: Staged,
        {
            s.reserve::<W::Partner>(max_tokens, cols);
        }
        let mut s = MatmulScratch::default();
        for m in weights {
            match_weights!(m.data(), d => float: { let _ = d; }, quant: need(&mut s, d, max_tokens, m.cols()));
        }
        s
    }

    /// Grows the space for `A` to `max_tokens` rows of `max_cols` columns.
    fn reserve<A: Staged>(&mut self, max_tokens: usize, max_cols: usize) {
        let n = max_tokens * (max_cols / A::ELEMS);
        let (blocks, sums) = A::buffers(self);
        if blocks.len() < n {
            blocks.resize(n, A::ZERO);
            if A::SUMS {
                sums.resize(n, 0);
            }
        }
    }

    /// Bytes held.
    pub fn n_bytes(&self) -> usize {
        std::mem::size_of_val(self.q8_0.as_slice())
            + std::mem::size_of_val(self.sums.as_slice())
            + std::mem::size_of_val(self.q8_k.as_slice())
    }
}

/// An activation type the scratch holds, and where.
trait Staged: ActBlock + Quantize {
    /// The blocks and block sums of this type.
    fn buffers(s: &mut MatmulScratch) -> (&mut Vec<Self>, &mut Vec<i16>);
}

impl Staged for BlockQ8_0 {
    fn buffers(s: &mut MatmulScratch) -> (&mut Vec<Self>, &mut Vec<i16>) {
        (&mut s.q8_0, &mut s.sums)
    }
}

impl Staged for BlockQ8K {
    fn buffers(s: &mut MatmulScratch) -> (&mut Vec<Self>, &mut Vec<i16>) {
        (&mut s.q8_k, &mut s.sums)
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
    matmul_on(Par::Pool, k.table(), w, x, n_tok, y, scratch);
}

/// [`matmul`] with its row ranges run by `par` (the rayon pool, or a decode
/// step's team).
///
/// # Panics
/// As [`matmul`].
pub(crate) fn matmul_on(
    par: Par<'_>,
    k: VerifiedTable,
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
pub(crate) fn matmul_decode_on(
    par: Par<'_>,
    k: VerifiedTable,
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
    k: VerifiedTable,
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
    let p = Product {
        par,
        k,
        x,
        n_tok,
        rows,
        cols,
        decode,
    };
    match_weights!(
        w.data(),
        d => float: p.float(d, y),
        quant: p.quantized(d, y, scratch),
    );
}

/// One product's arguments, shared by the weight types.
struct Product<'x, 'p> {
    par: Par<'p>,
    k: VerifiedTable,
    x: &'x [f32],
    n_tok: usize,
    rows: usize,
    cols: usize,
    /// Whether the tokens are independent decode tokens (see
    /// [`matmul_decode_on`]).
    decode: bool,
}

impl Product<'_, '_> {
    /// Float weights times the activations as they are.
    fn float<W: FloatGemm>(&self, w: &[W], y: &mut [f32]) {
        let (k, cols) = (self.k, self.cols);
        let acts = FloatActs {
            x: self.x,
            n_tok: self.n_tok,
            cols,
            decode: self.decode,
        };
        for_row_tiles(self.par, self.rows, self.n_tok, y, |tile| {
            let r0 = tile.r0();
            k.gemm_float(&w[r0 * cols..(r0 + tile.rows()) * cols], &acts, tile)
        });
    }

    /// Quantized weights times the activations quantized to their partner.
    fn quantized<W: Gemm>(&self, w: &[W], y: &mut [f32], scratch: &mut MatmulScratch)
    where
        W::Partner: Staged,
    {
        let (k, decode) = (self.k, self.decode);
        let acts = self.quantize::<W::Partner>(scratch);
        let nb = acts.nb;
        for_row_tiles(self.par, self.rows, self.n_tok, y, |tile| {
            let r0 = tile.r0();
            let w = &w[r0 * nb..(r0 + tile.rows()) * nb];
            if decode {
                k.gemv(w, &acts, tile)
            } else {
                k.gemm(w, &acts, tile)
            }
        });
    }

    /// The activations quantized to `A` in `scratch`: a few tokens on this
    /// thread, more in parallel.
    fn quantize<'s, A: Staged>(&self, scratch: &'s mut MatmulScratch) -> QuantActs<'s, A> {
        let (k, x, n_tok, cols) = (self.k, self.x, self.n_tok, self.cols);
        assert!(
            cols.is_multiple_of(A::ELEMS),
            "matmul: quantized rows must be whole blocks"
        );
        let nb = cols / A::ELEMS;
        let n = n_tok * nb;
        let ns = if A::SUMS { n } else { 0 };
        let (blocks, sums) = A::buffers(scratch);
        assert!(
            blocks.len() >= n && sums.len() >= ns,
            "matmul: scratch too small"
        );
        let (blocks, sums) = (&mut blocks[..n], &mut sums[..ns]);
        if n_tok <= QUANTIZE_SERIAL_MAX {
            let ns = if A::SUMS { nb } else { 0 };
            for (t, xr) in x.chunks(cols).enumerate() {
                let sr = &mut sums[t * ns..(t + 1) * ns];
                k.quantize(xr, &mut blocks[t * nb..(t + 1) * nb], sr);
            }
        } else if A::SUMS {
            x.par_chunks(cols)
                .zip(blocks.par_chunks_mut(nb))
                .zip(sums.par_chunks_mut(nb))
                .for_each(|((xr, br), sr)| k.quantize(xr, br, sr));
        } else {
            x.par_chunks(cols)
                .zip(blocks.par_chunks_mut(nb))
                .for_each(|(xr, br)| k.quantize(xr, br, &mut []));
        }
        QuantActs::new(blocks, sums, n_tok, nb)
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
            Par::Team(_) if n_tok > 1 => TEAM_BATCH_TASKS_PER_THREAD,
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
    use crate::quant::matrix::WeightData;
    use crate::quant::types::float::{vec_dot_f16_f32, vec_dot_f32};
    use crate::quant::types::q4_0::{quantize_row_q4_0, vec_dot_q4_0_q8_0};
    use crate::quant::types::q8_0::{quantize_acts_q8_0, quantize_row_q8_0, vec_dot_q8_0_q8_0};
    use crate::quant::types::q8_k::quantize_row_q8_k;
    use crate::quant::types::{BlockQ4_0, QK, QK_K};
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
        // Under Miri (about 1000x slower) a smaller ragged shape: still several
        // row tiles, a partial one, and more than one token.
        let (rows, cols, n_tok) = if cfg!(miri) { (35, 64, 2) } else { (67, 96, 5) };
        let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..n_tok * cols).map(|_| lcg(&mut s)).collect();
        let mut w8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
        let mut w4 = vec![BlockQ4_0::ZERO; rows * cols / QK];
        quantize_row_q8_0(&wf, &mut w8);
        quantize_row_q4_0(&wf, &mut w4);
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let k = Kernels::scalar();
        let mut scratch = MatmulScratch::new(n_tok, cols);
        let nb = cols / QK;
        let mut xq = vec![BlockQ8_0::ZERO; n_tok * nb];
        for t in 0..n_tok {
            quantize_acts_q8_0(&x[t * cols..(t + 1) * cols], &mut xq[t * nb..(t + 1) * nb]);
        }
        let cases: Vec<(WeightData<'_>, Want<'_>)> = vec![
            (
                WeightData::F32(&wf),
                Box::new(|r, t| {
                    vec_dot_f32(&wf[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols])
                }),
            ),
            (
                WeightData::F16(&wh),
                Box::new(|r, t| {
                    vec_dot_f16_f32(&wh[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols])
                }),
            ),
            (
                WeightData::Q8_0(&w8),
                Box::new(|r, t| {
                    vec_dot_q8_0_q8_0(&w8[r * nb..(r + 1) * nb], &xq[t * nb..(t + 1) * nb])
                }),
            ),
            (
                WeightData::Q4_0(&w4),
                Box::new(|r, t| {
                    vec_dot_q4_0_q8_0(&w4[r * nb..(r + 1) * nb], &xq[t * nb..(t + 1) * nb])
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

    /// A product's tiles share one preparation of the activations per thread
    /// (keyed by the quantization's id): a product through the same scratch
    /// as the one before, its activations at the same addresses with other
    /// values, gets its own results whatever came before it.
    #[test]
    fn activations_prepared_once_per_product_are_never_stale() {
        if cfg!(miri) {
            return; // the strips' sizes take minutes under Miri
        }
        let mut s = 11u64;
        let (rows, cols, n_tok) = (80, 128, 40);
        let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let mut w8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
        let mut w4 = vec![BlockQ4_0::ZERO; rows * cols / QK];
        quantize_row_q8_0(&wf, &mut w8);
        quantize_row_q4_0(&wf, &mut w4);
        let xs: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..n_tok * cols).map(|_| lcg(&mut s)).collect())
            .collect();
        for path in crate::quant::KernelPath::available() {
            let k = Kernels::new(path).unwrap();
            for data in [WeightData::Q8_0(&w8), WeightData::Q4_0(&w4)] {
                let m = Matrix::new(data, rows, cols).unwrap();
                let mut shared = MatmulScratch::new(n_tok, cols);
                for x in &xs {
                    let (mut y, mut want) =
                        (vec![0.0f32; n_tok * rows], vec![0.0f32; n_tok * rows]);
                    matmul(&k, &m, x, n_tok, &mut y, &mut shared);
                    let mut own = MatmulScratch::new(n_tok, cols);
                    matmul(&Kernels::scalar(), &m, x, n_tok, &mut want, &mut own);
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        // The strips sum in another order than the scalar
                        // products; stale activations would be another
                        // product altogether.
                        let tol = 1e-3 * b.abs().max(1.0);
                        assert!((a - b).abs() <= tol, "{path} {data:?} [{i}]: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn scratch_is_sized_by_the_matrices() {
        let f = vec![0.0f32; 4 * 512];
        let q = vec![BlockQ8_0::ZERO; 4 * 512 / 32];
        let mf = Matrix::new(WeightData::F32(&f), 4, 512).unwrap();
        let mq = Matrix::new(WeightData::Q8_0(&q), 4, 512).unwrap();
        assert_eq!(MatmulScratch::for_matrices(8, [mf]).n_bytes(), 0);
        let s = MatmulScratch::for_matrices(8, [mf, mq]);
        assert_eq!(s.q8_0.len(), 8 * 16);
        assert_eq!(s.sums.len(), 8 * 16);
        assert!(s.q8_k.is_empty());
        let s = MatmulScratch::new(3, 512);
        assert_eq!((s.q8_0.len(), s.q8_k.len()), (3 * 16, 3 * 2));
    }

    /// The Q8_K partner through the scratch and the table: every path's
    /// quantizer (for now the scalar twin everywhere) equals the reference.
    #[test]
    fn q8_k_activations_through_the_scratch() {
        let x: Vec<f32> = (0..3 * 2 * QK_K)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let mut want = vec![crate::quant::types::BlockQ8K::ZERO; 3 * 2];
        quantize_row_q8_k(&x, &mut want);
        for k in [Kernels::scalar(), Kernels::best()] {
            let mut scratch = MatmulScratch::new(3, 2 * QK_K);
            let p = Product {
                par: Par::Pool,
                k: k.table(),
                x: &x,
                n_tok: 3,
                rows: 1,
                cols: 2 * QK_K,
                decode: false,
            };
            let acts = p.quantize::<BlockQ8K>(&mut scratch);
            assert_eq!((acts.nb, acts.n_tok, acts.sums.len()), (2, 3, 0));
            assert_eq!(acts.blocks, &want[..], "{}", k.describe());
        }
    }
}
