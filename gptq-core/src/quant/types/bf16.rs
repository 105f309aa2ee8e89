//! BF16: bfloat16 values (the top half of an f32), ggml's `GGML_TYPE_BF16`.
//! Weights in BF16 take f32 activations, like F16.

pub use half::bf16;

/// Expands BF16 values into `y`: exact, as ggml's `ggml_bf16_to_fp32_row`
/// (the 16 bits become the top half of an f32, NaN payloads included).
pub fn dequantize_row(x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "bf16::dequantize_row: length mismatch");
    for (o, v) in y.iter_mut().zip(x) {
        *o = f32::from_bits(u32::from(v.to_bits()) << 16);
    }
}

/// Rounds an f32 to BF16 as ggml's `ggml_compute_fp32_to_bf16` (what its
/// converters and llama-quantize write): round to nearest, ties to even, with
/// NaNs kept NaN by forcing the quiet bit. Infinities stay infinite, and finite
/// values beyond the largest BF16 round to infinity.
pub fn from_f32(x: f32) -> bf16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    // The sum cannot overflow for non-NaN input: at most 0x7f80_0000 + 0x8000.
    bf16::from_bits(((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16)
}

/// Σ x·y of a BF16 row (weights) and an f32 row (activations), in f32 with
/// eight partial sums combined pairwise (the order of the F16 reference).
pub fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_bf16_f32: length mismatch");
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    let wide = |v: bf16| f32::from_bits(u32::from(v.to_bits()) << 16);
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += wide(a[l]) * b[l];
        }
    }
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    let mut sum = (a[0] + a[2]) + (a[1] + a[3]);
    for (&a, &b) in xr.iter().zip(yr) {
        sum += wide(a) * b;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(from_f32(1.0).to_bits(), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(from_f32(1.0 + 2f32.powi(-8)).to_bits(), 0x3f80);
        assert_eq!(from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_bits(), 0x3f82);
        assert_eq!(from_f32(f32::INFINITY).to_bits(), 0x7f80);
        assert_eq!(from_f32(-f32::INFINITY).to_bits(), 0xff80);
        assert_eq!(from_f32(f32::MAX).to_bits(), 0x7f80);
        assert!(f32::from(from_f32(f32::NAN)).is_nan());
        assert_eq!(from_f32(f32::from_bits(0x7f80_0001)).to_bits(), 0x7fc0);
        let mut y = [0.0f32; 2];
        dequantize_row(&[bf16::from_bits(0x4049), bf16::from_bits(0x8000)], &mut y);
        assert_eq!(y[0].to_bits(), 0x4049_0000);
        assert_eq!(y[1].to_bits(), 0x8000_0000);
    }

    #[test]
    fn dot_is_the_f32_dot_of_the_expanded_values() {
        let x: Vec<bf16> = (0..19).map(|i| from_f32(i as f32 * 0.37 - 3.0)).collect();
        let y: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.11).collect();
        let want: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(f32::from(*a)) * f64::from(*b))
            .sum();
        assert!((f64::from(vec_dot_bf16_f32(&x, &y)) - want).abs() < 1e-5);
    }
}
