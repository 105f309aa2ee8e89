//! Decode products of Q8_0 on AVX2 (and its products of fewer tokens than
//! the strips take): values widened to i16, two outputs per register.
//!
//! A Q8_0 block's integer dot by the sign trick (`maddubs(|w|, sign(a, w))`,
//! then a widening `madd`) costs three µops of the multiply ports per block
//! and token; on AMD Zen 4 those are the two pipes the FMAs use too, and
//! the `vphaddd`s that then reduced four blocks' eight lanes each took two
//! cycles apiece (measured: a quad of blocks and one token ran about 10.5
//! cycles, three times a batch step's weight stream from DRAM). Here:
//!
//! - both sides are widened to i16 and multiplied by `madd` (exact for every
//!   byte): two µops per block and token; the weights' widening (three
//!   sign-extending loads and one lane swap per block) is shared by every
//!   token of a pass;
//! - each register holds **two outputs**, one per 128-bit half: two tokens
//!   of one row (a single token walks its rows alone, with the same bits). A
//!   block's 32 values are four octets `O0..O3`; the four products of a
//!   block put octets `(0, 1, 2, 3)` of the first output beside octets
//!   `(1, 2, 3, 0)` of the second, so each half sums all 32 values, lane `k`
//!   of a half the same values (`8j + 2k`, `8j + 2k + 1`) in either half;
//! - four blocks' sums reduce to one lane each per half by six in-lane
//!   unpacks (no `vphaddd`), then one conversion, one
//!   scale product and one FMA serve four blocks of two outputs.
//!
//! Every output is computed by the same operations on the same values
//! whichever half it lands in and whatever shares its register, so a
//! token's sums do not depend on how many tokens share the call (a batch's
//! tokens get the bits they get alone; tested). A row's last `nb mod 4`
//! blocks are added after the quads, one at a time, in scalar f32.
//!
//! From [`OCTETS_FROM`] tokens (a batch step of several sessions) the pairs
//! give way to **octets**, the tokens in lanes ([`several`]): per block and
//! eight tokens, the block widened once and shuffled four ways, sixteen
//! `madd`s against the octet's prepared values and a reduction by unpacks
//! that leaves the eight tokens' exact block sums in order in one register,
//! then per lane the float step above in the same order (block `b` of the
//! quads into accumulator `b mod 4`, the accumulators added as `hsum4`
//! adds, the tail blocks as the scalar tail): the same bits again. The pairs
//! re-read every token's widened blocks for every row; an octet's are read
//! once per row for eight tokens. One thread, eight tokens, against the
//! pairs (alternated, fastest of five): 2304×768 8.8–9.0 cycles per four
//! blocks and token against 10.8–11.2, 768×3072 10.4 against 12.5–12.7,
//! 50304×768 9.5–10.2 against 12.1–12.3.

use std::arch::x86_64::*;
use std::cell::Cell;

use half::f16;

use super::super::prefetch;
use super::super::scratch::with_prepared;
use super::super::tile::{OutTile, QuantActs};
use super::super::types::BlockQ8_0;
use super::{f16x4_bits, hsum4, hsum4_i32};

/// One activation block of a token pair, prepared: product `j`'s operand
/// holds octet `j` of the first token and octet `j + 1 mod 4` of the
/// second, widened to i16; `d` (read at the first block of each quad) the
/// quad's scales in the reduced sums' lane order, first token's then
/// second's.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Prep {
    a: [__m256i; 4],
    d: __m256,
}

/// Prepared pair blocks kept on the stack (120 KiB): the eight tokens of a
/// 3072-column product (GPT-2's largest) in one pass over the weights.
const STACK_BLOCKS: usize = 768;

/// Token pairs one pass over a row serves: per pair an accumulator and two
/// half-reduced block pairs, beside a block's four weight registers (some
/// spill). Four ran a 2304×768 and a 768×3072 product of eight tokens at
/// 10.9 and 13.3 cycles per four blocks and token (one thread, fastest of
/// four alternated rounds), two at 11.6 and 14.3, one at 14.5 and 14.4; the
/// sign-trick walk before at 13.1 and 16.7.
const PAIRS: usize = 4;

thread_local! {
    /// Each thread's prepared blocks for wider products, taken by a call and
    /// put back after it.
    static PREP: Cell<Vec<Prep>> = const { Cell::new(Vec::new()) };
    /// Each thread's prepared octets ([`several`]), the same way.
    static OCTETS: Cell<Vec<Octet>> = const { Cell::new(Vec::new()) };
}

/// Octet `o` (0..4) of a Q8_0 block widened to eight i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn octet(b: &BlockQ8_0, o: usize) -> __m128i {
    let q: &[i8; 8] = b.qs[8 * o..8 * o + 8].try_into().unwrap_or(&[0; 8]);
    // SAFETY: `q` is 8 readable bytes; the load is unaligned.
    _mm_cvtepi8_epi16(unsafe { _mm_loadl_epi64(q.as_ptr().cast()) })
}

/// Sixteen values of a Q8_0 block from byte `at` (0, 8 or 16) widened to
/// i16: octets `at / 8` (low half) and `at / 8 + 1` (high half).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sixteen(b: &BlockQ8_0, at: usize) -> __m256i {
    let q: &[i8; 16] = b.qs[at..at + 16].try_into().unwrap_or(&[0; 16]);
    // SAFETY: `q` is 16 readable bytes; the load is unaligned.
    _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(q.as_ptr().cast()) })
}

/// The four product operands of one weight block for two tokens: octets
/// `(0|1), (1|2), (2|3), (3|0)` (first token's | second's).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weights_for_tokens(b: &BlockQ8_0) -> [__m256i; 4] {
    let (w0, w1, w2) = (sixteen(b, 0), sixteen(b, 8), sixteen(b, 16));
    [w0, w1, w2, _mm256_permute2x128_si256::<0x21>(w2, w0)]
}

/// One block's two integer dots: lane `k` of each half sums the products of
/// values `8j + 2k` and `8j + 2k + 1` over the four octets `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_dots(w: &[__m256i; 4], a: &[__m256i; 4]) -> __m256i {
    let p = |j: usize| _mm256_madd_epi16(w[j], a[j]);
    _mm256_add_epi32(_mm256_add_epi32(p(0), p(1)), _mm256_add_epi32(p(2), p(3)))
}

/// Two blocks' lanes summed by twos per half: `[a0+a2, b0+b2, a1+a3,
/// b1+b3]`. (Adding neighbours instead, `a0+a1`, is what `vphaddd` does,
/// and LLVM then emits it: two cycles each on Zen 4, where these unpacks
/// take half a cycle.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn merge_pairs(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
}

/// Two [`merge_pairs`] results (blocks 0, 1 and 2, 3) to one lane per block
/// and half: `[s0, s1, s2, s3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn merge_quads(ab: __m256i, cd: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd))
}

/// The four f16 scales of a quad for each half, as f32 in the reduced
/// sums' lane order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad_scales(lo: &[BlockQ8_0], hi: &[BlockQ8_0]) -> __m256 {
    let bits = |q: &[BlockQ8_0]| f16x4_bits([q[0].d, q[1].d, q[2].d, q[3].d]);
    _mm256_cvtph_ps(_mm_set_epi64x(bits(hi), bits(lo)))
}

/// Each half's integer sum of its four lanes (a tail block's dots).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves_i32(v: __m256i) -> [i32; 2] {
    [
        hsum4_i32(_mm256_castsi256_si128(v)),
        hsum4_i32(_mm256_extracti128_si256::<1>(v)),
    ]
}

/// A tail block's contribution, added to a finished sum in scalar f32.
#[inline]
fn tail_term(sum: f32, dot: i32, da: f16, dw: f16) -> f32 {
    sum + (dot as f32 * da.to_f32()) * dw.to_f32()
}

/// `y = w · x` for each of `a.n_tok` tokens: tokens in pairs, a pass over
/// each row serving up to [`PAIRS`] pairs; a single token on its own.
/// Each output is bitwise the same whichever way it is computed.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemv_q8_0(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    let (nb, n_tok) = (a.nb, a.n_tok);
    assert!(w.len() >= out.rows() * nb, "gemv: weights too short");
    if n_tok >= OCTETS_FROM {
        return several(w, a, out);
    }
    let nq = nb - nb % 4;
    let n_pairs = n_tok.div_ceil(2);
    let prep = |p: usize, b: usize| {
        let (t1, t2) = (2 * p, (2 * p + 1).min(n_tok - 1));
        let (r1, r2) = (a.row(t1), a.row(t2));
        let half = |j: usize| _mm256_set_m128i(octet(&r2[b], (j + 1) % 4), octet(&r1[b], j));
        let d = if b < nq && b.is_multiple_of(4) {
            quad_scales(&r1[b..b + 4], &r2[b..b + 4])
        } else {
            _mm256_setzero_ps()
        };
        Prep {
            a: [half(0), half(1), half(2), half(3)],
            d,
        }
    };
    // Pairs whose blocks fit the stack together (at least one).
    let group = (STACK_BLOCKS / nb.max(1)).max(1);
    let mut p0 = 0;
    while p0 < n_pairs {
        let g = group.min(n_pairs - p0);
        with_prepared::<_, _, STACK_BLOCKS>(
            g * nb,
            &PREP,
            |i| prep(p0 + i / nb, i % nb),
            |prep| {
                if n_tok == 1 {
                    return single(w, a.row(0), prep, nb, out);
                }
                for r in 0..out.rows() {
                    let wr = &w[r * nb..(r + 1) * nb];
                    let mut s = 0;
                    while s < g {
                        let m = (g - s).min(PAIRS);
                        let p = &prep[s * nb..(s + m) * nb];
                        let t = 2 * (p0 + s);
                        let acts = |i: usize| a.row((t + i).min(n_tok - 1));
                        let put = |out: &mut OutTile<'_>, v: &[[f32; 2]]| {
                            for (i, v) in v.iter().enumerate() {
                                for (h, &x) in v.iter().enumerate() {
                                    if t + 2 * i + h < n_tok {
                                        out.set(t + 2 * i + h, r, x);
                                    }
                                }
                            }
                        };
                        match m {
                            1 => put(out, &pairs_row::<1>(wr, p, nb, acts)),
                            2 => put(out, &pairs_row::<2>(wr, p, nb, acts)),
                            3 => put(out, &pairs_row::<3>(wr, p, nb, acts)),
                            _ => put(out, &pairs_row::<PAIRS>(wr, p, nb, acts)),
                        }
                        s += m;
                    }
                }
            },
        );
        p0 += g;
    }
}

/// `P` token pairs' sums of one weight row from their prepared blocks (`nb`
/// per pair, pair-major); `acts(i)` is token `i` of the pairs (for the
/// tail blocks).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs_row<'a, const P: usize>(
    row: &[BlockQ8_0],
    prep: &[Prep],
    nb: usize,
    acts: impl Fn(usize) -> &'a [BlockQ8_0],
) -> [[f32; 2]; P] {
    let nq = nb - nb % 4;
    let mut acc = [_mm256_setzero_ps(); P];
    for b in (0..nq).step_by(4) {
        let wq = &row[b..b + 4];
        prefetch::stream(&wq[0]);
        prefetch::stream(&wq[2]);
        let mut ab = [_mm256_setzero_si256(); P];
        let mut cd = [_mm256_setzero_si256(); P];
        for (k, half) in [&mut ab, &mut cd].into_iter().enumerate() {
            let w0 = weights_for_tokens(&wq[2 * k]);
            let w1 = weights_for_tokens(&wq[2 * k + 1]);
            for (j, h) in half.iter_mut().enumerate() {
                let p = &prep[j * nb + b + 2 * k..];
                *h = merge_pairs(block_dots(&w0, &p[0].a), block_dots(&w1, &p[1].a));
            }
        }
        let wd = quad_scales(wq, wq);
        for (j, acc) in acc.iter_mut().enumerate() {
            let dot = _mm256_cvtepi32_ps(merge_quads(ab[j], cd[j]));
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(dot, prep[j * nb + b].d), wd, *acc);
        }
    }
    let mut sums = acc.map(|v| {
        [
            hsum4(_mm256_castps256_ps128(v)),
            hsum4(_mm256_extractf128_ps::<1>(v)),
        ]
    });
    for (b, wb) in row.iter().enumerate().skip(nq) {
        let wv = weights_for_tokens(wb);
        for (j, s) in sums.iter_mut().enumerate() {
            let dots = halves_i32(block_dots(&wv, &prep[j * nb + b].a));
            for h in 0..2 {
                s[h] = tail_term(s[h], dots[h], acts(2 * j + h)[b].d, wb.d);
            }
        }
    }
    sums
}

/// One token's sums of every row, one row at a time (one sequential weight
/// stream per thread, as the decode walk found fastest), from its prepared
/// blocks (paired with itself, so products 0 and 2 are its first and last
/// sixteen values in order). Each block's two `madd`s against its values
/// widened in order give lanes other than a pair's, but the same exact
/// block sum once both halves are added, and the float part is a pair's low
/// half on 128 bits: the same operations on the same values, the same bits.
/// As its own function: the decode walk's one-token loop inlined among the
/// multi-token ones streamed the weights 25–45 % slower (see `gemv`).
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
fn single(w: &[BlockQ8_0], act: &[BlockQ8_0], prep: &[Prep], nb: usize, out: &mut OutTile<'_>) {
    let nq = nb - nb % 4;
    let dots = |b: &BlockQ8_0, p: &Prep| {
        _mm256_add_epi32(
            _mm256_madd_epi16(sixteen(b, 0), p.a[0]),
            _mm256_madd_epi16(sixteen(b, 16), p.a[2]),
        )
    };
    let whole =
        |v: __m256i| _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    for r in 0..out.rows() {
        let wr = &w[r * nb..(r + 1) * nb];
        let mut acc = _mm_setzero_ps();
        for b in (0..nq).step_by(4) {
            let q = &wr[b..b + 4];
            prefetch::stream(&q[0]);
            prefetch::stream(&q[2]);
            let ab = merge_pairs(dots(&q[0], &prep[b]), dots(&q[1], &prep[b + 1]));
            let cd = merge_pairs(dots(&q[2], &prep[b + 2]), dots(&q[3], &prep[b + 3]));
            let dot = _mm_cvtepi32_ps(whole(merge_quads(ab, cd)));
            let wd = _mm256_castps256_ps128(quad_scales(q, q));
            let da = _mm256_castps256_ps128(prep[b].d);
            acc = _mm_fmadd_ps(_mm_mul_ps(dot, da), wd, acc);
        }
        let mut sum = hsum4(acc);
        for (b, wb) in wr.iter().enumerate().skip(nq) {
            let h = halves_i32(dots(wb, &prep[b]));
            sum = tail_term(sum, h[0] + h[1], act[b].d, wb.d);
        }
        out.set(0, r, sum);
    }
}

/// A block's scale in all eight lanes: the f16 broadcast, then converted
/// (no scalar conversion, whose `vpinsrw` LLVM merged into a register
/// written elsewhere in the loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale8(b: &BlockQ8_0) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(b.d.to_bits() as i16))
}

/// Tokens per pass of [`several`] over a row: one register of their sums.
const OCTET: usize = 8;

/// Prepared octets kept on the stack (104 KiB): sixteen tokens of a
/// 3072-column product (so a batch step allocates nothing, whichever thread
/// takes which tile).
const STACK_OCTETS: usize = 192;

/// Products of this many tokens and more take [`several`]; fewer, the
/// pairs (whose register holds two tokens, so no lanes idle). Octets
/// against pairs, one thread, one run each (cycles per four blocks and
/// token, 2304×768 / 768×3072): 2 tokens 24.6 / 25.1 against 24.4 / 17.2, 4
/// tokens 12.4 / 17.0 against 12.0 / 12.0, 5 12.2 / 16.5 against 13.1 /
/// 15.7, 6 10.2 / 13.9 against 10.9 / 13.5; `gptq-batch-bench`, six
/// sessions, three rounds: 0.98–1.02×.
const OCTETS_FROM: usize = 6;

/// One block of up to eight tokens' activations for [`several`], widened
/// to i16: `x[s][p]` is the operand of the weights' shuffle `s` for tokens
/// `2p` and `2p + 1` of the octet, their pairs of values alternating
/// (`[t(0,1), u(0,1), t(2,3), u(2,3)]`) in each 128-bit half, the half
/// holding one four-value group of the block (groups 0 | 2, 1 | 3, 4 | 6
/// and 5 | 7 for `s` = 0..4: what `vpshufd` makes of the widened weights'
/// halves); `d` the eight tokens' scales (zero past the last token).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Octet {
    x: [[__m256i; 4]; 4],
    d: __m256,
}

/// Block `b` of tokens `8o..8o + 8` (those below `a.n_tok`) as an [`Octet`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prepare_octet(a: &QuantActs<'_>, o: usize, b: usize) -> Octet {
    let zero = _mm256_setzero_si256();
    let mut x = [[zero; 4]; 4];
    let mut d = [0u16; OCTET];
    for p in 0..OCTET / 2 {
        let t = OCTET * o + 2 * p;
        let wide = |t: usize| {
            if t < a.n_tok {
                let blk = &a.row(t)[b];
                (sixteen(blk, 0), sixteen(blk, 16), blk.d.to_bits())
            } else {
                (zero, zero, 0)
            }
        };
        let ((tl, th, td), (ul, uh, ud)) = (wide(t), wide(t + 1));
        // Per half, `unpacklo` interleaves the two tokens' first two i16
        // pairs (values 0..4 of the half) and `unpackhi` their last two.
        x[0][p] = _mm256_unpacklo_epi32(tl, ul);
        x[1][p] = _mm256_unpackhi_epi32(tl, ul);
        x[2][p] = _mm256_unpacklo_epi32(th, uh);
        x[3][p] = _mm256_unpackhi_epi32(th, uh);
        (d[2 * p], d[2 * p + 1]) = (td, ud);
    }
    // SAFETY: `d` is 16 readable bytes; the load is unaligned.
    let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) });
    Octet { x, d }
}

/// Several tokens' sums, the tokens in lanes: per row and octet of tokens,
/// each weight block widened once and shuffled four ways (a four-value
/// group of each half repeated for two tokens), sixteen `madd`s against the
/// prepared octet, and a reduction by unpacks that leaves the eight tokens'
/// exact block sums in order in one register. The float step is then
/// [`single`]'s for each lane: a block `b` of the row's quads goes into
/// accumulator `b mod 4` as `fma(sum·d_a, d_w, acc)`, the four accumulators
/// are added as `hsum4` adds its lanes, and the tail blocks as
/// [`tail_term`] does, so every token gets the bits it gets alone.
#[target_feature(enable = "avx2,fma,f16c")]
fn several(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    let (nb, n_tok) = (a.nb, a.n_tok);
    let octets = n_tok.div_ceil(OCTET);
    let make = |i: usize| prepare_octet(a, i / nb, i % nb);
    with_prepared::<_, _, STACK_OCTETS>(octets * nb, &OCTETS, make, |prep| {
        for r in 0..out.rows() {
            let wr = &w[r * nb..(r + 1) * nb];
            for o in 0..octets {
                let (t0, p) = (OCTET * o, &prep[o * nb..(o + 1) * nb]);
                let m = (n_tok - t0).min(OCTET);
                let sums = match m.div_ceil(2) {
                    1 => row_octet::<1>(wr, p),
                    2 => row_octet::<2>(wr, p),
                    3 => row_octet::<3>(wr, p),
                    _ => row_octet::<4>(wr, p),
                };
                let mut v = [0.0f32; OCTET];
                // SAFETY: `v` is 8 writable floats; the store is unaligned.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr(), sums) };
                for (j, &x) in v.iter().take(m).enumerate() {
                    out.set(t0 + j, r, x);
                }
            }
        }
    });
}

/// The exact sums of one weight block and the first `2P` tokens of an
/// octet, in token order (zero past them).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums<const P: usize>(blk: &BlockQ8_0, oct: &Octet) -> __m256i {
    let (lo, hi) = (sixteen(blk, 0), sixteen(blk, 16));
    // Groups (0 | 2), (1 | 3) of each half's values, each i16 pair twice.
    let w = [
        _mm256_shuffle_epi32::<0x50>(lo),
        _mm256_shuffle_epi32::<0xfa>(lo),
        _mm256_shuffle_epi32::<0x50>(hi),
        _mm256_shuffle_epi32::<0xfa>(hi),
    ];
    let zero = _mm256_setzero_si256();
    let mut acc = [zero; 4];
    for (p, acc) in acc.iter_mut().enumerate().take(P) {
        let m = |s: usize| _mm256_madd_epi16(w[s], oct.x[s][p]);
        *acc = _mm256_add_epi32(_mm256_add_epi32(m(0), m(1)), _mm256_add_epi32(m(2), m(3)));
    }
    // Per half: lanes (t, u, t, u) of each pair's register to (t0, t1, t2,
    // t3); then the halves added across.
    let fold = |a: __m256i, b: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
    };
    let m01 = fold(acc[0], acc[1]);
    let m23 = if P > 2 { fold(acc[2], acc[3]) } else { zero };
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(m01, m23),
        _mm256_permute2x128_si256::<0x31>(m01, m23),
    )
}

/// One row's sums for an octet's first `2P` tokens (see [`several`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn row_octet<const P: usize>(row: &[BlockQ8_0], prep: &[Octet]) -> __m256 {
    let nb = row.len();
    let nq = nb - nb % 4;
    // A block's sums times the tokens' scales (`sum·d_a`).
    let term = |blk: &BlockQ8_0, oct: &Octet| {
        _mm256_mul_ps(_mm256_cvtepi32_ps(block_sums::<P>(blk, oct)), oct.d)
    };
    let step = |acc: __m256, blk: &BlockQ8_0, oct: &Octet| {
        _mm256_fmadd_ps(term(blk, oct), scale8(blk), acc)
    };
    let zero = _mm256_setzero_ps();
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    for (q, o) in row[..nq].chunks_exact(4).zip(prep[..nq].chunks_exact(4)) {
        prefetch::stream(&q[0]);
        prefetch::stream(&q[2]);
        a0 = step(a0, &q[0], &o[0]);
        a1 = step(a1, &q[1], &o[1]);
        a2 = step(a2, &q[2], &o[2]);
        a3 = step(a3, &q[3], &o[3]);
    }
    let mut sum = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    for (wb, oct) in row[nq..].iter().zip(&prep[nq..]) {
        sum = _mm256_add_ps(sum, _mm256_mul_ps(term(wb, oct), scale8(wb)));
    }
    sum
}
