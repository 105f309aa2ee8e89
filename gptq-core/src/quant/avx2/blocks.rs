//! AVX2 products of the block types beyond Q8_0 and Q4_0: the K-quants and
//! IQ4_XS with Q8_K activations, Q4_1, Q5_0, Q5_1 and IQ4_NL with Q8_0
//! activations (and their exact block sums), BF16 with f32 activations.
//!
//! The K-quants and IQ4_XS dot each weight row with four tokens at a time
//! that share each block's unpacking (decode: one token, in a walk of its
//! own); the 32-value types have block loaders here and go through the
//! decode walk of Q8_0 and Q4_0 ([`gemv`](super::gemv)) below the strips
//! (`gptq bench -p N -n 0`, 355M mixes, AVX2, 2 threads, against the
//! register tiles they ran before: Q5_0 pp8 1.16–1.21×, pp25 1.04–1.07×;
//! Q4_1 pp8 1.10–1.15×, pp25 1.03–1.10×). Either way a token's sums are the same
//! instructions in the same order, so its result does not depend on how many
//! tokens share the call: one entry serves prefill, decode and batched
//! decode. The integer part of every dot is exact, as in the scalar reference
//! (`types/`): the weights are made unsigned bytes (an offset the activation
//! sums take back out), `maddubs` multiplies them with the signed
//! activations into i16 pairs that cannot saturate (at most 2·63·127), and
//! `madd` with the sub-block scales widens to i32. The float scaling then
//! runs per super-block (or block) in eight lanes, so only the order of the
//! float sums differs from the reference.

use std::arch::x86_64::*;

use half::bf16;

use crate::gguf::{Pod, as_bytes};

use super::super::prefetch;
use super::super::tile::{FloatActs, OutTile};
use super::super::types::iq4_nl::KVALUES;
use super::super::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1,
    BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K,
};
use super::super::x86::driver::{k_entry, prefill_entry};
use super::{h2f, hsum};

/// 32 bytes from the start of `b` (at least 32 long).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld<T: Copy>(b: &[T]) -> __m256i {
    assert!(std::mem::size_of_val(b) >= 32);
    // SAFETY: `b` holds at least 32 readable bytes (checked); the load is
    // unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 16 bytes from the start of `b` (at least 16 long).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld128<T: Copy>(b: &[T]) -> __m128i {
    assert!(std::mem::size_of_val(b) >= 16);
    // SAFETY: `b` holds at least 16 readable bytes (checked); the load is
    // unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 8 bytes from the start of `b` into the low half of a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld64(b: &[u8; 8]) -> __m128i {
    _mm_set_epi64x(0, i64::from_le_bytes(*b))
}

/// Hints the weights ahead of block `b` of a row walk: one streaming hint
/// per 64 bytes of the block.
#[inline(always)]
pub(in crate::quant) fn hint_block<B: Pod>(b: &B) {
    let bytes = as_bytes(std::slice::from_ref(b));
    for off in (0..bytes.len()).step_by(64) {
        prefetch::stream(&bytes[off]);
    }
}

/// Byte shuffle broadcasting word `k` of each 128-bit lane to all its words:
/// the byte pair `(2k, 2k + 1)` as one 16-bit word, broadcast. (Written as
/// thirty-two byte arguments, the mask was built with sixteen `vpinsrb` per
/// call wherever `k` is not a constant, as in the one-token K-quant loops:
/// 40 % of Q4_K decode time.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn word_bcast(k: usize) -> __m256i {
    _mm256_set1_epi16((0x0100 + 0x0202 * k) as i16)
}

/// Byte shuffle for 16 bytes: bytes `0..8` take byte `s`, bytes `8..16`
/// byte `s + 1` (a broadcast plus a constant, for the reason
/// [`word_bcast`] gives).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_bcast(s: usize) -> __m128i {
    _mm_add_epi8(
        _mm_set1_epi8(s as i8),
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
    )
}

/// Sixteen signed 8-bit sub-block scales `sc` (in an xmm): the i16 words for
/// the 32 values of sub-blocks `s` and `s + 1` (words 0..8 `sc[s]`, 8..16
/// `sc[s + 1]`), to `madd` with a `maddubs` result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_scales(sc: __m128i, s: usize) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pair_bcast(s)))
}

/// As [`pair_scales`] for unsigned scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_scales_u(sc: __m128i, s: usize) -> __m256i {
    _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sc, pair_bcast(s)))
}

/// Q4_K / Q5_K's packed 6-bit scales and minimums as two little-endian
/// 8-byte words (sub-block `j` in byte `j`): for `j < 4` the low six bits of
/// bytes `j` and `j + 4`; for `j >= 4` the nibbles of byte `j + 4` topped
/// with bits 6-7 of bytes `j - 4` (scales) and `j` (minimums).
#[inline(always)]
pub(in crate::quant) fn k4_scales(p: &[u8; 12]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let (a, b, c) = (w(0), w(4), w(8));
    const LOW6: u32 = 0x3f3f_3f3f;
    const NIB: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let sc_lo = a & LOW6;
    let m_lo = b & LOW6;
    let sc_hi = (c & NIB) | (((a >> 6) & TOP2) << 4);
    let m_hi = ((c >> 4) & NIB) | (((b >> 6) & TOP2) << 4);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(m_lo) | (u64::from(m_hi) << 32),
    )
}

/// Q3_K's sixteen packed 6-bit scales, unpacked to bytes (still offset by 32):
/// scale `j` has its low four bits in nibble `j / 8` of byte `j % 8` and its top
/// two bits in bits `2·(j / 4)` of byte `8 + j % 4`.
#[inline(always)]
pub(in crate::quant) fn k3_scales(p: &[u8; 12]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let (a, b, c) = (w(0), w(4), w(8));
    const NIB: u32 = 0x0f0f_0f0f;
    const TWO: u32 = 0x0303_0303;
    [
        (a & NIB) | ((c & TWO) << 4),
        (b & NIB) | (((c >> 2) & TWO) << 4),
        ((a >> 4) & NIB) | (((c >> 4) & TWO) << 4),
        ((b >> 4) & NIB) | (((c >> 6) & TWO) << 4),
    ]
}

// ---------------------------------------------------------------------------
// The K-quants and IQ4_XS (Q8_K activations).

/// Q6_K: `u = ql | qh << 4` (0..64) times the activations, minus 32·Σ sc·bsum.
/// `T` tokens share each block's unpacking; every token's sums are the same
/// instructions in the same order whatever `T` is.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k<const T: usize>(x: &[BlockQ6K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let sc = ld128(&b.scales);
        let sc16 = _mm256_cvtepi8_epi16(sc);
        let mut isum: [__m256i; T] = std::array::from_fn(|t| {
            let corr = _mm256_madd_epi16(sc16, ld(&ys[t][i].bsums));
            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr))
        });
        for h in 0..2 {
            let ql0 = ld(&b.ql[64 * h..]);
            let ql1 = ld(&b.ql[64 * h + 32..]);
            let qh = ld(&b.qh[32 * h..]);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8))),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let s = pair_scales(sc, 8 * h + 2 * k);
                for (isum, y) in isum.iter_mut().zip(ys) {
                    let p = _mm256_maddubs_epi16(qk, ld(&y[i].qs[128 * h + 32 * k..]));
                    *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(p, s));
                }
            }
        }
        let d = h2f(b.d);
        for ((acc, isum), y) in acc.iter_mut().zip(isum).zip(ys) {
            let d = y[i].d * d;
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), *acc);
        }
    }
    acc.map(|v| hsum(v))
}

/// Q4_K and Q5_K share everything but the fifth bit: `$high` adds it. `T`
/// tokens share each block's unpacking (nibbles, fifth bits, scales and
/// minimums); every token's sums are the same instructions in the same order
/// whatever `T` is.
macro_rules! dot_k4 {
    ($name:ident, $blk:ty, $high:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $name<const T: usize>(x: &[$blk], ys: [&[BlockQ8K]; T]) -> [f32; T] {
            let m4 = _mm256_set1_epi8(0x0f);
            let mut acc = [_mm256_setzero_ps(); T];
            // Each minimum twice: bsums are per 16 values, minimums per 32.
            let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            for (i, b) in x.iter().enumerate() {
                hint_block(b);
                let (sc, m) = k4_scales(&b.scales);
                let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(ld64(&m.to_le_bytes()), dup));
                let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(ld64(&sc.to_le_bytes())));
                let mut isum = [_mm256_setzero_si256(); T];
                for j in 0..4 {
                    let q = ld(&b.qs[32 * j..]);
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    #[allow(clippy::redundant_closure_call)]
                    let (lo, hi) = ($high)(b, j, lo, hi);
                    let slo = _mm256_shuffle_epi8(sc16, word_bcast(2 * j));
                    let shi = _mm256_shuffle_epi8(sc16, word_bcast(2 * j + 1));
                    for (isum, y) in isum.iter_mut().zip(ys) {
                        let a = &y[i];
                        let plo = _mm256_maddubs_epi16(lo, ld(&a.qs[64 * j..]));
                        let phi = _mm256_maddubs_epi16(hi, ld(&a.qs[64 * j + 32..]));
                        *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(plo, slo));
                        *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(phi, shi));
                    }
                }
                let (d, dmin) = (h2f(b.d), h2f(b.dmin));
                // The minimums' term goes into the same accumulator: a
                // second one per token spilled the four-token loop's
                // registers.
                for ((acc, isum), y) in acc.iter_mut().zip(isum).zip(ys) {
                    let a = &y[i];
                    let prod = _mm256_madd_epi16(mins, ld(&a.bsums));
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(a.d * d), _mm256_cvtepi32_ps(isum), *acc);
                    *acc = _mm256_fnmadd_ps(
                        _mm256_set1_ps(a.d * dmin),
                        _mm256_cvtepi32_ps(prod),
                        *acc,
                    );
                }
            }
            acc.map(|v| hsum(v))
        }
    };
}

dot_k4!(
    dot_q4_k,
    BlockQ4K,
    |_b: &BlockQ4K, _j: usize, lo: __m256i, hi: __m256i| (lo, hi)
);

dot_k4!(
    dot_q5_k,
    BlockQ5K,
    |b: &BlockQ5K, j: usize, lo: __m256i, hi: __m256i| {
        // Element 64j + l has its fifth bit in bit 2j of qh[l], element
        // 64j + 32 + l in bit 2j + 1.
        let qh = ld(&b.qh);
        let sixteen = _mm256_set1_epi8(16);
        let bit = |k: usize| {
            let m = _mm256_set1_epi8((1u8 << k) as i8);
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), sixteen)
        };
        (
            _mm256_or_si256(lo, bit(2 * j)),
            _mm256_or_si256(hi, bit(2 * j + 1)),
        )
    }
);

/// Q3_K: `u = low2 | hbit << 2` (0..8) times the activations, minus
/// 4·Σ sc·bsum. `T` tokens share each block's unpacking; every token's sums
/// are the same instructions in the same order whatever `T` is.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q3_k<const T: usize>(x: &[BlockQ3K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut acc = [_mm256_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let s = k3_scales(&b.scales);
        let sc = _mm_sub_epi8(
            _mm_setr_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32),
            _mm_set1_epi8(32),
        );
        let sc16 = _mm256_cvtepi8_epi16(sc);
        let mut isum: [__m256i; T] = std::array::from_fn(|t| {
            let corr = _mm256_madd_epi16(sc16, ld(&ys[t][i].bsums));
            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<2>(corr))
        });
        let hm = ld(&b.hmask);
        for h in 0..2 {
            let q = ld(&b.qs[32 * h..]);
            let lows = [
                _mm256_and_si256(q, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q), m3),
            ];
            for (k, &low) in lows.iter().enumerate() {
                let m = _mm256_set1_epi8((1u8 << (4 * h + k)) as i8);
                let high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, m), m), four);
                let u = _mm256_or_si256(low, high);
                let s = pair_scales(sc, 8 * h + 2 * k);
                for (isum, y) in isum.iter_mut().zip(ys) {
                    let p = _mm256_maddubs_epi16(u, ld(&y[i].qs[128 * h + 32 * k..]));
                    *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(p, s));
                }
            }
        }
        let d = h2f(b.d);
        for ((acc, isum), y) in acc.iter_mut().zip(isum).zip(ys) {
            let d = y[i].d * d;
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), *acc);
        }
    }
    acc.map(|v| hsum(v))
}

/// Q2_K: `q` (0..4) times the activations, scaled by the low nibbles; the
/// high nibbles (minimums) times the bsums. `T` tokens share each block's
/// unpacking, as in [`dot_q3_k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q2_k<const T: usize>(x: &[BlockQ2K], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut accm = [_mm256_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let packed = ld128(&b.scales);
        let sc = _mm_and_si128(packed, m4);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let mut isum = [_mm256_setzero_si256(); T];
        for h in 0..2 {
            let q = ld(&b.qs[32 * h..]);
            let lows = [
                _mm256_and_si256(q, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q), m3),
            ];
            for (k, &low) in lows.iter().enumerate() {
                let s = pair_scales_u(sc, 8 * h + 2 * k);
                for (isum, y) in isum.iter_mut().zip(ys) {
                    let p = _mm256_maddubs_epi16(low, ld(&y[i].qs[128 * h + 32 * k..]));
                    *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(p, s));
                }
            }
        }
        let (d, dmin) = (h2f(b.d), h2f(b.dmin));
        for (((acc, accm), isum), y) in acc.iter_mut().zip(&mut accm).zip(isum).zip(ys) {
            let a = &y[i];
            let prod = _mm256_madd_epi16(mins, ld(&a.bsums));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(a.d * d), _mm256_cvtepi32_ps(isum), *acc);
            *accm = _mm256_fmadd_ps(_mm256_set1_ps(a.d * dmin), _mm256_cvtepi32_ps(prod), *accm);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]) - hsum(accm[t]))
}

/// The IQ4 table in both lanes, for `pshufb` lookups.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_table() -> __m256i {
    _mm256_broadcastsi128_si256(ld128(&KVALUES))
}

/// Signed bytes `w` times signed bytes `a` into i16 pairs: `maddubs(|w|,
/// sign(a, w))`, exact because |w|, |a| <= 127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_signed(w: __m256i, a: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w))
}

/// IQ4_XS: table values (signed) times the activations, per 32 values times
/// the sub-block's signed scale. `T` tokens share each block's table lookups,
/// as in [`dot_q3_k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_xs<const T: usize>(x: &[BlockIq4Xs], ys: [&[BlockQ8K]; T]) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let table = iq4_table();
    let mut acc = [_mm256_setzero_ps(); T];
    for (i, b) in x.iter().enumerate() {
        hint_block(b);
        let mut isum = [_mm256_setzero_si256(); T];
        for p in 0..4 {
            // Sub-blocks 2p (low lane) and 2p + 1 (high lane).
            let q = ld(&b.qs[32 * p..]);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            let v0 = _mm256_shuffle_epi8(table, _mm256_permute2x128_si256::<0x20>(lo, hi));
            let v1 = _mm256_shuffle_epi8(table, _mm256_permute2x128_si256::<0x31>(lo, hi));
            let s0 = _mm256_set1_epi16(i16::from(b.scale(2 * p)));
            let s1 = _mm256_set1_epi16(i16::from(b.scale(2 * p + 1)));
            for (isum, y) in isum.iter_mut().zip(ys) {
                let a = &y[i];
                let p0 = mul_signed(v0, ld(&a.qs[64 * p..]));
                let p1 = mul_signed(v1, ld(&a.qs[64 * p + 32..]));
                *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(p0, s0));
                *isum = _mm256_add_epi32(*isum, _mm256_madd_epi16(p1, s1));
            }
        }
        let d = h2f(b.d);
        for ((acc, isum), y) in acc.iter_mut().zip(isum).zip(ys) {
            let d = y[i].d * d;
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), *acc);
        }
    }
    acc.map(|v| hsum(v))
}

// ---------------------------------------------------------------------------
// The 32-element types (Q8_0 activations with exact block sums).

/// 16 packed bytes as 32 nibbles in element order (low nibbles = elements
/// 0..16 in the low lane, high nibbles in the high lane): the bytes broadcast
/// to both lanes, the high lane shifted down by four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    let both = _mm256_broadcastsi128_si256(ld128(qs));
    let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// The 32 bits of `qh` as bytes: 16 where bit `j` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bits(qh: [u8; 4]) -> __m256i {
    let v = _mm256_set1_epi32(i32::from_le_bytes(qh));
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let v = _mm256_and_si256(_mm256_shuffle_epi8(v, spread), bits);
    _mm256_and_si256(_mm256_cmpeq_epi8(v, bits), _mm256_set1_epi8(16))
}

/// A Q4_1 block's values `u` (0..=15; the element is `d·u + m`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_q4_1(b: &BlockQ4_1) -> __m256i {
    nibbles(&b.qs)
}

/// A Q5_0 block's values as stored, `q = w + 16` (0..=31).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_q5_0(b: &BlockQ5_0) -> __m256i {
    _mm256_or_si256(nibbles(&b.qs), fifth_bits(b.qh))
}

/// A Q5_1 block's values `u` (0..=31; the element is `d·u + m`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_q5_1(b: &BlockQ5_1) -> __m256i {
    _mm256_or_si256(nibbles(&b.qs), fifth_bits(b.qh))
}

/// An IQ4_NL block's table values (signed, -127..=113), multiplied as Q8_0's
/// ([`dot_q8_lanes`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_iq4_nl(b: &BlockIq4Nl) -> __m256i {
    _mm256_shuffle_epi8(iq4_table(), nibbles(&b.qs))
}

/// BF16 weights times f32 activations: eight lanes of FMAs, the tail scalar.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = _mm256_setzero_ps();
    let n8 = w.len() / 8 * 8;
    for (wc, xc) in w[..n8].chunks_exact(8).zip(x[..n8].chunks_exact(8)) {
        let wv = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(ld128(wc)));
        let xv = {
            let xc: &[f32; 8] = xc.try_into().unwrap_or(&[0.0; 8]);
            // SAFETY: 8 readable floats; the load is unaligned.
            unsafe { _mm256_loadu_ps(xc.as_ptr()) }
        };
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(wv), xv, acc);
    }
    let mut sum = hsum(acc);
    for (&a, &b) in w[n8..].iter().zip(&x[n8..]) {
        sum += f32::from_bits(u32::from(a.to_bits()) << 16) * b;
    }
    sum
}

// ---------------------------------------------------------------------------
// The table entries.

/// Tokens that share each weight block's unpacking in the dots that take
/// several (the K-quants, IQ4_XS and the 32-value types): four tokens' sums
/// beside the unpacked weights and their scales fill the sixteen registers.
const TG: usize = 4;

k_entry!("avx2,fma,f16c", "AVX2", TG, gemm_q6_k, BlockQ6K, dot_q6_k);
k_entry!("avx2,fma,f16c", "AVX2", TG, gemm_q5_k, BlockQ5K, dot_q5_k);
k_entry!("avx2,fma,f16c", "AVX2", TG, gemm_q4_k, BlockQ4K, dot_q4_k);
k_entry!("avx2,fma,f16c", "AVX2", TG, gemm_q3_k, BlockQ3K, dot_q3_k);
k_entry!("avx2,fma,f16c", "AVX2", TG, gemm_q2_k, BlockQ2K, dot_q2_k);
k_entry!(
    "avx2,fma,f16c",
    "AVX2",
    TG,
    gemm_iq4_xs,
    BlockIq4Xs,
    dot_iq4_xs
);

prefill_entry!(
    "avx2,fma,f16c",
    use_strips_few,
    prefill_q4_1,
    BlockQ4_1,
    BlockQ8_0,
    super::strip::gemm_q4_1,
    super::gemv::gemv_q4_1
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_few,
    prefill_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    super::strip::gemm_q5_0,
    super::gemv::gemv_q5_0
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_few,
    prefill_q5_1,
    BlockQ5_1,
    BlockQ8_0,
    super::strip::gemm_q5_1,
    super::gemv::gemv_q5_1
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_few,
    prefill_iq4_nl,
    BlockIq4Nl,
    BlockQ8_0,
    super::strip_words::gemm_iq4_nl,
    super::gemv::gemv_iq4_nl
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    prefill_q2_k,
    BlockQ2K,
    BlockQ8K,
    super::strip::gemm_q2_k,
    gemm_q2_k
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    prefill_q3_k,
    BlockQ3K,
    BlockQ8K,
    super::strip::gemm_q3_k,
    gemm_q3_k
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    prefill_q4_k,
    BlockQ4K,
    BlockQ8K,
    super::strip::gemm_q4_k,
    gemm_q4_k
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    prefill_q5_k,
    BlockQ5K,
    BlockQ8K,
    super::strip::gemm_q5_k,
    gemm_q5_k
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    prefill_q6_k,
    BlockQ6K,
    BlockQ8K,
    super::strip::gemm_q6_k,
    gemm_q6_k
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_few,
    prefill_iq4_xs,
    BlockIq4Xs,
    BlockQ8K,
    super::strip_words::gemm_iq4_xs,
    gemm_iq4_xs
);

/// AVX2 product of BF16 weights and f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_bf16(w: &[bf16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    rows_bf16(w, x, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_bf16(w: &[bf16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    for (i, wr) in w.chunks_exact(x.cols).take(out.rows()).enumerate() {
        for t in 0..x.n_tok {
            out.set(t, i, dot_bf16(wr, x.row(t)));
        }
    }
}
