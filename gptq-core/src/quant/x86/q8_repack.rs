//! Q8_0's strip repack in registers: each block's 32 bytes of eight rows
//! are one 8×8 transposition of 4-byte words (24 shuffles) into the eight
//! lines' halves, instead of [`repack_strip`](super::strips)'s generic walk,
//! which unpacks every block to an array and copies its values four bytes
//! at a time. The generic walk was a fifth of a 128-token AVX2 prefill
//! (124M Q8_0, `perf`) and a tenth before the AVX2 strips kept `|w|` beside
//! `w`; every x86 path (AVX2, AVX-512, AMX) repacks Q8_0 per call unless
//! `--repack` keeps the copies. Twin-tested against the generic walk (the
//! same lines, scales and minimums for every row a strip holds).

use std::arch::x86_64::*;

use super::strips::{Line, STRIP};
use crate::quant::prefetch;
use crate::quant::types::BlockQ8_0;

/// What a Q8_0 strip's lines hold (the layouts of `strips::repack`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::quant) enum Q8Layout {
    /// The signed bytes as stored, line `k` values `4k..4k + 4` of the 16
    /// rows (`q8_0_signed`: the AMX tiles).
    Signed,
    /// The bytes offset to `w + 128` (`q8_0_unsigned`: `vpdpbusd`).
    Unsigned,
    /// Line `2k + h`: half `h`'s eight rows' values `4k..4k + 4`, then their
    /// magnitudes (`q8_0_signed_abs`: the AVX2 sign trick).
    Magnitudes,
}

/// Repacks strip `i` (rows `16i..`, at most 16, of `rows` rows of `nb`
/// blocks) of `w` into `lines` (`nb` sub-blocks of `lps` lines: 8, or 16
/// for [`Q8Layout::Magnitudes`]), `dw` (the scales) and `dm` (zeros), as
/// the generic walk does; `false` (nothing written) where the CPU lacks
/// AVX2, for the caller's generic walk.
pub(in crate::quant) fn repack_q8_0_strip(
    w: &[BlockQ8_0],
    (rows, nb, i): (usize, usize, usize),
    layout: Q8Layout,
    (lines, dw, dm): (&mut [Line], &mut [f32], &mut [f32]),
) -> bool {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return false;
    }
    let lps = if layout == Q8Layout::Magnitudes {
        16
    } else {
        8
    };
    let (r0, r1) = (i * STRIP, rows.min(i * STRIP + STRIP));
    assert!(r0 < r1 && w.len() >= r1 * nb, "repack_q8_0_strip: rows");
    let lines = &mut lines[i * nb * lps..(i + 1) * nb * lps];
    let (dw, dm) = (
        &mut dw[i * nb * STRIP..(i + 1) * nb * STRIP],
        &mut dm[i * nb * STRIP..(i + 1) * nb * STRIP],
    );
    // SAFETY: AVX2 was detected above.
    unsafe { strip(&w[r0 * nb..r1 * nb], nb, layout, lines, dw, dm) };
    true
}

/// [`repack_q8_0_strip`] of the strip's rows `w` (`nb` blocks each, at
/// most 16 rows) into the strip's own `lines`, `dw` and `dm`.
#[target_feature(enable = "avx2")]
fn strip(
    w: &[BlockQ8_0],
    nb: usize,
    layout: Q8Layout,
    lines: &mut [Line],
    dw: &mut [f32],
    dm: &mut [f32],
) {
    let n = w.len() / nb;
    let lps = lines.len() / nb;
    assert!(n <= STRIP && lines.len() == nb * lps && dw.len() == nb * STRIP);
    assert!(dm.len() == dw.len() && w.len() == n * nb);
    let flip = _mm256_set1_epi8(i8::MIN);
    for b in 0..nb {
        for h in 0..STRIP / 8 {
            // Rows past the strip's last leave zeros (padding rows: their
            // scales are zero and their sums never stored).
            let mut r = [_mm256_setzero_si256(); 8];
            for (j, v) in r.iter_mut().enumerate() {
                let n_row = 8 * h + j;
                if n_row < n {
                    let blk = &w[n_row * nb + b];
                    prefetch::stream(blk);
                    // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
                    *v = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().cast()) };
                }
            }
            let t = transpose8(r);
            let sub = &mut lines[b * lps..(b + 1) * lps];
            for (k, &v) in t.iter().enumerate() {
                let (line, first, second) = match layout {
                    Q8Layout::Signed => (k, 32 * h, None),
                    Q8Layout::Unsigned => (k, 32 * h, None),
                    Q8Layout::Magnitudes => (2 * k + h, 0, Some(_mm256_abs_epi8(v))),
                };
                let v = if layout == Q8Layout::Unsigned {
                    _mm256_xor_si256(v, flip)
                } else {
                    v
                };
                let dst = sub[line].0.as_mut_ptr();
                // SAFETY: bytes `first..first + 32` (0 or 32) and, with
                // magnitudes, 32..64 of a 64-byte line: in bounds; the
                // stores are unaligned.
                unsafe {
                    _mm256_storeu_si256(dst.add(first).cast(), v);
                    if let Some(m) = second {
                        _mm256_storeu_si256(dst.add(32).cast(), m);
                    }
                }
            }
        }
        for (row, (d, m)) in dw[b * STRIP..b * STRIP + n]
            .iter_mut()
            .zip(&mut dm[b * STRIP..b * STRIP + n])
            .enumerate()
        {
            *d = w[row * nb + b].d.to_f32();
            *m = 0.0;
        }
    }
}

/// The 8×8 transposition of 4-byte words: output `k` holds word `k` of
/// each input `j` at word `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    // Pairs of rows interleaved by words, then by word pairs: each 128-bit
    // lane then holds one column of four rows; the lanes are swapped last.
    let lo32 = |a, b| _mm256_unpacklo_epi32(a, b);
    let hi32 = |a, b| _mm256_unpackhi_epi32(a, b);
    let (t0, t1) = (lo32(r[0], r[1]), hi32(r[0], r[1]));
    let (t2, t3) = (lo32(r[2], r[3]), hi32(r[2], r[3]));
    let (t4, t5) = (lo32(r[4], r[5]), hi32(r[4], r[5]));
    let (t6, t7) = (lo32(r[6], r[7]), hi32(r[6], r[7]));
    let lo64 = |a, b| _mm256_unpacklo_epi64(a, b);
    let hi64 = |a, b| _mm256_unpackhi_epi64(a, b);
    // Columns (0|4), (1|5), (2|6), (3|7) of rows 0..4 and of rows 4..8.
    let (u0, u1, u2, u3) = (lo64(t0, t2), hi64(t0, t2), lo64(t1, t3), hi64(t1, t3));
    let (u4, u5, u6, u7) = (lo64(t4, t6), hi64(t4, t6), lo64(t5, t7), hi64(t5, t7));
    let low = |a, b| _mm256_permute2x128_si256::<0x20>(a, b);
    let high = |a, b| _mm256_permute2x128_si256::<0x31>(a, b);
    [
        low(u0, u4),
        low(u1, u5),
        low(u2, u6),
        low(u3, u7),
        high(u0, u4),
        high(u1, u5),
        high(u2, u6),
        high(u3, u7),
    ]
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::quant::x86::strips::{q8_0_signed, q8_0_signed_abs, q8_0_unsigned, repack_strip};

    fn blocks(n: usize, seed: u64) -> Vec<BlockQ8_0> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        (0..n)
            .map(|_| BlockQ8_0 {
                d: f16::from_f32((next() % 2000) as f32 / 1000.0 - 1.0),
                // Every byte, -128 and 127 included.
                qs: std::array::from_fn(|_| next() as u8 as i8),
            })
            .collect()
    }

    /// The bytes of `lines` that belong to rows below `rows % 16` of the
    /// last strip (or every row): padding rows hold whatever each walk left.
    fn kept_bytes(lines: &[Line], layout: Q8Layout, rows: usize, nb: usize) -> Vec<u8> {
        let lps = if layout == Q8Layout::Magnitudes {
            16
        } else {
            8
        };
        let mut out = Vec::new();
        for (li, line) in lines.iter().enumerate() {
            let strip = li / (nb * lps);
            let k = li % lps;
            for (byte, &v) in line.0.iter().enumerate() {
                let row = match layout {
                    Q8Layout::Magnitudes => 8 * (k % 2) + (byte % 32) / 4,
                    _ => byte / 4,
                };
                if strip * STRIP + row < rows {
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn the_transposing_repack_equals_the_generic_walk() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this CPU has no AVX2 (the transposing repack does not run)");
            return;
        }
        for (rows, nb) in [(1, 1), (7, 3), (16, 1), (17, 2), (33, 5), (48, 24), (9, 96)] {
            let w = blocks(rows * nb, (rows * 100 + nb) as u64);
            for layout in [Q8Layout::Signed, Q8Layout::Unsigned, Q8Layout::Magnitudes] {
                let strips = rows.div_ceil(STRIP);
                let lps = if layout == Q8Layout::Magnitudes {
                    16
                } else {
                    8
                };
                let mut fast_lines = vec![Line([0xa5; 64]); strips * nb * lps];
                let mut fast_dw = vec![7.0; strips * nb * STRIP];
                let mut fast_dm = vec![7.0; strips * nb * STRIP];
                for i in 0..strips {
                    assert!(repack_q8_0_strip(
                        &w,
                        (rows, nb, i),
                        layout,
                        (&mut fast_lines, &mut fast_dw, &mut fast_dm),
                    ));
                }
                // The generic walk into buffers of the same sizes.
                let mut lines = vec![Line([0x5a; 64]); fast_lines.len()];
                let (mut dw, mut dm) = (vec![3.0; fast_dw.len()], vec![3.0; fast_dm.len()]);
                for i in 0..strips {
                    let bufs = (&mut lines[..], &mut dw[..], &mut dm[..]);
                    match layout {
                        Q8Layout::Signed => {
                            repack_strip::<_, 32, 1, false>(&w, (rows, nb, i), q8_0_signed, bufs)
                        }
                        Q8Layout::Unsigned => {
                            repack_strip::<_, 32, 1, false>(&w, (rows, nb, i), q8_0_unsigned, bufs)
                        }
                        Q8Layout::Magnitudes => {
                            repack_strip::<_, 64, 1, true>(&w, (rows, nb, i), q8_0_signed_abs, bufs)
                        }
                    }
                }
                let what = format!("{layout:?}, {rows} rows of {nb} blocks");
                assert_eq!(
                    kept_bytes(&fast_lines, layout, rows, nb),
                    kept_bytes(&lines, layout, rows, nb),
                    "lines: {what}"
                );
                for q in 0..strips * nb {
                    for n in 0..STRIP.min(rows - q / nb * STRIP) {
                        let at = q * STRIP + n;
                        assert_eq!(fast_dw[at].to_bits(), dw[at].to_bits(), "dw: {what}");
                        assert_eq!(fast_dm[at].to_bits(), dm[at].to_bits(), "dm: {what}");
                    }
                }
            }
        }
    }
}
