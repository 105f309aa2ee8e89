//! The AVX2 kernels against their scalar twins.
//!
//! Exact: activation quantization (blocks and sums) and the per-block integer
//! dot products. Within float rounding: everything else, with the tolerance
//! stated at each check, relative to Σ|terms| of the sum being compared.

use super::*;
use crate::quant::scalar;
use crate::quant::{KernelPath, reference};

fn have() -> bool {
    KernelPath::Avx2.is_supported()
}

pub(in crate::quant) struct Rng(pub(in crate::quant) u64);

impl Rng {
    pub(in crate::quant) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub(in crate::quant) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(in crate::quant) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random activations with per-block magnitudes spread over many decades.
pub(in crate::quant) fn acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; n];
    for blk in x.chunks_mut(QK) {
        let scale = 10f32.powi(rng.below(9) as i32 - 4);
        for v in blk.iter_mut() {
            *v = rng.f() * scale;
        }
    }
    x
}

/// Random Q8_0 weight blocks (values over ggml's range -127..=127).
pub(in crate::quant) fn q8_blocks(rng: &mut Rng, n: usize) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|_| {
            let mut b = BlockQ8_0::ZERO;
            for q in b.qs.iter_mut() {
                *q = (rng.next() as i8).max(-127);
            }
            b.d = f16::from_f32(rng.f() * 0.05);
            b
        })
        .collect()
}

pub(in crate::quant) fn q4_blocks(rng: &mut Rng, n: usize) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|_| {
            let mut b = BlockQ4_0::ZERO;
            for q in b.qs.iter_mut() {
                *q = rng.next() as u8;
            }
            b.d = f16::from_f32(rng.f() * 0.05);
            b
        })
        .collect()
}

pub(in crate::quant) fn quantize_scalar(
    x: &[f32],
    n_tok: usize,
    nb: usize,
) -> (Vec<BlockQ8_0>, Vec<i16>) {
    let mut q = vec![BlockQ8_0::ZERO; n_tok * nb];
    let mut s = vec![0i16; n_tok * nb];
    scalar::quantize_acts(x, &mut q, &mut s);
    (q, s)
}

/// Blocks that stress the quantizer: zeros, ±max, subnormals, huge values,
/// exact halves after scaling, a single non-zero value.
pub(in crate::quant) fn extreme_blocks() -> Vec<f32> {
    let mut x = Vec::new();
    x.extend([0.0f32; 32]);
    x.extend((0..32).map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX }));
    x.extend((0..32).map(|i| (i as f32 - 16.0) * 1e-40)); // subnormal amax: id = inf
    x.extend((0..32).map(|i| (i as f32 - 16.0) * 1e-37)); // tiny, normal
    x.extend((0..32).map(|i| (i as f32 - 15.5) * 1e37));
    x.extend((0..32).map(|i| if i == 7 { -3.0 } else { 0.0 }));
    // amax 127: every value k + 0.5 is an exact half.
    x.extend((0..32).map(|i| if i == 0 { 127.0 } else { i as f32 - 16.5 }));
    x.extend((0..32).map(|i| if i == 31 { -f32::MIN_POSITIVE } else { 0.0 }));
    x.extend([-0.0f32; 32]);
    x
}

#[test]
fn quantize_acts_is_bit_identical() {
    if !have() {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inputs: Vec<Vec<f32>> = (1..=128).map(|k| acts(&mut rng, 32 * k)).collect();
    inputs.push(extreme_blocks());
    for x in &inputs {
        let nb = x.len() / QK;
        let (want_q, want_s) = quantize_scalar(x, 1, nb);
        let mut q = vec![BlockQ8_0::ZERO; nb];
        let mut s = vec![0i16; nb];
        quantize_acts(x, &mut q, &mut s);
        for b in 0..nb {
            assert_eq!(q[b].qs, want_q[b].qs, "len {} block {b}", x.len());
            assert_eq!(q[b].d.to_bits(), want_q[b].d.to_bits(), "d: block {b}");
            assert_eq!(s[b], want_s[b], "sum: block {b}");
        }
    }
}

/// The integer dot of one block pair through the kernels' SIMD helper.
#[target_feature(enable = "avx2,fma,f16c")]
fn simd_int_dot_q8(w: &BlockQ8_0, a: &BlockQ8_0) -> i32 {
    let av = load_q8(a);
    hsum_i32(dot_q8_lanes(load_q8(w), av, q8_abs(av)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn simd_int_dot_q4(w: &BlockQ4_0, a: &BlockQ8_0) -> i32 {
    let av = load_q8(a);
    hsum_i32(dot_q4_lanes(load_q4(w), av, q4_offset(av)))
}

pub(in crate::quant) fn int_dot_q8(w: &BlockQ8_0, a: &BlockQ8_0) -> i32 {
    w.qs.iter()
        .zip(&a.qs)
        .map(|(&p, &q)| i32::from(p) * i32::from(q))
        .sum()
}

pub(in crate::quant) fn int_dot_q4(w: &BlockQ4_0, a: &BlockQ8_0) -> i32 {
    (0..16)
        .map(|j| {
            (i32::from(w.qs[j] & 15) - 8) * i32::from(a.qs[j])
                + (i32::from(w.qs[j] >> 4) - 8) * i32::from(a.qs[j + 16])
        })
        .sum()
}

#[test]
fn block_integer_dots_are_exact() {
    if !have() {
        return;
    }
    let mut rng = Rng(12345);
    let x = acts(&mut rng, 32 * 512);
    let mut x_ext = extreme_blocks();
    // Activations of ±127 everywhere (the largest products).
    x_ext.extend((0..32).map(|i| if i % 3 == 0 { -1.0 } else { 1.0 }));
    let (mut a, _) = quantize_scalar(&x, 1, 512);
    a.extend(quantize_scalar(&x_ext, 1, x_ext.len() / QK).0);
    let mut w8 = q8_blocks(&mut rng, a.len());
    let mut w4 = q4_blocks(&mut rng, a.len());
    // Extreme weights: all -127, all 127, all zero; nibbles all 0 and all 15.
    let n = w8.len();
    w8[n - 1].qs = [-127; 32];
    w8[n - 2].qs = [127; 32];
    w8[n - 3].qs = [0; 32];
    w4[n - 1].qs = [0; 16];
    w4[n - 2].qs = [0xff; 16];
    w4[n - 3].qs = [0x0f; 16];
    for (i, ab) in a.iter().enumerate() {
        for wi in [i, n - 1, n - 2, n - 3] {
            // SAFETY: the test returned early unless the CPU has the features.
            let (g8, g4) = unsafe { (simd_int_dot_q8(&w8[wi], ab), simd_int_dot_q4(&w4[wi], ab)) };
            assert_eq!(g8, int_dot_q8(&w8[wi], ab), "q8 block {i} w {wi}");
            assert_eq!(g4, int_dot_q4(&w4[wi], ab), "q4 block {i} w {wi}");
        }
    }
}

/// Runs a quantized gemm kernel into a fresh `n_tok × rows` output.
pub(in crate::quant) fn run_q<W>(
    f: QGemm<W>,
    w: &[W],
    a: &[BlockQ8_0],
    s: &[i16],
    n_tok: usize,
    nb: usize,
    rows: usize,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; n_tok * rows];
    let acts = QuantActs {
        blocks: a,
        sums: s,
        n_tok,
        nb,
    };
    f(w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
    y
}

/// Σ|terms| of a quantized row dot: Σ_blocks Σ_j |w_j·a_j| · |d_w·d_a|.
pub(in crate::quant) fn abs_terms<W>(
    w: &[W],
    a: &[BlockQ8_0],
    wq: impl Fn(&W, usize) -> i32,
    wd: impl Fn(&W) -> f32,
) -> f32 {
    w.iter()
        .zip(a)
        .map(|(wb, ab)| {
            let s: i32 = (0..QK)
                .map(|j| (wq(wb, j) * i32::from(ab.qs[j])).abs())
                .sum();
            s as f32 * (wd(wb) * ab.d.to_f32()).abs()
        })
        .sum()
}

pub(in crate::quant) fn q8_val(b: &BlockQ8_0, j: usize) -> i32 {
    i32::from(b.qs[j])
}

pub(in crate::quant) fn q4_val(b: &BlockQ4_0, j: usize) -> i32 {
    let byte = b.qs[j % 16];
    i32::from(if j < 16 { byte & 15 } else { byte >> 4 }) - 8
}

/// Relative tolerance of the quantized products: the kernels sum eight lanes
/// of exact integers per block with FMA, the reference whole-block integers;
/// both round once per block and in the final sums.
pub(in crate::quant) const Q_TOL: f32 = 1e-5;

/// A quantized gemm kernel over weight blocks `W`.
pub(in crate::quant) type QGemm<W> = fn(&[W], &QuantActs<'_>, &mut OutTile<'_>);

/// Checks the AVX2 Q8_0 and Q4_0 products of `rows × cols` weights against
/// the scalar kernel for `n_tok` tokens.
fn check_q(rng: &mut Rng, rows: usize, cols: usize, n_tok: usize) {
    check_q_with(rng, rows, cols, n_tok, gemm_q8_0, gemm_q4_0);
}

/// Checks the Q8_0 and Q4_0 products `g8`, `g4` of `rows × cols` weights
/// against the scalar kernel for `n_tok` tokens.
pub(in crate::quant) fn check_q_with(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    n_tok: usize,
    g8: QGemm<BlockQ8_0>,
    g4: QGemm<BlockQ4_0>,
) {
    let nb = cols / QK;
    let x = acts(rng, n_tok * cols);
    let (a, s) = quantize_scalar(&x, n_tok, nb);
    let w8 = q8_blocks(rng, rows * nb);
    let w4 = q4_blocks(rng, rows * nb);
    let what = format!("{rows}x{cols} n_tok {n_tok}");
    assert_q_match(g8, g4, (&w8, &w4), (&a, &s), rows, 1e-30, &what);
}

/// Runs `g8`, `g4` and the scalar kernels on the same weights `(Q8_0, Q4_0)`
/// and quantized activations `(blocks, sums)` of `rows` weight rows, and
/// checks that every output is finite and within `Q_TOL · Σ|terms| + floor`
/// of the scalar one.
fn assert_q_match(
    g8: QGemm<BlockQ8_0>,
    g4: QGemm<BlockQ4_0>,
    (w8, w4): (&[BlockQ8_0], &[BlockQ4_0]),
    (a, s): (&[BlockQ8_0], &[i16]),
    rows: usize,
    floor: f32,
    what: &str,
) {
    let nb = w8.len() / rows;
    let n_tok = a.len() / nb;
    let got8 = run_q(g8, w8, a, s, n_tok, nb, rows);
    let want8 = run_q(scalar::gemm_q8_0, w8, a, s, n_tok, nb, rows);
    let got4 = run_q(g4, w4, a, s, n_tok, nb, rows);
    let want4 = run_q(scalar::gemm_q4_0, w4, a, s, n_tok, nb, rows);
    for t in 0..n_tok {
        let ar = &a[t * nb..(t + 1) * nb];
        for r in 0..rows {
            let k = t * rows + r;
            assert!(
                got8[k].is_finite() && got4[k].is_finite(),
                "{what} r{r} t{t}"
            );
            let wr8 = &w8[r * nb..(r + 1) * nb];
            let tol8 = Q_TOL * abs_terms(wr8, ar, q8_val, |b| b.d.to_f32()) + floor;
            assert!(
                (got8[k] - want8[k]).abs() <= tol8,
                "q8_0 {what} r{r} t{t}: {} vs {}",
                got8[k],
                want8[k]
            );
            let wr4 = &w4[r * nb..(r + 1) * nb];
            let tol4 = Q_TOL * abs_terms(wr4, ar, q4_val, |b| b.d.to_f32()) + floor;
            assert!(
                (got4[k] - want4[k]).abs() <= tol4,
                "q4_0 {what} r{r} t{t}: {} vs {}",
                got4[k],
                want4[k]
            );
        }
    }
}

#[test]
fn quantized_gemm_every_row_length() {
    if !have() {
        return;
    }
    let mut rng = Rng(777);
    for k in 1..=128 {
        check_q(&mut rng, 5, 32 * k, if k % 2 == 0 { 1 } else { 3 });
    }
}

#[test]
fn quantized_gemm_ragged_rows_and_tokens() {
    if !have() {
        return;
    }
    let mut rng = Rng(4242);
    for rows in 1..=9 {
        for n_tok in 1..=9 {
            check_q(&mut rng, rows, 96, n_tok);
        }
    }
}

#[test]
fn quantized_gemm_gpt2_shapes() {
    if !have() {
        return;
    }
    let mut rng = Rng(2024);
    for &cols in &[768, 1024, 1280, 1600, 2304, 3072] {
        check_q(&mut rng, 67, cols, 1);
        check_q(&mut rng, 19, cols, 7);
    }
    // The LM head: 50257 rows (not a multiple of 4) of 768.
    check_q(&mut rng, 50257, 768, 1);
}

#[test]
fn quantized_gemm_extreme_activations() {
    if !have() {
        return;
    }
    check_q_extreme(gemm_q8_0, gemm_q4_0, 7, 1);
}

/// The products `g8`, `g4` of `rows` weight rows against the scalar kernel
/// on the quantizer's extreme activation blocks (the same row for each of
/// `n_tok` tokens) and extreme weights.
pub(in crate::quant) fn check_q_extreme(
    g8: QGemm<BlockQ8_0>,
    g4: QGemm<BlockQ4_0>,
    rows: usize,
    n_tok: usize,
) {
    let mut rng = Rng(99);
    // The quantizer's extreme blocks, less those whose f16 scale overflows
    // (both paths give inf or NaN there), plus the largest finite scales.
    let mut row: Vec<f32> = extreme_blocks()
        .chunks(QK)
        .filter(|b| b.iter().all(|v| v.abs() < 1e30))
        .flatten()
        .copied()
        .collect();
    row.extend((0..32).map(|i| if i % 2 == 0 { 8.3e6 } else { -8.3e6 }));
    let nb = row.len() / QK;
    let x: Vec<f32> = (0..n_tok).flat_map(|_| row.iter().copied()).collect();
    let (a, s) = quantize_scalar(&x, n_tok, nb);
    let mut w8 = q8_blocks(&mut rng, rows * nb);
    w8[0].qs = [-127; 32];
    w8[1].qs = [127; 32];
    let w4 = q4_blocks(&mut rng, rows * nb);
    assert_q_match(g8, g4, (&w8, &w4), (&a, &s), rows, 0.0, "extremes");
}

/// Relative tolerance of float dot products (Σ|terms|): both sides sum in eight
/// lanes; the kernels fuse multiply and add and reduce in another order.
const F_TOL: f32 = 1e-5;

fn check_float(rng: &mut Rng, rows: usize, cols: usize, n_tok: usize) {
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 3.0).collect();
    let acts = FloatActs { x: &x, n_tok, cols };
    let run32 = |f: fn(&[f32], &FloatActs<'_>, &mut OutTile<'_>)| {
        let mut y = vec![f32::NAN; n_tok * rows];
        f(&w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
        y
    };
    let run16 = |f: fn(&[f16], &FloatActs<'_>, &mut OutTile<'_>)| {
        let mut y = vec![f32::NAN; n_tok * rows];
        f(&wh, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
        y
    };
    let (g32, w32) = (run32(gemm_f32), run32(scalar::gemm_f32));
    let (g16, w16) = (run16(gemm_f16), run16(scalar::gemm_f16));
    for t in 0..n_tok {
        let xr = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let k = t * rows + r;
            let abs32: f32 = w[r * cols..(r + 1) * cols]
                .iter()
                .zip(xr)
                .map(|(a, b)| (a * b).abs())
                .sum();
            let abs16: f32 = wh[r * cols..(r + 1) * cols]
                .iter()
                .zip(xr)
                .map(|(a, b)| (a.to_f32() * b).abs())
                .sum();
            let d = (g32[k] - w32[k]).abs();
            assert!(d <= F_TOL * abs32, "f32 {rows}x{cols} t{t} r{r}: {d}");
            let d = (g16[k] - w16[k]).abs();
            assert!(d <= F_TOL * abs16, "f16 {rows}x{cols} t{t} r{r}: {d}");
            // The vector dot products, on the same rows.
            let d = (dot_f32(&w[r * cols..(r + 1) * cols], xr) - w32[k]).abs();
            assert!(d <= F_TOL * abs32, "dot_f32 {cols}: {d}");
            let d = (dot_f16(&wh[r * cols..(r + 1) * cols], xr) - w16[k]).abs();
            assert!(d <= F_TOL * abs16, "dot_f16 {cols}: {d}");
        }
    }
}

#[test]
fn float_gemm_and_dots_every_length() {
    if !have() {
        return;
    }
    let mut rng = Rng(31337);
    for cols in 1..=80 {
        check_float(&mut rng, 5, cols, 3);
    }
    for k in 1..=128 {
        check_float(&mut rng, 5, 32 * k, if k % 2 == 0 { 1 } else { 2 });
    }
    for rows in 1..=9 {
        for n_tok in 1..=9 {
            check_float(&mut rng, rows, 40, n_tok);
        }
    }
    for &cols in &[768, 1024, 1280, 1600, 2304, 3072] {
        check_float(&mut rng, 13, cols, 1);
        check_float(&mut rng, 6, cols, 5);
    }
}

#[test]
fn float_gemm_lm_head_rows() {
    if !have() {
        return;
    }
    let mut rng = Rng(50257);
    // 50257 rows of a short row: every ragged row group at the LM head's count.
    check_float(&mut rng, 50257, 24, 1);
}

/// An axpy kernel over elements of type `T`.
type Axpy<T> = fn(f32, &[T], &mut [f32]);

#[test]
fn axpy_and_add_match_scalar() {
    if !have() {
        return;
    }
    let mut rng = Rng(5);
    for n in (0..=100).chain([768, 1023, 4096]) {
        let x: Vec<f32> = (0..n).map(|_| rng.f()).collect();
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let y0: Vec<f32> = (0..n).map(|_| rng.f()).collect();
        let alpha = rng.f() * 2.0;
        let mut fns32: [(Axpy<f32>, Vec<f32>); 2] =
            [(axpy_f32, y0.clone()), (scalar::axpy_f32, y0.clone())];
        for (f, y) in fns32.iter_mut() {
            f(alpha, &x, y);
        }
        let mut fns16: [(Axpy<f16>, Vec<f32>); 2] =
            [(axpy_f16, y0.clone()), (scalar::axpy_f16, y0.clone())];
        for (f, y) in fns16.iter_mut() {
            f(alpha, &xh, y);
        }
        // One fused vs two rounded operations: within 1 ulp of |αx| + |y|.
        for i in 0..n {
            let tol = 2.0 * f32::EPSILON * ((alpha * x[i]).abs() + y0[i].abs());
            assert!(
                (fns32[0].1[i] - fns32[1].1[i]).abs() <= tol,
                "axpy_f32 {n} {i}"
            );
            let tol = 2.0 * f32::EPSILON * ((alpha * xh[i].to_f32()).abs() + y0[i].abs());
            assert!(
                (fns16[0].1[i] - fns16[1].1[i]).abs() <= tol,
                "axpy_f16 {n} {i}"
            );
        }
        let (mut ya, mut yb) = (y0.clone(), y0.clone());
        add(&x, &mut ya);
        scalar::add(&x, &mut yb);
        assert_eq!(ya, yb, "add {n}");
    }
}

#[test]
fn layer_norm_matches_scalar() {
    if !have() {
        return;
    }
    let mut rng = Rng(8);
    for n in (1..=100).chain([768, 1024, 1280, 1600]) {
        let x: Vec<f32> = (0..n).map(|_| rng.f() * 4.0 + 1.5).collect();
        let w: Vec<f32> = (0..n).map(|_| rng.f()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.f() * 0.1).collect();
        let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
        layer_norm(&x, &w, &b, 1e-5, &mut got);
        scalar::layer_norm(&x, &w, &b, 1e-5, &mut want);
        // Mean and variance are sums of n terms in another order: relative
        // 1e-5 of the normalised term plus the bias.
        let mean = x.iter().sum::<f32>() / n as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for i in 0..n {
            let scale = ((x[i] - mean).abs() + mean.abs()) * inv * w[i].abs() + b[i].abs();
            assert!(
                (got[i] - want[i]).abs() <= 1e-5 * scale + 1e-7,
                "layer_norm {n} {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

/// GELU in f64 from the f32 input: the truth both paths approximate.
fn gelu_f64(u: f32) -> f64 {
    let u = f64::from(u);
    0.5 * u * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (u + 0.044715 * u * u * u)).tanh())
}

#[test]
fn gelu_is_accurate() {
    if !have() {
        return;
    }
    let mut x: Vec<f32> = (-20000..=20000).map(|i| i as f32 * 1e-3).collect();
    x.extend([
        0.0, -0.0, 1e-30, -1e-30, 1e-40, 50.0, -50.0, 1e4, -1e4, 3e38, -3e38,
    ]);
    x.extend((1..=7).map(|i| i as f32 * 0.3)); // a ragged tail
    let mut got = x.clone();
    gelu(&mut got);
    let mut want = x.clone();
    scalar::gelu(&mut want);
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let truth = gelu_f64(x[i]);
        // Within 1e-6 of |u| of the truth (the scalar path's tanh form loses
        // relative accuracy where 1 + tanh cancels; this one does not), and
        // within 2e-6 relative where the result is not tiny.
        let err = (f64::from(got[i]) - truth).abs();
        let tol = 1e-6 * f64::from(x[i].abs()).max(1e-30);
        assert!(err <= tol, "gelu({}) = {} vs {truth}", x[i], got[i]);
        if truth.abs() > 1e-3 {
            worst = worst.max(err / truth.abs());
        }
        let d = (got[i] - want[i]).abs();
        assert!(
            d <= 2e-6 * x[i].abs().max(1e-30),
            "gelu({}) vs scalar {}",
            x[i],
            want[i]
        );
    }
    assert!(worst <= 2e-6, "worst relative error {worst}");
}

#[test]
fn softmax_matches_scalar() {
    if !have() {
        return;
    }
    let mut rng = Rng(11);
    for n in (1..=100).chain([1023, 1024, 4096]) {
        let x: Vec<f32> = (0..n).map(|_| rng.f() * 30.0).collect();
        let (mut got, mut want) = (x.clone(), x.clone());
        softmax(&mut got);
        scalar::softmax(&mut want);
        let s: f32 = got.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "sum {s}");
        for i in 0..n {
            assert!(
                (got[i] - want[i]).abs() <= 2e-6 * want[i] + 1e-9,
                "softmax {n} {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
    // Masked entries and a huge spread.
    let mut x = vec![f32::NEG_INFINITY; 11];
    x[3] = 5.0;
    x[9] = -200.0;
    softmax(&mut x);
    assert_eq!(x[3], 1.0);
    assert!(x.iter().enumerate().all(|(i, &v)| i == 3 || v == 0.0));
}

#[test]
fn reference_dots_agree_with_kernels_on_exp() {
    if !have() {
        return;
    }
    // exp8 over its range, against f64.
    let mut worst = 0.0f64;
    let mut v = -87.0f32;
    while v < 88.3 {
        let xs = [
            v,
            v + 0.01,
            v + 0.02,
            v + 0.03,
            v + 0.04,
            v + 0.05,
            v + 0.06,
            v + 0.07,
        ];
        // SAFETY: the test returned early unless the CPU has the features.
        let e = unsafe { exp_array(xs) };
        for (x, y) in xs.iter().zip(e) {
            let t = f64::from(*x).exp();
            worst = worst.max((f64::from(y) - t).abs() / t);
        }
        v += 0.0731;
    }
    assert!(worst < 5e-7, "exp relative error {worst}");
    let _ = reference::vec_dot_f32(&[1.0], &[1.0]);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn exp_array(x: [f32; 8]) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    st(&mut out, exp8(ld(&x)));
    out
}

/// The fused attention over a cache of `T` against the composition of the
/// scalar `dot`, softmax and `axpy` it replaces, for head sizes with and without
/// a 32- or 8-lane tail.
#[allow(clippy::type_complexity)]
fn check_attend<T: Copy>(
    seed: u64,
    to: fn(f32) -> T,
    dot: fn(&[T], &[f32]) -> f32,
    axpy: fn(f32, &[T], &mut [f32]),
    attend: fn(&[f32], &[T], &[T], usize, usize, f32, &mut [f32], &mut [f32]),
) {
    let mut rng = Rng(seed);
    for hd in [64usize, 1, 7, 8, 40, 80, 128] {
        for n in [1usize, 2, 5, 64, 300] {
            let stride = hd * 3;
            let q: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
            let k: Vec<T> = (0..n * stride).map(|_| to(3.0 * rng.f())).collect();
            let v: Vec<T> = (0..n * stride).map(|_| to(rng.f())).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want_sc: Vec<f32> = (0..n)
                .map(|p| dot(&k[p * stride..p * stride + hd], &q) * scale)
                .collect();
            scalar::softmax(&mut want_sc);
            let mut want = vec![0.0f32; hd];
            for (p, &w) in want_sc.iter().enumerate() {
                axpy(w, &v[p * stride..p * stride + hd], &mut want);
            }
            let mut sc = vec![f32::NAN; n + 3];
            let mut got = vec![f32::NAN; hd];
            attend(&q, &k, &v, stride, n, scale, &mut sc, &mut got);
            for j in 0..hd {
                // Each output is a convex combination of values in [-1, 1].
                assert!(
                    (got[j] - want[j]).abs() <= 1e-5,
                    "hd {hd} n {n} lane {j}: {} vs {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
}

#[test]
fn attend_matches_the_scalar_composition() {
    if have() {
        check_attend(11, |x| x, scalar::dot_f32, scalar::axpy_f32, attend_f32);
    }
}

#[test]
fn attend_f16_matches_the_scalar_composition() {
    if have() {
        check_attend(
            12,
            f16::from_f32,
            scalar::dot_f16,
            scalar::axpy_f16,
            attend_f16,
        );
    }
}
