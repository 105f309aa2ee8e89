//! The Q4_0 decode walk, quad by quad (see the parent module for the
//! unpacking): each quad's two `vpdpbusd` leave each block's dot in four
//! lanes, which go through the float step as they are (converted, times the
//! activation scale, then fused with the weight scale), for one token or
//! several alike; several tokens share each unpack.

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::super::prefetch;
use super::super::super::scratch::with_prepared;
use super::super::super::tile::{OutTile, QuantActs};
use super::super::super::types::BlockQ4_0;
use super::{QB, Unpacked, full_q4, idx, load_partial, put, unpack_q4};

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

/// Byte permute indices putting Q4_0 block `k`'s f16 scale (bytes `18k`
/// and `18k + 1` of a quad) in words `4k..4k + 4` of the low 256 bits.
const SCALES: [u8; 64] = {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        idx[i] = (18 * (i / 8) + i % 2) as u8;
        i += 1;
    }
    idx
};

/// A quad's four weight scales in lanes `4k..4k + 4` (from its first 64
/// bytes, which [`Unpacked`] keeps for Q4_0).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn lane_scales(u: &Unpacked) -> __m512 {
    let d16 = _mm512_permutexvar_epi8(idx(&SCALES), u.d16);
    _mm512_cvtph_ps(_mm512_castsi512_si256(d16))
}

/// `acc` plus the four blocks' products of `u` (scales `wd`) with one
/// token's `quad`. The
/// same instructions for every token count: a token's sum is the same
/// whether it is alone in a call or one of several.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
fn dot_acc(u: &Unpacked, wd: __m512, quad: &Quad, acc: __m512) -> __m512 {
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(quad.c, u.lo, quad.lo), u.hi, quad.hi);
    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), quad.d), wd, acc)
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
                    let wd = lane_scales(&u);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = dot_acc(&u, wd, &quads[j * nq + k], *acc);
                    }
                }
                if !tail.is_empty() {
                    let (p, n) = (tail.as_ptr().cast(), size_of_val(tail));
                    // SAFETY: the tail's `n` bytes are readable; a partial
                    // quad is at most three blocks, under 192.
                    let u = $unpack(unsafe { load_partial(p, n) });
                    let wd = lane_scales(&u);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = dot_acc(&u, wd, &quads[j * nq + full], *acc);
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

gemv!(gemv_q4_0, BlockQ4_0, 8, unpack_q4, full_q4, &[0]);
