//! The kernel test harness: one random generator, the generators of test
//! data (random, ragged, extreme), and the comparisons of a kernel table
//! against the scalar twins. Every path's tests (scalar, avx2, avx512,
//! avxvnni, avx512+vbmi, amx, neon, neon+dotprod, neon+i8mm) get their table from [`table`]
//! and call these checks; what stays in a path's own tests is what only it
//! has (its internal integer dots, its `exp`, its f16 conversion).
//!
//! A path this CPU cannot run is skipped with a line on stderr naming it
//! (written past the test harness's capture, so it shows in every run);
//! `GPTQ_REQUIRE_KERNELS=avx512,amx,...` turns such a skip into a failure,
//! so that a machine known to have a path cannot pass without testing it.
//!
//! Tolerances are relative to Σ|terms| of the sum being compared: the paths
//! sum the same exact products in another order, with fused multiply-adds.

use std::io::Write;

use half::f16;

use super::dispatch::{table_by_name, table_names};
use super::matmul::{MatmulScratch, matmul_decode_on, matmul_on};
use super::matrix::{Matrix, WeightData};
use super::table::{FloatGemm, Gemm, HeadQueries, Quantize, VerifiedTable};
use super::team::Par;
use super::tile::{FloatActs, OutTile, QuantActs};
use super::types::q4_0::quantize_row_q4_0;
use super::types::q8_0::{dequantize_row_q8_0, quantize_acts_q8_0, quantize_row_q8_0};
use super::types::{ActBlock, BlockQ4_0, BlockQ8_0, BlockQ8K, QK, QuantBlock, VecDot};

/// The environment variable listing the tables this machine must test.
pub(crate) const REQUIRE: &str = "GPTQ_REQUIRE_KERNELS";

/// The table names `GPTQ_REQUIRE_KERNELS` lists.
pub(crate) fn required() -> Vec<String> {
    std::env::var(REQUIRE)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The table named `name` (`"avx512+vbmi"`), or `None` after a line on
/// stderr saying the calling test skips it because this CPU cannot run it.
///
/// # Panics
/// When no table has that name, or `GPTQ_REQUIRE_KERNELS` lists it and this
/// CPU cannot run it.
pub(crate) fn table(name: &str) -> Option<VerifiedTable> {
    match table_by_name(name) {
        None => panic!(
            "no kernel table is named {name} (known: {:?})",
            table_names()
        ),
        Some(Some(t)) => Some(t),
        Some(None) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("a kernel test")
                .to_owned();
            assert!(
                !required().iter().any(|r| r == name),
                "{test}: this CPU cannot run the {name} kernels, which {REQUIRE} requires"
            );
            // Straight to stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: this CPU cannot run the {name} kernels"
            );
            None
        }
    }
}

/// The scalar table, the twin every other table is compared with.
pub(crate) fn scalar() -> VerifiedTable {
    table("scalar").expect("the scalar table runs everywhere")
}

/// GPT-2's row lengths: `n_embd` of the four sizes, `3·768`, `4·768`.
pub(crate) const GPT2_COLS: [usize; 6] = [768, 1024, 1280, 1600, 2304, 3072];

/// xorshift64*: small, seeded, good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from any seed (zero included).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random byte.
    pub(crate) fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    /// `n` values uniform in [-1, 1).
    pub(crate) fn uniform(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }

    /// `n` activations whose magnitude changes every 32 values, over
    /// decades from 1e-4 to 1e4 (what the quantizers' scales must follow).
    pub(crate) fn acts(&mut self, n: usize) -> Vec<f32> {
        let mut scale = 1.0;
        (0..n)
            .map(|i| {
                if i % QK == 0 {
                    scale = 10f32.powi(self.below(9) as i32 - 4);
                }
                self.f() * scale
            })
            .collect()
    }

    /// `n` random weight blocks of type `W`.
    pub(crate) fn blocks<W: Gen>(&mut self, n: usize) -> Vec<W> {
        (0..n).map(|_| W::random(self)).collect()
    }
}

/// A weight block type's test data, written beside the type (in its file
/// under `types/`).
pub(crate) trait Gen: QuantBlock {
    /// A random block: values over the range the type's quantizers produce,
    /// scales of either sign around 0.05.
    fn random(rng: &mut Rng) -> Self;
    /// Blocks at the corners: the extreme values, zero, and the largest,
    /// smallest, subnormal and zero scales.
    fn extremes() -> Vec<Self>;
}

/// 32-value blocks that probe the quantizers' corners, all finite: zeros of
/// both signs, exact ties after scaling, the largest floats, subnormals
/// (whose scale overflows `127/amax`), huge and tiny magnitudes side by
/// side, a single non-zero value.
pub(crate) fn extreme_blocks(rng: &mut Rng) -> Vec<f32> {
    let b = |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..QK).map(f).collect() };
    let mut blocks: Vec<Vec<f32>> = vec![
        vec![0.0; QK],
        vec![-0.0; QK],
        b(&|j| if j == 0 { 127.0 } else { j as f32 - 15.5 }),
        b(&|j| if j == 0 { 127.0 } else { j as f32 - 16.5 }),
        b(&|j| {
            if j == 5 {
                -127.0
            } else {
                (j as f32 - 16.0) * 0.5
            }
        }),
        b(&|j| if j % 2 == 0 { f32::MAX } else { -f32::MAX }),
        b(&|j| if j == 3 { f32::MAX } else { 1.0 }),
        b(&|j| f32::from_bits(1 + j as u32)),
        b(&|j| -f32::from_bits(0x007f_ffff - j as u32)),
        b(&|j| (j as f32 - 16.0) * 1e-40),
        b(&|j| (j as f32 - 16.0) * 1e-37),
        b(&|j| f32::MIN_POSITIVE * (j as f32 - 16.0)),
        b(&|j| (j as f32 - 15.5) * 1e37),
        b(&|j| 1e30 * (j as f32 - 16.0)),
        b(&|j| 1e-30 * (j as f32 + 1.0)),
        b(&|j| if j == 7 { 1e20 } else { 1e-20 }),
        b(&|j| if j == 7 { -3.0 } else { 0.0 }),
        b(&|j| if j == 31 { -f32::MIN_POSITIVE } else { 0.0 }),
        b(&|j| if j % 2 == 0 { 8.3e6 } else { -8.3e6 }),
        b(&|j| if j % 3 == 0 { -1.0 } else { 1.0 }),
        vec![-1.5; QK],
    ];
    for _ in 0..16 {
        // Half-integers at scale 1 (amax 127): every value is a tie.
        blocks.push(b(&|j| if j == 0 { 127.0 } else { 0.0 }));
        for v in blocks.last_mut().unwrap()[1..].iter_mut() {
            *v = (rng.below(254) as f32 - 127.0) + 0.5;
        }
    }
    blocks.concat()
}

/// [`extreme_blocks`] whose Q8_0 scale (`amax/127`) is a finite f16, for
/// products: larger ones make infinite scales and the products infinities
/// or NaNs on every path alike (their quantization is compared bit for bit
/// by [`check_quantize`]).
pub(crate) fn extreme_product_blocks(rng: &mut Rng) -> Vec<f32> {
    extreme_blocks(rng)
        .chunks(QK)
        .filter(|b| b.iter().all(|v| v.abs() < 65504.0 * 127.0))
        .flatten()
        .copied()
        .collect()
}

/// Every multiple of 32 from 32 to 4096, then GPT-2's row lengths.
pub(crate) fn block_lengths() -> impl Iterator<Item = usize> {
    (QK..=4096).step_by(QK).chain(GPT2_COLS)
}

/// `n` tokens of `x` quantized by the scalar reference: `(blocks, sums)`.
pub(crate) fn quantize_ref<A: ActBlock>(x: &[f32], n_tok: usize) -> (Vec<A>, Vec<i16>) {
    let nb = x.len() / n_tok / A::ELEMS;
    let mut q = vec![A::ZERO; n_tok * nb];
    let mut s = vec![0i16; if A::SUMS { n_tok * nb } else { 0 }];
    let per = if A::SUMS { nb } else { 0 };
    for t in 0..n_tok {
        A::quantize(
            &x[t * nb * A::ELEMS..(t + 1) * nb * A::ELEMS],
            &mut q[t * nb..(t + 1) * nb],
            &mut s[t * per..(t + 1) * per],
        );
    }
    (q, s)
}

/// `t`'s activation quantizer equals the scalar reference bit for bit
/// (blocks and sums), on every block length and on [`extreme_blocks`], each
/// alone and all in one row.
pub(crate) fn check_quantize<A: Quantize + TestActs>(t: VerifiedTable) {
    let mut rng = Rng::new(1);
    let mut rows: Vec<Vec<f32>> = block_lengths()
        .filter(|n| n.is_multiple_of(A::ELEMS))
        .map(|n| rng.acts(n))
        .collect();
    let ext = extreme_blocks(&mut rng);
    let whole = ext.len() / A::ELEMS * A::ELEMS;
    rows.extend(ext.chunks_exact(A::ELEMS).map(<[f32]>::to_vec));
    rows.push(ext[..whole].to_vec());
    for x in &rows {
        let (want, want_s) = quantize_ref::<A>(x, 1);
        let mut got = vec![A::ZERO; want.len()];
        let mut got_s = vec![0i16; want_s.len()];
        t.quantize(x, &mut got, &mut got_s);
        for (b, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.bytes() == w.bytes(),
                "{} quantize: {} values, block {b}: {g:?} vs {w:?}",
                t.name(),
                x.len()
            );
        }
        assert_eq!(got_s, want_s, "{} block sums, {} values", t.name(), x.len());
    }
}

/// `t`'s Q8_K quantizer on the blocks a vector quantizer must hand to the
/// reference or get right on its own, bit for bit the reference's: two
/// values of the largest magnitude with opposite signs (the first one's sign
/// sets the scale), a NaN (also among zeros), an infinity, a subnormal
/// largest value (the scale overflows), a largest value just above that
/// (the scale barely finite, subnormal values), negative zeros, and a block
/// of all zeros.
pub(crate) fn check_q8_k_corners(t: VerifiedTable) {
    use super::types::{QK_K, q8_k::quantize_row_q8_k};
    let mut rng = Rng::new(5);
    let base = rng.acts(QK_K);
    let mut cases = Vec::new();
    for (i, j) in [(3, 200), (200, 3), (0, 255)] {
        let mut x: Vec<f32> = base.iter().map(|v| v * 0.5).collect();
        x[i] = 9.0;
        x[j] = -9.0;
        cases.push(x);
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = base.clone();
        x[77] = bad;
        cases.push(x);
    }
    let mut nan_in_zeros = vec![0.0f32; QK_K];
    nan_in_zeros[200] = f32::NAN;
    cases.push(nan_in_zeros);
    let mut tiny = vec![0.0f32; QK_K];
    tiny[9] = -f32::from_bits(3);
    tiny[10] = f32::from_bits(1);
    cases.push(tiny);
    // -127/max is finite from |max| >= 127/f32::MAX (about 3.7e-37).
    let small: Vec<f32> = (0..QK_K)
        .map(|k| match k {
            40 => -4e-37,
            _ if k % 2 == 0 => (k as f32 - 128.0) * 2e-39,
            _ => f32::from_bits(k as u32),
        })
        .collect();
    cases.push(small);
    cases.push(vec![-0.0; QK_K]);
    cases.push(vec![0.0; QK_K]);
    for (n, x) in cases.iter().enumerate() {
        let mut want = [BlockQ8K::ZERO];
        let mut got = [BlockQ8K::ZERO];
        quantize_row_q8_k(x, &mut want);
        t.quantize(x, &mut got, &mut []);
        assert!(
            got[0].bytes() == want[0].bytes(),
            "{} Q8_K corner case {n}: {:?} vs {:?}",
            t.name(),
            got[0],
            want[0]
        );
    }
}

/// Σ|terms| of the dot of a weight row and an activation row: the sum of
/// |w_i · a_i| over the dequantized values.
fn abs_terms<W: VecDot>(w: &[W], a: &[W::Partner]) -> f64
where
    W::Partner: TestActs,
{
    let n = w.len() * W::ELEMS;
    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
    W::dequantize(w, &mut wf);
    <W::Partner as TestActs>::dequantize(a, &mut af);
    wf.iter()
        .zip(&af)
        .map(|(p, q)| (f64::from(*p) * f64::from(*q)).abs())
        .sum()
}

/// An activation type in the tests: expanded back to floats, compared as
/// bytes.
pub(crate) trait TestActs: ActBlock {
    /// Expands blocks into `y`.
    fn dequantize(x: &[Self], y: &mut [f32]);
    /// The block's bytes, to compare bit for bit (NaN scales included).
    fn bytes(&self) -> Vec<u8>;
}

impl TestActs for BlockQ8_0 {
    fn dequantize(x: &[Self], y: &mut [f32]) {
        super::types::q8_0::dequantize_row_q8_0(x, y)
    }
    fn bytes(&self) -> Vec<u8> {
        crate::gguf::as_bytes(std::slice::from_ref(self)).to_vec()
    }
}

impl TestActs for BlockQ8K {
    fn dequantize(x: &[Self], y: &mut [f32]) {
        super::types::q8_k::dequantize_row_q8_k(x, y)
    }
    fn bytes(&self) -> Vec<u8> {
        let mut v = self.d.to_bits().to_le_bytes().to_vec();
        v.extend(self.qs.iter().map(|&q| q as u8));
        v.extend(self.bsums.iter().flat_map(|s| s.to_le_bytes()));
        v
    }
}

/// Runs `t`'s product and the scalar twin on weights `w` (`rows` rows) and
/// the activations `x` (`n_tok` tokens, quantized by the reference), and
/// checks that every output is finite and within
/// `max(1e-5, (nb + 8)·ε) · Σ|terms| + floor` of the twin's.
pub(crate) fn check_gemm<W: Gemm>(
    t: VerifiedTable,
    w: &[W],
    x: &[f32],
    rows: usize,
    n_tok: usize,
    floor: f64,
) where
    W::Partner: TestActs,
{
    let cols = x.len() / n_tok;
    let nb = cols / W::ELEMS;
    assert_eq!(w.len(), rows * nb, "check_gemm: weights");
    let (q, s) = quantize_ref::<W::Partner>(x, n_tok);
    let acts = QuantActs::new(&q, &s, n_tok, nb);
    let run = |table: VerifiedTable| {
        let mut y = vec![f32::NAN; n_tok * rows];
        table.gemm(w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
        y
    };
    let (got, want) = (run(t), run(scalar()));
    let rel = 1e-5f64.max((nb + 8) as f64 * f64::from(f32::EPSILON));
    for tok in 0..n_tok {
        for r in 0..rows {
            let k = tok * rows + r;
            let (g, e) = (f64::from(got[k]), f64::from(want[k]));
            let tol = rel * abs_terms(&w[r * nb..(r + 1) * nb], acts.row(tok)) + floor;
            assert!(
                g.is_finite() && (g - e).abs() <= tol,
                "{} {:?}: {rows}x{cols}, {n_tok} tokens, row {r} token {tok}: {g} vs {e} (tolerance {tol})",
                t.name(),
                W::TYPE
            );
        }
    }
}

/// [`check_gemm`] on random weights and activations of a shape.
pub(crate) fn check_gemm_random<W: Gemm + Gen>(
    t: VerifiedTable,
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    n_tok: usize,
) where
    W::Partner: TestActs,
{
    let w: Vec<W> = rng.blocks(rows * cols / W::ELEMS);
    let x = rng.acts(n_tok * cols);
    check_gemm(t, &w, &x, rows, n_tok, 1e-30);
}

/// [`check_gemm`] on the extremes: `rows` rows of the type's extreme blocks
/// (then random ones), against [`extreme_product_blocks`] as every one of
/// `n_tok` tokens.
pub(crate) fn check_gemm_extremes<W: Gemm + Gen>(t: VerifiedTable, rows: usize, n_tok: usize)
where
    W::Partner: TestActs,
{
    let mut rng = Rng::new(99);
    let mut row = extreme_product_blocks(&mut rng);
    row.truncate(row.len() / W::ELEMS * W::ELEMS);
    let nb = row.len() / W::ELEMS;
    let x: Vec<f32> = (0..n_tok).flat_map(|_| row.iter().copied()).collect();
    let mut w: Vec<W> = W::extremes().into_iter().cycle().take(rows * nb).collect();
    // Interleave random blocks, so that extreme ones meet every position.
    for b in w.iter_mut().skip(3).step_by(5) {
        *b = W::random(&mut rng);
    }
    // Sixteen subnormal ulps: the paths round products of subnormal scales
    // in another order.
    check_gemm(t, &w, &x, rows, n_tok, f64::from(f32::from_bits(16)));
}

/// The exact integer dot of a Q8_0 weight block and a Q8_0 activation
/// block, by definition.
pub(crate) fn int_dot_q8_0(w: &BlockQ8_0, a: &BlockQ8_0) -> i32 {
    w.qs.iter()
        .zip(&a.qs)
        .map(|(&p, &q)| i32::from(p) * i32::from(q))
        .sum()
}

/// The exact integer dot of a Q4_0 weight block (values `q - 8`) and a Q8_0
/// activation block, by definition.
pub(crate) fn int_dot_q4_0(w: &BlockQ4_0, a: &BlockQ8_0) -> i32 {
    (0..QK / 2)
        .map(|j| {
            (i32::from(w.qs[j] & 15) - 8) * i32::from(a.qs[j])
                + (i32::from(w.qs[j] >> 4) - 8) * i32::from(a.qs[j + QK / 2])
        })
        .sum()
}

/// Which product cases a path's tests run (their shapes suit the path: the
/// AMX path needs at least eight tokens, decode paths one).
pub(crate) struct GemmSuite {
    /// Token counts for the every-length cases, used in turn.
    pub tokens: &'static [usize],
    /// Rows and tokens of the ragged cases (every pair, at 96 and 160
    /// columns: an odd number of blocks and a partial group of four).
    pub ragged_rows: &'static [usize],
    pub ragged_tokens: &'static [usize],
    /// `(rows, tokens)` at each of GPT-2's row lengths.
    pub gpt2: &'static [(usize, usize)],
    /// Tokens for the LM head (50257 rows of 768), if any.
    pub lm_head: Option<usize>,
    /// `(rows, tokens)` of the extremes.
    pub extremes: (usize, usize),
}

impl GemmSuite {
    /// Decode and small prefill: the cases every path runs.
    pub(crate) const DEFAULT: GemmSuite = GemmSuite {
        tokens: &[1, 3, 5],
        ragged_rows: &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        ragged_tokens: &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        gpt2: &[(67, 1), (19, 7)],
        lm_head: Some(1),
        extremes: (7, 5),
    };

    /// Runs the suite on `t`'s product for `W`.
    pub(crate) fn run<W: Gemm + Gen>(&self, t: VerifiedTable, seed: u64)
    where
        W::Partner: TestActs,
    {
        let mut rng = Rng::new(seed);
        for (i, cols) in block_lengths()
            .filter(|c| c.is_multiple_of(W::ELEMS))
            .enumerate()
        {
            let n_tok = self.tokens[i % self.tokens.len()];
            check_gemm_random::<W>(t, &mut rng, 5, cols, n_tok);
        }
        for cols in [96usize, 160].map(|c| c.next_multiple_of(W::ELEMS)) {
            for &rows in self.ragged_rows {
                for &n_tok in self.ragged_tokens {
                    check_gemm_random::<W>(t, &mut rng, rows, cols, n_tok);
                }
            }
        }
        for cols in GPT2_COLS.into_iter().filter(|c| c.is_multiple_of(W::ELEMS)) {
            for &(rows, n_tok) in self.gpt2 {
                check_gemm_random::<W>(t, &mut rng, rows, cols, n_tok);
            }
        }
        if let Some(n_tok) = self.lm_head {
            check_gemm_random::<W>(t, &mut rng, 50257, 768, n_tok);
        }
        let (rows, n_tok) = self.extremes;
        check_gemm_extremes::<W>(t, rows, n_tok);
        check_gemm_extremes::<W>(t, rows, 1);
    }
}

/// `t`'s float product of weights of type `W` against the scalar twin, on
/// every row length up to 80 (all tails), the block lengths, ragged rows ×
/// tokens and the LM head's row count: within `max(1e-5, (n/8 + 16)·ε) ·
/// Σ|terms|`.
pub(crate) fn check_float_gemm<W: FloatGemm + Float>(t: VerifiedTable, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for cols in (1..=80).chain(block_lengths()) {
        shapes.push((5, cols, 1 + cols % 3));
    }
    for rows in 1..=9 {
        for n_tok in 1..=9 {
            shapes.push((rows, 45, n_tok));
        }
    }
    for cols in GPT2_COLS {
        shapes.push((13, cols, 1));
        shapes.push((6, cols, 5));
    }
    shapes.push((50257, 24, 1));
    // Prompts (the x86 panels from 16 tokens): ragged rows, tokens and
    // columns (not multiples of 8), and token chunks (at 3072 columns the
    // AVX-512 panels take 64 tokens per chunk).
    for (rows, cols, n_tok) in [
        (5, 45, 16),
        (9, 64, 17),
        (17, 100, 33),
        (3, 7, 40),
        (20, 13, 64),
        (33, 256, 77),
        (13, 768, 47),
        (11, 3072, 130),
    ] {
        shapes.push((rows, cols, n_tok));
    }
    for (rows, cols, n_tok) in shapes {
        let w: Vec<W> = rng.acts(rows * cols).into_iter().map(W::round).collect();
        let x = rng.acts(n_tok * cols);
        let acts = FloatActs {
            x: &x,
            n_tok,
            cols,
            decode: false,
        };
        let run = |table: VerifiedTable| {
            let mut y = vec![f32::NAN; n_tok * rows];
            table.gemm_float(&w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
            y
        };
        let (got, want) = (run(t), run(scalar()));
        let rel = 1e-5f64.max((cols / 8 + 16) as f64 * f64::from(f32::EPSILON));
        for tok in 0..n_tok {
            for r in 0..rows {
                let abs: f64 = w[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(acts.row(tok))
                    .map(|(a, b)| (f64::from(a.get()) * f64::from(*b)).abs())
                    .sum();
                let (g, e) = (got[tok * rows + r], want[tok * rows + r]);
                assert!(
                    f64::from(g - e).abs() <= rel * abs + 1e-40,
                    "{} gemm {:?}: {rows}x{cols}, {n_tok} tokens, row {r} token {tok}: {g} vs {e}",
                    t.name(),
                    std::any::type_name::<W>()
                );
            }
        }
    }
    // Decode: the tokens of a batched step each get the bits of that token
    // alone (and a single token the same bits as in a batch).
    for (rows, cols, n_tok) in [(7, 45, 3), (9, 100, 17), (5, 768, 40), (3, 33, 2)] {
        let w: Vec<W> = rng.acts(rows * cols).into_iter().map(W::round).collect();
        let x = rng.acts(n_tok * cols);
        let mut batch = vec![f32::NAN; n_tok * rows];
        let acts = FloatActs {
            x: &x,
            n_tok,
            cols,
            decode: true,
        };
        t.gemm_float(&w, &acts, &mut OutTile::whole(&mut batch, n_tok, rows));
        for tok in 0..n_tok {
            let one = FloatActs {
                x: &x[tok * cols..(tok + 1) * cols],
                n_tok: 1,
                cols,
                decode: false,
            };
            let mut y = vec![f32::NAN; rows];
            t.gemm_float(&w, &one, &mut OutTile::whole(&mut y, 1, rows));
            for r in 0..rows {
                assert_eq!(
                    batch[tok * rows + r].to_bits(),
                    y[r].to_bits(),
                    "{} decode {rows}x{cols}, {n_tok} tokens, token {tok} row {r}",
                    t.name()
                );
            }
        }
    }
}

/// A float weight element in the tests.
pub(crate) trait Float: Copy {
    /// From f32 (rounded).
    fn round(v: f32) -> Self;
    /// To f32 (exact).
    fn get(self) -> f32;
}

impl Float for f32 {
    fn round(v: f32) -> f32 {
        v
    }
    fn get(self) -> f32 {
        self
    }
}

impl Float for f16 {
    fn round(v: f32) -> f16 {
        f16::from_f32(v)
    }
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// Lengths for the vector kernels: every length up to 100 (all tails),
/// the block lengths, and a few odd large ones.
pub(crate) fn vector_lengths() -> impl Iterator<Item = usize> {
    (0..=100)
        .chain(block_lengths())
        .chain([1023, 1025, 4097, 50257])
}

/// `t`'s `add` equals the scalar one bit for bit.
pub(crate) fn check_add(t: VerifiedTable) {
    let mut rng = Rng::new(5);
    for n in vector_lengths() {
        let x = rng.acts(n);
        let y0 = rng.acts(n);
        let (mut g, mut e) = (y0.clone(), y0);
        t.add(&x, &mut g);
        scalar().add(&x, &mut e);
        assert_eq!(bits(&g), bits(&e), "{} add, {n} values", t.name());
    }
}

/// The bits of floats, for exact comparisons.
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `t`'s LayerNorm against the scalar one, on rows near and far from zero
/// mean, within `1e-5 + n·ε/2` relative to each output's terms (the scalar
/// mean and variance are sequential f32 sums of `n` terms).
pub(crate) fn check_layer_norm(t: VerifiedTable) {
    let mut rng = Rng::new(12);
    for n in vector_lengths().filter(|&n| n > 0) {
        for offset in [1.5, rng.f() * 1000.0] {
            let x: Vec<f32> = rng.acts(n).iter().map(|v| v + offset).collect();
            let w: Vec<f32> = (0..n).map(|_| 1.0 + rng.f()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f() * 0.1).collect();
            let (mut g, mut e) = (vec![0.0; n], vec![0.0; n]);
            t.layer_norm(&x, &w, &b, 1e-5, &mut g);
            scalar().layer_norm(&x, &w, &b, 1e-5, &mut e);
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let mean_abs = x.iter().map(|&v| f64::from(v).abs()).sum::<f64>() / n as f64;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..n {
                let scale = (f64::from(x[i]) - mean).abs() + mean_abs;
                let rel = 1e-5 + n as f64 * f64::from(f32::EPSILON) / 2.0;
                let tol =
                    rel * scale * inv * f64::from(w[i]).abs() + 1e-6 * f64::from(b[i]).abs() + 1e-7;
                assert!(
                    f64::from(g[i] - e[i]).abs() <= tol,
                    "{} layer_norm, {n} values, offset {offset}, i {i}: {} vs {}",
                    t.name(),
                    g[i],
                    e[i]
                );
            }
        }
    }
}

/// GELU in f64 from the f32 input: the truth every path approximates.
fn gelu_f64(u: f32) -> f64 {
    let u = f64::from(u);
    0.5 * u * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (u + 0.044715 * u * u * u)).tanh())
}

/// `t`'s GELU within `1e-6·|u|` of the truth and `2e-6·|u|` of the scalar
/// one (whose tanh form loses relative accuracy where `1 + tanh` cancels),
/// over a fine grid, random values of every magnitude, and the extremes;
/// and within 2e-6 relative where the result is not tiny.
pub(crate) fn check_gelu(t: VerifiedTable) {
    let mut rng = Rng::new(13);
    let mut x: Vec<f32> = (-20000..=20000).map(|i| i as f32 * 1e-3).collect();
    x.extend(rng.uniform(20000).iter().map(|v| v * 12.0));
    x.extend(rng.acts(4096));
    x.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(7),
        1e-30,
        -1e-30,
        1e-40,
        50.0,
        -50.0,
        1e4,
        -1e4,
        1e13,
        -1e13,
        1e30,
        -1e30,
        3e38,
        -3e38,
        f32::MAX,
        -f32::MAX,
        88.0,
        -88.0,
    ]);
    for n in [x.len(), 0, 1, 2, 3, 5, 7, 9] {
        let (mut g, mut e) = (x[..n].to_vec(), x[..n].to_vec());
        t.gelu(&mut g);
        scalar().gelu(&mut e);
        let mut worst = 0.0f64;
        for i in 0..n {
            let u = f64::from(x[i].abs()).max(1e-37);
            let truth = gelu_f64(x[i]);
            let err = (f64::from(g[i]) - truth).abs();
            assert!(
                err <= 1e-6 * u,
                "{} gelu({}) = {} vs {truth}",
                t.name(),
                x[i],
                g[i]
            );
            assert!(
                f64::from(g[i] - e[i]).abs() <= 2e-6 * u,
                "{} gelu({}) = {} vs scalar {}",
                t.name(),
                x[i],
                g[i],
                e[i]
            );
            if truth.abs() > 1e-3 {
                worst = worst.max(err / truth.abs());
            }
        }
        assert!(
            worst <= 2e-6,
            "{} gelu: worst relative error {worst}",
            t.name()
        );
    }
}

/// A vector softmax against the scalar one on random rows of every length
/// to 100 (every tail) and long ones, and on rows of masked (`-inf`)
/// entries beside a huge spread.
///
/// # Safety
/// `softmax` must be callable: the CPU has its target features.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) unsafe fn check_softmax(softmax: unsafe fn(&mut [f32]), seed: u64) {
    let mut rng = Rng::new(seed);
    for n in (1..=100).chain([1023, 1024, 4096]) {
        let x: Vec<f32> = rng.uniform(n).iter().map(|v| v * 30.0).collect();
        let (mut got, mut want) = (x.clone(), x);
        // SAFETY: the caller vouches for `softmax`'s target features.
        unsafe { softmax(&mut got) };
        super::scalar::softmax(&mut want);
        let s: f32 = got.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "sum {s}");
        for i in 0..n {
            assert!(
                // The scalar sum of `n` exponentials is sequential.
                (got[i] - want[i]).abs() <= 1e-5 * want[i] + 1e-9,
                "softmax {n} {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
    for n in [11, 16, 17, 40] {
        let mut x = vec![f32::NEG_INFINITY; n];
        x[3] = 5.0;
        x[9] = -200.0;
        // SAFETY: as above.
        unsafe { softmax(&mut x) };
        assert_eq!(x[3], 1.0, "{n}");
        assert!(
            x.iter().enumerate().all(|(i, &v)| i == 3 || v == 0.0),
            "{n}"
        );
    }
}

/// `t`'s attention over an f32 and an f16 cache against the scalar
/// composition (dot, softmax, axpy), for head sizes with and without vector
/// tails and spans of positions from 1 to 300: within 1e-5 (each output is
/// a convex combination of values in [-1, 1]).
pub(crate) fn check_attend(t: VerifiedTable) {
    let mut rng = Rng::new(11);
    for hd in [64usize, 1, 7, 8, 40, 80, 128] {
        for n in [1usize, 2, 5, 16, 17, 64, 300] {
            let stride = hd * 3;
            let q = rng.uniform(hd);
            let k: Vec<f32> = rng.uniform(n * stride).iter().map(|v| 3.0 * v).collect();
            let v = rng.uniform(n * stride);
            let (kh, vh): (Vec<f16>, Vec<f16>) = (
                k.iter().map(|&x| f16::from_f32(x)).collect(),
                v.iter().map(|&x| f16::from_f32(x)).collect(),
            );
            let scale = 1.0 / (hd as f32).sqrt();
            let run = |table: VerifiedTable, half: bool| {
                let mut sc = vec![f32::NAN; n + 3];
                let mut out = vec![f32::NAN; hd];
                if half {
                    table.attend_f16(&q, &kh, &vh, stride, n, scale, &mut sc, &mut out);
                } else {
                    table.attend_f32(&q, &k, &v, stride, n, scale, &mut sc, &mut out);
                }
                out
            };
            for half in [false, true] {
                let (got, want) = (run(t, half), run(scalar(), half));
                for j in 0..hd {
                    assert!(
                        (got[j] - want[j]).abs() <= 1e-5,
                        "{} attend (f16 cache: {half}) hd {hd} n {n} lane {j}: {} vs {}",
                        t.name(),
                        got[j],
                        want[j]
                    );
                }
            }
        }
    }
}

/// `t`'s many-query head kernel against the scalar composition, query by
/// query: head sizes with and without 64- and 16-lane tails, ragged query
/// groups, queries starting past position 0.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn check_attend_head(t: VerifiedTable) {
    let mut rng = Rng::new(12);
    for hd in [64usize, 16, 80, 128, 7, 40] {
        for (pos0, n) in [
            (0usize, 1usize),
            (0, 4),
            (0, 5),
            (3, 7),
            (17, 16),
            (0, 67),
            (200, 33),
        ] {
            let (q_stride, kv_stride) = (3 * hd + 5, 2 * hd + 1);
            let keys = pos0 + n;
            let q = rng.uniform(n * q_stride);
            let k: Vec<f32> = rng
                .uniform(keys * kv_stride)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            let v = rng.uniform(keys * kv_stride);
            let scale = 1.0 / (hd as f32).sqrt();
            let heads = HeadQueries {
                q: &q,
                q_stride,
                k: &k,
                v: &v,
                kv_stride,
                pos0,
                n,
                hd,
                scale,
            };
            let mut got = vec![f32::NAN; n * hd];
            t.attend_head_f32(&heads, &mut got);
            for i in 0..n {
                let mut want = vec![f32::NAN; hd];
                let mut sc = vec![0.0; keys];
                let qi = &q[i * q_stride..][..hd];
                scalar().attend_f32(
                    qi,
                    &k,
                    &v,
                    kv_stride,
                    pos0 + i + 1,
                    scale,
                    &mut sc,
                    &mut want,
                );
                for j in 0..hd {
                    let g = got[i * hd + j];
                    assert!(
                        (g - want[j]).abs() <= 1e-5,
                        "{} attend_head hd {hd} pos0 {pos0} n {n} query {i} lane {j}: {g} vs {}",
                        t.name(),
                        want[j]
                    );
                }
            }
        }
    }
}

/// Products through [`matmul_on`] (row tiles in parallel, quantization
/// included) with `t` against the scalar table, for every weight type, one
/// token and several.
pub(crate) fn check_matmul(t: VerifiedTable) {
    let mut rng = Rng::new(15);
    let (rows, cols, n_tok) = (131, 320, 5);
    let w8 = rng.blocks::<BlockQ8_0>(rows * cols / QK);
    let w4 = rng.blocks::<BlockQ4_0>(rows * cols / QK);
    let wf = rng.uniform(rows * cols);
    let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    let x = rng.uniform(n_tok * cols);
    let mut scratch = MatmulScratch::new(n_tok, cols);
    for data in [
        WeightData::Q8_0(&w8),
        WeightData::Q4_0(&w4),
        WeightData::F32(&wf),
        WeightData::F16(&wh),
    ] {
        let m = Matrix::new(data, rows, cols).unwrap();
        for nt in [1, n_tok] {
            let mut g = vec![f32::NAN; nt * rows];
            let mut e = vec![f32::NAN; nt * rows];
            matmul_on(Par::Pool, t, &m, &x, nt, &mut g, &mut scratch);
            matmul_on(Par::Pool, scalar(), &m, &x, nt, &mut e, &mut scratch);
            for (i, (a, b)) in g.iter().zip(&e).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{} matmul {:?}, {nt} tokens, output {i}: {a} vs {b}",
                    t.name(),
                    data.ty()
                );
            }
        }
    }
    check_decode_matmul(t);
}

/// Decode products through [`matmul_decode_on`] with `t`: each token's row
/// is bitwise the one [`matmul_on`] gives it alone, for every weight type,
/// ragged shapes and token counts across the kernels' register and stack
/// groups. Called by [`check_matmul`].
fn check_decode_matmul(t: VerifiedTable) {
    let counts = [1, 2, 3, 4, 5, 7, 8, 9, 11, 16, 17, 23];
    check_each_token_alone(t, "decode", true, &counts, matmul_decode_on);
}

/// Prefill products of Q8_0 and Q4_0 weights through [`matmul_on`] with `t`
/// of fewer tokens than the strips take ([`MIN_TOKENS_TRANSPOSED`](crate::quant::x86::strips::MIN_TOKENS_TRANSPOSED)):
/// each token's row is bitwise the one it gets alone, on ragged shapes and
/// token counts across the kernels' groups of four and their stack groups.
/// The x86 tables run these products through their decode walks, so a short
/// prompt chunk's logits do not depend on how it is cut.
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_few_token_prefill_alone(t: VerifiedTable) {
    // Below every table's strips (Q8_0's and Q4_0's start at 16).
    let max_tok = crate::quant::x86::strips::MIN_TOKENS_TRANSPOSED - 1;
    let counts = [2, 3, 4, 5, 7, 8, 9, 13, max_tok];
    check_each_token_alone(t, "prefill", false, &counts, matmul_on);
}

/// [`matmul_on`] or [`matmul_decode_on`].
type ProductFn =
    fn(Par<'_>, VerifiedTable, &Matrix<'_>, &[f32], usize, &mut [f32], &mut MatmulScratch);

/// A product through `t` and `product` of each count of `counts` tokens
/// gives every token's row bitwise as [`matmul_on`] gives it alone: Q8_0 and
/// Q4_0 weights (and F32 and F16 with `floats`), ragged shapes.
fn check_each_token_alone(
    t: VerifiedTable,
    what: &str,
    floats: bool,
    counts: &[usize],
    product: ProductFn,
) {
    let mut rng = Rng::new(11);
    let max_tok = counts.iter().copied().max().unwrap_or(1);
    for (rows, cols) in [(67, 96), (33, 160), (48, 768), (20, 3072), (5, 8192)] {
        let wf = rng.uniform(rows * cols);
        let mut w8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
        let mut w4 = vec![BlockQ4_0::ZERO; rows * cols / QK];
        quantize_row_q8_0(&wf, &mut w8);
        quantize_row_q4_0(&wf, &mut w4);
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let x: Vec<f32> = rng
            .uniform(max_tok * cols)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let mut scratch = MatmulScratch::new(max_tok, cols);
        let mut data = vec![WeightData::Q8_0(&w8), WeightData::Q4_0(&w4)];
        if floats {
            data.extend([WeightData::F32(&wf), WeightData::F16(&wh)]);
        }
        for data in data {
            let m = Matrix::new(data, rows, cols).unwrap();
            let mut alone = vec![f32::NAN; max_tok * rows];
            for (xt, yt) in x.chunks(cols).zip(alone.chunks_mut(rows)) {
                matmul_on(Par::Pool, t, &m, xt, 1, yt, &mut scratch);
            }
            for &n_tok in counts {
                let mut y = vec![f32::NAN; n_tok * rows];
                product(Par::Pool, t, &m, &x, n_tok, &mut y, &mut scratch);
                for (i, (a, b)) in y.iter().zip(&alone).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} {what} {data:?} {rows}x{cols}, {n_tok} tokens: token {} row {}",
                        t.name(),
                        i / rows,
                        i % rows
                    );
                }
            }
        }
    }
}

/// A weight type's scalar dot with Q8_0 activations against the f64 product
/// of the two dequantized rows, on fixed smooth inputs (256 values): the
/// per-type reference tests share it. `quantize` is the type's row quantizer.
pub(crate) fn check_dot_matches_dequantized<W: VecDot<Partner = BlockQ8_0> + Clone>(
    quantize: fn(&[f32], &mut [W]),
) {
    let n = 256;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
        .collect();
    let w: Vec<f32> = (0..n)
        .map(|i| ((i * 104729) % 97) as f32 / 25.0 - 1.9)
        .collect();
    let mut xq = vec![BlockQ8_0::ZERO; n / QK];
    let mut wq = vec![W::ZERO; n / W::ELEMS];
    quantize_acts_q8_0(&x, &mut xq);
    quantize(&w, &mut wq);
    let (mut xd, mut wd) = (vec![0.0; n], vec![0.0; n]);
    dequantize_row_q8_0(&xq, &mut xd);
    W::dequantize(&wq, &mut wd);
    let exact: f64 = xd.iter().zip(&wd).map(|(a, b)| f64::from(a * b)).sum();
    let d = W::dot(&wq, &xq);
    assert!((f64::from(d) - exact).abs() < 1e-3 * exact.abs().max(1.0));
}

/// With every scale 1, each output of `t`'s Q8_0 and Q4_0 products, prefill
/// and decode, is the exact sum of the blocks' integer dots (below 2²⁴, so
/// exact in f32): they must match bit for bit, extreme weights and
/// activations included (Q8_0 weights of -128, a valid byte ggml's quantizer
/// never writes, among them), for each `(rows, n_tok, nb)` of `shapes`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn check_exact_integer_dots(t: VerifiedTable, shapes: &[(usize, usize, usize)]) {
    let mut rng = Rng::new(0x5eed);
    let one = f16::from_f32(1.0);
    for &(rows, n_tok, nb) in shapes {
        let x = rng.acts(n_tok * nb * QK);
        let (mut a, _) = quantize_ref::<BlockQ8_0>(&x, n_tok);
        a[0].qs = [127; 32];
        let last = a.len() - 1;
        a[last].qs = [-127; 32];
        a.iter_mut().for_each(|b| b.d = one);
        // The sums of the blocks as changed (kernels that offset the weights
        // read them).
        let s: Vec<i16> = a
            .iter()
            .map(|b| b.qs.iter().map(|&v| i16::from(v)).sum())
            .collect();
        let mut w8: Vec<BlockQ8_0> = rng.blocks(rows * nb);
        let mut w4: Vec<BlockQ4_0> = rng.blocks(rows * nb);
        w8[0].qs = [-128; 32];
        w8[1].qs = [127; 32];
        w4[0].qs = [0; 16];
        w4[1].qs = [0xff; 16];
        w8.iter_mut().for_each(|b| b.d = one);
        w4.iter_mut().for_each(|b| b.d = one);
        let acts = QuantActs::new(&a, &s, n_tok, nb);
        // The prefill and the decode products alike.
        for decode in [false, true] {
            let (mut got8, mut got4) = (vec![f32::NAN; n_tok * rows], vec![f32::NAN; n_tok * rows]);
            if decode {
                t.gemv(&w8, &acts, &mut OutTile::whole(&mut got8, n_tok, rows));
                t.gemv(&w4, &acts, &mut OutTile::whole(&mut got4, n_tok, rows));
            } else {
                t.gemm(&w8, &acts, &mut OutTile::whole(&mut got8, n_tok, rows));
                t.gemm(&w4, &acts, &mut OutTile::whole(&mut got4, n_tok, rows));
            }
            for tok in 0..n_tok {
                for r in 0..rows {
                    let blocks = (0..nb).map(|b| (r * nb + b, tok * nb + b));
                    let want8: i32 = blocks
                        .clone()
                        .map(|(i, j)| int_dot_q8_0(&w8[i], &a[j]))
                        .sum();
                    let want4: i32 = blocks.map(|(i, j)| int_dot_q4_0(&w4[i], &a[j])).sum();
                    let k = tok * rows + r;
                    let what = if decode { "decode" } else { "prefill" };
                    assert_eq!(got8[k], want8 as f32, "q8 {what} {rows}x{nb} t{tok} r{r}");
                    assert_eq!(got4[k], want4 as f32, "q4 {what} {rows}x{nb} t{tok} r{r}");
                }
            }
        }
    }
}

/// Two tables whose prefill products of `W` sum in the same order (the
/// strips of AVX2 and AVX-512, the AMX tile unit) give the same bits on
/// random data, with partial strips and token groups.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn check_same_prefill_bits<W: Gemm + Gen>(x: VerifiedTable, y: VerifiedTable)
where
    W::Partner: TestActs,
{
    let mut rng = Rng::new(0xa3c);
    // Every count at least the K-quants' threshold: both tables in strips.
    for (rows, nb, n_tok) in [(33, 24, 67), (16, 3, 64), (70, 5, 72), (9, 96, 65)] {
        let w: Vec<W> = rng.blocks(rows * nb);
        let xs = rng.acts(n_tok * nb * W::ELEMS);
        let (a, sums) = quantize_ref::<W::Partner>(&xs, n_tok);
        let acts = QuantActs::new(&a, &sums, n_tok, nb);
        assert_same_gemm_bits(x, y, &w, &acts, rows, "random");
    }
}

/// `x` and `y` give the same bits on products of fewer tokens than the
/// strips take (the decode walks, and from six tokens the batch octets):
/// random data, ragged rows and token counts.
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_same_few_token_bits<W: Gemm + Gen>(x: VerifiedTable, y: VerifiedTable)
where
    W::Partner: TestActs,
{
    let mut rng = Rng::new(0x0c7);
    for (rows, nb, n_tok) in [(33, 24, 6), (16, 3, 8), (70, 5, 9), (9, 96, 15), (5, 7, 13)] {
        let w: Vec<W> = rng.blocks(rows * nb);
        let xs = rng.acts(n_tok * nb * W::ELEMS);
        let (a, sums) = quantize_ref::<W::Partner>(&xs, n_tok);
        let acts = QuantActs::new(&a, &sums, n_tok, nb);
        assert_same_gemm_bits(x, y, &w, &acts, rows, "few tokens");
    }
}

/// `t`'s prefill with `W`'s weights registered with the repack cache gives
/// the bits it gives without: on the call that makes the repack, on later
/// calls that reuse it with other activations, and after the first again;
/// dropping the registration evicts the repacks.
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_repack_cache<W: Gemm + Gen + crate::gguf::Pod>(t: VerifiedTable)
where
    W::Partner: TestActs,
{
    use crate::quant::x86::repacked;
    let mut rng = Rng::new(0x5e7);
    for (rows, nb, n_tok) in [(33, 24, 67), (16, 3, 64), (70, 5, 72)] {
        let w: Vec<W> = rng.blocks(rows * nb);
        let bits = |xs: &[f32]| {
            let (a, sums) = quantize_ref::<W::Partner>(xs, n_tok);
            let acts = QuantActs::new(&a, &sums, n_tok, nb);
            gemm_bits(t, &w, &acts, rows)
        };
        let (x1, x2) = (
            rng.acts(n_tok * nb * W::ELEMS),
            rng.acts(n_tok * nb * W::ELEMS),
        );
        let (b1, b2) = (bits(&x1), bits(&x2));
        let bytes = crate::gguf::as_bytes(&w);
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let reg = repacked::register(bytes);
        let what = format!("{} {:?} {rows}x{nb} × {n_tok}", t.name(), W::TYPE);
        assert!(bits(&x1) == b1, "{what}: the call that repacks");
        assert_eq!(
            repacked::kept_in(range.clone()) > 0,
            keeps_repack::<W>(t),
            "{what}: kept or not"
        );
        assert!(bits(&x2) == b2, "{what}: a call that reuses the repack");
        assert!(bits(&x1) == b1, "{what}: the first activations again");
        drop(reg);
        assert_eq!(repacked::kept_in(range), 0, "{what}: not evicted");
    }
}

/// Whether `t` keeps `W`'s repacks where the weights are registered, as the
/// model's `--repack` check reads it (`KernelPath::keeps_repack`); the tests
/// hold it to what the kernels do (`x86::transpose::Values::worth_keeping`).
#[cfg(target_arch = "x86_64")]
fn keeps_repack<W: Gemm>(t: VerifiedTable) -> bool {
    use crate::quant::KernelPath;
    let path = match t.name() {
        "amx" => KernelPath::Amx,
        "avx2" => KernelPath::Avx2,
        "avxvnni" => KernelPath::AvxVnni,
        _ => KernelPath::Avx512,
    };
    path.keeps_repack(W::TYPE)
}

/// With `W`'s weights registered with the repack cache, `t`'s prefill of
/// fewer tokens than [`MIN_TOKENS`](crate::quant::x86::strips::MIN_TOKENS)
/// but at least [`MIN_TOKENS_KEPT`](crate::quant::x86::strips::MIN_TOKENS_KEPT)
/// runs in strips: it keeps a repack, and each token gets the bits the strips
/// give it in a product of more tokens (a strip's token sums each in its
/// own lane, whatever tokens share the call).
#[cfg(target_arch = "x86_64")]
pub(crate) fn check_kept_repack_strips_from_fewer_tokens<W: Gemm + Gen + crate::gguf::Pod>(
    t: VerifiedTable,
) where
    W::Partner: TestActs,
{
    use crate::quant::x86::{repacked, strips};
    let mut rng = Rng::new(0x6b1);
    let n_all = strips::MIN_TOKENS + 3;
    for (rows, nb) in [(33, 24), (16, 3), (70, 5)] {
        let w: Vec<W> = rng.blocks(rows * nb);
        let xs = rng.acts(n_all * nb * W::ELEMS);
        let bits = |n: usize| {
            let (a, sums) = quantize_ref::<W::Partner>(&xs[..n * nb * W::ELEMS], n);
            let acts = QuantActs::new(&a, &sums, n, nb);
            gemm_bits(t, &w, &acts, rows)
        };
        let all = bits(n_all);
        let bytes = crate::gguf::as_bytes(&w);
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let reg = repacked::register(bytes);
        for n in [strips::MIN_TOKENS_KEPT, 21, strips::MIN_TOKENS - 1] {
            let what = format!("{} {:?} {rows}x{nb} × {n}", t.name(), W::TYPE);
            assert!(
                bits(n)[..] == all[..n * rows],
                "{what}: not the strips' bits"
            );
        }
        assert_eq!(
            repacked::kept_in(range.clone()) > 0,
            keeps_repack::<W>(t),
            "{} {:?} {rows}x{nb}: kept or not",
            t.name(),
            W::TYPE
        );
        drop(reg);
        assert_eq!(repacked::kept_in(range), 0, "{rows}x{nb}: not evicted");
    }
}

/// The bits of `t`'s prefill product of `w` (`rows` rows) and `acts`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn gemm_bits<W: Gemm>(
    t: VerifiedTable,
    w: &[W],
    acts: &QuantActs<'_, W::Partner>,
    rows: usize,
) -> Vec<u32> {
    let mut out = vec![f32::NAN; acts.n_tok * rows];
    t.gemm(w, acts, &mut OutTile::whole(&mut out, acts.n_tok, rows));
    out.iter().map(|v| v.to_bits()).collect()
}

/// `x` and `y` give the same bits for the prefill product of `w` (`rows`
/// rows) and `acts`; `what` names the data in the failure message.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn assert_same_gemm_bits<W: Gemm>(
    x: VerifiedTable,
    y: VerifiedTable,
    w: &[W],
    acts: &QuantActs<'_, W::Partner>,
    rows: usize,
    what: &str,
) {
    assert!(
        gemm_bits(x, w, acts, rows) == gemm_bits(y, w, acts, rows),
        "{} vs {}: {:?} {what} {rows}x{} × {}",
        x.name(),
        y.name(),
        W::TYPE,
        acts.nb,
        acts.n_tok
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::KernelPath;
    use crate::quant::dispatch::Kernels;

    /// Every table `GPTQ_REQUIRE_KERNELS` names exists and runs here, and
    /// each path chooses its most capable required table: a CI machine
    /// known to have a path, or an emulated CPU known to lack an
    /// extension, is checked to get exactly the kernels it should.
    #[test]
    fn required_kernels_run_and_are_chosen() {
        let required = required();
        let names = table_names();
        for r in &required {
            assert!(
                names.contains(&r.as_str()),
                "{REQUIRE}: no kernel table is named {r}"
            );
            assert!(table(r).is_some(), "{REQUIRE}: this CPU cannot run {r}");
        }
        for &path in KernelPath::ALL {
            let Ok(k) = Kernels::new(path) else { continue };
            // The path's tables, weakest first: the chosen one is the
            // strongest this CPU runs, so never weaker than a required one
            // (a requirement list may name less than the CPU has).
            let ours: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| Kernels::from_name(n).is_ok_and(|j| j.path() == path))
                .collect();
            let chosen = ours.iter().position(|n| *n == k.describe());
            let chosen =
                chosen.unwrap_or_else(|| panic!("{path}: {} is not its table", k.describe()));
            let strongest = ours
                .iter()
                .rposition(|n| table_by_name(n).flatten().is_some());
            assert_eq!(
                Some(chosen),
                strongest,
                "{path}: the chosen table is the strongest here"
            );
            if let Some(want) = ours.iter().rposition(|n| required.iter().any(|r| r == *n)) {
                assert!(
                    chosen >= want,
                    "{path}: chose {} below the required {}",
                    ours[chosen],
                    ours[want]
                );
            }
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(0);
        let v = rng.uniform(100_000);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mut seen = [false; 10];
        (0..1000).for_each(|_| seen[rng.below(10)] = true);
        assert!(seen.iter().all(|&s| s));
    }
}
