//! Prefill strips of the 32-value types on `neon+i8mm` (ARMv8.6 int8
//! matrix multiply: Neoverse V1/N2 and later, Apple M2 and later, Snapdragon
//! X): `smmla` multiplies two rows of eight values by two tokens' eight
//! values, 32 products into a 2 × 2 block of i32, twice the products of an
//! `sdot`. The strips of `strip` otherwise: eight rows and four tokens per
//! pass, repacked per call, from [`MIN_TOKENS`] tokens.
//!
//! A strip's block is four columns of eight values, each column four
//! registers of two rows (row `2p` then `2p + 1`, eight values each); a token
//! group's block the same with two registers of two tokens. A block of eight
//! rows by four tokens is 32 `smmla`s into eight 2 × 2 blocks, then per
//! block one conversion, one scale product and one FMA, with the scales
//! laid out as the 2 × 2 blocks are (`d_w` of rows `2p, 2p, 2p + 1, 2p + 1`
//! times `d_a` of tokens `2q, 2q + 1, 2q, 2q + 1`). Each (row, token) output
//! is accumulated block by block in the x86 and `sdot` strips' order: the
//! same bits (tested). Not timed: qemu only.

use std::arch::aarch64::*;
use std::arch::asm;

use super::blocks::Q32Block;
use super::h2f;
use super::quant::QBlock;
use super::strip::{
    CHUNK_BYTES, GroupSums, ROWS, SCRATCH, Scratch, TG, prefill_entries, reset, walk,
};
use crate::quant::tile::{OutTile, QuantActs, tokens_within};
use crate::quant::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};

pub(in crate::quant) use super::strip::MIN_TOKENS;

/// Columns of eight values per block.
const COLS: usize = QK / 8;

/// Row pairs per strip, token pairs per group.
pub(super) const PAIRS: usize = ROWS / 2;
pub(super) const TPAIRS: usize = TG / 2;

/// Bytes of a strip's block and of a token group's block.
const STRIP_BLOCK: usize = COLS * ROWS * 8;
const GROUP_BLOCK: usize = COLS * TG * 8;

/// Floats per strip block (`d` and `m` in the 2 × 2 layout) and per group
/// block (`d_a` and `d_a·Σa`).
const STRIP_FLOATS: usize = 2 * PAIRS * 4;
const GROUP_FLOATS: usize = 2 * TPAIRS * 4;

/// `acc` plus the 2 × 2 products of `w`'s two rows and `a`'s two tokens
/// (eight values each): lanes (row 0, token 0), (0, 1), (1, 0), (1, 1).
///
/// # Safety
/// The CPU must have the int8 matrix-multiply extension.
#[inline(always)]
pub(super) unsafe fn smmla(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller guarantees i8mm; SMMLA reads and writes only the
    // operand registers.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Two blocks' values (`x`, `y`: values 0–15, 16–31 each) as four columns of
/// both: column `c` is `x`'s values `8c .. 8c + 8` then `y`'s.
#[inline(always)]
fn pair_columns(x: [int8x16_t; 2], y: [int8x16_t; 2]) -> [int8x16_t; 4] {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        let (x, y) = (
            x.map(|v| vreinterpretq_u64_s8(v)),
            y.map(|v| vreinterpretq_u64_s8(v)),
        );
        [
            vzip1q_u64(x[0], y[0]),
            vzip2q_u64(x[0], y[0]),
            vzip1q_u64(x[1], y[1]),
            vzip2q_u64(x[1], y[1]),
        ]
        .map(|v| vreinterpretq_s8_u64(v))
    }
}

/// Two rows' (or tokens') values `x`, `y` (register `r` values `16r ..
/// 16r + 16`) as pair `p` of `pairs`: column `c` (values `8c .. 8c + 8` of
/// both, [`pair_columns`]) at `dst[(c·pairs + p)·16..]`.
#[inline(always)]
pub(super) fn put_pair<const R: usize>(
    x: [int8x16_t; R],
    y: [int8x16_t; R],
    dst: &mut [i8],
    p: usize,
    pairs: usize,
) {
    for r in (0..R).step_by(2) {
        let cols = pair_columns([x[r], x[r + 1]], [y[r], y[r + 1]]);
        for (k, v) in cols.into_iter().enumerate() {
            let at = ((2 * r + k) * pairs + p) * 16;
            // SAFETY: base NEON; the slice below is 16 bytes (bounds-checked);
            // the store is unaligned.
            unsafe { vst1q_s8(dst[at..at + 16].as_mut_ptr(), v) };
        }
    }
}

/// A strip's 2 × 2 blocks `[p][q]` (rows `2p, 2p + 1` by tokens `2q,
/// 2q + 1`) as [`GroupSums`].
#[inline(always)]
pub(super) fn pairs_by_token(sums: [[float32x4_t; TPAIRS]; PAIRS]) -> GroupSums {
    let mut out = [[0f32; ROWS]; TG];
    for (p, pair) in sums.into_iter().enumerate() {
        for (q, v) in pair.into_iter().enumerate() {
            let mut l = [0f32; 4];
            // SAFETY: base NEON; a 16-byte store into 4 f32s.
            unsafe { vst1q_f32(l.as_mut_ptr(), v) };
            for (k, x) in l.into_iter().enumerate() {
                out[2 * q + k % 2][2 * p + k / 2] = x;
            }
        }
    }
    out
}

/// Repacks rows `0..rows` of `w` into strips of [`ROWS`] (the last padded
/// with zero rows).
fn repack_weights<W: Q32Block>(w: &[W], rows: usize, nb: usize, s: &mut Scratch) {
    let strips = rows.div_ceil(ROWS);
    reset(&mut s.wv, strips * nb * STRIP_BLOCK, 0);
    reset(&mut s.wd, strips * nb * STRIP_FLOATS, 0.0);
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    let zero = unsafe { [vdupq_n_s8(0); 2] };
    for st in 0..strips {
        for b in 0..nb {
            let at = (st * nb + b) * STRIP_BLOCK;
            let fl = &mut s.wd[(st * nb + b) * STRIP_FLOATS..][..STRIP_FLOATS];
            let row = |i: usize| {
                let r = st * ROWS + i;
                (r < rows).then(|| &w[r * nb + b])
            };
            for p in 0..PAIRS {
                let (x, y) = (row(2 * p), row(2 * p + 1));
                let (x_v, y_v) = (x.map_or(zero, |b| b.load()), y.map_or(zero, |b| b.load()));
                put_pair(x_v, y_v, &mut s.wv[at..at + STRIP_BLOCK], p, PAIRS);
                // `d` (then `m`) of rows 2p, 2p, 2p + 1, 2p + 1.
                for (k, blk) in [x, x, y, y].into_iter().enumerate() {
                    if let Some(blk) = blk {
                        fl[4 * p + k] = h2f(blk.scale());
                        fl[4 * PAIRS + 4 * p + k] = h2f(blk.min());
                    }
                }
            }
        }
    }
}

/// Packs tokens `t0..t1` of `a` into groups of [`TG`] (the last padded with
/// zero tokens of scale zero).
fn pack_acts(a: &QuantActs<'_>, t0: usize, t1: usize, min: bool, s: &mut Scratch) {
    let nb = a.nb;
    let groups = (t1 - t0).div_ceil(TG);
    reset(&mut s.av, groups * nb * GROUP_BLOCK, 0);
    reset(&mut s.ad, groups * nb * GROUP_FLOATS, 0.0);
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    let zero = unsafe { [vdupq_n_s8(0); 2] };
    for g in 0..groups {
        let tok = |j: usize| (t0 + g * TG + j < t1).then_some(t0 + g * TG + j);
        for b in 0..nb {
            let at = (g * nb + b) * GROUP_BLOCK;
            let fl = &mut s.ad[(g * nb + b) * GROUP_FLOATS..][..GROUP_FLOATS];
            for q in 0..TPAIRS {
                let (x, y) = (tok(2 * q), tok(2 * q + 1));
                let load = |t: Option<usize>| t.map_or(zero, |t| a.row(t)[b].load());
                put_pair(load(x), load(y), &mut s.av[at..at + GROUP_BLOCK], q, TPAIRS);
                // `d_a` (then `d_a·Σa`) of tokens 2q, 2q + 1, 2q, 2q + 1.
                for (k, t) in [x, y, x, y].into_iter().enumerate() {
                    if let Some(t) = t {
                        let d = h2f(a.row(t)[b].d);
                        fl[4 * q + k] = d;
                        if min {
                            fl[4 * TPAIRS + 4 * q + k] = d * f32::from(a.row_sums(t)[b]);
                        }
                    }
                }
            }
        }
    }
}

/// Strip `wv`/`wd` (eight rows) times token group `av`/`ad` (four tokens)
/// over `nb` blocks: `out[p][q]` holds rows `2p, 2p + 1` by tokens `2q,
/// 2q + 1` in the 2 × 2 layout.
///
/// # Safety
/// The CPU must have the int8 matrix-multiply extension.
#[inline(always)]
unsafe fn strip_group<const MIN: bool>(
    (wv, wd): (&[i8], &[f32]),
    (av, ad): (&[i8], &[f32]),
    nb: usize,
) -> [[float32x4_t; TPAIRS]; PAIRS] {
    assert!(wv.len() == nb * STRIP_BLOCK && wd.len() == nb * STRIP_FLOATS);
    assert!(av.len() == nb * GROUP_BLOCK && ad.len() == nb * GROUP_FLOATS);
    // SAFETY: i8mm as the caller guarantees; the rest is base NEON. Every
    // load reads 16 bytes inside the slices whose lengths are asserted above
    // (block `b < nb`, column `c < 4`, pair `p < 4`, `q < 2`).
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); TPAIRS]; PAIRS];
        for b in 0..nb {
            let (wb, xb) = (
                wv.as_ptr().add(b * STRIP_BLOCK),
                av.as_ptr().add(b * GROUP_BLOCK),
            );
            let mut s = [[vdupq_n_s32(0); TPAIRS]; PAIRS];
            for c in 0..COLS {
                let x = [vld1q_s8(xb.add(32 * c)), vld1q_s8(xb.add(32 * c + 16))];
                for (p, s) in s.iter_mut().enumerate() {
                    let w = vld1q_s8(wb.add(64 * c + 16 * p));
                    s[0] = smmla(s[0], w, x[0]);
                    s[1] = smmla(s[1], w, x[1]);
                }
            }
            let (fw, fa) = (
                wd.as_ptr().add(b * STRIP_FLOATS),
                ad.as_ptr().add(b * GROUP_FLOATS),
            );
            let da = [vld1q_f32(fa), vld1q_f32(fa.add(4))];
            let dasa = [vld1q_f32(fa.add(8)), vld1q_f32(fa.add(12))];
            for (p, (acc, s)) in acc.iter_mut().zip(s).enumerate() {
                let dw = vld1q_f32(fw.add(4 * p));
                let dm = vld1q_f32(fw.add(4 * PAIRS + 4 * p));
                for q in 0..TPAIRS {
                    // The scale `d_w·d_a`, then one FMA: the strips' order.
                    let scale = vmulq_f32(dw, da[q]);
                    acc[q] = vfmaq_f32(acc[q], vcvtq_f32_s32(s[q]), scale);
                    if MIN {
                        acc[q] = vfmaq_f32(acc[q], dm, dasa[q]);
                    }
                }
            }
        }
        acc
    }
}

/// The product in strips: the tile's rows repacked once, the tokens in
/// chunks of groups, every strip over each chunk.
///
/// # Safety
/// The CPU must have the int8 matrix-multiply extension.
#[inline(always)]
unsafe fn gemm_strips<W: Q32Block>(w: &[W], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    assert!(
        a.blocks.len() >= n_tok * nb,
        "strip gemm: activations too short"
    );
    if W::HAS_MIN {
        assert!(a.sums.len() >= n_tok * nb, "strip gemm: block sums missing");
    }
    let mut s = SCRATCH.take();
    repack_weights(w, rows, nb, &mut s);
    let chunk = tokens_within(CHUNK_BYTES, nb * (GROUP_BLOCK + 4 * GROUP_FLOATS) / TG, TG);
    let pack = |s: &mut Scratch, t0, t1| pack_acts(a, t0, t1, W::HAS_MIN, s);
    walk(&mut s, (rows, n_tok, chunk), out, pack, |s, st, g| {
        let strip = (
            &s.wv[st * nb * STRIP_BLOCK..][..nb * STRIP_BLOCK],
            &s.wd[st * nb * STRIP_FLOATS..][..nb * STRIP_FLOATS],
        );
        let group = (
            &s.av[g * nb * GROUP_BLOCK..][..nb * GROUP_BLOCK],
            &s.ad[g * nb * GROUP_FLOATS..][..nb * GROUP_FLOATS],
        );
        // SAFETY: i8mm, as the caller guarantees.
        let sums = unsafe {
            if W::HAS_MIN {
                strip_group::<true>(strip, group, nb)
            } else {
                strip_group::<false>(strip, group, nb)
            }
        };
        pairs_by_token(sums)
    });
    SCRATCH.set(s);
}

prefill_entries! {
    "neon,dotprod,i8mm", "neon+i8mm", MIN_TOKENS, gemm_strips, BlockQ8_0;
    BlockQ8_0 => prefill_q8_0, super::quant::gemm_q8_0_sdot;
    BlockQ4_0 => prefill_q4_0, super::quant::gemm_q4_0_sdot;
    BlockQ4_1 => prefill_q4_1, super::blocks::gemm_q4_1_sdot;
    BlockQ5_0 => prefill_q5_0, super::blocks::gemm_q5_0_sdot;
    BlockQ5_1 => prefill_q5_1, super::blocks::gemm_q5_1_sdot;
    BlockIq4Nl => prefill_iq4_nl, super::blocks::gemm_iq4_nl_sdot;
}

/// The `smmla` strips' product whatever the token count (for the tests).
///
/// # Safety
/// The CPU must have the int8 matrix-multiply extension.
#[cfg(test)]
#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn strips_any<W: Q32Block>(w: &[W], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_strips::<W>(w, a, out) }
}
