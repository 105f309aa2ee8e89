//! Prompts of the signed 32-value types on AVX2 (Q8_0, IQ4_NL, IQ4_XS's
//! runs of 32) with i16 lines (`x86::strip_words`): per line (four values
//! of eight rows) and token, one 64-bit broadcast of the token's four
//! activations as i16 and two `vpmaddwd`s, one per half line; per run and
//! token one `vphaddd` puts the eight rows' exact sums in order, then the
//! same float step as every strip kernel (`acc + float(sum)·(d_w·d_a)`): the
//! bits of the AVX-512 strips and the AMX tiles (tested).
//!
//! Why not the sign trick the unsigned types' `maddubs` would suggest (per
//! line and token a broadcast, `vpsignb`, `vpmaddubsw(|w|, ·)`, `vpmaddwd`
//! against ones and an add, `|w|` repacked beside `w`): on AMD Zen 4 the
//! sign and both multiplies sit on the two multiply pipes, and its block of
//! eight rows and one token ran 16.6–17.2 cycles in an asm loop with the
//! operands in L1, the rate the kernel had in pp512. Here a line is two
//! `vpmaddwd`s and two adds for the same 32 products: 13.7–14.2 cycles with
//! four tokens per pass (see [`TG`]), and exact for every byte, −128
//! included. The lines are as many as the sign trick's `w` and `|w|`.

use std::arch::x86_64::*;

use super::super::tile::{OutTile, QuantActs};
use super::super::types::{BlockIq4Nl, BlockIq4Xs, BlockQ8_0, BlockQ8K, QK};
use super::super::x86::strip_words::{HALF_LINES, WORD_LINES, with_word_strips};
use super::super::x86::strips::{
    Line, STRIP, Strip, SubActs, Unpack, chunk_tokens, iq4_nl_signed, iq4_xs_signed, q8_0_signed,
    rec_words_wide,
};
use super::strip::{TG_Q4, walk_halves};

/// Rows per register: half a strip.
const HALF: usize = 8;

/// Tokens per pass over half a strip: each half line is loaded once for
/// them. Per pass a half strip's lines stream from L1 or L2 (`ffn_down` of
/// the 124M shape: 48 KiB per half), and at two tokens that stream, not the
/// multiplies, set the pace (an asm copy of the loop, Zen 4: 14.9–15.1
/// cycles per block and token at two, 13.7–14.2 at four, 12.3–13.5 with
/// the same lines over and over).
const TG: usize = 4;

/// Bytes per packed record ([`rec_words_wide`] of a run of 32): the stride
/// `token!`'s asm writes as the literal 80.
const REC_BYTES: usize = 4 * rec_words_wide(QK);
const _: () = assert!(
    REC_BYTES == 80 && TG == 4,
    "token!'s record stride and line4!'s four tokens"
);

/// Line `k` of a block for four tokens, in asm: the line's two halves (at
/// `p + 64k`) loaded once, then per token `j` its four activations of the
/// line (i16, at `r + 80j + 8k`) broadcast and two `vpmaddwd`s added into
/// its two sums. (Written as intrinsics, LLVM hoisted a block's sixteen
/// half lines ahead of the multiplies and spilled them: 0.8× the sign
/// trick.)
macro_rules! line4 {
    (first) => {
        concat!(
            "vmovdqa {wl}, ymmword ptr [{p}]\n",
            "vmovdqa {wh}, ymmword ptr [{p} + 32]\n",
            token!(first 0, "{l0}", "{h0}"),
            token!(first 1, "{l1}", "{h1}"),
            token!(first 2, "{l2}", "{h2}"),
            token!(first 3, "{l3}", "{h3}"),
        )
    };
    ($k:literal) => {
        concat!(
            "vmovdqa {wl}, ymmword ptr [{p} + 64*",
            $k,
            "]\n",
            "vmovdqa {wh}, ymmword ptr [{p} + 64*",
            $k,
            " + 32]\n",
            token!(0, $k, "{l0}", "{h0}"),
            token!(1, $k, "{l1}", "{h1}"),
            token!(2, $k, "{l2}", "{h2}"),
            token!(3, $k, "{l3}", "{h3}"),
        )
    };
}

/// Token `j`'s part of [`line4`]'s line `k` (line 0, `first`: the products
/// start the sums, two adds fewer per token, 2 of 16 per block and token).
macro_rules! token {
    (first $j:literal, $lo:literal, $hi:literal) => {
        concat!(
            "vpbroadcastq {a}, qword ptr [{r} + 80*",
            $j,
            "]\n",
            "vpmaddwd ",
            $lo,
            ", {wl}, {a}\n",
            "vpmaddwd ",
            $hi,
            ", {wh}, {a}\n",
        )
    };
    ($j:literal, $k:literal, $lo:literal, $hi:literal) => {
        concat!(
            "vpbroadcastq {a}, qword ptr [{r} + 80*",
            $j,
            " + 8*",
            $k,
            "]\n",
            "vpmaddwd {t}, {wl}, {a}\n",
            "vpaddd ",
            $lo,
            ", ",
            $lo,
            ", {t}\n",
            "vpmaddwd {t}, {wh}, {a}\n",
            "vpaddd ",
            $hi,
            ", ",
            $hi,
            ", {t}\n",
        )
    };
}

/// Signed 32-value weights (`S` runs of 32 per block, as `unpack` gives
/// them) times activations `a` in i16 strips.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_words<W: 'static, A: SubActs, const S: usize>(
    w: &[W],
    unpack: impl Unpack<W, QK, S> + 'static,
    a: &QuantActs<'_, A>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    assert!(A::VALUES == S * QK, "strip gemm: activation blocks");
    let nrun = nb * S;
    with_word_strips(w, rows, nb, unpack, |s| {
        s.pack_acts_words::<A, QK>(a, TG);
        let acts = s.packed_acts();
        let chunk = chunk_tokens(nrun * REC_BYTES, TG_Q4);
        let strip = |i: usize| s.strip(i, nrun, WORD_LINES);
        walk_halves(rows, n_tok, chunk, out, strip, |st, h, t, t1| {
            let mut sums = [_mm256_setzero_ps(); TG_Q4];
            let n = if t + TG > t1 {
                [sums[0]] = half_one(st, h, acts.tokens::<1>(t), nrun);
                1
            } else {
                sums[..TG].copy_from_slice(&half_four(st, h, acts.tokens::<TG>(t), nrun));
                TG
            };
            (sums, n)
        });
    })
}

/// Q8_0 weights times Q8_0 activations in i16 strips (prefill from
/// [`MIN_TOKENS_TRANSPOSED`](crate::quant::x86::strips::MIN_TOKENS_TRANSPOSED)
/// tokens).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_q8_0(
    w: &[BlockQ8_0],
    a: &QuantActs<'_, BlockQ8_0>,
    out: &mut OutTile<'_>,
) {
    gemm_words::<_, _, 1>(w, q8_0_signed, a, out)
}

/// IQ4_NL weights (their signed table values) times Q8_0 activations in
/// i16 strips (prefill from
/// [`MIN_TOKENS_FEW`](crate::quant::x86::strips::MIN_TOKENS_FEW) tokens).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_iq4_nl(
    w: &[BlockIq4Nl],
    a: &QuantActs<'_, BlockQ8_0>,
    out: &mut OutTile<'_>,
) {
    gemm_words::<_, _, 1>(w, iq4_nl_signed, a, out)
}

/// IQ4_XS weights (eight runs of 32 signed table values per block, each
/// scaled by `d·ls`) times Q8_K activations in i16 strips (prefill from
/// [`MIN_TOKENS_FEW`](crate::quant::x86::strips::MIN_TOKENS_FEW) tokens).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_iq4_xs(
    w: &[BlockIq4Xs],
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    gemm_words::<_, _, 8>(w, iq4_xs_signed, a, out)
}

/// Half `h` of strip `st`'s lines of run `b` (of `nb`).
#[inline(always)]
fn half_lines<'s>(st: &Strip<'s>, h: usize, b: usize, nb: usize) -> &'s [Line] {
    let at = (h * nb + b) * HALF_LINES;
    &st.lines[at..at + HALF_LINES]
}

/// The float step of block `b` for each token: `acc + float(sum)·(d_w·d_a)`
/// with the eight rows' sums put in order by adding the pairs of rows 0, 1,
/// 4, 5 (`lo`) and of rows 2, 3, 6, 7 (`hi`).
#[inline(always)]
fn float_step<const T: usize>(
    st: &Strip<'_>,
    (h, b): (usize, usize),
    sub: &[u32],
    (lo, hi): ([__m256i; T], [__m256i; T]),
    acc: &mut [__m256; T],
) {
    // A record: 16 words of i16 pairs, the correction, the scale, two more.
    let (rec, scale_at) = (rec_words_wide(QK), QK / 2 + 1);
    let wd: &[f32; HALF] = st.dw[b * STRIP + HALF * h..][..HALF]
        .try_into()
        .expect("strip: a block's scales");
    // SAFETY: AVX2, FMA (the callers' features); `wd` is 8 readable floats,
    // loaded unaligned.
    unsafe {
        let wd = _mm256_loadu_ps(wd.as_ptr());
        for (j, acc) in acc.iter_mut().enumerate() {
            // Rows (0, 1, 2, 3 | 4, 5, 6, 7).
            let s = _mm256_hadd_epi32(lo[j], hi[j]);
            let da = f32::from_bits(sub[j * rec + scale_at]);
            let scale = _mm256_mul_ps(wd, _mm256_set1_ps(da));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, *acc);
        }
    }
}

/// Tokens `t..t + 4` times half `h` of one strip over its `nb` runs of 32, from
/// their packed records `recs` (`x86::strips::PackedActs`, i16 values, a
/// group of four): register `j` holds token `t + j`'s eight row sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_four(st: &Strip<'_>, h: usize, recs: &[u32], nb: usize) -> [__m256; TG] {
    let rec = rec_words_wide(QK);
    assert!(st.lines.len() == nb * WORD_LINES && st.dw.len() == nb * STRIP && h < 2);
    assert!(recs.len() == nb * TG * rec);
    let mut acc = [_mm256_setzero_ps(); TG];
    for b in 0..nb {
        let lines = half_lines(st, h, b, nb);
        let sub = &recs[b * TG * rec..(b + 1) * TG * rec];
        // Per token the sums of rows 0, 1, 4, 5 (two i32 each) and of rows
        // 2, 3, 6, 7.
        let (l0, l1, l2, l3, h0, h1, h2, h3);
        // SAFETY: reads the block's eight half lines (`lines`: 8 × 64 bytes
        // from `p`, aligned to 64) and words 0..16 of each of its four
        // records (`sub`: 4 × 80 bytes from `r`; 16 < rec); AVX2 is enabled
        // here; registers only otherwise.
        unsafe {
            std::arch::asm!(
                line4!(first), line4!(1), line4!(2), line4!(3),
                line4!(4), line4!(5), line4!(6), line4!(7),
                p = in(reg) lines.as_ptr(),
                r = in(reg) sub.as_ptr(),
                wl = out(ymm_reg) _,
                wh = out(ymm_reg) _,
                a = out(ymm_reg) _,
                t = out(ymm_reg) _,
                l0 = out(ymm_reg) l0,
                h0 = out(ymm_reg) h0,
                l1 = out(ymm_reg) l1,
                h1 = out(ymm_reg) h1,
                l2 = out(ymm_reg) l2,
                h2 = out(ymm_reg) h2,
                l3 = out(ymm_reg) l3,
                h3 = out(ymm_reg) h3,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        float_step(
            st,
            (h, b),
            sub,
            ([l0, l1, l2, l3], [h0, h1, h2, h3]),
            &mut acc,
        );
    }
    acc
}

/// [`half_four`] for one token (a chunk's last tokens).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_one(st: &Strip<'_>, h: usize, recs: &[u32], nb: usize) -> [__m256; 1] {
    let rec = rec_words_wide(QK);
    assert!(st.lines.len() == nb * WORD_LINES && st.dw.len() == nb * STRIP && h < 2);
    assert!(recs.len() == nb * rec);
    let mut acc = [_mm256_setzero_ps(); 1];
    for b in 0..nb {
        let lines = half_lines(st, h, b, nb);
        let sub = &recs[b * rec..(b + 1) * rec];
        let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (k, line) in lines.iter().enumerate() {
            let four: &[u32; 2] = sub[2 * k..2 * k + 2].try_into().expect("a record");
            let p = line.0.as_ptr();
            // SAFETY: the two 32-byte halves of a 64-byte line aligned to
            // 64; `four` is 8 readable bytes, read unaligned.
            let (wl, wh, a) = unsafe {
                (
                    _mm256_load_si256(p.cast()),
                    _mm256_load_si256(p.add(32).cast()),
                    _mm256_set1_epi64x(four.as_ptr().cast::<i64>().read_unaligned()),
                )
            };
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(wl, a));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(wh, a));
        }
        float_step(st, (h, b), sub, ([lo], [hi]), &mut acc);
    }
    acc
}
