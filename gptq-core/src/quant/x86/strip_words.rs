//! Q8_0's strips as i16 lines, for the AVX2 prompt kernel that multiplies
//! them with `vpmaddwd` (`avx2::strip_words`): line `k` of a block's half
//! `h` holds values `4k..4k + 4` of the half's eight rows, widened to i16,
//! rows 0, 1, 4, 5 in its first 32 bytes and rows 2, 3, 6, 7 in its last
//! 32 ([`Values::Q8Words`]); each strip holds all of half 0's lines, block by
//! block, then half 1's, so that a pass over one half reads one sequential
//! stream (with the halves interleaved line by line, as the sign trick's
//! strips are, an asm copy of the loop ran 1.1–1.3× slower). One broadcast of a token's four activations (as
//! i16, 64 bits) then feeds a `madd` of each half line, and one `vphaddd`
//! of the two sums puts the eight rows' block sums in order (as fast as
//! two blends, a shuffle and an add in an asm copy of the loop; LLVM turned
//! those into `vphaddd` and a shuffle).
//! As many lines as the sign trick's `w` and `|w|` (sixteen per block),
//! made per call and never kept ([`Values::worth_keeping`]).

use super::strips::{Line, STRIP, Scratch, reserve_strips, with_scratch};
use super::transpose::{Source, Values, repack_transposed};
use crate::quant::types::{BlockQ8_0, QK};

/// Lines per block and half strip.
pub(in crate::quant) const HALF_LINES: usize = QK / 4;

/// Lines per block.
pub(in crate::quant) const WORD_LINES: usize = 2 * HALF_LINES;

/// Runs `f` with this thread's scratch holding `rows` rows of `nb` blocks of
/// `w` as i16 strips (the transposition in registers where the CPU has AVX2
/// and F16C, else [`repack_strip_words`]); `dm` is zero.
pub(in crate::quant) fn with_word_strips<R>(
    w: &[BlockQ8_0],
    rows: usize,
    nb: usize,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    with_scratch(|s| {
        reserve_strips(s, rows, nb, WORD_LINES, true);
        let src = Source::Q8_0(w, Values::Q8Words);
        for i in 0..rows.div_ceil(STRIP) {
            let bufs = (&mut s.lines[..], &mut s.dw[..], &mut s.dm[..]);
            if !repack_transposed(src, (rows, nb, i), bufs) {
                let bufs = (&mut s.lines[..], &mut s.dw[..], &mut s.dm[..]);
                repack_strip_words(w, (rows, nb, i), bufs);
            }
        }
        f(s)
    })
}

/// Where row `n` (0..16) of a strip puts its four values of a line: its
/// half `n / 8` and the byte offset in the line.
pub(in crate::quant) fn word_place(n: usize) -> (usize, usize) {
    let m = n % 8;
    (n / 8, 32 * ((m / 2) % 2) + 8 * ((m / 4) * 2 + m % 2))
}

/// Strip `i` of [`with_word_strips`] by a plain walk (the transposition's
/// twin, and the path without AVX2): rows `16i..` (at most 16) of `rows`.
pub(in crate::quant) fn repack_strip_words(
    w: &[BlockQ8_0],
    (rows, nb, i): (usize, usize, usize),
    (lines, dw, dm): (&mut [Line], &mut [f32], &mut [f32]),
) {
    let (r0, r1) = (i * STRIP, rows.min(i * STRIP + STRIP));
    assert!(r0 < r1 && w.len() >= r1 * nb, "repack_strip_words: rows");
    let lines = &mut lines[i * nb * WORD_LINES..(i + 1) * nb * WORD_LINES];
    let (halves, _) = lines.as_chunks_mut::<HALF_LINES>();
    let (dw, dm) = (
        &mut dw[i * nb * STRIP..(i + 1) * nb * STRIP],
        &mut dm[i * nb * STRIP..(i + 1) * nb * STRIP],
    );
    for (n, row) in w[r0 * nb..r1 * nb].chunks_exact(nb).enumerate() {
        let (h, at) = word_place(n);
        for (b, blk) in row.iter().enumerate() {
            for (k, four) in blk.qs.chunks_exact(4).enumerate() {
                let line = &mut halves[h * nb + b][k].0[at..at + 8];
                for (dst, &v) in line.chunks_exact_mut(2).zip(four) {
                    dst.copy_from_slice(&i16::from(v).to_le_bytes());
                }
            }
            (dw[b * STRIP + n], dm[b * STRIP + n]) = (blk.d.to_f32(), 0.0);
        }
    }
}
