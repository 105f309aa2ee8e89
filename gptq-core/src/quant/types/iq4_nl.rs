//! IQ4_NL: 32 four-bit indices into a fixed non-linear table of 16 values, with
//! one f16 scale (ggml's `block_iq4_nl`).

use half::f16;

use super::{QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// The 16 values a four-bit IQ4_NL / IQ4_XS index stands for (ggml's
/// `kvalues_iq4nl`): denser near zero, where most weights are.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: element `j` is `d · KVALUES[q]` with `q` the low nibble of `qs[j]`
/// (element `j + 16`: its high nibble). 18 bytes, the size of Q4_0.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Packed table indices.
    pub qs: [u8; QK4_NL / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(std::mem::align_of::<BlockIq4Nl>() == 2);

impl BlockIq4Nl {
    /// A block of zeros.
    pub const ZERO: BlockIq4Nl = BlockIq4Nl {
        d: f16::ZERO,
        qs: [0x88; QK4_NL / 2],
    };

    /// Expands the block into its 32 values, as ggml's `dequantize_row_iq4_nl`.
    pub fn dequantize(&self, y: &mut [f32; QK4_NL]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = d * f32::from(KVALUES[usize::from(q & 0x0f)]);
            y[j + QK4_NL / 2] = d * f32::from(KVALUES[usize::from(q >> 4)]);
        }
    }
}

// SAFETY: `#[repr(C)]` of an f16 scale and 16 bytes, 18 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMS: usize = QK4_NL;
    const ZERO: Self = BlockIq4Nl::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockIq4Nl, out| b.dequantize(out))
    }
}

/// Σ x·y of IQ4_NL weights and Q8_0 activations: the exact integer dot of the
/// table values with the activations, times both scales.
pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[super::BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_iq4_nl_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK4_NL / 2 {
            sumi += i32::from(KVALUES[usize::from(a.qs[j] & 0x0f)]) * i32::from(b.qs[j])
                + i32::from(KVALUES[usize::from(a.qs[j] >> 4)]) * i32::from(b.qs[j + QK4_NL / 2]);
        }
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

impl super::VecDot for BlockIq4Nl {
    type Partner = super::BlockQ8_0;

    fn dot(x: &[Self], y: &[super::BlockQ8_0]) -> f32 {
        vec_dot_iq4_nl_q8_0(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_select_table_values() {
        let mut b = BlockIq4Nl::ZERO;
        b.d = f16::from_f32(0.5);
        b.qs[2] = 0xf0;
        let mut y = [0.0; QK4_NL];
        b.dequantize(&mut y);
        assert_eq!(y[2], -63.5);
        assert_eq!(y[18], 56.5);
        assert_eq!(y[0], 0.5);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_0(
            crate::gguf::GgmlType::IQ4_NL,
            vec_dot_iq4_nl_q8_0,
        );
    }
}
