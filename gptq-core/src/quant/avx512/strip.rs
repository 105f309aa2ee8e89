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
    Acts, STRIP, Strip, SubActs, TokenActs, Unpack, chunk_tokens, iq4_nl_unsigned, iq4_xs_unsigned,
    q2_k_unsigned, q3_k_unsigned, q4_0_unsigned, q4_1_unsigned, q4_k_unsigned, q5_0_unsigned,
    q5_1_unsigned, q5_k_unsigned, q6_k_unsigned, q8_0_unsigned, with_strips,
};

#[cfg(doc)]
use super::super::x86::strips::MIN_TOKENS;

/// Tokens that share each pass over a strip's weights: eight accumulators,
/// the block's eight lines and its scales fit the 32 registers.
const TG: usize = 8;

/// `y[t][r] = Σ_q d_w[r][q]·d_a[t][q]·Σ_k w[r][q][k]·a[t][q][k]` over the
/// sub-blocks `q` (`S` of `V` values per block, `L = V / 4` lines each) with
/// the rows in the lanes; `MIN`: each sub-block adds its weight term times
/// `d_a·Σa` (Q4_1, Q5_1, the K-quants with minimums).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_strips<W, A: SubActs, const V: usize, const S: usize, const L: usize, const MIN: bool>(
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
    with_strips(w, rows, nb, unpack, |s| {
        s.prepare_acts(a, V, off);
        let acts = s.acts(a, V);
        let mut res = [0.0f32; STRIP];
        let chunk = chunk_tokens(nb * std::mem::size_of::<A>(), TG);
        for t0 in (0..n_tok).step_by(chunk) {
            let t1 = (t0 + chunk).min(n_tok);
            for strip in 0..rows.div_ceil(STRIP) {
                let st = s.strip(strip, nsub, L);
                let (r0, nr) = (strip * STRIP, STRIP.min(rows - strip * STRIP));
                let mut t = t0;
                while t < t1 {
                    let (sums, n) = if t + TG <= t1 {
                        (strip_tokens::<A, TG, L, MIN>(&st, &acts, t), TG)
                    } else {
                        let [v] = strip_tokens::<A, 1, L, MIN>(&st, &acts, t);
                        let mut one = [_mm512_setzero_ps(); TG];
                        one[0] = v;
                        (one, 1)
                    };
                    for (j, v) in sums.iter().take(n).enumerate() {
                        // SAFETY: `res` is 16 writable f32; the store is unaligned.
                        unsafe { _mm512_storeu_ps(res.as_mut_ptr(), *v) };
                        out.set_run(t + j, r0, &res[..nr]);
                    }
                    t += n;
                }
            }
        }
    })
}

/// Tokens `t..t + T` times one strip over every sub-block (`L` lines each):
/// register `j` holds token `t + j`'s sixteen row sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn strip_tokens<A: SubActs, const T: usize, const L: usize, const MIN: bool>(
    st: &Strip<'_>,
    a: &Acts<'_, A>,
    t: usize,
) -> [__m512; T] {
    let nsub = a.nsub;
    assert!(st.lines.len() == nsub * L && st.dw.len() == nsub * STRIP);
    assert!(st.dm.len() == nsub * STRIP && A::VALUES.is_multiple_of(L * 4));
    let TokenActs {
        da,
        corr,
        dasa,
        base,
        row_bytes,
    } = a.tokens::<T>(t);
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
        let at = A::values_at(4 * L, q);
        assert!(at + 4 * L <= row_bytes);
        for (j, acc) in acc.iter_mut().enumerate() {
            let i = j * nsub + q;
            let mut d = _mm512_set1_epi32(corr[i]);
            for (k, l) in wl.iter().enumerate() {
                // SAFETY: `base[j]` is a row of `row_bytes` readable bytes and
                // `at + 4k + 4 <= at + 4L <= row_bytes` (k < L, asserted
                // above); the read is unaligned.
                let quad = unsafe { base[j].add(at + 4 * k).cast::<i32>().read_unaligned() };
                d = _mm512_dpbusd_epi32(d, *l, _mm512_set1_epi32(quad));
            }
            let scale = _mm512_mul_ps(wd, _mm512_set1_ps(da[i]));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, *acc);
            if MIN {
                *acc = _mm512_fmadd_ps(wm, _mm512_set1_ps(dasa[i]), *acc);
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
