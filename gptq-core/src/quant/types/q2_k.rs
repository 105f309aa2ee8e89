//! Q2_K: 256 two-bit values in 16 sub-blocks of 16, each with a 4-bit scale and a
//! 4-bit minimum relative to two f16 super-block scales (ggml's `block_q2_K`).

use half::f16;

use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Q2_K. Sub-block `s` (elements `16s..16s+16`) has scale `d · (scales[s] & 15)`
/// and minimum `dmin · (scales[s] >> 4)`; element values are `scale · q - min`
/// with `q` in 0..4. In each half of 128 elements, byte `l` of the half's 32 `qs`
/// holds elements `l`, `l + 32`, `l + 64`, `l + 96` in bits 0-1, 2-3, 4-5, 6-7.
/// 84 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ2K {
    /// Per sub-block: scale in the low nibble, minimum in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// Packed two-bit values.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(std::mem::align_of::<BlockQ2K>() == 2);

impl BlockQ2K {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ2K = BlockQ2K {
        scales: [0; QK_K / 16],
        qs: [0; QK_K / 4],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };

    /// The two-bit value of element `i` (0..256).
    pub fn q(&self, i: usize) -> u8 {
        let (half, l) = (i / 128, i % 32);
        let shift = 2 * ((i % 128) / 32);
        (self.qs[32 * half + l] >> shift) & 3
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_q2_K`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (s, out) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(self.scales[s] & 0x0f);
            let ml = dmin * f32::from(self.scales[s] >> 4);
            for (l, v) in out.iter_mut().enumerate() {
                *v = dl * f32::from(self.q(16 * s + l)) - ml;
            }
        }
    }
}

// SAFETY: `#[repr(C)]` of 16 + 64 bytes and two f16, 84 bytes in all (asserted above): no padding, and every
// bit pattern is a valid u8 and f16.
unsafe impl QuantBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ2K::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ2K, out| b.dequantize(out))
    }
}

/// Σ x·y of Q2_K weights and Q8_K activations, as ggml's
/// `ggml_vec_dot_q2_K_q8_K`: per super-block the exact integer sums
/// `Σ sc·Σ q·a` and `Σ m·bsum`, times `d·d_a` and `dmin·d_a`.
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut isum, mut imin) = (0i32, 0i32);
        for s in 0..QK_K / 16 {
            let dot: i32 = (16 * s..16 * s + 16)
                .map(|i| i32::from(a.q(i)) * i32::from(b.qs[i]))
                .sum();
            isum += i32::from(a.scales[s] & 0x0f) * dot;
            imin += i32::from(a.scales[s] >> 4) * i32::from(b.bsums[s]);
        }
        sum += (b.d * a.d.to_f32()) * isum as f32 - (b.d * a.dmin.to_f32()) * imin as f32;
    }
    sum
}

impl super::VecDot for BlockQ2K {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_q2_k_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_positions_follow_ggml() {
        let mut b = BlockQ2K::ZERO;
        b.d = f16::ONE;
        b.dmin = f16::from_f32(0.5);
        b.scales = [0x21; 16];
        // Element 32 + 5 lives in byte 5, bits 2-3; element 128 + 96 + 1 in byte 33, bits 6-7.
        b.qs[5] = 0b0000_1100;
        b.qs[33] = 0b1100_0000;
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(y[37], 3.0 - 1.0);
        assert_eq!(y[225], 3.0 - 1.0);
        assert_eq!(y[0], -1.0);
        assert_eq!(b.q(37), 3);
        assert_eq!(b.q(5), 0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::Q2_K,
            vec_dot_q2_k_q8_k,
        );
    }
}
