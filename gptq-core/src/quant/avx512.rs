//! The x86-64 AVX-512 VNNI kernel path for the quantized products
//! (`avx512f,avx512bw,avx512vl,avx512vnni` on top of AVX2 + FMA + F16C); every
//! other table entry is the AVX2 function.
//!
//! Each 512-bit register holds two 32-element blocks. The weights are offset to
//! unsigned bytes (Q8_0: `w + 128`, Q4_0: the stored nibble `q = w + 8`), so one
//! `vpdpbusd` per block pair sums `u·a` exactly into i32 lanes, starting from the
//! correction `-offset · Σa` taken from the activations' block sums. Each lane
//! is then scaled by its block's `d_a · d_w`. The activation side (joined
//! blocks, corrections, scales) is prepared once per kernel call and shared by
//! every row. A register tile of `4 rows × 4 tokens` lets each weight block
//! pair serve four tokens in prefill; decode shares each activation load
//! between four rows.
//!
//! The `avx512` kernel table points at these functions; the `avx512+vbmi`
//! table replaces the products' decode with [`vbmi`]'s. Both are reached only
//! through their tables (see `quant::table`).

use std::arch::x86_64::*;
use std::cell::Cell;

use half::f16;

use super::avx2::load_q8;
use super::panels::{MIN_FLOAT_TOKENS, float_panels};
use super::scratch::with_prepared;
use super::table::HeadQueries;
use super::tile::{FloatActs, OutTile, QuantActs};
use super::types::iq4_nl::KVALUES;
use super::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::x86::driver::{drive, prefetch_weights, prefill_entry};

/// Weight rows per register tile.
const TR: usize = 4;
/// Tokens per register tile (prefill).
const TT: usize = 4;

/// Two 256-bit halves as one register (`lo` in lanes 0..8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Two Q8_0 weight blocks as unsigned bytes `w + 128`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn w_q8(b0: &BlockQ8_0, b1: &BlockQ8_0) -> __m512i {
    _mm512_xor_si512(join(load_q8(b0), load_q8(b1)), _mm512_set1_epi8(-128))
}

/// Two Q4_0 weight blocks as unsigned bytes `q` (0..=15) in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn w_q4(b0: &BlockQ4_0, b1: &BlockQ4_0) -> __m512i {
    nibble_pair(&b0.qs, &b1.qs)
}

/// Two blocks' 16 packed bytes as 64 nibbles in element order (bytes 0..32
/// the first block's, 32..64 the second's).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibble_pair(q0: &[u8; 16], q1: &[u8; 16]) -> __m512i {
    // SAFETY: each array is 16 readable bytes; the loads are unaligned.
    let (x0, x1) = unsafe {
        (
            _mm_loadu_si128(q0.as_ptr().cast()),
            _mm_loadu_si128(q1.as_ptr().cast()),
        )
    };
    // [x0, x0, x1, x1]: the second copy of each shifted down to its high nibbles.
    let z = join(
        _mm256_broadcastsi128_si256(x0),
        _mm256_broadcastsi128_si256(x1),
    );
    let shifts = _mm512_setr_epi32(
        0, 0, 0, 0, 0x4_0004, 0x4_0004, 0x4_0004, 0x4_0004, 0, 0, 0, 0, 0x4_0004, 0x4_0004,
        0x4_0004, 0x4_0004,
    );
    _mm512_and_si512(_mm512_srlv_epi16(z, shifts), _mm512_set1_epi8(0x0f))
}

/// `u` plus 16 in the bytes whose fifth bit is set: element `j` of a 5-bit
/// block has its fifth bit at bit `j` of `qh` (ggml's Q5_0 and Q5_1).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn add_fifth_bits(u: __m512i, qh0: [u8; 4], qh1: [u8; 4]) -> __m512i {
    let k = u64::from(u32::from_le_bytes(qh0)) | (u64::from(u32::from_le_bytes(qh1)) << 32);
    _mm512_mask_add_epi8(u, k, u, _mm512_set1_epi8(16))
}

/// Two Q5_0 weight blocks as stored, `q = w + 16` (0..=31).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn w_q5_0(b0: &BlockQ5_0, b1: &BlockQ5_0) -> __m512i {
    add_fifth_bits(nibble_pair(&b0.qs, &b1.qs), b0.qh, b1.qh)
}

/// Two Q4_1 weight blocks' values `u` (0..=15; the element is `d·u + m`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn w_q4_1(b0: &BlockQ4_1, b1: &BlockQ4_1) -> __m512i {
    nibble_pair(&b0.qs, &b1.qs)
}

/// Two Q5_1 weight blocks' values `u` (0..=31; the element is `d·u + m`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn w_q5_1(b0: &BlockQ5_1, b1: &BlockQ5_1) -> __m512i {
    add_fifth_bits(nibble_pair(&b0.qs, &b1.qs), b0.qh, b1.qh)
}

/// IQ4_NL's table values offset to unsigned bytes, `v + 128`.
const IQ4_NL_U: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// Two IQ4_NL weight blocks as unsigned bytes `v + 128` (the table values
/// -127..=113 become 1..=241): one in-lane lookup of the nibbles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn w_iq4_nl(b0: &BlockIq4Nl, b1: &BlockIq4Nl) -> __m512i {
    // SAFETY: 16 readable bytes; the load is unaligned.
    let t = unsafe { _mm_loadu_si128(IQ4_NL_U.as_ptr().cast()) };
    _mm512_shuffle_epi8(_mm512_broadcast_i32x4(t), nibble_pair(&b0.qs, &b1.qs))
}

/// The scales of two blocks, each broadcast over its block's eight lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scales(d0: f16, d1: f16) -> __m512 {
    let bits = i32::from(d0.to_bits()) | (i32::from(d1.to_bits()) << 16);
    let p = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(p))
}

/// The starting lanes of a block pair's dot: `c0` in lane 0 (first block),
/// `c1` in lane 8 (second block), zero elsewhere.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn corr(c0: i32, c1: i32) -> __m512i {
    _mm512_inserti32x4::<2>(
        _mm512_zextsi128_si512(_mm_cvtsi32_si128(c0)),
        _mm_cvtsi32_si128(c1),
    )
}

/// The integer dots of a block pair in sixteen i32 lanes: lanes 0..8 sum to the
/// first block's `Σ w·a`, lanes 8..16 to the second's, given unsigned weights
/// `u = w + off`, the activations `a`, and `c = corr(-off·Σa₀, -off·Σa₁)`.
/// Exact for every i8 activation and weight (no intermediate saturates).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn dot_pair(c: __m512i, u: __m512i, a: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(c, u, a)
}

/// One token's block pair, prepared once per kernel call and then shared by
/// every weight row: the joined activations, the starting lanes (the offset
/// correction; for the types with a minimum, [`Start::Mins`]) and the
/// activation scales, each a whole 64-byte register.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PreparedPair {
    a: __m512i,
    c: __m512i,
    d: __m512,
}

/// The activations of a kernel call as block pairs, token-major.
struct Prepared<'p> {
    pairs: &'p [PreparedPair],
    /// Block pairs per token (`nb` rounded up to even, halved).
    np: usize,
    nb: usize,
    n_tok: usize,
}

/// Prepared pairs kept on the stack: a decode step's products (up to 8192
/// columns) need no other storage.
const STACK_PAIRS: usize = 128;

thread_local! {
    /// Each thread's buffer of prepared pairs for products too large for the
    /// stack (prefill), taken by a kernel call and put back after it.
    static PAIRS: Cell<Vec<PreparedPair>> = const { Cell::new(Vec::new()) };
}

/// What a prepared pair's `c` holds, by weight type.
#[derive(Clone, Copy)]
enum Start {
    /// Weights stored offset to unsigned bytes `u = w + off`: `c` is the
    /// dot's starting lanes `corr(-off·Σa₀, -off·Σa₁)`.
    Offset(i32),
    /// Weights `d·u + m` (Q4_1, Q5_1): `c` is, as float bits, `d_a·Σa` of
    /// each block in its first lane (0 and 8) and zeros elsewhere, the factor
    /// of the block's `m` (the dot itself starts from zero).
    Mins,
}

/// Token `t`'s block pair `p` for weights of kind `start`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair(a: &QuantActs<'_>, start: Start, t: usize, p: usize) -> PreparedPair {
    let nb = a.nb;
    let (ar, sr) = (&a.row(t)[..nb], &a.row_sums(t)[..nb]);
    let b = 2 * p;
    // A last odd block pairs with zero activations.
    let (a0, s0) = (&ar[b], i32::from(sr[b]));
    let (v1, s1, d1) = if b + 1 < nb {
        let a1 = &ar[b + 1];
        (load_q8(a1), i32::from(sr[b + 1]), a1.d)
    } else {
        (_mm256_setzero_si256(), 0, f16::ZERO)
    };
    let c = match start {
        Start::Offset(off) => corr(-off * s0, -off * s1),
        Start::Mins => {
            let m = |d: f16, s: i32| (d.to_f32() * s as f32).to_bits() as i32;
            corr(m(a0.d, s0), m(d1, s1))
        }
    };
    PreparedPair {
        a: join(load_q8(a0), v1),
        c,
        d: scales(a0.d, d1),
    }
}

/// Runs `f` on every token's block pairs for weights of kind `start`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn with_pairs(a: &QuantActs<'_>, start: Start, f: impl FnOnce(&Prepared<'_>)) {
    let (nb, n_tok) = (a.nb, a.n_tok);
    let np = nb.div_ceil(2);
    with_prepared::<_, _, STACK_PAIRS>(
        n_tok * np,
        &PAIRS,
        |i| pair(a, start, i / np, i % np),
        |pairs| {
            f(&Prepared {
                pairs,
                np,
                nb,
                n_tok,
            })
        },
    )
}

/// Generates the tile function of one weight type: `$wload` makes a block pair
/// unsigned. The `min` form is for the types with a minimum (`d·u + m`): the
/// dot starts from zero and each (row, token) pair adds `m·d_a·Σa` with one
/// more FMA ([`Start::Mins`]).
macro_rules! vnni_tile {
    ($name:ident, $blk:ty, $wload:ident, min) => {
        vnni_tile!(@gen $name, $blk, $wload, true, |w0, w1| Some(scales(w0.m, w1.m)));
    };
    ($name:ident, $blk:ty, $wload:ident) => {
        vnni_tile!(@gen $name, $blk, $wload, false, |_w0, _w1| None);
    };
    (@gen $name:ident, $blk:ty, $wload:ident, $min:literal,
        |$m0:ident, $m1:ident| $wmin:expr) => {
        /// `R` weight rows (from tile row `r`) times `T` tokens (from `t`).
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        fn $name<const R: usize, const T: usize>(
            w: &[$blk],
            a: &Prepared<'_>,
            r: usize,
            t: usize,
        ) -> [[f32; T]; R] {
            let (nb, np) = (a.nb, a.np);
            let mut wr: [&[$blk]; R] = [&[]; R];
            for (i, s) in wr.iter_mut().enumerate() {
                *s = &w[(r + i) * nb..(r + i + 1) * nb];
            }
            let mut ar: [&[PreparedPair]; T] = [&[]; T];
            for (j, s) in ar.iter_mut().enumerate() {
                *s = &a.pairs[(t + j) * np..(t + j + 1) * np];
            }
            let row_bytes = nb * std::mem::size_of::<$blk>();
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            for p in 0..np {
                let b = 2 * p;
                // The last odd block's partner is itself; its activations are zero.
                let b1 = if b + 1 < nb { b + 1 } else { b };
                for i in 0..R {
                    let (w0, w1) = (&wr[i][b], &wr[i][b1]);
                    // One hint per pair: the two blocks share a line or two.
                    prefetch_weights(w0, R, T, row_bytes);
                    let u = $wload(w0, w1);
                    let wd = scales(w0.d, w1.d);
                    for j in 0..T {
                        let pp = &ar[j][p];
                        let start = if $min { _mm512_setzero_si512() } else { pp.c };
                        let q = _mm512_cvtepi32_ps(dot_pair(start, u, pp.a));
                        acc[i][j] = _mm512_fmadd_ps(_mm512_mul_ps(q, pp.d), wd, acc[i][j]);
                    }
                    #[allow(unused_variables)]
                    let ($m0, $m1) = (w0, w1);
                    let wm: Option<__m512> = $wmin;
                    if let Some(wm) = wm {
                        for j in 0..T {
                            let c = _mm512_castsi512_ps(ar[j][p].c);
                            acc[i][j] = _mm512_fmadd_ps(c, wm, acc[i][j]);
                        }
                    }
                }
            }
            let mut res = [[0.0f32; T]; R];
            for i in 0..R {
                for j in 0..T {
                    res[i][j] = _mm512_reduce_add_ps(acc[i][j]);
                }
            }
            res
        }
    };
}

vnni_tile!(tile_q8, BlockQ8_0, w_q8);
vnni_tile!(tile_q4, BlockQ4_0, w_q4);
vnni_tile!(tile_q4_1, BlockQ4_1, w_q4_1, min);
vnni_tile!(tile_q5_0, BlockQ5_0, w_q5_0);
vnni_tile!(tile_q5_1, BlockQ5_1, w_q5_1, min);
vnni_tile!(tile_iq4_nl, BlockIq4Nl, w_iq4_nl);

prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    strip::gemm_q8_0,
    gemm_q8_0
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    strip::gemm_q4_0,
    gemm_q4_0
);

/// Q8_0 weight rows times quantized activations: register tiles of VNNI
/// block-pair dots, decode included (one row by one token at a time); every
/// token's sums are the ones it gets alone (the table's decode product).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q8_0(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(w.len() >= out.rows() * a.nb, "gemm_q8_0: weights too short");
    with_pairs(a, Start::Offset(128), |prep| {
        drive!(tile_q8, w, prep, out, TR, TT)
    });
}

/// Q4_0 weight rows times quantized activations, as [`gemm_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q4_0(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(w.len() >= out.rows() * a.nb, "gemm_q4_0: weights too short");
    with_pairs(a, Start::Offset(8), |prep| {
        drive!(tile_q4, w, prep, out, TR, TT)
    });
}

macro_rules! entry_32 {
    ($name:ident, $blk:ty, $tile:ident, $start:expr) => {
        #[doc = concat!(
                            "AVX-512 VNNI product of ", stringify!($blk),
                            " weights and Q8_0 activations, as [`gemm_q8_0`]: decode included."
                        )]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
            assert!(w.len() >= out.rows() * a.nb, "weights too short");
            with_pairs(a, $start, |prep| drive!($tile, w, prep, out, TR, TT));
        }
    };
}

entry_32!(gemm_q4_1, BlockQ4_1, tile_q4_1, Start::Mins);
entry_32!(gemm_q5_0, BlockQ5_0, tile_q5_0, Start::Offset(16));
entry_32!(gemm_q5_1, BlockQ5_1, tile_q5_1, Start::Mins);
entry_32!(gemm_iq4_nl, BlockIq4Nl, tile_iq4_nl, Start::Offset(128));

prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_few,
    prefill_q4_1,
    BlockQ4_1,
    BlockQ8_0,
    strip::gemm_q4_1,
    gemm_q4_1
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_few,
    prefill_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    strip::gemm_q5_0,
    gemm_q5_0
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_few,
    prefill_q5_1,
    BlockQ5_1,
    BlockQ8_0,
    strip::gemm_q5_1,
    gemm_q5_1
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_few,
    prefill_iq4_nl,
    BlockIq4Nl,
    BlockQ8_0,
    strip::gemm_iq4_nl,
    gemm_iq4_nl
);

/// Queries attended together by [`attend_head_f32`]: each transposed key row
/// and each value row loaded serves this many. Eight (four before): each
/// load serves twice the products, the group's accumulators still fit the
/// 32 registers with [`KB`] and two value registers per pass.
const QG: usize = 8;

/// Key blocks (of sixteen positions) per pass of [`scores`]: `QG · KB`
/// independent FMA chains (two FMA ports of four cycles' latency need eight),
/// three blocks so that each broadcast query element serves three products.
const KB: usize = 3;

/// The group's scaled scores of key blocks `b..b + K` (sixteen positions
/// each) into `sc` (row `g` at `g·ldk`): each score sums its `d` terms in
/// order in one lane. `qt` holds the group's queries transposed (`qt[d·QG +
/// g]`), so that each `d` reads its [`QG`] query elements from one place.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn scores<const K: usize>(
    kt: &[f32],
    ldk: usize,
    hd: usize,
    qt: &[f32],
    b: usize,
    scale: __m512,
    sc: &mut [f32],
) {
    assert!(
        hd >= 1 && qt.len() >= hd * QG && kt.len() >= (hd - 1) * ldk + 16 * (b + K),
        "scores: sizes"
    );
    let mut acc = [[_mm512_setzero_ps(); K]; QG];
    let kp = kt.as_ptr();
    for (d, q) in qt.chunks_exact(QG).take(hd).enumerate() {
        // SAFETY: `d < hd` and `j < K`, so the sixteen floats at
        // `d·ldk + 16·(b + j)` end by `(hd - 1)·ldk + 16·(b + K)`, inside
        // `kt` (asserted above); the loads are unaligned. (Checked slices
        // here cost a compare and branch per load, a third of the loop.)
        let kv: [__m512; K] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(kp.add(d * ldk + 16 * (b + j))) });
        for (a, &qv) in acc.iter_mut().zip(q) {
            let qd = _mm512_set1_ps(qv);
            for (x, k) in a.iter_mut().zip(&kv) {
                *x = _mm512_fmadd_ps(qd, *k, *x);
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        for (j, x) in a.iter().enumerate() {
            store16(&mut sc[g * ldk + 16 * (b + j)..], _mm512_mul_ps(*x, scale));
        }
    }
}

thread_local! {
    /// Each thread's transposed keys, group scores and transposed group
    /// queries for [`attend_head_f32`], grown once to the longest context.
    static ATTEND: Cell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// All of one head's queries at once. The head's keys are first transposed
/// (`kt[d][p]`), so that the scores of sixteen positions are one register
/// summed over `d` with a broadcast query element: no horizontal sums. Groups
/// of [`QG`] queries share each key and value load. A head dimension that is
/// not a multiple of 16 takes the AVX2 single-query kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::quant) fn attend_head_f32(h: &HeadQueries<'_>, out: &mut [f32]) {
    let (hd, n, pos0) = (h.hd, h.n, h.pos0);
    assert!(
        n >= 1 && hd >= 1 && out.len() >= n * hd,
        "attend_head: sizes"
    );
    assert!(
        h.q.len() >= (n - 1) * h.q_stride + hd,
        "attend_head: queries too short"
    );
    let n_keys = pos0 + n;
    let last = (n_keys - 1) * h.kv_stride + hd;
    assert!(
        h.k.len() >= last && h.v.len() >= last,
        "attend_head: cache too short"
    );
    let ldk = n_keys.next_multiple_of(16);
    let (mut kt, mut sc, mut qt) = ATTEND.take();
    sc.clear();
    sc.resize(QG * ldk, 0.0);
    if !hd.is_multiple_of(16) {
        for (i, o) in out[..n * hd].chunks_exact_mut(hd).enumerate() {
            let q = &h.q[i * h.q_stride..][..hd];
            let len = pos0 + i + 1;
            super::avx2::attend_f32(q, h.k, h.v, h.kv_stride, len, h.scale, &mut sc, o);
        }
        ATTEND.set((kt, sc, qt));
        return;
    }
    super::avx2::attend::transpose_keys(h, n_keys, &mut kt, ldk);
    let scale = _mm512_set1_ps(h.scale);
    for g0 in (0..n).step_by(QG) {
        let gn = QG.min(n - g0);
        // Padding queries of a short last group repeat its last query.
        super::avx2::attend::transpose_queries(h, g0, gn, QG, &mut qt);
        let keys = pos0 + g0 + gn;
        let blocks = keys.div_ceil(16);
        let mut b = 0;
        while b + KB <= blocks {
            scores::<KB>(&kt, ldk, hd, &qt, b, scale, &mut sc);
            b += KB;
        }
        while b < blocks {
            scores::<1>(&kt, ldk, hd, &qt, b, scale, &mut sc);
            b += 1;
        }
        for g in 0..QG {
            let row = &mut sc[g * ldk..(g + 1) * ldk];
            if g < gn {
                let len = pos0 + g0 + g + 1;
                softmax(&mut row[..len]);
                row[len..keys].fill(0.0);
            } else {
                row[..keys].fill(0.0);
            }
        }
        let mut c = 0;
        while c + 32 <= hd {
            weighted_values::<2>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 32;
        }
        while c < hd {
            weighted_values::<1>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 16;
        }
    }
    ATTEND.set((kt, sc, qt));
}

/// Columns `c..c + 16·W` of the group's outputs: `Σ_p w[g][p] · v[p]` over the
/// first `keys` positions, with `w[g]` the group's score row `g`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn weighted_values<const W: usize>(
    h: &HeadQueries<'_>,
    sc: &[f32],
    ldk: usize,
    keys: usize,
    c: usize,
    out: &mut [f32],
    gn: usize,
) {
    assert!(
        keys >= 1
            && sc.len() >= (QG - 1) * ldk + keys
            && h.v.len() >= (keys - 1) * h.kv_stride + c + 16 * W,
        "weighted_values: sizes"
    );
    let mut acc = [[_mm512_setzero_ps(); W]; QG];
    let rows: [*const f32; QG] = std::array::from_fn(|g| sc[g * ldk..].as_ptr());
    let vp = h.v[c..].as_ptr();
    for p in 0..keys {
        // SAFETY: `p < keys`, so value row `p`'s floats `c..c + 16·W` end by
        // `(keys - 1)·kv_stride + c + 16·W` and score `p` of row `g` lies
        // before `(QG - 1)·ldk + keys`, both asserted above; the loads are
        // unaligned. (As in [`scores`], checked indexing cost a compare and
        // branch per load.)
        let vv: [__m512; W] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(vp.add(p * h.kv_stride + 16 * j)) });
        for (a, &row) in acc.iter_mut().zip(&rows) {
            // SAFETY: row `g` starts at `g·ldk` of `sc`, so its score `p`
            // (`p < keys`) lies before `(QG - 1)·ldk + keys`, asserted above.
            let w = _mm512_set1_ps(unsafe { *row.add(p) });
            for (x, v) in a.iter_mut().zip(&vv) {
                *x = _mm512_fmadd_ps(w, *v, *x);
            }
        }
    }
    for (g, a) in acc.iter().enumerate().take(gn) {
        for (j, x) in a.iter().enumerate() {
            store16(&mut out[g * h.hd + c + 16 * j..], *x);
        }
    }
}

/// `e^x` in sixteen lanes: [`avx2::exp8`](super::avx2::exp8)'s steps at
/// twice the width (each lane's result is the same bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(x, _mm512_set1_ps(88.376_26));
    let x = _mm512_max_ps(x, _mm512_set1_ps(-88.376_26));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_2e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_2e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.166_666_65));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let r2 = _mm512_mul_ps(r, r);
    let e = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    let ni = _mm512_cvtps_epi32(n);
    let pow = _mm512_slli_epi32::<23>(_mm512_add_epi32(ni, _mm512_set1_epi32(127)));
    _mm512_mul_ps(e, _mm512_castsi512_ps(pow))
}

/// GPT-2's GELU in place, sixteen lanes at a time (the last `len mod 16`
/// through masks): [`avx2::gelu`](super::avx2::gelu)'s steps at twice the
/// width, so each value gets the same bits on either path. The MLP's GELU
/// over a 512-token prompt was 4 % of an AVX-512 prefill at eight lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::quant) fn gelu(x: &mut [f32]) {
    let full = x.len() - x.len() % 16;
    let (body, tail) = x.split_at_mut(full);
    for c in body.chunks_exact_mut(16) {
        store16(c, gelu16(load16(c)));
    }
    if !tail.is_empty() {
        store_part(tail, gelu16(load_part(tail, 0.0)));
    }
}

/// `u · sigmoid(2z)` with `z = √(2/π)·(u + 0.044715·u³)` in sixteen lanes:
/// [`avx2::gelu`](super::avx2::gelu)'s eight-lane steps, in the same order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn gelu16(u: __m512) -> __m512 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u3 = _mm512_mul_ps(_mm512_mul_ps(u, u), u);
    let inner = _mm512_fmadd_ps(_mm512_set1_ps(0.044_715), u3, u);
    let m2z = _mm512_mul_ps(inner, _mm512_set1_ps(-2.0 * SQRT_2_OVER_PI));
    let den = _mm512_add_ps(_mm512_set1_ps(1.0), exp16(m2z));
    _mm512_div_ps(u, den)
}

/// The first `n` floats of `x` (`n` < 16) in the low lanes, `fill` above.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn load_part(x: &[f32], fill: f32) -> __m512 {
    assert!(x.len() < 16);
    let k: __mmask16 = (1u16 << x.len()) - 1;
    // SAFETY: the masked load reads only the `x.len()` lanes of `k`, all
    // inside `x`; the others are not accessed.
    unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), k, x.as_ptr()) }
}

/// `v`'s low `x.len()` lanes (`x.len()` < 16) into `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn store_part(x: &mut [f32], v: __m512) {
    assert!(x.len() < 16);
    let k: __mmask16 = (1u16 << x.len()) - 1;
    // SAFETY: the masked store writes only the `x.len()` lanes of `k`, all
    // inside `x`.
    unsafe { _mm512_mask_storeu_ps(x.as_mut_ptr(), k, v) }
}

/// The stable softmax of `x` in place, sixteen lanes at a time (the last
/// `len mod 16` through masks): the many-query kernel's score rows, where
/// the eight-lane [`avx2::softmax`](super::avx2::softmax) was a fifth of the
/// head's time at 512 tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn softmax(x: &mut [f32]) {
    let full = x.len() - x.len() % 16;
    let (body, tail) = x.split_at_mut(full);
    let mut mv = load_part(tail, f32::NEG_INFINITY);
    for c in body.chunks_exact(16) {
        mv = _mm512_max_ps(mv, load16(c));
    }
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    let mut acc = _mm512_setzero_ps();
    for c in body.chunks_exact_mut(16) {
        let e = exp16(_mm512_sub_ps(load16(c), m));
        store16(c, e);
        acc = _mm512_add_ps(acc, e);
    }
    if !tail.is_empty() {
        // Lanes past the end hold -inf: their exp is 0, not added.
        let e = exp16(_mm512_sub_ps(load_part(tail, f32::NEG_INFINITY), m));
        store_part(tail, e);
        acc = _mm512_add_ps(acc, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(acc));
    for c in body.chunks_exact_mut(16) {
        store16(c, _mm512_mul_ps(load16(c), inv));
    }
    if !tail.is_empty() {
        store_part(tail, _mm512_mul_ps(load_part(tail, 0.0), inv));
    }
}

/// Sixteen floats from the start of `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn load16(x: &[f32]) -> __m512 {
    let x = &x[..16];
    // SAFETY: `x` is 16 readable floats; the load is unaligned.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// Sixteen floats to the start of `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn store16(x: &mut [f32], v: __m512) {
    let x = &mut x[..16];
    // SAFETY: `x` is 16 writable floats; the store is unaligned.
    unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
}

pub(in crate::quant) mod blocks;
pub(in crate::quant) mod strip;
// ---------------------------------------------------------------------------
// Float prefill in panels (`quant::panels`).

/// F32 weight rows times float activations: a prompt of at least
/// [`MIN_FLOAT_TOKENS`] tokens in 512-bit panels, else (fewer tokens, a
/// decode step) the AVX2 products.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    if x.n_tok >= MIN_FLOAT_TOKENS && !x.decode {
        panels_walk(w, x, out);
    } else {
        super::avx2::gemm_f32(w, x, out);
    }
}

/// F16 weight rows times float activations: as [`gemm_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    if x.n_tok >= MIN_FLOAT_TOKENS && !x.decode {
        panels_walk(w, x, out);
    } else {
        super::avx2::gemm_f16(w, x, out);
    }
}

// Panels of 16 tokens, tiles of 8 rows × 2 panels: sixteen accumulators,
// two panel loads and eight broadcasts per sixteen FMAs.
float_panels!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    __m512,
    16,
    8,
    2,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps,
    8,
    super::avx2::transpose8
);

#[cfg(test)]
mod tests;
pub(in crate::quant) mod vbmi;

/// `Σ exp(v − max)` in f64: the portable code
/// ([`crate::perplexity::exp_sum`]) compiled for this path's vectors (no
/// FMA contraction: the same bits as every other path).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::quant) fn exp_sum(logits: &[f32], max: f32) -> f64 {
    crate::perplexity::exp_sum::exp_sum_body(logits, max)
}

/// The largest logit, as [`exp_sum`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::quant) fn max_logit(logits: &[f32]) -> f32 {
    crate::perplexity::exp_sum::max_logit_body(logits)
}
