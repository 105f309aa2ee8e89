//! Decode products with AVX-512 VBMI and GFNI: four weight blocks per
//! unpack.
//!
//! On the generic AVX-512 path a decode product is bound by instructions, not
//! memory: every block pair pays its own unpack and f16 scale conversion, about
//! twelve vector µops for 36 bytes of Q4_0, which one core issues slower than
//! it can stream the bytes. Here four blocks (a *quad*) share each unpack, and
//! the bytes are gathered with VBMI's two-source byte permute (`vpermt2b`),
//! which pulls any 64 of 128 loaded bytes into place in one µop:
//!
//! - Q4_0 (72 bytes, two loads): one `vpermt2b` gathers the four blocks' 64
//!   packed bytes; an `and` keeps the low nibbles (elements 0..16 of each
//!   block) and one `gf2p8affine` shifts every byte right by four (elements
//!   16..32);
//! - Q8_0 (136 bytes, three loads): two `vpermt2b` (and one masked `vpermb`
//!   for the last 8 bytes) gather every block's elements 0..16 into one
//!   register and 16..32 into another, then an `xor` each makes them unsigned.
//!
//! Both walks over the quads give a token the same sums whether it is alone
//! in a call or one of several (what batched decoding promises, `batch.rs`;
//! `quant::twins` and the harness's `check_decode_matmul` test it), each in
//! its own order:
//!
//! - [`group_walk`] (Q8_0): sixteen blocks per float step, each block's exact
//!   dot in one lane; several tokens share a transposition of the weights
//!   that makes their dots and float steps about a third of the quad walk's.
//! - [`quad_walk`] (Q4_0): each quad's dots and float step in four lanes per
//!   block. Q4_0's single-token decode is bound by the shuffle port, and the
//!   group walk's lane reduction cost it 6–11 % there (`gptq bench -n 128`,
//!   124M, the builds alternated), so Q4_0 keeps this walk.
//!
//! These are the decode products of the `avx512+vbmi` kernel table (any
//! number of tokens), and its Q8_0 and Q4_0 products of fewer tokens than
//! the strips take (prompts' included: ahead of the generic path's register
//! tiles there, see `gemm_q8_0`); from 24 (Q8_0) or 32 (Q4_0) tokens on, 16
//! with a kept repack, the strips run.

use std::arch::x86_64::*;

use super::super::tile::OutTile;
use super::super::types::{BlockQ4_0, BlockQ8_0};
use super::super::x86::driver::prefill_entry;

mod group_walk;
mod quad_walk;

pub(in crate::quant) use group_walk::gemv_q8_0;
pub(in crate::quant) use quad_walk::gemv_q4_0;

/// Blocks per quad (one unpack).
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
/// `stride·k + 1`) in word `k` (`k < 4`).
const fn scales(stride: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 8 {
        idx[i] = (stride * (i / 2) + i % 2) as u8;
        i += 1;
    }
    idx
}

/// Q4_0: the packed bytes of the four blocks (each 18 bytes, `qs` after the
/// 2-byte scale).
const Q4_PACKED: [u8; 64] = gather(18, 2);
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
/// call: unsigned bytes of elements `0..16` and `16..32` of each block (as
/// the walks hold the activations) and the four f16 scales in words
/// `0..4` (Q8_0) or the bytes they are in (Q4_0): the type's group scales
/// (`group_walk::scales_q8`, `quad_walk::lane_scales`) read them.
#[derive(Clone, Copy)]
struct Unpacked {
    lo: __m512i,
    hi: __m512i,
    d16: __m512i,
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
    Unpacked {
        lo: _mm512_and_si512(packed, _mm512_set1_epi8(0x0f)),
        hi: _mm512_gf2p8affine_epi64_epi8::<0>(packed, _mm512_set1_epi64(SHR4)),
        // The quad walk gathers the scales from these bytes (`lane_scales`).
        d16: z1,
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
    Unpacked {
        lo: _mm512_xor_si512(lo, flip),
        hi: _mm512_xor_si512(hi, flip),
        d16: _mm512_permutex2var_epi8(z1, idx(&Q8_SCALES), z2),
    }
}
