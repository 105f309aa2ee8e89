//! Float prefill (F32 and F16 weights) with the tokens in the vector lanes,
//! shared by the AVX2, AVX-512 and NEON paths (`float_panels!` makes each
//! path's kernel from its vector operations).
//!
//! The decode tiles (`avx2::gemm_f32`) take a weight row and a token along
//! the same axis: every (row, token) pair ends in a horizontal sum, and each
//! tile re-reads its tokens' activations. Here a call's activations are
//! transposed once into panels of one vector's worth of tokens (`LANES`),
//! value `k` of `LANES` tokens side by side, and a tile of `R` weight rows
//! times `TV` panels keeps `R·TV` accumulators: per value `k`, `TV` panel
//! loads, `R` broadcasts of one weight each and `R·TV` FMAs, with no
//! horizontal sum and the weights read once per tile straight from the file
//! (F16 rows are widened once per row group). Each output sums its `k` terms
//! in order in one lane.

use std::cell::Cell;

/// Prompts of at least this many tokens take the panels (below it the
/// decode tiles, whose work does not depend on a token group being full).
pub(in crate::quant) const MIN_FLOAT_TOKENS: usize = 16;

/// Bytes of transposed activations one chunk of tokens holds while every row
/// of the call passes over it (a quarter of Zen 4's L2, an eighth of Intel's):
/// the weights are read once per chunk. Measured on the 124M F32 shape
/// (pp512): 128 and 256 KiB even, 768 KiB 0.92×, 2 MiB 0.85×.
const CHUNK_BYTES: usize = 256 * 1024;

/// A thread's transposed activations and widened weight rows, kept between
/// calls.
#[derive(Default)]
pub(in crate::quant) struct PanelScratch {
    /// Panels of `lanes` tokens: panel `p`, value `k`, lane `l` at
    /// `(p·cols + k)·lanes + l`; zero beyond the chunk's tokens.
    pub(in crate::quant) xt: Vec<f32>,
    /// One group of weight rows widened to f32 (F16 weights).
    pub(in crate::quant) wf: Vec<f32>,
}

thread_local! {
    static PANELS: Cell<PanelScratch> = const {
        Cell::new(PanelScratch { xt: Vec::new(), wf: Vec::new() })
    };
}

/// Runs `f` with this thread's panel scratch (taken for the call, put back).
pub(in crate::quant) fn with_panels<R>(f: impl FnOnce(&mut PanelScratch) -> R) -> R {
    crate::quant::scratch::with_taken(&PANELS, f)
}

/// Tokens per chunk: whole groups of `group` tokens of `cols` f32 each within
/// [`CHUNK_BYTES`], at least one group.
pub(in crate::quant) fn chunk_tokens(cols: usize, group: usize) -> usize {
    crate::quant::tile::tokens_within(CHUNK_BYTES, 4 * cols, group)
}

/// Transposes tokens `t0..t1` of `x` (`cols` values each) into panels of
/// `lanes` tokens, padded with zeros to whole groups of `group` tokens:
/// `block` transposes `B` tokens × `B` values at a time (`block(src, stride,
/// dst, dst_stride)`: `B` rows of `src` `stride` apart, `B` values each, to
/// `B` runs of `B` at `dst_stride` apart; `lanes` a multiple of `B`), the
/// ragged edges go one value at a time.
pub(in crate::quant) fn pack_panels<const B: usize>(
    x: &[f32],
    cols: usize,
    (t0, t1): (usize, usize),
    (lanes, group): (usize, usize),
    xt: &mut Vec<f32>,
    mut block: impl FnMut(&[f32], usize, &mut [f32], usize),
) {
    assert!(lanes.is_multiple_of(B) && group.is_multiple_of(lanes));
    let n = (t1 - t0).div_ceil(group) * group;
    xt.clear();
    xt.resize(n * cols, 0.0);
    let src = &x[t0 * cols..t1 * cols];
    let (n_tok, cb) = (t1 - t0, cols - cols % B);
    let mut i = 0;
    while i < n_tok {
        let (p, l) = (i / lanes, i % lanes);
        let panel = &mut xt[p * cols * lanes..(p + 1) * cols * lanes];
        if i + B <= n_tok {
            for k in (0..cb).step_by(B) {
                block(
                    &src[i * cols + k..(i + B - 1) * cols + k + B],
                    cols,
                    &mut panel[k * lanes + l..(k + B - 1) * lanes + l + B],
                    lanes,
                );
            }
            for t in i..i + B {
                for k in cb..cols {
                    panel[k * lanes + t % lanes] = src[t * cols + k];
                }
            }
            i += B;
        } else {
            for (k, &v) in src[i * cols..(i + 1) * cols].iter().enumerate() {
                panel[k * lanes + l] = v;
            }
            i += 1;
        }
    }
}

/// Float weights as the panels read them: rows `r..r + g` of `k` values as
/// f32, borrowed (F32) or widened into `buf` (F16).
pub(in crate::quant) trait PanelWeights: Copy {
    /// Rows `r..r + g`.
    fn rows_f32<'a>(
        w: &'a [Self],
        k: usize,
        r: usize,
        g: usize,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32];
}

impl PanelWeights for f32 {
    #[inline]
    fn rows_f32<'a>(w: &'a [f32], k: usize, r: usize, g: usize, _: &'a mut Vec<f32>) -> &'a [f32] {
        &w[r * k..(r + g) * k]
    }
}

impl PanelWeights for half::f16 {
    #[inline]
    fn rows_f32<'a>(
        w: &'a [half::f16],
        k: usize,
        r: usize,
        g: usize,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        use half::slice::HalfFloatSliceExt;
        buf.clear();
        buf.resize(g * k, 0.0);
        w[r * k..(r + g) * k].convert_to_f32_slice(buf);
        buf
    }
}

/// Makes `panels_walk` (F32 or F16 weights) for one path from its vector
/// type and operations (`$load`: unaligned load of `$lanes` f32, `$set1`:
/// broadcast, `$fma(a, b, c)` = `a·b + c`, `$store`: unaligned store), with
/// tiles of `$r` rows times `$tv` panels; `$transpose` moves `$block` ×
/// `$block` values into the panels.
macro_rules! float_panels {
    (
        $feat:literal, $vec:ty, $lanes:expr, $r:expr, $tv:expr,
        $zero:path, $load:path, $set1:path, $fma:path, $store:path,
        $block:expr, $transpose:path
    ) => {
        /// `R` weight rows (`k` values each, in `w`) times `TV` panels (from
        /// `xt`): `res[i][p]` holds row `i`'s sums for panel `p`'s tokens.
        #[inline]
        #[target_feature(enable = $feat)]
        fn panel_tile<const R: usize>(
            w: &[f32],
            k: usize,
            xt: &[f32],
            res: &mut [[[f32; $lanes]; $tv]; R],
        ) {
            assert!(w.len() >= R * k && xt.len() >= $tv * k * $lanes);
            let (wp, xp) = (w.as_ptr(), xt.as_ptr());
            let mut acc = [[$zero(); $tv]; R];
            for c in 0..k {
                let mut xv = [$zero(); $tv];
                for (p, v) in xv.iter_mut().enumerate() {
                    // SAFETY: `(p·k + c + 1)·lanes <= tv·k·lanes <= xt.len()`
                    // (p < tv, c < k; asserted above); the load is unaligned.
                    *v = unsafe { $load(xp.add((p * k + c) * $lanes)) };
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    // SAFETY: `i·k + c < R·k <= w.len()` (asserted above).
                    let wb = $set1(unsafe { *wp.add(i * k + c) });
                    for (a, x) in row.iter_mut().zip(&xv) {
                        *a = $fma(wb, *x, *a);
                    }
                }
            }
            for (out, row) in res.iter_mut().zip(&acc) {
                for (o, a) in out.iter_mut().zip(row) {
                    // SAFETY: `o` is `lanes` writable f32; the store is unaligned.
                    unsafe { $store(o.as_mut_ptr(), *a) };
                }
            }
        }

        /// The walk: token chunks (transposed once per thread and chunk),
        /// row groups of `$r` (single rows at the end), every token group of
        /// the chunk per row group.
        #[inline]
        #[target_feature(enable = $feat)]
        fn panels_walk<W: $crate::quant::panels::PanelWeights>(
            w: &[W],
            x: &$crate::quant::tile::FloatActs<'_>,
            out: &mut $crate::quant::tile::OutTile<'_>,
        ) {
            use $crate::quant::panels::{chunk_tokens, pack_panels, with_panels};
            const GROUP: usize = $lanes * $tv;
            let (k, rows, n_tok) = (x.cols, out.rows(), x.n_tok);
            assert!(w.len() >= rows * k, "float panels: weights too short");
            with_panels(|s| {
                // Taken out of the scratch so that it and `s.xt` are
                // borrowed apart.
                let mut wf = std::mem::take(&mut s.wf);
                let chunk = chunk_tokens(k, GROUP);
                for t0 in (0..n_tok).step_by(chunk) {
                    let t1 = (t0 + chunk).min(n_tok);
                    pack_panels::<{ $block }>(
                        x.x,
                        k,
                        (t0, t1),
                        ($lanes, GROUP),
                        &mut s.xt,
                        |a, sa, b, sb| $transpose(a, sa, b, sb),
                    );
                    let mut r = 0;
                    while r < rows {
                        let g = if r + $r <= rows { $r } else { 1 };
                        let wr = W::rows_f32(w, k, r, g, &mut wf);
                        for (gi, xt) in s.xt.chunks_exact(GROUP * k).enumerate() {
                            let mut res = [[[0.0f32; $lanes]; $tv]; $r];
                            if g == $r {
                                panel_tile::<{ $r }>(wr, k, xt, &mut res);
                            } else {
                                let one: &mut [[[f32; $lanes]; $tv]; 1] =
                                    (&mut res[..1]).try_into().expect("one row");
                                panel_tile::<1>(wr, k, xt, one);
                            }
                            let tg = t0 + gi * GROUP;
                            for (i, row) in res.iter().take(g).enumerate() {
                                for (j, &v) in row.as_flattened().iter().enumerate() {
                                    if tg + j < t1 {
                                        out.set(tg + j, r + i, v);
                                    }
                                }
                            }
                        }
                        r += g;
                    }
                }
                s.wf = wf;
            })
        }
    };
}

pub(in crate::quant) use float_panels;
