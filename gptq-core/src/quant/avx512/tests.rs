//! The AVX-512 VNNI kernels against their scalar twins: the per-block integer
//! dots exactly, the products within the AVX2 tests' tolerance (relative
//! `Q_TOL = 1e-5` of Σ|terms|).

use super::*;
use crate::quant::KernelPath;
use crate::quant::avx2::tests::{
    Rng, acts, check_q_extreme, check_q_with, int_dot_q4, int_dot_q8, q4_blocks, q8_blocks,
    quantize_scalar,
};
use crate::quant::blocks::QK;

fn have() -> bool {
    KernelPath::Avx512.is_supported()
}

/// The two blocks' integer dots through the kernels' helpers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn simd_pair<W>(
    u: __m512i,
    off: i32,
    a: [&BlockQ8_0; 2],
    s: [i16; 2],
    _w: std::marker::PhantomData<W>,
) -> [i32; 2] {
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
    if !have() {
        return;
    }
    let mut rng = Rng(0xabcdef);
    let x = acts(&mut rng, 32 * 256);
    let mut x_ext = crate::quant::avx2::tests::extreme_blocks();
    x_ext.extend((0..32).map(|i| if i % 3 == 0 { -1.0 } else { 1.0 }));
    let (mut a, mut s) = quantize_scalar(&x, 1, 256);
    let (ae, se) = quantize_scalar(&x_ext, 1, x_ext.len() / QK);
    a.extend(ae);
    s.extend(se);
    let n = a.len();
    let mut w8 = q8_blocks(&mut rng, n);
    let mut w4 = q4_blocks(&mut rng, n);
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
            // SAFETY: the test returned early unless the CPU has the features.
            let got = unsafe {
                simd_pair::<BlockQ8_0>(
                    w_q8(wa, wb),
                    128,
                    [&a[i], &a[j]],
                    [s[i], s[j]],
                    Default::default(),
                )
            };
            assert_eq!(
                got,
                [int_dot_q8(wa, &a[i]), int_dot_q8(wb, &a[j])],
                "q8 {i} {k}"
            );
            let (wa, wb) = (&w4[k], &w4[(k + 3) % n]);
            // SAFETY: the test returned early unless the CPU has the features.
            let got = unsafe {
                simd_pair::<BlockQ4_0>(
                    w_q4(wa, wb),
                    8,
                    [&a[i], &a[j]],
                    [s[i], s[j]],
                    Default::default(),
                )
            };
            assert_eq!(
                got,
                [int_dot_q4(wa, &a[i]), int_dot_q4(wb, &a[j])],
                "q4 {i} {k}"
            );
        }
    }
}

#[test]
fn quantized_gemm_every_row_length() {
    if !have() {
        return;
    }
    let mut rng = Rng(778);
    for k in 1..=128 {
        let n_tok = [1, 3, 5][k % 3];
        check_q_with(&mut rng, 5, 32 * k, n_tok, gemm_q8_0, gemm_q4_0);
    }
}

#[test]
fn quantized_gemm_ragged_rows_and_tokens() {
    if !have() {
        return;
    }
    let mut rng = Rng(4243);
    for rows in 1..=9 {
        for n_tok in 1..=9 {
            // 96 = 3 blocks: an odd last block on every row.
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
    let mut rng = Rng(2025);
    for &cols in &[768, 1024, 1280, 1600, 2304, 3072] {
        check_q_with(&mut rng, 67, cols, 1, gemm_q8_0, gemm_q4_0);
        check_q_with(&mut rng, 19, cols, 9, gemm_q8_0, gemm_q4_0);
    }
    check_q_with(&mut rng, 50257, 768, 1, gemm_q8_0, gemm_q4_0);
}

#[test]
fn quantized_gemm_extreme_activations() {
    if !have() {
        return;
    }
    check_q_extreme(gemm_q8_0, gemm_q4_0, 7, 1);
}

/// The many-query head kernel equals the scalar dot, softmax and axpy it
/// replaces, query by query: head sizes with and without 64- and 16-lane
/// tails, ragged query groups, queries starting past position 0.
#[test]
fn attend_head_matches_the_scalar_composition() {
    if !have() {
        return;
    }
    use crate::quant::dispatch::HeadQueries;
    use crate::quant::scalar;
    let mut rng = Rng(12);
    for hd in [64usize, 16, 80, 128, 7, 40] {
        for (pos0, n) in [
            (0usize, 1usize),
            (0, 4),
            (0, 5),
            (3, 7),
            (17, 16),
            (0, 67),
            (200, 33),
        ] {
            let (q_stride, kv_stride) = (3 * hd + 5, 2 * hd + 1);
            let keys = pos0 + n;
            let q: Vec<f32> = (0..n * q_stride).map(|_| rng.f()).collect();
            let k: Vec<f32> = (0..keys * kv_stride).map(|_| 3.0 * rng.f()).collect();
            let v: Vec<f32> = (0..keys * kv_stride).map(|_| rng.f()).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let heads = HeadQueries {
                q: &q,
                q_stride,
                k: &k,
                v: &v,
                kv_stride,
                pos0,
                n,
                hd,
                scale,
            };
            let mut got = vec![f32::NAN; n * hd];
            attend_head_f32(&heads, &mut got);
            for i in 0..n {
                let qi = &q[i * q_stride..][..hd];
                let mut sc: Vec<f32> = (0..pos0 + i + 1)
                    .map(|p| scalar::dot_f32(qi, &k[p * kv_stride..][..hd]) * scale)
                    .collect();
                scalar::softmax(&mut sc);
                let mut want = vec![0.0f32; hd];
                for (p, &w) in sc.iter().enumerate() {
                    scalar::axpy_f32(w, &v[p * kv_stride..][..hd], &mut want);
                }
                for j in 0..hd {
                    // Each output is a convex combination of values in [-1, 1].
                    let g = got[i * hd + j];
                    assert!(
                        (g - want[j]).abs() <= 1e-5,
                        "hd {hd} pos0 {pos0} n {n} query {i} lane {j}: {g} vs {}",
                        want[j]
                    );
                }
            }
        }
    }
}
