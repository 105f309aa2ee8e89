//! Q4_K: 256 four-bit values in 8 sub-blocks of 32, each with a 6-bit scale and a
//! 6-bit minimum relative to two f16 super-block scales (ggml's `block_q4_K`).

use half::f16;

use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Q4_K. Sub-block `s` (elements `32s..32s+32`) has scale `d · sc[s]` and minimum
/// `dmin · m[s]` (see [`scale_min`] for the packing); element values are
/// `scale · q - min` with `q` in 0..16. Each 64 elements share 32 bytes of `qs`:
/// the first 32 in the low nibbles, the next 32 in the high ones. 144 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums (see [`scale_min`]).
    pub scales: [u8; 12],
    /// Packed nibbles.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::align_of::<BlockQ4K>() == 2);

/// The 6-bit scale and minimum of sub-block `j` (0..8) from the 12 packed bytes
/// shared by Q4_K and Q5_K (ggml's `get_scale_min_k4`): for `j < 4` the low six
/// bits of bytes `j` and `j + 4`; for `j >= 4` the nibbles of byte `j + 4` topped
/// with the two high bits of bytes `j - 4` and `j`.
pub fn scale_min(j: usize, packed: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and minimums (0..64) as [`scale_min`] reads them.
/// Bits above the sixth are dropped.
pub fn pack_scale_min(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = (scales[j] & 63, mins[j] & 63);
        if j < 4 {
            packed[j] |= ls;
            packed[j + 4] |= lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    packed
}

impl BlockQ4K {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ4K = BlockQ4K {
        d: f16::ZERO,
        dmin: f16::ZERO,
        scales: [0; 12],
        qs: [0; QK_K / 2],
    };

    /// The four-bit value of element `i` (0..256).
    pub fn q(&self, i: usize) -> u8 {
        let byte = self.qs[32 * (i / 64) + i % 32];
        if i % 64 < 32 { byte & 0x0f } else { byte >> 4 }
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_q4_K`.
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

// SAFETY: `#[repr(C)]` of two f16 and 12 + 128 bytes, 144 bytes in all (asserted above): no padding, and every
// bit pattern is a valid f16 and u8.
unsafe impl QuantBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ4K::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ4K, out| b.dequantize(out))
    }
}

/// Σ x·y of Q4_K weights and Q8_K activations, as ggml's
/// `ggml_vec_dot_q4_K_q8_K`: per super-block the exact integer sums
/// `Σ sc·Σ q·a` and `Σ m·bsum`, times `d·d_a` and `dmin·d_a`.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: length mismatch");
    dot_scale_min_blocks(x, y, |a| (a.scales, a.d, a.dmin), BlockQ4K::q)
}

/// The scalar dot shared by Q4_K and Q5_K, whose blocks differ only in how
/// a value is stored: `parts` gives a block's packed scales and minimums,
/// `d` and `dmin`; `q` its value `i` (0..QK_K). Lengths are the caller's check.
pub(super) fn dot_scale_min_blocks<B>(
    x: &[B],
    y: &[super::BlockQ8K],
    parts: impl Fn(&B) -> ([u8; 12], f16, f16),
    q: impl Fn(&B, usize) -> u8,
) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (scales, d, dmin) = parts(a);
        let (mut isum, mut imin) = (0i32, 0i32);
        for s in 0..QK_K / 32 {
            let (sc, m) = scale_min(s, &scales);
            let dot: i32 = (32 * s..32 * s + 32)
                .map(|i| i32::from(q(a, i)) * i32::from(b.qs[i]))
                .sum();
            isum += i32::from(sc) * dot;
            imin += i32::from(m) * (i32::from(b.bsums[2 * s]) + i32::from(b.bsums[2 * s + 1]));
        }
        sum += (b.d * d.to_f32()) * isum as f32 - (b.d * dmin.to_f32()) * imin as f32;
    }
    sum
}

impl super::VecDot for BlockQ4K {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_q4_k_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_mins_round_trip_through_the_packing() {
        let sc: [u8; 8] = std::array::from_fn(|j| ((j * 29 + 3) % 64) as u8);
        let mn: [u8; 8] = std::array::from_fn(|j| ((j * 41 + 60) % 64) as u8);
        let packed = pack_scale_min(&sc, &mn);
        for j in 0..8 {
            assert_eq!(scale_min(j, &packed), (sc[j], mn[j]));
        }
    }

    #[test]
    fn nibble_halves_cover_64_elements() {
        let mut b = BlockQ4K::ZERO;
        b.d = f16::ONE;
        b.dmin = f16::ONE;
        b.scales = pack_scale_min(&[1; 8], &[2; 8]);
        b.qs[32 + 7] = 0x9f; // element 64 + 7 = 15, element 96 + 7 = 9
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(y[71], 13.0);
        assert_eq!(y[103], 7.0);
        assert_eq!(y[0], -2.0);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::Q4_K,
            vec_dot_q4_k_q8_k,
        );
    }
}
