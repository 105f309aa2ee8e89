//! The `amx` table against the scalar twins (through the kernel harness),
//! and the tile products' integer sums (exact). Every product case here has
//! at least [`MIN_TOKENS`] tokens, so the tile unit (not the VNNI fallback)
//! runs, except where the fallback itself is tested.

use super::*;
use crate::quant::harness::{self, GemmSuite, Rng};
use crate::quant::table::VerifiedTable;

fn table() -> Option<VerifiedTable> {
    harness::table("amx")
}

/// Token tiles full and partial (the last tile's 1, 3, 15 or 16 tokens),
/// strips of 16 rows full and partial.
const SUITE: GemmSuite = GemmSuite {
    tokens: &[MIN_TOKENS, 80, 83],
    ragged_rows: &[1, 2, 15, 16, 17, 31, 33],
    ragged_tokens: &[MIN_TOKENS, 65, 79, 80, 81, 96, 99],
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

/// Prompt products below the strips give each token its bits alone (they
/// run the decode walk).
#[test]
fn few_token_prefill_matches_each_token_alone() {
    if let Some(t) = table() {
        harness::check_few_token_prefill_alone(t);
    }
}

/// With every scale 1, each output is the exact sum of the blocks' integer
/// dots: the tile products must match them bit for bit.
#[test]
fn integer_tile_dots_are_exact() {
    if let Some(t) = table() {
        harness::check_exact_integer_dots(
            t,
            &[
                (16, 16, 1),
                (33, 21, 3),
                (5, 9, 8),
                (17, 40, 16),
                (16, 64, 1),
                (33, 67, 3),
                (17, 80, 4),
            ],
        );
    }
}
