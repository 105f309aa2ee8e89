//! The `avx2` table against the scalar twins (through the kernel harness),
//! the prefill strips (exact integer sums, the AVX-512 strips' bits), and the
//! AVX2 helpers only this path has: the per-block integer dots (exact),
//! `exp8` and the softmax.

use super::*;
use crate::quant::harness::{self, GemmSuite, Rng};
use crate::quant::table::VerifiedTable;
use crate::quant::types::q8_0::quantize_acts_q8_0;

fn table() -> Option<VerifiedTable> {
    harness::table("avx2")
}

#[test]
fn quantize_q8_0_is_bit_identical() {
    if let Some(t) = table() {
        harness::check_quantize::<BlockQ8_0>(t);
    }
}

#[test]
fn quantize_q8_k_is_bit_identical() {
    if let Some(t) = table() {
        harness::check_quantize::<BlockQ8K>(t);
        harness::check_q8_k_corners(t);
    }
}

use crate::quant::x86::strips::MIN_TOKENS;

/// Prompts: the strips (from [`MIN_TOKENS`] tokens), with partial
/// strips of rows and token groups.
const PREFILL: GemmSuite = GemmSuite {
    tokens: &[MIN_TOKENS, MIN_TOKENS + 8, MIN_TOKENS + 3],
    ragged_rows: &[1, 2, 7, 8, 9, 15, 16, 17, 31, 33],
    ragged_tokens: &[MIN_TOKENS, MIN_TOKENS + 1, MIN_TOKENS + 2, MIN_TOKENS + 5],
    gpt2: &[(67, 33)],
    lm_head: None,
    extremes: (18, 17),
};

#[test]
fn prefill_products() {
    if let Some(t) = table() {
        PREFILL.run::<BlockQ8_0>(t, 9208);
        PREFILL.run::<BlockQ4_0>(t, 9204);
    }
}

/// With every scale 1 the strips' outputs are the exact integer sums
/// (weights -128 and ±127 included).
#[test]
fn integer_strip_dots_are_exact() {
    if let Some(t) = table() {
        harness::check_exact_integer_dots(
            t,
            &[
                (16, MIN_TOKENS, 1),
                (33, MIN_TOKENS + 9, 3),
                (5, MIN_TOKENS + 1, 8),
                (17, MIN_TOKENS + 8, 16),
            ],
        );
    }
}

/// The same at decode sizes: the quads of four blocks (Q4_0's offset
/// subtracted once per quad) and the blocks after them, one token and a few,
/// weights of -128 against negative activations included.
#[test]
fn integer_decode_dots_are_exact() {
    if let Some(t) = table() {
        harness::check_exact_integer_dots(t, &[(16, 1, 8), (9, 5, 12), (7, 1, 7), (3, 9, 5)]);
    }
}

/// The AVX2 strips sum in the AVX-512 strips' order: the same bits.
#[test]
fn strips_equal_the_avx512_strips_bitwise() {
    match (table(), harness::table("avx512")) {
        (Some(x), Some(y)) => {
            harness::check_same_prefill_bits::<BlockQ8_0>(x, y);
            harness::check_same_prefill_bits::<BlockQ4_0>(x, y);
            harness::check_same_prefill_bits::<crate::quant::types::BlockIq4Nl>(x, y);
            harness::check_same_prefill_bits::<crate::quant::types::BlockIq4Xs>(x, y);
        }
        _ => eprintln!("skipped: AVX2 vs AVX-512 strips needs both tables on this CPU"),
    }
}

#[test]
fn q8_0_products() {
    if let Some(t) = table() {
        GemmSuite::DEFAULT.run::<BlockQ8_0>(t, 777);
    }
}

#[test]
fn q4_0_products() {
    if let Some(t) = table() {
        GemmSuite::DEFAULT.run::<BlockQ4_0>(t, 4242);
    }
}

#[test]
fn f32_products() {
    if let Some(t) = table() {
        harness::check_float_gemm::<f32>(t, 31337);
    }
}

#[test]
fn f16_products() {
    if let Some(t) = table() {
        harness::check_float_gemm::<f16>(t, 31338);
    }
}

#[test]
fn vector_kernels() {
    if let Some(t) = table() {
        harness::check_add(t);
        harness::check_layer_norm(t);
        harness::check_gelu(t);
    }
}

#[test]
fn attention() {
    if let Some(t) = table() {
        harness::check_attend(t);
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

/// The integer dot of one block pair through the kernels' SIMD helper.
#[target_feature(enable = "avx2,fma,f16c")]
fn simd_int_dot_q8(w: &BlockQ8_0, a: &BlockQ8_0) -> i32 {
    let av = load_q8(a);
    hsum_i32(dot_q8_lanes(load_q8(w), av, no_aux(av)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn simd_int_dot_q4(w: &BlockQ4_0, a: &BlockQ8_0) -> i32 {
    let av = load_q8(a);
    hsum_i32(dot_q4_lanes(gemv::unpack_q4(w), av, q4_offset(av)))
}

/// The per-block integer dots equal the definition exactly, on random and
/// extreme activations against random and extreme weights (Q8_0 weights
/// -128 included). The activation quantizer writes -128 only into blocks
/// whose scale is zero (a subnormal maximum), where the sign trick may wrap
/// against a negative weight: such a block's dot is multiplied by that zero,
/// which is checked instead.
#[test]
fn block_integer_dots_are_exact() {
    if table().is_none() {
        return;
    }
    let mut rng = Rng::new(12345);
    let mut x = rng.acts(32 * 512);
    x.extend(harness::extreme_blocks(&mut rng));
    let mut a = vec![BlockQ8_0::ZERO; x.len() / QK];
    quantize_acts_q8_0(&x, &mut a);
    let mut w8: Vec<BlockQ8_0> = rng.blocks(a.len());
    let mut w4: Vec<BlockQ4_0> = rng.blocks(a.len());
    w8.extend(<BlockQ8_0 as harness::Gen>::extremes());
    w4.extend(<BlockQ4_0 as harness::Gen>::extremes());
    for (i, ab) in a.iter().enumerate() {
        let wrapped = ab.qs.contains(&-128);
        assert!(
            !wrapped || ab.d.to_f32() == 0.0,
            "block {i}: -128 at a nonzero scale"
        );
        for wi in [i, w8.len() - 1 - i % 9].into_iter().filter(|_| !wrapped) {
            // SAFETY: `table()` found the CPU has AVX2, FMA and F16C.
            let g8 = unsafe { simd_int_dot_q8(&w8[wi], ab) };
            assert_eq!(
                g8,
                harness::int_dot_q8_0(&w8[wi], ab),
                "q8 block {i} w {wi}"
            );
        }
        for wi in [i, w4.len() - 1 - i % 10] {
            // SAFETY: as above.
            let g4 = unsafe { simd_int_dot_q4(&w4[wi], ab) };
            assert_eq!(
                g4,
                harness::int_dot_q4_0(&w4[wi], ab),
                "q4 block {i} w {wi}"
            );
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn exp_array(x: [f32; 8]) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    st(&mut out, exp8(ld(&x)));
    out
}

/// `exp8` over its range, within 5e-7 relative of f64's.
#[test]
fn exp_is_accurate() {
    if table().is_none() {
        return;
    }
    let mut worst = 0.0f64;
    let mut v = -87.0f32;
    while v < 88.3 {
        let xs: [f32; 8] = std::array::from_fn(|i| v + 0.01 * i as f32);
        // SAFETY: `table()` found the CPU has AVX2, FMA and F16C.
        let e = unsafe { exp_array(xs) };
        for (x, y) in xs.iter().zip(e) {
            let t = f64::from(*x).exp();
            worst = worst.max((f64::from(y) - t).abs() / t);
        }
        v += 0.0731;
    }
    assert!(worst < 5e-7, "exp relative error {worst}");
}

/// The softmax inside the fused attentions: against the scalar one, and on
/// masked entries and a huge spread.
#[test]
fn softmax_matches_scalar() {
    if table().is_some() {
        // SAFETY: `table()` found the CPU has AVX2, FMA and F16C.
        unsafe { harness::check_softmax(softmax, 11) };
    }
}

#[test]
fn attention_many_queries() {
    if let Some(t) = table() {
        harness::check_attend_head(t);
    }
}

/// The integer-scale strips' activation corrections in AVX2 equal their
/// scalar twin's: random blocks, every byte at -127 and at 127, each offset
/// the strips use (Q3_K 4, Q6_K 32) and the range's ends.
#[test]
fn pair_corrections_match_scalar() {
    use crate::quant::types::q8_k::quantize_row_q8_k;
    use crate::quant::x86::strips::{Scratch, pair_corrections, prepare_pair_acts};
    if table().is_none() {
        return;
    }
    let mut rng = Rng::new(4242);
    let (n_tok, nb) = (3, 5);
    let mut blocks = vec![BlockQ8K::ZERO; n_tok * nb];
    quantize_row_q8_k(&rng.acts(n_tok * nb * QK_K), &mut blocks);
    blocks[1].qs = [-127; QK_K];
    blocks[2].qs = [127; QK_K];
    for (i, q) in blocks[3].qs.iter_mut().enumerate() {
        *q = if i % 3 == 0 { -127 } else { 127 };
    }
    let a = crate::quant::tile::QuantActs::new(&blocks, &[], n_tok, nb);
    for off in [0, 1, 4, 31, 32] {
        let mut s = Scratch::default();
        // SAFETY: `table()` found the `avx2` table verified on this CPU, so
        // it has AVX2.
        unsafe { prepare_pair_acts(&a, off, &mut s) };
        assert_eq!(s.corr, pair_corrections(&a, off), "offset {off}");
        let da: Vec<f32> = blocks.iter().flat_map(|b| [b.d; 16]).collect();
        assert_eq!(s.da, da);
    }
}
