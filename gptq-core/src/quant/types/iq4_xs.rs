//! IQ4_XS: 256 four-bit indices into the IQ4_NL table, in 8 sub-blocks of 32
//! with signed 6-bit scales relative to one f16 super-block scale (ggml's
//! `block_iq4_xs`).

use half::f16;

use super::iq4_nl::KVALUES;
use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// IQ4_XS. Sub-block `s` has the 6-bit scale `ls = low | high << 4` (low: nibble
/// `s % 2` of `scales_l[s / 2]`, high: bits `2s` of `scales_h`) and element values
/// `d · (ls - 32) · KVALUES[q]`; each sub-block's 16 `qs` bytes hold its first 16
/// indices in the low nibbles and the next 16 in the high ones. 136 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: f16,
    /// Top two bits of the eight sub-block scales.
    pub scales_h: u16,
    /// Low four bits of the eight sub-block scales.
    pub scales_l: [u8; QK_K / 64],
    /// Packed table indices.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);
const _: () = assert!(std::mem::align_of::<BlockIq4Xs>() == 2);

impl BlockIq4Xs {
    /// A block of zeros.
    pub const ZERO: BlockIq4Xs = BlockIq4Xs {
        d: f16::ZERO,
        scales_h: 0,
        scales_l: [0; QK_K / 64],
        qs: [0x88; QK_K / 2],
    };

    /// The signed scale of sub-block `s` (`-32..32`).
    pub fn scale(&self, s: usize) -> i8 {
        let low = (self.scales_l[s / 2] >> (4 * (s % 2))) & 0x0f;
        let high = ((self.scales_h >> (2 * s)) & 3) as u8;
        (low | (high << 4)) as i8 - 32
    }

    /// The table index of element `i` (0..256).
    pub fn q(&self, i: usize) -> u8 {
        let byte = self.qs[16 * (i / 32) + i % 16];
        if i % 32 < 16 { byte & 0x0f } else { byte >> 4 }
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_iq4_xs`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (s, out) in y.chunks_exact_mut(32).enumerate() {
            let dl = d * f32::from(self.scale(s));
            for (l, v) in out.iter_mut().enumerate() {
                *v = dl * f32::from(KVALUES[usize::from(self.q(32 * s + l))]);
            }
        }
    }
}

// SAFETY: `#[repr(C)]` of an f16, a u16 and 4 + 128 bytes, 136 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16, u16 and u8.
unsafe impl QuantBlock for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockIq4Xs::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockIq4Xs, out| b.dequantize(out))
    }
}

/// Σ x·y of IQ4_XS weights and Q8_K activations: per super-block the exact
/// integer `Σ sc·Σ KVALUES[q]·a`, times `d·d_a`.
pub fn vec_dot_iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_iq4_xs_q8_k: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut isum = 0i32;
        for s in 0..QK_K / 32 {
            let dot: i32 = (32 * s..32 * s + 32)
                .map(|i| i32::from(KVALUES[usize::from(a.q(i))]) * i32::from(b.qs[i]))
                .sum();
            isum += i32::from(a.scale(s)) * dot;
        }
        sum += (b.d * a.d.to_f32()) * isum as f32;
    }
    sum
}

impl super::VecDot for BlockIq4Xs {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_iq4_xs_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_block_scales_combine_both_fields() {
        let mut b = BlockIq4Xs::ZERO;
        b.d = f16::ONE;
        b.scales_l[1] = 0x50; // sub-block 3: low bits 5
        b.scales_h = 0b10 << 6; // sub-block 3: high bits 2 -> 37 - 32 = 5
        b.qs[16 * 3 + 1] = 0xf8;
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(b.scale(3), 5);
        assert_eq!(y[97], 5.0);
        assert_eq!(y[113], 5.0 * 113.0);
        assert_eq!(b.scale(0), -32);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::IQ4_XS,
            vec_dot_iq4_xs_q8_k,
        );
    }
}
