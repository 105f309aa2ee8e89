//! Q5_1: 32 five-bit values with an f16 scale and an f16 minimum (ggml's `block_q5_1`).

use half::f16;

use super::{QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Elements per Q5_1 block.
pub const QK5_1: usize = 32;

/// Q5_1: the bits of element `j` are laid out as in [`super::q5_0::BlockQ5_0`];
/// each element is worth `q · d + m`. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of q = 0).
    pub m: f16,
    /// Fifth bits, element `j` in bit `j` of the little-endian word.
    pub qh: [u8; 4],
    /// Packed low nibbles.
    pub qs: [u8; QK5_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::align_of::<BlockQ5_1>() == 2);

impl BlockQ5_1 {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ5_1 = BlockQ5_1 {
        d: f16::ZERO,
        m: f16::ZERO,
        qh: [0; 4],
        qs: [0; QK5_1 / 2],
    };

    /// The five-bit value of element `j` (0..32).
    pub fn q(&self, j: usize) -> u8 {
        let qh = u32::from_le_bytes(self.qh);
        let nibble = if j < QK5_1 / 2 {
            self.qs[j] & 0x0f
        } else {
            self.qs[j - QK5_1 / 2] >> 4
        };
        nibble | (((qh >> j) & 1) as u8) << 4
    }

    /// Expands the block into its 32 values, as ggml's `dequantize_row_q5_1`.
    pub fn dequantize(&self, y: &mut [f32; QK5_1]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, v) in y.iter_mut().enumerate() {
            *v = f32::from(self.q(j)) * d + m;
        }
    }
}

// SAFETY: `#[repr(C)]` of two f16 and 4 + 16 bytes, 24 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK5_1;
    const ZERO: Self = BlockQ5_1::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ5_1, out| b.dequantize(out))
    }
}

/// Σ x·y of Q5_1 weights and Q8_0 activations, as Q4_1's
/// ([`super::q4_1::vec_dot_q4_1_q8_0`]).
pub fn vec_dot_q5_1_q8_0(x: &[BlockQ5_1], y: &[super::BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_1_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sumi, mut sa) = (0i32, 0i32);
        for (j, &q) in b.qs.iter().enumerate() {
            sumi += i32::from(a.q(j)) * i32::from(q);
            sa += i32::from(q);
        }
        let db = b.d.to_f32();
        sum += sumi as f32 * (a.d.to_f32() * db) + a.m.to_f32() * (db * sa as f32);
    }
    sum
}

impl super::VecDot for BlockQ5_1 {
    type Partner = super::BlockQ8_0;

    fn dot(x: &[Self], y: &[super::BlockQ8_0]) -> f32 {
        vec_dot_q5_1_q8_0(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_d_q_plus_m() {
        let mut b = BlockQ5_1::ZERO;
        b.d = f16::from_f32(0.25);
        b.m = f16::from_f32(2.0);
        b.qh = (1u32 << 31).to_le_bytes();
        b.qs[15] = 0xf0;
        let mut y = [0.0; QK5_1];
        b.dequantize(&mut y);
        assert_eq!(y[31], 31.0 * 0.25 + 2.0);
        assert_eq!(y[15], 2.0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_0(
            crate::gguf::GgmlType::Q5_1,
            vec_dot_q5_1_q8_0,
        );
    }
}
