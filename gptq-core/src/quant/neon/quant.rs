//! NEON's activation quantization (Q8_0 and Q8_K, both bit for bit the
//! reference's) and the Q8_0/Q4_0 products: an exact integer dot per
//! 32-element block (in four i32 lanes) by `sdot` or by widening multiplies,
//! then one float FMA by the product of the two scales; tiles of four rows by
//! one token (decode) or two rows by four tokens (prefill).

use std::arch::aarch64::*;
use std::arch::asm;
use std::array::from_fn;

use half::f16;

use super::h2f;
use crate::quant::tile::{OutTile, QuantActs};
use crate::quant::types::q8_k::quantize_row_q8_k;
use crate::quant::types::{BlockQ4_0, BlockQ8_0, BlockQ8K, QK, QK_K};

/// Quantizes one row of activations to Q8_0 and sums each block, exactly as the
/// scalar path: `d = amax/127`, values `round_ties_even(x · 127/amax)`.
pub(in crate::quant) fn quantize_q8_0(x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
    assert_eq!(x.len(), q.len() * QK, "quantize_acts: length mismatch");
    assert_eq!(q.len(), sums.len(), "quantize_acts: sums length mismatch");
    for ((xb, yb), s) in x.chunks_exact(QK).zip(q.iter_mut()).zip(sums.iter_mut()) {
        let xb: &[f32; QK] = xb.try_into().expect("chunks_exact yields whole blocks");
        *s = quantize_block(xb, yb);
    }
}

/// Quantizes one block; returns the sum of its quantized values.
#[inline(always)]
fn quantize_block(x: &[f32; QK], y: &mut BlockQ8_0) -> i16 {
    // SAFETY: NEON is part of the aarch64 baseline (the target enables it), so
    // the intrinsics are available; the loads read offsets 0, 4, .., 28 of a
    // 32-element array and the stores write 16 + 16 bytes of the 32-byte `qs`.
    unsafe {
        let v: [float32x4_t; 8] = from_fn(|k| vld1q_f32(x.as_ptr().add(4 * k)));
        // maxNum from zero skips NaNs, like the scalar `if |v| > m` fold.
        let mut m = vdupq_n_f32(0.0);
        for vk in &v {
            m = vmaxnmq_f32(m, vabsq_f32(*vk));
        }
        let amax = vmaxnmvq_f32(m);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        y.d = f16::from_f32(amax / 127.0);
        // Round to nearest, ties to even (as `round_ties_even`), then narrow with
        // saturation (as the saturating `as i8`).
        let i: [int32x4_t; 8] = from_fn(|k| vcvtnq_s32_f32(vmulq_n_f32(v[k], id)));
        let h: [int16x8_t; 4] = from_fn(|k| vqmovn_high_s32(vqmovn_s32(i[2 * k]), i[2 * k + 1]));
        let q0 = vqmovn_high_s16(vqmovn_s16(h[0]), h[1]);
        let q1 = vqmovn_high_s16(vqmovn_s16(h[2]), h[3]);
        vst1q_s8(y.qs.as_mut_ptr(), q0);
        vst1q_s8(y.qs.as_mut_ptr().add(16), q1);
        // |sum| <= 32 · 128, well inside i16.
        vaddlvq_s8(q0) + vaddlvq_s8(q1)
    }
}

/// Quantizes a row of activations to Q8_K: the reference
/// ([`quantize_row_q8_k`]) bit for bit. The first value of the largest
/// magnitude sets the scale with its sign (`iscale = -127/max`), values
/// round ties to even (`fcvtns`, as `round_ties_even`), `d = 1/iscale`.
/// Blocks holding a NaN or an infinity, or whose scale overflows (a
/// subnormal largest value), take the reference itself: there its
/// saturating conversions and NaN-skipping maximum differ from the vector
/// ones. Q8_K has no block sums beside its blocks (`_sums` is empty).
pub(in crate::quant) fn quantize_q8_k(x: &[f32], q: &mut [BlockQ8K], _sums: &mut [i16]) {
    assert_eq!(x.len(), q.len() * QK_K, "quantize_q8_k: length mismatch");
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.iter_mut()) {
        let xb: &[f32; QK_K] = xb.try_into().expect("chunks_exact yields whole blocks");
        quantize_block_q8_k(xb, qb);
    }
}

/// Quantizes one Q8_K block (see [`quantize_q8_k`]).
#[inline(always)]
fn quantize_block_q8_k(x: &[f32; QK_K], y: &mut BlockQ8K) {
    // SAFETY: base NEON (aarch64 baseline), on registers; the loads read
    // offsets 0, 4, .., 252 of a 256-element array.
    let amax = unsafe {
        // `fmax` (unlike `fmaxnm`) propagates NaNs: a block holding one gets
        // a NaN `amax` and goes to the reference below.
        let mut m = vdupq_n_f32(0.0);
        for k in 0..QK_K / 4 {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x.as_ptr().add(4 * k))));
        }
        vmaxvq_f32(m)
    };
    if amax == 0.0 {
        *y = BlockQ8K::ZERO;
        return;
    }
    if !amax.is_finite() {
        quantize_row_q8_k(x, std::slice::from_mut(y));
        return;
    }
    // The reference keeps the first value whose magnitude beats all before:
    // the first of magnitude `amax` (a maximum is exact, so one matches).
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        quantize_row_q8_k(x, std::slice::from_mut(y));
        return;
    }
    // SAFETY: base NEON (aarch64 baseline), on registers; the loads read
    // offsets 0, 4, .., 252 of a 256-element array, the stores write bytes
    // 16g .. 16g + 16 (g < 16) of the 256-byte `qs`.
    unsafe {
        let top = vdupq_n_s32(127);
        for (g, s) in y.bsums.iter_mut().enumerate() {
            // `v · iscale` is the reference's `iscale · v` (the product is
            // commutative); |v · iscale| <= 127 up to one rounding, so neither
            // the conversion nor the narrowing below saturates, and the `min`
            // is the reference's `min(127, ..)`.
            let i: [int32x4_t; 4] = from_fn(|k| {
                let v = vld1q_f32(x.as_ptr().add(16 * g + 4 * k));
                vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(v, iscale)), top)
            });
            let h0 = vqmovn_high_s32(vqmovn_s32(i[0]), i[1]);
            let h1 = vqmovn_high_s32(vqmovn_s32(i[2]), i[3]);
            let q = vqmovn_high_s16(vqmovn_s16(h0), h1);
            vst1q_s8(y.qs.as_mut_ptr().add(16 * g), q);
            // One sum per 16 values: |sum| <= 16 · 127, inside i16.
            *s = vaddlvq_s8(q);
        }
    }
    y.d = 1.0 / iscale;
}

// Integer block dots

/// How the 32 int8 products of a pair of blocks are summed into four i32 lanes.
pub(super) trait IntDot {
    /// `acc` plus the products `w[h][j] · a[h][j]`, spread over the four lanes.
    ///
    /// # Safety
    /// The CPU must support the instructions the implementation uses.
    unsafe fn dot(acc: int32x4_t, w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t;
}

/// `sdot`: each lane gains the sum of four adjacent products.
pub(super) struct Sdot;

impl IntDot for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
        // SAFETY: the caller guarantees the dotprod extension (trait contract);
        // SDOT reads and writes only the operand registers.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w0:v}.16b, {a0:v}.16b",
                "sdot {acc:v}.4s, {w1:v}.16b, {a1:v}.16b",
                acc = inout(vreg) acc,
                w0 = in(vreg) w[0],
                a0 = in(vreg) a[0],
                w1 = in(vreg) w[1],
                a1 = in(vreg) a[1],
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

/// Widening multiplies: i8·i8 → i16 (`smull`, `smull2`; |p| <= 2^14, exact),
/// then pairwise add-accumulate into i32 lanes (`sadalp`).
pub(super) struct Widen;

impl IntDot for Widen {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
        let mut acc = acc;
        for h in 0..2 {
            // SAFETY: base NEON, part of the aarch64 baseline.
            unsafe {
                acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w[h]), vget_low_s8(a[h])));
                acc = vpadalq_s16(acc, vmull_high_s8(w[h], a[h]));
            }
        }
        acc
    }
}

/// A quantized weight block the int8 kernels can consume.
pub(super) trait QBlock {
    /// Elements 0..16 and 16..32 as signed bytes.
    fn load(&self) -> [int8x16_t; 2];
    /// The block's scale.
    fn scale(&self) -> f16;
}

impl QBlock for BlockQ8_0 {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        // SAFETY: base NEON (aarch64 baseline); two 16-byte loads from the
        // 32-byte `qs` array.
        unsafe {
            [
                vld1q_s8(self.qs.as_ptr()),
                vld1q_s8(self.qs.as_ptr().add(16)),
            ]
        }
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl QBlock for BlockQ4_0 {
    #[inline(always)]
    fn load(&self) -> [int8x16_t; 2] {
        // SAFETY: base NEON (aarch64 baseline); one 16-byte load from the
        // 16-byte `qs` array.
        unsafe {
            let v = vld1q_u8(self.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            [vsubq_s8(lo, eight), vsubq_s8(hi, eight)]
        }
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

/// The exact integer dot of each block pair, `out[b] = Σ_j w[b]_j · a[b]_j`,
/// through the same `IntDot` the matrix kernels use (for the exact tests).
///
/// # Safety
/// As `D::dot`.
#[cfg(test)]
#[inline(always)]
pub(super) unsafe fn block_dots<D: IntDot, W: QBlock>(w: &[W], a: &[BlockQ8_0], out: &mut [i32]) {
    for ((wb, ab), o) in w.iter().zip(a).zip(out.iter_mut()) {
        // SAFETY: `D::dot` as the caller guarantees; the rest is base NEON.
        *o = unsafe { vaddvq_s32(D::dot(vdupq_n_s32(0), wb.load(), ab.load())) };
    }
}

/// Rows `i0 .. i0 + R` by tokens `t0 .. t0 + T` of a quantized product: per
/// block, the R·T integer dots, each followed by one float FMA (four lanes) by
/// the product of the scales; the lanes are added once at the end.
///
/// # Safety
/// As `D::dot`.
#[inline(always)]
unsafe fn tile_q<D: IntDot, W: QBlock, const R: usize, const T: usize>(
    w: &[W],
    a: &QuantActs<'_>,
    i0: usize,
    t0: usize,
    out: &mut OutTile<'_>,
) {
    let nb = a.nb;
    // Slices of exactly `nb` blocks, so that indexing by `b < nb` needs no check.
    let wr: [&[W]; R] = from_fn(|r| &w[(i0 + r) * nb..][..nb]);
    let ar: [&[BlockQ8_0]; T] = from_fn(|t| &a.blocks[(t0 + t) * nb..][..nb]);
    // SAFETY: `D::dot` as the caller guarantees; the rest is base NEON
    // (aarch64 baseline) on registers.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); T]; R];
        for b in 0..nb {
            let wq: [[int8x16_t; 2]; R] = from_fn(|r| wr[r][b].load());
            let wd: [f32; R] = from_fn(|r| h2f(wr[r][b].scale()));
            for t in 0..T {
                let ab = &ar[t][b];
                let aq = ab.load();
                let ad = h2f(ab.d);
                for r in 0..R {
                    let s = D::dot(vdupq_n_s32(0), wq[r], aq);
                    acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(s), wd[r] * ad);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (t, acc_rt) in acc_r.iter().enumerate() {
                out.set(t0 + t, i0 + r, vaddvq_f32(*acc_rt));
            }
        }
    }
}

/// Rows `i0 .. i0 + R` by every token: four tokens at a time, then one.
///
/// # Safety
/// As `D::dot`.
#[inline(always)]
unsafe fn rows_q<D: IntDot, W: QBlock, const R: usize>(
    w: &[W],
    a: &QuantActs<'_>,
    i0: usize,
    out: &mut OutTile<'_>,
) {
    let mut t = 0;
    while t + 4 <= a.n_tok {
        // SAFETY: forwarded from the caller.
        unsafe { tile_q::<D, W, R, 4>(w, a, i0, t, out) };
        t += 4;
    }
    while t < a.n_tok {
        // SAFETY: forwarded from the caller.
        unsafe { tile_q::<D, W, R, 1>(w, a, i0, t, out) };
        t += 1;
    }
}

/// A quantized matrix tile: four rows at a time for one token (decode), two
/// rows by four tokens otherwise (prefill); ragged edges one by one.
///
/// # Safety
/// As `D::dot`.
#[inline(always)]
unsafe fn gemm_q<D: IntDot, W: QBlock>(w: &[W], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    let rows = out.rows();
    assert!(
        w.len() >= rows * a.nb,
        "gemm: weights shorter than the tile"
    );
    assert!(
        a.blocks.len() >= a.n_tok * a.nb,
        "gemm: activations too short"
    );
    let mut i = 0;
    if a.n_tok == 1 {
        while i + 4 <= rows {
            // SAFETY: forwarded from the caller.
            unsafe { tile_q::<D, W, 4, 1>(w, a, i, 0, out) };
            i += 4;
        }
    } else {
        while i + 2 <= rows {
            // SAFETY: forwarded from the caller.
            unsafe { rows_q::<D, W, 2>(w, a, i, out) };
            i += 2;
        }
    }
    while i < rows {
        // SAFETY: forwarded from the caller.
        unsafe { rows_q::<D, W, 1>(w, a, i, out) };
        i += 1;
    }
}

/// Q8_0 weight rows times quantized activations, the block dots by `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub(in crate::quant) fn gemm_q8_0_sdot(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: this function is compiled with dotprod, which its callers
    // guarantee the CPU has; so `Sdot` may run.
    unsafe { gemm_q::<Sdot, BlockQ8_0>(w, a, out) }
}

/// Q4_0 weight rows times quantized activations, the block dots by `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub(in crate::quant) fn gemm_q4_0_sdot(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: as in `gemm_q8_0_sdot`.
    unsafe { gemm_q::<Sdot, BlockQ4_0>(w, a, out) }
}

/// Q8_0 weight rows times quantized activations, the block dots by widening
/// multiplies.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gemm_q8_0_widen(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: `Widen` uses base NEON only.
    unsafe { gemm_q::<Widen, BlockQ8_0>(w, a, out) }
}

/// Q4_0 weight rows times quantized activations, the block dots by widening
/// multiplies.
#[target_feature(enable = "neon")]
pub(in crate::quant) fn gemm_q4_0_widen(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: `Widen` uses base NEON only.
    unsafe { gemm_q::<Widen, BlockQ4_0>(w, a, out) }
}
