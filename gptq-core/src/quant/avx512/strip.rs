//! Prefill products of the AVX-512 VNNI tables with the weight rows in the
//! vector lanes: sixteen rows per register ("strip"), so that one `vpdpbusd`
//! multiplies four values of all sixteen rows by four values of one token,
//! broadcast from memory.
//!
//! The register tiles of `avx512` put a block's 32 values across the lanes;
//! every (row, token) pair then pays its own integer-to-float conversion,
//! scale product and FMA for two blocks, about four vector µops for 64
//! products. Here the lanes are rows: a block's eight `vpdpbusd` (one per four
//! values) leave each row's exact integer dot in its own lane, and one
//! conversion, one scale product and one FMA serve sixteen rows: eleven µops
//! for 512 products, and no horizontal sum at the end.
//!
//! That needs the weights in strip order, which the file does not have: per
//! kernel call the rows are repacked into a per-thread buffer
//! (`x86::strips`: for each block eight 64-byte lines of 16 rows × 4 bytes,
//! the layout the AMX tile unit reads, here as unsigned bytes `u = w + off`),
//! with f32 scales beside. The repack costs one pass over the call's weights,
//! shared by every token, so the tables use it from [`MIN_TOKENS`] tokens on
//! (prompts, perplexity), and the register tiles below that. The mmap itself
//! is never copied whole.
//!
//! The activations are packed per call into records (`x86::strips::
//! PackedActs`: a sub-block's values, its correction and scales together,
//! the tokens of a group of [`TG`] interleaved), so that every operand of
//! the inner loop is a memory operand at a constant offset from one
//! pointer; the eight tokens' dot chains run interleaved, four values of
//! every token per weight line. (Read from the activation rows and three
//! token-major arrays, the loop spent more instructions on indices and
//! bounds checks than on products: 124M Q8_0 pp128 1.12–1.23× with the
//! records.)
//!
//! Each (row, token) output is `Σ_b (Σ u·a − off·Σa)·(d_w·d_a)` accumulated
//! block by block in one f32 lane: exactly the AMX kernel's order, so on a CPU
//! with AMX both give the same bits (a test checks it).

use std::arch::x86_64::*;

use super::super::tile::{OutTile, QuantActs};
use super::super::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K,
};
use super::super::x86::strips::{
    PackedActs, STRIP, Strip, SubActs, Unpack, chunk_tokens, iq4_nl_unsigned, iq4_xs_unsigned,
    q2_k_unsigned, q3_k_unsigned, q4_0_unsigned, q4_1_unsigned, q4_k_unsigned, q5_0_unsigned,
    q5_1_unsigned, q5_k_unsigned, q6_k_unsigned, q8_0_unsigned, rec_words, store_sums16,
    with_strips,
};

#[cfg(doc)]
use super::super::x86::strips::MIN_TOKENS;

/// Tokens that share each pass over a strip's weights: eight dot chains,
/// eight accumulators, the block's eight lines and its scales fit the 32
/// registers.
const TG: usize = 8;

/// `y[t][r] = Σ_q d_w[r][q]·d_a[t][q]·Σ_k w[r][q][k]·a[t][q][k]` over the
/// sub-blocks `q` (`S` of `V` values per block, `L = V / 4` lines each) with
/// the rows in the lanes; `MIN`: each sub-block adds its weight term times
/// `d_a·Σa` (Q4_1, Q5_1, the K-quants with minimums).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    assert!(L * 4 == V && V * S == A::VALUES);
    let nsub = nb * S;
    with_strips::<_, V, S, _>(w, rows, nb, unpack, |s| {
        s.pack_acts::<A, V>(a, off, TG);
        let acts = s.packed_acts();
        let chunk = chunk_tokens(nsub * rec_words(V) * 4, TG);
        for t0 in (0..n_tok).step_by(chunk) {
            let t1 = (t0 + chunk).min(n_tok);
            for strip in 0..rows.div_ceil(STRIP) {
                let st = s.strip(strip, nsub, L);
                strip_pass::<L, MIN>(&st, &acts, nsub, t0..t1, out, strip * STRIP);
            }
        }
    })
}

/// One strip (rows `r0..r0 + 16` of `out`, fewer at the end) times tokens
/// `t.start..t.end`: whole groups of [`TG`], then the rest one at a time,
/// each token's sixteen sums stored from their register straight into the
/// output (through a copy only for a last partial strip).
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn strip_pass<const L: usize, const MIN: bool>(
    st: &Strip<'_>,
    acts: &PackedActs<'_>,
    nsub: usize,
    t: std::ops::Range<usize>,
    out: &mut OutTile<'_>,
    r0: usize,
) {
    let nr = STRIP.min(out.rows() - r0);
    let mut store = |t: usize, v: __m512| store_sums16(out, t, r0, nr, v);
    let mut t0 = t.start;
    while t0 + TG <= t.end {
        let sums = strip_tokens::<TG, L, MIN>(st, acts.tokens::<TG>(t0), nsub);
        for (j, v) in sums.into_iter().enumerate() {
            store(t0 + j, v);
        }
        t0 += TG;
    }
    for t1 in t0..t.end {
        let [v] = strip_tokens::<1, L, MIN>(st, acts.tokens::<1>(t1), nsub);
        store(t1, v);
    }
}

/// Tokens `t..t + T` times one strip over every sub-block (`L` lines each),
/// from their packed records `recs` (`nsub` sub-blocks, interleaved: see
/// `PackedActs`): register `j` holds token `t + j`'s sixteen row sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn strip_tokens<const T: usize, const L: usize, const MIN: bool>(
    st: &Strip<'_>,
    recs: &[u32],
    nsub: usize,
) -> [__m512; T] {
    // A record: L words of values, the correction, the scale, the minimum
    // factor, padding.
    let rec = rec_words(4 * L);
    assert!(st.lines.len() == nsub * L && st.dw.len() == nsub * STRIP);
    assert!(st.dm.len() == nsub * STRIP && recs.len() == nsub * T * rec);
    let mut acc = [_mm512_setzero_ps(); T];
    for q in 0..nsub {
        let lines = &st.lines[q * L..(q + 1) * L];
        let mut wl = [_mm512_setzero_si512(); L];
        for (v, line) in wl.iter_mut().zip(lines) {
            // SAFETY: a line is 64 readable bytes, aligned to 64.
            *v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        }
        // SAFETY: `dw` and `dm` hold 16 floats for sub-block `q` (asserted above).
        let (wd, wm) = unsafe {
            (
                _mm512_loadu_ps(st.dw.as_ptr().add(q * STRIP)),
                _mm512_loadu_ps(st.dm.as_ptr().add(q * STRIP)),
            )
        };
        // The sub-block's T records, one after the other.
        let group = &recs[q * T * rec..(q + 1) * T * rec];
        let mut d: [__m512i; T] =
            std::array::from_fn(|j| _mm512_set1_epi32(group[j * rec + L] as i32));
        for (k, l) in wl.iter().enumerate() {
            for (j, d) in d.iter_mut().enumerate() {
                *d = _mm512_dpbusd_epi32(*d, *l, _mm512_set1_epi32(group[j * rec + k] as i32));
            }
        }
        for (j, (acc, d)) in acc.iter_mut().zip(d).enumerate() {
            let r = &group[j * rec..(j + 1) * rec];
            let (da, dasa) = (f32::from_bits(r[L + 1]), f32::from_bits(r[L + 2]));
            let scale = _mm512_mul_ps(wd, _mm512_set1_ps(da));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, *acc);
            if MIN {
                *acc = _mm512_fmadd_ps(wm, _mm512_set1_ps(dasa), *acc);
            }
        }
    }
    acc
}

macro_rules! strip_entry {
    ($name:ident, $blk:ty, $act:ty, $v:expr, $s:expr, $off:expr, $unpack:ident, $min:expr) => {
        #[doc = concat!(
                            "", stringify!($blk), " weights times ", stringify!($act),
                            " activations in strips (prefill of at least [`MIN_TOKENS`] tokens)."
                        )]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_, $act>, out: &mut OutTile<'_>) {
            gemm_strips::<_, _, $v, $s, { $v / 4 }, $min>(w, $off, $unpack, a, out)
        }
    };
}

strip_entry!(
    gemm_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    32,
    1,
    128,
    q8_0_unsigned,
    false
);
strip_entry!(
    gemm_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    32,
    1,
    8,
    q4_0_unsigned,
    false
);
strip_entry!(
    gemm_q4_1,
    BlockQ4_1,
    BlockQ8_0,
    32,
    1,
    0,
    q4_1_unsigned,
    true
);
strip_entry!(
    gemm_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    32,
    1,
    16,
    q5_0_unsigned,
    false
);
strip_entry!(
    gemm_q5_1,
    BlockQ5_1,
    BlockQ8_0,
    32,
    1,
    0,
    q5_1_unsigned,
    true
);
strip_entry!(
    gemm_iq4_nl,
    BlockIq4Nl,
    BlockQ8_0,
    32,
    1,
    128,
    iq4_nl_unsigned,
    false
);
strip_entry!(
    gemm_q2_k,
    BlockQ2K,
    BlockQ8K,
    16,
    16,
    0,
    q2_k_unsigned,
    true
);
strip_entry!(
    gemm_q3_k,
    BlockQ3K,
    BlockQ8K,
    16,
    16,
    4,
    q3_k_unsigned,
    false
);
strip_entry!(gemm_q4_k, BlockQ4K, BlockQ8K, 32, 8, 0, q4_k_unsigned, true);
strip_entry!(gemm_q5_k, BlockQ5K, BlockQ8K, 32, 8, 0, q5_k_unsigned, true);
strip_entry!(
    gemm_q6_k,
    BlockQ6K,
    BlockQ8K,
    16,
    16,
    32,
    q6_k_unsigned,
    false
);
strip_entry!(
    gemm_iq4_xs,
    BlockIq4Xs,
    BlockQ8K,
    32,
    8,
    128,
    iq4_xs_unsigned,
    false
);
