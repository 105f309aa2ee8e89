//! The factor GPTQ propagates errors with: the upper Cholesky factor `U` of
//! the damped inverse Hessian (`H⁻¹ = UᵀU`), in processing order.
//!
//! Row `i` of `U`, divided by `U[i][i]`, is how a rounding error in column `i`
//! is best spread over the columns after it (Frantar et al., 2022: the
//! Cholesky form of the OBS update, which reads the rows of `H⁻¹` of a shrinking
//! set of columns without ever updating the inverse).

use anyhow::{Result, bail};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// A permuted, damped Hessian's inverse factor.
#[derive(Clone, Debug)]
pub struct InverseFactor {
    /// Processing order: `perm[i]` is the column handled `i`-th.
    pub perm: Vec<usize>,
    /// Columns that never saw a non-zero input (their weights do not matter).
    pub dead: Vec<bool>,
    /// `n × n` upper-triangular `U`, row-major, in processing order.
    pub u: Vec<f32>,
}

/// Builds the factor from `XᵀX` (`h`, `n × n` row-major). Columns whose
/// diagonal is zero are dead (their diagonal becomes 1); with `act_order`
/// the columns are processed by decreasing diagonal (the most active inputs
/// first); `damp` times the mean diagonal is added to the diagonal.
pub fn inverse_factor(h: &[f64], n: usize, act_order: bool, damp: f64) -> Result<InverseFactor> {
    assert_eq!(h.len(), n * n);
    let diag: Vec<f64> = (0..n).map(|i| h[i * n + i]).collect();
    let dead: Vec<bool> = diag.iter().map(|&d| d <= 0.0).collect();
    if let Some(i) = diag.iter().position(|d| !d.is_finite()) {
        bail!(
            "input feature {i} has a non-finite second moment: calibration activations overflowed"
        );
    }
    let mut perm: Vec<usize> = (0..n).collect();
    if act_order {
        // Stable: equal diagonals keep their order, so the result is defined.
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    }
    let live: Vec<f64> = diag.iter().copied().filter(|&d| d > 0.0).collect();
    let mean = if live.is_empty() {
        1.0
    } else {
        live.iter().sum::<f64>() / n as f64
    };
    let lambda = damp * mean;
    let hp = Mat::<f64>::from_fn(n, n, |i, j| {
        let (a, b) = (perm[i], perm[j]);
        let mut v = if dead[a] || dead[b] {
            0.0
        } else {
            h[a * n + b]
        };
        if i == j {
            v = if dead[a] { 1.0 } else { v } + lambda;
        }
        v
    });
    let Ok(llt) = hp.llt(Side::Lower) else {
        bail!("the damped Hessian is not positive definite (damping {damp}); increase the damping");
    };
    let inv = llt.inverse();
    let Ok(llt) = inv.llt(Side::Lower) else {
        bail!(
            "the inverse Hessian is not positive definite (damping {damp}); increase the damping"
        );
    };
    let l = llt.L();
    let mut u = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i..n {
            // U = Lᵀ.
            u[i * n + j] = l[(j, i)] as f32;
        }
    }
    Ok(InverseFactor { perm, dead, u })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_reconstructs_the_inverse() {
        let n = 5;
        // A positive definite H.
        let a: Vec<f64> = (0..n * n).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>();
            }
            h[i * n + i] += 1.0;
        }
        let f = inverse_factor(&h, n, false, 0.0).unwrap();
        // UᵀU · H = I.
        let mut utu = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                utu[i * n + j] = (0..n)
                    .map(|k| f64::from(f.u[k * n + i]) * f64::from(f.u[k * n + j]))
                    .sum();
            }
        }
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| utu[i * n + k] * h[k * n + j]).sum();
                assert!(
                    (v - f64::from(u8::from(i == j))).abs() < 1e-4,
                    "{i},{j}: {v}"
                );
            }
        }
    }

    #[test]
    fn dead_columns_and_act_order() {
        let h = [4.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 9.0];
        let f = inverse_factor(&h, 3, true, 0.01).unwrap();
        assert_eq!(f.dead, vec![false, true, false]);
        assert_eq!(f.perm, vec![2, 0, 1]);
    }
}
