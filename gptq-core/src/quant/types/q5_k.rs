//! Q5_K: 256 five-bit values in 8 sub-blocks of 32 with 6-bit scales and
//! minimums, as Q4_K plus one high bit per element (ggml's `block_q5_K`).

use half::f16;

use super::q4_k::scale_min;
use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Q5_K. Scales, minimums and low nibbles are laid out as in
/// [`super::q4_k::BlockQ4K`]; the fifth bit of element `i` is bit `i / 32` of
/// `qh[i % 32]`. Element values are `d · sc · q - dmin · m` with `q` in 0..32.
/// 176 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums (see [`scale_min`]).
    pub scales: [u8; 12],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Packed low nibbles.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::align_of::<BlockQ5K>() == 2);

impl BlockQ5K {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ5K = BlockQ5K {
        d: f16::ZERO,
        dmin: f16::ZERO,
        scales: [0; 12],
        qh: [0; QK_K / 8],
        qs: [0; QK_K / 2],
    };

    /// The five-bit value of element `i` (0..256).
    pub fn q(&self, i: usize) -> u8 {
        let byte = self.qs[32 * (i / 64) + i % 32];
        let low = if i % 64 < 32 { byte & 0x0f } else { byte >> 4 };
        let high = (self.qh[i % 32] >> (i / 32)) & 1;
        low | (high << 4)
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_q5_K`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (s, out) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min(s, &self.scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            for (l, v) in out.iter_mut().enumerate() {
                *v = d1 * f32::from(self.q(32 * s + l)) - m1;
            }
        }
    }
}

// SAFETY: `#[repr(C)]` of two f16 and 12 + 32 + 128 bytes, 176 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ5K::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ5K, out| b.dequantize(out))
    }
}

/// Σ x·y of Q5_K weights and Q8_K activations, as Q4_K's
/// ([`super::q4_k::vec_dot_q4_k_q8_k`]).
pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: length mismatch");
    super::q4_k::dot_scale_min_blocks(x, y, |a| (a.scales, a.d, a.dmin), BlockQ5K::q)
}

impl super::VecDot for BlockQ5K {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_q5_k_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::pack_scale_min;
    use super::*;

    #[test]
    fn fifth_bit_is_bit_i_over_32_of_qh() {
        let mut b = BlockQ5K::ZERO;
        b.d = f16::ONE;
        b.scales = pack_scale_min(&[1; 8], &[0; 8]);
        b.qh[9] = 1 << 5; // element 160 + 9
        b.qs[64 + 9] = 0x30; // element 128 + 32 + 9: low nibble 3
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(y[169], 19.0);
        assert_eq!(b.q(137), 0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::Q5_K,
            vec_dot_q5_k_q8_k,
        );
    }
}
