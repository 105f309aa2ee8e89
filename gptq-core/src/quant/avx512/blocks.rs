//! AVX-512 (BW, VNNI) products of the K-quants with Q8_K activations: the
//! AVX2 design (`avx2::blocks`) at twice the width, with VNNI's `vpdpwssd`
//! fusing the scale multiply and the accumulation. Half the vector µops per
//! byte of the AVX2 kernels: a decode product stays bound by memory, not by
//! the unpacking.
//!
//! Each weight row is dotted with four tokens at a time that share each
//! block's unpacking (`tile::each_row_grouped`), the remaining tokens one at
//! a time, decode in its own walk ([`k_entry!`](k_entry)); a token's sums are the same instructions in the same order either
//! way, so its result does not depend on how many tokens share the call.

use std::arch::x86_64::*;

use super::super::avx2::blocks::hint_block;
use super::super::types::{BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use super::super::x86::driver::{k_entry, prefill_entry};

/// 64 bytes from the start of `b` (at least 64 long).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld512<T: Copy>(b: &[T]) -> __m512i {
    assert!(std::mem::size_of_val(b) >= 64);
    // SAFETY: `b` holds at least 64 readable bytes (checked); the load is
    // unaligned.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// 32 bytes from the start of `b` (at least 32 long).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld256<T: Copy>(b: &[T]) -> __m256i {
    assert!(std::mem::size_of_val(b) >= 32);
    // SAFETY: `b` holds at least 32 readable bytes (checked); the load is
    // unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 16 bytes from the start of `b` (at least 16 long).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld128<T: Copy>(b: &[T]) -> __m128i {
    assert!(std::mem::size_of_val(b) >= 16);
    // SAFETY: `b` holds at least 16 readable bytes (checked); the load is
    // unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Two 32-byte runs of `b`, at `i` and `j`, as one register (`i` low).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld2x256(b: &[i8], i: usize, j: usize) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ld256(&b[i..])), ld256(&b[j..]))
}

/// An f16 to f32 (F16C).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn h2f(h: half::f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
}

/// Word permute indices: words `0..16` take word `a`, words `16..32` word `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn two_words(a: usize, b: usize) -> __m512i {
    let mut idx = [0u16; 32];
    for (i, v) in idx.iter_mut().enumerate() {
        *v = if i < 16 { a as u16 } else { b as u16 };
    }
    ld512(&idx)
}

/// Word permute indices: word `i` takes word `first + i / 8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn four_words(first: usize) -> __m512i {
    let mut idx = [0u16; 32];
    for (i, v) in idx.iter_mut().enumerate() {
        *v = (first + i / 8) as u16;
    }
    ld512(&idx)
}

/// Q6_K: `u = ql | qh << 4` (0..64) times the activations, minus 32·Σ sc·bsum.
/// One register holds 64 consecutive values: the low nibbles of 64 `ql`
/// bytes are values `0..64` of a half, their high nibbles values `64..128`.
/// `T` tokens share each block's unpacking; every token's sums are the same
/// instructions in the same order whatever `T` is.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q6_k<const T: usize>(x: &[BlockQ6K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    // qh's bits for values 0..32 of a half are bits 0-1 (shift left by 4),
    // 32..64 bits 2-3 (by 2); 64..96 bits 4-5 (none), 96..128 bits 6-7 (right
    // by 2).
    let shl = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let shr = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let idx = [four_words(0), four_words(4), four_words(8), four_words(12)];
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let sc16 = _mm256_cvtepi8_epi16(ld128(&b.scales));
        let sc = _mm512_castsi256_si512(sc16);
        let mut u = [_mm512_setzero_si512(); 4];
        let mut s = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let ql = ld512(&b.ql[64 * h..]);
            let qh = _mm512_broadcast_i64x4(ld256(&b.qh[32 * h..]));
            u[2 * h] = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30),
            );
            u[2 * h + 1] = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30),
            );
            s[2 * h] = _mm512_permutexvar_epi16(idx[2 * h], sc);
            s[2 * h + 1] = _mm512_permutexvar_epi16(idx[2 * h + 1], sc);
        }
        let d = h2f(b.d);
        for (acc, y) in acc.iter_mut().zip(ys) {
            let a = &y[i];
            let corr = _mm256_madd_epi16(sc16, ld256(&a.bsums));
            let mut isum = _mm512_zextsi256_si512(_mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_slli_epi32::<5>(corr),
            ));
            for (k, (&uk, &sk)) in u.iter().zip(&s).enumerate() {
                let p = _mm512_maddubs_epi16(uk, ld512(&a.qs[64 * k..]));
                isum = _mm512_dpwssd_epi32(isum, p, sk);
            }
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(a.d * d), _mm512_cvtepi32_ps(isum), *acc);
        }
    }
    acc.map(|v| _mm512_reduce_add_ps(v))
}

/// A K-quant dot with minimums: the scaled sums' lanes added, less the
/// minimums' lanes added (pairwise, then the halves).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sums_minus_mins(acc: __m512, accm: __m256) -> f32 {
    let m = _mm_add_ps(
        _mm256_castps256_ps128(accm),
        _mm256_extractf128_ps::<1>(accm),
    );
    let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(m)
}

/// Q4_K / Q5_K's packed scales and minimums (see `avx2::blocks`).
#[inline(always)]
fn k4_scales(p: &[u8; 12]) -> (u64, u64) {
    super::super::avx2::blocks::k4_scales(p)
}

/// Q4_K and Q5_K: one register holds 64 packed bytes, whose low nibbles are
/// sub-blocks `4p` and `4p + 2` and high nibbles `4p + 1` and `4p + 3`;
/// `$high` adds Q5_K's fifth bits.
macro_rules! dot_k4 {
    ($name:ident, $blk:ty, $high:expr) => {
        /// `T` tokens share each block's unpacking; every token's sums are
        /// the same instructions in the same order whatever `T` is.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        fn $name<const T: usize>(x: &[$blk], ys: [&[BlockQ8K]; T]) -> [f32; T] {
            let m4 = _mm512_set1_epi8(0x0f);
            let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            let idx = [
                two_words(0, 2),
                two_words(1, 3),
                two_words(4, 6),
                two_words(5, 7),
            ];
            let mut acc = [_mm512_setzero_ps(); T];
            let mut accm = [_mm256_setzero_ps(); T];
            for (i, b) in x.iter().enumerate() {
                hint_block(b);
                let (sc, m) = k4_scales(&b.scales);
                let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_set_epi64x(0, m as i64), dup));
                let sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_set_epi64x(0, sc as i64)));
                let mut u = [_mm512_setzero_si512(); 4];
                for p in 0..2 {
                    let q = ld512(&b.qs[64 * p..]);
                    let lo = _mm512_and_si512(q, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                    #[allow(clippy::redundant_closure_call)]
                    let (lo, hi) = ($high)(b, p, lo, hi);
                    u[2 * p] = lo;
                    u[2 * p + 1] = hi;
                }
                let s = idx.map(|ix| _mm512_permutexvar_epi16(ix, sc));
                let (d, dmin) = (h2f(b.d), h2f(b.dmin));
                for ((acc, accm), y) in acc.iter_mut().zip(accm.iter_mut()).zip(ys) {
                    let a = &y[i];
                    let prod = _mm256_madd_epi16(mins, ld256(&a.bsums));
                    let mut isum = _mm512_setzero_si512();
                    for p in 0..2 {
                        let alo = ld2x256(&a.qs, 128 * p, 128 * p + 64);
                        let ahi = ld2x256(&a.qs, 128 * p + 32, 128 * p + 96);
                        let plo = _mm512_maddubs_epi16(u[2 * p], alo);
                        let phi = _mm512_maddubs_epi16(u[2 * p + 1], ahi);
                        isum = _mm512_dpwssd_epi32(isum, plo, s[2 * p]);
                        isum = _mm512_dpwssd_epi32(isum, phi, s[2 * p + 1]);
                    }
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(a.d * d), _mm512_cvtepi32_ps(isum), *acc);
                    *accm = _mm256_fmadd_ps(
                        _mm256_set1_ps(a.d * dmin),
                        _mm256_cvtepi32_ps(prod),
                        *accm,
                    );
                }
            }
            std::array::from_fn(|t| sums_minus_mins(acc[t], accm[t]))
        }
    };
}

dot_k4!(
    dot_q4_k,
    BlockQ4K,
    |_b: &BlockQ4K, _p: usize, lo: __m512i, hi: __m512i| (lo, hi)
);

dot_k4!(
    dot_q5_k,
    BlockQ5K,
    |b: &BlockQ5K, p: usize, lo: __m512i, hi: __m512i| {
        // Sub-block s's fifth bits are bit s of qh[l]: the low nibbles of this
        // register are sub-blocks 4p (lanes 0..32) and 4p + 2, the high ones
        // 4p + 1 and 4p + 3.
        let qh = _mm512_broadcast_i64x4(ld256(&b.qh));
        let bits = |s0: usize, s1: usize| {
            _mm512_inserti64x4::<1>(
                _mm512_set1_epi8((1u8 << s0) as i8),
                _mm256_set1_epi8((1u8 << s1) as i8),
            )
        };
        let sixteen = _mm512_set1_epi8(16);
        let klo = _mm512_test_epi8_mask(qh, bits(4 * p, 4 * p + 2));
        let khi = _mm512_test_epi8_mask(qh, bits(4 * p + 1, 4 * p + 3));
        (
            _mm512_mask_add_epi8(lo, klo, lo, sixteen),
            _mm512_mask_add_epi8(hi, khi, hi, sixteen),
        )
    }
);

/// Q3_K's sixteen packed 6-bit scales (see `avx2::blocks`).
#[inline(always)]
fn k3_scales(p: &[u8; 12]) -> [u32; 4] {
    super::super::avx2::blocks::k3_scales(p)
}

/// Shift counts for the two-bit fields: words `0..16` by `a`, `16..32` by `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn shifts(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(a), _mm256_set1_epi16(b))
}

/// Bytes `0..32` equal to `1 << a`, `32..64` to `1 << b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bits(a: usize, b: usize) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_set1_epi8((1u8 << a) as i8),
        _mm256_set1_epi8((1u8 << b) as i8),
    )
}

/// Q3_K: `u = low2 | hbit << 2` (0..8) times the activations, minus
/// 4·Σ sc·bsum. The 32 `qs` bytes of a half, in both halves of a register
/// and shifted by 0 and 2 (4 and 6), are its values `0..64` (`64..128`).
/// `T` tokens share each block's unpacking; every token's sums are the same
/// instructions in the same order whatever `T` is.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q3_k<const T: usize>(x: &[BlockQ3K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m3 = _mm512_set1_epi8(3);
    let four = _mm512_set1_epi8(4);
    let (sh0, sh1) = (shifts(0, 2), shifts(4, 6));
    let idx = [four_words(0), four_words(4), four_words(8), four_words(12)];
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let s = k3_scales(&b.scales);
        let sc = _mm_sub_epi8(
            _mm_setr_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32),
            _mm_set1_epi8(32),
        );
        let sc16 = _mm256_cvtepi8_epi16(sc);
        let mut isum: [__m512i; T] = std::array::from_fn(|t| {
            let corr = _mm256_madd_epi16(sc16, ld256(&ys[t][i].bsums));
            _mm512_zextsi256_si512(_mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_slli_epi32::<2>(corr),
            ))
        });
        let sc = _mm512_castsi256_si512(sc16);
        let hm = _mm512_broadcast_i64x4(ld256(&b.hmask));
        for h in 0..2 {
            let q = _mm512_broadcast_i64x4(ld256(&b.qs[32 * h..]));
            for (k, sh) in [sh0, sh1].into_iter().enumerate() {
                let low = _mm512_and_si512(_mm512_srlv_epi16(q, sh), m3);
                let kk = 4 * h + 2 * k;
                let high = _mm512_test_epi8_mask(hm, bits(kk, kk + 1));
                let u = _mm512_mask_add_epi8(low, high, low, four);
                let s = _mm512_permutexvar_epi16(idx[2 * h + k], sc);
                for (isum, y) in isum.iter_mut().zip(ys) {
                    let p = _mm512_maddubs_epi16(u, ld512(&y[i].qs[128 * h + 64 * k..]));
                    *isum = _mm512_dpwssd_epi32(*isum, p, s);
                }
            }
        }
        let d = h2f(b.d);
        for ((acc, isum), y) in acc.iter_mut().zip(isum).zip(ys) {
            let d = y[i].d * d;
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(isum), *acc);
        }
    }
    acc.map(|v| _mm512_reduce_add_ps(v))
}

/// Q2_K: `q` (0..4) times the activations, scaled by the low nibbles; the
/// minimums (high nibbles) times the bsums. Values as Q3_K's low bits; `T`
/// tokens share each block's unpacking, as in [`dot_q3_k`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q2_k<const T: usize>(x: &[BlockQ2K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let (sh0, sh1) = (shifts(0, 2), shifts(4, 6));
    let idx = [four_words(0), four_words(4), four_words(8), four_words(12)];
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm256_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let packed = ld128(&b.scales);
        let sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let mut isum = [_mm512_setzero_si512(); T];
        for h in 0..2 {
            let q = _mm512_broadcast_i64x4(ld256(&b.qs[32 * h..]));
            for (k, sh) in [sh0, sh1].into_iter().enumerate() {
                let u = _mm512_and_si512(_mm512_srlv_epi16(q, sh), m3);
                let s = _mm512_permutexvar_epi16(idx[2 * h + k], sc);
                for (isum, y) in isum.iter_mut().zip(ys) {
                    let p = _mm512_maddubs_epi16(u, ld512(&y[i].qs[128 * h + 64 * k..]));
                    *isum = _mm512_dpwssd_epi32(*isum, p, s);
                }
            }
        }
        let (d, dmin) = (h2f(b.d), h2f(b.dmin));
        for (((acc, accm), isum), y) in acc.iter_mut().zip(&mut accm).zip(isum).zip(ys) {
            let a = &y[i];
            let prod = _mm256_madd_epi16(mins, ld256(&a.bsums));
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(a.d * d), _mm512_cvtepi32_ps(isum), *acc);
            *accm = _mm256_fmadd_ps(_mm256_set1_ps(a.d * dmin), _mm256_cvtepi32_ps(prod), *accm);
        }
    }
    std::array::from_fn(|t| sums_minus_mins(acc[t], accm[t]))
}

/// Tokens that share each weight block's unpacking.
const TG: usize = 4;

k_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "AVX-512",
    TG,
    gemm_q6_k,
    BlockQ6K,
    dot_q6_k
);
k_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "AVX-512",
    TG,
    gemm_q5_k,
    BlockQ5K,
    dot_q5_k
);
k_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "AVX-512",
    TG,
    gemm_q4_k,
    BlockQ4K,
    dot_q4_k
);
k_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "AVX-512",
    TG,
    gemm_q3_k,
    BlockQ3K,
    dot_q3_k
);
k_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "AVX-512",
    TG,
    gemm_q2_k,
    BlockQ2K,
    dot_q2_k
);

prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q2_k,
    BlockQ2K,
    BlockQ8K,
    super::strip::gemm_q2_k,
    gemm_q2_k
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q3_k,
    BlockQ3K,
    BlockQ8K,
    super::strip::gemm_q3_k,
    gemm_q3_k
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q4_k,
    BlockQ4K,
    BlockQ8K,
    super::strip::gemm_q4_k,
    gemm_q4_k
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q5_k,
    BlockQ5K,
    BlockQ8K,
    super::strip::gemm_q5_k,
    gemm_q5_k
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_transposed,
    prefill_q6_k,
    BlockQ6K,
    BlockQ8K,
    super::strip::gemm_q6_k,
    gemm_q6_k
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    use_strips_few,
    prefill_iq4_xs,
    BlockIq4Xs,
    BlockQ8K,
    super::strip::gemm_iq4_xs,
    super::super::avx2::blocks::gemm_iq4_xs
);
