//! The `neon` and `neon+dotprod` tables against the scalar twins (through
//! the kernel harness), and what only this path has: its integer block dots
//! (exact, `sdot` and widening), its dot/axpy/softmax helpers, its f16
//! conversion (exact for every half), its quantizers on non-finite input,
//! and of the other block types' products: the K-quants' bit for bit equal to
//! the scalar twins, the 32-element types' integer dots exact.

use std::array::from_fn;

use half::f16;

use super::blocks::Q32Block;
use super::float::{FloatElem, axpy_vec, dot_vec, softmax_vec};
use super::quant::{QBlock, Sdot, Widen, block_dots};
use super::strip::{MIN_TOKENS, strips_any};
use super::strip_k::MIN_TOKENS as K_STRIPS;
use super::strip_mm::strips_any as mm_strips_any;
use super::{h2f, load_f16x8};
use crate::quant::harness::{self, GemmSuite, Gen, Rng, bits, vector_lengths};
use crate::quant::scalar;
use crate::quant::table::{Gemm, VerifiedTable};
use crate::quant::tile::{OutTile, QuantActs};
use crate::quant::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, QK, QuantBlock,
};

/// The widening table: every aarch64 CPU runs it.
fn base() -> Option<VerifiedTable> {
    harness::table("neon")
}

/// The `sdot` table.
fn dotprod() -> Option<VerifiedTable> {
    harness::table("neon+dotprod")
}

/// The `smmla` table.
fn i8mm() -> Option<VerifiedTable> {
    harness::table("neon+i8mm")
}

/// Decode and four-token tiles, GPT-2's shapes and the LM head.
const SUITE: GemmSuite = GemmSuite {
    tokens: &[1, 6],
    gpt2: &[(19, 3), (67, 1)],
    extremes: (6, 5),
    ..GemmSuite::DEFAULT
};

#[test]
fn quantize_q8_0_is_bit_identical() {
    if let Some(t) = base() {
        harness::check_quantize::<BlockQ8_0>(t);
    }
}

/// The Q8_K quantizer (both tables share it) equals the reference bit for
/// bit, also on the blocks it hands to the reference.
#[test]
fn quantize_q8_k_is_bit_identical() {
    for t in [base(), dotprod()].into_iter().flatten() {
        harness::check_quantize::<BlockQ8K>(t);
        harness::check_q8_k_corners(t);
    }
}

/// Non-finite input: NaNs are skipped by the maximum and quantize to 0,
/// infinities give an infinite scale; the same as the reference.
#[test]
fn quantize_q8_0_non_finite_like_the_reference() {
    let Some(t) = base() else { return };
    let blocks: [[f32; QK]; 4] = [
        from_fn(|j| if j % 3 == 0 { f32::NAN } else { j as f32 }),
        [f32::NAN; QK],
        from_fn(|j| if j == 9 { f32::INFINITY } else { 1.0 }),
        from_fn(|j| if j == 9 { f32::NEG_INFINITY } else { f32::NAN }),
    ];
    let x = blocks.concat();
    let (want, want_s) = harness::quantize_ref::<BlockQ8_0>(&x, 1);
    let (mut got, mut got_s) = (vec![BlockQ8_0::ZERO; 4], vec![0i16; 4]);
    t.quantize(&x, &mut got, &mut got_s);
    let b = |v: &[BlockQ8_0]| v.iter().map(|b| (b.d.to_bits(), b.qs)).collect::<Vec<_>>();
    assert_eq!(b(&got), b(&want));
    assert_eq!(got_s, want_s);
}

/// Prompts on `neon+dotprod` and `neon+i8mm`: their strips from
/// [`MIN_TOKENS`] tokens, with partial strips of rows (eight each) and token
/// groups (four each).
const PREFILL: GemmSuite = GemmSuite {
    tokens: &[MIN_TOKENS, MIN_TOKENS + 3],
    ragged_rows: &[1, 7, 8, 9, 17],
    ragged_tokens: &[MIN_TOKENS, MIN_TOKENS + 1, MIN_TOKENS + 6],
    gpt2: &[(19, MIN_TOKENS + 1)],
    lm_head: None,
    extremes: (18, MIN_TOKENS + 1),
};

#[test]
fn q8_0_products() {
    for (t, seed) in [(base(), 4), (dotprod(), 5)] {
        if let Some(t) = t {
            SUITE.run::<BlockQ8_0>(t, seed);
        }
    }
    for t in [dotprod(), i8mm()].into_iter().flatten() {
        PREFILL.run::<BlockQ8_0>(t, 8);
    }
}

#[test]
fn q4_0_products() {
    for (t, seed) in [(base(), 6), (dotprod(), 7)] {
        if let Some(t) = t {
            SUITE.run::<BlockQ4_0>(t, seed);
        }
    }
    for t in [dotprod(), i8mm()].into_iter().flatten() {
        PREFILL.run::<BlockQ4_0>(t, 9);
    }
}

#[test]
fn float_products() {
    if let Some(t) = base() {
        harness::check_float_gemm::<f32>(t, 9);
        harness::check_float_gemm::<f16>(t, 10);
    }
}

#[test]
fn vector_kernels() {
    if let Some(t) = base() {
        harness::check_add(t);
        harness::check_layer_norm(t);
        harness::check_gelu(t);
    }
}

#[test]
fn attention() {
    if let Some(t) = base() {
        harness::check_attend(t);
    }
}

#[test]
fn through_matmul() {
    for t in [base(), dotprod()].into_iter().flatten() {
        harness::check_matmul(t);
    }
}

/// `block_dots` with `sdot`, compiled with dotprod enabled.
///
/// # Safety
/// The CPU must have dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn block_dots_sdot<W: QBlock>(w: &[W], a: &[BlockQ8_0], out: &mut [i32]) {
    // SAFETY: this function runs with dotprod (caller contract).
    unsafe { block_dots::<Sdot, W>(w, a, out) }
}

fn check_block_dots(w8: &[BlockQ8_0], w4: &[BlockQ4_0], a: &[BlockQ8_0]) {
    let want8: Vec<i32> = w8
        .iter()
        .zip(a)
        .map(|(w, a)| harness::int_dot_q8_0(w, a))
        .collect();
    let want4: Vec<i32> = w4
        .iter()
        .zip(a)
        .map(|(w, a)| harness::int_dot_q4_0(w, a))
        .collect();
    let mut got = vec![0i32; a.len()];
    // SAFETY: `Widen` uses base NEON only.
    unsafe { block_dots::<Widen, _>(w8, a, &mut got) };
    assert_eq!(got, want8, "widen q8_0");
    // SAFETY: as above.
    unsafe { block_dots::<Widen, _>(w4, a, &mut got) };
    assert_eq!(got, want4, "widen q4_0");
    if dotprod().is_some() {
        // SAFETY: the CPU has dotprod (the `neon+dotprod` table runs).
        unsafe { block_dots_sdot(w8, a, &mut got) };
        assert_eq!(got, want8, "sdot q8_0");
        // SAFETY: as above.
        unsafe { block_dots_sdot(w4, a, &mut got) };
        assert_eq!(got, want4, "sdot q4_0");
    }
}

/// Both integer dots equal the definition, over the whole i8 range
/// (weights may hold -128 here) and at every product's extremes.
#[test]
fn integer_block_dots_exact() {
    let mut rng = Rng::new(3);
    let n = 4096;
    let q8 = |rng: &mut Rng| BlockQ8_0 {
        d: f16::ONE,
        qs: from_fn(|_| rng.byte() as i8),
    };
    let w8: Vec<BlockQ8_0> = (0..n).map(|_| q8(&mut rng)).collect();
    let a: Vec<BlockQ8_0> = (0..n).map(|_| q8(&mut rng)).collect();
    let w4: Vec<BlockQ4_0> = rng.blocks(n);
    check_block_dots(&w8, &w4, &a);
    let q8 = |v: [i8; QK]| BlockQ8_0 { d: f16::ONE, qs: v };
    let q4 = |v: [u8; QK / 2]| BlockQ4_0 { d: f16::ONE, qs: v };
    let pairs = [
        ([127i8; QK], 0x00u8, [127i8; QK]),
        ([-128; QK], 0x00, [-128; QK]),
        ([-128; QK], 0xff, [127; QK]),
        ([127; QK], 0xf0, [-128; QK]),
        ([0; QK], 0x88, [127; QK]),
        (
            from_fn(|j| if j % 2 == 0 { -128 } else { 127 }),
            0x0f,
            from_fn(|j| if j % 2 == 0 { -127 } else { 127 }),
        ),
    ];
    let w8: Vec<_> = pairs.iter().map(|p| q8(p.0)).collect();
    let w4: Vec<_> = pairs.iter().map(|p| q4([p.1; QK / 2])).collect();
    let a: Vec<_> = pairs.iter().map(|p| q8(p.2)).collect();
    check_block_dots(&w8, &w4, &a);
}

/// Tolerance of a float reduction of `n` terms whose magnitudes sum to
/// `abs`: both sides keep chains of at most n/8 + 16 additions.
fn float_tol(n: usize, abs: f64) -> f64 {
    (n / 8 + 16) as f64 * f64::from(f32::EPSILON) * abs + 1e-40
}

fn check_dot<W: FloatElem>(x: &[W], y: &[f32], want: f32) {
    let abs: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (f64::from(a.get()) * f64::from(*b)).abs())
        .sum();
    let g = dot_vec(x, y);
    assert!(
        f64::from(g - want).abs() <= float_tol(x.len(), abs),
        "dot, {} values: {g} vs {want}",
        x.len()
    );
}

/// The dot, axpy and softmax helpers the attention is composed of, against
/// the scalar ones: random values on every length, and specials (zeros,
/// subnormals, f16's limits, large magnitudes). axpy is a multiply then an
/// add, as in the scalar code: equal bits.
#[test]
fn helpers_match_scalar() {
    let mut rng = Rng::new(10);
    let specials = [
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        1e15,
        -1e15,
        65504.0,
        -65504.0,
        6.0e-8,
        1e-30,
    ];
    let mut cases: Vec<(Vec<f32>, Vec<f32>)> = vector_lengths()
        .map(|n| (rng.acts(n), rng.acts(n)))
        .collect();
    for n in [1, 3, 4, 7, 8, 15, 16, 17, 33, 100, 1000] {
        let mut pick = || {
            (0..n)
                .map(|_| specials[rng.below(specials.len())])
                .collect()
        };
        cases.push((pick(), pick()));
    }
    for (x, y) in &cases {
        let n = x.len();
        // Finite halves only (1e15 would become an infinity).
        let xh: Vec<f16> = x
            .iter()
            .map(|&v| f16::from_f32(v.clamp(-65504.0, 65504.0)))
            .collect();
        check_dot(x, y, scalar::dot_f32(x, y));
        check_dot(&xh, y, scalar::dot_f16(&xh, y));
        for alpha in [rng.f() * 3.0, 0.0, -1.0, 1e-20, 3e10] {
            let (mut g, mut e) = (y.clone(), y.clone());
            axpy_vec(alpha, &x[..], &mut g);
            scalar::axpy_f32(alpha, x, &mut e);
            assert_eq!(bits(&g), bits(&e), "axpy_f32 {n}");
            let (mut g, mut e) = (y.clone(), y.clone());
            axpy_vec(alpha, &xh[..], &mut g);
            scalar::axpy_f16(alpha, &xh, &mut e);
            assert_eq!(bits(&g), bits(&e), "axpy_f16 {n}");
        }
    }
    for n in vector_lengths() {
        for spread in [1.0f32, 30.0, 200.0] {
            let x: Vec<f32> = rng.uniform(n).iter().map(|v| v * spread + 1000.0).collect();
            let (mut g, mut e) = (x.clone(), x);
            softmax_vec(&mut g);
            scalar::softmax(&mut e);
            // The two sides sum the exponentials in different orders; over n
            // terms that sum's rounding error grows like sqrt(n) ulps, so a fixed
            // 1e-5 was met only by luck at the vocabulary's 50257.
            let rel = 1e-6 + 4.0 * (n as f64).sqrt() * f64::from(f32::EPSILON);
            for i in 0..n {
                assert!(
                    f64::from(g[i] - e[i]).abs() <= rel * f64::from(e[i]) + 1e-30,
                    "softmax {n} spread {spread} i {i}: {} vs {}",
                    g[i],
                    e[i]
                );
            }
        }
    }
}

#[test]
fn f16_conversion_exact_for_every_half() {
    // All 65536 bit patterns through the vector conversion (NaNs compared
    // as NaNs).
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    for chunk in all.chunks_exact(8) {
        // SAFETY: eight values in the chunk.
        let v = unsafe { load_f16x8(chunk.as_ptr()) };
        let mut got = [0.0f32; 8];
        // SAFETY: two 4-lane stores into an 8-element array.
        unsafe {
            std::arch::aarch64::vst1q_f32(got.as_mut_ptr(), v[0]);
            std::arch::aarch64::vst1q_f32(got.as_mut_ptr().add(4), v[1]);
        }
        for (g, h) in got.iter().zip(chunk) {
            let e = h.to_f32();
            assert!(g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()));
            let s = h2f(*h);
            assert!(s.to_bits() == e.to_bits() || (s.is_nan() && e.is_nan()));
        }
    }
}

// The products of the other block types (`blocks.rs`). The twin tests of
// every table (`quant/twins.rs`) compare them with the scalar reference
// within a float tolerance; these check what only this path promises.

/// The K-quant and IQ4_XS products on weights `w` (`rows` rows) and random
/// activations of `n_tok` tokens equal the scalar twin bit for bit: the
/// integer sums are exact and the float scaling per super-block is the
/// reference's own.
fn check_k_bitwise<W: Gemm>(t: VerifiedTable, w: &[W], rows: usize, n_tok: usize, rng: &mut Rng)
where
    W::Partner: harness::TestActs,
{
    let nb = w.len() / rows;
    let x = rng.acts(n_tok * nb * W::ELEMS);
    let (q, s) = harness::quantize_ref::<W::Partner>(&x, n_tok);
    let acts = QuantActs::new(&q, &s, n_tok, nb);
    let run = |table: VerifiedTable| {
        let mut y = vec![f32::NAN; n_tok * rows];
        table.gemm(w, &acts, &mut OutTile::whole(&mut y, n_tok, rows));
        y
    };
    let (got, want) = (run(t), run(harness::scalar()));
    for (k, (g, e)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()),
            "{} {:?}: {rows} rows of {nb} blocks, {n_tok} tokens, output {k}: {g} vs {e}",
            t.name(),
            W::TYPE
        );
    }
}

/// [`check_k_bitwise`] on random blocks (every token count through the
/// four-token groups and the rest, and the strips from [`K_STRIPS`] tokens)
/// and on the type's extreme blocks.
fn k_bitwise<W: Gemm + Gen>(seed: u64)
where
    W::Partner: harness::TestActs,
{
    for t in [base(), dotprod(), i8mm()].into_iter().flatten() {
        let mut rng = Rng::new(seed);
        // From `K_STRIPS` tokens on `neon+dotprod` runs its strips: ragged
        // strips of rows and groups of tokens, and (the last shape) two
        // chunks of token groups.
        let shapes = [(3, 1, 1), (2, 3, 4), (5, 2, 9), (1, 6, 7)];
        let strips = [
            (9, 2, K_STRIPS + 1),
            (17, 1, K_STRIPS + 6),
            (8, 3, K_STRIPS),
            (3, 12, 70),
        ];
        for (rows, nb, n_tok) in shapes.into_iter().chain(strips) {
            let w: Vec<W> = rng.blocks(rows * nb);
            check_k_bitwise(t, &w, rows, n_tok, &mut rng);
        }
        let ext = W::extremes();
        let w: Vec<W> = ext.iter().copied().cycle().take(ext.len() * 3).collect();
        check_k_bitwise(t, &w, 3, 5, &mut rng);
        check_k_bitwise(t, &w, 3, K_STRIPS + 1, &mut rng);
    }
}

#[test]
fn k_quant_products_bitwise_equal_the_twins() {
    k_bitwise::<BlockQ4K>(40);
    k_bitwise::<BlockQ5K>(50);
    k_bitwise::<BlockQ6K>(60);
    k_bitwise::<BlockQ3K>(30);
    k_bitwise::<BlockQ2K>(20);
    k_bitwise::<BlockIq4Xs>(48);
}

/// The signed values of a 32-element block whose scale is 1 (and minimum
/// 0): its dequantization, as integers.
fn int_values<W: QuantBlock>(b: &W) -> [i32; QK] {
    let mut y = [0.0f32; QK];
    W::dequantize(std::slice::from_ref(b), &mut y);
    y.map(|v| {
        assert_eq!(v, v.round(), "{:?}: not an integer", W::TYPE);
        v as i32
    })
}

/// The integer block dots of the 32-element types (their unpacking to signed
/// bytes, by `sdot` and by widening) equal the dot of the dequantized
/// values, on random bytes and at the extremes of the activations.
fn int_dots_exact<W: QBlock + Gen>(unit: impl Fn(&mut W)) {
    let mut rng = Rng::new(77);
    let n = 2048;
    let mut w: Vec<W> = rng.blocks(n);
    for fill in [0x00u8, 0xff, 0x0f, 0xf0, 0x5a] {
        let bytes = vec![fill; std::mem::size_of::<W>()];
        w.push(crate::quant::types::testkit::blocks_from_bytes::<W>(&bytes)[0]);
    }
    w.iter_mut().for_each(&unit);
    let mut a: Vec<BlockQ8_0> = (0..n)
        .map(|_| BlockQ8_0 {
            d: f16::ONE,
            qs: from_fn(|_| (rng.byte() as i8).max(-127)),
        })
        .collect();
    for (k, v) in [127i8, -127, 127, -127, 1].into_iter().enumerate() {
        a.push(BlockQ8_0 {
            d: f16::ONE,
            qs: from_fn(|j| if (j + k) % 3 == 0 { -v } else { v }),
        });
    }
    let want: Vec<i32> = w
        .iter()
        .zip(&a)
        .map(|(wb, ab)| {
            int_values(wb)
                .iter()
                .zip(&ab.qs)
                .map(|(p, q)| p * i32::from(*q))
                .sum()
        })
        .collect();
    let mut got = vec![0i32; w.len()];
    // SAFETY: `Widen` uses base NEON only.
    unsafe { block_dots::<Widen, _>(&w, &a, &mut got) };
    assert_eq!(got, want, "widen {:?}", W::TYPE);
    if dotprod().is_some() {
        // SAFETY: the CPU has dotprod (the `neon+dotprod` table runs).
        unsafe { block_dots_sdot(&w, &a, &mut got) };
        assert_eq!(got, want, "sdot {:?}", W::TYPE);
    }
}

#[test]
fn block_32_integer_dots_exact() {
    int_dots_exact::<BlockQ4_1>(|b| {
        b.d = f16::ONE;
        b.m = f16::ZERO;
    });
    int_dots_exact::<BlockQ5_1>(|b| {
        b.d = f16::ONE;
        b.m = f16::ZERO;
    });
    int_dots_exact::<BlockQ5_0>(|b| b.d = f16::ONE);
    int_dots_exact::<BlockIq4Nl>(|b| b.d = f16::ONE);
}

/// `w`'s blocks with scale 1 and minimum 0 (`unit`), dequantized: the
/// signed integer values the strips multiply.
fn unit_values<W: QuantBlock>(w: &[W], unit: &impl Fn(&mut W)) -> Vec<[i32; QK]> {
    w.iter()
        .map(|b| {
            let mut b = *b;
            unit(&mut b);
            int_values(&b)
        })
        .collect()
}

/// The `sdot` and `smmla` strips sum in the x86 strips' order, bit for bit: per block the
/// exact integer dot times `d_w·d_a` by one FMA (then `m·(d_a·Σa)` by
/// another where the type has a minimum), block after block in one f32.
fn strips_in_order<W: Q32Block + Gen>(scale_min: impl Fn(&W) -> (f16, f16), unit: impl Fn(&mut W)) {
    let mut any = false;
    if dotprod().is_some() {
        // SAFETY: the CPU has dotprod (the `neon+dotprod` table runs).
        strips_in_order_of(&scale_min, &unit, |w, a, o| unsafe { strips_any(w, a, o) });
        any = true;
    }
    if i8mm().is_some() {
        // SAFETY: the CPU has i8mm (the `neon+i8mm` table runs).
        strips_in_order_of(&scale_min, &unit, |w, a, o| unsafe {
            mm_strips_any(w, a, o)
        });
        any = true;
    }
    if !any {
        eprintln!("strips_in_order: skipped: this CPU has neither dotprod nor i8mm");
    }
}

/// [`strips_in_order`] for one strip kernel, `strips`.
fn strips_in_order_of<W: Q32Block + Gen>(
    scale_min: &impl Fn(&W) -> (f16, f16),
    unit: &impl Fn(&mut W),
    strips: impl Fn(&[W], &QuantActs<'_>, &mut OutTile<'_>),
) {
    let mut rng = Rng::new(91);
    // The last shape's 3072 columns split into two chunks of token groups.
    for (rows, nb, n_tok) in [(1, 1, 1), (9, 3, 5), (17, 2, 34), (8, 1, 4), (9, 96, 70)] {
        let w: Vec<W> = rng.blocks(rows * nb);
        let x = rng.acts(n_tok * nb * QK);
        let (q, s) = harness::quantize_ref::<BlockQ8_0>(&x, n_tok);
        let acts = QuantActs::new(&q, &s, n_tok, nb);
        let mut got = vec![f32::NAN; n_tok * rows];
        strips(&w, &acts, &mut OutTile::whole(&mut got, n_tok, rows));
        let vals = unit_values(&w, unit);
        for t in 0..n_tok {
            for r in 0..rows {
                let mut acc = 0f32;
                for b in 0..nb {
                    let (wb, ab) = (&w[r * nb + b], &acts.row(t)[b]);
                    let dot: i32 = vals[r * nb + b]
                        .iter()
                        .zip(&ab.qs)
                        .map(|(v, a)| v * i32::from(*a))
                        .sum();
                    let (d, m) = scale_min(wb);
                    let da = ab.d.to_f32();
                    acc = (dot as f32).mul_add(d.to_f32() * da, acc);
                    if W::HAS_MIN {
                        let dasa = da * f32::from(acts.row_sums(t)[b]);
                        acc = m.to_f32().mul_add(dasa, acc);
                    }
                }
                let g = got[t * rows + r];
                assert_eq!(
                    g.to_bits(),
                    acc.to_bits(),
                    "{:?} {rows}x{nb} blocks, {n_tok} tokens: token {t} row {r}: {g} vs {acc}",
                    W::TYPE
                );
            }
        }
    }
}

#[test]
fn strips_sum_in_the_x86_order() {
    strips_in_order::<BlockQ8_0>(|b| (b.d, f16::ZERO), |b| b.d = f16::ONE);
    strips_in_order::<BlockQ4_0>(|b| (b.d, f16::ZERO), |b| b.d = f16::ONE);
    strips_in_order::<BlockQ5_0>(|b| (b.d, f16::ZERO), |b| b.d = f16::ONE);
    strips_in_order::<BlockIq4Nl>(|b| (b.d, f16::ZERO), |b| b.d = f16::ONE);
    let unit_min = |d: &mut f16, m: &mut f16| (*d, *m) = (f16::ONE, f16::ZERO);
    strips_in_order::<BlockQ4_1>(|b| (b.d, b.m), |b| unit_min(&mut b.d, &mut b.m));
    strips_in_order::<BlockQ5_1>(|b| (b.d, b.m), |b| unit_min(&mut b.d, &mut b.m));
}
