//! NEON products of the block types beyond Q8_0 and Q4_0: the K-quants and
//! IQ4_XS with Q8_K activations, Q4_1, Q5_0, Q5_1 and IQ4_NL with Q8_0
//! activations (and their exact block sums), BF16 with f32 activations.
//!
//! Every integer dot goes through the same two strategies as the Q8_0/Q4_0
//! kernels ([`IntDot`], extended here by [`Dot16`] for the types whose
//! scales cover 16 values): `sdot` on cores with the dot-product extension,
//! widening multiplies (`smull`, `sadalp`) on the others. The weights are
//! unpacked to signed bytes (every type's values fit: at most 6 bits plus a
//! sign, or IQ4's table of values in -127..113), so both strategies are
//! exact, and the sub-block scales multiply the i32 lanes (`mla`) exactly.
//!
//! Each weight row is unpacked once per group of four tokens (prefill) and
//! dotted with each of them, the tokens in chunks that stay in L1 while
//! every row of the tile passes over them; a token's sums never depend on
//! which other tokens share the call, so one entry serves decode, batched decode and
//! prefill, and a token alone gets bitwise the result it gets in a batch.
//!
//! The float side:
//! - K-quants and IQ4_XS: per super-block of 256 values the integer sums are
//!   reduced to one i32 and scaled by exactly the float operations of the
//!   scalar reference (`types/`), so these products equal the scalar twins
//!   bit for bit (the reduction costs a few instructions per 256 values);
//! - the 32-element types: one float FMA per block in four lanes (as the
//!   Q8_0 kernels; even and odd blocks in two accumulators), the lanes added
//!   at the end; only the order of the float sums differs from the
//!   reference (the twin tests bound the difference).

use std::arch::aarch64::*;
use std::arch::asm;
use std::array::from_fn;

use half::{bf16, f16};

use super::float::{FloatElem, gemm_f};
use super::h2f;
use super::quant::{IntDot, QBlock, Sdot, Widen};
use crate::quant::tile::{FloatActs, OutTile, QuantActs, grouped_chunk_tokens};
use crate::quant::types::iq4_nl::KVALUES;
use crate::quant::types::q4_k::scale_min;
use crate::quant::types::{
    ActBlock, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K,
    BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, VecDot,
};

// ---------------------------------------------------------------------------
// Loads and the 16-value integer dot.

/// 16 bytes from the start of `b`.
#[inline(always)]
fn ld_u8(b: &[u8]) -> uint8x16_t {
    assert!(b.len() >= 16);
    // SAFETY: base NEON (aarch64 baseline); `b` holds at least 16 readable
    // bytes (checked above); the load has no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// 16 signed bytes from the start of `b`.
#[inline(always)]
fn ld_s8(b: &[i8]) -> int8x16_t {
    assert!(b.len() >= 16);
    // SAFETY: as in `ld_u8`.
    unsafe { vld1q_s8(b.as_ptr()) }
}

/// 8 i16 from the start of `b`.
#[inline(always)]
fn ld_s16(b: &[i16]) -> int16x8_t {
    assert!(b.len() >= 8);
    // SAFETY: base NEON; `b` holds at least 8 readable values (checked).
    unsafe { vld1q_s16(b.as_ptr()) }
}

/// 32 signed activation bytes `q[off .. off + 32]` as two vectors.
#[inline(always)]
fn ld_s8x2(q: &[i8], off: usize) -> [int8x16_t; 2] {
    [ld_s8(&q[off..]), ld_s8(&q[off + 16..])]
}

/// Unsigned bytes (all below 128 here) as signed ones.
#[inline(always)]
fn s8(v: uint8x16_t) -> int8x16_t {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe { vreinterpretq_s8_u8(v) }
}

/// The integer dot of 16 value pairs: the K-quants with 16-value scales
/// scale each half of a 32-value dot on its own.
pub(super) trait Dot16: IntDot {
    /// `acc` plus the products `w[j] · a[j]`, spread over the four lanes.
    ///
    /// # Safety
    /// The CPU must support the instructions the implementation uses.
    unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t;
}

impl Dot16 for Sdot {
    #[inline(always)]
    unsafe fn dot16(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: the caller guarantees the dotprod extension (trait
        // contract); SDOT reads and writes only the operand registers.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

impl Dot16 for Widen {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // i8·i8 products fit i16 exactly; `sadalp` widens each pair to i32.
        // SAFETY: base NEON (aarch64 baseline), on registers only.
        unsafe {
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(a)));
            vpadalq_s16(acc, vmull_high_s8(w, a))
        }
    }
}

/// The 32-value dot of `w` and `a` from zero.
///
/// # Safety
/// As `D::dot`.
#[inline(always)]
unsafe fn dot32<D: IntDot>(w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
    // SAFETY: forwarded from the caller.
    unsafe { D::dot(vdupq_n_s32(0), w, a) }
}

/// The 16-value dot of `w` and `a` from zero.
///
/// # Safety
/// As `D::dot16`.
#[inline(always)]
unsafe fn dot16<D: Dot16>(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: forwarded from the caller.
    unsafe { D::dot16(vdupq_n_s32(0), w, a) }
}

/// `Σ_j m[j] · s[j]` of eight small unsigned factors and eight i16 sums,
/// exact in i32 (the minimum terms of Q4_K and Q5_K).
#[inline(always)]
fn mins_dot8(m: uint8x8_t, s: int16x8_t) -> i32 {
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        let m = vreinterpretq_s16_u16(vmovl_u8(m));
        let p = vmull_s16(vget_low_s16(m), vget_low_s16(s));
        vaddvq_s32(vmlal_high_s16(p, m, s))
    }
}

// ---------------------------------------------------------------------------
// The row walk every entry shares.

/// A weight block type with a NEON dot of one row against several tokens.
pub(super) trait RowDot: VecDot {
    /// The dot of the row `w` with each token `a[t]` (the same number of
    /// blocks), given each token's block sums `s[t]` where the partner keeps
    /// them beside its blocks (else empty slices).
    ///
    /// # Safety
    /// The CPU must support `D`'s instructions.
    unsafe fn row_dot<D: Dot16, const T: usize>(
        w: &[Self],
        a: [&[Self::Partner]; T],
        s: [&[i16]; T],
    ) -> [f32; T];
}

/// The block sums of token `t`, or nothing where the partner keeps none.
#[inline(always)]
fn token_sums<'a, A: ActBlock>(a: &QuantActs<'a, A>, t: usize) -> &'a [i16] {
    if A::SUMS { a.row_sums(t) } else { &[] }
}

/// Every output of the tile: each weight row against four tokens at a time,
/// then the rest one by one. The tokens go in chunks whose activations stay
/// in L1 while every row of the tile passes over them (the x86 paths' rule,
/// [`grouped_chunk_tokens`]): rows outermost over all tokens, every row
/// would read all tokens' activations from L2 again (450 KB per row at 512
/// tokens of 768 columns of Q8_K). A token's sums are the same whatever its
/// chunk or group (the same instructions in the same order per token).
///
/// # Safety
/// The CPU must support `D`'s instructions.
#[inline(always)]
unsafe fn gemm<D: Dot16, W: RowDot>(w: &[W], a: &QuantActs<'_, W::Partner>, out: &mut OutTile<'_>) {
    let (rows, nb) = (out.rows(), a.nb);
    assert!(w.len() >= rows * nb, "gemm: weights shorter than the tile");
    assert!(
        a.blocks.len() >= a.n_tok * nb,
        "gemm: activations too short"
    );
    if <W::Partner as ActBlock>::SUMS {
        assert!(a.sums.len() >= a.n_tok * nb, "gemm: block sums too short");
    }
    let chunk = grouped_chunk_tokens::<W::Partner>(nb, 4);
    let mut t0 = 0;
    while t0 < a.n_tok {
        let t1 = (t0 + chunk).min(a.n_tok);
        for i in 0..rows {
            let wr = &w[i * nb..][..nb];
            let mut t = t0;
            while t + 4 <= t1 {
                let acts: [_; 4] = from_fn(|k| a.row(t + k));
                let sums: [_; 4] = from_fn(|k| token_sums(a, t + k));
                // SAFETY: forwarded from the caller.
                let y = unsafe { W::row_dot::<D, 4>(wr, acts, sums) };
                for (k, v) in y.into_iter().enumerate() {
                    out.set(t + k, i, v);
                }
                t += 4;
            }
            while t < t1 {
                // SAFETY: forwarded from the caller.
                let [v] = unsafe { W::row_dot::<D, 1>(wr, [a.row(t)], [token_sums(a, t)]) };
                out.set(t, i, v);
                t += 1;
            }
        }
        t0 = t1;
    }
}

/// Panics unless every token has as many blocks as the row.
#[inline(always)]
fn same_lengths<W, A, const T: usize>(w: &[W], a: &[&[A]; T]) {
    for at in a {
        assert_eq!(at.len(), w.len(), "dot: length mismatch");
    }
}

// ---------------------------------------------------------------------------
// The K-quants and IQ4_XS: a super-block of 256 values in sub-blocks with
// integer scales, unpacked to signed bytes ([`KBlock`]) for both the
// grouped dot here and the prefill strips (`strip_k`).

/// A super-block unpacked: its 256 values as signed bytes (register `r`
/// values `16r .. 16r + 16`), the sub-blocks' integer scales and minimums
/// (the first [`KBlock::SUBS`] of each; minimums zero for the types
/// without), and the two float scales.
pub(super) struct KVals {
    pub(super) v: [int8x16_t; 16],
    pub(super) sc: [i32; 16],
    pub(super) mins: [u8; 16],
    pub(super) d: f32,
    pub(super) dmin: f32,
}

/// A K-quant (or IQ4_XS) block as the NEON kernels read it: value `i` of
/// sub-block `s` is `d·sc[s]·v[i]` (`− dmin·mins[s]` with [`MIN`](Self::MIN)).
pub(super) trait KBlock: Copy {
    /// Sub-blocks per super-block: 8 of 32 values or 16 of 16.
    const SUBS: usize;
    /// Whether the type has minimums.
    const MIN: bool;
    /// The block unpacked.
    fn unpack(&self) -> KVals;
}

/// Q4_K's and Q5_K's values (Q5_K with the fifth bits), their eight 6-bit
/// scales and minimums.
fn unpack_k4(d: f16, dmin: f16, scales: &[u8; 12], qs: &[u8; 128], qh: Option<&[u8; 32]>) -> KVals {
    // SAFETY: base NEON (aarch64 baseline), on registers; the loads through
    // the bounds-checked `ld_*` helpers.
    unsafe {
        let m4 = vdupq_n_u8(0x0f);
        let mut sc = [0i32; 16];
        let mut mins = [0u8; 16];
        for j in 0..8 {
            let (s, m) = scale_min(j, scales);
            (sc[j], mins[j]) = (i32::from(s), m);
        }
        // The fifth bits of values l and 16 + l of each 32, shifted down by
        // two per 64 values.
        let mut hb = qh.map(|qh| [ld_u8(&qh[..]), ld_u8(&qh[16..])]);
        let mut v = [vdupq_n_s8(0); 16];
        for j in 0..4 {
            let q = [ld_u8(&qs[32 * j..]), ld_u8(&qs[32 * j + 16..])];
            let mut lo = q.map(|v| vandq_u8(v, m4));
            let mut hi = q.map(|v| vshrq_n_u8::<4>(v));
            if let Some(h) = hb.as_mut() {
                for k in 0..2 {
                    lo[k] = vorrq_u8(lo[k], vshlq_n_u8::<4>(vandq_u8(h[k], vdupq_n_u8(1))));
                    hi[k] = vorrq_u8(hi[k], vshlq_n_u8::<3>(vandq_u8(h[k], vdupq_n_u8(2))));
                    h[k] = vshrq_n_u8::<2>(h[k]);
                }
            }
            // Values 64j .. 64j + 32 (scale 2j), then 64j + 32 .. 64j + 64.
            [v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]] =
                [s8(lo[0]), s8(lo[1]), s8(hi[0]), s8(hi[1])];
        }
        KVals {
            v,
            sc,
            mins,
            d: h2f(d),
            dmin: h2f(dmin),
        }
    }
}

impl KBlock for BlockQ4K {
    const SUBS: usize = 8;
    const MIN: bool = true;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        unpack_k4(self.d, self.dmin, &self.scales, &self.qs, None)
    }
}

impl KBlock for BlockQ5K {
    const SUBS: usize = 8;
    const MIN: bool = true;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        unpack_k4(self.d, self.dmin, &self.scales, &self.qs, Some(&self.qh))
    }
}

/// Q6_K: values `(ql | qh << 4) - 32`, each 16 with its signed scale.
impl KBlock for BlockQ6K {
    const SUBS: usize = 16;
    const MIN: bool = false;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        // SAFETY: base NEON (aarch64 baseline), on registers; the loads
        // through the bounds-checked `ld_*` helpers.
        unsafe {
            let (m4, m3, off) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
            let mut v = [vdupq_n_s8(0); 16];
            for h in 0..2 {
                // Value 128h + 32k + l (l < 32): low bits in ql[64h + 32(k % 2) +
                // l] (low nibble for k < 2), high bits 2k..2k+2 of qh[32h + l].
                let ql0 = [ld_u8(&self.ql[64 * h..]), ld_u8(&self.ql[64 * h + 16..])];
                let ql1 = [
                    ld_u8(&self.ql[64 * h + 32..]),
                    ld_u8(&self.ql[64 * h + 48..]),
                ];
                let mut qh = [ld_u8(&self.qh[32 * h..]), ld_u8(&self.qh[32 * h + 16..])];
                for k in 0..4 {
                    let low = match k {
                        0 => ql0.map(|v| vandq_u8(v, m4)),
                        1 => ql1.map(|v| vandq_u8(v, m4)),
                        2 => ql0.map(|v| vshrq_n_u8::<4>(v)),
                        _ => ql1.map(|v| vshrq_n_u8::<4>(v)),
                    };
                    for e in 0..2 {
                        let u = vorrq_u8(low[e], vshlq_n_u8::<4>(vandq_u8(qh[e], m3)));
                        v[8 * h + 2 * k + e] = vsubq_s8(s8(u), off);
                    }
                    qh = qh.map(|x| vshrq_n_u8::<2>(x));
                }
            }
            KVals {
                v,
                sc: self.scales.map(i32::from),
                mins: [0; 16],
                d: h2f(self.d),
                dmin: 0.0,
            }
        }
    }
}

/// Q3_K: values `low2 - 4` where the high bit is clear (else `low2`), each
/// 16 with its signed 6-bit scale (offset by 32).
impl KBlock for BlockQ3K {
    const SUBS: usize = 16;
    const MIN: bool = false;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        // SAFETY: base NEON (aarch64 baseline), on registers; the loads
        // through the bounds-checked `ld_*` helpers.
        unsafe {
            let (m3, four) = (vdupq_n_u8(3), vdupq_n_u8(4));
            let hm = [ld_u8(&self.hmask[..]), ld_u8(&self.hmask[16..])];
            let mut v = [vdupq_n_s8(0); 16];
            for h in 0..2 {
                // Value 128h + 32k + l: bits 2k..2k+2 of qs[32h + l], high bit
                // 4h + k of hmask[l].
                let mut q = [ld_u8(&self.qs[32 * h..]), ld_u8(&self.qs[32 * h + 16..])];
                for k in 0..4 {
                    let bit = vdupq_n_u8(1 << (4 * h + k));
                    for e in 0..2 {
                        let u = vorrq_u8(vandq_u8(q[e], m3), vandq_u8(vtstq_u8(hm[e], bit), four));
                        v[8 * h + 2 * k + e] = vsubq_s8(s8(u), s8(four));
                    }
                    q = q.map(|x| vshrq_n_u8::<2>(x));
                }
            }
            KVals {
                v,
                sc: self.scales().map(i32::from),
                mins: [0; 16],
                d: h2f(self.d),
                dmin: 0.0,
            }
        }
    }
}

/// Q2_K: values `q` (0..4), each 16 with the low nibble of its scale byte;
/// the high nibbles are the minimums.
impl KBlock for BlockQ2K {
    const SUBS: usize = 16;
    const MIN: bool = true;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        // SAFETY: base NEON (aarch64 baseline), on registers; the loads
        // through the bounds-checked `ld_*` helpers.
        unsafe {
            let m3 = vdupq_n_u8(3);
            let mut v = [vdupq_n_s8(0); 16];
            for h in 0..2 {
                // Value 128h + 32k + l: bits 2k..2k+2 of qs[32h + l].
                let mut q = [ld_u8(&self.qs[32 * h..]), ld_u8(&self.qs[32 * h + 16..])];
                for k in 0..4 {
                    v[8 * h + 2 * k] = s8(vandq_u8(q[0], m3));
                    v[8 * h + 2 * k + 1] = s8(vandq_u8(q[1], m3));
                    q = q.map(|x| vshrq_n_u8::<2>(x));
                }
            }
            KVals {
                v,
                sc: self.scales.map(|s| i32::from(s & 0x0f)),
                mins: self.scales.map(|s| s >> 4),
                d: h2f(self.d),
                dmin: h2f(self.dmin),
            }
        }
    }
}

/// IQ4's sixteen values, for `tbl` lookups.
#[inline(always)]
fn iq4_table() -> int8x16_t {
    ld_s8(&KVALUES)
}

/// IQ4_XS: table values, each 32 with its signed 6-bit scale.
impl KBlock for BlockIq4Xs {
    const SUBS: usize = 8;
    const MIN: bool = false;
    #[inline(always)]
    fn unpack(&self) -> KVals {
        // SAFETY: base NEON (aarch64 baseline), on registers; the loads
        // through the bounds-checked `ld_*` helpers.
        unsafe {
            let (m4, table) = (vdupq_n_u8(0x0f), iq4_table());
            let mut v = [vdupq_n_s8(0); 16];
            let mut sc = [0i32; 16];
            for s in 0..8 {
                // Values 32s + l: the low nibbles of qs[16s + l] for l < 16, the
                // high ones after.
                let q = ld_u8(&self.qs[16 * s..]);
                v[2 * s] = vqtbl1q_s8(table, vandq_u8(q, m4));
                v[2 * s + 1] = vqtbl1q_s8(table, vshrq_n_u8::<4>(q));
                sc[s] = i32::from(self.scale(s));
            }
            KVals {
                v,
                sc,
                mins: [0; 16],
                d: h2f(self.d),
                dmin: 0.0,
            }
        }
    }
}

/// `Σ_s mins[s]·Σa` over the sub-blocks of one Q8_K block: against its
/// sixteen 16-value sums, pairwise for 32-value sub-blocks; exact in i32.
#[inline(always)]
pub(super) fn min_dot<W: KBlock>(mins: &[u8; 16], bsums: &[i16; 16]) -> i32 {
    // SAFETY: base NEON (aarch64 baseline), on registers; the loads through
    // the bounds-checked `ld_*` helpers and from an 8-byte array.
    unsafe {
        if W::SUBS == 8 {
            let pairs = vpaddq_s16(ld_s16(&bsums[..]), ld_s16(&bsums[8..]));
            return mins_dot8(vld1_u8(mins.as_ptr()), pairs);
        }
        let m = ld_u8(mins);
        let m = [
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m))),
            vreinterpretq_s16_u16(vmovl_high_u8(m)),
        ];
        let s = [ld_s16(&bsums[..]), ld_s16(&bsums[8..])];
        let mut p = vmull_s16(vget_low_s16(m[0]), vget_low_s16(s[0]));
        p = vmlal_high_s16(p, m[0], s[0]);
        p = vmlal_s16(p, vget_low_s16(m[1]), vget_low_s16(s[1]));
        p = vmlal_high_s16(p, m[1], s[1]);
        vaddvq_s32(p)
    }
}

/// A K-quant row against Q8_K: per super-block `Σ sc·Σ q·a` and `Σ m·bsum`,
/// exact in i32, then the reference's float formula.
///
/// # Safety
/// The CPU must support `D`'s instructions.
#[inline(always)]
unsafe fn dot_k<D: Dot16, W: KBlock, const T: usize>(w: &[W], a: [&[BlockQ8K]; T]) -> [f32; T] {
    same_lengths(w, &a);
    // SAFETY: `D`'s instructions, as the caller guarantees; the rest is base
    // NEON (aarch64 baseline) on registers, the loads through the
    // bounds-checked `ld_*` helpers.
    unsafe {
        let mut sum = [0.0f32; T];
        for (b, wb) in w.iter().enumerate() {
            let k = wb.unpack();
            let mut isum = [vdupq_n_s32(0); T];
            for s in 0..W::SUBS {
                for t in 0..T {
                    let p = if W::SUBS == 8 {
                        dot32::<D>([k.v[2 * s], k.v[2 * s + 1]], ld_s8x2(&a[t][b].qs, 32 * s))
                    } else {
                        dot16::<D>(k.v[s], ld_s8(&a[t][b].qs[16 * s..]))
                    };
                    isum[t] = vmlaq_n_s32(isum[t], p, k.sc[s]);
                }
            }
            for t in 0..T {
                let ab = &a[t][b];
                let isum = vaddvq_s32(isum[t]);
                if W::MIN {
                    let imin = min_dot::<W>(&k.mins, &ab.bsums);
                    sum[t] += (ab.d * k.d) * isum as f32 - (ab.d * k.dmin) * imin as f32;
                } else {
                    sum[t] += (ab.d * k.d) * isum as f32;
                }
            }
        }
        sum
    }
}

macro_rules! row_dot_k {
    ($($blk:ty),* $(,)?) => {$(
        impl RowDot for $blk {
            #[inline(always)]
            unsafe fn row_dot<D: Dot16, const T: usize>(
                w: &[Self],
                a: [&[BlockQ8K]; T],
                _s: [&[i16]; T],
            ) -> [f32; T] {
                // SAFETY: forwarded from the caller.
                unsafe { dot_k::<D, Self, T>(w, a) }
            }
        }
    )*};
}

row_dot_k!(BlockQ4K, BlockQ5K, BlockQ6K, BlockQ3K, BlockQ2K, BlockIq4Xs);

// ---------------------------------------------------------------------------
// The 32-element types (Q8_0 activations with exact block sums).

/// A 32-element weight block whose values unpack to signed bytes
/// ([`QBlock`]), with or without a minimum `m` (value `d·q + m`).
pub(super) trait Q32Block: QBlock {
    /// Whether the block has a minimum.
    const HAS_MIN: bool;
    /// The minimum (zero for the types without).
    fn min(&self) -> f16;
}

/// 16 packed bytes as the 32 nibbles in value order: low nibbles (values
/// 0..16), then high nibbles (16..32).
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    let v = ld_u8(qs);
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe { [vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v)] }
}

/// The 32 bits of `qh` (bit `j` for value `j`) as bytes: 16 where set,
/// else 0.
#[inline(always)]
fn fifth_bits(qh: [u8; 4]) -> [uint8x16_t; 2] {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = ld_u8(&BITS);
    // SAFETY: base NEON (aarch64 baseline), on registers only.
    unsafe {
        let sixteen = vdupq_n_u8(16);
        let spread = |a: u8, b: u8| vcombine_u8(vdup_n_u8(a), vdup_n_u8(b));
        [
            vandq_u8(vtstq_u8(spread(qh[0], qh[1]), bits), sixteen),
            vandq_u8(vtstq_u8(spread(qh[2], qh[3]), bits), sixteen),
        ]
    }
}

impl Q32Block for BlockQ8_0 {
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn min(&self) -> f16 {
        f16::ZERO
    }
}

impl Q32Block for BlockQ4_0 {
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn min(&self) -> f16 {
        f16::ZERO
    }
}

impl QBlock for BlockQ4_1 {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        nibbles(&self.qs).map(s8)
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl Q32Block for BlockQ4_1 {
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn min(&self) -> f16 {
        self.m
    }
}

impl QBlock for BlockQ5_1 {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        let (n, h) = (nibbles(&self.qs), fifth_bits(self.qh));
        // SAFETY: base NEON (aarch64 baseline), on registers only.
        unsafe { [s8(vorrq_u8(n[0], h[0])), s8(vorrq_u8(n[1], h[1]))] }
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl Q32Block for BlockQ5_1 {
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn min(&self) -> f16 {
        self.m
    }
}

impl QBlock for BlockQ5_0 {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        let (n, h) = (nibbles(&self.qs), fifth_bits(self.qh));
        // SAFETY: base NEON (aarch64 baseline), on registers only.
        unsafe {
            let off = vdupq_n_s8(16);
            [
                vsubq_s8(s8(vorrq_u8(n[0], h[0])), off),
                vsubq_s8(s8(vorrq_u8(n[1], h[1])), off),
            ]
        }
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl Q32Block for BlockQ5_0 {
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn min(&self) -> f16 {
        f16::ZERO
    }
}

impl QBlock for BlockIq4Nl {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        let table = iq4_table();
        // SAFETY: base NEON (aarch64 baseline), on registers only.
        nibbles(&self.qs).map(|n| unsafe { vqtbl1q_s8(table, n) })
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl Q32Block for BlockIq4Nl {
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn min(&self) -> f16 {
        f16::ZERO
    }
}

/// A 32-element type against Q8_0: per block the exact integer dot, one
/// FMA in four lanes by `d·d_a` (even and odd blocks apart), and where the type has a minimum,
/// `m·(d_a·Σa)` from the exact block sum (as the reference groups it).
///
/// # Safety
/// As `D::dot`.
#[inline(always)]
unsafe fn dot_32<D: IntDot, W: Q32Block, const T: usize>(
    w: &[W],
    a: [&[BlockQ8_0]; T],
    s: [&[i16]; T],
) -> [f32; T] {
    same_lengths(w, &a);
    if W::HAS_MIN {
        same_lengths(w, &s);
    }
    // SAFETY: `D`'s instructions, as the caller guarantees; the rest is base
    // NEON (aarch64 baseline) on registers, the loads through the
    // bounds-checked `ld_*` helpers.
    unsafe {
        // Two accumulators per token (even and odd blocks), so that one
        // token alone (decode) does not wait on a single FMA chain.
        let mut acc = [[vdupq_n_f32(0.0); 2]; T];
        let mut accm = [0.0f32; T];
        for (b, wb) in w.iter().enumerate() {
            let wq = wb.load();
            let wd = h2f(wb.scale());
            let wm = if W::HAS_MIN { h2f(wb.min()) } else { 0.0 };
            for t in 0..T {
                let ab = &a[t][b];
                let ad = h2f(ab.d);
                let p = dot32::<D>(wq, ab.load());
                acc[t][b & 1] = vfmaq_n_f32(acc[t][b & 1], vcvtq_f32_s32(p), wd * ad);
                if W::HAS_MIN {
                    accm[t] += wm * (ad * f32::from(s[t][b]));
                }
            }
        }
        from_fn(|t| {
            let v = vaddvq_f32(vaddq_f32(acc[t][0], acc[t][1]));
            if W::HAS_MIN { v + accm[t] } else { v }
        })
    }
}

macro_rules! row_dot_32 {
    ($($blk:ty),* $(,)?) => {$(
        impl RowDot for $blk {
            #[inline(always)]
            unsafe fn row_dot<D: Dot16, const T: usize>(
                w: &[Self],
                a: [&[BlockQ8_0]; T],
                s: [&[i16]; T],
            ) -> [f32; T] {
                // SAFETY: forwarded from the caller.
                unsafe { dot_32::<D, Self, T>(w, a, s) }
            }
        }
    )*};
}

row_dot_32!(BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockIq4Nl);

// ---------------------------------------------------------------------------
// BF16: the float product with bf16 weights.

impl FloatElem for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values; bf16 is a
        // transparent u16, so reading them as u16 is sound.
        // A bf16 is the top half of an f32: shifting it up 16 bits is exact.
        unsafe {
            let u = vld1q_u16(p.cast::<u16>());
            [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(u))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(u)),
            ]
        }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// BF16 weight rows times float activations (the F16 kernel's tiles).
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gemm_bf16(w: &[bf16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    gemm_f(w, x, out)
}

// ---------------------------------------------------------------------------
// The table entries: `_sdot` with dotprod, `_widen` with base NEON.

macro_rules! entries {
    ($($blk:ty => $sdot:ident, $widen:ident;)*) => {$(
        #[doc = concat!("NEON product of ", stringify!($blk), " weights, the integer dots by `sdot`.")]
        #[target_feature(enable = "neon,dotprod")]
        pub(in crate::quant) fn $sdot(
            w: &[$blk],
            a: &QuantActs<'_, <$blk as VecDot>::Partner>,
            out: &mut OutTile<'_>,
        ) {
            // SAFETY: this function is compiled with dotprod, which its
            // callers (the verified `neon+dotprod` table) guarantee the CPU
            // has; so `Sdot` may run.
            unsafe { gemm::<Sdot, $blk>(w, a, out) }
        }

        #[doc = concat!("NEON product of ", stringify!($blk), " weights, the integer dots by widening multiplies.")]
        #[target_feature(enable = "neon")]
        pub(in crate::quant) fn $widen(
            w: &[$blk],
            a: &QuantActs<'_, <$blk as VecDot>::Partner>,
            out: &mut OutTile<'_>,
        ) {
            // SAFETY: `Widen` uses base NEON only.
            unsafe { gemm::<Widen, $blk>(w, a, out) }
        }
    )*};
}

entries! {
    BlockQ4K => gemm_q4_k_sdot, gemm_q4_k_widen;
    BlockQ5K => gemm_q5_k_sdot, gemm_q5_k_widen;
    BlockQ6K => gemm_q6_k_sdot, gemm_q6_k_widen;
    BlockQ3K => gemm_q3_k_sdot, gemm_q3_k_widen;
    BlockQ2K => gemm_q2_k_sdot, gemm_q2_k_widen;
    BlockIq4Xs => gemm_iq4_xs_sdot, gemm_iq4_xs_widen;
    BlockQ4_1 => gemm_q4_1_sdot, gemm_q4_1_widen;
    BlockQ5_0 => gemm_q5_0_sdot, gemm_q5_0_widen;
    BlockQ5_1 => gemm_q5_1_sdot, gemm_q5_1_widen;
    BlockIq4Nl => gemm_iq4_nl_sdot, gemm_iq4_nl_widen;
}
