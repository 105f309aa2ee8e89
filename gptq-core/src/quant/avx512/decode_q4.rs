//! Q4_0 decode (one token) with AVX-512 VBMI and GFNI: four weight blocks per
//! step instead of two.
//!
//! A Q4_0 decode product is bound by instructions, not memory, on the generic
//! AVX-512 path: every block pair pays a nibble unpack and an f16 scale
//! conversion of its own, about twelve vector µops for 36 bytes, which one
//! core issues slower than it can stream the bytes. Here four blocks (72
//! bytes, two loads) share each step:
//!
//! - one `vpermt2b` gathers the four blocks' 64 packed bytes from the two
//!   loads; an `and` keeps the low nibbles (elements 0..16 of each block) and
//!   one `gf2p8affine` shifts every byte right by four (elements 16..32), so
//!   the block's element order is kept by ordering the activations to match;
//! - two `vpdpbusd` sum the four blocks' integer dots into four lanes each;
//! - one `vpermw` and one `vcvtph2ps` turn the four f16 scales into lanes.
//!
//! About eleven vector µops for 72 bytes, half the generic path's count.

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::blocks::BlockQ4_0;
use super::super::prefetch;
use super::super::tile::{OutTile, QuantActs};

/// Blocks per step.
const QB: usize = 4;
/// Bytes of a Q4_0 block.
const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ4_0>();

/// Whether this CPU runs [`gemv_q4_0`] (checked once by std, then cached).
pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("gfni")
}

/// One token's activations for four blocks, in the order the weights unpack
/// to: block `k`'s elements `0..16` at bytes `16k..16k + 16` of `lo` and its
/// elements `16..32` at the same bytes of `hi`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Quad {
    lo: __m512i,
    hi: __m512i,
    /// `-8·Σa` of block `k` in lane `4k` (the nibble offset), zero elsewhere.
    c: __m512i,
    /// Block `k`'s activation scale in lanes `4k..4k + 4`.
    d: __m512,
}

thread_local! {
    /// Each thread's quads, taken by a call and put back after it, so that
    /// once grown a decode step allocates nothing.
    static QUADS: Cell<Vec<Quad>> = const { Cell::new(Vec::new()) };
}

/// Arranges token 0's activations into quads (a last partial quad padded with
/// zero activations and scales), in `quads` (cleared first).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn prepare(a: &QuantActs<'_>, quads: &mut Vec<Quad>) {
    let (blocks, sums) = (a.row(0), a.row_sums(0));
    quads.clear();
    for q in 0..a.nb.div_ceil(QB) {
        let (mut lo, mut hi) = ([0i8; 64], [0i8; 64]);
        let (mut c, mut d) = ([0i32; 16], [0.0f32; 16]);
        for k in 0..QB.min(a.nb - q * QB) {
            let b = &blocks[q * QB + k];
            lo[16 * k..16 * k + 16].copy_from_slice(&b.qs[..16]);
            hi[16 * k..16 * k + 16].copy_from_slice(&b.qs[16..]);
            c[4 * k] = -8 * i32::from(sums[q * QB + k]);
            d[4 * k..4 * k + 4].fill(b.d.to_f32());
        }
        // SAFETY: each array is 64 readable bytes; the loads are unaligned.
        quads.push(unsafe {
            Quad {
                lo: _mm512_loadu_si512(lo.as_ptr().cast()),
                hi: _mm512_loadu_si512(hi.as_ptr().cast()),
                c: _mm512_loadu_si512(c.as_ptr().cast()),
                d: _mm512_loadu_ps(d.as_ptr()),
            }
        });
    }
}

/// `vpermt2b` indices gathering the packed bytes of four blocks: byte
/// `16k + j` takes byte `18k + 2 + j` of the 72 (index 64 and up reads the
/// second load).
const fn qs_index() -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        idx[i] = (18 * (i / 16) + 2 + i % 16) as u8;
        i += 1;
    }
    idx
}
const QS_INDEX: [u8; 64] = qs_index();

/// `vpermw` indices putting block `k`'s f16 scale (word `9k` of the first
/// load) in words `4k..4k + 4` of the low 256 bits.
const D_INDEX: [u16; 32] = [
    0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0,
];

/// The GF(2) matrix of `x >> 4` on each byte for `gf2p8affine`: output bit
/// `i` (matrix byte `7 - i`) is input bit `i + 4` for `i < 4`, zero above.
const SHR4: i64 = 0x1020_4080_0000_0000;

/// The loop-invariant registers of [`gemv_q4_0`].
struct Consts {
    qs_idx: __m512i,
    d_idx: __m512i,
    nibble: __m512i,
    shr4: __m512i,
}

/// `acc` plus four blocks' products with `quad`, from the blocks' 72 bytes
/// (`z1`: bytes 0..64, `z2`: bytes 64..72 in its low lanes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn step(k: &Consts, z1: __m512i, z2: __m512i, quad: &Quad, acc: __m512) -> __m512 {
    let packed = _mm512_permutex2var_epi8(z1, k.qs_idx, z2);
    let lo = _mm512_and_si512(packed, k.nibble);
    let hi = _mm512_gf2p8affine_epi64_epi8::<0>(packed, k.shr4);
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(quad.c, lo, quad.lo), hi, quad.hi);
    let wd = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(
        k.d_idx, z1,
    )));
    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), quad.d), wd, acc)
}

/// `y = w · x` for one token: every output row walks its weight blocks four
/// at a time against the prepared quads.
///
/// Callers check [`supported`] and the AVX-512 path's own features first.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(super) fn gemv_q4_0(w: &[BlockQ4_0], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
    let nb = a.nb;
    assert!(a.n_tok == 1, "gemv_q4_0: one token");
    assert!(w.len() >= out.rows() * nb, "gemv_q4_0: weights too short");
    let mut quads = QUADS.take();
    prepare(a, &mut quads);
    // SAFETY: the index tables are 64 readable bytes; the loads are unaligned.
    let (qs_idx, d_idx) = unsafe {
        (
            _mm512_loadu_si512(QS_INDEX.as_ptr().cast()),
            _mm512_loadu_si512(D_INDEX.as_ptr().cast()),
        )
    };
    let k = Consts {
        qs_idx,
        d_idx,
        nibble: _mm512_set1_epi8(0x0f),
        shr4: _mm512_set1_epi64(SHR4),
    };
    let full = nb / QB;
    for r in 0..out.rows() {
        let (body, tail) = w[r * nb..(r + 1) * nb].split_at(full * QB);
        let mut acc = _mm512_setzero_ps();
        for (blocks, quad) in body.chunks_exact(QB).zip(&quads) {
            prefetch::stream(&blocks[0]);
            let p: *const u8 = blocks.as_ptr().cast();
            // SAFETY: `blocks` is four blocks, 72 readable bytes: the loads
            // read bytes 0..64 and 64..72; they are unaligned.
            let (z1, z2) = unsafe {
                (
                    _mm512_loadu_si512(p.cast()),
                    _mm512_castsi128_si512(_mm_loadl_epi64(p.add(64).cast())),
                )
            };
            acc = step(&k, z1, z2, quad, acc);
        }
        if let (false, Some(quad)) = (tail.is_empty(), quads.get(full)) {
            // At most three blocks (54 bytes): one masked load, nothing read
            // past them.
            let mask = (1u64 << (tail.len() * BLOCK_BYTES)) - 1;
            // SAFETY: the masked load reads only the `tail`'s bytes.
            let z1 = unsafe { _mm512_maskz_loadu_epi8(mask, tail.as_ptr().cast()) };
            acc = step(&k, z1, _mm512_setzero_si512(), quad, acc);
        }
        out.set(0, r, _mm512_reduce_add_ps(acc));
    }
    QUADS.set(quads);
}
