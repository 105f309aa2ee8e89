//! The float element types' reference: F32 and F16 weights take f32
//! activations as they are.

use half::f16;

/// Expands F16 values into `y`.
pub fn dequantize_row_f16(x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_f16: length mismatch");
    for (o, v) in y.iter_mut().zip(x) {
        *o = v.to_f32();
    }
}

/// Lanes of the float reference dot products. Eight independent partial sums,
/// combined pairwise at the end: a fixed order that the compiler can keep in
/// vector registers without reassociating anything.
const LANES: usize = 8;

fn reduce(acc: [f32; LANES]) -> f32 {
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Σ x·y of two f32 rows.
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32: length mismatch");
    let mut acc = [0.0f32; LANES];
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let mut sum = reduce(acc);
    for (a, b) in xr.iter().zip(yr) {
        sum += a * b;
    }
    sum
}

/// Σ x·y of an f16 row (weights) and an f32 row (activations), in f32.
pub fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16_f32: length mismatch");
    let mut acc = [0.0f32; LANES];
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l].to_f32() * b[l];
        }
    }
    let mut sum = reduce(acc);
    for (a, b) in xr.iter().zip(yr) {
        sum += a.to_f32() * b;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_f64() {
        let n = 259;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
            .collect();
        let w: Vec<f32> = (0..n)
            .map(|i| ((i * 104729) % 97) as f32 / 25.0 - 1.9)
            .collect();
        let exact: f64 = x
            .iter()
            .zip(&w)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let f = vec_dot_f32(&x, &w);
        assert!((f64::from(f) - exact).abs() < 1e-4 * exact.abs().max(1.0));
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let fh = vec_dot_f16_f32(&wh, &x);
        assert!((f64::from(fh) - exact).abs() < 1e-2 * exact.abs().max(1.0));
        let mut back = vec![0.0; n];
        dequantize_row_f16(&wh, &mut back);
        assert!(back.iter().zip(&wh).all(|(a, b)| *a == b.to_f32()));
    }
}
