//! The strip repack of every quantized type the x86 strips take (Q8_0,
//! Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) in
//! registers: each run of 32 values of eight rows (Q8_0's bytes loaded,
//! Q4_0's and Q4_1's nibbles unpacked by one broadcast, shift and `and`,
//! IQ4_NL's and IQ4_XS's looked up from them by one `vpshufb`, Q5_0's and
//! Q5_1's fifth bits by a byte shuffle, an `and` and a compare, Q2_K's and
//! Q3_K's two bits by a shift and `and`, Q3_K's third and Q5_K's fifth bits
//! by an `and` and a compare, Q4_K's nibbles by a shift and `and`, Q6_K's two
//! high bits by a shift and `and`) are one 8×8
//! transposition of 4-byte words (24 shuffles) into the eight lines'
//! halves (for the AVX2 strips' i16 lines of Q8_0, IQ4_NL and IQ4_XS, each
//! transposed line widened by two `vpmovsxbw` into a whole line), instead of [`repack_strip`](super::strips::repack_strip)'s
//! generic walk, which
//! unpacks every block to an array and copies its values four bytes at a
//! time. The generic walk was a fifth of a 128-token AVX2 prefill (124M
//! Q8_0, `perf`, with `|w|` repacked beside `w`; a tenth before); every x86
//! path (AVX2, AVX-512, AMX) repacks per call unless `--repack` keeps the
//! copies (124M Q4_K_M mix, alternated: pp48 1.04–1.13×, pp128 1.00–1.08×
//! on AVX2 and AVX-512). Twin-tested against the generic walk (the same
//! lines, scales and minimums for every row a strip holds).

use std::arch::x86_64::*;

use super::strip_words::HALF_LINES;
use super::strips::pair_i16;
use super::strips::{Line, STRIP};
use crate::quant::prefetch;
use crate::quant::types::iq4_nl::KVALUES;
use crate::quant::types::q4_k::scale_min;
use crate::quant::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
};

/// The values a strip's lines hold (the unpackings of `strips`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::quant) enum Values {
    /// Q8_0's signed bytes as stored (`q8_0_signed`: the AMX tiles).
    Q8Signed,
    /// Q8_0's bytes offset to `w + 128` (`q8_0_unsigned`: `vpdpbusd`).
    Q8Unsigned,
    /// Q8_0's values widened to i16 (`x86::strip_words`: the AVX2 strips'
    /// `madd` lines): line `k` of half `h` of a run holds values `4k..4k +
    /// 4` of the half's rows 0, 1, 4, 5 in its first 32 bytes and rows 2,
    /// 3, 6, 7 in its last 32, each row's four values as 8 bytes; a strip
    /// holds half 0's lines of every run, then half 1's.
    Q8Words,
    /// IQ4_NL's signed table values as i16, laid out as
    /// [`Values::Q8Words`] (`iq4_nl_signed`: the AVX2 strips).
    Iq4NlWords,
    /// IQ4_XS's signed table values as i16 in eight runs of 32, laid out
    /// as [`Values::Q8Words`] (`iq4_xs_signed`: the AVX2 strips).
    Iq4XsWords,
    /// Q4_0's nibbles `q` (0..=15, `q4_0_unsigned`).
    Q4Unsigned,
    /// Q4_0's `q - 8` (`q4_0_signed`: the AMX tiles).
    Q4Signed,
    /// Q4_1's nibbles `u` (0..=15), scale `d` and minimum `m`
    /// (`q4_1_unsigned`).
    Q41Unsigned,
    /// Q5_0's five bits as stored (0..=31, `q5_0_unsigned`).
    Q50Unsigned,
    /// Q5_1's five bits `u` (0..=31), scale `d` and minimum `m`
    /// (`q5_1_unsigned`).
    Q51Unsigned,
    /// IQ4_NL's table values offset to `v + 128` (`iq4_nl_unsigned`).
    Iq4NlUnsigned,
    /// Q2_K's two bits `u` (0..=3) in sixteen sub-blocks of 16, scales
    /// `d·sc` and minimums' terms `−dmin·m` (`q2_k_unsigned`).
    Q2KUnsigned,
    /// The same values with the integer-scale strips' scales (`q2_k_int`,
    /// as [`Values::Q6KInt`]; the minimums are `repack_q2_k_int`'s).
    Q2KInt,
    /// Q3_K's `u = q + 4` (0..=7) in sixteen sub-blocks of 16 with float
    /// scales `d·sc` (`q3_k_unsigned`).
    Q3KUnsigned,
    /// The same values with the integer-scale strips' scales (`q3_k_int`,
    /// as [`Values::Q6KInt`]).
    Q3KInt,
    /// IQ4_XS's table values offset to `v + 128` in eight sub-blocks of 32
    /// (`iq4_xs_unsigned`).
    Iq4XsUnsigned,
    /// Q4_K's nibbles `u` (0..=15) in eight sub-blocks of 32
    /// (`q4_k_unsigned`).
    Q4KUnsigned,
    /// Q5_K's five bits `u` (0..=31) in eight sub-blocks of 32
    /// (`q5_k_unsigned`).
    Q5KUnsigned,
    /// Q6_K's six bits `u` (0..=63) in sixteen sub-blocks of 16, with
    /// float scales `d·sc` (`q6_k_unsigned`).
    Q6KUnsigned,
    /// The same values with the integer-scale strips' scales: `d` in `dw`
    /// and each sub-block's `sc` in both i16 halves of an `isc` word
    /// (`q6_k_int`, [`repack_transposed_int`]).
    Q6KInt,
}

impl Values {
    /// Whether these are Q8_0's.
    pub(in crate::quant) fn is_q8_0(self) -> bool {
        matches!(
            self,
            Values::Q8Signed | Values::Q8Unsigned | Values::Q8Words
        )
    }

    /// Whether these are Q4_0's.
    pub(in crate::quant) fn is_q4_0(self) -> bool {
        matches!(self, Values::Q4Unsigned | Values::Q4Signed)
    }

    /// Whether these carry the integer-scale strips' scales (`d` in `dw`,
    /// each sub-block's `sc` in `isc`: [`repack_transposed_int`]).
    pub(in crate::quant) fn int_scales(self) -> bool {
        matches!(self, Values::Q2KInt | Values::Q3KInt | Values::Q6KInt)
    }

    /// Whether a kept copy (`--repack`) of these lines pays: the AMX tile
    /// unit's (signed values), which runs from fewer tokens with one, the
    /// K-quants' and IQ4_XS's as `vpdpbusd` takes them. Their repacks
    /// unpack more per byte: 124M, `gptq bench -p 16,48,128 -n 0 -r 3` with
    /// `--repack` against without, alternated: Q6_K mix AVX-512 pp16
    /// 1.22–1.35×, AVX2 1.16–1.28×; Q4_K_M mix AVX-512 pp16 1.02–1.20×, AVX2
    /// pp48 1.06–1.09×; IQ4_XS AVX-512 pp16 1.06–1.10×. The other
    /// transpositions repack at close to the speed of reading the weights,
    /// so a kept copy (as large as the weights, twice as i16)
    /// only adds its own reads: AVX2 Q8_0 pp128 0.94–0.97×, Q4_0 0.92–0.99×,
    /// Q4_1 pp16 0.92–0.96×, IQ4_XS 0.80–0.81×; AVX-512 Q8_0 0.98×, Q4_0
    /// pp16 0.85–0.99×, Q4_1 0.89–0.93×, Q5_0 0.98×. (Native AMX, kept
    /// against not: Q8_0 pp16 1.33–1.39×, Q4_0 1.29–1.32×.) The model's
    /// `--repack` check reads the same rule per path and type
    /// (`KernelPath::keeps_repack`); the repack-cache tests hold the two
    /// together.
    pub(in crate::quant) fn worth_keeping(self) -> bool {
        matches!(
            self,
            Values::Q8Signed
                | Values::Q4Signed
                | Values::Q2KUnsigned
                | Values::Q2KInt
                | Values::Q3KUnsigned
                | Values::Q3KInt
                | Values::Iq4XsUnsigned
                | Values::Q4KUnsigned
                | Values::Q5KUnsigned
                | Values::Q6KUnsigned
                | Values::Q6KInt
        )
    }

    /// Whether the lines hold i16 values ([`Values::Q8Words`]' layout).
    pub(in crate::quant) fn words(self) -> bool {
        matches!(
            self,
            Values::Q8Words | Values::Iq4NlWords | Values::Iq4XsWords
        )
    }

    /// Lines per run of 32 values: eight, sixteen as i16.
    fn lines(self) -> usize {
        if self.words() { 16 } else { 8 }
    }
}

/// The weights of a repack [`repack_transposed`] takes, with the values its
/// unpacking makes.
#[derive(Clone, Copy)]
pub(in crate::quant) enum Source<'w> {
    Q8_0(&'w [BlockQ8_0], Values),
    Q4_0(&'w [BlockQ4_0], Values),
    Q4_1(&'w [BlockQ4_1]),
    Q5_0(&'w [BlockQ5_0]),
    Q5_1(&'w [BlockQ5_1]),
    /// With [`Values::Iq4NlUnsigned`] or [`Values::Iq4NlWords`].
    Iq4Nl(&'w [BlockIq4Nl], Values),
    /// With [`Values::Q2KUnsigned`] or [`Values::Q2KInt`].
    Q2K(&'w [BlockQ2K], Values),
    /// With [`Values::Q3KUnsigned`] or [`Values::Q3KInt`].
    Q3K(&'w [BlockQ3K], Values),
    /// With [`Values::Iq4XsUnsigned`] or [`Values::Iq4XsWords`].
    Iq4Xs(&'w [BlockIq4Xs], Values),
    Q4K(&'w [BlockQ4K]),
    Q5K(&'w [BlockQ5K]),
    /// With [`Values::Q6KUnsigned`] or [`Values::Q6KInt`].
    Q6K(&'w [BlockQ6K], Values),
}

impl Source<'_> {
    /// The values the repack makes.
    pub(in crate::quant) fn values(self) -> Values {
        match self {
            Source::Q8_0(_, v)
            | Source::Q4_0(_, v)
            | Source::Iq4Nl(_, v)
            | Source::Q2K(_, v)
            | Source::Q3K(_, v)
            | Source::Iq4Xs(_, v)
            | Source::Q6K(_, v) => v,
            Source::Q4_1(_) => Values::Q41Unsigned,
            Source::Q5_0(_) => Values::Q50Unsigned,
            Source::Q5_1(_) => Values::Q51Unsigned,
            Source::Q4K(_) => Values::Q4KUnsigned,
            Source::Q5K(_) => Values::Q5KUnsigned,
        }
    }
}

/// Repacks strip `i` (rows `16i..`, at most 16, of `rows` rows of `nb`
/// blocks) of `src` into `lines` (each block's runs of 32 values as 8
/// lines, 16 as i16), `dw` (the scales) and `dm` (the
/// minimums' terms), one entry per sub-block (of 32 values, of 16 for Q2_K,
/// Q3_K and Q6_K), as the generic walk does; `false` (nothing written) where the CPU
/// lacks AVX2 or F16C, for the caller's generic walk.
pub(in crate::quant) fn repack_transposed(
    src: Source<'_>,
    at: (usize, usize, usize),
    (lines, dw, dm): (&mut [Line], &mut [f32], &mut [f32]),
) -> bool {
    assert!(
        !src.values().int_scales(),
        "repack_transposed: integer scales"
    );
    transposed(src, at, (lines, dw, Terms::Mins(dm)))
}

/// [`repack_transposed`] for the integer-scale strips (`repack_int`,
/// [`Values::int_scales`]): `dw` gets each row's
/// super-block scale `d` at each of its sub-blocks and `isc` the
/// sub-blocks' scales as i16 pairs.
pub(in crate::quant) fn repack_transposed_int(
    src: Source<'_>,
    at: (usize, usize, usize),
    (lines, dw, isc): (&mut [Line], &mut [f32], &mut [i32]),
) -> bool {
    assert!(src.values().int_scales(), "repack_transposed_int: values");
    transposed(src, at, (lines, dw, Terms::Ints(isc)))
}

/// The per-row terms beside the scales: the minimums' (float strips) or the
/// integer sub-block scales.
enum Terms<'a> {
    Mins(&'a mut [f32]),
    Ints(&'a mut [i32]),
}

impl Terms<'_> {
    /// Entries `r` of the terms.
    fn slice(self, r: std::ops::Range<usize>) -> Self {
        match self {
            Terms::Mins(m) => Terms::Mins(&mut m[r]),
            Terms::Ints(m) => Terms::Ints(&mut m[r]),
        }
    }
}

/// [`repack_transposed`] and [`repack_transposed_int`].
fn transposed(
    src: Source<'_>,
    at: (usize, usize, usize),
    bufs: (&mut [Line], &mut [f32], Terms<'_>),
) -> bool {
    if !std::arch::is_x86_feature_detected!("avx2") || !std::arch::is_x86_feature_detected!("f16c")
    {
        return false;
    }
    let values = src.values();
    match src {
        // SAFETY: AVX2 and F16C were detected above.
        Source::Q8_0(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q4_0(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q4_1(w) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q5_0(w) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q5_1(w) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Iq4Nl(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q2K(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q3K(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Iq4Xs(w, _) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q4K(w) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q5K(w) => unsafe { strip_at(w, at, values, bufs) },
        // SAFETY: as above.
        Source::Q6K(w, _) => unsafe { strip_at(w, at, values, bufs) },
    }
    true
}

/// Strip `i` of `rows` rows of `nb` blocks of `w` into its own part of the
/// whole call's `lines`, scales and terms (sized by the block's runs and
/// sub-blocks), the next strip's rows hinted meanwhile.
#[target_feature(enable = "avx2,f16c")]
fn strip_at<B: Block32>(
    w: &[B],
    (rows, nb, i): (usize, usize, usize),
    values: Values,
    (lines, dw, terms): (&mut [Line], &mut [f32], Terms<'_>),
) {
    let (r0, r1) = (i * STRIP, rows.min(i * STRIP + STRIP));
    // The rows of the next strip (none after the last).
    let r2 = rows.min(r1 + STRIP);
    assert!(r0 < r1 && w.len() >= r2 * nb, "repack_transposed: rows");
    let (nrun, lpr) = (nb * B::SUBS, values.lines());
    let nsub = nrun * B::HALVES;
    let lines = &mut lines[i * nrun * lpr..(i + 1) * nrun * lpr];
    let scales = i * nsub * STRIP..(i + 1) * nsub * STRIP;
    let (dw, terms) = (&mut dw[scales.clone()], terms.slice(scales));
    let rows = (&w[r0 * nb..r1 * nb], &w[r1 * nb..r2 * nb]);
    strip(rows, nb, values, (lines, dw, terms));
}

/// A block type [`strip`] repacks: `SUBS` runs of 32 values, each its
/// values as bytes in element order and the scales and minimums' terms of
/// its one or two sub-blocks (as the type's generic unpacking computes
/// them: the same bits).
trait Block32 {
    /// Runs of 32 values per block: one unless said.
    const SUBS: usize = 1;

    /// Sub-blocks per run: one (of 32 values) unless said.
    const HALVES: usize = 1;

    /// The block's f16 scale (the whole block's, for the one-sub-block
    /// types).
    fn d(&self) -> half::f16;

    /// Sub-block `h` of run `j`: its scale and minimum's term (the block's
    /// scale and none unless said).
    ///
    /// # Safety
    /// The CPU must have F16C.
    #[inline(always)]
    unsafe fn scales(&self, _j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        (unsafe { f16_to_f32(self.d()) }, 0.0)
    }

    /// Sub-block `h` of run `j` for the integer-scale strips: the block's
    /// scale and the sub-block's integer scale (Q2_K, Q3_K and Q6_K only: no
    /// other type makes [`Terms::Ints`]).
    ///
    /// # Safety
    /// The CPU must have F16C.
    #[inline(always)]
    unsafe fn int_scales(&self, _j: usize, _h: usize) -> (f32, i8) {
        unreachable!("integer scales of a type without them")
    }

    /// Run `j`'s values.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    unsafe fn values(&self, j: usize) -> __m256i;
}

/// An f16 as f32 by one `vcvtph2ps` (`half`'s `to_f32` is a call per value
/// that checks the CPU: it was a fifth of a 16-token repack).
///
/// # Safety
/// The CPU must have F16C.
#[inline(always)]
unsafe fn f16_to_f32(h: half::f16) -> f32 {
    // SAFETY: F16C (this function's contract).
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits())))) }
}

/// 32 packed bytes' low (`high` false) or high nibbles.
///
/// # Safety
/// The CPU must have AVX2; `p` must be 32 readable bytes.
#[inline(always)]
unsafe fn nibbles32(p: *const u8, high: bool) -> __m256i {
    // SAFETY: AVX2 and 32 readable bytes (this function's contract); the
    // load is unaligned.
    unsafe {
        let x = _mm256_loadu_si256(p.cast());
        let x = if high { _mm256_srli_epi16(x, 4) } else { x };
        _mm256_and_si256(x, _mm256_set1_epi8(0x0f))
    }
}

impl Block32 for BlockQ8_0 {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// The 32 signed bytes.
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 32 readable
        // bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) }
    }
}

impl Block32 for BlockQ4_0 {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// The nibbles: the 16 packed bytes in both halves, the high half
    /// shifted down by four.
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 16 bytes.
        unsafe { nibbles16(self.qs.as_ptr()) }
    }
}

/// 16 packed bytes' nibbles in element order (the low nibbles, then the
/// high ones), as bytes.
///
/// # Safety
/// The CPU must have AVX2; `p` must be 16 readable bytes.
#[inline(always)]
unsafe fn nibbles16(p: *const u8) -> __m256i {
    // SAFETY: AVX2 and 16 readable bytes (this function's contract); the
    // load is unaligned.
    unsafe {
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
        let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
    }
}

/// 16 where bit `j` of the little-endian `qh` is set, at byte `j` (the
/// fifth bits of Q5_0 and Q5_1).
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: [u8; 4]) -> __m256i {
    // Byte j takes byte j / 8 of `qh` (a shuffle within each 128-bit half of
    // the broadcast word), then keeps its bit j % 8.
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(qh)), pick);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

impl Block32 for BlockQ4_1 {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q4_1_unsigned`: `d` and `m`.
    #[inline(always)]
    unsafe fn scales(&self, _j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        unsafe { (f16_to_f32(self.d), f16_to_f32(self.m)) }
    }

    /// The nibbles.
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 16 bytes.
        unsafe { nibbles16(self.qs.as_ptr()) }
    }
}

impl Block32 for BlockQ5_0 {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// The nibbles and the fifth bits.
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 16 bytes.
        unsafe { _mm256_or_si256(nibbles16(self.qs.as_ptr()), fifth_bits(self.qh)) }
    }
}

impl Block32 for BlockQ5_1 {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q5_1_unsigned`: `d` and `m`.
    #[inline(always)]
    unsafe fn scales(&self, _j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        unsafe { (f16_to_f32(self.d), f16_to_f32(self.m)) }
    }

    /// The nibbles and the fifth bits.
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 16 bytes.
        unsafe { _mm256_or_si256(nibbles16(self.qs.as_ptr()), fifth_bits(self.qh)) }
    }
}

impl Block32 for BlockIq4Nl {
    fn d(&self) -> half::f16 {
        self.d
    }

    /// The signed table values of the nibbles (the offset or the widening
    /// is the caller's).
    #[inline(always)]
    unsafe fn values(&self, _j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); `qs` is 16 bytes.
        unsafe { table_values(nibbles16(self.qs.as_ptr())) }
    }
}

/// Run `j`'s two-bit fields of the 32 `qs` bytes at `p` (Q2_K's and Q3_K's
/// low bits: bits `2(j % 4)..` of byte `l` of half `j / 4`).
///
/// # Safety
/// The CPU must have AVX2; `p` must be 32 readable bytes.
#[inline(always)]
unsafe fn two_bits(p: *const u8, j: usize) -> __m256i {
    // SAFETY: AVX2 and 32 readable bytes (this function's contract); the
    // load is unaligned.
    unsafe {
        let x = _mm256_loadu_si256(p.cast());
        let x = _mm256_srl_epi16(x, _mm_cvtsi32_si128(2 * (j % 4) as i32));
        _mm256_and_si256(x, _mm256_set1_epi8(3))
    }
}

/// `value` at byte `l` where bit `j` (< 8) of the 32 bytes at `p` is set,
/// else zero (Q3_K's third bits from `hmask`, Q5_K's fifth from `qh`).
///
/// # Safety
/// The CPU must have AVX2; `p` must be 32 readable bytes.
#[inline(always)]
unsafe fn bit_plane(p: *const u8, j: usize, value: i8) -> __m256i {
    // SAFETY: AVX2 and 32 readable bytes (this function's contract); the
    // load is unaligned.
    unsafe {
        let bit = _mm256_set1_epi8((1u8 << j) as i8);
        let set = _mm256_and_si256(_mm256_loadu_si256(p.cast()), bit);
        _mm256_and_si256(_mm256_cmpeq_epi8(set, bit), _mm256_set1_epi8(value))
    }
}

/// 32 bytes' table values (IQ4_NL's and IQ4_XS's `KVALUES`) of their
/// nibbles `q` (0..=15).
#[inline]
#[target_feature(enable = "avx2")]
fn table_values(q: __m256i) -> __m256i {
    // SAFETY: `KVALUES` is 16 readable bytes; the load is unaligned.
    let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) });
    _mm256_shuffle_epi8(table, q)
}

impl Block32 for BlockQ2K {
    const SUBS: usize = 8;
    const HALVES: usize = 2;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q2_k_unsigned`: `d·sc` and `−dmin·m`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, h: usize) -> (f32, f32) {
        let packed = self.scales[2 * j + h];
        // SAFETY: F16C (this function's contract).
        let (d, dmin) = unsafe { (f16_to_f32(self.d), f16_to_f32(self.dmin)) };
        (
            d * f32::from(packed & 0x0f),
            -(dmin * f32::from(packed >> 4)),
        )
    }

    /// As `q2_k_int`: `d` and `sc` (the minimums are the caller's).
    #[inline(always)]
    unsafe fn int_scales(&self, j: usize, h: usize) -> (f32, i8) {
        // SAFETY: F16C (this function's contract).
        let d = unsafe { f16_to_f32(self.d) };
        (d, (self.scales[2 * j + h] & 0x0f) as i8)
    }

    /// Run `j`: the two-bit fields.
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); bytes 32(j/4).. of the
        // 64-byte `qs` (j < 8): 32 readable bytes.
        unsafe { two_bits(self.qs[32 * (j / 4)..].as_ptr(), j) }
    }
}

/// Q3_K's sub-block scale `s` (−32..=31) from its packed twelve bytes, as
/// `BlockQ3K::scales` unpacks them.
fn q3_k_scale(packed: &[u8; 12], s: usize) -> i8 {
    let low = if s < 8 {
        packed[s] & 0x0f
    } else {
        packed[s - 8] >> 4
    };
    let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

impl Block32 for BlockQ3K {
    const SUBS: usize = 8;
    const HALVES: usize = 2;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q3_k_unsigned`: `d·sc`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        let d = unsafe { f16_to_f32(self.d) };
        (d * f32::from(q3_k_scale(&self.scales, 2 * j + h)), 0.0)
    }

    /// As `q3_k_int`: `d` and `sc`.
    #[inline(always)]
    unsafe fn int_scales(&self, j: usize, h: usize) -> (f32, i8) {
        // SAFETY: F16C (this function's contract).
        let d = unsafe { f16_to_f32(self.d) };
        (d, q3_k_scale(&self.scales, 2 * j + h))
    }

    /// Run `j`: `u = q + 4`, the two low bits plus 4 where bit `j` of
    /// `hmask[l]` is set.
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); bytes 32(j/4).. of the
        // 64-byte `qs` (j < 8) and the 32 bytes of `hmask`: readable; the
        // load is unaligned.
        unsafe {
            let low = two_bits(self.qs[32 * (j / 4)..].as_ptr(), j);
            _mm256_or_si256(low, bit_plane(self.hmask.as_ptr(), j, 4))
        }
    }
}

impl Block32 for BlockIq4Xs {
    const SUBS: usize = 8;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `iq4_xs_unsigned`: `d·ls`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        let d = unsafe { f16_to_f32(self.d) };
        (d * f32::from(self.scale(j)), 0.0)
    }

    /// Run `j`: the signed table values of the nibbles of `qs[16j..]` (the
    /// offset or the widening is the caller's).
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); bytes 16j.. of the
        // 128-byte `qs` (j < 8): 16 readable bytes.
        unsafe { table_values(nibbles16(self.qs[16 * j..].as_ptr())) }
    }
}

/// Sub-block `j`'s `d·sc` and `−dmin·m` of a Q4_K or Q5_K block (its
/// `d`, `dmin` and packed scales), as `q4_k_unsigned` computes them.
///
/// # Safety
/// The CPU must have F16C.
#[inline(always)]
unsafe fn k_scales(d: half::f16, dmin: half::f16, packed: &[u8; 12], j: usize) -> (f32, f32) {
    let (sc, m) = scale_min(j, packed);
    // SAFETY: F16C (this function's contract).
    let (d, dmin) = unsafe { (f16_to_f32(d), f16_to_f32(dmin)) };
    (d * f32::from(sc), -(dmin * f32::from(m)))
}

impl Block32 for BlockQ4K {
    const SUBS: usize = 8;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q4_k_unsigned`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        unsafe { k_scales(self.d, self.dmin, &self.scales, j) }
    }

    /// Sub-block `j`: the low (even `j`) or high nibbles of 32 bytes.
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); bytes 32(j/2).. of the
        // 128-byte `qs` (j < 8): 32 readable bytes.
        unsafe { nibbles32(self.qs[32 * (j / 2)..].as_ptr(), j % 2 == 1) }
    }
}

impl Block32 for BlockQ5K {
    const SUBS: usize = 8;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q5_k_unsigned`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, _h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        unsafe { k_scales(self.d, self.dmin, &self.scales, j) }
    }

    /// Sub-block `j`: Q4_K's nibbles plus bit `j` of `qh[l]` as the fifth.
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        // SAFETY: AVX2 (this function's contract); bytes 32(j/2).. of the
        // 128-byte `qs` (j < 8) and the 32 bytes of `qh`: readable; the load
        // is unaligned.
        unsafe {
            let low = nibbles32(self.qs[32 * (j / 2)..].as_ptr(), j % 2 == 1);
            _mm256_or_si256(low, bit_plane(self.qh.as_ptr(), j, 16))
        }
    }
}

impl Block32 for BlockQ6K {
    const SUBS: usize = 8;
    const HALVES: usize = 2;

    fn d(&self) -> half::f16 {
        self.d
    }

    /// As `q6_k_unsigned`: `d·sc`.
    #[inline(always)]
    unsafe fn scales(&self, j: usize, h: usize) -> (f32, f32) {
        // SAFETY: F16C (this function's contract).
        let d = unsafe { f16_to_f32(self.d) };
        (d * f32::from(self.scales[2 * j + h]), 0.0)
    }

    /// As `q6_k_int`: `d` and `sc`.
    #[inline(always)]
    unsafe fn int_scales(&self, j: usize, h: usize) -> (f32, i8) {
        // SAFETY: F16C (this function's contract).
        (unsafe { f16_to_f32(self.d) }, self.scales[2 * j + h])
    }

    /// Run `j` (elements `32j..`): quarter `j % 4` of half `j / 4`, the
    /// low (quarters 0, 1) or high nibbles of 32 `ql` bytes and bits
    /// `2(j % 4)..` of the half's 32 `qh` bytes as the fifth and sixth.
    #[inline(always)]
    unsafe fn values(&self, j: usize) -> __m256i {
        let (half, k) = (j / 4, j % 4);
        // SAFETY: AVX2 (this function's contract); bytes 64·half + 32(k % 2)
        // .. + 32 of the 128-byte `ql` and 32·half .. + 32 of the 64-byte
        // `qh` (j < 8): readable; the loads are unaligned.
        unsafe {
            let low = nibbles32(self.ql[64 * half + 32 * (k % 2)..].as_ptr(), k >= 2);
            let qh = _mm256_loadu_si256(self.qh[32 * half..].as_ptr().cast());
            let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32));
            let high = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(3)), 4);
            _mm256_or_si256(low, high)
        }
    }
}

/// [`repack_transposed`] of the strip's rows `w` (`nb` blocks each, at most
/// 16 rows) into the strip's own lines, scales and minimums; `next`, the
/// next strip's rows, is hinted into L2 meanwhile.
///
/// The repack reads its sixteen rows side by side, one block of each per
/// step: sixteen short streams (a 355M row is 1 or 4 KiB) that the
/// per-row hints ahead only partly cover, and a 16-token product of the
/// AVX-512 strips waits on these reads for about half its time. So each
/// step also hints its share of the next strip's bytes (a contiguous run)
/// into L2, the whole strip over the current one: 355M and 124M Q8_0 and
/// the 124M Q4_K_M mix, native, pp16 1.05–1.10×, pp32 1.03–1.10×, pp128
/// 1.02–1.03×; AVX2 (its products the larger share) 0.98–1.02×. Hinted
/// per run of 32 values rather than per block (a K-quant block is 144–210
/// bytes a row, so a block's share came as bursts of 50 hints that
/// stalled): 355M Q6_K mix pp16 1.05–1.08×, pp32 1.07–1.11×.
#[target_feature(enable = "avx2,f16c")]
fn strip<B: Block32>(
    (w, next): (&[B], &[B]),
    nb: usize,
    values: Values,
    (lines, dw, mut terms): (&mut [Line], &mut [f32], Terms<'_>),
) {
    let n = w.len() / nb;
    let (lps, nrun) = (values.lines(), nb * B::SUBS);
    assert!(n <= STRIP && w.len() == n * nb && lines.len() == nrun * lps);
    let n_terms = match &terms {
        Terms::Mins(m) => m.len(),
        Terms::Ints(m) => m.len(),
    };
    assert!(dw.len() == nrun * B::HALVES * STRIP && n_terms == dw.len());
    let (flip, eight) = (_mm256_set1_epi8(i8::MIN), _mm256_set1_epi8(8));
    let next_bytes = std::mem::size_of_val(next);
    for b in 0..nb {
        for j in 0..B::SUBS {
            let q = b * B::SUBS + j;
            if let Some(first) = next.first() {
                // Lines `q/nrun..(q+1)/nrun` of the way through the next
                // strip.
                let (s0, s1) = (q * next_bytes / nrun, (q + 1) * next_bytes / nrun);
                for at in (s0 & !63..s1).step_by(64) {
                    prefetch::l2_at(first, at);
                }
            }
            for h in 0..STRIP / 8 {
                // Rows past the strip's last leave zeros (padding rows:
                // their scales are zero and their sums never stored).
                let mut r = [_mm256_setzero_si256(); 8];
                for (k, v) in r.iter_mut().enumerate() {
                    if 8 * h + k < n {
                        let blk = &w[(8 * h + k) * nb + b];
                        if j == 0 {
                            prefetch::stream(blk);
                        }
                        // SAFETY: AVX2 is enabled here.
                        *v = unsafe { blk.values(j) };
                    }
                }
                if values.words() {
                    // Rows in the order 0, 1, 4, 5, 2, 3, 6, 7: each
                    // transposed line's low 128 bits then hold rows 0, 1,
                    // 4, 5 and its high ones rows 2, 3, 6, 7, each widened
                    // by one `vpmovsxbw` into a half line.
                    let r = [r[0], r[1], r[4], r[5], r[2], r[3], r[6], r[7]];
                    for (k, v) in transpose8(r).into_iter().enumerate() {
                        let lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
                        let hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v));
                        let dst = lines[(h * nrun + q) * HALF_LINES + k].0.as_mut_ptr();
                        // SAFETY: bytes 0..64 of a 64-byte line; the stores
                        // are unaligned.
                        unsafe {
                            _mm256_storeu_si256(dst.cast(), lo);
                            _mm256_storeu_si256(dst.add(32).cast(), hi);
                        }
                    }
                    continue;
                }
                let sub = &mut lines[q * lps..(q + 1) * lps];
                for (k, v) in transpose8(r).into_iter().enumerate() {
                    let v = match values {
                        Values::Q8Signed
                        | Values::Q4Unsigned
                        | Values::Q4KUnsigned
                        | Values::Q5KUnsigned
                        | Values::Q6KUnsigned
                        | Values::Q6KInt
                        | Values::Q41Unsigned
                        | Values::Q50Unsigned
                        | Values::Q51Unsigned
                        | Values::Q2KUnsigned
                        | Values::Q2KInt
                        | Values::Q3KUnsigned
                        | Values::Q3KInt => v,
                        Values::Q8Unsigned | Values::Iq4NlUnsigned | Values::Iq4XsUnsigned => {
                            _mm256_xor_si256(v, flip)
                        }
                        Values::Q4Signed => _mm256_sub_epi8(v, eight),
                        Values::Q8Words | Values::Iq4NlWords | Values::Iq4XsWords => {
                            unreachable!("above")
                        }
                    };
                    let dst = sub[k].0.as_mut_ptr();
                    // SAFETY: bytes `32h..32h + 32` (h < 2) of a 64-byte
                    // line: in bounds; the store is unaligned.
                    unsafe { _mm256_storeu_si256(dst.add(32 * h).cast(), v) };
                }
            }
            for row in 0..n {
                let blk = &w[row * nb + b];
                for half in 0..B::HALVES {
                    let at = (q * B::HALVES + half) * STRIP + row;
                    match &mut terms {
                        Terms::Mins(dm) => {
                            // SAFETY: F16C is enabled here.
                            (dw[at], dm[at]) = unsafe { blk.scales(j, half) };
                        }
                        Terms::Ints(isc) => {
                            // SAFETY: F16C is enabled here.
                            let (d, sc) = unsafe { blk.int_scales(j, half) };
                            (dw[at], isc[at]) = (d, pair_i16(i16::from(sc), i16::from(sc)));
                        }
                    }
                }
            }
        }
    }
}

/// The 8×8 transposition of 4-byte words: output `k` holds word `k` of
/// each input `j` at word `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    // Pairs of rows interleaved by words, then by word pairs: each 128-bit
    // lane then holds one column of four rows; the lanes are swapped last.
    let lo32 = |a, b| _mm256_unpacklo_epi32(a, b);
    let hi32 = |a, b| _mm256_unpackhi_epi32(a, b);
    let (t0, t1) = (lo32(r[0], r[1]), hi32(r[0], r[1]));
    let (t2, t3) = (lo32(r[2], r[3]), hi32(r[2], r[3]));
    let (t4, t5) = (lo32(r[4], r[5]), hi32(r[4], r[5]));
    let (t6, t7) = (lo32(r[6], r[7]), hi32(r[6], r[7]));
    let lo64 = |a, b| _mm256_unpacklo_epi64(a, b);
    let hi64 = |a, b| _mm256_unpackhi_epi64(a, b);
    // Columns (0|4), (1|5), (2|6), (3|7) of rows 0..4 and of rows 4..8.
    let (u0, u1, u2, u3) = (lo64(t0, t2), hi64(t0, t2), lo64(t1, t3), hi64(t1, t3));
    let (u4, u5, u6, u7) = (lo64(t4, t6), hi64(t4, t6), lo64(t5, t7), hi64(t5, t7));
    let low = |a, b| _mm256_permute2x128_si256::<0x20>(a, b);
    let high = |a, b| _mm256_permute2x128_si256::<0x31>(a, b);
    [
        low(u0, u4),
        low(u1, u5),
        low(u2, u6),
        low(u3, u7),
        high(u0, u4),
        high(u1, u5),
        high(u2, u6),
        high(u3, u7),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Pod;
    use crate::quant::types::QuantBlock;
    use crate::quant::types::testkit::{Rng, random_blocks, typical_scale};
    use crate::quant::x86::strip_words::repack_strip_words;
    use crate::quant::x86::strips::{
        iq4_nl_signed, iq4_nl_unsigned, iq4_xs_signed, iq4_xs_unsigned, q2_k_int, q2_k_unsigned,
        q3_k_int, q3_k_unsigned, q4_0_signed, q4_0_unsigned, q4_1_unsigned, q4_k_unsigned,
        q5_0_unsigned, q5_1_unsigned, q5_k_unsigned, q6_k_int, q6_k_unsigned, q8_0_signed,
        q8_0_unsigned, repack_strip, repack_strip_int,
    };

    /// `n` blocks of random bytes (every value and packed scale byte) with
    /// finite f16 scales.
    fn blocks<B: QuantBlock + Pod>(n: usize, seed: u64) -> Vec<B> {
        random_blocks(B::TYPE, n, &mut Rng(seed), typical_scale)
    }

    /// The bytes of `lines` that belong to the strips' rows below `rows`:
    /// padding rows hold whatever each walk left.
    fn kept_bytes(lines: &[Line], values: Values, rows: usize, nsub: usize) -> Vec<u8> {
        let lps = values.lines();
        let mut out = Vec::new();
        for (li, line) in lines.iter().enumerate() {
            let strip = li / (nsub * lps);
            for (byte, &v) in line.0.iter().enumerate() {
                let row = if values.words() {
                    // Half 0's lines of every run, then half 1's; rows 0,
                    // 1, 4, 5 in the first 32 bytes, 2, 3, 6, 7 in the last.
                    let h = (li % (nsub * lps)) / (nsub * lps / 2);
                    let (reg, slot) = (byte / 32, (byte % 32) / 8);
                    8 * h + 4 * (slot / 2) + 2 * reg + slot % 2
                } else {
                    byte / 4
                };
                if strip * STRIP + row < rows {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The generic walk's lines, scales and minimums of `rows` rows of `nb`
    /// blocks, into buffers of the given sizes.
    type Bufs = (Vec<Line>, Vec<f32>, Vec<f32>);

    fn buffers(n_lines: usize, n_scales: usize, fill: u8) -> Bufs {
        let f = f32::from(fill);
        (
            vec![Line([fill; 64]); n_lines],
            vec![f; n_scales],
            vec![f; n_scales],
        )
    }

    #[test]
    fn the_transposing_repack_equals_the_generic_walk() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this CPU has no AVX2 (the transposing repack does not run)");
            return;
        }
        let all = [
            Values::Q8Signed,
            Values::Q8Unsigned,
            Values::Q8Words,
            Values::Iq4NlWords,
            Values::Iq4XsWords,
            Values::Q4Unsigned,
            Values::Q4Signed,
            Values::Q41Unsigned,
            Values::Q50Unsigned,
            Values::Q51Unsigned,
            Values::Iq4NlUnsigned,
            Values::Q2KUnsigned,
            Values::Q2KInt,
            Values::Q3KUnsigned,
            Values::Q3KInt,
            Values::Iq4XsUnsigned,
            Values::Q4KUnsigned,
            Values::Q5KUnsigned,
            Values::Q6KUnsigned,
            Values::Q6KInt,
        ];
        for (rows, nb) in [(1, 1), (7, 3), (16, 1), (17, 2), (33, 5), (48, 24), (9, 96)] {
            let seed = (rows * 100 + nb) as u64;
            let n = rows * nb;
            let (w8, w4, w41) = (blocks(n, seed), blocks(n, seed + 1), blocks(n, seed + 2));
            let (w50, w51, wnl) = (
                blocks(n, seed + 3),
                blocks(n, seed + 4),
                blocks(n, seed + 5),
            );
            let (w2, w3, wk) = (
                blocks(n, seed + 6),
                blocks(n, seed + 7),
                blocks(n, seed + 8),
            );
            let (w5, w6, wxs) = (
                blocks(n, seed + 9),
                blocks(n, seed + 10),
                blocks(n, seed + 11),
            );
            for values in all {
                let strips = rows.div_ceil(STRIP);
                // Runs of 32 values per block and sub-blocks per run.
                let (runs, spr) = match values {
                    Values::Q4KUnsigned
                    | Values::Q5KUnsigned
                    | Values::Iq4XsUnsigned
                    | Values::Iq4XsWords => (8, 1),
                    Values::Q6KUnsigned
                    | Values::Q6KInt
                    | Values::Q2KUnsigned
                    | Values::Q2KInt
                    | Values::Q3KUnsigned
                    | Values::Q3KInt => (8, 2),
                    _ => (1, 1),
                };
                let (nrun, nsub) = (nb * runs, nb * runs * spr);
                let (n_lines, n_scales) = (strips * nrun * values.lines(), strips * nsub * STRIP);
                let (mut fl, mut fd, mut fm) = buffers(n_lines, n_scales, 0xa5);
                let (mut gl, mut gd, mut gm) = buffers(n_lines, n_scales, 0x5a);
                let (mut fi, mut gi) = (vec![0x5a5a; n_scales], vec![-1; n_scales]);
                let src = match values {
                    v if v.is_q8_0() => Source::Q8_0(&w8, values),
                    v if v.is_q4_0() => Source::Q4_0(&w4, values),
                    Values::Q41Unsigned => Source::Q4_1(&w41),
                    Values::Q50Unsigned => Source::Q5_0(&w50),
                    Values::Q51Unsigned => Source::Q5_1(&w51),
                    Values::Iq4NlUnsigned | Values::Iq4NlWords => Source::Iq4Nl(&wnl, values),
                    Values::Q2KUnsigned | Values::Q2KInt => Source::Q2K(&w2, values),
                    Values::Q3KUnsigned | Values::Q3KInt => Source::Q3K(&w3, values),
                    Values::Iq4XsUnsigned | Values::Iq4XsWords => Source::Iq4Xs(&wxs, values),
                    Values::Q4KUnsigned => Source::Q4K(&wk),
                    Values::Q5KUnsigned => Source::Q5K(&w5),
                    _ => Source::Q6K(&w6, values),
                };
                for i in 0..strips {
                    if values.int_scales() {
                        let at = (rows, nb, i);
                        let fast = (&mut fl[..], &mut fd[..], &mut fi[..]);
                        assert!(repack_transposed_int(src, at, fast));
                        let g = (&mut gl[..], &mut gd[..], &mut gi[..]);
                        match values {
                            Values::Q6KInt => repack_strip_int(&w6, at, q6_k_int, g),
                            Values::Q3KInt => repack_strip_int(&w3, at, q3_k_int, g),
                            _ => repack_strip_int(&w2, at, q2_k_int, g),
                        }
                        continue;
                    }
                    let fast = (&mut fl[..], &mut fd[..], &mut fm[..]);
                    assert!(repack_transposed(src, (rows, nb, i), fast));
                    let g = (&mut gl[..], &mut gd[..], &mut gm[..]);
                    let at = (rows, nb, i);
                    match values {
                        Values::Q8Signed => repack_strip::<_, 32, 1>(&w8, at, q8_0_signed, g),
                        Values::Q8Unsigned => repack_strip::<_, 32, 1>(&w8, at, q8_0_unsigned, g),
                        Values::Q8Words => repack_strip_words(&w8, at, q8_0_signed, g),
                        Values::Iq4NlWords => repack_strip_words(&wnl, at, iq4_nl_signed, g),
                        Values::Iq4XsWords => repack_strip_words(&wxs, at, iq4_xs_signed, g),
                        Values::Q4Unsigned => repack_strip::<_, 32, 1>(&w4, at, q4_0_unsigned, g),
                        Values::Q4Signed => repack_strip::<_, 32, 1>(&w4, at, q4_0_signed, g),
                        Values::Q41Unsigned => repack_strip::<_, 32, 1>(&w41, at, q4_1_unsigned, g),
                        Values::Q50Unsigned => repack_strip::<_, 32, 1>(&w50, at, q5_0_unsigned, g),
                        Values::Q51Unsigned => repack_strip::<_, 32, 1>(&w51, at, q5_1_unsigned, g),
                        Values::Iq4NlUnsigned => {
                            repack_strip::<_, 32, 1>(&wnl, at, iq4_nl_unsigned, g)
                        }
                        Values::Q2KUnsigned => repack_strip::<_, 16, 16>(&w2, at, q2_k_unsigned, g),
                        Values::Q3KUnsigned => repack_strip::<_, 16, 16>(&w3, at, q3_k_unsigned, g),
                        Values::Iq4XsUnsigned => {
                            repack_strip::<_, 32, 8>(&wxs, at, iq4_xs_unsigned, g)
                        }
                        Values::Q4KUnsigned => repack_strip::<_, 32, 8>(&wk, at, q4_k_unsigned, g),
                        Values::Q5KUnsigned => repack_strip::<_, 32, 8>(&w5, at, q5_k_unsigned, g),
                        Values::Q6KUnsigned => repack_strip::<_, 16, 16>(&w6, at, q6_k_unsigned, g),
                        Values::Q2KInt | Values::Q6KInt | Values::Q3KInt => unreachable!("above"),
                    }
                }
                let what = format!("{values:?}, {rows} rows of {nb} blocks");
                assert_eq!(
                    kept_bytes(&fl, values, rows, nrun),
                    kept_bytes(&gl, values, rows, nrun),
                    "lines: {what}"
                );
                for q in 0..strips * nsub {
                    for n in 0..STRIP.min(rows - q / nsub * STRIP) {
                        let at = q * STRIP + n;
                        assert_eq!(fd[at].to_bits(), gd[at].to_bits(), "scales: {what}");
                        if values.int_scales() {
                            assert_eq!(fi[at], gi[at], "integer scales: {what}");
                        } else {
                            assert_eq!(fm[at].to_bits(), gm[at].to_bits(), "minimums: {what}");
                        }
                    }
                }
            }
        }
    }
}
