//! Q6_K: 256 six-bit values in 16 sub-blocks of 16 with signed 8-bit scales
//! relative to one f16 super-block scale (ggml's `block_q6_K`).

use half::f16;

use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Q6_K. In each half of 128 elements (64 bytes of `ql`, 32 of `qh`), element
/// `l + 32k` (`l` < 32, `k` < 4) has its low four bits in the low (k = 0, 1) or
/// high (k = 2, 3) nibble of `ql[l + 32·(k % 2)]` and its top two bits in bits
/// `2k` of `qh[l]`. Values are `d · scales[s] · (q - 32)`. 210 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low four bits.
    pub ql: [u8; QK_K / 2],
    /// High two bits.
    pub qh: [u8; QK_K / 4],
    /// Signed sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::align_of::<BlockQ6K>() == 2);

impl BlockQ6K {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ6K = BlockQ6K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; QK_K / 16],
        d: f16::ZERO,
    };

    /// The six-bit value of element `i`, offset by -32 (`-32..32`).
    pub fn q(&self, i: usize) -> i8 {
        let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let ql = self.ql[64 * half + l + 32 * (k % 2)];
        let low = if k < 2 { ql & 0x0f } else { ql >> 4 };
        let high = (self.qh[32 * half + l] >> (2 * k)) & 3;
        (low | (high << 4)) as i8 - 32
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_q6_K`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (s, out) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(self.scales[s]);
            for (l, v) in out.iter_mut().enumerate() {
                *v = dl * f32::from(self.q(16 * s + l));
            }
        }
    }
}

// SAFETY: `#[repr(C)]` of 128 + 64 bytes, 16 i8 and an f16, 210 bytes in all (asserted above): no padding, and every
// bit pattern is a valid u8, i8 and f16.
unsafe impl QuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ6K::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ6K, out| b.dequantize(out))
    }
}

/// Σ x·y of Q6_K weights and Q8_K activations: per super-block the exact
/// integer `Σ sc·Σ q·a`, times `d·d_a`.
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut isum = 0i32;
        for (s, &scale) in a.scales.iter().enumerate() {
            let dot: i32 = (16 * s..16 * s + 16)
                .map(|i| i32::from(a.q(i)) * i32::from(b.qs[i]))
                .sum();
            isum += i32::from(scale) * dot;
        }
        sum += (b.d * a.d.to_f32()) * isum as f32;
    }
    sum
}

impl super::VecDot for BlockQ6K {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_q6_k_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_positions_follow_ggml() {
        let mut b = BlockQ6K::ZERO;
        b.d = f16::ONE;
        b.scales = [1; 16];
        // Element 128 + 64 + 5 (k = 2): high nibble of ql[64 + 5], bits 4-5 of qh[32 + 5].
        b.ql[69] = 0xa0;
        b.qh[37] = 0b0011_0000;
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(y[197], f32::from(0x3a_i8 - 32));
        assert_eq!(y[0], -32.0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::Q6_K,
            vec_dot_q6_k_q8_k,
        );
    }
}
