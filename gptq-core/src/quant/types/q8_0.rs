//! Q8_0: 32 signed bytes with one f16 scale, weights and the activation
//! partner of the 32-element types.
//!
//! Two quantizers of f32 rows into Q8_0 exist, deliberately:
//! - [`quantize_row_q8_0`] is ggml's `quantize_row_q8_0_ref` bit for bit
//!   (round half away from zero, `1/d` as the multiplier). It quantizes
//!   weights in the converter, so our files equal llama.cpp's.
//! - [`quantize_acts_q8_0`] quantizes activations at run time. Like ggml's
//!   SIMD quantizers it multiplies by `127/amax` and rounds half to even,
//!   which every SIMD instruction set does natively; the SIMD twins equal it
//!   exactly. [`block_sums`] adds the exact sum of each block, which kernels
//!   that offset the weights to unsigned bytes subtract afterwards.

use half::f16;

use super::{ActBlock, QK, QuantBlock, VecDot};
use crate::gguf::GgmlType;

/// Q8_0: 32 signed bytes with one f16 scale; element `i` is `qs[i] · d`. 34 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 2 + QK);
const _: () = assert!(std::mem::align_of::<BlockQ8_0>() == 2);

impl BlockQ8_0 {
    /// A block of zeros.
    pub const ZERO: BlockQ8_0 = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; QK],
    };
}

// SAFETY: `#[repr(C)]` of an f16 and 32 bytes, 34 bytes in all (asserted
// above): no padding, and every bit pattern is a valid f16 and i8.
unsafe impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK;
    const ZERO: Self = BlockQ8_0::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_row_q8_0(x, y)
    }
}

impl VecDot for BlockQ8_0 {
    type Partner = BlockQ8_0;

    fn dot(x: &[Self], y: &[BlockQ8_0]) -> f32 {
        vec_dot_q8_0_q8_0(x, y)
    }
}

impl ActBlock for BlockQ8_0 {
    const ELEMS: usize = QK;
    const ZERO: Self = BlockQ8_0::ZERO;
    const SUMS: bool = true;

    fn quantize(x: &[f32], y: &mut [Self], sums: &mut [i16]) {
        quantize_acts_q8_0(x, y);
        block_sums(y, sums);
    }
}

pub(super) fn amax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// Quantizes `x` (a whole number of 32-element blocks) into Q8_0 exactly as ggml's
/// `quantize_row_q8_0_ref`. `y.len()` must be `x.len() / 32`.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), y.len() * QK, "quantize_row_q8_0: length mismatch");
    for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let d = amax(xb) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f16::from_f32(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            // `as` saturates; |v·id| <= 127 up to rounding anyway.
            *q = (v * id).round() as i8;
        }
    }
}

/// Expands Q8_0 blocks into `y` (`32 · x.len()` values).
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK,
        "dequantize_row_q8_0: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = xb.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&xb.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// Quantizes a row of activations into Q8_0 blocks: `d = amax/127`, each value
/// `round_ties_even(x · 127/amax)`. The block sums that some kernels need are
/// computed by [`block_sums`].
pub fn quantize_acts_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), y.len() * QK, "quantize_acts_q8_0: length mismatch");
    for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let amax = amax(xb);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        yb.d = f16::from_f32(amax / 127.0);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
}

/// The sum of the 32 quantized values of each block (for kernels that offset
/// the weights to unsigned bytes and correct afterwards).
pub fn block_sums(x: &[BlockQ8_0], sums: &mut [i16]) {
    assert_eq!(x.len(), sums.len(), "block_sums: length mismatch");
    for (s, b) in sums.iter_mut().zip(x) {
        *s = b.qs.iter().map(|&q| i16::from(q)).sum();
    }
}

/// Σ x·y over Q8_0 blocks: an exact integer dot per block, then one float
/// multiply-add by the product of the two scales.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q8_0_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 =
            a.qs.iter()
                .zip(&b.qs)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::ggml_vectors::{
        GGML_Q8_0, bytes_of, ggml_error, ggml_test_data, ggml_vector_input, hex,
    };
    use super::*;

    #[test]
    fn known_block() {
        // amax 127 -> d = 1, values round half away from zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = -2.5;
        x[2] = 2.5;
        x[3] = 0.49;
        x[4] = -127.0;
        let mut y = [BlockQ8_0::ZERO];
        quantize_row_q8_0(&x, &mut y);
        assert_eq!(y[0].d.to_f32(), 1.0);
        assert_eq!(&y[0].qs[..5], &[127, -3, 3, 0, -127]);
        let mut back = [0.0f32; 32];
        dequantize_row_q8_0(&y, &mut back);
        assert_eq!(back[1], -3.0);
    }

    #[test]
    fn zero_block() {
        let x = [0.0f32; 64];
        let mut y = [BlockQ8_0::ZERO; 2];
        quantize_row_q8_0(&x, &mut y);
        assert!(y.iter().all(|b| b.d.to_f32() == 0.0 && b.qs == [0; 32]));
    }

    #[test]
    fn activation_quantizer_rounds_half_to_even() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 3.5;
        let mut y = [BlockQ8_0::ZERO];
        quantize_acts_q8_0(&x, &mut y);
        assert_eq!(&y[0].qs[..4], &[127, 2, -2, 4]);
        let mut s = [0i16];
        block_sums(&y, &mut s);
        assert_eq!(s[0], 131);
        let (mut y2, mut s2) = ([BlockQ8_0::ZERO], [0i16]);
        <BlockQ8_0 as ActBlock>::quantize(&x, &mut y2, &mut s2);
        assert_eq!((y2, s2), (y, s));
    }

    #[test]
    fn errors_within_ggml_thresholds_and_format_bounds() {
        // ggml's test-quantize-fns on 4096 values: total error < 0.002
        // (MAX_QUANTIZATION_TOTAL_ERROR) and dot-product error < 0.02
        // (MAX_DOT_PRODUCT_ERROR, |dot - exact| / n).
        let n = 4096;
        let x = ggml_test_data(n, 0.0);
        let a = ggml_test_data(n, 1.0);
        let mut q8 = vec![BlockQ8_0::ZERO; n / QK];
        let mut aq = vec![BlockQ8_0::ZERO; n / QK];
        quantize_row_q8_0(&x, &mut q8);
        quantize_acts_q8_0(&a, &mut aq);
        let mut y8 = vec![0.0; n];
        dequantize_row_q8_0(&q8, &mut y8);
        assert!(ggml_error(&x, &y8) < 0.002, "q8_0 {}", ggml_error(&x, &y8));
        let exact: f64 = x.iter().zip(&a).map(|(p, q)| f64::from(p * q)).sum();
        let e8 = (f64::from(vec_dot_q8_0_q8_0(&q8, &aq)) - exact).abs() / n as f64;
        assert!(e8 < 0.02, "dot error {e8}");
        // The format's own bound, element by element: Q8_0 rounds to the
        // nearest multiple of d = amax/127 (error <= d/2); the f16 rounding of
        // d adds a relative 2^-11 of the value.
        for (xb, (yb, b)) in x.chunks(QK).zip(y8.chunks(QK).zip(&q8)) {
            let bound = b.d.to_f32() * 0.5 + amax(xb) * 1e-3;
            for (p, q) in xb.iter().zip(yb) {
                assert!((p - q).abs() <= bound);
            }
        }
    }

    #[test]
    fn dot_matches_dequantized_product() {
        crate::quant::harness::check_dot_matches_dequantized(quantize_row_q8_0);
    }

    #[test]
    fn bit_identical_to_ggml_reference_quantizer() {
        let x = ggml_vector_input();
        let mut q8 = vec![BlockQ8_0::ZERO; x.len() / QK];
        quantize_row_q8_0(&x, &mut q8);
        assert_eq!(bytes_of(&q8), hex(GGML_Q8_0));
    }

    /// Test data for the kernel harness.
    impl crate::quant::harness::Gen for BlockQ8_0 {
        fn random(rng: &mut crate::quant::harness::Rng) -> Self {
            BlockQ8_0 {
                d: f16::from_f32(rng.f() * 0.05),
                // ggml's quantizer never writes -128 (and the AVX2 kernels'
                // sign trick relies on it).
                qs: std::array::from_fn(|_| (rng.byte() as i8).max(-127)),
            }
        }

        fn extremes() -> Vec<Self> {
            let b = |d: f16, f: &dyn Fn(usize) -> i8| BlockQ8_0 {
                d,
                qs: std::array::from_fn(f),
            };
            vec![
                b(f16::ONE, &|_| -127),
                b(f16::ONE, &|_| 127),
                // Outside ggml's quantizer's range, but a valid byte.
                b(f16::ONE, &|_| -128),
                b(f16::ONE, &|j| if j % 2 == 0 { -128 } else { 127 }),
                BlockQ8_0::ZERO,
                b(f16::MAX, &|j| if j % 2 == 0 { -127 } else { 127 }),
                b(f16::from_bits(1), &|j| j as i8 * 4 - 64),
                b(f16::from_bits(0x3ff), &|_| 127),
                b(f16::from_f32(30000.0), &|j| 100 - j as i8),
                b(f16::from_f32(-30000.0), &|j| j as i8 - 100),
                b(f16::ZERO, &|j| j as i8),
            ]
        }
    }
}
