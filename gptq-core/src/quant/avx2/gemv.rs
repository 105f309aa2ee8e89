//! Decode products (one token) on AVX2.
//!
//! The tile walk of `tile_q8`/`tile_q4` at one row by one token redoes the
//! activation side of every block for every row (load, `|a|` or the Q4_0
//! offset, the f16 scale), and unpacks Q4_0 nibbles in four µops. Decode is the
//! one product where that matters: it is bound by instructions on AVX2 (about
//! nineteen vector µops per 18-byte Q4_0 block, more than one core can issue in
//! the time its share of memory bandwidth delivers the bytes). Here the
//! activation side is prepared once per call and read as memory operands, and
//! a Q4_0 block unpacks with one broadcast load, one shift and one `and`: about
//! twelve µops per block.

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::blocks::{BlockQ4_0, BlockQ8_0};
use super::super::prefetch;
use super::super::scratch::with_prepared;
use super::super::tile::{OutTile, QuantActs};
use super::{dot_q4_lanes, dot_q8_lanes, h2f, hsum, load_q8, q4_offset, q8_abs};

/// One activation block, prepared: its values, the per-block operand the
/// weight type's dot needs beside them (`|a|` for Q8_0, the offset term for
/// Q4_0), and its scale in every lane.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Prep {
    a: __m256i,
    x: __m256i,
    d: __m256,
}

/// Prepared blocks kept on the stack: every product up to 8192 columns.
const STACK_BLOCKS: usize = 256;

thread_local! {
    /// Each thread's prepared blocks for wider products, taken by a call and
    /// put back after it.
    static PREP: Cell<Vec<Prep>> = const { Cell::new(Vec::new()) };
}

/// A Q4_0 block's nibbles as bytes `q` (0..=15) in element order: the 16
/// packed bytes broadcast to both halves, the high half shifted down by four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4(b: &BlockQ4_0) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; the load is unaligned.
    let x = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
    let both = _mm256_broadcastsi128_si256(x);
    let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// Generates a decode product: `$wload` loads a weight block's 32 values,
/// `$aux` derives the activation operand `$dot(w, a, aux)` needs.
macro_rules! gemv {
    ($name:ident, $blk:ty, $wload:ident, $aux:ident, $dot:ident) => {
        /// `y = w · x` for one token, one row at a time (one sequential
        /// weight stream per thread) against the prepared activations.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) fn $name(w: &[$blk], a: &QuantActs<'_>, out: &mut OutTile<'_>) {
            let nb = a.nb;
            assert!(a.n_tok == 1, "gemv: one token");
            assert!(w.len() >= out.rows() * nb, "gemv: weights too short");
            let act = &a.row(0)[..nb];
            let prep = |b: usize| {
                let v = load_q8(&act[b]);
                Prep {
                    a: v,
                    x: $aux(v),
                    d: _mm256_set1_ps(h2f(act[b].d)),
                }
            };
            with_prepared::<_, _, STACK_BLOCKS>(nb, &PREP, prep, |prep| {
                for r in 0..out.rows() {
                    let mut acc = _mm256_setzero_ps();
                    for (wb, p) in w[r * nb..(r + 1) * nb].iter().zip(prep) {
                        prefetch::stream(wb);
                        let dot = _mm256_cvtepi32_ps($dot($wload(wb), p.a, p.x));
                        let wd = _mm256_set1_ps(h2f(wb.d));
                        acc = _mm256_fmadd_ps(_mm256_mul_ps(dot, p.d), wd, acc);
                    }
                    out.set(0, r, hsum(acc));
                }
            });
        }
    };
}

gemv!(gemv_q8_0, BlockQ8_0, load_q8, q8_abs, dot_q8_lanes);
gemv!(gemv_q4_0, BlockQ4_0, unpack_q4, q4_offset, dot_q4_lanes);
