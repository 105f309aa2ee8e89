//! The Hessian of a layer's squared output error with respect to one weight
//! row: `H = 2·XᵀX` over the calibration inputs `X` (tokens × input features).
//! GPTQ only needs it up to a constant factor, so `XᵀX` is kept.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Output rows of `XᵀX` per parallel task. Fixed, so that every element is
/// summed in the same order whatever the thread count (the file is
/// byte-identical on any machine size).
const TILE: usize = 64;

/// `Σ xᵀx` over every input row seen, in f64.
#[derive(Clone, Debug)]
pub struct Hessian {
    n: usize,
    h: Vec<f64>,
    rows: u64,
    tmp: Vec<f32>,
}

impl Hessian {
    /// An empty accumulator for `n` input features.
    pub fn new(n: usize) -> Hessian {
        Hessian {
            n,
            h: vec![0.0; n * n],
            rows: 0,
            tmp: Vec::new(),
        }
    }

    /// Input features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input rows accumulated.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The `n × n` sums, row-major.
    pub fn values(&self) -> &[f64] {
        &self.h
    }

    /// Adds `m` rows of `n` inputs (`x` row-major). Each batch's product is
    /// formed in f32 (as the kernels' inputs are) and summed into f64.
    pub fn add(&mut self, x: &[f32], m: usize) {
        let n = self.n;
        assert_eq!(x.len(), m * n, "Hessian::add: {m} rows of {n}");
        self.tmp.resize(n * n, 0.0);
        let xm = MatRef::from_row_major_slice(x, m, n);
        self.tmp
            .par_chunks_mut(TILE * n)
            .enumerate()
            .for_each(|(t, out)| {
                let r0 = t * TILE;
                let rows = out.len() / n;
                let dst = MatMut::from_row_major_slice_mut(out, rows, n);
                let lhs = xm.subcols(r0, rows).transpose();
                matmul(dst, Accum::Replace, lhs, xm, 1.0f32, Par::Seq);
            });
        self.h
            .par_chunks_mut(TILE * n)
            .zip(self.tmp.par_chunks(TILE * n))
            .for_each(|(h, g)| {
                for (a, &b) in h.iter_mut().zip(g) {
                    *a += f64::from(b);
                }
            });
        self.rows += m as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_outer_products() {
        let n = 70;
        let x: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut h = Hessian::new(n);
        h.add(&x[..2 * n], 2);
        h.add(&x[2 * n..], 1);
        assert_eq!(h.rows(), 3);
        for i in 0..n {
            for j in 0..n {
                let want: f64 = (0..3)
                    .map(|r| f64::from(x[r * n + i]) * f64::from(x[r * n + j]))
                    .sum();
                assert!((h.values()[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
