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
}
