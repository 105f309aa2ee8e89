//! Decode products on AVX2 of Q4_0 and the other 32-value types (Q4_1,
//! Q5_0, Q5_1, IQ4_NL), and their products of fewer tokens than the strips
//! take (prompts' included), which ran register tiles before. (Q8_0's are
//! in [`gemv_q8_0`](super::gemv_q8_0), on values widened to i16.)
//!
//! The register tiles' walk at one row by one token redoes the
//! activation side of every block for every row (load, `|a|` or the Q4_0
//! offset, the f16 scale), and unpacks Q4_0 nibbles in four µops. Decode is the
//! one product where that matters: it is bound by instructions on AVX2 (about
//! nineteen vector µops per 18-byte Q4_0 block, more than one core can issue in
//! the time its share of memory bandwidth delivers the bytes). Here the
//! activation side is prepared once per call and read as memory operands, and
//! a Q4_0 block unpacks with one broadcast load, one shift and one `and`: about
//! twelve µops per block.
//!
//! Q4_0, whose every multi-token decode product comes here, takes a
//! row's blocks four at a time: their four integer dots (eight i32 lanes each) reduce
//! exactly by three `hadd`s to one vector whose lanes `i` and `4 + i` are
//! block `i`'s two halves, then one conversion, one scale product and one FMA
//! serve the four blocks (per block: three µops instead of one conversion,
//! product and FMA each, which had all the float ports to themselves; the
//! `hadd`s run mostly on the shuffle port). A quad's four f16 scales are
//! packed into one u64 by scalar shifts and broadcast (eight `vpinsrw` µop
//! pairs before), Q4_0's offset `8·Σa` is subtracted once per quad from the
//! reduced sums instead of per block, and a quad is hinted once per 64 bytes
//! (eight prefetches per Q4_0 quad before), and Q4_0's four pair-sum vectors
//! are added in i16 before one `madd` widens them ([`quad_unsigned_dots`]):
//! a Q4_0 quad is about 30 vector µops, was 49. A row's last `nb mod 4`
//! blocks go one at a time. A token's
//! sums are the same whatever tokens share the call. The other types keep
//! one block at a time.

use std::arch::x86_64::*;
use std::cell::Cell;

use half::f16;

use super::super::prefetch;
use super::super::scratch::with_prepared;
use super::super::tile::{OutTile, QuantActs};
use super::super::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::blocks::{load_iq4_nl, load_q4_1, load_q5_0, load_q5_1};
use super::{
    dot_q4_lanes, dot_q8_lanes, dot_u8_lanes, f16x4_bits, h2f, hsum, load_q8, no_aux, q4_offset,
    q5_offset,
};

/// One activation block, prepared: its values, the per-block operand the
/// weight type's dot needs beside them (the offset term for Q4_0 and Q5_0,
/// the minimum's for Q4_1 and Q5_1, none for IQ4_NL), and its scale
/// in every lane.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Prep {
    a: __m256i,
    x: __m256i,
    d: __m256,
}

/// Prepared blocks kept on the stack (72 KiB): one token's for every product
/// up to 24576 columns; several tokens' of GPT-2's products (32 tokens of
/// 768 columns, 8 of 3072) go through one pass over the weights together.
const STACK_BLOCKS: usize = 768;

/// Tokens whose sums one pass over a row keeps in registers: four
/// accumulators, a quad's four weight blocks and their scales, and the
/// temporaries of the dots fit the sixteen vector registers (the prepared
/// activations are memory operands). With eight the accumulators lived on
/// the stack, at the same speed (124M Q8_0, eight sessions); a batch of
/// more passes over each row (from L1) once per four sessions.
const TG: usize = 4;

thread_local! {
    /// Each thread's prepared blocks for wider products, taken by a call and
    /// put back after it.
    static PREP: Cell<Vec<Prep>> = const { Cell::new(Vec::new()) };
}

/// A Q4_0 block's nibbles as bytes `q` (0..=15) in element order: the 16
/// packed bytes broadcast to both halves, the high half shifted down by four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn unpack_q4(b: &BlockQ4_0) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; the load is unaligned.
    let x = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
    let both = _mm256_broadcastsi128_si256(x);
    let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// Generates a decode product: `$wload` loads a weight block's 32 values,
/// `$aux` derives the activation operand `$dot(w, a, aux)` needs. The `min`
/// form is the types with a minimum, as the register tiles took them:
/// the operand is [`min_term`](super::min_term) and each block adds
/// `m·d_a·Σa` with one more FMA, in the tile's order.
macro_rules! gemv {
    ($name:ident, $blk:ty, $wload:ident, $dot:ident, min) => {
        gemv!(@gen $name, $blk, $wload, $dot, false,
            |_v, b, s, i| $crate::quant::avx2::min_term(b, s[i]),
            |w| Some(_mm256_set1_ps($crate::quant::avx2::h2f(w.m))));
    };
    ($name:ident, $blk:ty, $wload:ident, $aux:ident, $dot:ident, quads_offset) => {
        gemv!(@gen $name, $blk, $wload, $dot, true,
            |v, _b, _s, _i| $aux(v), |_w| None);
    };
    ($name:ident, $blk:ty, $wload:ident, $aux:ident, $dot:ident) => {
        gemv!(@gen $name, $blk, $wload, $dot, false,
            |v, _b, _s, _i| $aux(v), |_w| None);
    };
    (@gen $name:ident, $blk:ty, $wload:ident, $dot:ident, $quads:expr,
        |$v:ident, $ab:ident, $ss:ident, $bi:ident| $aux:expr,
        |$wb:ident| $wmin:expr) => {
        /// `y = w · x` for each of `a.n_tok` tokens, one row at a time (one
        /// sequential weight stream per thread) against the prepared
        /// activations: each weight block is loaded once for up to [`TG`]
        /// tokens, and each token's sum is bitwise the one it gets alone.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
            /// `T` tokens' sums of one row from their prepared blocks (`nb`
            /// per token, token-major).
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn row<const T: usize>(row: &[$blk], prep: &[Prep], nb: usize) -> [f32; T] {
                let mut acc = [_mm256_setzero_ps(); T];
                let nq = quad_blocks($quads, nb);
                for b in (0..nq).step_by(4) {
                    let wq = &row[b..b + 4];
                    for (i, wb) in wq.iter().enumerate() {
                        if starts_chunk::<$blk>(i) {
                            prefetch::stream(wb);
                        }
                    }
                    let wv = [$wload(&wq[0]), $wload(&wq[1]), $wload(&wq[2]), $wload(&wq[3])];
                    let wd = quad_scales([wq[0].d, wq[1].d, wq[2].d, wq[3].d]);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let p = &prep[j * nb + b..j * nb + b + 4];
                        // The quads (Q4_0's, the only type that takes them)
                        // subtract the weights' offset once per quad from the
                        // reduced sums (the quad's offsets, reduced alike, in
                        // its first block's `x`), not per block in i16: the
                        // same integers, three µops fewer.
                        let h = _mm256_sub_epi32(
                            quad_unsigned_dots(&wv, [p[0].a, p[1].a, p[2].a, p[3].a]),
                            p[0].x,
                        );
                        let dot = _mm256_cvtepi32_ps(h);
                        *acc = _mm256_fmadd_ps(_mm256_mul_ps(dot, p[0].d), wd, *acc);
                    }
                }
                for (b, wb) in row.iter().enumerate().skip(nq) {
                    prefetch::stream(wb);
                    let wv = $wload(wb);
                    let wd = _mm256_set1_ps(h2f(wb.d));
                    #[allow(unused_variables)]
                    let $wb = wb;
                    let wm: Option<__m256> = $wmin;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let p = &prep[j * nb + b];
                        let dot = _mm256_cvtepi32_ps($dot(wv, p.a, p.x));
                        *acc = _mm256_fmadd_ps(_mm256_mul_ps(dot, p.d), wd, *acc);
                        if let Some(m) = wm {
                            *acc = _mm256_fmadd_ps(_mm256_castsi256_ps(p.x), m, *acc);
                        }
                    }
                }
                acc.map(|v| hsum(v))
            }

            /// One token's sums of every row, as its own function: inlined
            /// among the multi-token loops, the same one-token loop streamed
            /// the weights 25–45 % slower (124M Q8_0, AVX2 path, one and two
            /// threads), with the same instructions in its body.
            #[inline(never)]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn one(w: &[$blk], prep: &[Prep], nb: usize, out: &mut OutTile<'_>, t: usize) {
                for r in 0..out.rows() {
                    put(out, t, r, &row::<1>(&w[r * nb..(r + 1) * nb], prep, nb));
                }
            }

            let (nb, n_tok) = (a.nb, a.n_tok);
            assert!(w.len() >= out.rows() * nb, "gemv: weights too short");
            let prep = |t: usize, b: usize| {
                let act = &a.row(t)[b];
                let v = load_q8(act);
                #[allow(unused_variables)]
                let ($v, $ab, $ss, $bi) = (v, act, a.row_sums(t), b);
                let nq = quad_blocks($quads, nb);
                let d = if b < nq && b % 4 == 0 {
                    let q = &a.row(t)[b..b + 4];
                    quad_scales([q[0].d, q[1].d, q[2].d, q[3].d])
                } else {
                    _mm256_set1_ps(h2f(act.d))
                };
                let x = if b >= nq {
                    $aux
                } else if b % 4 == 0 {
                    quad_offsets(&a.row(t)[b..b + 4])
                } else {
                    _mm256_setzero_si256()
                };
                Prep { a: v, x, d }
            };
            // Tokens whose blocks fit the stack together (at least one).
            let group = (STACK_BLOCKS / nb.max(1)).max(1);
            let mut t0 = 0;
            while t0 < n_tok {
                let g = group.min(n_tok - t0);
                with_prepared::<_, _, STACK_BLOCKS>(
                    g * nb,
                    &PREP,
                    |i| prep(t0 + i / nb, i % nb),
                    |prep| {
                        if g == 1 {
                            return one(w, prep, nb, out, t0);
                        }
                        for r in 0..out.rows() {
                            let wr = &w[r * nb..(r + 1) * nb];
                            let mut s = 0;
                            while s < g {
                                let m = (g - s).min(TG);
                                let p = &prep[s * nb..(s + m) * nb];
                                let t = t0 + s;
                                match m {
                                    1 => put(out, t, r, &row::<1>(wr, p, nb)),
                                    2 => put(out, t, r, &row::<2>(wr, p, nb)),
                                    3 => put(out, t, r, &row::<3>(wr, p, nb)),
                                    4 => put(out, t, r, &row::<4>(wr, p, nb)),
                                    5 => put(out, t, r, &row::<5>(wr, p, nb)),
                                    6 => put(out, t, r, &row::<6>(wr, p, nb)),
                                    7 => put(out, t, r, &row::<7>(wr, p, nb)),
                                    _ => put(out, t, r, &row::<TG>(wr, p, nb)),
                                }
                                s += m;
                            }
                        }
                    },
                );
                t0 += g;
            }
        }
    };
}

/// Blocks of a row that go four at a time (`quads`: Q4_0): the
/// whole quads; the rest go one at a time.
#[inline(always)]
fn quad_blocks(quads: bool, nb: usize) -> usize {
    if quads { nb - nb % 4 } else { 0 }
}

/// `Σ q·a` of a quad of blocks whose weights are unsigned nibbles (0..=15,
/// their offset left out: see [`quad_offsets`]), lanes `i` and `4 + i`
/// block `i`'s first and last sixteen values. The pair sums are added in i16
/// by two `hadd` levels before one `madd` widens them: a lane then sums eight
/// products of at most 15·127, under 2¹⁵, so these are the same integers as
/// widening each block first (four `madd`s) and adding in i32, three µops
/// fewer per quad.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad_unsigned_dots(q: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
    let m = |i: usize| _mm256_maddubs_epi16(q[i], a[i]);
    let h = _mm256_hadd_epi16(_mm256_hadd_epi16(m(0), m(1)), _mm256_hadd_epi16(m(2), m(3)));
    _mm256_madd_epi16(h, _mm256_set1_epi16(1))
}

/// The offset terms of a quad of Q4_0 activations, reduced as the quad's
/// dots are: lanes `i` and `4 + i` hold block `i`'s `8·Σa` over its first
/// and last sixteen values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad_offsets(acts: &[BlockQ8_0]) -> __m256i {
    let o = |i: usize| _mm256_madd_epi16(q4_offset(load_q8(&acts[i])), _mm256_set1_epi16(1));
    _mm256_hadd_epi32(_mm256_hadd_epi32(o(0), o(1)), _mm256_hadd_epi32(o(2), o(3)))
}

/// Whether block `i` of a quad is the first to start in a new 64 bytes of
/// the quad: the quads hint one block per 64 bytes (Q4_0 block 0 of its 72
/// bytes, Q8_0 blocks 0 and 2 of 136), as the VBMI decode does; a hint per
/// block issued four (Q8_0) to eight (Q4_0) times the prefetches the lines
/// need, each a µop of the load ports.
#[inline(always)]
const fn starts_chunk<B>(i: usize) -> bool {
    let size = std::mem::size_of::<B>();
    i == 0 || (i * size) / 64 != ((i - 1) * size) / 64
}

/// The scales of four consecutive blocks in the lane order of a quad's
/// reduced sums: lane `i` and `4 + i` block `i`'s. The four f16s are packed
/// into one u64 by scalar shifts and broadcast: the eight-word
/// `_mm_setr_epi16` compiled to seven `vpinsrw` (two µops each, one on the
/// shuffle port), a third of a Q4_0 quad's vector µops.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad_scales(d: [f16; 4]) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi64x(f16x4_bits(d)))
}

/// Writes tokens `t..t + T` of output row `r`.
#[inline]
fn put<const T: usize>(out: &mut OutTile<'_>, t: usize, r: usize, v: &[f32; T]) {
    for (j, &x) in v.iter().enumerate() {
        out.set(t + j, r, x);
    }
}

gemv!(
    gemv_q4_0,
    BlockQ4_0,
    unpack_q4,
    q4_offset,
    dot_q4_lanes,
    quads_offset
);
gemv!(gemv_q4_1, BlockQ4_1, load_q4_1, dot_u8_lanes, min);
gemv!(gemv_q5_0, BlockQ5_0, load_q5_0, q5_offset, dot_q4_lanes);
gemv!(gemv_q5_1, BlockQ5_1, load_q5_1, dot_u8_lanes, min);
gemv!(gemv_iq4_nl, BlockIq4Nl, load_iq4_nl, no_aux, dot_q8_lanes);
