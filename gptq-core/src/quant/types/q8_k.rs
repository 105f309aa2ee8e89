//! Q8_K: the activation partner of the K-quants (and IQ4_XS). 256 signed
//! bytes with an f32 scale and the sum of every 16 values, so that the
//! products of the K-quants' per-16 or per-32 minimums need no pass over the
//! values. Never stored in files; quantized at run time.

use super::{ActBlock, QK_K};

/// Q8_K: 256 signed bytes `qs` with one f32 scale `d` (element `i` is
/// `qs[i] · d`) and `bsums[j] = Σ qs[16j .. 16j + 16]`. 292 bytes, ggml's
/// `block_q8_K`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quantized values.
    pub qs: [i8; QK_K],
    /// The sum of each 16 consecutive values.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 4 + QK_K + 2 * (QK_K / 16));
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(std::mem::align_of::<BlockQ8K>() == 4);

impl BlockQ8K {
    /// Sets `bsums` from `qs`: each the sum of its 16 values.
    pub fn sum_groups(&mut self) {
        for (s, q) in self.bsums.iter_mut().zip(self.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| i16::from(v)).sum();
        }
    }

    /// A block of zeros.
    pub const ZERO: BlockQ8K = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
}

impl ActBlock for BlockQ8K {
    const ELEMS: usize = QK_K;
    const ZERO: Self = BlockQ8K::ZERO;
    const SUMS: bool = false;

    fn quantize(x: &[f32], y: &mut [Self], sums: &mut [i16]) {
        assert!(sums.is_empty(), "Q8_K carries its sums in the blocks");
        quantize_row_q8_k(x, y)
    }
}

/// Quantizes `x` (whole 256-element blocks) into Q8_K as ggml's
/// `quantize_row_q8_K_ref`: the signed value `max` of largest magnitude
/// (the first, on ties) maps to -127, every value to
/// `min(127, round_ties_even(x · -127/max))`, and `d = 1 / (-127/max)`.
/// A block of zeros gets `d = 0` and zero sums (ggml leaves its sums as they
/// were).
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    assert_eq!(
        x.len(),
        y.len() * QK_K,
        "quantize_row_q8_k: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = BlockQ8K::ZERO;
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            // ggml's `nearest_int` rounds half to even (|v| <= 127 here); its
            // `MIN(127, v)` stored to an int8 is this truncating cast.
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        yb.sum_groups();
        yb.d = 1.0 / iscale;
    }
}

/// Expands Q8_K blocks into `y` (`256 · x.len()` values).
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q8_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in yb.iter_mut().zip(&xb.qs) {
            *o = xb.d * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ggml_vectors::{GGML_Q8_K, ggml_test_data, ggml_vector_input, hex};
    use super::*;

    /// A block's bytes as ggml stores it: `d`, `qs`, `bsums`, little-endian.
    fn bytes(b: &BlockQ8K) -> Vec<u8> {
        let mut v = b.d.to_le_bytes().to_vec();
        v.extend(b.qs.iter().map(|&q| q as u8));
        v.extend(b.bsums.iter().flat_map(|s| s.to_le_bytes()));
        v
    }

    #[test]
    fn known_block() {
        // The largest magnitude is -254 (the first of the two): -127/-254 =
        // 0.5, so it maps to -127, 254 to 127, 3 to round(1.5) = 2 (ties to
        // even), 5 to round(2.5) = 2, and d = 2.
        let mut x = [0.0f32; QK_K];
        x[0] = 3.0;
        x[1] = -254.0;
        x[2] = 254.0;
        x[17] = 5.0;
        let mut y = [BlockQ8K::ZERO];
        quantize_row_q8_k(&x, &mut y);
        assert_eq!(y[0].d, 2.0);
        assert_eq!(&y[0].qs[..3], &[2, -127, 127]);
        assert_eq!(y[0].qs[17], 2);
        assert_eq!(y[0].bsums[0], 2);
        assert_eq!(y[0].bsums[1], 2);
        assert!(y[0].bsums[2..].iter().all(|&s| s == 0));
        let mut back = [0.0f32; QK_K];
        dequantize_row_q8_k(&y, &mut back);
        assert_eq!(&back[..3], &[4.0, -254.0, 254.0]);
    }

    #[test]
    fn zero_block_and_sums() {
        let mut y = [BlockQ8K {
            d: 1.0,
            qs: [1; QK_K],
            bsums: [7; QK_K / 16],
        }];
        quantize_row_q8_k(&[0.0; QK_K], &mut y);
        assert_eq!(y[0], BlockQ8K::ZERO);
        let x = ggml_test_data(4 * QK_K, 0.5);
        let mut y = [BlockQ8K::ZERO; 4];
        <BlockQ8K as ActBlock>::quantize(&x, &mut y, &mut []);
        for b in &y {
            for (j, s) in b.bsums.iter().enumerate() {
                let want: i16 = b.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum();
                assert_eq!(*s, want);
            }
            assert!(b.qs.iter().all(|&q| q >= -127));
        }
        // Within half a step of the input.
        let mut back = vec![0.0; x.len()];
        dequantize_row_q8_k(&y, &mut back);
        for (k, (a, b)) in x.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= y[k / QK_K].d.abs() * 0.5 + 1e-6, "{k}");
        }
    }

    #[test]
    fn bit_identical_to_ggml_reference_quantizer() {
        let mut x = ggml_vector_input();
        x.extend((0..QK_K).map(|i| if i == 77 { -1e-3 } else { 0.0 }));
        // Scale 1 (the largest magnitude is -127): every other value a tie.
        x.extend((0..QK_K).map(|j| {
            if j == 0 {
                -127.0
            } else {
                ((j * 37) % 254) as f32 - 126.5
            }
        }));
        x.extend([0.0; QK_K]);
        let mut y = vec![BlockQ8K::ZERO; x.len() / QK_K];
        quantize_row_q8_k(&x, &mut y);
        let got: Vec<u8> = y.iter().flat_map(bytes).collect();
        assert_eq!(got, hex(GGML_Q8_K));
    }
}
