//! The AMX-INT8 products against their scalar twins: the integer tile dots
//! exactly, the products within the AVX2 tests' tolerance (relative
//! `Q_TOL = 1e-5` of Σ|terms|). Every shape here has at least
//! [`MIN_TOKENS`] tokens, so the tile unit (not the VNNI fallback) runs.

use half::f16;

use super::*;
use crate::quant::KernelPath;
use crate::quant::avx2::tests::{
    Rng, acts, check_q_extreme, check_q_with, int_dot_q4, int_dot_q8, q4_blocks, q8_blocks,
    quantize_scalar, run_q,
};

fn have() -> bool {
    KernelPath::Amx.is_supported()
}

/// With every scale 1, each output is the exact sum of the blocks' integer
/// dots (below 2²⁴, so exact in f32): the tile products must match them bit
/// for bit, extreme weights and activations included.
#[test]
fn integer_tile_dots_are_exact() {
    if !have() {
        return;
    }
    let mut rng = Rng(0x5eed);
    let one = f16::from_f32(1.0);
    for (rows, n_tok, nb) in [(16, 16, 1), (33, 21, 3), (5, 9, 8), (17, 40, 16)] {
        let x = acts(&mut rng, n_tok * nb * QK);
        let (mut a, s) = quantize_scalar(&x, n_tok, nb);
        a[0].qs = [127; 32];
        let last = a.len() - 1;
        a[last].qs = [-127; 32];
        a.iter_mut().for_each(|b| b.d = one);
        let mut w8 = q8_blocks(&mut rng, rows * nb);
        let mut w4 = q4_blocks(&mut rng, rows * nb);
        w8[0].qs = [-128; 32];
        w8[1].qs = [127; 32];
        w4[0].qs = [0; 16];
        w4[1].qs = [0xff; 16];
        w8.iter_mut().for_each(|b| b.d = one);
        w4.iter_mut().for_each(|b| b.d = one);
        let got8 = run_q(gemm_q8_0, &w8, &a, &s, n_tok, nb, rows);
        let got4 = run_q(gemm_q4_0, &w4, &a, &s, n_tok, nb, rows);
        for t in 0..n_tok {
            for r in 0..rows {
                let blocks = (0..nb).map(|b| (r * nb + b, t * nb + b));
                let want8: i32 = blocks.clone().map(|(i, j)| int_dot_q8(&w8[i], &a[j])).sum();
                let want4: i32 = blocks.map(|(i, j)| int_dot_q4(&w4[i], &a[j])).sum();
                let k = t * rows + r;
                assert_eq!(got8[k], want8 as f32, "q8 {rows}x{nb} t{t} r{r}");
                assert_eq!(got4[k], want4 as f32, "q4 {rows}x{nb} t{t} r{r}");
            }
        }
    }
}

#[test]
fn quantized_gemm_every_row_length() {
    if !have() {
        return;
    }
    let mut rng = Rng(7781);
    for k in 1..=128 {
        let n_tok = [MIN_TOKENS, 16, 19][k % 3];
        check_q_with(&mut rng, 21, 32 * k, n_tok, gemm_q8_0, gemm_q4_0);
    }
}

#[test]
fn quantized_gemm_ragged_rows_and_tokens() {
    if !have() {
        return;
    }
    let mut rng = Rng(4244);
    for rows in [1, 2, 15, 16, 17, 31, 33] {
        for n_tok in [MIN_TOKENS, 9, 15, 16, 17, 32, 35] {
            check_q_with(&mut rng, rows, 96, n_tok, gemm_q8_0, gemm_q4_0);
            check_q_with(&mut rng, rows, 128, n_tok, gemm_q8_0, gemm_q4_0);
        }
    }
}

#[test]
fn quantized_gemm_gpt2_shapes() {
    if !have() {
        return;
    }
    let mut rng = Rng(2026);
    for &cols in &[768, 1024, 1280, 1600, 2304, 3072] {
        check_q_with(&mut rng, 67, cols, 33, gemm_q8_0, gemm_q4_0);
    }
    check_q_with(&mut rng, 2304, 768, 20, gemm_q8_0, gemm_q4_0);
}

/// Fewer tokens than [`MIN_TOKENS`] take the VNNI kernels; the answer is the
/// same either way.
#[test]
fn few_tokens_fall_back_to_vnni() {
    if !have() {
        return;
    }
    let mut rng = Rng(31);
    for n_tok in 1..MIN_TOKENS {
        check_q_with(&mut rng, 19, 160, n_tok, gemm_q8_0, gemm_q4_0);
    }
}

/// The quantizer's extreme blocks (less those whose f16 scale overflows) as
/// every token of a tile and a ragged tail: all-zero blocks, ±max, subnormal
/// and huge scales.
#[test]
fn quantized_gemm_extreme_activations() {
    if !have() {
        return;
    }
    check_q_extreme(gemm_q8_0, gemm_q4_0, 18, 17);
}
