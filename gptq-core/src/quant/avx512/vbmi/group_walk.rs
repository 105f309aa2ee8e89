//! The Q8_0 decode walk in groups of sixteen blocks (see the parent module
//! for the unpacking).
//!
//! Four quads make a *group*, and every token's sum of a row is computed in
//! one order, whatever the number of tokens: each block's integer dot
//! (exact, so the same however it is summed) goes to f32 lane
//! `block mod 16`, is multiplied by the activation scale and then, fused, by
//! the weight scale into that lane's sum; the groups go in order (a row's
//! last group updates only its blocks' lanes) and the 16 lanes are added at
//! the end. Two walks reach that order:
//!
//! - **one token** (decode alone): two `vpdpbusd` per quad leave each
//!   block's dot in four lanes; six `vpermt2d` and three adds bring a group's
//!   sixteen dots into one lane each. The activations are arranged as the
//!   quads unpack.
//! - **several tokens** (sessions decoding together, short prompt chunks):
//!   the group's unpacked weights are transposed once (eight `vpermt2d`,
//!   eight `vshufi64x2`) so that register `i` holds bytes `4i..4i + 4` of
//!   every block, one lane each; then every token's dots are eight
//!   `vpdpbusd` straight into one lane per block, and its float step is
//!   three µops per sixteen blocks instead of the quad walk's twelve. The
//!   activations are arranged the same way, once per call.
//!
//! Rows whose last group holds at most eight blocks (GPT-2's 768-wide
//! inputs: 24 blocks) go in pairs that share that group, one row in each
//! half, so that such a row costs one and a half groups, not two.
//!
//! Against the quad walk Q8_0 took before (one thread, eight tokens, random
//! weights of GPT-2 124M's shapes, fastest of seven, the builds alternated
//! on the Intel machine of the README, 2026-12-06): 3072×768 0.41–0.44 ns
//! per block and token against 0.57–0.59, 768×2304 0.48–0.54 against 0.56,
//! 768×50257 0.39–0.40 against 0.46–0.48; one token unchanged (1.3–1.9 ns,
//! the products streaming from L3).

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::super::prefetch;
use super::super::super::scratch::with_prepared;
use super::super::super::tile::{OutTile, QuantActs};
use super::super::super::types::BlockQ8_0;
use super::{QB, Unpacked, full_q8, load_partial, put, unpack_q8};

/// Blocks per group (one f32 lane each).
const GB: usize = 16;
/// Quads per group.
const QPG: usize = GB / QB;

/// One token's activations for a group of sixteen blocks (a partial last
/// group padded with zero activations and scales), in the order the walk
/// that reads them has the weights: see [`Layout`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Group {
    q: [__m512i; 8],
    /// `-off·Σa` of block `j` in lane `j` (the weights' unsigned offset).
    c: __m512i,
    /// Block `j`'s activation scale in lane `j`.
    d: __m512,
}

/// How a [`Group`]'s bytes are arranged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// As the quads unpack, for the one-token walk: `q[2p]` holds block
    /// `4p + k`'s elements `0..16` at bytes `16k..16k + 16`, `q[2p + 1]` its
    /// elements `16..32`.
    Quads,
    /// As the several-token walk transposes the weights: `q[i]` holds
    /// elements `4i..4i + 4` of block `j` at bytes `4j..4j + 4`.
    Transposed,
}

/// Groups kept on the stack (62.5 KiB): one token's for every product up to
/// 51200 columns; several tokens' of GPT-2's products (50 tokens of 768
/// columns, 16 of 3072) go through one pass over the weights together.
const STACK_GROUPS: usize = 100;

/// Tokens whose sums one pass over a row keeps in registers: eight integer
/// and eight float accumulators beside the transposed group (eight
/// registers) and its scales fit AVX-512's 32 vector registers, so up to
/// eight sessions share each unpack (the activations are memory operands).
const TG: usize = 8;

thread_local! {
    /// Each thread's groups for wider products, taken by a call and put back
    /// after it.
    static GROUPS: Cell<Vec<Group>> = const { Cell::new(Vec::new()) };
}

/// Token `t`'s activations of group `g` for weights offset by `off`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn group(a: &QuantActs<'_>, off: i32, layout: Layout, t: usize, g: usize) -> Group {
    let (blocks, sums) = (a.row(t), a.row_sums(t));
    let mut q = [[0i8; 64]; 8];
    let (mut c, mut d) = ([0i32; GB], [0.0f32; GB]);
    let n = GB.min(a.nb - g * GB);
    for j in 0..n {
        let b = &blocks[g * GB + j];
        // A group of at most eight blocks (a row's last, shared by two rows:
        // see `rows`) holds them twice, in lanes `j` and `j + 8`.
        let lanes: &[usize] = if n <= GB / 2 { &[j, j + GB / 2] } else { &[j] };
        for &l in lanes {
            match layout {
                Layout::Quads => {
                    let (p, k) = (l / QB, l % QB);
                    q[2 * p][16 * k..16 * k + 16].copy_from_slice(&b.qs[..16]);
                    q[2 * p + 1][16 * k..16 * k + 16].copy_from_slice(&b.qs[16..]);
                }
                Layout::Transposed => {
                    for (i, q) in q.iter_mut().enumerate() {
                        q[4 * l..4 * l + 4].copy_from_slice(&b.qs[4 * i..4 * i + 4]);
                    }
                }
            }
            c[l] = -off * i32::from(sums[g * GB + j]);
            d[l] = b.d.to_f32();
        }
    }
    // SAFETY: each array is 64 readable bytes; the loads are unaligned.
    unsafe {
        Group {
            q: q.map(|q| _mm512_loadu_si512(q.as_ptr().cast())),
            c: _mm512_loadu_si512(c.as_ptr().cast()),
            d: _mm512_loadu_ps(d.as_ptr()),
        }
    }
}

/// Dword permute indices of the transposition's first stage (see
/// [`transpose`]): lanes `0..4` take lanes `4k + i` of the first register,
/// lanes `4..8` the same of the second, lanes `8..16` the same for `i + 1`.
const fn columns(i: u32) -> [u32; 16] {
    let mut idx = [0u32; 16];
    let mut l = 0;
    while l < 16 {
        let (col, src, k) = (i + (l / 8) as u32, (l / 4 % 2) as u32, (l % 4) as u32);
        idx[l] = 16 * src + 4 * k + col;
        l += 1;
    }
    idx
}
const COLUMNS_01: [u32; 16] = columns(0);
const COLUMNS_23: [u32; 16] = columns(2);

/// Dword permute indices taking the even (`first` 0) or odd (1) lanes of
/// two registers: lanes `0..8` from the first, `8..16` from the second.
const fn pairs(first: u32) -> [u32; 16] {
    let mut idx = [0u32; 16];
    let mut l = 0;
    while l < 16 {
        idx[l] = 2 * l as u32 + first;
        l += 1;
    }
    idx
}
const EVEN: [u32; 16] = pairs(0);
const ODD: [u32; 16] = pairs(1);

/// 16 dword indices as a register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn idx32(lanes: &[u32; 16]) -> __m512i {
    // SAFETY: 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
}

/// A Q8_0 group's sixteen weight scales, one f32 lane per block, from its
/// quads' gathered scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn scales_q8(u: &[Unpacked; QPG]) -> __m512 {
    let x01 = _mm512_unpacklo_epi64(u[0].d16, u[1].d16);
    let x23 = _mm512_unpacklo_epi64(u[2].d16, u[3].d16);
    let h = _mm256_inserti128_si256::<1>(_mm512_castsi512_si256(x01), _mm512_castsi512_si128(x23));
    _mm512_cvtph_ps(h)
}

/// A group's unpacked weights transposed to [`Layout::Transposed`]: register
/// `i` lane `j` holds elements `4i..4i + 4` of block `j`. Each half (the
/// quads' `lo`, then `hi`) is a 4 × 4 transposition of dwords between four
/// registers: one stage of two-source dword permutes, one of 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn transpose(u: &[Unpacked; QPG]) -> [__m512i; 8] {
    let (c01, c23) = (idx32(&COLUMNS_01), idx32(&COLUMNS_23));
    let half = |x: [__m512i; 4]| {
        let a01 = _mm512_permutex2var_epi32(x[0], c01, x[1]);
        let b01 = _mm512_permutex2var_epi32(x[0], c23, x[1]);
        let a23 = _mm512_permutex2var_epi32(x[2], c01, x[3]);
        let b23 = _mm512_permutex2var_epi32(x[2], c23, x[3]);
        [
            _mm512_shuffle_i64x2::<0x44>(a01, a23),
            _mm512_shuffle_i64x2::<0xee>(a01, a23),
            _mm512_shuffle_i64x2::<0x44>(b01, b23),
            _mm512_shuffle_i64x2::<0xee>(b01, b23),
        ]
    };
    let [r0, r1, r2, r3] = half(u.map(|u| u.lo));
    let [r4, r5, r6, r7] = half(u.map(|u| u.hi));
    [r0, r1, r2, r3, r4, r5, r6, r7]
}

/// Four registers of four dword lanes per block (block `4p + k`'s in lanes
/// `4k..4k + 4` of register `p`) summed to one lane per block (lane
/// `4p + k`): two stages of even-and-odd dword permutes and adds.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn sum_lanes(p: [__m512i; QPG]) -> __m512i {
    let (even, odd) = (idx32(&EVEN), idx32(&ODD));
    let pair = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(
            _mm512_permutex2var_epi32(x, even, y),
            _mm512_permutex2var_epi32(x, odd, y),
        )
    };
    pair(pair(p[0], p[1]), pair(p[2], p[3]))
}

/// One token's exact dots of a group's first `n_quads` quads `u` (those
/// past a row have none) with its activations `a` in [`Layout::Quads`],
/// offset by its `c`, one lane per block: two `vpdpbusd` per quad, then
/// [`sum_lanes`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn quad_dots(u: &[Unpacked; QPG], a: &Group, n_quads: usize) -> __m512i {
    let mut dots = [_mm512_setzero_si512(); QPG];
    for (p, (dot, u)) in dots.iter_mut().zip(u).enumerate() {
        if p < n_quads {
            let lo = _mm512_dpbusd_epi32(*dot, u.lo, a.q[2 * p]);
            *dot = _mm512_dpbusd_epi32(lo, u.hi, a.q[2 * p + 1]);
        }
    }
    _mm512_add_epi32(sum_lanes(dots), a.c)
}

/// `acc` plus one group's sixteen blocks: the exact integer dots `dot` (one
/// lane per block) times the activation scales `da`, then, fused, the weight
/// scales `dw`. Both walks end each group here, so their bits agree.
///
/// Lanes outside `mask` keep `acc`: a row's last group updates only the
/// lanes of its blocks (see [`last_lanes`]), so that the lanes past a row
/// stay as they were whatever the padding held.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn float_step(dot: __m512i, da: __m512, dw: __m512, acc: __m512, mask: __mmask16) -> __m512 {
    _mm512_mask3_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), da), dw, acc, mask)
}

/// Every lane of a group.
const ALL_LANES: __mmask16 = 0xffff;

/// The lanes of the blocks in the last group of a row of `nb` blocks.
#[inline]
fn last_lanes(nb: usize) -> __mmask16 {
    match nb % GB {
        0 => ALL_LANES,
        n => (1 << n) - 1,
    }
}

/// Whether rows of `nb` blocks go in pairs that share their last group:
/// when it holds at most eight blocks.
#[inline]
fn short_tail(nb: usize) -> bool {
    !nb.is_multiple_of(GB) && nb % GB <= GB / 2
}

/// Two rows' last groups, shared (`a`'s blocks in lanes `0..8`, `b`'s in
/// `8..16`; `dot` their exact dots, `da` the activation scales held twice,
/// `dw` both rows' weight scales): each row's float step as
/// [`float_step`] gives it, `b`'s lanes moved down first, so lane for lane
/// the same operations as apart. `nb` is the rows' length in blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn pair_step(
    dot: __m512i,
    da: __m512,
    dw: __m512,
    (acc_a, acc_b): (__m512, __m512),
    nb: usize,
) -> (__m512, __m512) {
    let x = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), da);
    let mask = last_lanes(nb);
    let high = |v: __m512| _mm512_shuffle_f32x4::<0xee>(v, v);
    (
        _mm512_mask3_fmadd_ps(x, dw, acc_a, mask),
        _mm512_mask3_fmadd_ps(high(x), high(dw), acc_b, mask),
    )
}

/// One token's exact dots of a transposed group `r` (one lane per block),
/// offset by its `c`: two chains of four `vpdpbusd` (eight in one chain
/// wait on each other's latency, and the compiler keeps each token's
/// together).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn token_dot(r: &[__m512i; 8], a: &Group) -> __m512i {
    let (mut lo, mut hi) = (a.c, _mm512_setzero_si512());
    for i in 0..4 {
        lo = _mm512_dpbusd_epi32(lo, r[i], a.q[i]);
        hi = _mm512_dpbusd_epi32(hi, r[i + 4], a.q[i + 4]);
    }
    _mm512_add_epi32(lo, hi)
}

/// `$n` quads of row `$w_row` from block `$first`, unpacked (quads past
/// the row zero, a partial one padded with zeros: they meet zero
/// activations or masked lanes). A macro rather than a function: as a
/// function returning the quads it was not inlined, and they went through
/// memory (a third slower).
macro_rules! quads {
    ($w_row:expr, $first:expr, $n:expr) => {{
        let (w_row, first): (&[_], usize) = ($w_row, $first);
        let zero = _mm512_setzero_si512();
        let mut u = [Unpacked {
            lo: zero,
            hi: zero,
            d16: zero,
        }; $n];
        // A constant trip count, so that the quads stay in registers (a loop
        // over the last group's quads spilled them); the branches go the
        // same way on every group but a row's last.
        let end = w_row.len();
        for (p, u) in u.iter_mut().enumerate() {
            let quad = &w_row[(first + p * QB).min(end)..(first + (p + 1) * QB).min(end)];
            if quad.len() == QB {
                // Two hints per quad's 136 bytes (blocks 0 and 2).
                for b in [0, 2] {
                    prefetch::stream(&quad[b]);
                }
                *u = unpack_q8(full_q8(quad));
            } else if !quad.is_empty() {
                // SAFETY: the quad's bytes are readable; a partial quad is
                // at most three blocks, under 192 bytes.
                *u = unpack_q8(unsafe { load_partial(quad.as_ptr().cast(), size_of_val(quad)) });
            }
        }
        u
    }};
}

/// The last groups of rows `wa` and `wb` (`ng` groups each), at most eight
/// blocks each: `wa`'s two quads, then `wb`'s, one group for the two.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn shared_tail(wa: &[BlockQ8_0], wb: &[BlockQ8_0], ng: usize) -> [Unpacked; QPG] {
    let first = (ng - 1) * GB;
    let [a0, a1] = quads!(wa, first, 2);
    let [b0, b1] = quads!(wb, first, 2);
    [a0, a1, b0, b1]
}

/// The rows of a product of `rows` rows of `nb` blocks in the order the
/// walks take them: each row's index and whether the next row goes with it
/// (see [`short_tail`]).
fn row_pairs(rows: usize, nb: usize) -> impl Iterator<Item = (usize, bool)> {
    let mut r = 0;
    std::iter::from_fn(move || {
        (r < rows).then(|| {
            let (at, pair) = (r, short_tail(nb) && r + 1 < rows);
            r += 1 + usize::from(pair);
            (at, pair)
        })
    })
}

/// `y = w · x` for each of `a.n_tok` tokens as a decode product: every
/// output row walks its weight blocks sixteen at a time, unpacks each
/// group once and accumulates it into every token's sum (up to [`TG`]
/// tokens in registers per pass over the row, which stays in L1 for
/// the next group of tokens). Each token's result is bitwise the one
/// it gets alone.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(in crate::quant) fn gemv_q8_0(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    /// One token's sum of one row from its groups in
    /// [`Layout::Quads`], before the lanes are added; the last
    /// group too unless `pair_tail`, when [`rows_one`] takes it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn row_one(w_row: &[BlockQ8_0], groups: &[Group], pair_tail: bool) -> __m512 {
        let mut acc = _mm512_setzero_ps();
        let (nb, ng) = (w_row.len(), groups.len());
        for (g, a) in groups[..ng - usize::from(pair_tail)].iter().enumerate() {
            let u = quads!(w_row, g * GB, QPG);
            // Quads past the row (in its last group) have no dots.
            let n_quads = (nb - g * GB).div_ceil(QB);
            let dot = quad_dots(&u, a, n_quads);
            let m = if g + 1 == ng {
                last_lanes(nb)
            } else {
                ALL_LANES
            };
            acc = float_step(dot, a.d, scales_q8(&u), acc, m);
        }
        acc
    }

    /// One token's sums of row `wa` and, if there is one, row `wb`,
    /// whose last groups (of at most eight blocks) the two share as
    /// [`rows`] does (the activations' last group holds its blocks
    /// twice). One call of [`row_one`] in a loop over the rows: with
    /// one call site it is inlined, and its constants stay in
    /// registers (called once per row, it reloaded them: a tenth of
    /// Q4_0's decode).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn rows_one(wa: &[BlockQ8_0], wb: Option<&[BlockQ8_0]>, groups: &[Group]) -> [f32; 2] {
        let pair = wb.is_some();
        let mut acc = [_mm512_setzero_ps(); 2];
        for (acc, w) in acc.iter_mut().zip([Some(wa), wb].into_iter().flatten()) {
            *acc = row_one(w, groups, pair);
        }
        if let Some(wb) = wb {
            let u = shared_tail(wa, wb, groups.len());
            let a = &groups[groups.len() - 1];
            let dot = quad_dots(&u, a, QPG);
            let (x, y) = pair_step(dot, a.d, scales_q8(&u), (acc[0], acc[1]), wa.len());
            acc = [x, y];
        }
        acc.map(|v| _mm512_reduce_add_ps(v))
    }

    /// `T` tokens' sums of one row, from their groups in
    /// [`Layout::Transposed`] (`ng` per token, token-major); the
    /// last group too unless `pair_tail`, when [`rows`] takes it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn row<const T: usize>(
        w_row: &[BlockQ8_0],
        groups: &[Group],
        ng: usize,
        pair_tail: bool,
    ) -> [__m512; T] {
        let mut acc = [_mm512_setzero_ps(); T];
        let mask = last_lanes(w_row.len());
        for g in 0..ng - usize::from(pair_tail) {
            let u = quads!(w_row, g * GB, QPG);
            let (r, dw) = (transpose(&u), scales_q8(&u));
            let m = if g + 1 == ng { mask } else { ALL_LANES };
            for (j, acc) in acc.iter_mut().enumerate() {
                let a = &groups[j * ng + g];
                *acc = float_step(token_dot(&r, a), a.d, dw, *acc, m);
            }
        }
        acc
    }

    /// `T` tokens' sums of row `wa` and, if there is one, row `wb`,
    /// whose last groups hold at most eight blocks: those two share
    /// one group, `wa`'s in lanes `0..8`, `wb`'s in `8..16` (the
    /// activations' last group holds its blocks twice), so that a
    /// row of 24 blocks costs one and a half groups rather than two.
    /// Lane for lane the same products as apart (see [`pair_step`]).
    /// One call of [`row`], in a loop over the rows (see
    /// [`rows_one`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn rows<const T: usize>(
        wa: &[BlockQ8_0],
        wb: Option<&[BlockQ8_0]>,
        groups: &[Group],
        ng: usize,
    ) -> [[f32; T]; 2] {
        let pair = wb.is_some();
        let mut acc = [[_mm512_setzero_ps(); T]; 2];
        for (acc, w) in acc.iter_mut().zip([Some(wa), wb].into_iter().flatten()) {
            *acc = row::<T>(w, groups, ng, pair);
        }
        if let Some(wb) = wb {
            let u = shared_tail(wa, wb, ng);
            let (r, dw) = (transpose(&u), scales_q8(&u));
            let [acc_a, acc_b] = &mut acc;
            for (j, (acc_a, acc_b)) in acc_a.iter_mut().zip(acc_b).enumerate() {
                let a = &groups[j * ng + ng - 1];
                (*acc_a, *acc_b) = pair_step(token_dot(&r, a), a.d, dw, (*acc_a, *acc_b), wa.len());
            }
        }
        acc.map(|acc| acc.map(|v| _mm512_reduce_add_ps(v)))
    }

    /// One token's sums of every row, as its own function (see the
    /// AVX2 decode product's `one`: inlined among the multi-token
    /// loops, the one-token loop streamed slower).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn one(w: &[BlockQ8_0], groups: &[Group], nb: usize, out: &mut OutTile<'_>, t: usize) {
        for (r, pair) in row_pairs(out.rows(), nb) {
            let wb = pair.then(|| &w[(r + 1) * nb..(r + 2) * nb]);
            let y = rows_one(&w[r * nb..(r + 1) * nb], wb, groups);
            for (i, &y) in y.iter().take(1 + usize::from(pair)).enumerate() {
                out.set(t, r + i, y);
            }
        }
    }

    /// Tokens `t0..t0 + T` (groups `gs`) of rows `r` and, with
    /// `pair`, `r + 1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
    fn tokens<const T: usize>(
        w: &[BlockQ8_0],
        gs: &[Group],
        (nb, ng): (usize, usize),
        out: &mut OutTile<'_>,
        (t0, r): (usize, usize),
        pair: bool,
    ) {
        let wb = pair.then(|| &w[(r + 1) * nb..(r + 2) * nb]);
        let y = rows::<T>(&w[r * nb..(r + 1) * nb], wb, gs, ng);
        for (i, y) in y.iter().take(1 + usize::from(pair)).enumerate() {
            put(out, t0, r + i, y);
        }
    }

    let (nb, n_tok) = (a.nb, a.n_tok);
    assert!(w.len() >= out.rows() * nb, "gemv: weights too short");
    let ng = nb.div_ceil(GB);
    let layout = if n_tok == 1 {
        Layout::Quads
    } else {
        Layout::Transposed
    };
    // Tokens whose groups fit the stack together (at least one).
    let per_pass = (STACK_GROUPS / ng).max(1);
    let mut t0 = 0;
    while t0 < n_tok {
        let n = per_pass.min(n_tok - t0);
        with_prepared::<_, _, STACK_GROUPS>(
            n * ng,
            &GROUPS,
            |i| group(a, 128, layout, t0 + i / ng, i % ng),
            |groups| {
                if layout == Layout::Quads {
                    return one(w, groups, nb, out, t0);
                }
                for (r, pair) in row_pairs(out.rows(), nb) {
                    let mut s = 0;
                    while s < n {
                        let m = (n - s).min(TG);
                        let gs = &groups[s * ng..(s + m) * ng];
                        let at = (t0 + s, r);
                        match m {
                            1 => tokens::<1>(w, gs, (nb, ng), out, at, pair),
                            2 => tokens::<2>(w, gs, (nb, ng), out, at, pair),
                            3 => tokens::<3>(w, gs, (nb, ng), out, at, pair),
                            4 => tokens::<4>(w, gs, (nb, ng), out, at, pair),
                            5 => tokens::<5>(w, gs, (nb, ng), out, at, pair),
                            6 => tokens::<6>(w, gs, (nb, ng), out, at, pair),
                            7 => tokens::<7>(w, gs, (nb, ng), out, at, pair),
                            _ => tokens::<TG>(w, gs, (nb, ng), out, at, pair),
                        }
                        s += m;
                    }
                }
            },
        );
        t0 += n;
    }
}
