//! The NEON kernel path (aarch64).
//!
//! Two tables share everything but the int8 block dot of the quantized matrix
//! products:
//! - [`NEON_DOTPROD`] sums each block with `sdot` (ARMv8.2 dot product; written
//!   with `asm!` because the `vdotq_s32` intrinsic is not stable yet);
//! - [`NEON`] uses widening multiplies (`smull`, then `sadalp` into i32 lanes),
//!   for cores without the extension (Cortex-A53, A72, ...).
//!
//! [`best_table`] picks one at run time. The quantized products keep ggml's
//! scheme: an exact integer dot per 32-element block (in four i32 lanes), then
//! one float FMA by the product of the two scales. Each call computes a tile of
//! several weight rows by one token (decode: each activation block serves four
//! rows) or by four tokens (prefill: each weight block serves four tokens).
//! The float helpers accept any length; the elements past the last full vector
//! go through the scalar code.

use std::arch::aarch64::*;
use std::arch::asm;
use std::array::from_fn;

use half::f16;

use super::blocks::{BlockQ4_0, BlockQ8_0, QK};
use super::dispatch::KernelTable;
use super::scalar;
use super::tile::{FloatActs, OutTile, QuantActs};

/// NEON with `sdot` for the int8 block dots.
pub(super) static NEON_DOTPROD: KernelTable = KernelTable {
    quantize_acts,
    gemm_q8_0: gemm_q8_0_sdot,
    gemm_q4_0: gemm_q4_0_sdot,
    // The tiles compute every (row, token) alone: any token count gives each
    // token the sums it gets alone.
    gemv_q8_0: gemm_q8_0_sdot,
    gemv_q4_0: gemm_q4_0_sdot,
    gemm_f16,
    gemm_f32,
    dot_f32,
    dot_f16,
    axpy_f32,
    axpy_f16,
    layer_norm,
    gelu,
    add,
    softmax,
    attend_f32: None,
    attend_f16: None,
    attend_head_f32: None,
};

/// NEON with widening multiplies for the int8 block dots.
pub(super) static NEON: KernelTable = KernelTable {
    quantize_acts,
    gemm_q8_0: gemm_q8_0_widen,
    gemm_q4_0: gemm_q4_0_widen,
    gemv_q8_0: gemm_q8_0_widen,
    gemv_q4_0: gemm_q4_0_widen,
    gemm_f16,
    gemm_f32,
    dot_f32,
    dot_f16,
    axpy_f32,
    axpy_f16,
    layer_norm,
    gelu,
    add,
    softmax,
    attend_f32: None,
    attend_f16: None,
    attend_head_f32: None,
};

/// Whether this CPU has the dot-product instructions (`sdot`).
pub(super) fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The best NEON table for this CPU.
pub(super) fn best_table() -> &'static KernelTable {
    if has_dotprod() { &NEON_DOTPROD } else { &NEON }
}

/// `"neon+dotprod"` or `"neon"` when `table` is one of the NEON tables.
pub(super) fn variant(table: &KernelTable) -> Option<&'static str> {
    if std::ptr::eq(table, &NEON_DOTPROD) {
        Some("neon+dotprod")
    } else if std::ptr::eq(table, &NEON) {
        Some("neon")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Conversions

/// One f16 scale to f32 (`fcvt`, base ARMv8 floating point; exact).
#[inline(always)]
fn h2f(h: f16) -> f32 {
    let out: f32;
    // SAFETY: `fcvt s, h` is in the base ARMv8-A FP set every aarch64 target
    // has; it reads and writes only the operand registers.
    unsafe {
        asm!(
            "fcvt {o:s}, {i:h}",
            i = in(vreg) h.to_bits() as i16,
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// Eight f16 values (as bits) to two f32 vectors (`fcvtl`, `fcvtl2`: base
/// Advanced SIMD; exact, including subnormals, infinities and NaNs).
#[inline(always)]
fn f16x8_to_f32(h: uint16x8_t) -> [float32x4_t; 2] {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: FCVTL/FCVTL2 are base Advanced SIMD instructions (no FP16
    // extension needed); they touch only the operand registers. `lo` is an
    // early-clobber output, so it never overwrites `h` before the second read.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = lateout(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    [lo, hi]
}

/// Loads eight f16 values from `p` as f32.
///
/// # Safety
/// `p .. p + 8` must be readable.
#[inline(always)]
unsafe fn load_f16x8(p: *const f16) -> [float32x4_t; 2] {
    // SAFETY: the caller guarantees eight readable values; f16 is a
    // transparent u16, so reading them as u16 is sound.
    f16x8_to_f32(unsafe { vld1q_u16(p.cast::<u16>()) })
}

// ---------------------------------------------------------------------------
// Activation quantization

/// Quantizes one row of activations to Q8_0 and sums each block, exactly as the
/// scalar path: `d = amax/127`, values `round_ties_even(x · 127/amax)`.
fn quantize_acts(x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
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

// ---------------------------------------------------------------------------
// Integer block dots

/// How the 32 int8 products of a pair of blocks are summed into four i32 lanes.
trait IntDot {
    /// `acc` plus the products `w[h][j] · a[h][j]`, spread over the four lanes.
    ///
    /// # Safety
    /// The CPU must support the instructions the implementation uses.
    unsafe fn dot(acc: int32x4_t, w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t;
}

/// `sdot`: each lane gains the sum of four adjacent products.
struct Sdot;

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
struct Widen;

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
trait QBlock {
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
unsafe fn block_dots<D: IntDot, W: QBlock>(w: &[W], a: &[BlockQ8_0], out: &mut [i32]) {
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

#[target_feature(enable = "neon,dotprod")]
fn gemm_q8_0_sdot_tf(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: this function is compiled with dotprod enabled, and is only
    // entered after the CPU was found to have it.
    unsafe { gemm_q::<Sdot, BlockQ8_0>(w, a, out) }
}

#[target_feature(enable = "neon,dotprod")]
fn gemm_q4_0_sdot_tf(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: as in `gemm_q8_0_sdot_tf`.
    unsafe { gemm_q::<Sdot, BlockQ4_0>(w, a, out) }
}

#[target_feature(enable = "neon")]
fn gemm_q8_0_widen_tf(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: `Widen` uses base NEON only.
    unsafe { gemm_q::<Widen, BlockQ8_0>(w, a, out) }
}

#[target_feature(enable = "neon")]
fn gemm_q4_0_widen_tf(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: `Widen` uses base NEON only.
    unsafe { gemm_q::<Widen, BlockQ4_0>(w, a, out) }
}

fn gemm_q8_0_sdot(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(has_dotprod(), "gemm_q8_0: this CPU has no dotprod");
    // SAFETY: the CPU has dotprod (checked above) and NEON (aarch64 baseline).
    unsafe { gemm_q8_0_sdot_tf(w, a, out) }
}

fn gemm_q4_0_sdot(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    assert!(has_dotprod(), "gemm_q4_0: this CPU has no dotprod");
    // SAFETY: the CPU has dotprod (checked above) and NEON (aarch64 baseline).
    unsafe { gemm_q4_0_sdot_tf(w, a, out) }
}

fn gemm_q8_0_widen(w: &[BlockQ8_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { gemm_q8_0_widen_tf(w, a, out) }
}

fn gemm_q4_0_widen(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { gemm_q4_0_widen_tf(w, a, out) }
}

// ---------------------------------------------------------------------------
// Float matrix products

/// A float weight element type.
trait FloatElem: Copy {
    /// Eight values from `p` as f32.
    ///
    /// # Safety
    /// `p .. p + 8` must be readable.
    unsafe fn load8(p: *const Self) -> [float32x4_t; 2];
    /// The value as f32.
    fn get(self) -> f32;
}

impl FloatElem for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { [vld1q_f32(p), vld1q_f32(p.add(4))] }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}

impl FloatElem for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { load_f16x8(p) }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// Rows `i0 .. i0 + R` by tokens `t0 .. t0 + T` of a float product, eight
/// columns per step in two accumulators each, the ragged tail in scalar.
#[inline(always)]
fn tile_f<W: FloatElem, const R: usize, const T: usize>(
    w: &[W],
    x: &FloatActs<'_>,
    i0: usize,
    t0: usize,
    out: &mut OutTile<'_>,
) {
    let cols = x.cols;
    let wr: [&[W]; R] = from_fn(|r| &w[(i0 + r) * cols..][..cols]);
    let xr: [&[f32]; T] = from_fn(|t| &x.x[(t0 + t) * cols..][..cols]);
    let n8 = cols / 8 * 8;
    // SAFETY: base NEON (aarch64 baseline); every load reads columns
    // c .. c + 8 <= cols of a row slice of length `cols`.
    unsafe {
        let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
        let mut c = 0;
        while c < n8 {
            let wv: [[float32x4_t; 2]; R] = from_fn(|r| W::load8(wr[r].as_ptr().add(c)));
            for t in 0..T {
                let xv = f32::load8(xr[t].as_ptr().add(c));
                for r in 0..R {
                    acc[r][t][0] = vfmaq_f32(acc[r][t][0], wv[r][0], xv[0]);
                    acc[r][t][1] = vfmaq_f32(acc[r][t][1], wv[r][1], xv[1]);
                }
            }
            c += 8;
        }
        for r in 0..R {
            for t in 0..T {
                let mut s = vaddvq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1]));
                for (wv, xv) in wr[r][n8..].iter().zip(&xr[t][n8..]) {
                    s += wv.get() * xv;
                }
                out.set(t0 + t, i0 + r, s);
            }
        }
    }
}

#[inline(always)]
fn rows_f<W: FloatElem, const R: usize>(
    w: &[W],
    x: &FloatActs<'_>,
    i0: usize,
    out: &mut OutTile<'_>,
) {
    let mut t = 0;
    while t + 4 <= x.n_tok {
        tile_f::<W, R, 4>(w, x, i0, t, out);
        t += 4;
    }
    while t < x.n_tok {
        tile_f::<W, R, 1>(w, x, i0, t, out);
        t += 1;
    }
}

#[inline(always)]
fn gemm_f<W: FloatElem>(w: &[W], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    let rows = out.rows();
    assert!(
        w.len() >= rows * x.cols,
        "gemm: weights shorter than the tile"
    );
    assert!(x.x.len() >= x.n_tok * x.cols, "gemm: activations too short");
    let mut i = 0;
    if x.n_tok == 1 {
        while i + 4 <= rows {
            tile_f::<W, 4, 1>(w, x, i, 0, out);
            i += 4;
        }
    } else {
        while i + 2 <= rows {
            rows_f::<W, 2>(w, x, i, out);
            i += 2;
        }
    }
    while i < rows {
        rows_f::<W, 1>(w, x, i, out);
        i += 1;
    }
}

#[target_feature(enable = "neon")]
fn gemm_f16_tf(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    gemm_f(w, x, out)
}

#[target_feature(enable = "neon")]
fn gemm_f32_tf(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    gemm_f(w, x, out)
}

fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { gemm_f16_tf(w, x, out) }
}

fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { gemm_f32_tf(w, x, out) }
}

// ---------------------------------------------------------------------------
// Vector helpers

/// Σ x·y over `n` elements of `x` (`W`) and `y` (f32): 16 per step in four
/// accumulators, then the tail in scalar.
#[inline(always)]
fn dot_vec<W: FloatElem>(x: &[W], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot: length mismatch");
    let n = x.len();
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read elements
    // i + 8h .. i + 8h + 8 <= n of both slices.
    let mut s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for h in 0..2 {
                let (xv, yv) = (W::load8(px.add(i + 8 * h)), f32::load8(py.add(i + 8 * h)));
                acc[2 * h] = vfmaq_f32(acc[2 * h], xv[0], yv[0]);
                acc[2 * h + 1] = vfmaq_f32(acc[2 * h + 1], xv[1], yv[1]);
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for (a, b) in x[i..].iter().zip(&y[i..]) {
        s += a.get() * b;
    }
    s
}

#[target_feature(enable = "neon")]
fn dot_f32_tf(x: &[f32], y: &[f32]) -> f32 {
    dot_vec(x, y)
}

#[target_feature(enable = "neon")]
fn dot_f16_tf(x: &[f16], y: &[f32]) -> f32 {
    dot_vec(x, y)
}

fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { dot_f32_tf(x, y) }
}

fn dot_f16(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { dot_f16_tf(x, y) }
}

/// `y += alpha · x`, a multiply then an add (as the scalar path: equal results).
#[inline(always)]
fn axpy_vec<W: FloatElem>(alpha: f32, x: &[W], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    let n = x.len();
    let px = x.as_ptr();
    let py = y.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: base NEON (aarch64 baseline); i + 8 <= n, the length of both
        // slices; `y` is borrowed mutably, so nothing else touches it.
        unsafe {
            let xv = W::load8(px.add(i));
            let yv = f32::load8(py.add(i));
            vst1q_f32(py.add(i), vaddq_f32(yv[0], vmulq_n_f32(xv[0], alpha)));
            vst1q_f32(py.add(i + 4), vaddq_f32(yv[1], vmulq_n_f32(xv[1], alpha)));
        }
        i += 8;
    }
    for (o, v) in y[i..].iter_mut().zip(&x[i..]) {
        *o += alpha * v.get();
    }
}

#[target_feature(enable = "neon")]
fn axpy_f32_tf(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_vec(alpha, x, y)
}

#[target_feature(enable = "neon")]
fn axpy_f16_tf(alpha: f32, x: &[f16], y: &mut [f32]) {
    axpy_vec(alpha, x, y)
}

fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { axpy_f32_tf(alpha, x, y) }
}

fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { axpy_f16_tf(alpha, x, y) }
}

#[target_feature(enable = "neon")]
fn add_tf(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "add: length mismatch");
    let n = x.len();
    let px = x.as_ptr();
    let py = y.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n, the length of both slices; `y` is exclusively
        // borrowed.
        unsafe {
            vst1q_f32(
                py.add(i),
                vaddq_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i))),
            )
        };
        i += 4;
    }
    scalar::add(&x[i..], &mut y[i..]);
}

/// `y += x`
fn add(x: &[f32], y: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { add_tf(x, y) }
}

/// Σ x, 16 per step in four accumulators, the tail in scalar.
#[inline(always)]
fn sum_vec(x: &[f32]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read i + 4k .. i + 4k + 4 <= n.
    let mut s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = vaddq_f32(*a, vld1q_f32(p.add(i + 4 * k)));
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for v in &x[i..] {
        s += v;
    }
    s
}

/// Σ (x - mean)², as `sum_vec`.
#[inline(always)]
fn sq_dev_vec(x: &[f32], mean: f32) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut i = 0;
    // SAFETY: base NEON (aarch64 baseline); the loads read i + 4k .. i + 4k + 4 <= n.
    let mut s = unsafe {
        let m = vdupq_n_f32(mean);
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let d = vsubq_f32(vld1q_f32(p.add(i + 4 * k)), m);
                *a = vfmaq_f32(*a, d, d);
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    for v in &x[i..] {
        s += (v - mean) * (v - mean);
    }
    s
}

#[target_feature(enable = "neon")]
fn layer_norm_tf(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() == n && b.len() == n && out.len() == n && n > 0);
    let mean = sum_vec(x) / n as f32;
    let var = sq_dev_vec(x, mean) / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    let (px, pw, pb, po) = (x.as_ptr(), w.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let m = vdupq_n_f32(mean);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n, the length of all four slices; `out` is
        // exclusively borrowed.
        unsafe {
            let d = vmulq_n_f32(vsubq_f32(vld1q_f32(px.add(i)), m), inv);
            let v = vaddq_f32(vmulq_f32(d, vld1q_f32(pw.add(i))), vld1q_f32(pb.add(i)));
            vst1q_f32(po.add(i), v);
        }
        i += 4;
    }
    for j in i..n {
        out[j] = (x[j] - mean) * inv * w[j] + b[j];
    }
}

/// `out = (x - mean) / sqrt(var + eps) · w + b`
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { layer_norm_tf(x, w, b, eps, out) }
}

/// e^x for four lanes: `2^n · p(r)`, `n = round(x·log2 e)`, `r = x - n·ln 2`
/// (in two parts), `p` the degree-7 Taylor polynomial (|r| <= 0.35: relative
/// error below 1e-8 before rounding). Inputs are clamped to [-87, 88], so
/// `2^n` stays a normal float: large negative inputs give about 1.6e-38
/// instead of a subnormal or zero.
#[inline(always)]
fn exp_vec(x: float32x4_t) -> float32x4_t {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0x3f318000: few bits, so n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    // SAFETY: base NEON (aarch64 baseline), registers only.
    unsafe {
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
        let n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
        let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
        let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
        let mut p = vdupq_n_f32(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
        vmulq_f32(p, vreinterpretq_f32_s32(e))
    }
}

#[target_feature(enable = "neon")]
fn gelu_tf(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let n = x.len();
    let p = x.as_mut_ptr();
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n; `x` is exclusively borrowed.
        unsafe {
            let u = vld1q_f32(p.add(i));
            let u3 = vmulq_f32(vmulq_f32(u, u), u);
            let z = vmulq_n_f32(vfmaq_n_f32(u, u3, 0.044_715), SQRT_2_OVER_PI);
            // 0.5·u·(1 + tanh z) = u / (1 + e^(-2z)): no cancellation for u < 0.
            let e = exp_vec(vmulq_n_f32(z, -2.0));
            vst1q_f32(p.add(i), vdivq_f32(u, vaddq_f32(one, e)));
        }
        i += 4;
    }
    scalar::gelu(&mut x[i..]);
}

/// GPT-2's GELU (tanh approximation), in place.
fn gelu(x: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { gelu_tf(x) }
}

#[target_feature(enable = "neon")]
fn softmax_tf(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n.
        // maxNum skips NaNs, as `f32::max` does in the scalar path.
        mv = vmaxnmq_f32(mv, unsafe { vld1q_f32(p.add(i)) });
        i += 4;
    }
    let max = x[i..].iter().fold(vmaxnmvq_f32(mv), |m, &v| m.max(v));
    let m = vdupq_n_f32(max);
    let mut sv = vdupq_n_f32(0.0);
    i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n; `x` is exclusively borrowed.
        unsafe {
            let e = exp_vec(vsubq_f32(vld1q_f32(p.add(i)), m));
            vst1q_f32(p.add(i), e);
            sv = vaddq_f32(sv, e);
        }
        i += 4;
    }
    let mut sum = vaddvq_f32(sv);
    for v in x[i..].iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n; `x` is exclusively borrowed.
        unsafe { vst1q_f32(p.add(i), vmulq_n_f32(vld1q_f32(p.add(i)), inv)) };
        i += 4;
    }
    for v in x[i..].iter_mut() {
        *v *= inv;
    }
}

/// Softmax in place, stable (the maximum is subtracted first).
fn softmax(x: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline: every CPU this code runs on has it.
    unsafe { softmax_tf(x) }
}

#[cfg(test)]
mod tests {
    //! Every NEON kernel against its scalar twin: bit for bit where the
    //! arithmetic is the same (activation quantization, integer block dots,
    //! axpy, add), within float rounding (relative to Σ|terms|) elsewhere.

    use super::*;
    use crate::quant::dispatch::{KernelPath, Kernels};
    use crate::quant::matmul::{MatmulScratch, matmul};
    use crate::quant::matrix::{Matrix, WeightData};

    /// GPT-2's row lengths (n_embd of the four sizes, 3·768, 4·768).
    const GPT2: [usize; 6] = [768, 1024, 1280, 1600, 2304, 3072];

    /// Every multiple of 32 from 32 to 4096.
    fn block_lengths() -> impl Iterator<Item = usize> {
        (QK..=4096).step_by(QK)
    }

    /// xorshift64*: small, seeded, good enough for test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform in [-1, 1).
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn i8(&mut self) -> i8 {
            self.next() as i8
        }
        /// Values with a per-32 magnitude spread over six decades.
        fn floats(&mut self, n: usize) -> Vec<f32> {
            let mut scale = 1.0;
            (0..n)
                .map(|i| {
                    if i % QK == 0 {
                        scale = 10f32.powf(self.f() * 3.0);
                    }
                    self.f() * scale
                })
                .collect()
        }
        fn q8_blocks(&mut self, n: usize) -> Vec<BlockQ8_0> {
            (0..n)
                .map(|_| BlockQ8_0 {
                    d: f16::from_f32(0.001 + 0.1 * self.f().abs()),
                    qs: from_fn(|_| self.i8()),
                })
                .collect()
        }
        fn q4_blocks(&mut self, n: usize) -> Vec<BlockQ4_0> {
            (0..n)
                .map(|_| BlockQ4_0 {
                    d: f16::from_f32(0.1 * self.f()),
                    qs: from_fn(|_| self.next() as u8),
                })
                .collect()
        }
    }

    /// The tables to test: the widening one always, `sdot` when the CPU has it.
    fn tables() -> Vec<(&'static str, &'static KernelTable)> {
        let mut v = vec![("neon", &NEON)];
        if has_dotprod() {
            v.push(("neon+dotprod", &NEON_DOTPROD));
        } else {
            eprintln!("this CPU has no dotprod: only the widening table is tested");
        }
        v
    }

    fn quantize_scalar(x: &[f32], n_tok: usize) -> (Vec<BlockQ8_0>, Vec<i16>) {
        let nb = x.len() / n_tok / QK;
        let mut q = vec![BlockQ8_0::ZERO; n_tok * nb];
        let mut s = vec![0i16; n_tok * nb];
        for t in 0..n_tok {
            scalar::quantize_acts(
                &x[t * nb * QK..(t + 1) * nb * QK],
                &mut q[t * nb..(t + 1) * nb],
                &mut s[t * nb..(t + 1) * nb],
            );
        }
        (q, s)
    }

    fn q8_bits(q: &[BlockQ8_0]) -> Vec<(u16, [i8; QK])> {
        q.iter().map(|b| (b.d.to_bits(), b.qs)).collect()
    }

    fn assert_quantize_identical(x: &[f32], what: &str) {
        let n = x.len() / QK;
        let (want, want_s) = quantize_scalar(x, 1);
        let mut got = vec![BlockQ8_0::ZERO; n];
        let mut got_s = vec![0i16; n];
        quantize_acts(x, &mut got, &mut got_s);
        assert_eq!(q8_bits(&got), q8_bits(&want), "quantize_acts {what}");
        assert_eq!(got_s, want_s, "block sums {what}");
    }

    #[test]
    fn quantize_acts_bit_identical_on_every_length() {
        let mut rng = Rng(1);
        for n in block_lengths().chain(GPT2) {
            let x = rng.floats(n);
            assert_quantize_identical(&x, &format!("n={n}"));
        }
    }

    /// Blocks that probe the corners: zeros, exact ties after scaling, the
    /// largest and smallest floats, subnormals, huge and tiny magnitudes side by
    /// side, one non-zero value, negative zero.
    fn extreme_blocks(rng: &mut Rng) -> Vec<f32> {
        let mut blocks: Vec<[f32; QK]> = vec![
            [0.0; QK],
            [-0.0; QK],
            from_fn(|j| if j == 0 { 127.0 } else { j as f32 - 15.5 }),
            from_fn(|j| {
                if j == 5 {
                    -127.0
                } else {
                    (j as f32 - 16.0) * 0.5
                }
            }),
            from_fn(|j| if j % 2 == 0 { f32::MAX } else { -f32::MAX }),
            from_fn(|j| if j == 3 { f32::MAX } else { 1.0 }),
            from_fn(|j| f32::from_bits(1 + j as u32)),
            from_fn(|j| -f32::from_bits(0x007f_ffff - j as u32)),
            from_fn(|j| f32::MIN_POSITIVE * (j as f32 - 16.0)),
            from_fn(|j| 1e30 * (j as f32 - 16.0)),
            from_fn(|j| 1e-30 * (j as f32 + 1.0)),
            from_fn(|j| if j == 7 { 1e20 } else { 1e-20 }),
            from_fn(|j| if j == 31 { -3.0 } else { 0.0 }),
            [-1.5; QK],
            // NaNs are skipped by the maximum and quantize to 0, infinities
            // give an infinite scale; both paths alike.
            from_fn(|j| if j % 3 == 0 { f32::NAN } else { j as f32 }),
            [f32::NAN; QK],
            from_fn(|j| if j == 9 { f32::INFINITY } else { 1.0 }),
            from_fn(|j| if j == 9 { f32::NEG_INFINITY } else { f32::NAN }),
        ];
        for _ in 0..16 {
            // Half-integers at scale 1 (amax 127): every value is a tie.
            blocks.push(from_fn(|j| {
                if j == 0 {
                    127.0
                } else {
                    (rng.below(254) as f32 - 127.0) + 0.5
                }
            }));
        }
        blocks.concat()
    }

    #[test]
    fn quantize_acts_bit_identical_on_extremes() {
        let mut rng = Rng(2);
        let x = extreme_blocks(&mut rng);
        for (k, b) in x.chunks(QK).enumerate() {
            assert_quantize_identical(b, &format!("extreme block {k}"));
        }
        assert_quantize_identical(&x, "all extreme blocks in one row");
    }

    /// The exact integer dot of each block pair, by definition.
    fn int_dots_q8(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> Vec<i32> {
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                w.qs.iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| i32::from(p) * i32::from(q))
                    .sum()
            })
            .collect()
    }

    fn int_dots_q4(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> Vec<i32> {
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                (0..QK / 2)
                    .map(|j| {
                        (i32::from(w.qs[j] & 0x0f) - 8) * i32::from(a.qs[j])
                            + (i32::from(w.qs[j] >> 4) - 8) * i32::from(a.qs[j + QK / 2])
                    })
                    .sum()
            })
            .collect()
    }

    fn check_block_dots(w8: &[BlockQ8_0], w4: &[BlockQ4_0], a: &[BlockQ8_0]) {
        let n = a.len();
        let want8 = int_dots_q8(w8, a);
        let want4 = int_dots_q4(w4, a);
        let mut got = vec![0i32; n];
        // SAFETY: `Widen` uses base NEON only.
        unsafe { block_dots::<Widen, _>(w8, a, &mut got) };
        assert_eq!(got, want8, "widen q8_0");
        // SAFETY: as above.
        unsafe { block_dots::<Widen, _>(w4, a, &mut got) };
        assert_eq!(got, want4, "widen q4_0");
        if has_dotprod() {
            // SAFETY: the CPU has dotprod (checked above).
            unsafe { block_dots_sdot(w8, a, &mut got) };
            assert_eq!(got, want8, "sdot q8_0");
            // SAFETY: as above.
            unsafe { block_dots_sdot(w4, a, &mut got) };
            assert_eq!(got, want4, "sdot q4_0");
        }
    }

    /// `block_dots` with `sdot`, compiled with dotprod enabled.
    ///
    /// # Safety
    /// The CPU must have dotprod.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn block_dots_sdot<W: QBlock>(w: &[W], a: &[BlockQ8_0], out: &mut [i32]) {
        // SAFETY: this function runs with dotprod (caller contract).
        unsafe { block_dots::<Sdot, W>(w, a, out) }
    }

    #[test]
    fn integer_block_dots_exact() {
        let mut rng = Rng(3);
        // Random blocks over the whole i8 range (weights may hold -128).
        let n = 4096;
        let w8 = rng.q8_blocks(n);
        let w4 = rng.q4_blocks(n);
        let a = rng.q8_blocks(n);
        check_block_dots(&w8, &w4, &a);
        // Extremes: every product at its largest, smallest and mixed.
        let q8 = |v: [i8; QK]| BlockQ8_0 { d: f16::ONE, qs: v };
        let q4 = |v: [u8; QK / 2]| BlockQ4_0 { d: f16::ONE, qs: v };
        let pairs = [
            ([127i8; QK], 0x00u8, [127i8; QK]),
            ([-128; QK], 0x00, [-128; QK]),
            ([-128; QK], 0xff, [127; QK]),
            ([127; QK], 0xf0, [-128; QK]),
            ([0; QK], 0x88, [127; QK]),
            (
                from_fn(|j| if j % 2 == 0 { -128 } else { 127 }),
                0x0f,
                from_fn(|j| if j % 2 == 0 { -127 } else { 127 }),
            ),
        ];
        let w8: Vec<_> = pairs.iter().map(|p| q8(p.0)).collect();
        let w4: Vec<_> = pairs.iter().map(|p| q4([p.1; QK / 2])).collect();
        let a: Vec<_> = pairs.iter().map(|p| q8(p.2)).collect();
        check_block_dots(&w8, &w4, &a);
    }

    /// Σ_b Σ_j |w_j · a_j| · |d_w d_a| of each weight row against each token.
    fn abs_terms<W>(w: &[W], a: &[BlockQ8_0], nb: usize, r: usize, t: usize) -> f64
    where
        W: QBlock,
    {
        let mut s = 0.0f64;
        for b in 0..nb {
            let wb = &w[r * nb + b];
            let ab = &a[t * nb + b];
            let mut wv = [0i8; QK];
            // SAFETY: base NEON stores into a 32-byte array.
            unsafe {
                let l = wb.load();
                vst1q_s8(wv.as_mut_ptr(), l[0]);
                vst1q_s8(wv.as_mut_ptr().add(16), l[1]);
            }
            let ints: f64 = wv
                .iter()
                .zip(&ab.qs)
                .map(|(&p, &q)| (i32::from(p) * i32::from(q)).abs() as f64)
                .sum();
            s += ints * f64::from(wb.scale().to_f32() * ab.d.to_f32()).abs();
        }
        s
    }

    /// Runs a quantized kernel and its scalar twin on `rows` weight rows and
    /// `n_tok` tokens; every output within float rounding of the other.
    #[allow(clippy::too_many_arguments)]
    fn check_gemm_q<W: QBlock>(
        name: &str,
        kernel: fn(&[W], &QuantActs<'_>, &mut OutTile<'_>),
        twin: fn(&[W], &QuantActs<'_>, &mut OutTile<'_>),
        w: &[W],
        x: &[f32],
        rows: usize,
        n_tok: usize,
        cols: usize,
    ) {
        let nb = cols / QK;
        let (q, s) = quantize_scalar(x, n_tok);
        let acts = QuantActs {
            blocks: &q,
            sums: &s,
            n_tok,
            nb,
        };
        let mut got = vec![f32::NAN; n_tok * rows];
        let mut want = vec![f32::NAN; n_tok * rows];
        kernel(w, &acts, &mut OutTile::whole(&mut got, n_tok, rows));
        twin(w, &acts, &mut OutTile::whole(&mut want, n_tok, rows));
        for t in 0..n_tok {
            for r in 0..rows {
                let (g, e) = (got[t * rows + r], want[t * rows + r]);
                let tol =
                    (nb + 8) as f64 * f64::from(f32::EPSILON) * abs_terms(w, &q, nb, r, t) + 1e-40;
                assert!(
                    (f64::from(g) - f64::from(e)).abs() <= tol,
                    "{name} rows={rows} cols={cols} n_tok={n_tok} r={r} t={t}: {g} vs {e} (tol {tol})"
                );
            }
        }
    }

    /// Every NEON table's Q8_0 and Q4_0 products of `w8` and `w4` against the
    /// scalar ones, for `n_tok` tokens of `x`.
    #[allow(clippy::too_many_arguments)]
    fn check_tables(
        what: &str,
        w8: &[BlockQ8_0],
        w4: &[BlockQ4_0],
        x: &[f32],
        rows: usize,
        n_tok: usize,
        cols: usize,
    ) {
        for (name, table) in tables() {
            let n8 = format!("{name} q8_0{what}");
            let n4 = format!("{name} q4_0{what}");
            check_gemm_q(
                &n8,
                table.gemm_q8_0,
                scalar::gemm_q8_0,
                w8,
                x,
                rows,
                n_tok,
                cols,
            );
            check_gemm_q(
                &n4,
                table.gemm_q4_0,
                scalar::gemm_q4_0,
                w4,
                x,
                rows,
                n_tok,
                cols,
            );
        }
    }

    fn check_both_types(rng: &mut Rng, rows: usize, cols: usize, n_tok: usize) {
        let nb = cols / QK;
        let w8 = rng.q8_blocks(rows * nb);
        let w4 = rng.q4_blocks(rows * nb);
        let x = rng.floats(n_tok * cols);
        check_tables("", &w8, &w4, &x, rows, n_tok, cols);
    }

    #[test]
    fn gemm_quantized_on_every_length() {
        let mut rng = Rng(4);
        for cols in block_lengths().chain(GPT2) {
            // 7 rows: 4 + 1 + 1 + 1 for decode, 2 + 2 + 2 + 1 for prefill;
            // 6 tokens: 4 + 1 + 1.
            check_both_types(&mut rng, 7, cols, 1);
            check_both_types(&mut rng, 7, cols, 6);
        }
    }

    #[test]
    fn gemm_quantized_ragged_rows_and_tokens() {
        let mut rng = Rng(5);
        for cols in [32, 96, 160] {
            for rows in 1..=9 {
                for n_tok in 1..=9 {
                    check_both_types(&mut rng, rows, cols, n_tok);
                }
            }
        }
    }

    #[test]
    fn gemm_quantized_gpt2_shapes() {
        let mut rng = Rng(6);
        // Attention QKV and MLP up/down of GPT-2 small, decode and a prefill.
        check_both_types(&mut rng, 2304, 768, 1);
        check_both_types(&mut rng, 3072, 768, 5);
        check_both_types(&mut rng, 768, 3072, 1);
        // The other sizes' row lengths, a few rows each.
        for cols in GPT2 {
            check_both_types(&mut rng, 19, cols, 3);
        }
    }

    #[test]
    fn gemm_quantized_lm_head_50257_rows() {
        // The tied LM head, once: decode over the whole vocabulary.
        let mut rng = Rng(7);
        check_both_types(&mut rng, 50257, 768, 1);
    }

    #[test]
    fn gemm_quantized_extremes() {
        let mut rng = Rng(8);
        let (rows, cols, n_tok) = (6, 160, 5);
        let nb = cols / QK;
        let mut w8 = rng.q8_blocks(rows * nb);
        let mut w4 = rng.q4_blocks(rows * nb);
        // Row 0 all zero, row 1 the largest f16 scale and extreme values, row 2
        // subnormal f16 scales, row 3 a mix of zero and huge blocks.
        for b in 0..nb {
            w8[b] = BlockQ8_0::ZERO;
            w4[b] = BlockQ4_0::ZERO;
            w8[nb + b] = BlockQ8_0 {
                d: f16::MAX,
                qs: from_fn(|j| if (j + b) % 2 == 0 { -128 } else { 127 }),
            };
            w4[nb + b] = BlockQ4_0 {
                d: f16::MIN,
                qs: [if b % 2 == 0 { 0x0f } else { 0xf0 }; QK / 2],
            };
            w8[2 * nb + b].d = f16::from_bits(1 + b as u16);
            w4[2 * nb + b].d = f16::from_bits(0x8000 | (0x3ff - b as u16));
            if b % 2 == 0 {
                w8[3 * nb + b] = BlockQ8_0::ZERO;
                w4[3 * nb + b].d = f16::ZERO;
            } else {
                w8[3 * nb + b].d = f16::from_f32(30000.0);
                w4[3 * nb + b].d = f16::from_f32(-30000.0);
            }
        }
        // Keep the blocks whose scale amax/127 fits in f16: larger ones become
        // infinite scales, and the products infinities or NaNs in both paths
        // (their quantization is compared bit for bit above).
        let ext: Vec<f32> = extreme_blocks(&mut rng)
            .chunks(QK)
            .filter(|b| b.iter().all(|v| v.abs() < 65504.0 * 127.0))
            .flatten()
            .copied()
            .collect();
        let mut x = Vec::new();
        while x.len() < n_tok * cols {
            x.extend_from_slice(&ext);
        }
        x.truncate(n_tok * cols);
        check_tables(" extremes", &w8, &w4, &x, rows, n_tok, cols);
        check_tables(" extremes", &w8, &w4, &x, rows, 1, cols);
    }

    /// Tolerance of a float reduction of `n` terms whose magnitudes sum to
    /// `abs`: both paths keep chains of at most n/8 + 16 additions.
    fn float_tol(n: usize, abs: f64) -> f64 {
        (n / 8 + 16) as f64 * f64::from(f32::EPSILON) * abs + 1e-40
    }

    #[allow(clippy::too_many_arguments)]
    fn check_gemm_f<W: FloatElem>(
        name: &str,
        kernel: fn(&[W], &FloatActs<'_>, &mut OutTile<'_>),
        twin: fn(&[W], &FloatActs<'_>, &mut OutTile<'_>),
        w: &[W],
        x: &[f32],
        rows: usize,
        n_tok: usize,
        cols: usize,
    ) {
        let acts = FloatActs { x, n_tok, cols };
        let mut got = vec![f32::NAN; n_tok * rows];
        let mut want = vec![f32::NAN; n_tok * rows];
        kernel(w, &acts, &mut OutTile::whole(&mut got, n_tok, rows));
        twin(w, &acts, &mut OutTile::whole(&mut want, n_tok, rows));
        for t in 0..n_tok {
            for r in 0..rows {
                let abs: f64 = (0..cols)
                    .map(|c| f64::from(w[r * cols + c].get() * x[t * cols + c]).abs())
                    .sum();
                let (g, e) = (got[t * rows + r], want[t * rows + r]);
                let tol = float_tol(cols, abs);
                assert!(
                    (f64::from(g) - f64::from(e)).abs() <= tol,
                    "{name} rows={rows} cols={cols} n_tok={n_tok} r={r} t={t}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn gemm_float_matches_scalar() {
        let mut rng = Rng(9);
        let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
        for cols in (1..=70).chain(block_lengths()).chain(GPT2) {
            shapes.push((7, cols, 1));
            shapes.push((5, cols, 6));
        }
        for rows in 1..=9 {
            for n_tok in 1..=9 {
                shapes.push((rows, 45, n_tok));
            }
        }
        for (rows, cols, n_tok) in shapes {
            let wf = rng.floats(rows * cols);
            let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
            let x = rng.floats(n_tok * cols);
            let (a, b) = (NEON.gemm_f32, NEON.gemm_f16);
            check_gemm_f("gemm_f32", a, scalar::gemm_f32, &wf, &x, rows, n_tok, cols);
            check_gemm_f("gemm_f16", b, scalar::gemm_f16, &wh, &x, rows, n_tok, cols);
        }
    }

    /// Lengths for the vector helpers: every length up to 100 (all tails),
    /// multiples of 32 up to 4096, GPT-2's, and a few odd large ones.
    fn vector_lengths() -> impl Iterator<Item = usize> {
        (0..=100)
            .chain(block_lengths())
            .chain(GPT2)
            .chain([1023, 1025, 4097, 50257])
    }

    #[test]
    fn dots_match_scalar() {
        let mut rng = Rng(10);
        for n in vector_lengths() {
            let x = rng.floats(n);
            let y = rng.floats(n);
            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let abs: f64 = x.iter().zip(&y).map(|(a, b)| f64::from(a * b).abs()).sum();
            let absh: f64 = xh
                .iter()
                .zip(&y)
                .map(|(a, b)| f64::from(a.to_f32() * b).abs())
                .sum();
            let (g, e) = (dot_f32(&x, &y), scalar::dot_f32(&x, &y));
            assert!(
                f64::from(g - e).abs() <= float_tol(n, abs),
                "dot_f32 n={n}: {g} vs {e}"
            );
            let (g, e) = (dot_f16(&xh, &y), scalar::dot_f16(&xh, &y));
            assert!(
                f64::from(g - e).abs() <= float_tol(n, absh),
                "dot_f16 n={n}: {g} vs {e}"
            );
        }
    }

    #[test]
    fn float_helpers_on_extremes() {
        // Subnormals, zeros of both signs, large magnitudes, f16's limits.
        let mut rng = Rng(16);
        let specials = [
            0.0,
            -0.0,
            f32::from_bits(1),
            -f32::from_bits(0x007f_ffff),
            f32::MIN_POSITIVE,
            1e15,
            -1e15,
            65504.0,
            -65504.0,
            6.0e-8,
            1e-30,
        ];
        for n in [1, 3, 4, 7, 8, 15, 16, 17, 33, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|_| specials[rng.below(specials.len())])
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|_| specials[rng.below(specials.len())])
                .collect();
            // Finite halves only (1e15 would become an infinity).
            let xh: Vec<f16> = x
                .iter()
                .map(|&v| f16::from_f32(v.clamp(-65504.0, 65504.0)))
                .collect();
            let abs: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                .sum();
            let absh: f64 = xh
                .iter()
                .zip(&y)
                .map(|(a, b)| (f64::from(a.to_f32()) * f64::from(*b)).abs())
                .sum();
            let (g, e) = (dot_f32(&x, &y), scalar::dot_f32(&x, &y));
            assert!(
                f64::from(g - e).abs() <= float_tol(n, abs),
                "dot_f32 {g} vs {e}"
            );
            let (g, e) = (dot_f16(&xh, &y), scalar::dot_f16(&xh, &y));
            assert!(
                f64::from(g - e).abs() <= float_tol(n, absh),
                "dot_f16 {g} vs {e}"
            );
            for alpha in [0.0, -1.0, 1e-20, 3e10] {
                let (mut g, mut e) = (y.clone(), y.clone());
                axpy_f32(alpha, &x, &mut g);
                scalar::axpy_f32(alpha, &x, &mut e);
                assert_eq!(bits(&g), bits(&e), "axpy_f32");
                let (mut g, mut e) = (y.clone(), y.clone());
                axpy_f16(alpha, &xh, &mut g);
                scalar::axpy_f16(alpha, &xh, &mut e);
                assert_eq!(bits(&g), bits(&e), "axpy_f16");
            }
            let (mut g, mut e) = (y.clone(), y.clone());
            add(&x, &mut g);
            scalar::add(&x, &mut e);
            assert_eq!(bits(&g), bits(&e), "add");
        }
    }

    #[test]
    fn f16_conversion_exact_for_every_half() {
        // All 65536 bit patterns through the vector conversion (NaNs compared
        // as NaNs).
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for chunk in all.chunks_exact(8) {
            // SAFETY: eight values in the chunk.
            let v = unsafe { load_f16x8(chunk.as_ptr()) };
            let mut got = [0.0f32; 8];
            // SAFETY: two 4-lane stores into an 8-element array.
            unsafe {
                vst1q_f32(got.as_mut_ptr(), v[0]);
                vst1q_f32(got.as_mut_ptr().add(4), v[1]);
            }
            for (g, h) in got.iter().zip(chunk) {
                let e = h.to_f32();
                assert!(g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()));
                let s = h2f(*h);
                assert!(s.to_bits() == e.to_bits() || (s.is_nan() && e.is_nan()));
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn axpy_and_add_identical_to_scalar() {
        let mut rng = Rng(11);
        for n in vector_lengths() {
            let x = rng.floats(n);
            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let y0 = rng.floats(n);
            let alpha = rng.f() * 3.0;
            let (mut g, mut e) = (y0.clone(), y0.clone());
            axpy_f32(alpha, &x, &mut g);
            scalar::axpy_f32(alpha, &x, &mut e);
            assert_eq!(bits(&g), bits(&e), "axpy_f32 n={n}");
            let (mut g, mut e) = (y0.clone(), y0.clone());
            axpy_f16(alpha, &xh, &mut g);
            scalar::axpy_f16(alpha, &xh, &mut e);
            assert_eq!(bits(&g), bits(&e), "axpy_f16 n={n}");
            let (mut g, mut e) = (y0.clone(), y0);
            add(&x, &mut g);
            scalar::add(&x, &mut e);
            assert_eq!(bits(&g), bits(&e), "add n={n}");
        }
    }

    #[test]
    fn layer_norm_matches_scalar() {
        let mut rng = Rng(12);
        for n in vector_lengths().filter(|&n| n > 0) {
            let offset = rng.f() * 10.0;
            let x: Vec<f32> = rng.floats(n).iter().map(|v| v + offset).collect();
            let w: Vec<f32> = (0..n).map(|_| 1.0 + rng.f()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f() * 0.1).collect();
            let (mut g, mut e) = (vec![0.0; n], vec![0.0; n]);
            layer_norm(&x, &w, &b, 1e-5, &mut g);
            scalar::layer_norm(&x, &w, &b, 1e-5, &mut e);
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let mean_abs = x.iter().map(|&v| f64::from(v).abs()).sum::<f64>() / n as f64;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..n {
                let scale = (f64::from(x[i]) - mean).abs() + mean_abs;
                let tol = 1e-4 * scale * inv * f64::from(w[i]).abs()
                    + 1e-6 * f64::from(b[i]).abs()
                    + 1e-30;
                assert!(
                    f64::from(g[i] - e[i]).abs() <= tol,
                    "layer_norm n={n} i={i}: {} vs {}",
                    g[i],
                    e[i]
                );
            }
        }
    }

    #[test]
    fn gelu_matches_scalar() {
        let mut rng = Rng(13);
        let mut x: Vec<f32> = (0..20000).map(|_| rng.f() * 12.0).collect();
        x.extend(rng.floats(4096));
        x.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(7),
            1e-30,
            -1e-30,
            50.0,
            -50.0,
            1e13,
            -1e13,
            1e30,
            -1e30,
            f32::MAX,
            -f32::MAX,
            88.0,
            -88.0,
        ]);
        for n in [x.len(), 0, 1, 2, 3, 5, 7, 9] {
            let (mut g, mut e) = (x[..n].to_vec(), x[..n].to_vec());
            gelu(&mut g);
            scalar::gelu(&mut e);
            for i in 0..n {
                let tol = 1e-6 * f64::from(x[i]).abs() + 1e-37;
                assert!(
                    f64::from(g[i] - e[i]).abs() <= tol,
                    "gelu({}) = {} vs {}",
                    x[i],
                    g[i],
                    e[i]
                );
            }
        }
    }

    #[test]
    fn softmax_matches_scalar() {
        let mut rng = Rng(14);
        for n in vector_lengths() {
            for spread in [1.0f32, 30.0, 200.0] {
                let x: Vec<f32> = (0..n).map(|_| rng.f() * spread + 1000.0).collect();
                let (mut g, mut e) = (x.clone(), x.clone());
                softmax(&mut g);
                scalar::softmax(&mut e);
                for i in 0..n {
                    let tol = 1e-5 * f64::from(e[i]) + 1e-30;
                    assert!(
                        f64::from(g[i] - e[i]).abs() <= tol,
                        "softmax n={n} spread={spread} i={i}: {} vs {}",
                        g[i],
                        e[i]
                    );
                }
            }
        }
    }

    #[test]
    fn dispatch_chooses_and_names_the_variant() {
        let k = Kernels::new(KernelPath::Neon).expect("every aarch64 CPU has NEON");
        let want = if has_dotprod() {
            "neon+dotprod"
        } else {
            "neon"
        };
        assert_eq!(k.describe(), want);
        // CI states which variant each emulated CPU must get.
        if let Ok(expected) = std::env::var("GPTQ_EXPECT_NEON_VARIANT") {
            assert_eq!(k.describe(), expected.trim(), "GPTQ_EXPECT_NEON_VARIANT");
        }
        assert_eq!(Kernels::scalar().describe(), "scalar");
        assert!(std::ptr::eq(k.table, best_table()));
    }

    #[test]
    fn matmul_through_dispatch_matches_scalar() {
        // Through `matmul`: parallel row tiles, quantization included.
        let mut rng = Rng(15);
        let (rows, cols, n_tok) = (131, 320, 5);
        let nb = cols / QK;
        let w8 = rng.q8_blocks(rows * nb);
        let w4 = rng.q4_blocks(rows * nb);
        let wf = rng.floats(rows * cols);
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let x = rng.floats(n_tok * cols);
        let neon = Kernels::new(KernelPath::Neon).unwrap();
        let scalar = Kernels::scalar();
        let mut scratch = MatmulScratch::new(n_tok, cols);
        for data in [
            WeightData::Q8_0(&w8),
            WeightData::Q4_0(&w4),
            WeightData::F32(&wf),
            WeightData::F16(&wh),
        ] {
            let m = Matrix::new(data, rows, cols).unwrap();
            for nt in [1, n_tok] {
                let mut g = vec![f32::NAN; nt * rows];
                let mut e = vec![f32::NAN; nt * rows];
                matmul(&neon, &m, &x, nt, &mut g, &mut scratch);
                matmul(&scalar, &m, &x, nt, &mut e, &mut scratch);
                for (i, (a, b)) in g.iter().zip(&e).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{data:?} n_tok={nt} i={i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
