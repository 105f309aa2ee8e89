//! Prefill products of the `neon+dotprod` table with the weight rows in the
//! vector lanes ("strips"), the design of the x86 strips (`x86::strips`)
//! with NEON's by-element `sdot`: one instruction multiplies four values of
//! four rows (a register of the strip) by four values of one token, taken
//! from a lane of a register that holds four tokens' four values.
//!
//! The grouped kernels (`quant`, `blocks`) put a block's values across the
//! lanes, so every (row, token) pair pays two `sdot`s into a fresh
//! accumulator, a conversion, a scalar scale product and an FMA per block,
//! and the four lanes are summed at the end: about six instructions per 32
//! products. Here a block of eight rows by four tokens is 64 `sdot`s (each
//! row's exact block dot left in its lane), then one conversion, one scale
//! product and one FMA per four rows and token: about three instructions
//! per 32 products, and no horizontal sums.
//!
//! That needs the weights and the activations in lane order, which neither
//! has: per call the tile's rows are repacked into strips of [`ROWS`] rows
//! (each block as eight columns of four values, rows 0–3 then 4–7, values
//! as signed bytes, the scales as f32 beside) and the tokens into groups of
//! [`TG`] (each column as the four tokens' four values), both by 4 × 4
//! transpositions of 32-bit words in registers. The repack is one pass over
//! the call's weights that every token shares, so the table uses the strips
//! from [`MIN_TOKENS`] tokens on and the grouped kernels below (decode and
//! batched decode keep them too: their sums do not depend on the tokens
//! beside them).
//!
//! Each (row, token) output is `Σ_b (Σ w·a)·(d_w·d_a)` (plus `m·(d_a·Σa)`
//! per block for the types with a minimum) accumulated block by block in one
//! f32 lane, the x86 strips' order, so these are the same bits as the
//! AVX-512 and AMX strips (a test checks the order against a plain
//! reference). Not timed: these kernels have only run under qemu.

use std::arch::aarch64::*;
use std::arch::asm;
use std::cell::Cell;

use super::blocks::Q32Block;
use super::h2f;
use super::quant::QBlock;
use crate::quant::tile::{OutTile, QuantActs, tokens_within};
use crate::quant::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};

/// Products of fewer tokens take the grouped kernels. The repack is a pass
/// over the call's weights (a transposition per four rows and block); the
/// x86 strips, whose first repack was a generic walk of the same order of
/// cost, led from 32 tokens (see `x86::strips::MIN_TOKENS`). Not measured
/// on an Arm core: the same figure until it is.
pub(in crate::quant) const MIN_TOKENS: usize = 32;

/// Rows per strip: two registers of four rows.
pub(super) const ROWS: usize = 8;

/// Tokens per group: four tokens' four values fill one register.
pub(super) const TG: usize = 4;

/// Columns of four values per block.
const COLS: usize = QK / 4;

/// Bytes of a strip's block: eight columns of eight rows' four values.
const STRIP_BLOCK: usize = COLS * ROWS * 4;

/// Bytes of a token group's block: eight columns of four tokens' four values.
const GROUP_BLOCK: usize = COLS * TG * 4;

/// Activation bytes one chunk of token groups holds while every strip of the
/// call passes over it (from L2, not from memory for every strip): a quarter
/// of a 1 MiB L2 (Neoverse N1/V1; Cortex-A72 has 1–2 MiB per cluster, Apple
/// cores more). A strip (at most 3072 columns: 27 KiB) stays in L1 meanwhile.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;

/// One call's repacked weights and activations, kept per thread between
/// calls so that a prefill allocates only while its buffers grow (shared by
/// the 32-value types' strips here and in `strip_mm`, each with its own
/// layout; no strip product runs inside another).
#[derive(Default)]
pub(super) struct Scratch {
    /// The strips' values (here: strip-major, then block, column, row
    /// half, `STRIP_BLOCK` bytes per strip and block).
    pub(super) wv: Vec<i8>,
    /// Their scales (here: per strip and block the eight rows' `d`, then
    /// their `m`, zero without a minimum).
    pub(super) wd: Vec<f32>,
    /// The token groups' values (here: group-major, then block, column,
    /// `GROUP_BLOCK` bytes per group and block).
    pub(super) av: Vec<i8>,
    /// Their scales (here: per group and block the four tokens' `d_a`,
    /// then `d_a·Σa`).
    pub(super) ad: Vec<f32>,
}

thread_local! {
    pub(super) static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// `v` as `n` copies of `zero`, reusing its allocation.
#[inline]
pub(super) fn reset<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    v.clear();
    v.resize(n, zero);
}

/// `acc` plus, in lane `r`, the dot of register `w`'s row `r` (four bytes)
/// with the four bytes in lane `I` of `a` (`sdot` by element).
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
pub(super) unsafe fn sdot_lane<const I: i32>(
    acc: int32x4_t,
    w: int8x16_t,
    a: int8x16_t,
) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller guarantees dotprod; SDOT (by element) reads and
    // writes only the operand registers. The index is 0..4 (`I`, from the
    // callers' literals).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{i}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            i = const I,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four registers of four 32-bit words each, transposed: word `j` of
/// register `i` to word `i` of register `j`.
#[inline(always)]
pub(super) fn transpose4(r: [int8x16_t; 4]) -> [int8x16_t; 4] {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        let w = r.map(|v| vreinterpretq_u32_s8(v));
        let t0 = vreinterpretq_u64_u32(vtrn1q_u32(w[0], w[1]));
        let t1 = vreinterpretq_u64_u32(vtrn2q_u32(w[0], w[1]));
        let t2 = vreinterpretq_u64_u32(vtrn1q_u32(w[2], w[3]));
        let t3 = vreinterpretq_u64_u32(vtrn2q_u32(w[2], w[3]));
        [
            vtrn1q_u64(t0, t2),
            vtrn1q_u64(t1, t3),
            vtrn2q_u64(t0, t2),
            vtrn2q_u64(t1, t3),
        ]
        .map(|v| vreinterpretq_s8_u64(v))
    }
}

/// Writes the `16·R` values of four rows or tokens (`v[i]`: row or token
/// `i`'s, register `r` its values `16r .. 16r + 16`) as `4·R` columns of
/// their four values, each column's 16 bytes at `dst[c·stride..]`.
#[inline(always)]
pub(super) fn put_columns<const R: usize>(v: [[int8x16_t; R]; 4], dst: &mut [i8], stride: usize) {
    assert!(dst.len() >= (4 * R - 1) * stride + 16);
    for r in 0..R {
        let cols = transpose4(v.map(|x| x[r]));
        for (k, c) in cols.into_iter().enumerate() {
            let at = (4 * r + k) * stride;
            // SAFETY: base NEON; `at + 16 <= (4R - 1)·stride + 16 <=
            // dst.len()` (asserted above); the store is unaligned.
            unsafe { vst1q_s8(dst[at..at + 16].as_mut_ptr(), c) };
        }
    }
}

/// Repacks rows `0..rows` of `w` (`nb` blocks each) into strips of [`ROWS`]
/// (the last one padded with zero rows).
fn repack_weights<W: Q32Block>(w: &[W], rows: usize, nb: usize, s: &mut Scratch) {
    let strips = rows.div_ceil(ROWS);
    reset(&mut s.wv, strips * nb * STRIP_BLOCK, 0);
    reset(&mut s.wd, strips * nb * 2 * ROWS, 0.0);
    let zero = [[0i8; 16]; 2];
    for st in 0..strips {
        for b in 0..nb {
            let at = (st * nb + b) * STRIP_BLOCK;
            let dst = &mut s.wv[at..at + STRIP_BLOCK];
            for half in 0..2 {
                let v: [[int8x16_t; 2]; 4] = std::array::from_fn(|i| {
                    let r = st * ROWS + 4 * half + i;
                    if r < rows {
                        w[r * nb + b].load()
                    } else {
                        // SAFETY: base NEON; 16 readable bytes each.
                        zero.map(|z| unsafe { vld1q_s8(z.as_ptr()) })
                    }
                });
                put_columns(v, &mut dst[16 * half..], 2 * 16);
            }
            let sc = &mut s.wd[(st * nb + b) * 2 * ROWS..][..2 * ROWS];
            for i in 0..ROWS.min(rows - st * ROWS) {
                let blk = &w[(st * ROWS + i) * nb + b];
                sc[i] = h2f(blk.scale());
                sc[ROWS + i] = h2f(blk.min());
            }
        }
    }
}

/// Packs tokens `t0..t1` of `a` into groups of [`TG`] (the last one padded
/// with zero tokens of scale zero).
fn pack_acts(a: &QuantActs<'_>, t0: usize, t1: usize, min: bool, s: &mut Scratch) {
    let nb = a.nb;
    let groups = (t1 - t0).div_ceil(TG);
    reset(&mut s.av, groups * nb * GROUP_BLOCK, 0);
    reset(&mut s.ad, groups * nb * 2 * TG, 0.0);
    let zero = BlockQ8_0 {
        d: half::f16::ZERO,
        qs: [0; QK],
    };
    for g in 0..groups {
        let tok = |j: usize| (t0 + g * TG + j < t1).then_some(t0 + g * TG + j);
        for b in 0..nb {
            let v: [[int8x16_t; 2]; 4] = std::array::from_fn(|j| match tok(j) {
                Some(t) => a.row(t)[b].load(),
                None => zero.load(),
            });
            let at = (g * nb + b) * GROUP_BLOCK;
            put_columns(v, &mut s.av[at..at + GROUP_BLOCK], 16);
            let sc = &mut s.ad[(g * nb + b) * 2 * TG..][..2 * TG];
            for (j, t) in (0..TG).filter_map(|j| tok(j).map(|t| (j, t))) {
                let d = h2f(a.row(t)[b].d);
                sc[j] = d;
                if min {
                    sc[TG + j] = d * f32::from(a.row_sums(t)[b]);
                }
            }
        }
    }
}

/// Strip `wv`/`wd` (eight rows) times token group `av`/`ad` (four tokens)
/// over `nb` blocks: `out[h][t]` holds token `t`'s sums of rows `4h..4h + 4`.
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
unsafe fn strip_group<const MIN: bool>(
    wv: &[i8],
    wd: &[f32],
    av: &[i8],
    ad: &[f32],
    nb: usize,
) -> [[float32x4_t; TG]; 2] {
    assert!(wv.len() == nb * STRIP_BLOCK && wd.len() == nb * 2 * ROWS);
    assert!(av.len() == nb * GROUP_BLOCK && ad.len() == nb * 2 * TG);
    // SAFETY: dotprod as the caller guarantees; the rest is base NEON. Every
    // load reads 16 bytes inside the slices whose lengths are asserted above
    // (block `b < nb`, column `c < 8`, half `h < 2`).
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); TG]; 2];
        for b in 0..nb {
            let (wb, ab) = (
                wv.as_ptr().add(b * STRIP_BLOCK),
                av.as_ptr().add(b * GROUP_BLOCK),
            );
            let mut s = [[vdupq_n_s32(0); TG]; 2];
            for c in 0..COLS {
                let x = vld1q_s8(ab.add(16 * c));
                for (h, s) in s.iter_mut().enumerate() {
                    let w = vld1q_s8(wb.add(32 * c + 16 * h));
                    s[0] = sdot_lane::<0>(s[0], w, x);
                    s[1] = sdot_lane::<1>(s[1], w, x);
                    s[2] = sdot_lane::<2>(s[2], w, x);
                    s[3] = sdot_lane::<3>(s[3], w, x);
                }
            }
            let (sw, sa) = (wd.as_ptr().add(b * 2 * ROWS), ad.as_ptr().add(b * 2 * TG));
            let da = vld1q_f32(sa);
            let dasa = vld1q_f32(sa.add(TG));
            for (h, (acc, s)) in acc.iter_mut().zip(s).enumerate() {
                let dw = vld1q_f32(sw.add(4 * h));
                let dm = vld1q_f32(sw.add(ROWS + 4 * h));
                // The scale `d_w·d_a[t]`, then one FMA: the x86 strips' order.
                let scales = [
                    vmulq_laneq_f32::<0>(dw, da),
                    vmulq_laneq_f32::<1>(dw, da),
                    vmulq_laneq_f32::<2>(dw, da),
                    vmulq_laneq_f32::<3>(dw, da),
                ];
                for t in 0..TG {
                    acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(s[t]), scales[t]);
                }
                if MIN {
                    acc[0] = vfmaq_laneq_f32::<0>(acc[0], dm, dasa);
                    acc[1] = vfmaq_laneq_f32::<1>(acc[1], dm, dasa);
                    acc[2] = vfmaq_laneq_f32::<2>(acc[2], dm, dasa);
                    acc[3] = vfmaq_laneq_f32::<3>(acc[3], dm, dasa);
                }
            }
        }
        acc
    }
}

/// One token group's results from one strip: `[t][r]`, token `t`'s sum of
/// the strip's row `r`.
pub(super) type GroupSums = [[f32; ROWS]; TG];

/// Registers `[h][t]` of four rows' sums each (rows `4h..4h + 4`, token
/// `t`) as [`GroupSums`].
#[inline(always)]
pub(super) fn rows_by_token(sums: [[float32x4_t; TG]; 2]) -> GroupSums {
    let mut out = [[0f32; ROWS]; TG];
    for (h, regs) in sums.into_iter().enumerate() {
        for (o, v) in out.iter_mut().zip(regs) {
            // SAFETY: base NEON; a 16-byte store into 4 of the 8 f32s.
            unsafe { vst1q_f32(o[4 * h..4 * h + 4].as_mut_ptr(), v) };
        }
    }
    out
}

/// The walk every NEON strip product shares: the call's tokens in chunks
/// of `chunk` tokens, each packed into the scratch `s` by `pack(s, t0, t1)`,
/// then every strip of the `rows` over the chunk's token groups, `group(s,
/// strip, g)` giving a group's sums, which are stored for the tile's rows
/// and the call's tokens only (a last strip or group may be padding).
#[inline(always)]
pub(super) fn walk<S>(
    s: &mut S,
    (rows, n_tok, chunk): (usize, usize, usize),
    out: &mut OutTile<'_>,
    mut pack: impl FnMut(&mut S, usize, usize),
    mut group: impl FnMut(&S, usize, usize) -> GroupSums,
) {
    let mut t0 = 0;
    while t0 < n_tok {
        let t1 = (t0 + chunk).min(n_tok);
        pack(s, t0, t1);
        for st in 0..rows.div_ceil(ROWS) {
            for g in 0..(t1 - t0).div_ceil(TG) {
                let sums = group(s, st, g);
                for (t, row) in sums.iter().enumerate().take(t1 - t0 - g * TG) {
                    for (r, &v) in row.iter().enumerate().take(rows - st * ROWS) {
                        out.set(t0 + g * TG + t, st * ROWS + r, v);
                    }
                }
            }
        }
        t0 = t1;
    }
}

/// The product in strips: the tile's rows repacked once, the tokens in
/// chunks of groups, every strip over each chunk.
///
/// # Safety
/// The CPU must have the dot-product extension.
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
    let chunk = tokens_within(CHUNK_BYTES, nb * (GROUP_BLOCK + 8 * TG) / TG, TG);
    let pack = |s: &mut Scratch, t0, t1| pack_acts(a, t0, t1, W::HAS_MIN, s);
    walk(&mut s, (rows, n_tok, chunk), out, pack, |s, st, g| {
        let wv = &s.wv[st * nb * STRIP_BLOCK..][..nb * STRIP_BLOCK];
        let wd = &s.wd[st * nb * 2 * ROWS..][..nb * 2 * ROWS];
        let av = &s.av[g * nb * GROUP_BLOCK..][..nb * GROUP_BLOCK];
        let ad = &s.ad[g * nb * 2 * TG..][..nb * 2 * TG];
        // SAFETY: dotprod, as the caller guarantees.
        rows_by_token(unsafe {
            if W::HAS_MIN {
                strip_group::<true>(wv, wd, av, ad, nb)
            } else {
                strip_group::<false>(wv, wd, av, ad, nb)
            }
        })
    });
    SCRATCH.set(s);
}

/// Defines prefill entries of one NEON variant (`$feat` its target
/// features): the strips (`$strips::<W>`) from `$min` tokens, the grouped
/// kernel `$small` below.
macro_rules! prefill_entries {
    ($feat:literal, $variant:literal, $min:ident, $strips:ident, $act:ty;
     $($blk:ty => $name:ident, $small:path;)*) => {$(
        #[doc = concat!(
            "Prefill of ", stringify!($blk), " weights on `", $variant, "`: the strips from ",
            "[`", stringify!($min), "`] tokens, the grouped kernel below."
        )]
        #[target_feature(enable = $feat)]
        pub(in crate::quant) fn $name(
            w: &[$blk],
            a: &QuantActs<'_, $act>,
            out: &mut OutTile<'_>,
        ) {
            if a.n_tok >= $min {
                // SAFETY: this function is compiled with the variant's
                // features, which its callers guarantee the CPU has.
                unsafe { $strips::<$blk>(w, a, out) }
            } else {
                $small(w, a, out)
            }
        }
    )*};
}

pub(super) use prefill_entries;

prefill_entries! {
    "neon,dotprod", "neon+dotprod", MIN_TOKENS, gemm_strips, BlockQ8_0;
    BlockQ8_0 => prefill_q8_0, super::quant::gemm_q8_0_sdot;
    BlockQ4_0 => prefill_q4_0, super::quant::gemm_q4_0_sdot;
    BlockQ4_1 => prefill_q4_1, super::blocks::gemm_q4_1_sdot;
    BlockQ5_0 => prefill_q5_0, super::blocks::gemm_q5_0_sdot;
    BlockQ5_1 => prefill_q5_1, super::blocks::gemm_q5_1_sdot;
    BlockIq4Nl => prefill_iq4_nl, super::blocks::gemm_iq4_nl_sdot;
}

/// The strips' product whatever the token count (for the tests: the
/// order check runs it on few tokens too).
///
/// # Safety
/// The CPU must have the dot-product extension.
#[cfg(test)]
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn strips_any<W: Q32Block>(w: &[W], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_strips::<W>(w, a, out) }
}
