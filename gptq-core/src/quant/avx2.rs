//! The x86-64 AVX2 + FMA + F16C kernel path.
//!
//! Every function the `avx2` kernel table points at is compiled with
//! `#[target_feature(enable = "avx2,fma,f16c")]` and reached only through that
//! table (see `quant::table` for why that is safe); the AVX-512 and AMX
//! kernels call some of them directly, with a superset of the features.
//!
//! Quantized products follow ggml: per 32-element block an exact integer dot
//! (`maddubs` + `madd` into eight i32 lanes), converted to float and scaled by
//! the product of the two block scales with one FMA. Several weight rows share
//! each activation load (decode), and for prefill a register tile of
//! `4 rows × 2 tokens` lets each weight block serve two tokens.

use std::arch::x86_64::*;

use half::f16;

use super::panels::{MIN_FLOAT_TOKENS, float_panels};
use super::tile::{FloatActs, OutTile};
use super::types::{BlockQ4_0, BlockQ8_0, BlockQ8K, QK, QK_K};
use super::x86::driver::{drive, prefill_entry};

/// Weight rows per register tile.
const TR: usize = 4;
/// Tokens per register tile (prefill).
const TT: usize = 2;

// ---------------------------------------------------------------------------
// Small helpers (all inlined into their target_feature callers).

/// A Q8_0 block's 32 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn load_q8(b: &BlockQ8_0) -> __m256i {
    // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) }
}

/// An f16 to f32, exactly (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn h2f(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
}

/// Eight f32 from a slice of at least 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld(x: &[f32]) -> __m256 {
    let x: &[f32; 8] = x[..8].try_into().unwrap_or(&[0.0; 8]);
    // SAFETY: `x` is 8 readable floats; the load is unaligned.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

/// Eight f16 from a slice of at least 8, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ldh(x: &[f16]) -> __m256 {
    let x: &[f16; 8] = x[..8].try_into().unwrap_or(&[f16::ZERO; 8]);
    // SAFETY: `x` is 8 readable halves (16 bytes); the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(x.as_ptr().cast()) })
}

/// Stores eight f32 into a slice of at least 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn st(y: &mut [f32], v: __m256) {
    let y: &mut [f32; 8] = (&mut y[..8]).try_into().unwrap_or_else(|_| unreachable!());
    // SAFETY: `y` is 8 writable floats; the store is unaligned.
    unsafe { _mm256_storeu_ps(y.as_mut_ptr(), v) }
}

/// Sum of the eight lanes: the two halves added, then [`hsum4`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn hsum(v: __m256) -> f32 {
    hsum4(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps::<1>(v),
    ))
}

/// Sum of four lanes, `(x0 + x2) + (x1 + x3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum4(x: __m128) -> f32 {
    let s = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Maximum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32(v: __m256i) -> i32 {
    hsum4_i32(_mm_add_epi32(
        _mm256_castsi256_si128(v),
        _mm256_extracti128_si256::<1>(v),
    ))
}

/// Sum of four i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum4_i32(x: __m128i) -> i32 {
    let s = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// Four f16 bit patterns packed into one u64 by scalar shifts, the first in
/// the low bits: a quad of blocks' scales for one `vcvtph2ps`.
#[inline]
fn f16x4_bits(d: [f16; 4]) -> i64 {
    d.iter()
        .rev()
        .fold(0u64, |acc, h| (acc << 16) | u64::from(h.to_bits())) as i64
}

/// The integer dot of 32 signed weight bytes `w` (a Q8_0 block's, or the
/// IQ4_NL values the decode walk looks up) and a Q8_0 activation block `a`
/// in eight i32 lanes (each the sum of four products): `maddubs(|w|, sign(a,
/// w))`, the sign of `w` moved onto `a`.
///
/// Exact for every weight byte (`|-128|` is 128 read unsigned) and for
/// activations in -127..=127, all the activation quantizer emits but in
/// blocks of scale zero (whose -128s are multiplied by that zero). The other
/// way round, `maddubs(|a|, sign(w, a))`, wrapped a weight of -128 against a
/// negative activation to -128 (a crafted file's byte; ggml's quantizer writes
/// -127..=127). The third operand is unused: the decode walk's prepared
/// blocks keep a slot for the operand other types' dots take. `|w|` is
/// the same for every token of a pass, so the walk computes it once per
/// weight block (the compiler hoists it out of the token loop), where `|a|`
/// was prepared once per call: the same µops per block and token.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q8_lanes(w: __m256i, a: __m256i, _unused: __m256i) -> __m256i {
    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// The integer dot of a Q4_0 weight block (nibbles `q` as bytes 0..=15) and a
/// Q8_0 activation block `a` in eight i32 lanes, given `c = maddubs(8, a)`:
/// Σ (q - 8)·a. Exact for every i8 activation (pair sums stay below 2^15).
/// Q5_0 (`q` 0..=31, `c = maddubs(16, a)`, [`q5_offset`]) uses it too: pairs
/// of at most 2·31·128 less at most 2·16·128 still fit an i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q4_lanes(q: __m256i, a: __m256i, c: __m256i) -> __m256i {
    let p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), c);
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// No operand beside the activations: the prepared slot of [`dot_q8_lanes`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn no_aux(_a: __m256i) -> __m256i {
    _mm256_setzero_si256()
}

/// `maddubs(8, a)`: the offset term of [`dot_q4_lanes`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_offset(a: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_set1_epi8(8), a)
}

/// `maddubs(16, a)`: the offset term of Q5_0's dot ([`dot_q4_lanes`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_offset(a: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_set1_epi8(16), a)
}

// ---------------------------------------------------------------------------
// Activation quantization.

/// Quantizes a row of activations to Q8_0 and sums each block: the reference
/// rounding (ties to even) bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn quantize_q8_0(x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
    assert_eq!(x.len(), q.len() * QK, "quantize_acts: length mismatch");
    assert_eq!(q.len(), sums.len(), "quantize_acts: sums length mismatch");
    let sign = _mm256_set1_ps(-0.0);
    for ((xb, qb), s) in x.chunks_exact(QK).zip(q.iter_mut()).zip(sums.iter_mut()) {
        let v = [ld(&xb[0..]), ld(&xb[8..]), ld(&xb[16..]), ld(&xb[24..])];
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let amax = hmax(m);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        if !id.is_finite() || !amax.is_finite() {
            // Scales that overflow (subnormal amax) or non-finite input: the
            // reference's saturating conversions, block by block.
            scalar_block(xb, qb, s);
            continue;
        }
        qb.d = f16::from_bits(
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(
                amax / 127.0,
            ))) as u16,
        );
        let idv = _mm256_set1_ps(id);
        // |v·id| <= 127 up to one rounding, so the conversions never saturate.
        let i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], idv));
        let i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], idv));
        let i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], idv));
        let i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], idv));
        *s = hsum_i32(_mm256_add_epi32(
            _mm256_add_epi32(i0, i1),
            _mm256_add_epi32(i2, i3),
        )) as i16;
        // packs work within 128-bit lanes: the result is in the order
        // 0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31 (groups of four).
        let p01 = _mm256_packs_epi32(i0, i1);
        let p23 = _mm256_packs_epi32(i2, i3);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `qs` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(qb.qs.as_mut_ptr().cast(), p) }
    }
}

/// The reference quantization of one block (rare: degenerate scales).
fn scalar_block(xb: &[f32], qb: &mut BlockQ8_0, s: &mut i16) {
    super::types::q8_0::quantize_acts_q8_0(xb, std::slice::from_mut(qb));
    *s = qb.qs.iter().map(|&v| i16::from(v)).sum();
}

/// Quantizes a row of activations to Q8_K: the reference
/// ([`quantize_row_q8_k`](super::types::q8_k::quantize_row_q8_k)) bit for
/// bit. The first value of the largest magnitude sets the scale (with its
/// sign), values round ties to even. Blocks holding a NaN or an infinity, or
/// whose scale overflows, take the reference itself (its saturating
/// conversions differ from the vector ones there). Q8_K has no block sums
/// beside its blocks (`_sums` is empty).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn quantize_q8_k(x: &[f32], q: &mut [BlockQ8K], _sums: &mut [i16]) {
    use super::types::q8_k::quantize_row_q8_k;
    assert_eq!(x.len(), q.len() * QK_K, "quantize_q8_k: length mismatch");
    let sign = _mm256_set1_ps(-0.0);
    for (xb, qb) in x.chunks_exact(QK_K).zip(q.iter_mut()) {
        // Four chains of maxima (one chain of 32 dependent `vmaxps` was the
        // larger part of this function); the maximum is the same whatever
        // the order, and a NaN sends the block to the reference below.
        let (mut m, mut nan) = ([_mm256_setzero_ps(); 4], _mm256_setzero_ps());
        for c in xb.chunks_exact(32) {
            for (k, m) in m.iter_mut().enumerate() {
                let v = ld(&c[8 * k..]);
                *m = _mm256_max_ps(_mm256_andnot_ps(sign, v), *m);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            }
        }
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(m[0], m[1]),
            _mm256_max_ps(m[2], m[3]),
        ));
        if amax == 0.0 && _mm256_movemask_ps(nan) == 0 {
            *qb = BlockQ8K::ZERO;
            continue;
        }
        // The reference keeps the first value whose magnitude beats all
        // before: the first lane equal to `amax` in magnitude, eight at a
        // time (a scalar search was a third of this function's time).
        // (A plain loop: a closure here is compiled without AVX2 and
        // called per chunk.)
        let av = _mm256_set1_ps(amax);
        let mut max = amax;
        for c in xb.chunks_exact(8) {
            let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, ld(c)), av);
            let bits = _mm256_movemask_ps(eq);
            if bits != 0 {
                max = c[bits.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        if _mm256_movemask_ps(nan) != 0 || !amax.is_finite() || !iscale.is_finite() {
            quantize_row_q8_k(xb, std::slice::from_mut(qb));
            continue;
        }
        let s = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        let flip = _mm256_set1_epi8(-128);
        for ((c, o), sums) in xb
            .chunks_exact(32)
            .zip(qb.qs.chunks_exact_mut(32))
            .zip(qb.bsums.chunks_exact_mut(2))
        {
            // |v·iscale| <= 127 up to one rounding: no conversion saturates
            // and the packs below are exact.
            let i: [__m256i; 4] = std::array::from_fn(|k| {
                _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(ld(&c[8 * k..]), s)), top)
            });
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(i[0], i[1]),
                _mm256_packs_epi32(i[2], i[3]),
            );
            // packs work within 128-bit lanes (see quantize_q8_0).
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: `o` is 32 writable bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), p) }
            // The two sixteens' sums: each eight bytes' sum of `q + 128` by
            // `vpsadbw`, then pairs of eights, less 16·128 (exact).
            let e = _mm256_sad_epu8(_mm256_xor_si256(p, flip), _mm256_setzero_si256());
            let e = _mm256_add_epi64(e, _mm256_srli_si256::<8>(e));
            sums[0] = (_mm256_extract_epi64::<0>(e) - 2048) as i16;
            sums[1] = (_mm256_extract_epi64::<2>(e) - 2048) as i16;
        }
        qb.d = 1.0 / iscale;
    }
}

// ---------------------------------------------------------------------------
// Quantized matrix products.

// Q8_0 and Q4_0 products: below the strips (16 tokens,
// `x86::strips::MIN_TOKENS_TRANSPOSED`) the decode walk
// ([`gemv`]), which prepares each token's activations once per call and
// loads each weight block once for four tokens, is ahead of the register
// tiles it replaced (`gptq bench -p N -n 0`, 124M, 2
// threads, alternated: Q8_0 pp16 1.09–1.27×, pp25 1.05–1.28×; Q4_0 pp8
// 1.53×, pp16 1.56×, pp25 1.50×), and a token's sums then do not depend on
// how many tokens share the call.
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    gemm_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    strip_words::gemm_q8_0,
    gemv_q8_0::gemv_q8_0
);
prefill_entry!(
    "avx2,fma,f16c",
    use_strips_transposed,
    gemm_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    strip::gemm_q4_0,
    gemv::gemv_q4_0
);

/// The per-token operand of the types with a minimum (Q4_1, Q5_1, see
/// [`gemv`]): `d_a·Σa` of activation block `b` (its exact sum `sum`) in lane
/// 0, zeros in the others, as integer bits for the walk's operand slot.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn min_term(b: &BlockQ8_0, sum: i16) -> __m256i {
    let v = _mm_set_ss(h2f(b.d) * f32::from(sum));
    _mm256_castps_si256(_mm256_zextps128_ps256(v))
}

/// `maddubs(u, a)` pairs summed in fours: `Σ u·a` of unsigned weight bytes
/// `u` (at most 31, so no pair saturates) in eight i32 lanes; the third
/// operand (the types with a minimum keep [`min_term`] there) is not used.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn dot_u8_lanes(u: __m256i, a: __m256i, _aux: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1))
}

// ---------------------------------------------------------------------------
// Float matrix products and vector routines.

/// F32 weight rows times float activations: one token, or the independent
/// tokens of a batched decode step, each alone (`gemv_f32`); a prompt by
/// register tiles, from [`MIN_FLOAT_TOKENS`] tokens on in panels
/// (`quant::panels`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_f32(w: &[f32], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    assert!(
        w.len() >= out.rows() * x.cols,
        "gemm_f32: weights too short"
    );
    if x.decode || x.n_tok == 1 {
        gemv_f32(w, x, out);
    } else if x.n_tok >= MIN_FLOAT_TOKENS {
        panels_walk(w, x, out);
    } else {
        drive!(tile_f32, w, x, out, TR, TT);
    }
}

/// F16 weight rows times float activations: as [`gemm_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gemm_f16(w: &[f16], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
    assert!(
        w.len() >= out.rows() * x.cols,
        "gemm_f16: weights too short"
    );
    if x.decode || x.n_tok == 1 {
        gemv_f16(w, x, out);
    } else if x.n_tok >= MIN_FLOAT_TOKENS {
        panels_walk(w, x, out);
    } else {
        drive!(tile_f16, w, x, out, TR, TT);
    }
}

/// Eight rows of `src` (`stride` apart, eight values each) to eight runs of
/// eight in `dst` (`dst_stride` apart): run `k` holds value `k` of every row
/// (the panels' transposition, `panels::pack_panels`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn transpose8(src: &[f32], stride: usize, dst: &mut [f32], dst_stride: usize) {
    assert!(src.len() >= 7 * stride + 8 && dst.len() >= 7 * dst_stride + 8);
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, v) in r.iter_mut().enumerate() {
        // SAFETY: `i·stride + 8 <= src.len()` (asserted above); unaligned.
        *v = unsafe { _mm256_loadu_ps(src.as_ptr().add(i * stride)) };
    }
    // Pairs, then quads, then the 128-bit halves.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (k, v) in out.iter().enumerate() {
        // SAFETY: `k·dst_stride + 8 <= dst.len()` (asserted above); unaligned.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(k * dst_stride), *v) };
    }
}

// Panels of 8 tokens, tiles of 6 rows × 2 panels: twelve accumulators
// (more than the FMA latency times its two ports; eight measured 4 % slower
// on a perplexity run), two panel loads and six broadcasts per twelve FMAs,
// fifteen registers.
float_panels!(
    "avx2,fma,f16c",
    __m256,
    8,
    6,
    2,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps,
    8,
    transpose8
);

/// Generates a float tile function over weights of element type `$ty` loaded
/// eight at a time by `$load`.
macro_rules! float_tile {
    ($name:ident, $ty:ty, $load:ident, $conv:expr) => {
        /// `R` weight rows (from tile row `r`) times `T` tokens (from `t`).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $name<const R: usize, const T: usize>(
            w: &[$ty],
            x: &FloatActs<'_>,
            r: usize,
            t: usize,
        ) -> [[f32; T]; R] {
            let n = x.cols;
            let mut wr: [&[$ty]; R] = [&[]; R];
            for (i, s) in wr.iter_mut().enumerate() {
                *s = &w[(r + i) * n..(r + i + 1) * n];
            }
            let mut xr: [&[f32]; T] = [&[]; T];
            for (j, s) in xr.iter_mut().enumerate() {
                *s = &x.row(t + j)[..n];
            }
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let n8 = n - n % 8;
            let mut c = 0;
            while c < n8 {
                let mut xv = [_mm256_setzero_ps(); T];
                for j in 0..T {
                    xv[j] = ld(&xr[j][c..]);
                }
                for i in 0..R {
                    let wv = $load(&wr[i][c..]);
                    for j in 0..T {
                        acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
                    }
                }
                c += 8;
            }
            let conv = $conv;
            let mut res = [[0.0f32; T]; R];
            for i in 0..R {
                for j in 0..T {
                    let mut s = hsum(acc[i][j]);
                    for (&p, &q) in wr[i][n8..].iter().zip(&xr[j][n8..]) {
                        s += conv(p) * q;
                    }
                    res[i][j] = s;
                }
            }
            res
        }
    };
}

/// Generates a float decode product over weights of element type `$ty`
/// (loaded eight at a time by `$ld`): every (row, token) alone, so a token's
/// sums are the same in a batched decode step as by itself; four
/// accumulators per token (32 values a step: the FMA latency, which one
/// accumulator left exposed at 0.75× the peers' decode on F32), each row one
/// sequential stream prefetched ahead, loaded once for two tokens at a time.
macro_rules! float_gemv {
    ($name:ident, $ty:ty, $ld:ident, $conv:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $name(w: &[$ty], x: &FloatActs<'_>, out: &mut OutTile<'_>) {
            /// One row's sums with `T` tokens.
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn row<const T: usize>(wr: &[$ty], xs: [&[f32]; T]) -> [f32; T] {
                let n = wr.len();
                let n32 = n - n % 32;
                let mut acc = [[_mm256_setzero_ps(); 4]; T];
                let mut c = 0;
                // Every 64-byte line of the row is hinted (32 f32 span two).
                let per_line = (64 / std::mem::size_of::<$ty>()).min(32);
                while c < n32 {
                    for l in (0..32).step_by(per_line) {
                        crate::quant::prefetch::stream(&wr[c + l]);
                    }
                    for q in 0..4 {
                        let wv = $ld(&wr[c + 8 * q..]);
                        for (a, xr) in acc.iter_mut().zip(&xs) {
                            a[q] = _mm256_fmadd_ps(wv, ld(&xr[c + 8 * q..]), a[q]);
                        }
                    }
                    c += 32;
                }
                let conv = $conv;
                let mut res = [0.0f32; T];
                for ((r, a), xr) in res.iter_mut().zip(&acc).zip(&xs) {
                    let mut v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
                    let mut k = n32;
                    while k + 8 <= n {
                        v = _mm256_fmadd_ps($ld(&wr[k..]), ld(&xr[k..]), v);
                        k += 8;
                    }
                    let mut s = hsum(v);
                    for (&p, &q) in wr[k..].iter().zip(&xr[k..n]) {
                        s += conv(p) * q;
                    }
                    *r = s;
                }
                res
            }
            let n = x.cols;
            for r in 0..out.rows() {
                let wr = &w[r * n..(r + 1) * n];
                let mut t = 0;
                while t + 2 <= x.n_tok {
                    let v = row::<2>(wr, [x.row(t), x.row(t + 1)]);
                    out.set(t, r, v[0]);
                    out.set(t + 1, r, v[1]);
                    t += 2;
                }
                if t < x.n_tok {
                    let [v] = row::<1>(wr, [x.row(t)]);
                    out.set(t, r, v);
                }
            }
        }
    };
}

float_gemv!(gemv_f32, f32, ld, |v: f32| v);
float_gemv!(gemv_f16, f16, ldh, |v: f16| v.to_f32());

float_tile!(tile_f32, f32, ld, |v: f32| v);
float_tile!(tile_f16, f16, ldh, |v: f16| v.to_f32());

/// Generates the fused attention over a cache of one element type: `$ld`
/// widens eight cached values to f32, `$dot` is the query·key product and
/// `$one` widens a single value.
macro_rules! attend {
    ($name:ident, $t:ty, $ld:ident, $dot:ident, $one:expr) => {
        /// One query over `n` positions of one head: the scores in one pass
        /// without a call per position (four positions at a time against a
        /// register-resident query where the head size is 64), the stable
        /// softmax, then the weighted sum of values with the output held in
        /// registers across all positions (64 lanes per pass where the head
        /// has them, else 32, then 8), instead of a load and store of the
        /// output per position.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in crate::quant) fn $name(
            q: &[f32],
            k: &[$t],
            v: &[$t],
            stride: usize,
            n: usize,
            scale: f32,
            scores: &mut [f32],
            out: &mut [f32],
        ) {
            let hd = out.len();
            assert!(
                n >= 1 && q.len() == hd && scores.len() >= n,
                "attend: sizes"
            );
            let last = (n - 1) * stride + hd;
            assert!(
                k.len() >= last && v.len() >= last,
                "attend: cache too short"
            );
            let scores = &mut scores[..n];
            let per_line = 64 / std::mem::size_of::<$t>();
            // The weighted sum below reads the value rows in the same order:
            // start fetching them while the scores are computed.
            let fetch_values = |p: usize| {
                for c in v[p * stride..p * stride + hd].chunks(per_line) {
                    super::prefetch::ahead_l1(&c[0], 0);
                }
            };
            let mut first = 0;
            if hd == HD64 {
                // GPT-2's head size: the query held in eight registers and
                // four positions' sums reduced together by three `hadd`s,
                // not one horizontal sum and a second load per product per
                // position (one query over 512 positions, in cache: 1.4x).
                let qv: [__m256; 8] = std::array::from_fn(|j| ld(&q[8 * j..]));
                let sv = _mm_set1_ps(scale);
                while first + 4 <= n {
                    let acc: [__m256; 4] = std::array::from_fn(|i| {
                        let p = first + i;
                        fetch_values(p);
                        let row = &k[p * stride..p * stride + HD64];
                        let mut a = _mm256_mul_ps(qv[0], $ld(row));
                        for (j, &qj) in qv.iter().enumerate().skip(1) {
                            a = _mm256_fmadd_ps(qj, $ld(&row[8 * j..]), a);
                        }
                        a
                    });
                    let h = _mm256_hadd_ps(
                        _mm256_hadd_ps(acc[0], acc[1]),
                        _mm256_hadd_ps(acc[2], acc[3]),
                    );
                    let s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                    let out4 = &mut scores[first..first + 4];
                    // SAFETY: `out4` is 4 writable f32; the store is unaligned.
                    unsafe { _mm_storeu_ps(out4.as_mut_ptr(), _mm_mul_ps(s4, sv)) };
                    first += 4;
                }
            }
            for (p, s) in scores.iter_mut().enumerate().skip(first) {
                fetch_values(p);
                *s = $dot(&k[p * stride..p * stride + hd], q) * scale;
            }
            softmax(scores);
            /// Output columns `c..c + 8·W`: each score broadcast once per
            /// pass, each value row's `8·W` columns read once.
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn columns<const W: usize>(
                scores: &[f32],
                v: &[$t],
                stride: usize,
                c: usize,
                out: &mut [f32],
            ) {
                let mut acc = [_mm256_setzero_ps(); W];
                for (p, &w) in scores.iter().enumerate() {
                    let row = &v[p * stride + c..p * stride + c + 8 * W];
                    let wv = _mm256_set1_ps(w);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(wv, $ld(&row[8 * i..]), *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    st(&mut out[c + 8 * i..c + 8 * i + 8], *a);
                }
            }
            // All 64 lanes of a GPT-2 head in one pass, else 32, then 8 at a
            // time: every lane sums its positions in order either way.
            let mut c = 0;
            while c + 64 <= hd {
                columns::<8>(scores, v, stride, c, out);
                c += 64;
            }
            while c + 32 <= hd {
                columns::<4>(scores, v, stride, c, out);
                c += 32;
            }
            while c + 8 <= hd {
                columns::<1>(scores, v, stride, c, out);
                c += 8;
            }
            for (j, o) in out.iter_mut().enumerate().skip(c) {
                *o = scores
                    .iter()
                    .enumerate()
                    .map(|(p, &w)| w * $one(v[p * stride + j]))
                    .sum();
            }
        }
    };
}

/// The head size [`attend_f32`] and [`attend_f16`] have a register-resident
/// path for (every GPT-2 size's: 768/12 … 1600/25).
const HD64: usize = 64;

attend!(attend_f32, f32, ld, dot_f32_rev, |x: f32| x);
attend!(attend_f16, f16, ldh, dot_f16, h2f);

/// [`dot_f32`] with the key first, as [`dot_f16`] takes it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f32_rev(k: &[f32], q: &[f32]) -> f32 {
    dot_f32(q, k)
}

/// Σ x·y of two f32 rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot_f32: length mismatch");
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let xc = x.chunks_exact(16);
    let yc = y.chunks_exact(16);
    let (mut xr, mut yr) = (xc.remainder(), yc.remainder());
    for (p, q) in xc.zip(yc) {
        a0 = _mm256_fmadd_ps(ld(p), ld(q), a0);
        a1 = _mm256_fmadd_ps(ld(&p[8..]), ld(&q[8..]), a1);
    }
    if xr.len() >= 8 {
        a0 = _mm256_fmadd_ps(ld(xr), ld(yr), a0);
        xr = &xr[8..];
        yr = &yr[8..];
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    for (p, q) in xr.iter().zip(yr) {
        s += p * q;
    }
    s
}

/// Σ x·y of an f16 row and an f32 row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn dot_f16(x: &[f16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot_f16: length mismatch");
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let xc = x.chunks_exact(16);
    let yc = y.chunks_exact(16);
    let (mut xr, mut yr) = (xc.remainder(), yc.remainder());
    for (p, q) in xc.zip(yc) {
        a0 = _mm256_fmadd_ps(ldh(p), ld(q), a0);
        a1 = _mm256_fmadd_ps(ldh(&p[8..]), ld(&q[8..]), a1);
    }
    if xr.len() >= 8 {
        a0 = _mm256_fmadd_ps(ldh(xr), ld(yr), a0);
        xr = &xr[8..];
        yr = &yr[8..];
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    for (p, q) in xr.iter().zip(yr) {
        s += h2f(*p) * q;
    }
    s
}

/// `y += x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn add(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "add: length mismatch");
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact_mut(8);
    for (p, q) in (&mut xc).zip(&mut yc) {
        st(q, _mm256_add_ps(ld(p), ld(q)));
    }
    for (p, q) in xc.remainder().iter().zip(yc.into_remainder()) {
        *q += p;
    }
}

/// `out = (x - mean) / sqrt(var + eps) · w + b`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() == n && b.len() == n && out.len() == n && n > 0);
    let n8 = n - n % 8;
    let mut acc = _mm256_setzero_ps();
    for c in x[..n8].chunks_exact(8) {
        acc = _mm256_add_ps(acc, ld(c));
    }
    let mut sum = hsum(acc);
    for v in &x[n8..] {
        sum += v;
    }
    let mean = sum / n as f32;
    let mv = _mm256_set1_ps(mean);
    let mut acc = _mm256_setzero_ps();
    for c in x[..n8].chunks_exact(8) {
        let d = _mm256_sub_ps(ld(c), mv);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    let mut var = hsum(acc);
    for v in &x[n8..] {
        var += (v - mean) * (v - mean);
    }
    let inv = 1.0 / (var / n as f32 + eps).sqrt();
    let iv = _mm256_set1_ps(inv);
    let mut c = 0;
    while c < n8 {
        let d = _mm256_mul_ps(_mm256_sub_ps(ld(&x[c..]), mv), iv);
        st(&mut out[c..], _mm256_fmadd_ps(d, ld(&w[c..]), ld(&b[c..])));
        c += 8;
    }
    for i in n8..n {
        out[i] = (x[i] - mean) * inv * w[i] + b[i];
    }
}

/// `e^x` in eight lanes, within about 2 ulp for results in the normal range;
/// inputs below about -87.3 give 0 (or a value below 2^-126), above 88.37 the
/// value at 88.37.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(x, _mm256_set1_ps(88.376_26));
    let x = _mm256_max_ps(x, _mm256_set1_ps(-88.376_26));
    // x = n·ln2 + r, |r| <= ln2/2, with ln2 split in two for exactness.
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    // e^r = 1 + r + r²·P(r) (minimax, Cephes' expf coefficients).
    let mut p = _mm256_set1_ps(1.987_569_2e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_2e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.166_666_65));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let r2 = _mm256_mul_ps(r, r);
    let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n by building the exponent: n in -127..=127; -127 gives 0.
    let ni = _mm256_cvtps_epi32(n);
    let pow = _mm256_slli_epi32::<23>(_mm256_add_epi32(ni, _mm256_set1_epi32(127)));
    _mm256_mul_ps(e, _mm256_castsi256_ps(pow))
}

/// GELU (tanh approximation) as `u · sigmoid(2z)`, which equals
/// `0.5·u·(1 + tanh z)` and avoids the cancellation of `1 + tanh z` for
/// negative `u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gelu8(u: __m256) -> __m256 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u3 = _mm256_mul_ps(_mm256_mul_ps(u, u), u);
    let inner = _mm256_fmadd_ps(_mm256_set1_ps(0.044_715), u3, u);
    // -2z
    let m2z = _mm256_mul_ps(inner, _mm256_set1_ps(-2.0 * SQRT_2_OVER_PI));
    let den = _mm256_add_ps(_mm256_set1_ps(1.0), exp8(m2z));
    _mm256_div_ps(u, den)
}

/// GPT-2's GELU in place, eight lanes at a time by [`gelu8`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn gelu(x: &mut [f32]) {
    let mut c = x.chunks_exact_mut(8);
    for v in &mut c {
        let r = gelu8(ld(v));
        st(v, r);
    }
    let rest = c.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; 8];
        buf[..rest.len()].copy_from_slice(rest);
        let r = gelu8(ld(&buf));
        st(&mut buf, r);
        let k = rest.len();
        rest.copy_from_slice(&buf[..k]);
    }
}

/// A stable softmax in place (the maximum is subtracted first).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn softmax(x: &mut [f32]) {
    let n8 = x.len() - x.len() % 8;
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in x[..n8].chunks_exact(8) {
        mv = _mm256_max_ps(mv, ld(c));
    }
    let mut max = hmax(mv);
    for &v in &x[n8..] {
        max = max.max(v);
    }
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut buf = [0.0f32; 8];
    for c in x.chunks_mut(8) {
        let k = c.len();
        let v = if k == 8 {
            ld(c)
        } else {
            buf = [f32::NEG_INFINITY; 8];
            buf[..k].copy_from_slice(c);
            ld(&buf)
        };
        let mut e = exp8(_mm256_sub_ps(v, m));
        if k < 8 {
            // Lanes past the end hold -inf: their exp is not added.
            let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(f32::NEG_INFINITY));
            e = _mm256_and_ps(e, keep);
            st(&mut buf, e);
            c.copy_from_slice(&buf[..k]);
        } else {
            st(c, e);
        }
        acc = _mm256_add_ps(acc, e);
    }
    let inv = _mm256_set1_ps(1.0 / hsum(acc));
    let mut ch = x.chunks_exact_mut(8);
    for c in &mut ch {
        let v = _mm256_mul_ps(ld(c), inv);
        st(c, v);
    }
    let inv = 1.0 / hsum(acc);
    for v in ch.into_remainder() {
        *v *= inv;
    }
}

pub(in crate::quant) mod attend;
pub(in crate::quant) mod blocks;
pub(in crate::quant) mod gemv;
pub(in crate::quant) mod gemv_q8_0;
pub(in crate::quant) mod strip;
pub(in crate::quant) mod strip_words;
#[cfg(test)]
mod tests;

/// `Σ exp(v − max)` in f64: the portable code
/// ([`crate::perplexity::exp_sum`]) compiled for this path's vectors (no
/// FMA contraction: the same bits as every other path).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn exp_sum(logits: &[f32], max: f32) -> f64 {
    crate::perplexity::exp_sum::exp_sum_body(logits, max)
}

/// The largest logit, as [`exp_sum`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn max_logit(logits: &[f32]) -> f32 {
    crate::perplexity::exp_sum::max_logit_body(logits)
}
