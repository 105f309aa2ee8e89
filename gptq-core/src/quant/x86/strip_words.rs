//! The signed 32-value types' strips as i16 lines (Q8_0, IQ4_NL, IQ4_XS's
//! runs of 32), for the AVX2 prompt kernel that multiplies them with
//! `vpmaddwd` (`avx2::strip_words`): line `k` of a run's half `h` holds
//! values `4k..4k + 4` of the half's eight rows, widened to i16, rows 0, 1,
//! 4, 5 in its first 32 bytes and rows 2, 3, 6, 7 in its last 32
//! ([`Values::Q8Words`](super::transpose::Values::Q8Words)); each strip holds all of half 0's lines, run by
//! run, then half 1's, so that a pass over one half reads one sequential
//! stream (with the halves interleaved line by line, as the other strips
//! are, an asm copy of the kernel's loop ran 1.1–1.3× slower). One
//! broadcast of a token's four activations (as i16, 64 bits) then feeds a
//! `madd` of each half line, and one `vphaddd` of the two sums puts the
//! eight rows' sums in order (as fast as two blends, a shuffle and an add
//! in an asm copy of the loop; LLVM turned those into `vphaddd` and a
//! shuffle). Sixteen lines per run, made per call and never kept
//! ([`Values::worth_keeping`](super::transpose::Values::worth_keeping)).

use super::strips::{Line, STRIP, Scratch, Unpack, reserve_strips, with_scratch, words_source};
use super::transpose::repack_transposed;
use crate::quant::types::QK;

/// Lines per run of 32 values and half strip.
pub(in crate::quant) const HALF_LINES: usize = QK / 4;

/// Lines per run of 32 values.
pub(in crate::quant) const WORD_LINES: usize = 2 * HALF_LINES;

/// Runs `f` with this thread's scratch holding `rows` rows of `nb` blocks of
/// `w` (`S` runs of 32 values each, as `unpack` gives them: `q8_0_signed`,
/// `iq4_nl_signed` or `iq4_xs_signed`) as i16 strips: the transposition in
/// registers where the CPU has AVX2 and F16C, else [`repack_strip_words`];
/// `dm` is zero.
pub(in crate::quant) fn with_word_strips<W: 'static, const S: usize, R>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: impl Unpack<W, QK, S> + 'static,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    with_scratch(|s| {
        reserve_strips(s, rows, nb * S, WORD_LINES, true);
        let src = words_source(w, &unpack);
        for i in 0..rows.div_ceil(STRIP) {
            let bufs = (&mut s.lines[..], &mut s.dw[..], &mut s.dm[..]);
            if !src.is_some_and(|src| repack_transposed(src, (rows, nb, i), bufs)) {
                let bufs = (&mut s.lines[..], &mut s.dw[..], &mut s.dm[..]);
                repack_strip_words(w, (rows, nb, i), unpack, bufs);
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
pub(in crate::quant) fn repack_strip_words<W, const S: usize>(
    w: &[W],
    (rows, nb, i): (usize, usize, usize),
    unpack: impl Unpack<W, QK, S>,
    (lines, dw, dm): (&mut [Line], &mut [f32], &mut [f32]),
) {
    let (r0, r1) = (i * STRIP, rows.min(i * STRIP + STRIP));
    assert!(r0 < r1 && w.len() >= r1 * nb, "repack_strip_words: rows");
    let nrun = nb * S;
    let lines = &mut lines[i * nrun * WORD_LINES..(i + 1) * nrun * WORD_LINES];
    let (halves, _) = lines.as_chunks_mut::<HALF_LINES>();
    let (dw, dm) = (
        &mut dw[i * nrun * STRIP..(i + 1) * nrun * STRIP],
        &mut dm[i * nrun * STRIP..(i + 1) * nrun * STRIP],
    );
    for (n, row) in w[r0 * nb..r1 * nb].chunks_exact(nb).enumerate() {
        let (h, at) = word_place(n);
        for (b, blk) in row.iter().enumerate() {
            for (j, (d, _, u)) in unpack(blk).iter().enumerate() {
                let q = b * S + j;
                for (k, four) in u.chunks_exact(4).enumerate() {
                    let line = &mut halves[h * nrun + q][k].0[at..at + 8];
                    for (dst, &v) in line.chunks_exact_mut(2).zip(four) {
                        dst.copy_from_slice(&i16::from(v as i8).to_le_bytes());
                    }
                }
                (dw[q * STRIP + n], dm[q * STRIP + n]) = (*d, 0.0);
            }
        }
    }
}
