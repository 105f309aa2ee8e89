//! The `amx` table against the scalar twins (through the kernel harness),
//! and the tile products' integer sums (exact). Every product case here has
//! at least [`MIN_TOKENS`] tokens, so the tile unit (not the VNNI fallback)
//! runs, except where the fallback itself is tested.

use half::f16;

use super::*;
use crate::quant::harness::{self, GemmSuite, Rng};
use crate::quant::table::VerifiedTable;

fn table() -> Option<VerifiedTable> {
    harness::table("amx")
}

/// Token tiles full and partial, strips of 16 rows full and partial.
const SUITE: GemmSuite = GemmSuite {
    tokens: &[MIN_TOKENS, 16, 19],
    ragged_rows: &[1, 2, 15, 16, 17, 31, 33],
    ragged_tokens: &[MIN_TOKENS, 9, 15, 16, 17, 32, 35],
    gpt2: &[(67, 33)],
    lm_head: None,
    extremes: (18, 17),
};

#[test]
fn q8_0_products() {
    if let Some(t) = table() {
        SUITE.run::<BlockQ8_0>(t, 7781);
        harness::check_gemm_random::<BlockQ8_0>(t, &mut Rng::new(2026), 2304, 768, 20);
    }
}

#[test]
fn q4_0_products() {
    if let Some(t) = table() {
        SUITE.run::<BlockQ4_0>(t, 7782);
        harness::check_gemm_random::<BlockQ4_0>(t, &mut Rng::new(2027), 2304, 768, 20);
    }
}

/// Fewer tokens than [`MIN_TOKENS`] take the `avx512+vbmi` kernels; the
/// answer is the same either way.
#[test]
fn few_tokens_fall_back() {
    if let Some(t) = table() {
        let mut rng = Rng::new(31);
        for n_tok in 1..MIN_TOKENS {
            harness::check_gemm_random::<BlockQ8_0>(t, &mut rng, 19, 160, n_tok);
            harness::check_gemm_random::<BlockQ4_0>(t, &mut rng, 19, 160, n_tok);
        }
    }
}

#[test]
fn through_matmul() {
    if let Some(t) = table() {
        harness::check_matmul(t);
    }
}

/// With every scale 1, each output is the exact sum of the blocks' integer
/// dots (below 2²⁴, so exact in f32): the tile products must match them bit
/// for bit, extreme weights and activations included.
#[test]
fn integer_tile_dots_are_exact() {
    let Some(t) = table() else { return };
    let mut rng = Rng::new(0x5eed);
    let one = f16::from_f32(1.0);
    for (rows, n_tok, nb) in [(16, 16, 1), (33, 21, 3), (5, 9, 8), (17, 40, 16)] {
        let x = rng.acts(n_tok * nb * QK);
        let (mut a, s) = harness::quantize_ref::<BlockQ8_0>(&x, n_tok);
        a[0].qs = [127; 32];
        let last = a.len() - 1;
        a[last].qs = [-127; 32];
        a.iter_mut().for_each(|b| b.d = one);
        let mut w8: Vec<BlockQ8_0> = rng.blocks(rows * nb);
        let mut w4: Vec<BlockQ4_0> = rng.blocks(rows * nb);
        w8[0].qs = [-128; 32];
        w8[1].qs = [127; 32];
        w4[0].qs = [0; 16];
        w4[1].qs = [0xff; 16];
        w8.iter_mut().for_each(|b| b.d = one);
        w4.iter_mut().for_each(|b| b.d = one);
        let acts = QuantActs {
            blocks: &a,
            sums: &s,
            n_tok,
            nb,
        };
        let (mut got8, mut got4) = (vec![f32::NAN; n_tok * rows], vec![f32::NAN; n_tok * rows]);
        t.gemm(&w8, &acts, &mut OutTile::whole(&mut got8, n_tok, rows));
        t.gemm(&w4, &acts, &mut OutTile::whole(&mut got4, n_tok, rows));
        for tok in 0..n_tok {
            for r in 0..rows {
                let blocks = (0..nb).map(|b| (r * nb + b, tok * nb + b));
                let want8: i32 = blocks
                    .clone()
                    .map(|(i, j)| harness::int_dot_q8_0(&w8[i], &a[j]))
                    .sum();
                let want4: i32 = blocks
                    .map(|(i, j)| harness::int_dot_q4_0(&w4[i], &a[j]))
                    .sum();
                let k = tok * rows + r;
                assert_eq!(got8[k], want8 as f32, "q8 {rows}x{nb} t{tok} r{r}");
                assert_eq!(got4[k], want4 as f32, "q4 {rows}x{nb} t{tok} r{r}");
            }
        }
    }
}
