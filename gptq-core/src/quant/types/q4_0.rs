//! Q4_0: 32 four-bit values with one f16 scale; its activation partner is
//! Q8_0.

use half::f16;

use super::{BlockQ8_0, QK, QuantBlock, VecDot};
use crate::gguf::GgmlType;

/// Q4_0: 32 four-bit values with one f16 scale; element `j` is the low nibble of
/// `qs[j]` and element `j + 16` its high nibble, each worth `(q - 8) · d`. 18 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Packed nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK / 2);
const _: () = assert!(std::mem::align_of::<BlockQ4_0>() == 2);

impl BlockQ4_0 {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ4_0 = BlockQ4_0 {
        d: f16::ZERO,
        qs: [0x88; QK / 2],
    };
}

// SAFETY: `#[repr(C)]` of an f16 and 16 bytes, 18 bytes in all (asserted
// above): no padding, and every bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK;
    const ZERO: Self = BlockQ4_0::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_row_q4_0(x, y)
    }
}

impl VecDot for BlockQ4_0 {
    type Partner = BlockQ8_0;

    fn dot(x: &[Self], y: &[BlockQ8_0]) -> f32 {
        vec_dot_q4_0_q8_0(x, y)
    }
}

/// Quantizes `x` into Q4_0 exactly as ggml's `quantize_row_q4_0_ref`: the scale is
/// the signed value of largest magnitude divided by -8, so that value maps to
/// nibble 0 and the rest round to `trunc(x/d + 8.5)` clamped to 15.
pub fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), y.len() * QK, "quantize_row_q4_0: length mismatch");
    for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f16::from_f32(d);
        let nibble = |v: f32| -> u8 {
            // C's `(int8_t)(x0 + 8.5f)` truncates toward zero; the operand lies in
            // [0.5, 16.5] for finite input, so the saturating `as` agrees.
            ((v * id + 8.5) as i8).clamp(0, 15) as u8
        };
        for j in 0..QK / 2 {
            yb.qs[j] = nibble(xb[j]) | (nibble(xb[j + QK / 2]) << 4);
        }
    }
}

/// Expands Q4_0 blocks into `y` (`32 · x.len()` values).
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK,
        "dequantize_row_q4_0: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = xb.d.to_f32();
        let (lo, hi) = yb.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            lo[j] = f32::from(i16::from(xb.qs[j] & 0x0f) as i8 - 8) * d;
            hi[j] = f32::from(i16::from(xb.qs[j] >> 4) as i8 - 8) * d;
        }
    }
}

/// Σ x·y of Q4_0 weights and Q8_0 activations: an exact integer dot per
/// block, then one float multiply-add by the product of the two scales.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_0_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(a.qs[j] & 0x0f) - 8;
            let hi = i32::from(a.qs[j] >> 4) - 8;
            sumi += lo * i32::from(b.qs[j]) + hi * i32::from(b.qs[j + QK / 2]);
        }
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::ggml_vectors::{
        GGML_Q4_0, bytes_of, ggml_error, ggml_test_data, ggml_vector_input, hex,
    };
    use super::super::q8_0::{amax, quantize_acts_q8_0};
    use super::*;

    #[test]
    fn known_block() {
        // max-magnitude value -16 -> d = 2, nibble 0 for it; 14 -> 7+8=15; 3 -> trunc(1.5+8.5)=10.
        let mut x = [0.0f32; 32];
        x[0] = -16.0;
        x[1] = 14.0;
        x[2] = 3.0;
        x[16] = 1.0; // high nibble of byte 0: trunc(0.5 + 8.5) = 9
        x[17] = 15.9; // would be 16: clamped to 15
        let mut y = [BlockQ4_0::ZERO];
        quantize_row_q4_0(&x, &mut y);
        assert_eq!(y[0].d.to_f32(), 2.0);
        assert_eq!(y[0].qs[0], 9 << 4);
        assert_eq!(y[0].qs[1], 15 | (15 << 4));
        assert_eq!(y[0].qs[2] & 0x0f, 10);
        let mut back = [0.0f32; 32];
        dequantize_row_q4_0(&y, &mut back);
        assert_eq!(back[0], -16.0);
        assert_eq!(back[1], 14.0);
        assert_eq!(back[16], 2.0);
    }

    #[test]
    fn positive_max_maps_to_negative_scale() {
        let mut x = [1.0f32; 32];
        x[5] = 8.0;
        let mut y = [BlockQ4_0::ZERO];
        quantize_row_q4_0(&x, &mut y);
        assert_eq!(y[0].d.to_f32(), -1.0);
        assert_eq!(y[0].qs[5] & 0x0f, 0); // 8 / -1 + 8.5 = 0.5 -> 0 -> (0-8)*-1 = 8
        let mut back = [0.0f32; 32];
        dequantize_row_q4_0(&y, &mut back);
        assert_eq!(back[5], 8.0);
    }

    #[test]
    fn zero_is_zero() {
        let mut back = [1.0f32; 32];
        dequantize_row_q4_0(&[BlockQ4_0::ZERO], &mut back);
        assert_eq!(back, [0.0; 32]);
    }

    #[test]
    fn errors_within_ggml_thresholds_and_format_bounds() {
        // ggml's test-quantize-fns thresholds, as for Q8_0.
        let n = 4096;
        let x = ggml_test_data(n, 0.0);
        let a = ggml_test_data(n, 1.0);
        let mut q4 = vec![BlockQ4_0::ZERO; n / QK];
        let mut aq = vec![BlockQ8_0::ZERO; n / QK];
        quantize_row_q4_0(&x, &mut q4);
        quantize_acts_q8_0(&a, &mut aq);
        let mut y4 = vec![0.0; n];
        dequantize_row_q4_0(&q4, &mut y4);
        assert!(ggml_error(&x, &y4) < 0.002, "q4_0 {}", ggml_error(&x, &y4));
        let exact: f64 = x.iter().zip(&a).map(|(p, q)| f64::from(p * q)).sum();
        let e4 = (f64::from(vec_dot_q4_0_q8_0(&q4, &aq)) - exact).abs() / n as f64;
        assert!(e4 < 0.02, "dot error {e4}");
        // Q4_0 rounds to a multiple of |d| = amax/8 (error <= |d|, since the
        // top value is clamped); the f16 rounding of d adds a relative 2^-11.
        for (xb, (yb, b)) in x.chunks(QK).zip(y4.chunks(QK).zip(&q4)) {
            let bound = b.d.to_f32().abs() + amax(xb) * 1e-3;
            for (p, q) in xb.iter().zip(yb) {
                assert!((p - q).abs() <= bound);
            }
        }
    }

    #[test]
    fn dot_matches_dequantized_product() {
        crate::quant::harness::check_dot_matches_dequantized(quantize_row_q4_0);
    }

    #[test]
    fn bit_identical_to_ggml_reference_quantizer() {
        let x = ggml_vector_input();
        let mut q4 = vec![BlockQ4_0::ZERO; x.len() / QK];
        quantize_row_q4_0(&x, &mut q4);
        assert_eq!(bytes_of(&q4), hex(GGML_Q4_0));
    }

    /// Test data for the kernel harness.
    impl crate::quant::harness::Gen for BlockQ4_0 {
        fn random(rng: &mut crate::quant::harness::Rng) -> Self {
            BlockQ4_0 {
                d: f16::from_f32(rng.f() * 0.05),
                qs: std::array::from_fn(|_| rng.byte()),
            }
        }

        fn extremes() -> Vec<Self> {
            let b = |d: f16, q: u8| BlockQ4_0 { d, qs: [q; QK / 2] };
            vec![
                b(f16::ONE, 0x00),
                b(f16::ONE, 0xff),
                b(f16::ONE, 0x0f),
                BlockQ4_0::ZERO,
                b(f16::MIN, 0xf0),
                b(f16::MAX, 0x0f),
                b(f16::from_bits(0x8000 | 0x3ff), 0x5a),
                b(f16::from_bits(1), 0xa5),
                b(f16::from_f32(-30000.0), 0x80),
                b(f16::ZERO, 0x37),
            ]
        }
    }
}
