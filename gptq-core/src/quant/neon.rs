//! The NEON kernel path (aarch64).
//!
//! Three kernel tables share everything but the int8 block dot of the
//! quantized matrix products:
//! - `neon+i8mm` is `neon+dotprod` with prompts on `smmla` (ARMv8.6 int8
//!   matrix multiply, `asm!` like `sdot`);
//! - `neon+dotprod` sums each block with `sdot` (ARMv8.2 dot product; written
//!   with `asm!` because the `vdotq_s32` intrinsic is not stable yet);
//! - `neon` uses widening multiplies (`smull`, then `sadalp` into i32 lanes),
//!   for cores without the extension (Cortex-A53, A72, ...).
//!
//! `dispatch` picks one at run time. The quantized products keep ggml's
//! scheme: an exact integer dot per 32-element block (in four i32 lanes), then
//! one float FMA by the product of the two scales. Each call computes a tile of
//! several weight rows by one token (decode: each activation block serves four
//! rows) or by four tokens (prefill: each weight block serves four tokens);
//! on `neon+dotprod` prompts of 32 tokens or more (40 for the K-quants)
//! take strips instead (rows in the lanes, by-element `sdot`).
//! The float helpers accept any length; the elements past the last full vector
//! go through the scalar code.
//!
//! - [`quant`]: activation quantization and the quantized products;
//! - [`blocks`]: the products of the other block types (K-quants, IQ4,
//!   Q4_1, Q5_0, Q5_1, BF16);
//! - [`float`]: the float products, LayerNorm, GELU and the attention;
//! - [`strip`]: the `neon+dotprod` prefill strips of the 32-value types;
//! - [`strip_k`]: the same for the K-quants and IQ4_XS;
//! - [`strip_mm`]: the 32-value types' strips on `smmla` (`neon+i8mm`; the
//!   K-quants' are in `strip_k`);
//! - here: the f16 conversions both use.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

pub(in crate::quant) mod blocks;
pub(in crate::quant) mod float;
pub(in crate::quant) mod quant;
pub(in crate::quant) mod strip;
pub(in crate::quant) mod strip_k;
pub(in crate::quant) mod strip_mm;
#[cfg(test)]
mod tests;

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
