//! Q4_1: 32 four-bit values with an f16 scale and an f16 minimum (ggml's `block_q4_1`).

use half::f16;

use super::{QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;

/// Q4_1: element `j` is the low nibble of `qs[j]` and element `j + 16` its high
/// nibble, each worth `q · d + m`. 20 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of nibble 0).
    pub m: f16,
    /// Packed nibbles.
    pub qs: [u8; QK4_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::align_of::<BlockQ4_1>() == 2);

impl BlockQ4_1 {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ4_1 = BlockQ4_1 {
        d: f16::ZERO,
        m: f16::ZERO,
        qs: [0; QK4_1 / 2],
    };

    /// Expands the block into its 32 values, as ggml's `dequantize_row_q4_1`.
    pub fn dequantize(&self, y: &mut [f32; QK4_1]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = f32::from(q & 0x0f) * d + m;
            y[j + QK4_1 / 2] = f32::from(q >> 4) * d + m;
        }
    }
}

// SAFETY: `#[repr(C)]` of an f16 scale, an f16 minimum and 16 bytes, 20 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK4_1;
    const ZERO: Self = BlockQ4_1::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ4_1, out| b.dequantize(out))
    }
}

/// Σ x·y of Q4_1 weights and Q8_0 activations: per block the exact integer
/// dot times both scales, plus the minimum times the activations' sum
/// (`d_a · Σ q_a`, ggml's Q8_1 `s`, computed here without its f16 rounding).
pub fn vec_dot_q4_1_q8_0(x: &[BlockQ4_1], y: &[super::BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_1_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sumi, mut sa) = (0i32, 0i32);
        for j in 0..QK4_1 / 2 {
            let (lo, hi) = (i32::from(b.qs[j]), i32::from(b.qs[j + QK4_1 / 2]));
            sumi += i32::from(a.qs[j] & 0x0f) * lo + i32::from(a.qs[j] >> 4) * hi;
            sa += lo + hi;
        }
        let db = b.d.to_f32();
        sum += sumi as f32 * (a.d.to_f32() * db) + a.m.to_f32() * (db * sa as f32);
    }
    sum
}

impl super::VecDot for BlockQ4_1 {
    type Partner = super::BlockQ8_0;

    fn dot(x: &[Self], y: &[super::BlockQ8_0]) -> f32 {
        vec_dot_q4_1_q8_0(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_map_to_d_q_plus_m() {
        let mut b = BlockQ4_1::ZERO;
        b.d = f16::from_f32(0.5);
        b.m = f16::from_f32(-1.0);
        b.qs[0] = 0xf3;
        let mut y = [0.0; QK4_1];
        b.dequantize(&mut y);
        assert_eq!(y[0], 0.5);
        assert_eq!(y[16], 6.5);
        assert_eq!(y[1], -1.0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_0(
            crate::gguf::GgmlType::Q4_1,
            vec_dot_q4_1_q8_0,
        );
    }
}
