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
use super::scratch::with_prepared;
use super::table::HeadQueries;
use super::tile::{OutTile, QuantActs};
use super::types::{BlockQ4_0, BlockQ8_0};
use super::x86::driver::{drive, prefetch_weights};

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
    // SAFETY: each `qs` is 16 readable bytes; the loads are unaligned.
    let (x0, x1) = unsafe {
        (
            _mm_loadu_si128(b0.qs.as_ptr().cast()),
            _mm_loadu_si128(b1.qs.as_ptr().cast()),
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
/// correction) and the activation scales, each a whole 64-byte register.
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

/// Token `t`'s block pair `p` for weights offset by `off`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair(a: &QuantActs<'_>, off: i32, t: usize, p: usize) -> PreparedPair {
    let nb = a.nb;
    let (ar, sr) = (&a.row(t)[..nb], &a.row_sums(t)[..nb]);
    let b = 2 * p;
    let (a0, s0) = (&ar[b], i32::from(sr[b]));
    // A last odd block pairs with zero activations.
    if b + 1 < nb {
        let (a1, s1) = (&ar[b + 1], i32::from(sr[b + 1]));
        PreparedPair {
            a: join(load_q8(a0), load_q8(a1)),
            c: corr(-off * s0, -off * s1),
            d: scales(a0.d, a1.d),
        }
    } else {
        PreparedPair {
            a: join(load_q8(a0), _mm256_setzero_si256()),
            c: corr(-off * s0, 0),
            d: scales(a0.d, f16::ZERO),
        }
    }
}

/// Runs `f` on every token's block pairs for weights offset by `off`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn with_pairs(a: &QuantActs<'_>, off: i32, f: impl FnOnce(&Prepared<'_>)) {
    let (nb, n_tok) = (a.nb, a.n_tok);
    let np = nb.div_ceil(2);
    with_prepared::<_, _, STACK_PAIRS>(
        n_tok * np,
        &PAIRS,
        |i| pair(a, off, i / np, i % np),
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
/// unsigned.
macro_rules! vnni_tile {
    ($name:ident, $blk:ty, $wload:ident) => {
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
                        let q = _mm512_cvtepi32_ps(dot_pair(pp.c, u, pp.a));
                        acc[i][j] = _mm512_fmadd_ps(_mm512_mul_ps(q, pp.d), wd, acc[i][j]);
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

/// Q8_0 weight rows times quantized activations: register tiles of VNNI
/// block-pair dots, decode included (one row by one token at a time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q8_0(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(w.len() >= out.rows() * a.nb, "gemm_q8_0: weights too short");
    with_pairs(a, 128, |prep| drive!(tile_q8, w, prep, out, TR, TT));
}

/// Q4_0 weight rows times quantized activations, as [`gemm_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q4_0(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(w.len() >= out.rows() * a.nb, "gemm_q4_0: weights too short");
    with_pairs(a, 8, |prep| drive!(tile_q4, w, prep, out, TR, TT));
}

/// Queries attended together by [`attend_head_f32`]: each transposed key row
/// and each value row loaded serves this many.
const QG: usize = 4;

thread_local! {
    /// Each thread's transposed keys and group scores for [`attend_head_f32`],
    /// grown once to the longest context.
    static ATTEND: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
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
    let (mut kt, mut sc) = ATTEND.take();
    sc.clear();
    sc.resize(QG * ldk, 0.0);
    if !hd.is_multiple_of(16) {
        for (i, o) in out[..n * hd].chunks_exact_mut(hd).enumerate() {
            let q = &h.q[i * h.q_stride..][..hd];
            let len = pos0 + i + 1;
            super::avx2::attend_f32(q, h.k, h.v, h.kv_stride, len, h.scale, &mut sc, o);
        }
        ATTEND.set((kt, sc));
        return;
    }
    kt.clear();
    kt.resize(hd * ldk, 0.0);
    for p in 0..n_keys {
        for (d, &x) in h.k[p * h.kv_stride..][..hd].iter().enumerate() {
            kt[d * ldk + p] = x;
        }
    }
    let scale = _mm512_set1_ps(h.scale);
    for g0 in (0..n).step_by(QG) {
        let gn = QG.min(n - g0);
        // Padding queries of a short last group repeat its last query.
        let qs: [&[f32]; QG] =
            std::array::from_fn(|g| &h.q[(g0 + g.min(gn - 1)) * h.q_stride..][..hd]);
        let keys = pos0 + g0 + gn;
        for b in 0..keys.div_ceil(16) {
            let mut acc = [_mm512_setzero_ps(); QG];
            for d in 0..hd {
                let kv = load16(&kt[d * ldk + 16 * b..]);
                for (a, q) in acc.iter_mut().zip(&qs) {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), kv, *a);
                }
            }
            for (g, a) in acc.iter().enumerate() {
                store16(&mut sc[g * ldk + 16 * b..], _mm512_mul_ps(*a, scale));
            }
        }
        for g in 0..QG {
            let row = &mut sc[g * ldk..(g + 1) * ldk];
            if g < gn {
                let len = pos0 + g0 + g + 1;
                super::avx2::softmax(&mut row[..len]);
                row[len..keys].fill(0.0);
            } else {
                row[..keys].fill(0.0);
            }
        }
        let mut c = 0;
        while c + 64 <= hd {
            weighted_values::<4>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 64;
        }
        while c < hd {
            weighted_values::<1>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 16;
        }
    }
    ATTEND.set((kt, sc));
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
    let mut acc = [[_mm512_setzero_ps(); W]; QG];
    for p in 0..keys {
        let row = &h.v[p * h.kv_stride + c..][..16 * W];
        let vv: [__m512; W] = std::array::from_fn(|j| load16(&row[16 * j..]));
        for (g, a) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(sc[g * ldk + p]);
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
#[cfg(test)]
mod tests;
pub(in crate::quant) mod vbmi;
