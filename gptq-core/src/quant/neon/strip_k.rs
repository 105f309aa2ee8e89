//! Prefill strips of the K-quants and IQ4_XS on `neon+dotprod` (the 32-value
//! types' are in `strip`, whose layout and by-element `sdot` these share):
//! a strip holds eight rows of a super-block as 64 columns of four values,
//! a token group four tokens' four values per column.
//!
//! Every sub-block's dot (eight rows by four tokens, 16 or 32 `sdot`s) is
//! multiplied by the rows' integer scales and added in i32, the minimums'
//! `Σ m·bsum` by one multiply-add per sub-block against the tokens' Q8_K
//! sums, and each super-block ends in the scalar reference's float formula
//! (`(d_a·d)·isum − (d_a·dmin)·imin`, the same operations in every lane):
//! so these products equal the scalar twins (and the grouped NEON kernels)
//! bit for bit, which the tests check. The repack unpacks each super-block
//! once per call with the grouped kernels' unpacking ([`KBlock`]) and
//! transposes it in registers. On `neon+i8mm` the same strips hold their
//! values in `strip_mm`'s row pairs and run on `smmla` ([`strip_group_mm`]),
//! with the same integers and float operations, so the same bits. Not
//! timed: these kernels have only run under qemu.

use std::arch::aarch64::*;
use std::cell::Cell;

use super::blocks::KBlock;
use super::strip::{
    CHUNK_BYTES, ROWS, TG, prefill_entries, put_columns, reset, rows_by_token, sdot_lane, walk,
};
use super::strip_mm::{PAIRS, TPAIRS, pairs_by_token, put_pair, smmla};
use crate::quant::tile::{OutTile, QuantActs, tokens_within};
use crate::quant::types::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};

/// Products of fewer tokens take the grouped kernels: the x86 strips of the
/// K-quants, while their repack was a generic walk, led from 40 tokens (the
/// 32-value types' from 32, see `strip::MIN_TOKENS`). Not measured on an
/// Arm core.
pub(in crate::quant) const MIN_TOKENS: usize = 40;

/// Columns of four values per super-block.
const COLS: usize = QK_K / 4;

/// Bytes of a strip's super-block: 64 columns of eight rows' four values.
const STRIP_BLOCK: usize = COLS * ROWS * 4;

/// Integers of a strip's super-block: 16 sub-blocks' scales for eight rows,
/// then their minimums.
const STRIP_INTS: usize = 2 * 16 * ROWS;

/// Bytes of a token group's super-block: 64 columns of four tokens' values.
const GROUP_BLOCK: usize = COLS * TG * 4;

/// Integers of a token group's super-block: each sub-block's sums of the
/// four tokens (16 sub-blocks at most).
const GROUP_INTS: usize = 16 * TG;

/// One call's repacked weights and activations, kept per thread.
#[derive(Default)]
struct Scratch {
    /// Strip-major, then super-block, column, row half.
    wv: Vec<i8>,
    /// Per strip and super-block: `sc[s][row]`, then `mins[s][row]`.
    wi: Vec<i32>,
    /// Per strip and super-block: the eight rows' `d`, then their `dmin`.
    wd: Vec<f32>,
    /// Group-major, then super-block, column.
    av: Vec<i8>,
    /// Per group and super-block: `Σa[s][token]` over each sub-block.
    ai: Vec<i32>,
    /// Per group and super-block: the four tokens' `d_a`.
    ad: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Repacks rows `0..rows` of `w` (`nb` super-blocks each) into strips of
/// [`ROWS`] (the last padded with zero rows): the values as `sdot` reads
/// them, or as `smmla` does with `MM` (`strip_mm`'s row pairs); the scales,
/// minimums and float scales the same for both.
fn repack_weights<W: KBlock, const MM: bool>(w: &[W], rows: usize, nb: usize, s: &mut Scratch) {
    let strips = rows.div_ceil(ROWS);
    reset(&mut s.wv, strips * nb * STRIP_BLOCK, 0);
    reset(&mut s.wi, strips * nb * STRIP_INTS, 0);
    reset(&mut s.wd, strips * nb * 2 * ROWS, 0.0);
    for st in 0..strips {
        for b in 0..nb {
            let at = (st * nb + b) * STRIP_BLOCK;
            let dst = &mut s.wv[at..at + STRIP_BLOCK];
            let ints = &mut s.wi[(st * nb + b) * STRIP_INTS..][..STRIP_INTS];
            let fl = &mut s.wd[(st * nb + b) * 2 * ROWS..][..2 * ROWS];
            for half in 0..2 {
                let k: [Option<_>; 4] = std::array::from_fn(|i| {
                    let r = st * ROWS + 4 * half + i;
                    (r < rows).then(|| w[r * nb + b].unpack())
                });
                // SAFETY: base NEON (aarch64 baseline), on registers only.
                let zero = unsafe { vdupq_n_s8(0) };
                let v: [[int8x16_t; 16]; 4] =
                    std::array::from_fn(|i| k[i].as_ref().map_or([zero; 16], |k| k.v));
                if MM {
                    put_pair(v[0], v[1], dst, 2 * half, PAIRS);
                    put_pair(v[2], v[3], dst, 2 * half + 1, PAIRS);
                } else {
                    put_columns(v, &mut dst[16 * half..], 2 * 16);
                }
                for (i, k) in k.iter().enumerate() {
                    let Some(k) = k else { continue };
                    let row = 4 * half + i;
                    for sub in 0..W::SUBS {
                        ints[sub * ROWS + row] = k.sc[sub];
                        ints[16 * ROWS + sub * ROWS + row] = i32::from(k.mins[sub]);
                    }
                    (fl[row], fl[ROWS + row]) = (k.d, k.dmin);
                }
            }
        }
    }
}

/// Packs tokens `t0..t1` of `a` into groups of [`TG`] (the last padded with
/// zero tokens of scale zero), with each sub-block's sum (of 16 or 32
/// values: `subs` per super-block); the values in token pairs with `MM`.
fn pack_acts<const MM: bool>(
    a: &QuantActs<'_, BlockQ8K>,
    t0: usize,
    t1: usize,
    subs: usize,
    s: &mut Scratch,
) {
    let nb = a.nb;
    let groups = (t1 - t0).div_ceil(TG);
    reset(&mut s.av, groups * nb * GROUP_BLOCK, 0);
    reset(&mut s.ai, groups * nb * GROUP_INTS, 0);
    reset(&mut s.ad, groups * nb * TG, 0.0);
    let per = 16 / subs;
    const ZERO: [i8; QK_K] = [0; QK_K];
    for g in 0..groups {
        let tok = |j: usize| (t0 + g * TG + j < t1).then_some(t0 + g * TG + j);
        for b in 0..nb {
            let src: [&[i8; QK_K]; 4] =
                std::array::from_fn(|j| tok(j).map_or(&ZERO, |t| &a.row(t)[b].qs));
            // SAFETY: base NEON; each load reads 16 of a 256-byte array.
            let v: [[int8x16_t; 16]; 4] =
                src.map(|q| std::array::from_fn(|r| unsafe { vld1q_s8(q[16 * r..].as_ptr()) }));
            let at = (g * nb + b) * GROUP_BLOCK;
            let dst = &mut s.av[at..at + GROUP_BLOCK];
            if MM {
                put_pair(v[0], v[1], dst, 0, TPAIRS);
                put_pair(v[2], v[3], dst, 1, TPAIRS);
            } else {
                put_columns(v, dst, 16);
            }
            let ints = &mut s.ai[(g * nb + b) * GROUP_INTS..][..GROUP_INTS];
            for (j, t) in (0..TG).filter_map(|j| tok(j).map(|t| (j, t))) {
                let blk = &a.row(t)[b];
                for sub in 0..subs {
                    let sums = &blk.bsums[per * sub..per * (sub + 1)];
                    ints[sub * TG + j] = sums.iter().map(|&x| i32::from(x)).sum();
                }
                s.ad[(g * nb + b) * TG + j] = blk.d;
            }
        }
    }
}

/// `acc` plus, in lane `r`, `m[r]·b[I]` (the minimums' term of one token).
#[inline(always)]
fn mla_lane<const I: i32>(acc: int32x4_t, m: int32x4_t, b: int32x4_t) -> int32x4_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe { vmlaq_laneq_s32::<I>(acc, m, b) }
}

/// Strip `wv`/`wi`/`wd` (eight rows) times token group `av`/`ai`/`ad` (four
/// tokens) over `nb` super-blocks of `S` sub-blocks: `out[h][t]` holds token
/// `t`'s results for rows `4h..4h + 4`.
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
unsafe fn strip_group<const S: usize, const MIN: bool>(
    (wv, wi, wd): (&[i8], &[i32], &[f32]),
    (av, ai, ad): (&[i8], &[i32], &[f32]),
    nb: usize,
) -> [[float32x4_t; TG]; 2] {
    assert!(S == 8 || S == 16);
    assert!(wv.len() == nb * STRIP_BLOCK && wi.len() == nb * STRIP_INTS);
    assert!(wd.len() == nb * 2 * ROWS && av.len() == nb * GROUP_BLOCK);
    assert!(ai.len() == nb * GROUP_INTS && ad.len() == nb * TG);
    // Columns per sub-block.
    let cps = COLS / S;
    // SAFETY: dotprod as the caller guarantees; the rest is base NEON. Every
    // load reads inside the slices whose lengths are asserted above
    // (super-block `b < nb`, column `c < 64`, sub-block `s < 16`, half `h < 2`).
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); TG]; 2];
        for b in 0..nb {
            let (wb, xb) = (
                wv.as_ptr().add(b * STRIP_BLOCK),
                av.as_ptr().add(b * GROUP_BLOCK),
            );
            let (ib, sb) = (
                wi.as_ptr().add(b * STRIP_INTS),
                ai.as_ptr().add(b * GROUP_INTS),
            );
            let mut isum = [[vdupq_n_s32(0); TG]; 2];
            for s in 0..S {
                let mut dot = [[vdupq_n_s32(0); TG]; 2];
                for c in s * cps..(s + 1) * cps {
                    let x = vld1q_s8(xb.add(16 * c));
                    for (h, d) in dot.iter_mut().enumerate() {
                        let w = vld1q_s8(wb.add(32 * c + 16 * h));
                        d[0] = sdot_lane::<0>(d[0], w, x);
                        d[1] = sdot_lane::<1>(d[1], w, x);
                        d[2] = sdot_lane::<2>(d[2], w, x);
                        d[3] = sdot_lane::<3>(d[3], w, x);
                    }
                }
                for (h, (is, d)) in isum.iter_mut().zip(dot).enumerate() {
                    let sc = vld1q_s32(ib.add(s * ROWS + 4 * h));
                    for (i, d) in is.iter_mut().zip(d) {
                        *i = vmlaq_s32(*i, d, sc);
                    }
                }
            }
            let mut imin = [[vdupq_n_s32(0); TG]; 2];
            if MIN {
                for s in 0..S {
                    let bs = vld1q_s32(sb.add(s * TG));
                    for (h, m) in imin.iter_mut().enumerate() {
                        let mv = vld1q_s32(ib.add(16 * ROWS + s * ROWS + 4 * h));
                        m[0] = mla_lane::<0>(m[0], mv, bs);
                        m[1] = mla_lane::<1>(m[1], mv, bs);
                        m[2] = mla_lane::<2>(m[2], mv, bs);
                        m[3] = mla_lane::<3>(m[3], mv, bs);
                    }
                }
            }
            let da = vld1q_f32(ad.as_ptr().add(b * TG));
            for (h, acc) in acc.iter_mut().enumerate() {
                let dw = vld1q_f32(wd.as_ptr().add(b * 2 * ROWS + 4 * h));
                let dm = vld1q_f32(wd.as_ptr().add(b * 2 * ROWS + ROWS + 4 * h));
                // `(d_a·d)·isum − (d_a·dmin)·imin` (the reference's products,
                // unfused), added to the running sum.
                let sd = [
                    vmulq_laneq_f32::<0>(dw, da),
                    vmulq_laneq_f32::<1>(dw, da),
                    vmulq_laneq_f32::<2>(dw, da),
                    vmulq_laneq_f32::<3>(dw, da),
                ];
                let sm = [
                    vmulq_laneq_f32::<0>(dm, da),
                    vmulq_laneq_f32::<1>(dm, da),
                    vmulq_laneq_f32::<2>(dm, da),
                    vmulq_laneq_f32::<3>(dm, da),
                ];
                for t in 0..TG {
                    let p = vmulq_f32(sd[t], vcvtq_f32_s32(isum[h][t]));
                    acc[t] = if MIN {
                        let q = vmulq_f32(sm[t], vcvtq_f32_s32(imin[h][t]));
                        vaddq_f32(acc[t], vsubq_f32(p, q))
                    } else {
                        vaddq_f32(acc[t], p)
                    };
                }
            }
        }
        acc
    }
}

/// The product in strips (`sdot`'s, or `smmla`'s with `MM`): the tile's
/// rows repacked once, the tokens in chunks of groups, every strip over
/// each chunk.
///
/// # Safety
/// The CPU must have the dot-product extension, and with `MM` the int8
/// matrix multiply.
#[inline(always)]
unsafe fn gemm_strips_of<W: KBlock, const MM: bool>(
    w: &[W],
    a: &QuantActs<'_, BlockQ8K>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    assert!(
        a.blocks.len() >= n_tok * nb,
        "strip gemm: activations too short"
    );
    let mut s = SCRATCH.take();
    repack_weights::<W, MM>(w, rows, nb, &mut s);
    let per_token = nb * (GROUP_BLOCK + 4 * GROUP_INTS + 4 * TG) / TG;
    let chunk = tokens_within(CHUNK_BYTES, per_token, TG);
    let pack = |s: &mut Scratch, t0, t1| pack_acts::<MM>(a, t0, t1, W::SUBS, s);
    walk(&mut s, (rows, n_tok, chunk), out, pack, |s, st, g| {
        let strip = (
            &s.wv[st * nb * STRIP_BLOCK..][..nb * STRIP_BLOCK],
            &s.wi[st * nb * STRIP_INTS..][..nb * STRIP_INTS],
            &s.wd[st * nb * 2 * ROWS..][..nb * 2 * ROWS],
        );
        let group = (
            &s.av[g * nb * GROUP_BLOCK..][..nb * GROUP_BLOCK],
            &s.ai[g * nb * GROUP_INTS..][..nb * GROUP_INTS],
            &s.ad[g * nb * TG..][..nb * TG],
        );
        // SAFETY: dotprod, and i8mm with `MM`, as the caller guarantees.
        unsafe {
            match (MM, W::SUBS, W::MIN) {
                (false, 8, true) => rows_by_token(strip_group::<8, true>(strip, group, nb)),
                (false, 8, false) => rows_by_token(strip_group::<8, false>(strip, group, nb)),
                (false, _, true) => rows_by_token(strip_group::<16, true>(strip, group, nb)),
                (false, _, false) => rows_by_token(strip_group::<16, false>(strip, group, nb)),
                (true, 8, true) => pairs_by_token(strip_group_mm::<8, true>(strip, group, nb)),
                (true, 8, false) => pairs_by_token(strip_group_mm::<8, false>(strip, group, nb)),
                (true, _, true) => pairs_by_token(strip_group_mm::<16, true>(strip, group, nb)),
                (true, _, false) => pairs_by_token(strip_group_mm::<16, false>(strip, group, nb)),
            }
        }
    });
    SCRATCH.set(s);
}

/// [`gemm_strips_of`] on `sdot`.
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
unsafe fn gemm_strips<W: KBlock>(w: &[W], a: &QuantActs<'_, BlockQ8K>, out: &mut OutTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_strips_of::<W, false>(w, a, out) }
}

/// [`gemm_strips_of`] on `smmla`.
///
/// # Safety
/// The CPU must have the dot-product and int8 matrix-multiply extensions.
#[inline(always)]
unsafe fn gemm_strips_mm<W: KBlock>(w: &[W], a: &QuantActs<'_, BlockQ8K>, out: &mut OutTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_strips_of::<W, true>(w, a, out) }
}

/// Four rows' (or tokens') values of one sub-block as the 2 × 2 layout of
/// pair `p`: lanes `2p, 2p, 2p + 1, 2p + 1` of `v` (`lo` pairs 0 and 1 of a
/// register of four, else 2 and 3), or for tokens `2q, 2q + 1, 2q, 2q + 1`.
#[inline(always)]
fn rows_2x2(v: int32x4_t, hi: bool) -> int32x4_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        if hi {
            vzip2q_s32(v, v)
        } else {
            vzip1q_s32(v, v)
        }
    }
}

/// Tokens `2q, 2q + 1, 2q, 2q + 1` of a register of four tokens' values.
#[inline(always)]
fn tokens_2x2(v: int32x4_t, q: usize) -> int32x4_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        let d = vreinterpretq_u64_s32(v);
        vreinterpretq_s32_u64(if q == 0 {
            vdupq_laneq_u64::<0>(d)
        } else {
            vdupq_laneq_u64::<1>(d)
        })
    }
}

/// [`tokens_2x2`] of floats.
#[inline(always)]
fn tokens_2x2_f(v: float32x4_t, q: usize) -> float32x4_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe { vreinterpretq_f32_s32(tokens_2x2(vreinterpretq_s32_f32(v), q)) }
}

/// [`rows_2x2`] of floats.
#[inline(always)]
fn rows_2x2_f(v: float32x4_t, hi: bool) -> float32x4_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe { vreinterpretq_f32_s32(rows_2x2(vreinterpretq_s32_f32(v), hi)) }
}

/// [`strip_group`] on `smmla` (the values in `strip_mm`'s row and token
/// pairs, the scales as `sdot`'s strips hold them, spread to the 2 × 2
/// layout in registers): `out[p][q]` holds rows `2p, 2p + 1` by tokens
/// `2q, 2q + 1`.
///
/// # Safety
/// The CPU must have the int8 matrix-multiply extension.
#[inline(always)]
unsafe fn strip_group_mm<const S: usize, const MIN: bool>(
    (wv, wi, wd): (&[i8], &[i32], &[f32]),
    (av, ai, ad): (&[i8], &[i32], &[f32]),
    nb: usize,
) -> [[float32x4_t; TPAIRS]; PAIRS] {
    assert!(S == 8 || S == 16);
    assert!(wv.len() == nb * STRIP_BLOCK && wi.len() == nb * STRIP_INTS);
    assert!(wd.len() == nb * 2 * ROWS && av.len() == nb * GROUP_BLOCK);
    assert!(ai.len() == nb * GROUP_INTS && ad.len() == nb * TG);
    // Columns of eight values per sub-block.
    let cps = QK_K / 8 / S;
    // SAFETY: i8mm as the caller guarantees; the rest is base NEON. Every
    // load reads inside the slices whose lengths are asserted above
    // (super-block `b < nb`, column `c < 32`, sub-block `s < 16`, pairs
    // `p < 4`, `q < 2`).
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); TPAIRS]; PAIRS];
        for b in 0..nb {
            let (wb, xb) = (
                wv.as_ptr().add(b * STRIP_BLOCK),
                av.as_ptr().add(b * GROUP_BLOCK),
            );
            let (ib, sb) = (
                wi.as_ptr().add(b * STRIP_INTS),
                ai.as_ptr().add(b * GROUP_INTS),
            );
            let mut isum = [[vdupq_n_s32(0); TPAIRS]; PAIRS];
            for s in 0..S {
                let mut dot = [[vdupq_n_s32(0); TPAIRS]; PAIRS];
                for c in s * cps..(s + 1) * cps {
                    let x = [vld1q_s8(xb.add(32 * c)), vld1q_s8(xb.add(32 * c + 16))];
                    for (p, d) in dot.iter_mut().enumerate() {
                        let w = vld1q_s8(wb.add(64 * c + 16 * p));
                        d[0] = smmla(d[0], w, x[0]);
                        d[1] = smmla(d[1], w, x[1]);
                    }
                }
                for (p, (is, d)) in isum.iter_mut().zip(dot).enumerate() {
                    let sc = rows_2x2(vld1q_s32(ib.add(s * ROWS + 4 * (p / 2))), p % 2 == 1);
                    for (i, d) in is.iter_mut().zip(d) {
                        *i = vmlaq_s32(*i, d, sc);
                    }
                }
            }
            let mut imin = [[vdupq_n_s32(0); TPAIRS]; PAIRS];
            if MIN {
                for s in 0..S {
                    let bs = vld1q_s32(sb.add(s * TG));
                    let bs = [tokens_2x2(bs, 0), tokens_2x2(bs, 1)];
                    for (p, m) in imin.iter_mut().enumerate() {
                        let mv = vld1q_s32(ib.add(16 * ROWS + s * ROWS + 4 * (p / 2)));
                        let mv = rows_2x2(mv, p % 2 == 1);
                        m[0] = vmlaq_s32(m[0], mv, bs[0]);
                        m[1] = vmlaq_s32(m[1], mv, bs[1]);
                    }
                }
            }
            let da = vld1q_f32(ad.as_ptr().add(b * TG));
            let da = [tokens_2x2_f(da, 0), tokens_2x2_f(da, 1)];
            for (p, acc) in acc.iter_mut().enumerate() {
                let f = wd.as_ptr().add(b * 2 * ROWS + 4 * (p / 2));
                let dw = rows_2x2_f(vld1q_f32(f), p % 2 == 1);
                let dm = rows_2x2_f(vld1q_f32(f.add(ROWS)), p % 2 == 1);
                for q in 0..TPAIRS {
                    // `(d_a·d)·isum − (d_a·dmin)·imin`, as `strip_group`.
                    let x = vmulq_f32(vmulq_f32(dw, da[q]), vcvtq_f32_s32(isum[p][q]));
                    acc[q] = if MIN {
                        let y = vmulq_f32(vmulq_f32(dm, da[q]), vcvtq_f32_s32(imin[p][q]));
                        vaddq_f32(acc[q], vsubq_f32(x, y))
                    } else {
                        vaddq_f32(acc[q], x)
                    };
                }
            }
        }
        acc
    }
}

prefill_entries! {
    "neon,dotprod", "neon+dotprod", MIN_TOKENS, gemm_strips, BlockQ8K;
    BlockQ2K => prefill_q2_k, super::blocks::gemm_q2_k_sdot;
    BlockQ3K => prefill_q3_k, super::blocks::gemm_q3_k_sdot;
    BlockQ4K => prefill_q4_k, super::blocks::gemm_q4_k_sdot;
    BlockQ5K => prefill_q5_k, super::blocks::gemm_q5_k_sdot;
    BlockQ6K => prefill_q6_k, super::blocks::gemm_q6_k_sdot;
    BlockIq4Xs => prefill_iq4_xs, super::blocks::gemm_iq4_xs_sdot;
}

prefill_entries! {
    "neon,dotprod,i8mm", "neon+i8mm", MIN_TOKENS, gemm_strips_mm, BlockQ8K;
    BlockQ2K => prefill_q2_k_mm, super::blocks::gemm_q2_k_sdot;
    BlockQ3K => prefill_q3_k_mm, super::blocks::gemm_q3_k_sdot;
    BlockQ4K => prefill_q4_k_mm, super::blocks::gemm_q4_k_sdot;
    BlockQ5K => prefill_q5_k_mm, super::blocks::gemm_q5_k_sdot;
    BlockQ6K => prefill_q6_k_mm, super::blocks::gemm_q6_k_sdot;
    BlockIq4Xs => prefill_iq4_xs_mm, super::blocks::gemm_iq4_xs_sdot;
}
