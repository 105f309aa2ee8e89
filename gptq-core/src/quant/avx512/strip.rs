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
use super::super::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::super::x86::strips::{
    LINES, STRIP, Strip, Unpack, iq4_nl_unsigned, prepare_acts, q4_0_unsigned, q4_1_unsigned,
    q5_0_unsigned, q5_1_unsigned, q8_0_unsigned, repack, with_scratch,
};

pub(in crate::quant) use super::super::x86::strips::MIN_TOKENS;

/// Tokens that share each pass over a strip's weights: eight accumulators,
/// the block's eight lines and its scales fit the 32 registers.
const TG: usize = 8;

/// `y[t][r] = Σ_b d_w[r][b]·d_a[t][b]·Σ_k w[r][b][k]·a[t][b][k]` with the
/// rows in the lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_strips<W, const MIN: bool>(
    w: &[W],
    off: i32,
    unpack: Unpack<W>,
    a: &QuantActs<'_>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "strip gemm: weights too short");
    with_scratch(|s| {
        repack(w, rows, nb, unpack, s);
        prepare_acts(a, off, s);
        let acts = Acts {
            blocks: &a.blocks[..n_tok * nb],
            da: &s.da,
            corr: &s.corr,
            dasa: &s.dasa,
            nb,
        };
        let mut res = [0.0f32; STRIP];
        for strip in 0..rows.div_ceil(STRIP) {
            let st = s.strip(strip, nb);
            let (r0, nr) = (strip * STRIP, STRIP.min(rows - strip * STRIP));
            let mut t = 0;
            while t < n_tok {
                let (sums, n) = if t + TG <= n_tok {
                    (strip_tokens::<TG, MIN>(&st, &acts, t), TG)
                } else {
                    let [v] = strip_tokens::<1, MIN>(&st, &acts, t);
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
    })
}

/// The call's activations: blocks, their scales and offset corrections,
/// token-major.
struct Acts<'a> {
    blocks: &'a [BlockQ8_0],
    da: &'a [f32],
    corr: &'a [i32],
    dasa: &'a [f32],
    nb: usize,
}

/// Tokens `t..t + T` times one strip over every block: register `j` holds
/// token `t + j`'s sixteen row sums. `MIN`: the weights are `d·u + m` (Q4_1,
/// Q5_1), and each block adds `m·d_a·Σa` with one more FMA.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn strip_tokens<const T: usize, const MIN: bool>(
    st: &Strip<'_>,
    a: &Acts<'_>,
    t: usize,
) -> [__m512; T] {
    let nb = a.nb;
    assert!(st.lines.len() == nb * LINES && st.dw.len() == nb * STRIP);
    assert!(st.dm.len() == nb * STRIP);
    let (blocks, da, corr, dasa) = (
        &a.blocks[t * nb..(t + T) * nb],
        &a.da[t * nb..(t + T) * nb],
        &a.corr[t * nb..(t + T) * nb],
        &a.dasa[t * nb..(t + T) * nb],
    );
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let lines = &st.lines[b * LINES..(b + 1) * LINES];
        let mut wl = [_mm512_setzero_si512(); LINES];
        for (v, line) in wl.iter_mut().zip(lines) {
            // SAFETY: a line is 64 readable bytes, aligned to 64.
            *v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        }
        // SAFETY: `dw` and `dm` hold 16 floats for block `b` (asserted above).
        let (wd, wm) = unsafe {
            (
                _mm512_loadu_ps(st.dw.as_ptr().add(b * STRIP)),
                _mm512_loadu_ps(st.dm.as_ptr().add(b * STRIP)),
            )
        };
        for (j, acc) in acc.iter_mut().enumerate() {
            let i = j * nb + b;
            let q = blocks[i].qs.as_ptr();
            let mut d = _mm512_set1_epi32(corr[i]);
            for (k, l) in wl.iter().enumerate() {
                // SAFETY: `qs` is 32 readable bytes, so bytes 4k..4k + 4 are
                // (k < 8); the read is unaligned.
                let quad = unsafe { q.add(4 * k).cast::<i32>().read_unaligned() };
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
    ($name:ident, $blk:ty, $off:expr, $unpack:ident, $min:expr) => {
        #[doc = concat!(
            "", stringify!($blk), " weights times Q8_0 activations in strips (prefill of at ",
            "least [`MIN_TOKENS`] tokens)."
        )]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
            gemm_strips::<_, $min>(w, $off, $unpack, a, out)
        }
    };
}

strip_entry!(gemm_q8_0, BlockQ8_0, 128, q8_0_unsigned, false);
strip_entry!(gemm_q4_0, BlockQ4_0, 8, q4_0_unsigned, false);
strip_entry!(gemm_q4_1, BlockQ4_1, 0, q4_1_unsigned, true);
strip_entry!(gemm_q5_0, BlockQ5_0, 16, q5_0_unsigned, false);
strip_entry!(gemm_q5_1, BlockQ5_1, 0, q5_1_unsigned, true);
strip_entry!(gemm_iq4_nl, BlockIq4Nl, 128, iq4_nl_unsigned, false);
