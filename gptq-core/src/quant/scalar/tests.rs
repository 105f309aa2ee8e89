//! The scalar table: its entries are the types' references (through the
//! kernel harness), and its float kernels are checked against f64.

use super::*;
use crate::quant::harness::{self, Rng, block_lengths, vector_lengths};
use crate::quant::tile::{FloatActs, OutTile, QuantActs};
use crate::quant::types::{BlockQ4_0, BlockQ8_0, BlockQ8K};

#[test]
fn quantizers_are_the_references() {
    let t = harness::scalar();
    harness::check_quantize::<BlockQ8_0>(t);
    harness::check_quantize::<BlockQ8K>(t);
}

/// The quantized products against the f64 sum of the dequantized values.
fn check_exact<W: crate::quant::table::Gemm + harness::Gen>(rng: &mut Rng, cols: usize)
where
    W::Partner: harness::TestActs,
{
    let (rows, n_tok) = (3, 2);
    let w: Vec<W> = rng.blocks(rows * cols / W::ELEMS);
    let x = rng.acts(n_tok * cols);
    let (q, s) = harness::quantize_ref::<W::Partner>(&x, n_tok);
    let nb = cols / W::ELEMS;
    let acts = QuantActs::new(&q, &s, n_tok, nb);
    let mut y = vec![f32::NAN; rows * n_tok];
    harness::scalar().gemm(&w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
    for t in 0..n_tok {
        let mut xf = vec![0.0f32; cols];
        <W::Partner as harness::TestActs>::dequantize(acts.row(t), &mut xf);
        for r in 0..rows {
            let mut wf = vec![0.0f32; cols];
            W::dequantize(&w[r * nb..(r + 1) * nb], &mut wf);
            let (exact, abs) = wf.iter().zip(&xf).fold((0.0f64, 0.0f64), |(e, a), (p, q)| {
                let v = f64::from(*p) * f64::from(*q);
                (e + v, a + v.abs())
            });
            let g = f64::from(y[t * rows + r]);
            assert!(
                (g - exact).abs() <= (nb + 8) as f64 * 1.2e-7 * abs + 1e-30,
                "{:?} {cols}: {g} vs {exact}",
                W::TYPE
            );
        }
    }
}

#[test]
fn quantized_products_match_f64() {
    let mut rng = Rng::new(21);
    for cols in block_lengths() {
        check_exact::<BlockQ8_0>(&mut rng, cols);
        check_exact::<BlockQ4_0>(&mut rng, cols);
    }
}

#[test]
fn float_products_match_f64() {
    let mut rng = Rng::new(22);
    for cols in (1..=80).chain(block_lengths()) {
        let (rows, n_tok) = (3, 2);
        let w = rng.acts(rows * cols);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let x = rng.acts(n_tok * cols);
        let acts = FloatActs {
            x: &x,
            n_tok,
            cols,
            decode: false,
        };
        let (mut y, mut yh) = (vec![f32::NAN; rows * n_tok], vec![f32::NAN; rows * n_tok]);
        gemm_f32(&w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
        gemm_f16(&wh, &acts, &mut OutTile::whole(&mut yh, n_tok, rows));
        for t in 0..n_tok {
            for r in 0..rows {
                let row = |i: usize| {
                    (
                        f64::from(w[r * cols + i]),
                        f64::from(wh[r * cols + i].to_f32()),
                    )
                };
                let xt = &x[t * cols..(t + 1) * cols];
                let (mut e, mut eh, mut abs, mut absh) = (0.0, 0.0, 0.0, 0.0);
                for (i, &xi) in xt.iter().enumerate() {
                    let (a, ah) = row(i);
                    let xi = f64::from(xi);
                    (e, eh, abs, absh) = (
                        e + a * xi,
                        eh + ah * xi,
                        abs + (a * xi).abs(),
                        absh + (ah * xi).abs(),
                    );
                }
                let tol = |a: f64| (cols / 8 + 16) as f64 * 1.2e-7 * a + 1e-30;
                let (g, gh) = (f64::from(y[t * rows + r]), f64::from(yh[t * rows + r]));
                assert!((g - e).abs() <= tol(abs), "f32 {cols}: {g} vs {e}");
                assert!((gh - eh).abs() <= tol(absh), "f16 {cols}: {gh} vs {eh}");
            }
        }
    }
}

#[test]
fn layer_norm_matches_f64() {
    let mut rng = Rng::new(23);
    for n in vector_lengths().filter(|&n| n > 0) {
        let x: Vec<f32> = rng.acts(n).iter().map(|v| v + 2.0).collect();
        let w = rng.uniform(n);
        let b = rng.uniform(n);
        let mut out = vec![0.0; n];
        layer_norm(&x, &w, &b, 1e-5, &mut out);
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for i in 0..n {
            let want = (f64::from(x[i]) - mean) * inv * f64::from(w[i]) + f64::from(b[i]);
            let scale = ((f64::from(x[i]) - mean).abs() + mean.abs()) * inv * f64::from(w[i]).abs();
            // Mean and variance are sequential f32 sums of `n` terms.
            let rel = 1e-5 + n as f64 * f64::from(f32::EPSILON) / 2.0;
            assert!(
                (f64::from(out[i]) - want).abs() <= rel * scale + 1e-6,
                "layer_norm {n} {i}: {} vs {want}",
                out[i]
            );
        }
    }
}

/// The tanh form, within 1e-6 of |u| of the f64 truth (its `1 + tanh`
/// cancels for negative `u`: accurate in absolute, not relative, terms).
#[test]
fn gelu_matches_f64() {
    let mut x: Vec<f32> = (-20000..=20000).map(|i| i as f32 * 1e-3).collect();
    x.extend(Rng::new(24).acts(4096));
    let mut g = x.clone();
    gelu(&mut g);
    for (u, v) in x.iter().zip(&g) {
        let d = f64::from(*u);
        let truth = 0.5
            * d
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (d + 0.044715 * d * d * d)).tanh());
        assert!(
            (f64::from(*v) - truth).abs() <= 1e-6 * d.abs() + 1e-7,
            "gelu({u}) = {v} vs {truth}"
        );
    }
}

/// The composed attention against f64: the softmax of the scaled scores,
/// then the weighted sum of the values.
#[test]
fn attend_matches_f64() {
    let mut rng = Rng::new(25);
    for (hd, n) in [(64, 1), (64, 300), (7, 33), (128, 17)] {
        let stride = 2 * hd + 3;
        let q = rng.uniform(hd);
        let k: Vec<f32> = rng.uniform(n * stride).iter().map(|v| 3.0 * v).collect();
        let v = rng.uniform(n * stride);
        let scale = 1.0 / (hd as f32).sqrt();
        let (mut sc, mut out) = (vec![0.0; n], vec![0.0; hd]);
        attend_f32(&q, &k, &v, stride, n, scale, &mut sc, &mut out);
        let s: Vec<f64> = (0..n)
            .map(|p| {
                (0..hd)
                    .map(|j| f64::from(q[j]) * f64::from(k[p * stride + j]))
                    .sum::<f64>()
                    * f64::from(scale)
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for j in 0..hd {
            let want: f64 = (0..n)
                .map(|p| e[p] / sum * f64::from(v[p * stride + j]))
                .sum();
            assert!(
                (f64::from(out[j]) - want).abs() <= 1e-5,
                "hd {hd} n {n} lane {j}"
            );
        }
    }
}

#[test]
fn through_matmul() {
    harness::check_matmul(harness::scalar());
}
