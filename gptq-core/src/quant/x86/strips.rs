//! The strip layout the x86-64 prefill kernels with rows in the vector lanes
//! share (`avx512::strip`, `avx2::strip`): a call's weight rows repacked into
//! strips of 16 rows, each block as eight 64-byte lines of 16 rows × 4 bytes
//! (the layout the AMX tile unit reads), with the scales as f32 beside, and
//! the activations' scales and offset corrections as plain arrays. A 512-bit
//! register holds a whole line; a 256-bit register half of one (8 rows).
//!
//! Repacking is one pass over the call's weights, which every token of the
//! call shares: a generic walk with no `target_feature`, and for Q8_0 and
//! Q4_0 a transposition in AVX2 registers (`x86::transpose`).

use std::any::TypeId;
use std::cell::Cell;

use crate::gguf::{Pod, as_bytes};
use crate::quant::tile::{OutTile, QuantActs};
use crate::quant::types::iq4_nl::KVALUES;
use crate::quant::types::q4_k::scale_min;
use crate::quant::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, QK, QK_K,
};
use crate::quant::x86::repacked::with_repacked;
use crate::quant::x86::transpose::{Source, Values, repack_transposed, repack_transposed_int};

/// Weight rows per strip.
pub(in crate::quant) const STRIP: usize = 16;

/// A token count from which the products of every type run in strips on
/// every x86 table (the tests' prompts use it; every threshold below is
/// lower). It was the 32-value types' threshold while the repack was the
/// generic walk (a scalar pass over the call's weights, tens of cycles per
/// block and row): on the 124M shape (avx512+vbmi and AVX2 paths, Q8_0 and
/// Q4_0, against the register tiles) the strips were 0.6–0.9× at 8 and 16
/// tokens, even at 32, ahead at 64; the K-quants' was 40.
#[cfg_attr(not(test), allow(dead_code))]
pub(in crate::quant) const MIN_TOKENS: usize = 32;

/// Where the call's repack is kept (`--repack`, see `x86::repacked`), the
/// strips pay no repack and lead from fewer tokens. Measured on the 124M
/// shape, Q8_0, 2 threads (`gptq bench -p N -n 0 --repack`, strips from 8
/// tokens against the decode walk below 32, alternated): AVX-512 pp8
/// 0.93–1.03×, pp16 1.24×, pp25 1.39–1.54×; AVX2 pp8 0.86–0.91×, pp16
/// 1.07–1.15×, pp25 1.30–1.34×.
pub(in crate::quant) const MIN_TOKENS_KEPT: usize = 16;

/// Products of fewer tokens go through the path's smaller kernels (the decode
/// walk, the register tiles): the strips' repack per call, a transposition
/// in registers ([`repack_transposed`]) but still a pass over the call's
/// weights, costs more than it saves below this. For Q8_0, Q4_0, Q2_K,
/// Q3_K, Q4_K, Q5_K and Q6_K (the others: [`MIN_TOKENS_FEW`]). Measured
/// with `gptq bench -p N -n 0 -r 3`, 2 threads, strips from 16 (or 8, 12)
/// against the thresholds before (one build, the threshold from the
/// environment, alternated twice), 124M shape:
/// - Q8_0 (against 32, or 24 for VBMI): AVX2 pp16 1.04–1.33×, pp20
///   1.03–1.33×, pp24 1.10–1.28×, pp28 1.17–1.20× (from 8: pp8 0.78–0.89×,
///   pp12 0.84–1.19×), AVX-512 pp16 1.13–1.26×, pp20 1.26–1.35× (from 12:
///   pp12 0.98–1.02×);
/// - Q4_0 (against 32, or 24 for AVX2): AVX2 pp16 1.11–1.19×, pp20
///   1.18–1.25× (from 12: pp12 0.94–1.06×), AVX-512 pp16 1.01–1.08×, pp20
///   1.13–1.32×, pp24 1.32–1.44× (from 12: pp12 0.91–0.92×);
/// - Q4_K and Q5_K (Q4_K_M mix, against 40): AVX2 pp16 1.27×, pp24
///   1.42–1.46×, pp32 1.45–1.51×, AVX-512 1.17–1.24×, 1.41–1.45×,
///   1.56–1.58×; 355M AVX2 pp16 1.25–1.40×, pp24 1.32–1.63×, AVX-512
///   1.14–1.17×, 1.35–1.46× (from 8: AVX-512 pp8 0.80–0.85×, pp12
///   0.94–0.96×);
/// - Q6_K (Q6_K mix, from 8 against 40): AVX-512 pp16 1.06×, pp24
///   1.32–1.40×, pp32 1.42–1.67× (pp8 0.79–0.84×, pp12 0.90–0.92×); AVX2
///   pp16 1.04–1.18×, pp24 1.28–1.39×, pp32 1.44–1.51× (pp8 0.80×, pp12
///   0.88–1.08×);
/// - Q2_K (Q2_K mix, from 8 against 40): AVX-512 pp16 0.97–1.00×, pp24
///   1.19–1.22×, pp32 1.26–1.38× (pp8 0.74×, pp12 0.83×); AVX2 pp16
///   1.10–1.18×, pp24 1.18–1.37× (pp8 0.89–0.92×, pp12 1.05×);
/// - Q3_K (Q3_K_M mix, the same): AVX-512 pp16 1.04–1.05×, pp24
///   1.09–1.16×, pp32 1.25×; AVX2 pp16 1.10–1.12×, pp24 1.19–1.22× (pp12
///   0.86–0.96× on AVX-512).
///
/// (The AMX tile unit stays from 64: from 16 or 32 it was 0.85–1.1× at
/// pp24–pp48.)
pub(in crate::quant) const MIN_TOKENS_TRANSPOSED: usize = MIN_TOKENS_KEPT;

/// The same for Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS, whose smaller kernels
/// (the AVX2 decode walk, the AVX-512 register tiles) gain little from a
/// second token: measured on the 124M shape (Q4_1 mix, Q5_1, IQ4_NL and
/// IQ4_XS `--pure`, 2 threads, `gptq bench -p N -n 0 -r 3`, strips from 4,
/// 8 or 12 against from 32 (IQ4_XS: 40), one build, the threshold from the
/// environment, alternated twice): AVX-512 pp8 1.09–1.59×, pp12 1.27–1.78×,
/// pp16 1.47–2.23×, pp24 1.78–3.09×; AVX2 pp8 1.04–1.54×, pp12 1.16–1.83×,
/// pp16 1.24–2.11×, pp24 1.52–2.65×; pp6 1.04–1.42× on both, but pp4
/// 0.50–1.14×.
pub(in crate::quant) const MIN_TOKENS_FEW: usize = 8;

/// Whether a product of `n_tok` tokens of `w` (Q4_1, Q5_0, Q5_1, IQ4_NL or
/// IQ4_XS) runs in strips: from [`MIN_TOKENS_FEW`] tokens.
pub(in crate::quant) fn use_strips_few<W>(_w: &[W], n_tok: usize) -> bool {
    n_tok >= MIN_TOKENS_FEW
}

/// Whether a product of `n_tok` tokens of `w` (Q8_0, Q4_0, Q2_K, Q3_K, Q4_K,
/// Q5_K or Q6_K) runs in strips: from [`MIN_TOKENS_KEPT`] tokens where its
/// repack is kept, else from [`MIN_TOKENS_TRANSPOSED`].
pub(in crate::quant) fn use_strips_transposed<W>(w: &[W], n_tok: usize) -> bool {
    super::repacked::reaches(w, n_tok, MIN_TOKENS_KEPT, MIN_TOKENS_TRANSPOSED)
}

/// Activation bytes one chunk of tokens holds while every strip of the call
/// passes over it (a quarter of Zen 4's 1 MiB L2, an eighth of Intel's
/// 2 MiB): the strips' walk takes the tokens in chunks, the strips inside, so
/// the activations come from L2 and not from L3 for every strip (355M's
/// `ffn_down` at 512 tokens holds 2.2 MB of them).
const CHUNK_BYTES: usize = 256 * 1024;

/// Tokens per chunk of the strips' walk: whole groups of `group` tokens of
/// `token_bytes` each within [`CHUNK_BYTES`], at least one group.
pub(in crate::quant) fn chunk_tokens(token_bytes: usize, group: usize) -> usize {
    crate::quant::tile::tokens_within(CHUNK_BYTES, token_bytes, group)
}

/// Stores token `t`'s sums of rows `r0..r0 + nr` (`nr` ≤ 16) from their
/// register: a whole run straight into the output, a partial one (a last
/// strip) through a copy. (Every run through the copy was a `memmove` call
/// per token and strip, 4 % of a 128-token prompt.)
#[inline]
#[target_feature(enable = "avx512f")]
pub(in crate::quant) fn store_sums16(
    out: &mut OutTile<'_>,
    t: usize,
    r0: usize,
    nr: usize,
    v: std::arch::x86_64::__m512,
) {
    let mut res = [0.0f32; 16];
    let run = if nr == 16 {
        out.run_mut(t, r0, 16)
    } else {
        &mut res[..]
    };
    // SAFETY: `run` is 16 writable f32; the store is unaligned.
    unsafe { std::arch::x86_64::_mm512_storeu_ps(run.as_mut_ptr(), v) };
    if nr < 16 {
        out.set_run(t, r0, &res[..nr]);
    }
}

/// [`store_sums16`] for eight rows in an AVX register.
#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::quant) fn store_sums8(
    out: &mut OutTile<'_>,
    t: usize,
    r0: usize,
    nr: usize,
    v: std::arch::x86_64::__m256,
) {
    let mut res = [0.0f32; 8];
    let run = if nr == 8 {
        out.run_mut(t, r0, 8)
    } else {
        &mut res[..]
    };
    // SAFETY: `run` is 8 writable f32; the store is unaligned.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(run.as_mut_ptr(), v) };
    if nr < 8 {
        out.set_run(t, r0, &res[..nr]);
    }
}

/// One line of a strip: four weight bytes of each of 16 rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(in crate::quant) struct Line(pub(in crate::quant) [u8; 64]);

/// A thread's repacked weights and prepared activations, kept between calls
/// so that once grown to the largest product a call allocates nothing.
#[derive(Default)]
pub(in crate::quant) struct Scratch {
    /// `strips × nsub × lps` lines (`nsub` sub-blocks of `lps` lines per row):
    /// sub-block `q` of strip `s` at `(s·nsub + q)·lps`.
    pub(in crate::quant) lines: Vec<Line>,
    /// Weight scales, `strips × nsub × 16`, in the lines' order (zero for the
    /// padding rows of a last partial strip).
    pub(in crate::quant) dw: Vec<f32>,
    /// Weight minimums in the same order (Q4_1, Q5_1; zero for the others).
    pub(in crate::quant) dm: Vec<f32>,
    /// The integer strips' activation scales as f32, token-major
    /// ([`prepare_pair_acts`]).
    pub(in crate::quant) da: Vec<f32>,
    /// The integer strips' offset corrections, token-major.
    pub(in crate::quant) corr: Vec<i32>,
    /// The other strips' activations, packed into records
    /// ([`Scratch::pack_acts`]).
    recs: Vec<u32>,
    /// What `recs` hold (set by [`Scratch::pack_acts`]).
    packed: Option<Packing>,
    /// The integer sub-block scales of the 16-value K-quants without
    /// minimums (Q3_K, Q6_K) for the AVX2 kernel that sums a super-block in
    /// integers ([`repack_int`]): each scale in both i16 halves of an i32
    /// (a `madd` operand), in `dw`'s order.
    pub(in crate::quant) isc: Vec<i32>,
    /// Q2_K's sub-block minimums for the AVX2 integer-scale kernel, in i16
    /// pairs ([`repack_q2_k_int`]).
    pub(in crate::quant) imin: Vec<i32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const {
        Cell::new(Scratch {
            lines: Vec::new(),
            dw: Vec::new(),
            dm: Vec::new(),
            da: Vec::new(),
            corr: Vec::new(),
            recs: Vec::new(),
            packed: None,
            isc: Vec::new(),
            imin: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's scratch (taken for the call, put back after).
pub(in crate::quant) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    crate::quant::scratch::with_taken(&SCRATCH, f)
}

/// Runs `f` with this thread's scratch holding `rows` rows of `nb` blocks of
/// `w` repacked into strips by `unpack` ([`repack`]): kept between calls for
/// weights a model registered (`repacked`), else repacked now. The AVX2 and
/// AVX-512 strips' Q8_0 and Q4_0 repacks are never kept
/// ([`Values::worth_keeping`]).
pub(in crate::quant) fn with_strips<W: 'static, const V: usize, const S: usize, R>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl Unpack<W, V, S> + 'static,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    with_scratch(|s| {
        if transposable(w, &unpack).is_some_and(|src| !src.values().worth_keeping()) {
            repack::<W, V, S>(w, rows, nb, unpack, s);
            return f(s);
        }
        with_repacked(
            w,
            rows,
            nb,
            &unpack,
            s,
            |s| repack::<W, V, S>(w, rows, nb, unpack, s),
            f,
        )
    })
}

/// [`with_strips`] for the integer-scale strips ([`repack_int`]).
pub(in crate::quant) fn with_int_strips<W: 'static, R>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl UnpackInt<W> + 'static,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    let repack = move |s: &mut Scratch| repack_int(w, rows, nb, unpack, s);
    with_kept(w, (rows, nb), &unpack, repack, f)
}

/// Runs `f` with this thread's scratch holding `w`'s rows as `repack`
/// makes them: kept between calls under `key` (the unpacking's type) for
/// weights a model registered, else made now.
fn with_kept<W, K: 'static, R>(
    w: &[W],
    (rows, nb): (usize, usize),
    key: &K,
    repack: impl FnOnce(&mut Scratch),
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    with_scratch(|s| with_repacked(w, rows, nb, key, s, repack, f))
}

/// A block as `S` sub-blocks of `V` values (32-value types: one of 32;
/// K-quants: sixteen of 16), each its scale, its minimum (the float term
/// `scale·u − min`; zero for the types without one) and its values as the
/// kernel wants their bytes.
pub(in crate::quant) trait Unpack<W, const V: usize, const S: usize>:
    Fn(&W) -> [(f32, f32, [u8; V]); S]
    + Copy
{
}

// A generic bound rather than a `fn` pointer: each type's unpacking inlines
// into its repack (called through a pointer, it was most of a repack's time).
impl<W, const V: usize, const S: usize, F> Unpack<W, V, S> for F where
    F: Fn(&W) -> [(f32, f32, [u8; V]); S] + Copy
{
}

/// [`with_strips`] for Q2_K's integer-scale strips ([`repack_q2_k_int`]).
pub(in crate::quant) fn with_q2_k_int_strips<R>(
    w: &[BlockQ2K],
    rows: usize,
    nb: usize,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    let repack = move |s: &mut Scratch| repack_q2_k_int(w, rows, nb, s);
    with_kept(w, (rows, nb), &q2_k_int, repack, f)
}

/// A 16-value K-quant block without minimums (Q3_K, Q6_K; Q2_K's go beside,
/// [`repack_q2_k_int`]) for the
/// integer-scale strips: its super-block scale `d`, its sixteen signed
/// sub-block scales and its values as unsigned bytes (the type's offset
/// added), sub-block by sub-block.
pub(in crate::quant) trait UnpackInt<W>:
    Fn(&W) -> (f32, [i8; 16], [[u8; 16]; 16]) + Copy
{
}

impl<W, F> UnpackInt<W> for F where F: Fn(&W) -> (f32, [i8; 16], [[u8; 16]; 16]) + Copy {}

/// 16 packed bytes as 32 nibbles in element order.
fn nibbles(qs: &[u8; 16]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &byte) in qs.iter().enumerate() {
        q[j] = byte & 0x0f;
        q[j + QK / 2] = byte >> 4;
    }
    q
}

/// Nibbles plus 16 where the element's bit of `qh` is set (Q5_0, Q5_1).
fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> [u8; QK] {
    let (mut q, h) = (nibbles(qs), u32::from_le_bytes(qh));
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((h >> j) & 1) as u8) << 4;
    }
    q
}

/// Q8_0 as unsigned bytes `w + 128` (for `vpdpbusd`).
pub(in crate::quant) fn q8_0_unsigned(b: &BlockQ8_0) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), 0.0, b.qs.map(|v| (v as u8) ^ 0x80))]
}

/// Q8_0's signed bytes as stored.
pub(in crate::quant) fn q8_0_signed(b: &BlockQ8_0) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), 0.0, b.qs.map(|v| v as u8))]
}

/// Q4_0's nibbles `q = w + 8` as bytes 0..=15.
pub(in crate::quant) fn q4_0_unsigned(b: &BlockQ4_0) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), 0.0, nibbles(&b.qs))]
}

/// Q4_0's values as the signed bytes `q - 8` the AMX tile unit multiplies
/// (the AVX-512 and AVX2 strips keep the unsigned nibbles and an offset).
pub(in crate::quant) fn q4_0_signed(b: &BlockQ4_0) -> [(f32, f32, [u8; QK]); 1] {
    [(
        b.d.to_f32(),
        0.0,
        nibbles(&b.qs).map(|q| (q as i8 - 8) as u8),
    )]
}

/// Q4_1's values `u` (0..=15; the element is `d·u + m`).
pub(in crate::quant) fn q4_1_unsigned(b: &BlockQ4_1) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), b.m.to_f32(), nibbles(&b.qs))]
}

/// Q5_0's values as stored, `q = w + 16` (0..=31).
pub(in crate::quant) fn q5_0_unsigned(b: &BlockQ5_0) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), 0.0, five_bits(&b.qs, b.qh))]
}

/// Q5_1's values `u` (0..=31; the element is `d·u + m`).
pub(in crate::quant) fn q5_1_unsigned(b: &BlockQ5_1) -> [(f32, f32, [u8; QK]); 1] {
    [(b.d.to_f32(), b.m.to_f32(), five_bits(&b.qs, b.qh))]
}

/// IQ4_NL's table values offset to unsigned bytes `v + 128` (1..=241).
pub(in crate::quant) fn iq4_nl_unsigned(b: &BlockIq4Nl) -> [(f32, f32, [u8; QK]); 1] {
    let q = nibbles(&b.qs).map(|i| (i16::from(KVALUES[usize::from(i)]) + 128) as u8);
    [(b.d.to_f32(), 0.0, q)]
}

/// IQ4_NL's signed table values (-127..=113).
pub(in crate::quant) fn iq4_nl_signed(b: &BlockIq4Nl) -> [(f32, f32, [u8; QK]); 1] {
    let q = nibbles(&b.qs).map(|i| KVALUES[usize::from(i)] as u8);
    [(b.d.to_f32(), 0.0, q)]
}

/// A K-quant block as sixteen sub-blocks of 16: the sub-block's `(scale,
/// additive term, values)` from `f(j)` for each `j`.
fn k_subs(f: impl Fn(usize) -> (f32, f32, [u8; 16])) -> [(f32, f32, [u8; 16]); 16] {
    std::array::from_fn(f)
}

/// Q4_K: `d·sc·u − dmin·m` per 32 values (eight sub-blocks), `u` 0..=15
/// (no offset).
pub(in crate::quant) fn q4_k_unsigned(b: &BlockQ4K) -> [(f32, f32, [u8; 32]); 8] {
    let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
    std::array::from_fn(|j| {
        let (sc, m) = scale_min(j, &b.scales);
        // Sub-block j: the low (even j) or high nibbles of 32 bytes
        // (`BlockQ4K::q`, in bulk).
        let (src, shift) = (&b.qs[32 * (j / 2)..32 * (j / 2) + 32], 4 * (j % 2));
        let u = std::array::from_fn(|l| (src[l] >> shift) & 0x0f);
        (d * f32::from(sc), -(dmin * f32::from(m)), u)
    })
}

/// Q5_K: as Q4_K with `u` 0..=31.
pub(in crate::quant) fn q5_k_unsigned(b: &BlockQ5K) -> [(f32, f32, [u8; 32]); 8] {
    let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
    std::array::from_fn(|j| {
        let (sc, m) = scale_min(j, &b.scales);
        // As Q4_K, plus bit j of `qh[l]` as the fifth bit (`BlockQ5K::q`).
        let (src, shift) = (&b.qs[32 * (j / 2)..32 * (j / 2) + 32], 4 * (j % 2));
        let u = std::array::from_fn(|l| ((src[l] >> shift) & 0x0f) | (((b.qh[l] >> j) & 1) << 4));
        (d * f32::from(sc), -(dmin * f32::from(m)), u)
    })
}

/// Q6_K's stored six bits `u = q + 32` (0..=63), sixteen sub-blocks of 16.
fn q6_k_values(b: &BlockQ6K) -> [[u8; 16]; 16] {
    std::array::from_fn(|j| {
        // Elements 16j.. lie in half j / 8, quarter k = (j % 8) / 2, at
        // column 16·(j % 2) of it (`BlockQ6K::q`, in bulk).
        let (half, k, c) = (j / 8, (j % 8) / 2, 16 * (j % 2));
        let ql = &b.ql[64 * half + 32 * (k % 2) + c..][..16];
        let qh = &b.qh[32 * half + c..][..16];
        let shift = if k < 2 { 0 } else { 4 };
        std::array::from_fn(|l| ((ql[l] >> shift) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4))
    })
}

/// Q6_K: `d·sc·(u − 32)` per 16 values, stored `u = q + 32` (0..=63; offset 32).
pub(in crate::quant) fn q6_k_unsigned(b: &BlockQ6K) -> [(f32, f32, [u8; 16]); 16] {
    let (d, u) = (b.d.to_f32(), q6_k_values(b));
    k_subs(|j| (d * f32::from(b.scales[j]), 0.0, u[j]))
}

/// Q6_K for the integer-scale strips: `d`, the signed sub-block scales and
/// `u = q + 32`.
pub(in crate::quant) fn q6_k_int(b: &BlockQ6K) -> (f32, [i8; 16], [[u8; 16]; 16]) {
    (b.d.to_f32(), b.scales, q6_k_values(b))
}

/// Q3_K's values `u = q + 4` (0..=7), sixteen sub-blocks of 16.
fn q3_k_values(b: &BlockQ3K) -> [[u8; 16]; 16] {
    std::array::from_fn(|j| std::array::from_fn(|l| (b.q(16 * j + l) + 4) as u8))
}

/// Q3_K: `d·sc·(u − 4)` per 16 values, `u = q + 4` (0..=7; offset 4).
pub(in crate::quant) fn q3_k_unsigned(b: &BlockQ3K) -> [(f32, f32, [u8; 16]); 16] {
    let (d, sc, u) = (b.d.to_f32(), b.scales(), q3_k_values(b));
    k_subs(|j| (d * f32::from(sc[j]), 0.0, u[j]))
}

/// Q3_K for the integer-scale strips: `d`, the signed sub-block scales and
/// `u = q + 4`.
pub(in crate::quant) fn q3_k_int(b: &BlockQ3K) -> (f32, [i8; 16], [[u8; 16]; 16]) {
    (b.d.to_f32(), b.scales(), q3_k_values(b))
}

/// Q2_K: `d·sc·u − dmin·m` per 16 values, `u` 0..=3.
pub(in crate::quant) fn q2_k_unsigned(b: &BlockQ2K) -> [(f32, f32, [u8; 16]); 16] {
    let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
    k_subs(|j| {
        let (sc, m) = (b.scales[j] & 0x0f, b.scales[j] >> 4);
        let u = std::array::from_fn(|l| b.q(16 * j + l));
        (d * f32::from(sc), -(dmin * f32::from(m)), u)
    })
}

/// IQ4_XS: `d·ls·v` per 32 values (eight sub-blocks) with table values
/// `v`, stored `v + 128` (offset 128).
pub(in crate::quant) fn iq4_xs_unsigned(b: &BlockIq4Xs) -> [(f32, f32, [u8; 32]); 8] {
    let d = b.d.to_f32();
    std::array::from_fn(|j| {
        let u =
            std::array::from_fn(|l| (i16::from(KVALUES[usize::from(b.q(32 * j + l))]) + 128) as u8);
        (d * f32::from(b.scale(j)), 0.0, u)
    })
}

/// IQ4_XS with its signed table values (no offset).
pub(in crate::quant) fn iq4_xs_signed(b: &BlockIq4Xs) -> [(f32, f32, [u8; 32]); 8] {
    let d = b.d.to_f32();
    std::array::from_fn(|j| {
        let u = std::array::from_fn(|l| KVALUES[usize::from(b.q(32 * j + l))] as u8);
        (d * f32::from(b.scale(j)), 0.0, u)
    })
}

/// Sizes `s`'s strip buffers for `rows` rows of `nsub` sub-blocks of `lps`
/// lines, for [`repack_strip`] to fill. Every line and scale of the full
/// rows is written there, so the buffers are only grown, not cleared: what
/// a last partial strip's padding rows hold in their lines is left from
/// earlier calls (any bytes: their scales are set to zero here and their
/// outputs never stored). Clearing them was a `memset` of the whole call's
/// weights. `mins`: whether the kernel reads the minimums `dm`; the integer
/// strips of [`repack_int`] do not, and leave `dm` as it is (empty in a
/// kept repack, which is made into empty buffers, so it holds no unread
/// zeros; the thread's scratch keeps its size for the next call).
pub(in crate::quant) fn reserve_strips(
    s: &mut Scratch,
    rows: usize,
    nsub: usize,
    lps: usize,
    mins: bool,
) {
    let strips = rows.div_ceil(STRIP);
    s.lines
        .resize(s.lines.len().max(strips * nsub * lps), Line([0; 64]));
    s.dw.resize(strips * nsub * STRIP, 0.0);
    zero_padding_rows(&mut s.dw, rows, nsub);
    if mins {
        s.dm.resize(strips * nsub * STRIP, 0.0);
        zero_padding_rows(&mut s.dm, rows, nsub);
    }
}

/// Sets the entries of the last strip's padding rows (past `rows`) to zero
/// in a per-row array of `nsub` sub-blocks per strip row (`dw`, `dm`,
/// `isc`): the buffers are reused, so stale values would sit there.
fn zero_padding_rows<T: Copy + Default>(v: &mut [T], rows: usize, nsub: usize) {
    if !rows.is_multiple_of(STRIP) {
        let last = (rows / STRIP) * nsub * STRIP;
        for q in 0..nsub {
            v[last + q * STRIP + rows % STRIP..last + (q + 1) * STRIP].fill(T::default());
        }
    }
}

/// Repacks `rows` rows of `nb` blocks (`nb·S` sub-blocks of `V` values)
/// into strip order: line `k` of a sub-block holds values `4k..4k + 4` of
/// each of its strip's 16 rows. The weights are one sequential read from
/// the mapping (L3 or DRAM), hinted ahead as decode hints them. (Repacking
/// each strip just before the kernel's first pass over it, so that the reads
/// would overlap the previous strip's products, measured no faster: 0.9–1.0×
/// at 128 tokens on AVX-512.)
///
/// Every type's unpacking for the x86 kernels ([`transposable`]) goes
/// through [`repack_transposed`]'s transposition in registers where the CPU
/// has AVX2 and F16C: the same lines.
pub(in crate::quant) fn repack<W: 'static, const V: usize, const S: usize>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl Unpack<W, V, S> + 'static,
    s: &mut Scratch,
) {
    let (nsub, lps) = (nb * S, V / 4);
    reserve_strips(s, rows, nsub, lps, true);
    let fast = transposable(w, &unpack);
    for i in 0..rows.div_ceil(STRIP) {
        if let Some(src) = fast
            && repack_transposed(src, (rows, nb, i), (&mut s.lines, &mut s.dw, &mut s.dm))
        {
            continue;
        }
        repack_strip::<W, V, S>(
            w,
            (rows, nb, i),
            unpack,
            (&mut s.lines, &mut s.dw, &mut s.dm),
        );
    }
}

/// `w` as the blocks of a type [`transpose`](super::transpose) repacks and
/// the values its unpacking makes, when `unpack` is one of Q8_0's two
/// ([`q8_0_signed`], [`q8_0_unsigned`]; the AVX2 strips' i16 lines are
/// `x86::strip_words`') or Q4_0's two
/// ([`q4_0_unsigned`], [`q4_0_signed`]), Q4_1's, Q5_0's and Q5_1's
/// ([`q4_1_unsigned`], [`q5_0_unsigned`], [`q5_1_unsigned`]), IQ4_NL's two
/// ([`iq4_nl_unsigned`]), Q2_K's two
/// ([`q2_k_unsigned`], and [`q2_k_int`] for [`repack_int`]), Q3_K's two ([`q3_k_unsigned`], and [`q3_k_int`] for [`repack_int`]),
/// IQ4_XS's ([`iq4_xs_unsigned`]), Q4_K's
/// ([`q4_k_unsigned`]),
/// Q5_K's ([`q5_k_unsigned`]) or Q6_K's two ([`q6_k_unsigned`], and
/// [`q6_k_int`] for [`repack_int`]): which function a kernel passed is known only
/// by its type here (as the kept repacks are keyed by it).
fn transposable<'w, W: 'static, U: 'static>(w: &'w [W], _unpack: &U) -> Option<Source<'w>> {
    let u = TypeId::of::<U>();
    let values = if u == id(&q8_0_signed) {
        Values::Q8Signed
    } else if u == id(&q8_0_unsigned) {
        Values::Q8Unsigned
    } else if u == id(&q4_0_unsigned) {
        Values::Q4Unsigned
    } else if u == id(&q4_0_signed) {
        Values::Q4Signed
    } else if u == id(&q4_k_unsigned) {
        Values::Q4KUnsigned
    } else if u == id(&q5_k_unsigned) {
        Values::Q5KUnsigned
    } else if u == id(&q4_1_unsigned) {
        Values::Q41Unsigned
    } else if u == id(&q5_0_unsigned) {
        Values::Q50Unsigned
    } else if u == id(&q5_1_unsigned) {
        Values::Q51Unsigned
    } else if u == id(&iq4_nl_unsigned) {
        Values::Iq4NlUnsigned
    } else if u == id(&q2_k_unsigned) {
        Values::Q2KUnsigned
    } else if u == id(&q2_k_int) {
        Values::Q2KInt
    } else if u == id(&q3_k_unsigned) {
        Values::Q3KUnsigned
    } else if u == id(&q3_k_int) {
        Values::Q3KInt
    } else if u == id(&iq4_xs_unsigned) {
        Values::Iq4XsUnsigned
    } else if u == id(&q6_k_unsigned) {
        Values::Q6KUnsigned
    } else if u == id(&q6_k_int) {
        Values::Q6KInt
    } else {
        return None;
    };
    // The weights as the block type the unpacking reads (`None` should a
    // kernel ever pass another type's blocks).
    match values {
        v if v.is_q8_0() => as_blocks(w).map(|w| Source::Q8_0(w, v)),
        v if v.is_q4_0() => as_blocks(w).map(|w| Source::Q4_0(w, v)),
        Values::Q41Unsigned => as_blocks(w).map(Source::Q4_1),
        Values::Q50Unsigned => as_blocks(w).map(Source::Q5_0),
        Values::Q51Unsigned => as_blocks(w).map(Source::Q5_1),
        Values::Iq4NlUnsigned => as_blocks(w).map(|w| Source::Iq4Nl(w, values)),
        Values::Q2KUnsigned | Values::Q2KInt => as_blocks(w).map(|w| Source::Q2K(w, values)),
        Values::Q3KUnsigned | Values::Q3KInt => as_blocks(w).map(|w| Source::Q3K(w, values)),
        Values::Iq4XsUnsigned => as_blocks(w).map(|w| Source::Iq4Xs(w, values)),
        Values::Q4KUnsigned => as_blocks(w).map(Source::Q4K),
        Values::Q5KUnsigned => as_blocks(w).map(Source::Q5K),
        _ => as_blocks(w).map(|w| Source::Q6K(w, values)),
    }
}

/// `w` as the blocks of a type [`transpose`](super::transpose) repacks into
/// i16 lines (`x86::strip_words`), when `unpack` is [`q8_0_signed`],
/// [`iq4_nl_signed`] or [`iq4_xs_signed`].
pub(in crate::quant) fn words_source<'w, W: 'static, U: 'static>(
    w: &'w [W],
    _unpack: &U,
) -> Option<Source<'w>> {
    let u = TypeId::of::<U>();
    if u == id(&q8_0_signed) {
        as_blocks(w).map(|w| Source::Q8_0(w, Values::Q8Words))
    } else if u == id(&iq4_nl_signed) {
        as_blocks(w).map(|w| Source::Iq4Nl(w, Values::Iq4NlWords))
    } else if u == id(&iq4_xs_signed) {
        as_blocks(w).map(|w| Source::Iq4Xs(w, Values::Iq4XsWords))
    } else {
        None
    }
}

/// The type of a value (an unpacking function's, to compare with `U`).
fn id<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// `w` as a slice of `B`, when `W` is `B`.
fn as_blocks<B: 'static, W: 'static>(w: &[W]) -> Option<&[B]> {
    (TypeId::of::<W>() == TypeId::of::<B>()).then(|| {
        // SAFETY: `W` is `B` (the type ids are equal): the same slice.
        unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<B>(), w.len()) }
    })
}

/// Strip `i` of [`repack`]: rows `16i..` (at most 16) of `rows`, by the
/// generic walk.
// Not inlined into the kernels: compiled with their AVX-512 features, the
// per-row stores below became `vpscatterqd`s (slower than plain stores).
#[inline(never)]
pub(in crate::quant) fn repack_strip<W, const V: usize, const S: usize>(
    w: &[W],
    (rows, nb, i): (usize, usize, usize),
    unpack: impl Unpack<W, V, S>,
    (lines, dw, dm): (&mut [Line], &mut [f32], &mut [f32]),
) {
    let (nsub, lps) = (nb * S, V / 4);
    let r0 = i * STRIP;
    let r1 = rows.min(r0 + STRIP);
    assert!(r0 < r1 && w.len() >= r1 * nb, "repack_strip: rows");
    let lines = &mut lines[i * nsub * lps..(i + 1) * nsub * lps];
    let (dw, dm) = (
        &mut dw[i * nsub * STRIP..(i + 1) * nsub * STRIP],
        &mut dm[i * nsub * STRIP..(i + 1) * nsub * STRIP],
    );
    for (n, row) in w[r0 * nb..r1 * nb].chunks_exact(nb).enumerate() {
        for (b, blk) in row.iter().enumerate() {
            crate::quant::prefetch::stream(blk);
            for (j, (d, m, u)) in unpack(blk).iter().enumerate() {
                let at = b * S + j;
                let sub = &mut lines[at * lps..(at + 1) * lps];
                for (k, quad) in u.chunks_exact(4).enumerate() {
                    sub[k].0[4 * n..4 * n + 4].copy_from_slice(quad);
                }
                dw[at * STRIP + n] = *d;
                dm[at * STRIP + n] = *m;
            }
        }
    }
}

/// [`repack`] for the integer-scale strips of a [`UnpackInt`] type (16-value
/// sub-blocks, four lines each): the same lines; `dw` holds each row's
/// super-block scale `d` (at each of its sub-blocks) and `isc` the
/// sub-blocks' integer scales, duplicated into i16 pairs (zero for the
/// padding rows, like `dw`). Q2_K, Q3_K and Q6_K go through
/// [`repack_transposed_int`].
pub(in crate::quant) fn repack_int<W: 'static>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl UnpackInt<W> + 'static,
    s: &mut Scratch,
) {
    repack_int_then(w, rows, nb, unpack, s, |_, _| {});
}

/// [`repack_int`], calling `then(i, s)` after strip `i`, while its blocks
/// are still in cache (Q2_K's minimums, [`repack_q2_k_int`]: a second pass
/// over the weights after the whole repack ran its 16-token prompts at
/// 0.92–0.98×).
fn repack_int_then<W: 'static>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl UnpackInt<W> + 'static,
    s: &mut Scratch,
    mut then: impl FnMut(usize, &mut Scratch),
) {
    let nsub = nb * K16_SUBS;
    reserve_strips(s, rows, nsub, K16_LINES, false);
    s.isc.resize(s.dw.len(), 0);
    zero_padding_rows(&mut s.isc, rows, nsub);
    let fast = transposable(w, &unpack);
    for i in 0..rows.div_ceil(STRIP) {
        let bufs = (&mut s.lines[..], &mut s.dw[..], &mut s.isc[..]);
        if !fast.is_some_and(|src| repack_transposed_int(src, (rows, nb, i), bufs)) {
            repack_strip_int(
                w,
                (rows, nb, i),
                unpack,
                (&mut s.lines, &mut s.dw, &mut s.isc),
            );
        }
        then(i, s);
    }
}

/// Q2_K for the AVX2 integer-scale strips ([`repack_q2_k_int`]): `d`, the
/// sub-block scales (0..=15) and the values `u` (0..=3); the minimums go
/// beside ([`q2_k_mins`]).
pub(in crate::quant) fn q2_k_int(b: &BlockQ2K) -> (f32, [i8; 16], [[u8; 16]; 16]) {
    let sc = b.scales.map(|v| (v & 0x0f) as i8);
    let u = std::array::from_fn(|j| std::array::from_fn(|l| b.q(16 * j + l)));
    (b.d.to_f32(), sc, u)
}

/// Q2_K's `dmin` and its sub-block minimums `m` (0..=15) as the i16 pairs
/// of sub-blocks `2j, 2j + 1` (a `madd` operand against Q8_K's adjacent
/// `bsums`).
fn q2_k_mins(b: &BlockQ2K) -> (f32, [i32; K16_SUBS / 2]) {
    let m = |s: usize| i16::from(b.scales[s] >> 4);
    (
        b.dmin.to_f32(),
        std::array::from_fn(|j| pair_i16(m(2 * j), m(2 * j + 1))),
    )
}

/// Repacks `rows` rows of `nb` Q2_K blocks for the AVX2 integer-scale
/// kernel, which sums each super-block in integers as ggml's (and the
/// scalar twin's) dot does, `d·Σ sc·Σ u·a − dmin·Σ m·bsum`: the lines, `dw`
/// and `isc` as [`repack_int`] makes them ([`q2_k_int`]), then, strip by
/// strip, per row and block `dmin` into `dm` (at the block's first sub-block, like `d` in `dw`) and
/// the minimum pairs of [`q2_k_mins`] into `imin` (`strips × nb × 8 × 16`,
/// row-minor like the others).
pub(in crate::quant) fn repack_q2_k_int(w: &[BlockQ2K], rows: usize, nb: usize, s: &mut Scratch) {
    let (strips, nsub, npairs) = (rows.div_ceil(STRIP), nb * K16_SUBS, nb * K16_SUBS / 2);
    s.dm.resize(strips * nsub * STRIP, 0.0);
    zero_padding_rows(&mut s.dm, rows, nsub);
    s.imin.resize(strips * npairs * STRIP, 0);
    zero_padding_rows(&mut s.imin, rows, npairs);
    repack_int_then(w, rows, nb, q2_k_int, s, |i, s| {
        let (r0, r1) = (i * STRIP, rows.min(i * STRIP + STRIP));
        let dm = &mut s.dm[i * nsub * STRIP..(i + 1) * nsub * STRIP];
        let imin = &mut s.imin[i * npairs * STRIP..(i + 1) * npairs * STRIP];
        for (n, row) in w[r0 * nb..r1 * nb].chunks_exact(nb).enumerate() {
            for (b, blk) in row.iter().enumerate() {
                let (dmin, pairs) = q2_k_mins(blk);
                dm[b * K16_SUBS * STRIP + n] = dmin;
                for (j, p) in pairs.into_iter().enumerate() {
                    imin[(b * K16_SUBS / 2 + j) * STRIP + n] = p;
                }
            }
        }
    });
}

/// Sub-blocks of 16 values per K-quant block.
pub(in crate::quant) const K16_SUBS: usize = QK_K / 16;

/// Lines of a 16-value sub-block.
pub(in crate::quant) const K16_LINES: usize = 4;

/// A signed scale in both i16 halves of an i32.
pub(in crate::quant) fn pair_i16(lo: i16, hi: i16) -> i32 {
    (u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32
}

/// Strip `i` of [`repack_int`] (as [`repack_strip`]).
#[inline(never)]
pub(in crate::quant) fn repack_strip_int<W>(
    w: &[W],
    (rows, nb, i): (usize, usize, usize),
    unpack: impl UnpackInt<W>,
    (lines, dw, isc): (&mut [Line], &mut [f32], &mut [i32]),
) {
    let nsub = nb * K16_SUBS;
    let r0 = i * STRIP;
    let r1 = rows.min(r0 + STRIP);
    assert!(r0 < r1 && w.len() >= r1 * nb, "repack_strip_int: rows");
    let lines = &mut lines[i * nsub * K16_LINES..(i + 1) * nsub * K16_LINES];
    let (dw, isc) = (
        &mut dw[i * nsub * STRIP..(i + 1) * nsub * STRIP],
        &mut isc[i * nsub * STRIP..(i + 1) * nsub * STRIP],
    );
    for (n, row) in w[r0 * nb..r1 * nb].chunks_exact(nb).enumerate() {
        for (b, blk) in row.iter().enumerate() {
            crate::quant::prefetch::stream(blk);
            let (d, sc, u) = unpack(blk);
            for (j, (sc, u)) in sc.iter().zip(&u).enumerate() {
                let at = b * K16_SUBS + j;
                for (line, quad) in lines[at * K16_LINES..(at + 1) * K16_LINES]
                    .iter_mut()
                    .zip(u.chunks_exact(4))
                {
                    line.0[4 * n..4 * n + 4].copy_from_slice(quad);
                }
                dw[at * STRIP + n] = d;
                isc[at * STRIP + n] = pair_i16(i16::from(*sc), i16::from(*sc));
            }
        }
    }
}

/// The activations of the integer-scale strips: per 16-value sub-block of
/// each token (token-major), `d_a` into `da` and into `corr` the offset
/// correction of its four lines as the kernel's i16 lane pairs, `-off·Σ
/// (a₄ₖ + a₄ₖ₊₁)` in the low half and `-off·Σ (a₄ₖ₊₂ + a₄ₖ₊₃)` in the high
/// half (|·| ≤ 32·8·127 = 32512 for Q6_K: Q8_K's values are at least -127).
///
/// In AVX2, nine instructions per two sub-blocks: in scalar code these sums
/// were 5 % of a Q6_K prompt's profile (Zen 4, 2 threads, `GPTQ_KERNEL=avx2
/// gptq bench -p 512 -n 0`, against the scalar loop, three alternated
/// rounds: Q6_K mix 355M 1.09–1.17×, 124M 1.03–1.09×). The same integers as
/// its scalar twin, `pair_corrections` (tested).
#[target_feature(enable = "avx2")]
pub(in crate::quant) fn prepare_pair_acts(a: &QuantActs<'_, BlockQ8K>, off: i32, s: &mut Scratch) {
    use std::arch::x86_64::*;
    let (n_tok, nb) = (a.n_tok, a.nb);
    assert!(
        a.blocks.len() >= n_tok * nb && (0..=32).contains(&off),
        "strips: activations too short, or an offset out of the i16 range"
    );
    let per = nb * K16_SUBS;
    s.da.resize(n_tok * per, 0.0);
    s.corr.resize(n_tok * per, 0);
    let ones = _mm256_set1_epi8(1);
    let neg_off = _mm256_set1_epi16(-off as i16);
    for t in 0..n_tok {
        let at = t * per;
        let (da, corr) = (&mut s.da[at..at + per], &mut s.corr[at..at + per]);
        for (b, blk) in a.row(t).iter().enumerate() {
            da[b * K16_SUBS..(b + 1) * K16_SUBS].fill(blk.d);
            let out = &mut corr[b * K16_SUBS..(b + 1) * K16_SUBS];
            for (two, out) in blk.qs.chunks_exact(32).zip(out.chunks_exact_mut(2)) {
                // SAFETY: `two` is 32 readable bytes; the load is unaligned.
                let v = unsafe { _mm256_loadu_si256(two.as_ptr().cast()) };
                // Word m of a lane: a₂ₘ + a₂ₘ₊₁ of its sub-block (exact).
                let p = _mm256_maddubs_epi16(ones, v);
                // Word pairs (2k, 2k + 1) summed over k, in 16-bit lanes:
                // each dword (Σ even words, Σ odd words) = (Σ (a₄ₖ + a₄ₖ₊₁),
                // Σ (a₄ₖ₊₂ + a₄ₖ₊₃)), at most 8·127 in magnitude.
                let p = _mm256_add_epi16(p, _mm256_shuffle_epi32::<0b01_00_11_10>(p));
                let p = _mm256_add_epi16(p, _mm256_shuffle_epi32::<0b10_11_00_01>(p));
                // Times -off, in i16 range (asserted above: ≤ 32·8·127).
                let p = _mm256_mullo_epi16(p, neg_off);
                out[0] = _mm256_extract_epi32::<0>(p);
                out[1] = _mm256_extract_epi32::<4>(p);
            }
        }
    }
}

/// [`prepare_pair_acts`]' corrections in scalar code, token-major, one per
/// 16-value sub-block (the test twin).
#[cfg(test)]
pub(in crate::quant) fn pair_corrections(a: &QuantActs<'_, BlockQ8K>, off: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in 0..a.n_tok {
        for blk in a.row(t) {
            for sub in blk.qs.chunks_exact(16) {
                let (mut lo, mut hi) = (0i32, 0i32);
                for quad in sub.chunks_exact(4) {
                    lo += i32::from(quad[0]) + i32::from(quad[1]);
                    hi += i32::from(quad[2]) + i32::from(quad[3]);
                }
                out.push(pair_i16((-off * lo) as i16, (-off * hi) as i16));
            }
        }
    }
    out
}

/// An activation type the strips read, in sub-blocks of `v` values (Q8_0:
/// its blocks, `v` = 32; Q8_K: 16 or 32 values of a block), each with its
/// scale and its exact sum.
pub(in crate::quant) trait SubActs: Pod {
    /// Values per block.
    const VALUES: usize;
    /// The scale and sum of sub-block `q` alone (the activations' prepared
    /// side, for every sub-block of every token of a call).
    fn scale_sum(row: &[Self], sums: &[i16], v: usize, q: usize) -> (f32, i16);
    /// Where sub-block `q`'s `v` values start in a token's row of blocks, in
    /// bytes: the kernels' inner loops read them at a base pointer plus this
    /// offset, with no bounds check per token (checked once per sub-block
    /// against the row's size), so that the token loop unrolls and its
    /// accumulators stay in registers.
    fn values_at(v: usize, q: usize) -> usize;
}

impl SubActs for BlockQ8_0 {
    const VALUES: usize = QK;
    #[inline]
    fn scale_sum(row: &[Self], sums: &[i16], _v: usize, q: usize) -> (f32, i16) {
        // The software conversion, inlined: `to_f32` is a call that picks
        // F16C at run time, the larger part of preparing a record.
        (row[q].d.to_f32_const(), sums[q])
    }
    #[inline(always)]
    fn values_at(_v: usize, q: usize) -> usize {
        q * std::mem::size_of::<Self>() + std::mem::offset_of!(Self, qs)
    }
}

impl SubActs for BlockQ8K {
    const VALUES: usize = QK_K;
    #[inline]
    fn scale_sum(row: &[Self], _sums: &[i16], v: usize, q: usize) -> (f32, i16) {
        let per = QK_K / v;
        let (b, j) = (&row[q / per], q % per);
        let sum = if v == 16 {
            b.bsums[j]
        } else {
            b.bsums[j * v / 16..(j + 1) * v / 16].iter().sum()
        };
        (b.d, sum)
    }
    #[inline(always)]
    fn values_at(v: usize, q: usize) -> usize {
        let per = QK_K / v;
        (q / per) * std::mem::size_of::<Self>() + std::mem::offset_of!(Self, qs) + v * (q % per)
    }
}

/// A call's activations packed for a kernel that takes its tokens in
/// groups of `group` ([`Scratch::pack_acts`]): per token and sub-block one
/// record of `rec` words, the sub-block's `v` values (`v / 4` words) then
/// its offset correction `-off·Σa` (i32), scale `d_a` and minimum factor
/// `d_a·Σa` (f32) and a word of padding. The tokens of a whole group are
/// interleaved, sub-block `q` of the group's token `j` at record `q·group +
/// j`; the tokens after the last whole group are one record row each. Every
/// operand of a token is then at a constant offset from one pointer that
/// moves by a constant per sub-block, where the kernels otherwise computed
/// and bounds-checked three arrays' indices and a row pointer per token
/// (more scalar than vector instructions in the AVX-512 strip kernel). Both
/// x86 strip kernels read them (AVX2 in groups of two or four tokens).
pub(in crate::quant) struct PackedActs<'a> {
    recs: &'a [u32],
    n_tok: usize,
    group: usize,
    /// Words per token: `nsub·rec`.
    per_tok: usize,
}

impl PackedActs<'_> {
    /// The records of tokens `t..t + T`: a whole group (`T` the group size,
    /// `t` its first token) or one token after the whole groups (`T` = 1).
    ///
    /// # Panics
    /// For any other range.
    #[inline(always)]
    pub(in crate::quant) fn tokens<const T: usize>(&self, t: usize) -> &[u32] {
        let full = self.n_tok / self.group * self.group;
        assert!(
            (T == self.group && t.is_multiple_of(T) && t + T <= full)
                || (T == 1 && t >= full && t < self.n_tok),
            "packed activations: tokens {t}..{} are not a group",
            t + T
        );
        &self.recs[t * self.per_tok..(t + T) * self.per_tok]
    }
}

/// What a thread's records hold: which activations ([`QuantActs::id`]),
/// packed how (values per sub-block, offset, group), and their layout.
#[derive(Clone, Copy, PartialEq)]
struct Packing {
    id: u64,
    v: usize,
    off: i32,
    group: usize,
    n_tok: usize,
    /// Words per token.
    per_tok: usize,
    /// Values as i16 pairs ([`Scratch::pack_acts_words`]) rather than bytes.
    wide: bool,
}

/// Words per packed record of `v` values: the values, the correction, the
/// two factors and one word of padding.
#[inline(always)]
pub(in crate::quant) const fn rec_words(v: usize) -> usize {
    v / 4 + 4
}

/// Signed bytes `src` as i16, two to a word of `dst` (value `2m` in the
/// low half of word `m`), in a form LLVM vectorizes (as a zip over pairs it
/// did not: the packing was 2.7 % of a 128-token prompt).
#[inline]
fn widen(dst: &mut [u32], src: &[u8]) {
    assert!(src.len() == 2 * dst.len(), "widen: lengths");
    for (m, w) in dst.iter_mut().enumerate() {
        let (lo, hi) = (src[2 * m] as i8 as i16, src[2 * m + 1] as i8 as i16);
        *w = u32::from(lo as u16) | (u32::from(hi as u16) << 16);
    }
}

/// Words per record of [`Scratch::pack_acts_words`]: `v` values as i16
/// (two per word), then the same four words as [`rec_words`]'.
#[inline(always)]
pub(in crate::quant) const fn rec_words_wide(v: usize) -> usize {
    v / 2 + 4
}

impl Scratch {
    /// Packs the activations `a` in sub-blocks of `V` values for a kernel
    /// taking `group` tokens at a time (see [`PackedActs`]), their offset
    /// corrections for weights offset by `off`; read them with
    /// [`Scratch::packed_acts`].
    pub(in crate::quant) fn pack_acts<A: SubActs, const V: usize>(
        &mut self,
        a: &QuantActs<'_, A>,
        off: i32,
        group: usize,
    ) {
        self.pack::<A, V>(a, off, group, false);
    }

    /// [`Scratch::pack_acts`] with each value widened to i16, two to a
    /// word (little-endian: value `2m` in the low half), for the AVX2
    /// kernel that multiplies i16 lines (`avx2::strip_words`); records of
    /// [`rec_words_wide`] words.
    pub(in crate::quant) fn pack_acts_words<A: SubActs, const V: usize>(
        &mut self,
        a: &QuantActs<'_, A>,
        group: usize,
    ) {
        self.pack::<A, V>(a, 0, group, true);
    }

    /// [`Scratch::pack_acts`] and [`Scratch::pack_acts_words`].
    fn pack<A: SubActs, const V: usize>(
        &mut self,
        a: &QuantActs<'_, A>,
        off: i32,
        group: usize,
        wide: bool,
    ) {
        let (n_tok, nb, v) = (a.n_tok, a.nb, V);
        assert!(
            a.blocks.len() >= n_tok * nb && v.is_multiple_of(4) && group > 0,
            "strips: activations too short"
        );
        let (nsub, rec) = (
            nb * (A::VALUES / v),
            if wide {
                rec_words_wide(v)
            } else {
                rec_words(v)
            },
        );
        // Words of values per record.
        let vw = rec - 4;
        let per_tok = nsub * rec;
        let packing = Packing {
            id: a.id,
            v,
            off,
            group,
            n_tok,
            per_tok,
            wide,
        };
        // A product's tiles (several per thread) share one packing per
        // thread: the same id is the same activations.
        if a.id != 0 && self.packed == Some(packing) {
            return;
        }
        self.packed = None;
        self.recs.resize(n_tok * per_tok, 0);
        let full = n_tok / group * group;
        for t in 0..n_tok {
            let (row, sums) = (a.row(t), a.row_sums(t));
            let bytes = as_bytes(row);
            // The group's first token, its size and this token's place in it.
            let (first, size, j) = if t < full {
                (t - t % group, group, t % group)
            } else {
                (t, 1, 0)
            };
            let recs = &mut self.recs[first * per_tok..(first + size) * per_tok];
            for q in 0..nsub {
                let r = &mut recs[(q * size + j) * rec..(q * size + j + 1) * rec];
                let values = &bytes[A::values_at(v, q)..][..v];
                if wide {
                    widen(&mut r[..v / 2], values);
                } else {
                    for (w, four) in r.iter_mut().zip(values.chunks_exact(4)) {
                        *w = u32::from_ne_bytes([four[0], four[1], four[2], four[3]]);
                    }
                }
                let (d, sum) = A::scale_sum(row, sums, v, q);
                r[vw] = (-off * i32::from(sum)) as u32;
                r[vw + 1] = d.to_bits();
                r[vw + 2] = (d * f32::from(sum)).to_bits();
                r[vw + 3] = 0;
            }
        }
        self.packed = Some(packing);
    }

    /// The records the last [`Scratch::pack_acts`] packed.
    ///
    /// # Panics
    /// When nothing was packed.
    pub(in crate::quant) fn packed_acts(&self) -> PackedActs<'_> {
        let p = self.packed.expect("strips: no packed activations");
        PackedActs {
            recs: &self.recs[..p.n_tok * p.per_tok],
            n_tok: p.n_tok,
            group: p.group,
            per_tok: p.per_tok,
        }
    }
}

/// One strip's repacked blocks, scales and minimums.
pub(in crate::quant) struct Strip<'s> {
    pub(in crate::quant) lines: &'s [Line],
    pub(in crate::quant) dw: &'s [f32],
    pub(in crate::quant) dm: &'s [f32],
    /// The integer sub-block scales ([`repack_int`]; empty otherwise).
    pub(in crate::quant) isc: &'s [i32],
    /// Q2_K's minimum pairs ([`repack_q2_k_int`]; empty otherwise).
    pub(in crate::quant) imin: &'s [i32],
}

impl Scratch {
    /// Strip `i` of the repacked weights: `nsub` sub-blocks of `lps` lines
    /// per row.
    pub(in crate::quant) fn strip(&self, i: usize, nsub: usize, lps: usize) -> Strip<'_> {
        let at = i * nsub;
        Strip {
            lines: &self.lines[at * lps..(at + nsub) * lps],
            dw: &self.dw[at * STRIP..(at + nsub) * STRIP],
            dm: &self.dm[at * STRIP..(at + nsub) * STRIP],
            isc: &[],
            imin: &[],
        }
    }

    /// Strip `i` of weights repacked by [`repack_q2_k_int`] (`nsub`
    /// sub-blocks of 16 values per row).
    pub(in crate::quant) fn strip_q2_k_int(&self, i: usize, nsub: usize) -> Strip<'_> {
        let (at, pairs) = (i * nsub, nsub / 2);
        Strip {
            imin: &self.imin[i * pairs * STRIP..(i + 1) * pairs * STRIP],
            dm: &self.dm[at * STRIP..(at + nsub) * STRIP],
            ..self.strip_int(i, nsub)
        }
    }

    /// Strip `i` of weights repacked by [`repack_int`] (`nsub` sub-blocks of
    /// 16 values per row).
    pub(in crate::quant) fn strip_int(&self, i: usize, nsub: usize) -> Strip<'_> {
        let at = i * nsub;
        Strip {
            lines: &self.lines[at * K16_LINES..(at + nsub) * K16_LINES],
            dw: &self.dw[at * STRIP..(at + nsub) * STRIP],
            dm: &[],
            isc: &self.isc[at * STRIP..(at + nsub) * STRIP],
            imin: &[],
        }
    }
}
