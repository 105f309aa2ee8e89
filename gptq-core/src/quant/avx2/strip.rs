//! Prefill products of the AVX2 table with the weight rows in the vector
//! lanes: half a strip (`x86::strips`) per 256-bit register, eight rows of
//! four values, times four values of one token broadcast to every row.
//!
//! The decode walk (`gemv`), like the register tiles before it, puts a block's 32 values across the lanes,
//! so every (row, token) pair pays its own conversion, scale product and FMA,
//! the activations' `|a|` or offset term and the f16 scales are redone for
//! every tile, and the eight lanes are summed at the end. With rows in the
//! lanes one conversion, one scale product and one FMA serve eight rows, the
//! scales are f32 arrays read as memory operands, and nothing is summed
//! across lanes:
//!
//! - Q4_0, Q4_1 (values 0..=15 as unsigned bytes): eight `maddubs` per block
//!   and token summed in i16 (each lane at most 8·2·15·128 = 30720, no
//!   saturation), one `madd` to i32 and the offset `-8·Σa` from the
//!   activations' exact sums (Q4_1: its minimum's term `m·d_a·Σa` instead);
//!   Q5_0, Q5_1 (0..=31) the same four lines at a time; the K-quants with
//!   minimums in sub-blocks of 32 (Q4_K, Q5_K), with Q8_K's sums;
//! - Q2_K, Q3_K, Q6_K (16-value sub-blocks, integer scales): each
//!   super-block summed in integers as the scalar twin sums it, one
//!   conversion and scale product per super-block (`gemm_strips_int`;
//!   Q2_K's minimums by `madd`s against Q8_K's `bsums`, `gemm_q2_k`).
//!
//! The signed types (Q8_0, IQ4_NL, IQ4_XS) take i16 lines instead
//! (`avx2::strip_words`).
//!
//! Each output accumulates block by block in one f32 lane in the same order as
//! the AVX-512 strips and the AMX kernel: the same bits (a test checks it
//! where those paths run); Q2_K, Q3_K and Q6_K instead give the scalar twin's bits
//! (tested too). Used from [`MIN_TOKENS`](crate::quant::x86::strips::MIN_TOKENS) tokens on, where the per-call
//! repack is shared by enough tokens.

use std::arch::x86_64::*;

use super::super::tile::{OutTile, QuantActs};
use super::super::types::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, BlockQ8K, QK_K,
};
use super::super::x86::strips::{
    K16_LINES, K16_SUBS, Line, STRIP, Strip, SubActs, Unpack, UnpackInt, chunk_tokens, pair_i16,
    prepare_pair_acts, q3_k_int, q4_0_unsigned, q4_1_unsigned, q4_k_unsigned, q5_0_unsigned,
    q5_1_unsigned, q5_k_unsigned, q6_k_int, rec_words, store_sums8, with_int_strips,
    with_q2_k_int_strips, with_strips,
};

/// Rows per register: half a strip.
const HALF: usize = 8;

/// Tokens that share each pass over half a strip's unsigned weights: four
/// lines ([`PASS_LINES`]), four integer sums, four accumulators and the
/// temporaries fit the sixteen registers (with the block's eight lines held,
/// the accumulators lived on the stack: Q4_K_M mix 0.95×, Q4_0 even).
pub(in crate::quant) const TG_Q4: usize = 4;

/// The same for Q2_K's 16-value sub-blocks, whose float part per sub-block
/// and token (the conversion, scale product and two FMAs per four lines)
/// needs more registers.
const TG_K16: usize = 2;

/// Tokens per pass of the integer-scale kernel (Q3_K, Q6_K). A pass reads
/// each half line of weights once per group of tokens, so two tokens left
/// it bound by the L2 → L1 stream of the lines wherever a strip's lines
/// outgrow L1 (`ffn_down`: 64 KiB per strip on the 355M shape): a
/// standalone copy of the loop on AMD Zen 4 ran 1.42 cycles per half line
/// and token with two tokens, 1.00 with four (lines in L1: 1.02 and 0.91).
/// Four once spilled and ran 0.90–1.02× (124M Q3_K_M and Q6_K mixes); with
/// the loop's index arithmetic moved out of it (see [`half_tokens_int`])
/// they fit the registers. Zen 4, 2 threads, `gptq bench -p N -n 0`,
/// against two tokens, alternated: Q6_K mixes pp512 1.04–1.11× (355M),
/// 1.07–1.24× (124M); 124M Q3_K_M pp128 1.01×, pp512 1.03–1.05×; 355M
/// Q4_K_M pp128 1.02–1.10×, pp512 1.04–1.06×.
const TG_INT: usize = 4;

/// Tokens per pass of Q2_K's integer-scale kernel, whose two-bit values'
/// four lines per sub-block leave the registers for four tokens' sums and
/// minimums' sums (124M Q2_K mix, against two: pp16 1.02–1.05×, pp128
/// 1.06–1.07×, pp512 1.06×).
const TG_Q2K: usize = 4;

/// Lines of a sub-block whose values a pass holds for every token of the
/// group.
const PASS_LINES: usize = 4;

/// The products in strips of one weight type (`S` sub-blocks of `V` values
/// per block, `L = V / 4` lines each) as unsigned bytes whose `maddubs`
/// pairs are summed `GROUP` lines at a time in i16 (at most `GROUP·2·u_max·128` < 2¹⁵: 8 lines
/// of 4-bit values, 4 of 5-bit, 2 of 6-bit), and `MIN`: each sub-block adds
/// its weight term times `d_a·Σa` with one more FMA.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_strips<
    W: 'static,
    A: SubActs,
    const V: usize,
    const S: usize,
    const L: usize,
    const GROUP: usize,
    const MIN: bool,
>(
    w: &[W],
    off: i32,
    unpack: impl Unpack<W, V, S> + 'static,
    a: &QuantActs<'_, A>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    assert!(L * 4 == V && V * S == A::VALUES);
    let nsub = nb * S;
    // Tokens per pass: see the constants.
    let group = if L == PASS_LINES { TG_K16 } else { TG_Q4 };
    with_strips::<_, V, S, _>(w, rows, nb, unpack, |s| {
        s.pack_acts::<A, V>(a, off, group);
        let acts = s.packed_acts();
        let chunk = chunk_tokens(nsub * rec_words(V) * 4, TG_Q4);
        let strip = |i: usize| s.strip(i, nsub, L);
        walk_halves(rows, n_tok, chunk, out, strip, |st, h, t, t1| {
            let mut sums = [_mm256_setzero_ps(); TG_Q4];
            let n = if t + group > t1 {
                [sums[0]] = half_tokens::<1, L, GROUP, MIN>(st, h, acts.tokens::<1>(t), nsub);
                1
            } else if L == PASS_LINES {
                let v = half_tokens::<TG_K16, L, GROUP, MIN>(st, h, acts.tokens::<TG_K16>(t), nsub);
                sums[..TG_K16].copy_from_slice(&v);
                TG_K16
            } else {
                sums = half_tokens::<TG_Q4, L, GROUP, MIN>(st, h, acts.tokens::<TG_Q4>(t), nsub);
                TG_Q4
            };
            (sums, n)
        });
    })
}

/// The walk of the AVX2 strip kernels (these and `avxvnni`'s): tokens in
/// chunks of `chunk`, strip by strip (`strip(i)`), each half strip's eight
/// rows (the last maybe partial) for every token of the chunk; `pass(strip,
/// h, t, t1)` gives the row sums of up to [`TG_Q4`] tokens from `t` (below
/// `t1`) and their count.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn walk_halves<'s>(
    rows: usize,
    n_tok: usize,
    chunk: usize,
    out: &mut OutTile<'_>,
    strip: impl Fn(usize) -> Strip<'s>,
    mut pass: impl FnMut(&Strip<'s>, usize, usize, usize) -> ([__m256; TG_Q4], usize),
) {
    for t0 in (0..n_tok).step_by(chunk) {
        let t1 = (t0 + chunk).min(n_tok);
        for i in 0..rows.div_ceil(STRIP) {
            let st = strip(i);
            for h in 0..STRIP / HALF {
                let r0 = i * STRIP + h * HALF;
                if r0 >= rows {
                    break;
                }
                let nr = HALF.min(rows - r0);
                let mut t = t0;
                while t < t1 {
                    let (sums, n) = pass(&st, h, t, t1);
                    for (j, v) in sums.iter().take(n).enumerate() {
                        store_sums8(out, t + j, r0, nr, *v);
                    }
                    t += n;
                }
            }
        }
    }
}

/// Tokens `t..t + T` times half `h` of one strip over every sub-block, from
/// their packed records `recs` (`nsub` sub-blocks, interleaved: see
/// `PackedActs`): register `j` holds token `t + j`'s eight row sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_tokens<const T: usize, const L: usize, const GROUP: usize, const MIN: bool>(
    st: &Strip<'_>,
    h: usize,
    recs: &[u32],
    nsub: usize,
) -> [__m256; T] {
    // A record: L words of values, the correction, the scale, the minimum
    // factor, padding.
    let rec = rec_words(4 * L);
    assert!(st.lines.len() == nsub * L && st.dw.len() == nsub * STRIP && h < 2);
    assert!(
        st.dm.len() == nsub * STRIP
            && L.is_multiple_of(GROUP)
            && L.is_multiple_of(PASS_LINES)
            && recs.len() == nsub * T * rec
    );
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for q in 0..nsub {
        let lines = &st.lines[q * L..(q + 1) * L];
        // The sub-block's T records, one after the other.
        let sub = &recs[q * T * rec..(q + 1) * T * rec];
        // Token j's four activation bytes k of the sub-block, as one i32.
        let quad = |j: usize, k: usize| sub[j * rec + k] as i32;
        // Half `h` of line `k` of the sub-block.
        let half_line = |k: usize| {
            // SAFETY: bytes 32h..32h + 32 of a 64-byte line aligned to 64
            // (h < 2), so 32 readable bytes aligned to 32.
            unsafe { _mm256_load_si256(lines[k].0.as_ptr().add(HALF * 4 * h).cast()) }
        };
        let mut isum = [_mm256_setzero_si256(); T];
        for (j, s) in isum.iter_mut().enumerate() {
            *s = _mm256_set1_epi32(sub[j * rec + L] as i32);
        }
        // Four lines at a time serve every token; pairs summed in i16 by
        // at most four lines (a `GROUP` of eight takes two `madd`s per
        // block).
        let group = GROUP.min(PASS_LINES);
        for g in (0..L).step_by(PASS_LINES) {
            let mut wl = [_mm256_setzero_si256(); PASS_LINES];
            for (k, v) in wl.iter_mut().enumerate() {
                *v = half_line(g + k);
            }
            for (j, s) in isum.iter_mut().enumerate() {
                for h0 in (0..PASS_LINES).step_by(group) {
                    let mut s16 = _mm256_setzero_si256();
                    for (k, wu) in wl.iter().enumerate().skip(h0).take(group) {
                        let p = _mm256_maddubs_epi16(*wu, _mm256_set1_epi32(quad(j, g + k)));
                        s16 = _mm256_add_epi16(s16, p);
                    }
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(s16, ones));
                }
            }
        }
        // SAFETY: `dw` and `dm` hold 16 floats for sub-block `q` (asserted
        // above); the half's eight start at 8h; the loads are unaligned.
        // (Loaded only now: registers are short while the sums run.)
        let (wd, wm) = unsafe {
            (
                _mm256_loadu_ps(st.dw.as_ptr().add(q * STRIP + HALF * h)),
                _mm256_loadu_ps(st.dm.as_ptr().add(q * STRIP + HALF * h)),
            )
        };
        for (j, (acc, s)) in acc.iter_mut().zip(isum).enumerate() {
            let (da, dasa) = (
                f32::from_bits(sub[j * rec + L + 1]),
                f32::from_bits(sub[j * rec + L + 2]),
            );
            let scale = _mm256_mul_ps(wd, _mm256_set1_ps(da));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, *acc);
            if MIN {
                *acc = _mm256_fmadd_ps(wm, _mm256_set1_ps(dasa), *acc);
            }
        }
    }
    acc
}

/// The 16-value K-quants without minimums (Q3_K, Q6_K) in strips, each
/// super-block summed in integers as ggml sums it: per sub-block and token,
/// the four lines' `maddubs` and the offset correction (`prepare_pair_acts`)
/// added in i16 (starting from the correction, every partial sum is eight
/// products `(q or −off)·a` with |q|, off ≤ 32 and |a| ≤ 127 — Q8_K values
/// are never −128 — so |·| ≤ 8·32·127 < 2¹⁵: exact), one `madd` by the row's
/// integer scale into the super-block's i32 sum (|·| ≤ 16·2·32512·128 <
/// 2³¹), then per
/// super-block `acc + isum·(d·d_a)` with a separate product and sum, as the
/// scalar twin: the same bits. Per 16 values × 8 rows and token this is
/// four `maddubs`, one `madd` and five adds; the float-per-sub-block order
/// of the other types (a second `madd`, a conversion, a scale product and an
/// FMA more) ran Q6_K at 0.98× ik_llama.cpp's AVX2 prefill.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_strips_int<W: 'static>(
    w: &[W],
    off: i32,
    unpack: impl UnpackInt<W> + 'static,
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    let nsub = nb * K16_SUBS;
    with_int_strips(w, rows, nb, unpack, |s| {
        prepare_pair_acts(a, off, s);
        let (da, corr) = (&s.da[..], &s.corr[..]);
        let chunk = chunk_tokens(nb * std::mem::size_of::<BlockQ8K>(), TG_INT);
        let strip = |i: usize| s.strip_int(i, nsub);
        walk_halves(rows, n_tok, chunk, out, strip, |st, h, t, t1| {
            let mut sums = [_mm256_setzero_ps(); TG_Q4];
            // A chunk's last tokens in twos, then one.
            let n = if t + TG_INT <= t1 {
                sums[..TG_INT].copy_from_slice(&half_tokens_int::<TG_INT>(st, h, a, (da, corr), t));
                TG_INT
            } else if t + 2 <= t1 {
                sums[..2].copy_from_slice(&half_tokens_int::<2>(st, h, a, (da, corr), t));
                2
            } else {
                [sums[0]] = half_tokens_int::<1>(st, h, a, (da, corr), t);
                1
            };
            (sums, n)
        });
    })
}

/// [`gemm_strips_int`]'s tokens `t..t + T` times half `h` of one strip:
/// register `j` holds token `t + j`'s eight row sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_tokens_int<const T: usize>(
    st: &Strip<'_>,
    h: usize,
    a: &QuantActs<'_, BlockQ8K>,
    (da, corr): (&[f32], &[i32]),
    t: usize,
) -> [__m256; T] {
    let (nb, nsub) = (a.nb, a.nb * K16_SUBS);
    assert!(st.lines.len() == nsub * K16_LINES && st.dw.len() == nsub * STRIP && h < 2);
    assert!(st.isc.len() == nsub * STRIP);
    // Each token's rows, scales and corrections sliced once per call and
    // per super-block, so that the sub-block loop holds no index arithmetic
    // and no bounds checks (with them, a multiply by the block size and four
    // checks per sub-block, a third of its instructions were scalar and four
    // tokens spilled).
    let rows: [&[BlockQ8K]; T] = std::array::from_fn(|j| &a.row(t + j)[..nb]);
    let da: [&[f32]; T] = std::array::from_fn(|j| &da[(t + j) * nsub..(t + j + 1) * nsub]);
    let corr: [&[i32]; T] = std::array::from_fn(|j| &corr[(t + j) * nsub..(t + j + 1) * nsub]);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let lines: &[Line; K16_SUBS * K16_LINES] = st.lines
            [b * K16_SUBS * K16_LINES..(b + 1) * K16_SUBS * K16_LINES]
            .try_into()
            .expect("strip: a super-block's lines");
        let isc: &[i32; K16_SUBS * STRIP] = st.isc
            [b * K16_SUBS * STRIP..(b + 1) * K16_SUBS * STRIP]
            .try_into()
            .expect("strip: a super-block's scales");
        let qs: [&[i8; QK_K]; T] = std::array::from_fn(|j| &rows[j][b].qs);
        let corr: [&[i32; K16_SUBS]; T] = std::array::from_fn(|j| {
            corr[j][b * K16_SUBS..(b + 1) * K16_SUBS]
                .try_into()
                .expect("strip: a super-block's corrections")
        });
        let mut isum = [_mm256_setzero_si256(); T];
        for s in 0..K16_SUBS {
            let wl: [__m256i; K16_LINES] = std::array::from_fn(|k| {
                // SAFETY: bytes 32h..32h + 32 of a 64-byte line aligned to 64
                // (h < 2), so 32 readable bytes aligned to 32.
                unsafe {
                    _mm256_load_si256(lines[s * K16_LINES + k].0.as_ptr().add(HALF * 4 * h).cast())
                }
            });
            let sc = &isc[s * STRIP + HALF * h..s * STRIP + HALF * h + HALF];
            // SAFETY: `sc` is 8 readable i32; the load is unaligned.
            let sc = unsafe { _mm256_loadu_si256(sc.as_ptr().cast()) };
            for (j, is) in isum.iter_mut().enumerate() {
                let mut s16 = _mm256_set1_epi32(corr[j][s]);
                for (k, wl) in wl.iter().enumerate() {
                    let v = &qs[j][16 * s + 4 * k..16 * s + 4 * k + 4];
                    let quad = i32::from_le_bytes([v[0] as u8, v[1] as u8, v[2] as u8, v[3] as u8]);
                    let p = _mm256_maddubs_epi16(*wl, _mm256_set1_epi32(quad));
                    s16 = _mm256_add_epi16(s16, p);
                }
                *is = _mm256_add_epi32(*is, _mm256_madd_epi16(s16, sc));
            }
        }
        // SAFETY: `dw` holds 16 floats for sub-block 16b (asserted above);
        // the half's eight start at 8h; the load is unaligned.
        let wd = unsafe { _mm256_loadu_ps(st.dw.as_ptr().add(b * K16_SUBS * STRIP + HALF * h)) };
        for (j, (acc, s)) in acc.iter_mut().zip(isum).enumerate() {
            let scale = _mm256_mul_ps(wd, _mm256_set1_ps(da[j][b * K16_SUBS]));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(_mm256_cvtepi32_ps(s), scale));
        }
    }
    acc
}

/// Q6_K weights times Q8_K activations in strips (prefill of at least
/// [`MIN_TOKENS`](crate::quant::x86::strips::MIN_TOKENS) tokens), each super-block summed in integers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q6_k(
    w: &[BlockQ6K],
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    gemm_strips_int(w, 32, q6_k_int, a, out)
}

/// Q3_K weights times Q8_K activations in strips (prefill of at least
/// [`MIN_TOKENS`](crate::quant::x86::strips::MIN_TOKENS) tokens), each super-block summed in integers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q3_k(
    w: &[BlockQ3K],
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    gemm_strips_int(w, 4, q3_k_int, a, out)
}

/// Q2_K weights times Q8_K activations in strips (prefill), each
/// super-block summed in integers as the scalar twin (and ggml) sums it:
/// per 16-value sub-block and token the four lines' `maddubs` added in i16
/// (values 0..=3: |·| ≤ 4·2·3·127), one `madd` by the row's scale into the
/// super-block's i32 sum; the minimums' sum `Σ m·bsum` by one `madd` per
/// two sub-blocks (the rows' minimum pairs against the token's adjacent
/// `bsums`); then per super-block `acc + ((d·d_a)·isum − (dmin·d_a)·imin)`
/// with separate products, as the twin: the same bits. The float work per
/// sub-block of [`gemm_strips`] (a conversion, a scale product and two
/// FMAs per four lines) ran the Q2_K mix at 0.74–0.93× ik_llama.cpp's AVX2
/// prefill.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q2_k(
    w: &[BlockQ2K],
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    let nsub = nb * K16_SUBS;
    with_q2_k_int_strips(w, rows, nb, |s| {
        let chunk = chunk_tokens(nb * std::mem::size_of::<BlockQ8K>(), TG_Q2K);
        let strip = |i: usize| s.strip_q2_k_int(i, nsub);
        walk_halves(rows, n_tok, chunk, out, strip, |st, h, t, t1| {
            let mut sums = [_mm256_setzero_ps(); TG_Q4];
            let n = if t + TG_Q2K <= t1 {
                sums[..TG_Q2K].copy_from_slice(&half_tokens_q2_k::<TG_Q2K>(st, h, a, t));
                TG_Q2K
            } else if t + 2 <= t1 {
                sums[..2].copy_from_slice(&half_tokens_q2_k::<2>(st, h, a, t));
                2
            } else {
                [sums[0]] = half_tokens_q2_k::<1>(st, h, a, t);
                1
            };
            (sums, n)
        });
    })
}

/// [`gemm_q2_k`]'s tokens `t..t + T` times half `h` of one strip: register
/// `j` holds token `t + j`'s eight row sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_tokens_q2_k<const T: usize>(
    st: &Strip<'_>,
    h: usize,
    a: &QuantActs<'_, BlockQ8K>,
    t: usize,
) -> [__m256; T] {
    let nb = a.nb;
    let nsub = nb * K16_SUBS;
    assert!(st.lines.len() == nsub * K16_LINES && st.dw.len() == nsub * STRIP && h < 2);
    assert!(st.dm.len() == nsub * STRIP && st.isc.len() == nsub * STRIP);
    assert!(st.imin.len() == nsub / 2 * STRIP);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // Token `t + i`'s block `b`.
        let act: [&BlockQ8K; T] = std::array::from_fn(|i| &a.row(t + i)[b]);
        let mut isum = [_mm256_setzero_si256(); T];
        let mut imin = [_mm256_setzero_si256(); T];
        for j in 0..K16_SUBS {
            let q = b * K16_SUBS + j;
            let lines = &st.lines[q * K16_LINES..(q + 1) * K16_LINES];
            let wl: [__m256i; K16_LINES] = std::array::from_fn(|k| {
                // SAFETY: bytes 32h..32h + 32 of a 64-byte line aligned to 64
                // (h < 2), so 32 readable bytes aligned to 32.
                unsafe { _mm256_load_si256(lines[k].0.as_ptr().add(HALF * 4 * h).cast()) }
            });
            // SAFETY: `isc` holds 16 i32 for sub-block `q` (asserted above);
            // the half's eight start at 8h; the load is unaligned.
            let sc =
                unsafe { _mm256_loadu_si256(st.isc.as_ptr().add(q * STRIP + HALF * h).cast()) };
            for (i, s) in isum.iter_mut().enumerate() {
                let qs = &act[i].qs[16 * j..16 * j + 16];
                let mut s16 = _mm256_setzero_si256();
                for (k, wl) in wl.iter().enumerate() {
                    let quad = i32::from_le_bytes(std::array::from_fn(|l| qs[4 * k + l] as u8));
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(*wl, _mm256_set1_epi32(quad)));
                }
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(s16, sc));
            }
            if j < K16_SUBS / 2 {
                let p = b * K16_SUBS / 2 + j;
                // SAFETY: `imin` holds 16 i32 for pair `p` of the strip
                // (asserted above); the half's eight start at 8h; the load is
                // unaligned.
                let mp = unsafe {
                    _mm256_loadu_si256(st.imin.as_ptr().add(p * STRIP + HALF * h).cast())
                };
                for (i, m) in imin.iter_mut().enumerate() {
                    let bs = &act[i].bsums;
                    let pair = pair_i16(bs[2 * j], bs[2 * j + 1]);
                    *m = _mm256_add_epi32(*m, _mm256_madd_epi16(mp, _mm256_set1_epi32(pair)));
                }
            }
        }
        // SAFETY: `dw` and `dm` hold 16 floats for sub-block 16b (asserted
        // above); the half's eight start at 8h; the loads are unaligned.
        let (wd, wm) = unsafe {
            let at = b * K16_SUBS * STRIP + HALF * h;
            (
                _mm256_loadu_ps(st.dw.as_ptr().add(at)),
                _mm256_loadu_ps(st.dm.as_ptr().add(at)),
            )
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            let da = _mm256_set1_ps(act[i].d);
            let (dall, dmin) = (_mm256_mul_ps(da, wd), _mm256_mul_ps(da, wm));
            let t = _mm256_sub_ps(
                _mm256_mul_ps(dall, _mm256_cvtepi32_ps(isum[i])),
                _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(imin[i])),
            );
            *acc = _mm256_add_ps(*acc, t);
        }
    }
    acc
}

macro_rules! strip_entry {
    (
        $name:ident, $blk:ty, $act:ty, $v:expr, $s:expr, $group:expr, $min:expr, $off:expr,
        $unpack:ident
    ) => {
        #[doc = concat!(
                            "", stringify!($blk), " weights times ", stringify!($act),
                            " activations in strips (prefill of at least [`MIN_TOKENS`](crate::quant::x86::strips::MIN_TOKENS) tokens)."
                        )]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_, $act>, out: &mut OutTile<'_>) {
            gemm_strips::<_, _, $v, $s, { $v / 4 }, $group, $min>(
                w, $off, $unpack, a, out,
            )
        }
    };
}

strip_entry!(
    gemm_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    32,
    1,
    8,
    false,
    8,
    q4_0_unsigned
);
strip_entry!(
    gemm_q4_1,
    BlockQ4_1,
    BlockQ8_0,
    32,
    1,
    8,
    true,
    0,
    q4_1_unsigned
);
strip_entry!(
    gemm_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    32,
    1,
    4,
    false,
    16,
    q5_0_unsigned
);
strip_entry!(
    gemm_q5_1,
    BlockQ5_1,
    BlockQ8_0,
    32,
    1,
    4,
    true,
    0,
    q5_1_unsigned
);
strip_entry!(
    gemm_q4_k,
    BlockQ4K,
    BlockQ8K,
    32,
    8,
    8,
    true,
    0,
    q4_k_unsigned
);
strip_entry!(
    gemm_q5_k,
    BlockQ5K,
    BlockQ8K,
    32,
    8,
    4,
    true,
    0,
    q5_k_unsigned
);
