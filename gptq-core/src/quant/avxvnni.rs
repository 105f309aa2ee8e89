//! The `avxvnni` path: the AVX2 table with prompts in strips summed by the
//! VEX-encoded `vpdpbusd` (AVX-VNNI: Intel's client cores since Alder Lake,
//! which have no AVX-512). One instruction adds four
//! unsigned-by-signed products per lane, so a line of eight rows by one
//! token is one `vpdpbusd`, where the AVX2 strips spend `maddubs` and a
//! widening `madd` (and for the signed types the sign trick's `vpsignb`,
//! `maddubs`, `madd` and an add).
//!
//! The strips are the AVX-512 ones (`avx512::strip`) at half the width: the
//! same repack (values as unsigned bytes `u = w + off`, the offset's
//! `off·Σa` from the activations' records), eight rows per register, the
//! same float order per output, so the same bits as the AVX-512 strips (a
//! test checks it where both run). They take the 32-value types (Q8_0, Q4_0,
//! Q4_1, Q5_0, Q5_1, IQ4_NL), Q4_K and Q5_K. Everything else is the AVX2
//! table's: decode, the products of fewer tokens than the strips take, and
//! Q2_K, Q3_K, Q6_K and IQ4_XS: with those four on AVX-VNNI strips too (the
//! AVX-512 layout) the 124M Q4_K_M mix (whose `output.weight` and part of
//! `ffn_down` are Q6_K) ran pp512 1.14–1.23× but pp32 0.77–0.91× the AVX2
//! table, whose integer strips for them are cheaper to repack; without them
//! pp32 1.03–1.06×, pp512 1.09–1.17×.
//! A path of its own, not a variant of `avx2`: `GPTQ_KERNEL=avx2` keeps
//! meaning a CPU with AVX2 alone.

use std::arch::x86_64::*;

use super::avx2;
use super::avx2::strip::{TG_Q4, walk_halves};
use super::tile::{OutTile, QuantActs};
use super::types::{
    BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ8_0, BlockQ8K,
};
use super::x86::driver::prefill_entry;
use super::x86::strips::{
    STRIP, Strip, SubActs, Unpack, chunk_tokens, iq4_nl_unsigned, q4_0_unsigned, q4_1_unsigned,
    q4_k_unsigned, q5_0_unsigned, q5_1_unsigned, q5_k_unsigned, q8_0_unsigned, rec_words,
    with_strips,
};

/// Rows per register: half a strip.
const HALF: usize = 8;

/// Tokens per pass over half a strip: four dot chains, four accumulators,
/// four lines and the temporaries fit the sixteen registers (the AVX2
/// strips' walk, [`walk_halves`], takes up to that many).
const TG: usize = TG_Q4;

/// Lines a pass holds for every token of the group.
const PASS_LINES: usize = 4;

/// The strips' product (`S` sub-blocks of `V` values per block, `L = V / 4`
/// lines each), as `avx512::strip`'s.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn gemm_strips<
    W: 'static,
    A: SubActs,
    const V: usize,
    const S: usize,
    const L: usize,
    const MIN: bool,
>(
    w: &[W],
    off: i32,
    unpack: impl Unpack<W, V, S> + 'static,
    a: &QuantActs<'_, A>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    assert!(L * 4 == V && V * S == A::VALUES && L.is_multiple_of(PASS_LINES));
    let nsub = nb * S;
    with_strips::<_, V, S, _>(w, rows, nb, unpack, |s| {
        s.pack_acts::<A, V>(a, off, TG);
        let acts = s.packed_acts();
        let chunk = chunk_tokens(nsub * rec_words(V) * 4, TG);
        let strip = |i: usize| s.strip(i, nsub, L);
        walk_halves(rows, n_tok, chunk, out, strip, |st, h, t, t1| {
            let mut sums = [_mm256_setzero_ps(); TG];
            if t + TG <= t1 {
                sums = half_tokens::<TG, L, MIN>(st, h, acts.tokens::<TG>(t), nsub);
                (sums, TG)
            } else {
                [sums[0]] = half_tokens::<1, L, MIN>(st, h, acts.tokens::<1>(t), nsub);
                (sums, 1)
            }
        });
    })
}

/// Tokens `t..t + T` times half `h` of one strip over every sub-block, from
/// their packed records `recs`: register `j` holds token `t + j`'s eight
/// row sums, accumulated as `avx512::strip` accumulates them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn half_tokens<const T: usize, const L: usize, const MIN: bool>(
    st: &Strip<'_>,
    h: usize,
    recs: &[u32],
    nsub: usize,
) -> [__m256; T] {
    // A record: L words of values, the correction, the scale, the minimum
    // factor, padding.
    let rec = rec_words(4 * L);
    assert!(st.lines.len() == nsub * L && st.dw.len() == nsub * STRIP && h < 2);
    assert!(st.dm.len() == nsub * STRIP && recs.len() == nsub * T * rec);
    let mut acc = [_mm256_setzero_ps(); T];
    for q in 0..nsub {
        let lines = &st.lines[q * L..(q + 1) * L];
        let group = &recs[q * T * rec..(q + 1) * T * rec];
        let mut d: [__m256i; T] =
            std::array::from_fn(|j| _mm256_set1_epi32(group[j * rec + L] as i32));
        for g in (0..L).step_by(PASS_LINES) {
            let wl: [__m256i; PASS_LINES] = std::array::from_fn(|k| {
                // SAFETY: bytes 32h..32h + 32 of a 64-byte line aligned to
                // 64 (h < 2), so 32 readable bytes aligned to 32.
                unsafe { _mm256_load_si256(lines[g + k].0.as_ptr().add(HALF * 4 * h).cast()) }
            });
            for (j, d) in d.iter_mut().enumerate() {
                for (k, l) in wl.iter().enumerate() {
                    let x = _mm256_set1_epi32(group[j * rec + g + k] as i32);
                    *d = _mm256_dpbusd_avx_epi32(*d, *l, x);
                }
            }
        }
        // SAFETY: `dw` and `dm` hold 16 floats for sub-block `q` (asserted
        // above); the half's eight start at 8h; the loads are unaligned.
        let (wd, wm) = unsafe {
            (
                _mm256_loadu_ps(st.dw.as_ptr().add(q * STRIP + HALF * h)),
                _mm256_loadu_ps(st.dm.as_ptr().add(q * STRIP + HALF * h)),
            )
        };
        for (j, (acc, d)) in acc.iter_mut().zip(d).enumerate() {
            let r = &group[j * rec..(j + 1) * rec];
            let (da, dasa) = (f32::from_bits(r[L + 1]), f32::from_bits(r[L + 2]));
            let scale = _mm256_mul_ps(wd, _mm256_set1_ps(da));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, *acc);
            if MIN {
                *acc = _mm256_fmadd_ps(wm, _mm256_set1_ps(dasa), *acc);
            }
        }
    }
    acc
}

macro_rules! strip_entry {
    ($name:ident, $blk:ty, $act:ty, $v:expr, $s:expr, $off:expr, $unpack:ident, $min:expr) => {
        #[doc = concat!(
                                            stringify!($blk), " weights times ", stringify!($act),
                                            " activations in strips, on AVX-VNNI."
                                        )]
        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        fn $name(w: &[$blk], a: &QuantActs<'_, $act>, out: &mut OutTile<'_>) {
            gemm_strips::<_, _, $v, $s, { $v / 4 }, $min>(w, $off, $unpack, a, out)
        }
    };
}

strip_entry!(
    strip_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    32,
    1,
    128,
    q8_0_unsigned,
    false
);
strip_entry!(
    strip_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    32,
    1,
    8,
    q4_0_unsigned,
    false
);
strip_entry!(
    strip_q4_1,
    BlockQ4_1,
    BlockQ8_0,
    32,
    1,
    0,
    q4_1_unsigned,
    true
);
strip_entry!(
    strip_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    32,
    1,
    16,
    q5_0_unsigned,
    false
);
strip_entry!(
    strip_q5_1,
    BlockQ5_1,
    BlockQ8_0,
    32,
    1,
    0,
    q5_1_unsigned,
    true
);
strip_entry!(
    strip_iq4_nl,
    BlockIq4Nl,
    BlockQ8_0,
    32,
    1,
    128,
    iq4_nl_unsigned,
    false
);

strip_entry!(
    strip_q4_k,
    BlockQ4K,
    BlockQ8K,
    32,
    8,
    0,
    q4_k_unsigned,
    true
);
strip_entry!(
    strip_q5_k,
    BlockQ5K,
    BlockQ8K,
    32,
    8,
    0,
    q5_k_unsigned,
    true
);

// The table's prefill entries: the strips from the AVX2 table's thresholds
// (the same repacks as the AVX-512 strips, which use them too), the AVX2
// table's smaller kernels below.
macro_rules! entries {
    ($($use:ident, $name:ident, $blk:ty, $act:ty, $strip:ident, $small:path;)*) => {$(
        prefill_entry!(
            "avx2,fma,f16c,avxvnni", $use, $name, $blk, $act, $strip, $small
        );
    )*};
}

entries! {
    use_strips_transposed, prefill_q8_0, BlockQ8_0, BlockQ8_0, strip_q8_0, avx2::gemv_q8_0::gemv_q8_0;
    use_strips_transposed, prefill_q4_0, BlockQ4_0, BlockQ8_0, strip_q4_0, avx2::gemv::gemv_q4_0;
    use_strips_few, prefill_q4_1, BlockQ4_1, BlockQ8_0, strip_q4_1, avx2::gemv::gemv_q4_1;
    use_strips_few, prefill_q5_0, BlockQ5_0, BlockQ8_0, strip_q5_0, avx2::gemv::gemv_q5_0;
    use_strips_few, prefill_q5_1, BlockQ5_1, BlockQ8_0, strip_q5_1, avx2::gemv::gemv_q5_1;
    use_strips_few, prefill_iq4_nl, BlockIq4Nl, BlockQ8_0, strip_iq4_nl, avx2::gemv::gemv_iq4_nl;
    use_strips_transposed, prefill_q4_k, BlockQ4K, BlockQ8K, strip_q4_k, avx2::blocks::gemm_q4_k;
    use_strips_transposed, prefill_q5_k, BlockQ5K, BlockQ8K, strip_q5_k, avx2::blocks::gemm_q5_k;
}
