//! The `avx512` and `avx512+vbmi` tables against the scalar twins (through
//! the kernel harness), the block-pair integer dots (exact), and the prefill
//! strips (exact integer sums; the AMX kernel's bits where the CPU has it).

use super::*;
use crate::quant::harness::{self, GemmSuite, Rng};
use crate::quant::table::VerifiedTable;
use crate::quant::types::QK;
use crate::quant::types::q8_0::{block_sums, quantize_acts_q8_0};

/// The generic AVX-512 table.
fn base() -> Option<VerifiedTable> {
    harness::table("avx512")
}

/// The table whose decode products use VBMI and GFNI.
fn vbmi() -> Option<VerifiedTable> {
    harness::table("avx512+vbmi")
}

/// Decode on every row length, rows of every remainder modulo four blocks
/// and groups, GPT-2's shapes and the LM head: the cases the VBMI decode
/// kernels change; a few tokens check the generic kernels behind them.
const SUITE: GemmSuite = GemmSuite {
    tokens: &[1, 1, 3, 5],
    ..GemmSuite::DEFAULT
};

#[test]
fn q8_0_products() {
    if let Some(t) = base() {
        SUITE.run::<BlockQ8_0>(t, 778);
    }
}

#[test]
fn q4_0_products() {
    if let Some(t) = base() {
        SUITE.run::<BlockQ4_0>(t, 4243);
    }
}

#[test]
fn q8_0_products_vbmi() {
    if let Some(t) = vbmi() {
        SUITE.run::<BlockQ8_0>(t, 779);
    }
}

#[test]
fn q4_0_products_vbmi() {
    if let Some(t) = vbmi() {
        SUITE.run::<BlockQ4_0>(t, 4244);
    }
}

#[test]
fn attention_many_queries() {
    if let Some(t) = base() {
        harness::check_attend_head(t);
    }
}

#[test]
fn through_matmul() {
    for t in [base(), vbmi()].into_iter().flatten() {
        harness::check_matmul(t);
    }
}

/// Prompt products below the strips give each token its bits alone (the
/// base table's register tiles and the VBMI table's decode walk alike).
#[test]
fn few_token_prefill_matches_each_token_alone() {
    for t in [base(), vbmi()].into_iter().flatten() {
        harness::check_few_token_prefill_alone(t);
    }
}

/// The two blocks' integer dots through the kernels' helpers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn simd_pair(u: __m512i, off: i32, a: [&BlockQ8_0; 2], s: [i16; 2]) -> [i32; 2] {
    let av = join(load_q8(a[0]), load_q8(a[1]));
    let c = corr(-off * i32::from(s[0]), -off * i32::from(s[1]));
    let lanes = dot_pair(c, u, av);
    let mut out = [0i32; 16];
    // SAFETY: `out` is 16 writable i32; the store is unaligned.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), lanes) };
    [out[..8].iter().sum(), out[8..].iter().sum()]
}

#[test]
fn block_pair_integer_dots_are_exact() {
    if base().is_none() {
        return;
    }
    let mut rng = Rng::new(0xabcdef);
    let mut x = rng.acts(32 * 256);
    x.extend(harness::extreme_blocks(&mut rng));
    let n = x.len() / QK;
    let mut a = vec![BlockQ8_0::ZERO; n];
    let mut s = vec![0i16; n];
    quantize_acts_q8_0(&x, &mut a);
    block_sums(&a, &mut s);
    let mut w8: Vec<BlockQ8_0> = rng.blocks(n);
    let mut w4: Vec<BlockQ4_0> = rng.blocks(n);
    // Extremes, -128 included (vpdpbusd is exact over all of i8).
    w8[0].qs = [-128; 32];
    w8[1].qs = [127; 32];
    w8[2].qs = [0; 32];
    w4[0].qs = [0; 16];
    w4[1].qs = [0xff; 16];
    for i in 0..n {
        for k in [0, 1, 2, (i + 5) % n] {
            let j = (i + 1) % n;
            let (wa, wb) = (&w8[k], &w8[(k + 3) % n]);
            // SAFETY: `base()` found the CPU has every feature used here.
            let got = unsafe { simd_pair(w_q8(wa, wb), 128, [&a[i], &a[j]], [s[i], s[j]]) };
            let want = [
                harness::int_dot_q8_0(wa, &a[i]),
                harness::int_dot_q8_0(wb, &a[j]),
            ];
            assert_eq!(got, want, "q8 {i} {k}");
            let (wa, wb) = (&w4[k], &w4[(k + 3) % n]);
            // SAFETY: as above.
            let got = unsafe { simd_pair(w_q4(wa, wb), 8, [&a[i], &a[j]], [s[i], s[j]]) };
            let want = [
                harness::int_dot_q4_0(wa, &a[i]),
                harness::int_dot_q4_0(wb, &a[j]),
            ];
            assert_eq!(got, want, "q4 {i} {k}");
        }
    }
}

use crate::quant::x86::strips::MIN_TOKENS;

/// `(rows, n_tok, nb)` of the exactness checks: partial strips and token
/// groups, every count at least [`MIN_TOKENS`].
const STRIP_SHAPES: &[(usize, usize, usize)] = &[
    (16, MIN_TOKENS, 1),
    (33, MIN_TOKENS + 9, 3),
    (5, MIN_TOKENS + 1, 8),
    (17, MIN_TOKENS + 8, 16),
];

/// Prompts on both tables: the strips (from [`MIN_TOKENS`] tokens),
/// with partial strips of rows and token groups.
const PREFILL: GemmSuite = GemmSuite {
    tokens: &[MIN_TOKENS, MIN_TOKENS + 8, MIN_TOKENS + 3],
    ragged_rows: &[1, 2, 15, 16, 17, 31, 33],
    ragged_tokens: &[MIN_TOKENS, MIN_TOKENS + 1, MIN_TOKENS + 7, MIN_TOKENS + 9],
    gpt2: &[(67, 33)],
    lm_head: None,
    extremes: (18, 17),
};

#[test]
fn prefill_products() {
    for t in [base(), vbmi()].into_iter().flatten() {
        PREFILL.run::<BlockQ8_0>(t, 9108);
        PREFILL.run::<BlockQ4_0>(t, 9104);
    }
}

/// With every scale 1 the strips' outputs are the exact integer sums.
#[test]
fn integer_strip_dots_are_exact() {
    if let Some(t) = base() {
        harness::check_exact_integer_dots(t, STRIP_SHAPES);
    }
}

/// The strips sum every output in the AMX kernel's order (per row, block by
/// block, one f32 lane), so on a CPU with AMX the two give the same bits.
#[test]
fn strips_equal_the_tile_unit_bitwise() {
    match (base(), harness::table("amx")) {
        (Some(st), Some(tu)) => {
            harness::check_same_prefill_bits::<BlockQ8_0>(st, tu);
            harness::check_same_prefill_bits::<BlockQ4_0>(st, tu);
        }
        _ => eprintln!("skipped: strips vs AMX needs the avx512 and amx tables on this CPU"),
    }
}

/// The many-query kernel's sixteen-lane softmax against the scalar one
/// (every tail length, masked entries).
#[test]
fn softmax_matches_scalar() {
    if base().is_some() {
        // SAFETY: `base()` found the CPU has the AVX-512 table's features.
        unsafe { harness::check_softmax(softmax, 13) };
    }
}

/// The sixteen-lane GELU gives every value the eight-lane one's bits: every
/// length up to 40 (each tail), values across and past the exponential's
/// clamps, infinities and NaN.
#[test]
fn gelu_is_the_avx2_gelu_per_value() {
    if base().is_none() {
        eprintln!("skipped: this CPU has no AVX-512 table");
        return;
    }
    let mut rng = Rng::new(41);
    let special = [
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        20.0,
        -20.0,
        1e30,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for len in 0..=40 {
        for round in 0..20 {
            let xs: Vec<f32> = (0..len)
                .map(|i| match round {
                    0 => special[i % special.len()],
                    r => rng.f() * 2.0 * r as f32,
                })
                .collect();
            let (mut wide, mut narrow) = (xs.clone(), xs.clone());
            // SAFETY: `base()` found the CPU has the AVX-512 table's features
            // (AVX2 and FMA among them).
            unsafe {
                gelu(&mut wide);
                super::super::avx2::gelu(&mut narrow);
            }
            for (i, (w, n)) in wide.iter().zip(&narrow).enumerate() {
                assert_eq!(w.to_bits(), n.to_bits(), "gelu({}) at {i} of {len}", xs[i]);
            }
        }
    }
}

/// `exp16` is `exp8` lane for lane, bit for bit, over its whole range and
/// past both clamps.
#[test]
fn exp16_is_exp8_per_lane() {
    if base().is_none() {
        return;
    }
    let mut v = -100.0f32;
    while v < 100.0 {
        let xs: [f32; 16] = std::array::from_fn(|i| v + 0.003 * i as f32);
        let (mut wide, mut lo, mut hi) = ([0.0f32; 16], [0.0f32; 8], [0.0f32; 8]);
        // SAFETY: `base()` found the CPU has AVX-512 F (and AVX2, FMA); the
        // loads and stores are of arrays of the right lengths.
        unsafe {
            _mm512_storeu_ps(wide.as_mut_ptr(), exp16(_mm512_loadu_ps(xs.as_ptr())));
            _mm256_storeu_ps(
                lo.as_mut_ptr(),
                super::super::avx2::exp8(_mm256_loadu_ps(xs.as_ptr())),
            );
            _mm256_storeu_ps(
                hi.as_mut_ptr(),
                super::super::avx2::exp8(_mm256_loadu_ps(xs[8..].as_ptr())),
            );
        }
        for i in 0..16 {
            let want = if i < 8 { lo[i] } else { hi[i - 8] };
            assert_eq!(wide[i].to_bits(), want.to_bits(), "exp({})", xs[i]);
        }
        v += 0.0517;
    }
}
