//! Q5_0: 32 five-bit values with an f16 scale (ggml's `block_q5_0`).

use half::f16;

use super::{QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Elements per Q5_0 block.
pub const QK5_0: usize = 32;

/// Q5_0: the low four bits of element `j` are the low nibble of `qs[j]` (of
/// element `j + 16`, its high nibble) and the fifth bit is bit `j` of the
/// little-endian `qh`; each element is worth `(q - 16) · d`. 22 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, element `j` in bit `j` of the little-endian word.
    pub qh: [u8; 4],
    /// Packed low nibbles.
    pub qs: [u8; QK5_0 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::align_of::<BlockQ5_0>() == 2);

impl BlockQ5_0 {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ5_0 = BlockQ5_0 {
        d: f16::ZERO,
        qh: [0xff; 4],
        qs: [0; QK5_0 / 2],
    };

    /// The five-bit value of element `j` (0..32).
    pub fn q(&self, j: usize) -> u8 {
        let qh = u32::from_le_bytes(self.qh);
        let nibble = if j < QK5_0 / 2 {
            self.qs[j] & 0x0f
        } else {
            self.qs[j - QK5_0 / 2] >> 4
        };
        nibble | (((qh >> j) & 1) as u8) << 4
    }

    /// Expands the block into its 32 values, as ggml's `dequantize_row_q5_0`.
    pub fn dequantize(&self, y: &mut [f32; QK5_0]) {
        let d = self.d.to_f32();
        for (j, v) in y.iter_mut().enumerate() {
            *v = f32::from(i16::from(self.q(j)) - 16) * d;
        }
    }
}

// SAFETY: `#[repr(C)]` of an f16 scale and 4 + 16 bytes, 22 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK5_0;
    const ZERO: Self = BlockQ5_0::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ5_0, out| b.dequantize(out))
    }
}

/// Σ x·y of Q5_0 weights and Q8_0 activations: the exact integer dot of each
/// block times both scales.
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[super::BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_0_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = (0..QK5_0)
            .map(|j| (i32::from(a.q(j)) - 16) * i32::from(b.qs[j]))
            .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

impl super::VecDot for BlockQ5_0 {
    type Partner = super::BlockQ8_0;

    fn dot(x: &[Self], y: &[super::BlockQ8_0]) -> f32 {
        vec_dot_q5_0_q8_0(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifth_bit_comes_from_qh() {
        let mut b = BlockQ5_0 {
            d: f16::ONE,
            qh: [0; 4],
            qs: [0; 16],
        };
        b.qh = (1u32 << 17 | 1).to_le_bytes();
        b.qs[1] = 0x50;
        let mut y = [0.0; QK5_0];
        b.dequantize(&mut y);
        assert_eq!(y[0], 0.0); // 16 - 16
        assert_eq!(y[17], 5.0); // 0x15 - 16
        assert_eq!(y[1], -16.0);
        BlockQ5_0::ZERO.dequantize(&mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_0(
            crate::gguf::GgmlType::Q5_0,
            vec_dot_q5_0_q8_0,
        );
    }
}
