//! The loop every x86-64 tile kernel shares: the walk over an output tile
//! in register tiles of rows × tokens ([`drive!`](drive)), their stores
//! ([`put`]), and where the walk prefetches the weights
//! ([`prefetch_weights`]); the table entry of the Q8_K-partner types
//! ([`k_entry!`](k_entry)) and the prefill entries ([`prefill_entry!`](prefill_entry)). No `#[target_feature]` here: the macro expands
//! inside each path's kernel and the helpers are inlined into it.

use crate::quant::prefetch;
use crate::quant::tile::OutTile;

/// How far ahead of the block being read a multi-row tile's weights are
/// prefetched, in tiles of rows: a tile reads `R` consecutive rows, so the
/// same block of the rows `PREFETCH_TILES · R` further on lies that many
/// tile-sizes ahead in memory. (Decode's one-row walk is a single stream and
/// is hinted by [`prefetch::stream`] instead.)
const PREFETCH_TILES: usize = 2;

/// Prefetches the weight stream of an `R × T` tile at `p`, whose rows are
/// `row_bytes` long: decode's `1 × 1` walk as one stream
/// ([`prefetch::stream`]), else `PREFETCH_TILES` tiles ahead into L1.
#[inline(always)]
pub(in crate::quant) fn prefetch_weights<B>(p: &B, r: usize, t: usize, row_bytes: usize) {
    if r == 1 && t == 1 {
        prefetch::stream(p);
    } else {
        prefetch::ahead_l1(p, PREFETCH_TILES * r * row_bytes);
    }
}

/// Calls `$tile::<R, T>` over the output tile: rows in groups of `$r` (then
/// one at a time), tokens in groups of `$t` (then one at a time). A single
/// token (decode) is walked one row at a time instead, so each thread reads
/// its weights as one sequential stream, which the hardware prefetcher follows
/// best (measured on Q8_0: 1.5× the decode speed of 4-row tiles, whose four
/// interleaved streams the prefetcher keeps losing).
macro_rules! drive {
    ($tile:ident, $w:expr, $a:expr, $out:expr, $r:expr, $t:expr) => {{
        use $crate::quant::x86::driver::put;
        const R: usize = $r;
        const T: usize = $t;
        let rows = $out.rows();
        let n_tok = $a.n_tok;
        let mut r = 0;
        if n_tok > 1 {
            while r + R <= rows {
                let mut t = 0;
                while t + T <= n_tok {
                    let v = $tile::<R, T>($w, $a, r, t);
                    put(&mut *$out, r, t, &v);
                    t += T;
                }
                while t < n_tok {
                    let v = $tile::<R, 1>($w, $a, r, t);
                    put(&mut *$out, r, t, &v);
                    t += 1;
                }
                r += R;
            }
        }
        while r < rows {
            let mut t = 0;
            while t + T <= n_tok {
                let v = $tile::<1, T>($w, $a, r, t);
                put(&mut *$out, r, t, &v);
                t += T;
            }
            while t < n_tok {
                let v = $tile::<1, 1>($w, $a, r, t);
                put(&mut *$out, r, t, &v);
                t += 1;
            }
            r += 1;
        }
    }};
}
pub(in crate::quant) use drive;

/// Writes a `R × T` block of results at tile row `r`, token `t`.
#[inline]
pub(in crate::quant) fn put<const R: usize, const T: usize>(
    out: &mut OutTile<'_>,
    r: usize,
    t: usize,
    v: &[[f32; T]; R],
) {
    for (i, row) in v.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            out.set(t + j, r + i, x);
        }
    }
}

/// The table entry `$name` of a block type whose dot (`$dot::<T>`, one weight
/// row against `T` tokens of Q8_K activations) serves the K-quants and
/// IQ4_XS on one path (`$feat`: its `target_feature` list): decode through
/// `tile::each_row_alone` in a function of its own, prefill and batched
/// decode through `tile::each_row_grouped`, `$tg` tokens per weight pass.
macro_rules! k_entry {
    ($feat:literal, $path:literal, $tg:expr, $name:ident, $blk:ty, $dot:ident) => {
        #[doc = concat!($path, " product of ", stringify!($blk), " weights and Q8_K activations.")]
        #[target_feature(enable = $feat)]
        pub(in crate::quant) fn $name(
            w: &[$blk],
            a: &$crate::quant::tile::QuantActs<'_, $crate::quant::types::BlockQ8K>,
            out: &mut $crate::quant::tile::OutTile<'_>,
        ) {
            use $crate::quant::tile::{OutTile, QuantActs, each_row_alone, each_row_grouped};
            use $crate::quant::types::BlockQ8K;

            #[inline(never)]
            #[target_feature(enable = $feat)]
            fn one(w: &[$blk], a: &QuantActs<'_, BlockQ8K>, out: &mut OutTile<'_>) {
                each_row_alone(w, a, out, |wr, ys, _| $dot(wr, ys))
            }

            #[target_feature(enable = $feat)]
            fn grouped(w: &[$blk], a: &QuantActs<'_, BlockQ8K>, out: &mut OutTile<'_>) {
                each_row_grouped::<_, _, { $tg }>(
                    w,
                    a,
                    out,
                    |wr, ys, _| $dot(wr, ys),
                    |wr, ys, _| $dot(wr, ys),
                )
            }

            if a.n_tok == 1 {
                one(w, a, out)
            } else {
                grouped(w, a, out)
            }
        }
    };
}

pub(in crate::quant) use k_entry;

/// A prefill table entry `$name` on one path (`$feat`: its `target_feature`
/// list): the strips (`$strip`, see `x86::strips`) where `$use(w, n_tok)`
/// says (`use_strips_transposed` or `use_strips_few`: enough tokens to share the per-call
/// repack, or fewer where it is kept), else `$small` (the path's decode
/// walk, register tiles or grouped kernels).
macro_rules! prefill_entry {
    ($feat:literal, $use:ident, $name:ident, $blk:ty, $act:ty, $strip:path, $small:path) => {
        #[doc = concat!(
            "Prefill of ", stringify!($blk), " weights: the strips where `", stringify!($use),
            "` says, else `", stringify!($small), "`."
        )]
        #[target_feature(enable = $feat)]
        pub(in crate::quant) fn $name(
            w: &[$blk],
            a: &$crate::quant::tile::QuantActs<'_, $act>,
            out: &mut $crate::quant::tile::OutTile<'_>,
        ) {
            if $crate::quant::x86::strips::$use(w, a.n_tok) {
                $strip(w, a, out)
            } else {
                $small(w, a, out)
            }
        }
    };
}

pub(in crate::quant) use prefill_entry;
