//! The K types (Q2_K..Q6_K): 256-element super-blocks whose sub-block scales
//! are themselves quantized against one or two f16 super-block scales. Each
//! module mirrors ggml's `quantize_row_<type>_ref` (no importance weights: what
//! llama-quantize runs without `--imatrix`) and `quantize_row_<type>_impl`
//! (with them).
//!
//! Shared shape of every quantizer: search each sub-block's scale (and minimum),
//! quantize those scales to the stored bits, then re-quantize the values with
//! the scales as stored. A sub-block whose stored scale is zero keeps the levels
//! of its search, as in ggml.

pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;

/// Elements per super-block.
pub use gptq_core::quant::types::QK_K;

/// The squared values of a super-block and their sum (ggml's `sum_x2`).
fn sum_squares(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// ggml's exact packing of eight 6-bit scales and minimums in Q4_K / Q5_K
/// blocks, byte operations in its order and without masking, so that even an
/// out-of-range level (a negative scale wrapped to a byte) packs the same.
fn pack_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Packs 256 two-bit levels as Q2_K and Q3_K store them: in each half of 128,
/// byte `l` holds elements `l`, `l+32`, `l+64`, `l+96` from the low bits up.
fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    std::array::from_fn(|b| {
        let l0 = 128 * (b / 32) + b % 32;
        l[l0] | (l[l0 + 32] << 2) | (l[l0 + 64] << 4) | (l[l0 + 96] << 6)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gptq_core::quant::types::q4_k::pack_scale_min;

    #[test]
    fn k4_packing_equals_the_layout_for_six_bit_values() {
        let ls: [u8; 8] = std::array::from_fn(|j| (j as u8 * 13 + 7) % 64);
        let lm: [u8; 8] = std::array::from_fn(|j| (j as u8 * 31 + 2) % 64);
        assert_eq!(pack_k4(&ls, &lm), pack_scale_min(&ls, &lm));
    }
}
