//! Decode products (one token) with AVX-512 VBMI and GFNI: four weight blocks
//! per step instead of two.
//!
//! On the generic AVX-512 path a decode product is bound by instructions, not
//! memory: every block pair pays its own unpack and f16 scale conversion, about
//! twelve vector µops for 36 bytes of Q4_0, which one core issues slower than
//! it can stream the bytes. Here four blocks share each step, and the bytes
//! are gathered with VBMI's two-source byte permute (`vpermt2b`), which pulls
//! any 64 of 128 loaded bytes into place in one µop:
//!
//! - Q4_0 (72 bytes, two loads): one `vpermt2b` gathers the four blocks' 64
//!   packed bytes; an `and` keeps the low nibbles (elements 0..16 of each
//!   block) and one `gf2p8affine` shifts every byte right by four (elements
//!   16..32);
//! - Q8_0 (136 bytes, three loads): two `vpermt2b` (and one masked `vpermb`
//!   for the last 8 bytes) gather every block's elements 0..16 into one
//!   register and 16..32 into another, then an `xor` each makes them unsigned;
//! - both: two `vpdpbusd` sum the four blocks' integer dots into four lanes
//!   each, and one byte permute and one `vcvtph2ps` turn the four f16 scales
//!   into lanes. The activations are arranged once per call to match.
//!
//! About eleven vector µops per step for Q4_0's 72 bytes and thirteen for Q8_0's
//! 136, half and two thirds of the generic path's count per byte.
//!
//! These are the decode products of the `avx512+vbmi` kernel table (any
//! number of tokens, each token's sums the ones it gets alone), and its
//! Q8_0 and Q4_0 products of fewer tokens than the strips take (prompts'
//! included: ahead of the generic path's register tiles there, see
//! `gemm_q8_0`); from 24 (Q8_0) or 32 (Q4_0) tokens on, 16 with a kept
//! repack, the strips run.

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::prefetch;
use super::super::scratch::with_prepared;
use super::super::tile::{OutTile, QuantActs};
use super::super::types::{BlockQ4_0, BlockQ8_0};
use super::super::x86::driver::prefill_entry;

/// Blocks per step.
const QB: usize = 4;

// Q8_0 and Q4_0 products: [`gemv_q8_0`] / [`gemv_q4_0`] below the strips (16
// tokens, `x86::strips::MIN_TOKENS_TRANSPOSED`), the AVX-512 strips from
// there. Below the
// strips the decode walk is ahead of the generic path's register tiles
// (`gptq bench -p N -n 0`, 124M, 2 threads, alternated: Q8_0 pp8 1.10–1.30×,
// pp16 1.11–1.15×, pp25 1.11–1.13×; Q4_0 pp8 1.18–1.22×, pp25 1.10–1.29×),
// and a token's sums then do not depend on how many tokens share the call.
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c",
    use_strips_transposed,
    gemm_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    super::strip::gemm_q8_0,
    gemv_q8_0
);
prefill_entry!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c",
    use_strips_transposed,
    gemm_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    super::strip::gemm_q4_0,
    gemv_q4_0
);

/// One token's activations for four blocks, in the order the weights unpack
/// to: block `k`'s elements `0..16` at bytes `16k..16k + 16` of `lo` and its
/// elements `16..32` at the same bytes of `hi`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Quad {
    lo: __m512i,
    hi: __m512i,
    /// `-off·Σa` of block `k` in lane `4k` (the weights' unsigned offset),
    /// zero elsewhere.
    c: __m512i,
    /// Block `k`'s activation scale in lanes `4k..4k + 4`.
    d: __m512,
}

/// Quads kept on the stack (64 KiB): one token's for every product up to
/// 32768 columns; several tokens' of GPT-2's products (42 tokens of 768
/// columns, 10 of 3072) go through one pass over the weights together.
const STACK_QUADS: usize = 256;

/// Tokens whose sums one pass over a row keeps in registers: eight
/// accumulators, the unpacked quad (three registers) and the temporaries of
/// [`dot_acc`] fit AVX-512's 32 vector registers, so up to eight sessions
/// share each unpack (the activations are memory operands).
const TG: usize = 8;

thread_local! {
    /// Each thread's quads for wider products, taken by a call and put back
    /// after it.
    static QUADS: Cell<Vec<Quad>> = const { Cell::new(Vec::new()) };
}

/// Token `t`'s activations of quad `q` for weights offset by `off` (a partial
/// last quad padded with zero activations and scales).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn quad(a: &QuantActs<'_>, off: i32, t: usize, q: usize) -> Quad {
    let (blocks, sums) = (a.row(t), a.row_sums(t));
    let (mut lo, mut hi) = ([0i8; 64], [0i8; 64]);
    let (mut c, mut d) = ([0i32; 16], [0.0f32; 16]);
    for k in 0..QB.min(a.nb - q * QB) {
        let b = &blocks[q * QB + k];
        lo[16 * k..16 * k + 16].copy_from_slice(&b.qs[..16]);
        hi[16 * k..16 * k + 16].copy_from_slice(&b.qs[16..]);
        c[4 * k] = -off * i32::from(sums[q * QB + k]);
        d[4 * k..4 * k + 4].fill(b.d.to_f32());
    }
    // SAFETY: each array is 64 readable bytes; the loads are unaligned.
    unsafe {
        Quad {
            lo: _mm512_loadu_si512(lo.as_ptr().cast()),
            hi: _mm512_loadu_si512(hi.as_ptr().cast()),
            c: _mm512_loadu_si512(c.as_ptr().cast()),
            d: _mm512_loadu_ps(d.as_ptr()),
        }
    }
}

/// Byte permute indices: byte `16k + j` (`k < 4`, `j < 16`) takes byte
/// `stride·k + first + j` of the loaded bytes (index 64 and up reads the
/// second register).
const fn gather(stride: usize, first: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        idx[i] = ((stride * (i / 16) + first + i % 16) % 128) as u8;
        i += 1;
    }
    idx
}

/// Byte permute indices putting block `k`'s f16 scale (bytes `stride·k` and
/// `stride·k + 1`) in words `4k..4k + 4` of the low 256 bits.
const fn scales(stride: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        idx[i] = (stride * (i / 8) + i % 2) as u8;
        i += 1;
    }
    idx
}

/// Q4_0: the packed bytes of the four blocks (each 18 bytes, `qs` after the
/// 2-byte scale).
const Q4_PACKED: [u8; 64] = gather(18, 2);
const Q4_SCALES: [u8; 64] = scales(18);
/// Q8_0: each block's elements `0..16` and `16..32` (each block 34 bytes).
/// The last 8 bytes of `hi` (block 3's elements 24..32, bytes 128..136) are
/// past the two registers: [`Q8_TAIL`] fetches them from a third.
const Q8_LO: [u8; 64] = gather(34, 2);
const Q8_HI: [u8; 64] = gather(34, 18);
const Q8_SCALES: [u8; 64] = scales(34);
/// Bytes 56..64 of `hi` from bytes 0..8 of the third register.
const Q8_TAIL: [u8; 64] = {
    let mut idx = [0u8; 64];
    let mut i = 56;
    while i < 64 {
        idx[i] = (i - 56) as u8;
        i += 1;
    }
    idx
};
const Q8_TAIL_MASK: u64 = 0xff << 56;

/// The GF(2) matrix of `x >> 4` on each byte for `gf2p8affine`: output bit
/// `i` (matrix byte `7 - i`) is input bit `i + 4` for `i < 4`, zero above.
const SHR4: i64 = 0x1020_4080_0000_0000;

/// 64 index bytes as a register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn idx(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// One quad of weights, unpacked once and then shared by every token of a
/// call: unsigned bytes of elements `0..16` and `16..32` of each block (in
/// the order [`Quad`] holds the activations) and the four scales in lanes.
#[derive(Clone, Copy)]
struct Unpacked {
    lo: __m512i,
    hi: __m512i,
    wd: __m512,
}

/// `acc` plus the four blocks' products of `u` with one token's `quad`. The
/// same instructions for every token count: a token's sum is the same
/// whether it is alone in a call or one of several.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn dot_acc(u: &Unpacked, quad: &Quad, acc: __m512) -> __m512 {
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(quad.c, u.lo, quad.lo), u.hi, quad.hi);
    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), quad.d), u.wd, acc)
}

/// Reads `n` bytes (at most 192) from `p` into three registers, zero past
/// `n`: masked loads, so nothing past the `n` bytes is read.
///
/// # Safety
/// `p` points to `n` readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
unsafe fn load_partial(p: *const u8, n: usize) -> [__m512i; 3] {
    let mask = |from: usize| match n.saturating_sub(from) {
        0 => 0,
        m if m >= 64 => u64::MAX,
        m => (1u64 << m) - 1,
    };
    let load = |from: usize| match mask(from) {
        0 => _mm512_setzero_si512(),
        // SAFETY: the masked load reads only bytes `from..n` of the caller's
        // readable range; lanes past it are zero and not read.
        m => unsafe { _mm512_maskz_loadu_epi8(m, p.add(from).cast()) },
    };
    [load(0), load(64), load(128)]
}

/// Generates a decode product: `$unpack` turns one quad's loaded bytes into
/// [`Unpacked`] weights, `$full` loads a whole quad's bytes.
macro_rules! gemv {
    ($name:ident, $blk:ty, $off:expr, $unpack:ident, $full:ident, $hints:expr) => {
        /// `y = w · x` for each of `a.n_tok` tokens as a decode product: every
        /// output row walks its weight blocks four at a time, unpacks each
        /// quad once and accumulates it into every token's sum (up to [`TG`]
        /// tokens in registers per pass over the row, which stays in L1 for
        /// the next group). Each token's result is bitwise the one it gets
        /// alone.
        #[target_feature(
            enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
        )]
        pub(in crate::quant) fn $name(w: &[$blk], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
            /// `T` tokens' sums of one row, from their prepared quads
            /// (`nq` per token, token-major).
            #[inline]
            #[target_feature(
                enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
            )]
            fn row<const T: usize>(w_row: &[$blk], quads: &[Quad], nq: usize) -> [f32; T] {
                let full = w_row.len() / QB;
                let (body, tail) = w_row.split_at(full * QB);
                let mut acc = [_mm512_setzero_ps(); T];
                for (k, blocks) in body.chunks_exact(QB).enumerate() {
                    for &b in $hints {
                        prefetch::stream(&blocks[b]);
                    }
                    let u = $unpack($full(blocks));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = dot_acc(&u, &quads[j * nq + k], *acc);
                    }
                }
                if !tail.is_empty() {
                    let (p, n) = (tail.as_ptr().cast(), size_of_val(tail));
                    // SAFETY: the tail's `n` bytes are readable; a partial
                    // quad is at most three blocks, under 192.
                    let u = $unpack(unsafe { load_partial(p, n) });
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = dot_acc(&u, &quads[j * nq + full], *acc);
                    }
                }
                acc.map(|v| _mm512_reduce_add_ps(v))
            }

            /// One token's sums of every row, as its own function (see the
            /// AVX2 decode product's `one`: inlined among the multi-token
            /// loops, the one-token loop streamed slower).
            #[inline(never)]
            #[target_feature(
                enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
            )]
            fn one(w: &[$blk], quads: &[Quad], nb: usize, out: &mut OutTile<'_>, t: usize) {
                let nq = nb.div_ceil(QB);
                for r in 0..out.rows() {
                    put(out, t, r, &row::<1>(&w[r * nb..(r + 1) * nb], quads, nq));
                }
            }

            let (nb, n_tok) = (a.nb, a.n_tok);
            assert!(w.len() >= out.rows() * nb, "gemv: weights too short");
            let nq = nb.div_ceil(QB);
            // Tokens whose quads fit the stack together (at least one).
            let group = (STACK_QUADS / nq).max(1);
            let mut t0 = 0;
            while t0 < n_tok {
                let g = group.min(n_tok - t0);
                with_prepared::<_, _, STACK_QUADS>(
                    g * nq,
                    &QUADS,
                    |i| quad(a, $off, t0 + i / nq, i % nq),
                    |quads| {
                        if g == 1 {
                            return one(w, quads, nb, out, t0);
                        }
                        for r in 0..out.rows() {
                            let wr = &w[r * nb..(r + 1) * nb];
                            let mut s = 0;
                            while s < g {
                                let m = (g - s).min(TG);
                                let q = &quads[s * nq..(s + m) * nq];
                                let t = t0 + s;
                                match m {
                                    1 => put(out, t, r, &row::<1>(wr, q, nq)),
                                    2 => put(out, t, r, &row::<2>(wr, q, nq)),
                                    3 => put(out, t, r, &row::<3>(wr, q, nq)),
                                    4 => put(out, t, r, &row::<4>(wr, q, nq)),
                                    5 => put(out, t, r, &row::<5>(wr, q, nq)),
                                    6 => put(out, t, r, &row::<6>(wr, q, nq)),
                                    7 => put(out, t, r, &row::<7>(wr, q, nq)),
                                    _ => put(out, t, r, &row::<TG>(wr, q, nq)),
                                }
                                s += m;
                            }
                        }
                    },
                );
                t0 += g;
            }
        }
    };
}

/// Writes tokens `t..t + T` of output row `r`.
#[inline]
fn put<const T: usize>(out: &mut OutTile<'_>, t: usize, r: usize, v: &[f32; T]) {
    for (j, &x) in v.iter().enumerate() {
        out.set(t + j, r, x);
    }
}

/// A whole Q4_0 quad's 72 bytes: bytes 0..64, then 64..72.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn full_q4(blocks: &[BlockQ4_0]) -> [__m512i; 3] {
    assert!(blocks.len() == QB);
    let p: *const u8 = blocks.as_ptr().cast();
    // SAFETY: four blocks are 72 readable bytes; the loads are unaligned.
    unsafe {
        [
            _mm512_loadu_si512(p.cast()),
            _mm512_castsi128_si512(_mm_loadl_epi64(p.add(64).cast())),
            _mm512_setzero_si512(),
        ]
    }
}

/// A whole Q8_0 quad's 136 bytes: bytes 0..64, 64..128, then 128..136.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn full_q8(blocks: &[BlockQ8_0]) -> [__m512i; 3] {
    assert!(blocks.len() == QB);
    let p: *const u8 = blocks.as_ptr().cast();
    // SAFETY: four blocks are 136 readable bytes; the loads are unaligned.
    unsafe {
        [
            _mm512_loadu_si512(p.cast()),
            _mm512_loadu_si512(p.add(64).cast()),
            _mm512_castsi128_si512(_mm_loadl_epi64(p.add(128).cast())),
        ]
    }
}

/// One Q4_0 quad: nibbles `q = w + 8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn unpack_q4([z1, z2, _]: [__m512i; 3]) -> Unpacked {
    let packed = _mm512_permutex2var_epi8(z1, idx(&Q4_PACKED), z2);
    let lo = _mm512_and_si512(packed, _mm512_set1_epi8(0x0f));
    let hi = _mm512_gf2p8affine_epi64_epi8::<0>(packed, _mm512_set1_epi64(SHR4));
    let d16 = _mm512_permutexvar_epi8(idx(&Q4_SCALES), z1);
    Unpacked {
        lo,
        hi,
        wd: _mm512_cvtph_ps(_mm512_castsi512_si256(d16)),
    }
}

/// One Q8_0 quad: weights made unsigned `w + 128`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn unpack_q8([z1, z2, z3]: [__m512i; 3]) -> Unpacked {
    let flip = _mm512_set1_epi8(-128);
    let lo = _mm512_permutex2var_epi8(z1, idx(&Q8_LO), z2);
    let hi = _mm512_mask_permutexvar_epi8(
        _mm512_permutex2var_epi8(z1, idx(&Q8_HI), z2),
        Q8_TAIL_MASK,
        idx(&Q8_TAIL),
        z3,
    );
    let d16 = _mm512_permutex2var_epi8(z1, idx(&Q8_SCALES), z2);
    Unpacked {
        lo: _mm512_xor_si512(lo, flip),
        hi: _mm512_xor_si512(hi, flip),
        wd: _mm512_cvtph_ps(_mm512_castsi512_si256(d16)),
    }
}

gemv!(gemv_q4_0, BlockQ4_0, 8, unpack_q4, full_q4, &[0]);
gemv!(gemv_q8_0, BlockQ8_0, 128, unpack_q8, full_q8, &[0, 2]);
