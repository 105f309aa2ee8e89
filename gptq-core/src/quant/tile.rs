//! The arguments a matrix kernel receives: quantized or float activations and
//! the output tile it may write.

use std::marker::PhantomData;

use super::types::BlockQ8_0;

/// Activations quantized to the weights' activation partner `A` (Q8_0 for
/// the 32-element types): `n_tok` rows of `nb` blocks, with the sum of each
/// block's quantized values where `A` has them beside its blocks (for
/// kernels that offset weights to unsigned).
#[derive(Clone, Copy, Debug)]
pub struct QuantActs<'a, A = BlockQ8_0> {
    /// `n_tok · nb` blocks, token-major.
    pub blocks: &'a [A],
    /// `n_tok · nb` block sums, token-major, for a partner with
    /// [`ActBlock::SUMS`](super::types::ActBlock::SUMS); empty otherwise.
    pub sums: &'a [i16],
    /// Number of tokens (rows of activations).
    pub n_tok: usize,
    /// Blocks per token.
    pub nb: usize,
    /// Which quantization these are: unique per [`QuantActs::new`], so that
    /// what a thread prepares from them for one tile of a product serves its
    /// other tiles; 0 (a literal built without `new`) is never reused.
    /// (Only the x86 strips prepare such things.)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub id: u64,
}

impl<'a, A> QuantActs<'a, A> {
    /// `n_tok` rows of `nb` blocks (and their sums, or none), with a fresh
    /// [`id`](Self::id).
    pub fn new(blocks: &'a [A], sums: &'a [i16], n_tok: usize, nb: usize) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        QuantActs {
            blocks,
            sums,
            n_tok,
            nb,
            id,
        }
    }

    /// The blocks of token `t`.
    #[inline]
    pub fn row(&self, t: usize) -> &'a [A] {
        &self.blocks[t * self.nb..(t + 1) * self.nb]
    }

    /// The block sums of token `t` (empty for a partner without sums).
    #[inline]
    pub fn row_sums(&self, t: usize) -> &'a [i16] {
        if self.sums.is_empty() {
            return &[];
        }
        &self.sums[t * self.nb..(t + 1) * self.nb]
    }
}

/// Activation bytes a token chunk of [`each_row_grouped`] keeps in L1 while
/// every row of the tile passes over it: half of a 48 KiB L1 (Intel since
/// Ice Lake; Zen 4 has 32 KiB), the rest for the weight row and the stack.
/// Arm cores have 32 KiB (Cortex-A53/A72, Neoverse N1) to 64 KiB (Apple,
/// Neoverse V1): the same figure fits them.
const GROUPED_CHUNK_BYTES: usize = 24 * 1024;

/// Tokens per chunk of a grouped walk (rows innermost over a chunk of
/// tokens, see [`each_row_grouped`]): as many whole groups of `group` tokens
/// of `nb` blocks of `A` as fit [`GROUPED_CHUNK_BYTES`], at least one group.
/// One rule for every path that walks its tiles this way, so that they
/// chunk alike (and the tests that cross a chunk edge cross it on all).
#[inline(always)]
pub(in crate::quant) fn grouped_chunk_tokens<A>(nb: usize, group: usize) -> usize {
    tokens_within(GROUPED_CHUNK_BYTES, nb * std::mem::size_of::<A>(), group)
}

/// Tokens per chunk of any walk that keeps a chunk of tokens' activations in
/// a cache while rows pass over it (the grouped tiles', the strips', the
/// float panels'): as many whole groups of `group` tokens of `token_bytes`
/// each as fit `budget` bytes, at least one group.
#[inline(always)]
pub(in crate::quant) fn tokens_within(budget: usize, token_bytes: usize, group: usize) -> usize {
    // Never zero: a zero-sized token or group would make the walk stand still.
    let (token_bytes, group) = (token_bytes.max(1), group.max(1));
    (budget / token_bytes / group).max(1) * group
}

/// Every output of the tile: `TG` tokens at a time through `group`, which
/// unpacks each weight block once for all of them, and the remaining tokens
/// one at a time through `one`; both get the tokens' blocks and their block
/// sums ([`QuantActs::row_sums`], empty for Q8_K). The tokens go in chunks whose activations
/// stay in L1 while every row of the tile passes over them (rows outermost,
/// every row would read all tokens' activations from L2 again: 450 KB per
/// row at 512 tokens of 768 columns). The kernels behind both closures give
/// a token the same sums whatever the group (the same instructions in the
/// same order per token), so a token's result never depends on how many
/// tokens share the call: one entry serves prefill, decode and batched
/// decode.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(in crate::quant) fn each_row_grouped<W, A, const TG: usize>(
    w: &[W],
    a: &QuantActs<'_, A>,
    out: &mut OutTile<'_>,
    group: impl Fn(&[W], [&[A]; TG], [&[i16]; TG]) -> [f32; TG],
    one: impl Fn(&[W], [&[A]; 1], [&[i16]; 1]) -> [f32; 1],
) {
    assert!(w.len() >= out.rows() * a.nb, "weights too short");
    let chunk = grouped_chunk_tokens::<A>(a.nb, TG);
    let mut t0 = 0;
    while t0 < a.n_tok {
        let t1 = (t0 + chunk).min(a.n_tok);
        for (i, wr) in w.chunks_exact(a.nb).take(out.rows()).enumerate() {
            let mut t = t0;
            while t + TG <= t1 {
                let r = group(
                    wr,
                    std::array::from_fn(|j| a.row(t + j)),
                    std::array::from_fn(|j| a.row_sums(t + j)),
                );
                for (j, v) in r.into_iter().enumerate() {
                    out.set(t + j, i, v);
                }
                t += TG;
            }
            while t < t1 {
                let [r] = one(wr, [a.row(t)], [a.row_sums(t)]);
                out.set(t, i, r);
                t += 1;
            }
        }
        t0 = t1;
    }
}

/// Decode's walk: token 0's sum of every row of the tile through `dot`. Each
/// path calls it from a function of its own marked `#[inline(never)]`: a
/// one-token loop inlined beside [`each_row_grouped`]'s multi-token loops
/// streamed the weights up to 45 % slower with the same instructions (see
/// `avx2::gemv`).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(in crate::quant) fn each_row_alone<W, A>(
    w: &[W],
    a: &QuantActs<'_, A>,
    out: &mut OutTile<'_>,
    dot: impl Fn(&[W], [&[A]; 1], [&[i16]; 1]) -> [f32; 1],
) {
    assert!(w.len() >= out.rows() * a.nb, "weights too short");
    for (i, wr) in w.chunks_exact(a.nb).take(out.rows()).enumerate() {
        let [v] = dot(wr, [a.row(0)], [a.row_sums(0)]);
        out.set(0, i, v);
    }
}

/// Float activations: `n_tok` rows of `cols` values.
#[derive(Clone, Copy, Debug)]
pub struct FloatActs<'a> {
    /// `n_tok · cols` values, token-major.
    pub x: &'a [f32],
    /// Number of tokens.
    pub n_tok: usize,
    /// Values per token.
    pub cols: usize,
    /// The tokens are independent decode tokens (the sessions of a batched
    /// decode step): each (row, token) is summed exactly as for that token
    /// alone, not in a prefill kernel's order. (Only the x86 and aarch64
    /// paths have float prefill kernels that sum otherwise.)
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub decode: bool,
}

impl<'a> FloatActs<'a> {
    /// The values of token `t`.
    #[inline]
    pub fn row(&self, t: usize) -> &'a [f32] {
        &self.x[t * self.cols..(t + 1) * self.cols]
    }
}

/// The part of an output matrix `y[t][r]` (row stride `ldy`) that one kernel
/// call owns: every token, rows `r0 .. r0 + rows`. Several tiles of one output
/// are written in parallel (see [`RowSplit`]); each may only touch its own rows,
/// which `set` checks, so the writes never overlap.
pub struct OutTile<'a> {
    ptr: *mut f32,
    len: usize,
    ldy: usize,
    n_tok: usize,
    r0: usize,
    rows: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: an OutTile is a write handle to a set of elements that no other live
// tile can reach (disjoint row ranges, enforced by `set`'s bounds check), like a
// `&mut [f32]` split with `split_at_mut`; sending it to another thread is as safe
// as sending that slice.
unsafe impl Send for OutTile<'_> {}

impl<'a> OutTile<'a> {
    /// A tile covering all of `y` (`n_tok` rows of `ldy`, rows `0..ldy`).
    #[cfg(test)]
    pub fn whole(y: &'a mut [f32], n_tok: usize, ldy: usize) -> OutTile<'a> {
        assert!(y.len() >= n_tok * ldy);
        OutTile {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            ldy,
            n_tok,
            r0: 0,
            rows: ldy,
            _out: PhantomData,
        }
    }

    /// First row of the tile in the output.
    #[inline]
    pub fn r0(&self) -> usize {
        self.r0
    }

    /// Rows in the tile.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes `y[t][r0 + i] = v`.
    ///
    /// # Panics
    /// When `t >= n_tok` or `i >= rows`.
    #[inline]
    pub fn set(&mut self, t: usize, i: usize, v: f32) {
        assert!(t < self.n_tok && i < self.rows, "OutTile::set out of tile");
        let idx = t * self.ldy + self.r0 + i;
        assert!(idx < self.len);
        // SAFETY: `idx` is inside the slice this tile was made from (checked
        // above), and inside this tile's own rows, which no other tile covers.
        unsafe { *self.ptr.add(idx) = v }
    }

    /// The run `y[t][r0 + i .. r0 + i + n]`, for a kernel to store a
    /// register into (a full strip's 16 or 8 sums: one vector store, where
    /// [`set_run`](Self::set_run)'s copy of a run of any length was a call to
    /// `memmove`, 4 % of a 128-token prompt on AVX-512).
    ///
    /// # Panics
    /// When `t >= n_tok` or `i + n > rows`.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn run_mut(&mut self, t: usize, i: usize, n: usize) -> &mut [f32] {
        assert!(
            t < self.n_tok && i + n <= self.rows,
            "OutTile::run_mut out of tile"
        );
        let idx = t * self.ldy + self.r0 + i;
        assert!(idx + n <= self.len);
        // SAFETY: `idx .. idx + n` is inside the slice this tile was made from
        // (checked above), and inside this tile's own rows, which no other
        // tile covers; the borrow of `self` keeps it unique while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(idx), n) }
    }

    /// Writes `y[t][r0 + i + j] = v[j]` for every `j < v.len()`.
    ///
    /// # Panics
    /// When `t >= n_tok` or `i + v.len() > rows`.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn set_run(&mut self, t: usize, i: usize, v: &[f32]) {
        assert!(
            t < self.n_tok && i + v.len() <= self.rows,
            "OutTile::set_run out of tile"
        );
        let idx = t * self.ldy + self.r0 + i;
        assert!(idx + v.len() <= self.len);
        // SAFETY: `idx .. idx + v.len()` is inside the slice this tile was made
        // from (checked above), and inside this tile's own rows, which no other
        // tile covers; `v` is a distinct borrow, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(idx), v.len()) }
    }
}

/// An output matrix cut into row ranges of `chunk` rows, one [`OutTile`] each,
/// for parallel kernels. Shareable between threads; each tile index must be
/// taken by one thread only.
pub(crate) struct RowSplit<'a> {
    ptr: *mut f32,
    len: usize,
    ldy: usize,
    n_tok: usize,
    chunk: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: the split only hands out tiles through the unsafe `tile`, whose
// contract (each index taken once) makes every tile an exclusive, disjoint
// region; sharing the splitter itself gives access to nothing.
unsafe impl Sync for RowSplit<'_> {}

impl<'a> RowSplit<'a> {
    /// Splits `y` (`n_tok` rows of `ldy`) into row ranges of `chunk` rows.
    pub(crate) fn new(y: &'a mut [f32], n_tok: usize, ldy: usize, chunk: usize) -> RowSplit<'a> {
        assert!(chunk > 0 && y.len() >= n_tok * ldy);
        RowSplit {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            ldy,
            n_tok,
            chunk,
            _out: PhantomData,
        }
    }

    /// Number of tiles.
    pub(crate) fn n_tiles(&self) -> usize {
        self.ldy.div_ceil(self.chunk)
    }

    /// Tile `c`: rows `c·chunk .. min((c+1)·chunk, ldy)`.
    ///
    /// # Safety
    /// No two live tiles may have the same index: call this once per index
    /// while the split is in use.
    pub(crate) unsafe fn tile(&self, c: usize) -> OutTile<'_> {
        let r0 = c * self.chunk;
        assert!(r0 < self.ldy);
        OutTile {
            ptr: self.ptr,
            len: self.len,
            ldy: self.ldy,
            n_tok: self.n_tok,
            r0,
            rows: self.chunk.min(self.ldy - r0),
            _out: PhantomData,
        }
    }
}
