//! Q3_K: 256 three-bit values in 16 sub-blocks of 16 with signed 6-bit scales
//! relative to one f16 super-block scale (ggml's `block_q3_K`).

use half::f16;

use super::{QK_K, QuantBlock, dequantize_blocks};
use crate::gguf::GgmlType;

/// Q3_K. Element `i`'s low two bits are packed as in Q2_K (`qs`), its high bit
/// is bit `i / 32` of `hmask[i % 32]`; a set high bit means `q = low`, a clear
/// one `q = low - 4`, so `q` is in -4..4. Sub-block `s` has the 6-bit scale
/// `sc[s] - 32` (see [`BlockQ3K::scales`] for the packing), and element values are
/// `d · (sc - 32) · q`. 110 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits.
    pub hmask: [u8; QK_K / 8],
    /// Packed low two bits.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (see [`BlockQ3K::scales`]).
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::align_of::<BlockQ3K>() == 2);

/// Unpacks Q3_K's sixteen 6-bit scales (0..64, stored with an offset of 32):
/// scale `j` has its low four bits in the low (`j < 8`) or high (`j >= 8`)
/// nibble of byte `j % 8`, and its top two bits in bits `2·(j / 4)` of byte
/// `8 + j % 4`.
pub fn unpack_scales(packed: &[u8; 12]) -> [u8; 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 {
            packed[j] & 0x0f
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        low | (high << 4)
    })
}

/// Packs sixteen 6-bit scales (0..64) in Q3_K's layout; the inverse of
/// [`unpack_scales`]. Bits above the sixth are dropped.
pub fn pack_scales(scales: &[u8; 16]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for (j, &l) in scales.iter().enumerate() {
        let l = l & 63;
        if j < 8 {
            packed[j] |= l & 0x0f;
        } else {
            packed[j - 8] |= (l & 0x0f) << 4;
        }
        packed[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    packed
}

impl BlockQ3K {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ3K = BlockQ3K {
        hmask: [0; QK_K / 8],
        qs: [0; QK_K / 4],
        scales: [0; 12],
        d: f16::ZERO,
    };

    /// The sixteen signed sub-block scales (`-32..32`).
    pub fn scales(&self) -> [i8; 16] {
        unpack_scales(&self.scales).map(|s| s as i8 - 32)
    }

    /// The three-bit value of element `i` (`-4..4`).
    pub fn q(&self, i: usize) -> i8 {
        let (half, l) = (i / 128, i % 32);
        let shift = 2 * ((i % 128) / 32);
        let low = ((self.qs[32 * half + l] >> shift) & 3) as i8;
        let high_set = self.hmask[l] & (1 << (i / 32)) != 0;
        if high_set { low } else { low - 4 }
    }

    /// Expands the block into its 256 values, as ggml's `dequantize_row_q3_K`.
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let scales = self.scales();
        for (s, out) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(scales[s]);
            for (l, v) in out.iter_mut().enumerate() {
                *v = dl * f32::from(self.q(16 * s + l));
            }
        }
    }
}

// SAFETY: `#[repr(C)]` of 32 + 64 + 12 bytes and an f16, 110 bytes in all (asserted above): no padding, and every
// bit pattern is a valid u8 and f16.
unsafe impl QuantBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ3K::ZERO;

    fn dequantize(x: &[Self], y: &mut [f32]) {
        dequantize_blocks(x, y, |b: &BlockQ3K, out| b.dequantize(out))
    }
}

/// Σ x·y of Q3_K weights and Q8_K activations: per super-block the exact
/// integer `Σ sc·Σ q·a`, times `d·d_a`.
pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[super::BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: length mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sc = a.scales();
        let mut isum = 0i32;
        for (s, &scale) in sc.iter().enumerate() {
            let dot: i32 = (16 * s..16 * s + 16)
                .map(|i| i32::from(a.q(i)) * i32::from(b.qs[i]))
                .sum();
            isum += i32::from(scale) * dot;
        }
        sum += (b.d * a.d.to_f32()) * isum as f32;
    }
    sum
}

impl super::VecDot for BlockQ3K {
    type Partner = super::BlockQ8K;

    fn dot(x: &[Self], y: &[super::BlockQ8K]) -> f32 {
        vec_dot_q3_k_q8_k(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_trip_through_the_packing() {
        let scales: [u8; 16] = std::array::from_fn(|j| ((j * 37 + 5) % 64) as u8);
        assert_eq!(unpack_scales(&pack_scales(&scales)), scales);
        assert_eq!(pack_scales(&[63; 16]), [0xff; 12]);
    }

    #[test]
    fn high_bit_clear_subtracts_four() {
        let mut b = BlockQ3K::ZERO;
        b.d = f16::ONE;
        b.scales = pack_scales(&[33; 16]); // every scale +1
        b.hmask[3] = 1 << 2; // element 64 + 3 keeps its low bits
        b.qs[3] = 0b0011_0000; // element 64 + 3: low bits 3
        let mut y = [0.0; QK_K];
        b.dequantize(&mut y);
        assert_eq!(y[67], 3.0);
        assert_eq!(y[0], -4.0);
        assert_eq!(b.q(67), 3);
    }

    #[test]
    fn dot_matches_the_dequantized_values() {
        crate::quant::types::testkit::check_dot_q8_k(
            crate::gguf::GgmlType::Q3_K,
            vec_dot_q3_k_q8_k,
        );
    }
}
