//! The kernel table: the one boundary between the safe code of the crate and
//! the SIMD kernels, and the one place where calling a kernel is argued safe.
//!
//! A [`KernelTable`] holds, for one variant of one kernel path (scalar, AVX2,
//! AVX-512, AVX-512 with VBMI and GFNI, AMX, NEON, NEON with dotprod), the
//! kernel of every operation the forward pass needs, as `unsafe fn` pointers
//! straight to the functions the path compiles with `#[target_feature]`. A
//! table takes every entry it does not define from a simpler one with `..`
//! (struct update syntax), so a variant lists only what it changes. The
//! tables themselves are the statics of `dispatch`, next to the feature
//! checks each one needs.
//!
//! # The safety argument
//!
//! Every entry's only precondition is that the CPU has the features its
//! table is compiled for (for AMX, also that the OS granted this process the
//! tile state): everything else a caller could get wrong, such as slice
//! lengths, is checked inside the kernel and panics. A table can be called
//! only through a [`VerifiedTable`], whose constructor is `unsafe` and is
//! called only by `dispatch`, right after it has checked that table's
//! features. Each safe method of [`VerifiedTable`] therefore meets its
//! entry's precondition; that is the argument every `unsafe` call below
//! relies on, stated once here.

use half::{bf16, f16};

use super::tile::{FloatActs, OutTile, QuantActs};
use super::types::{
    ActBlock, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K,
    BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, VecDot,
};

/// `quantize(x, q, sums)`: one row of activations (whole blocks) into
/// activation blocks `q` of type `A` and, where `A` keeps them beside its
/// blocks ([`ActBlock::SUMS`]), the sum of each block's values `sums`.
pub(crate) type QuantizeFn<A> = unsafe fn(&[f32], &mut [A], &mut [i16]);

/// `gemm(w, acts, out)`: the product of the tile's weight rows `w` (blocks
/// of type `W`, `out.rows()` rows of `acts.nb` blocks) with every token of
/// the activations quantized to `W`'s partner, into `out`.
pub(crate) type GemmFn<W> =
    unsafe fn(&[W], &QuantActs<'_, <W as VecDot>::Partner>, &mut OutTile<'_>);

/// `gemm(w, acts, out)`: as [`GemmFn`] for float weights (`out.rows()` rows
/// of `acts.cols` values of type `W`) and float activations.
pub(crate) type FloatGemmFn<W> = unsafe fn(&[W], &FloatActs<'_>, &mut OutTile<'_>);

/// `exp_sum(logits, max)`: `Σ exp(v − max)` in f64 (see
/// [`crate::perplexity::exp_sum`]).
pub(crate) type ExpSumFn = unsafe fn(&[f32], f32) -> f64;

/// `max_logit(logits)`: the largest value, NaN if one is.
pub(crate) type MaxLogitFn = unsafe fn(&[f32]) -> f32;

/// `add(x, y)`: `y += x`.
pub(crate) type AddFn = unsafe fn(&[f32], &mut [f32]);

/// `f(x)`: a transform in place (GELU).
pub(crate) type InPlaceFn = unsafe fn(&mut [f32]);

/// `layer_norm(x, weight, bias, eps, out)`.
pub(crate) type LayerNormFn = unsafe fn(&[f32], &[f32], &[f32], f32, &mut [f32]);

/// `attend(q, k, v, stride, n, scale, scores, out)`: one query's attention
/// over `n` cached positions of one head, whose key and value of position
/// `p` are `k[p·stride ..][..hd]` and `v[p·stride ..][..hd]` (`hd =
/// out.len()`), in a cache of element type `T`; `scores` is scratch of at
/// least `n` values.
pub(crate) type AttendFn<T> =
    unsafe fn(&[f32], &[T], &[T], usize, usize, f32, &mut [f32], &mut [f32]);

/// `attend_head(queries, out)`: every query of `queries`, written to
/// `out[i·hd ..][..hd]`.
pub(crate) type AttendHeadFn = unsafe fn(&HeadQueries<'_>, &mut [f32]);

/// The queries of one head for a run of consecutive positions, and that
/// head's f32 key and value cache.
// Only the x86-64 paths have a head kernel that reads these.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct HeadQueries<'a> {
    /// Query `i` is `q[i·q_stride ..][..hd]`.
    pub q: &'a [f32],
    pub q_stride: usize,
    /// The key and value of position `p` are `k[p·kv_stride ..][..hd]` and
    /// `v[p·kv_stride ..][..hd]`.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub kv_stride: usize,
    /// Query `i` sits at position `pos0 + i` and attends to `0..=pos0 + i`.
    pub pos0: usize,
    pub n: usize,
    pub hd: usize,
    pub scale: f32,
}

/// The kernels of one variant of a kernel path (see the module
/// documentation). Built only as the statics of `dispatch`; called only
/// through a [`VerifiedTable`].
pub(crate) struct KernelTable {
    /// The variant's name, as tools print it and `GPTQ_KERNEL` accepts it
    /// (`"avx512+vbmi"`). Every table sets its own.
    pub(in crate::quant) name: &'static str,
    /// Activations to Q8_0 with block sums, for the 32-element types.
    pub(in crate::quant) quantize_q8_0: QuantizeFn<BlockQ8_0>,
    /// Activations to Q8_K, for the K-quants.
    pub(in crate::quant) quantize_q8_k: QuantizeFn<BlockQ8K>,
    /// Q8_0 weights times Q8_0 activations.
    pub(in crate::quant) gemm_q8_0: GemmFn<BlockQ8_0>,
    /// Q4_0 weights times Q8_0 activations.
    pub(in crate::quant) gemm_q4_0: GemmFn<BlockQ4_0>,
    /// Decode products of Q8_0 weights for any number of tokens (sessions
    /// decoding together): each token's row is bitwise what `gemm_q8_0`
    /// gives it alone, one pass over the weights serving all. (Float
    /// weights need no twin: every path's float products compute each token
    /// alone.)
    pub(in crate::quant) gemv_q8_0: GemmFn<BlockQ8_0>,
    /// [`gemv_q8_0`](Self::gemv_q8_0) for Q4_0 weights.
    pub(in crate::quant) gemv_q4_0: GemmFn<BlockQ4_0>,
    /// Products of the other 32-value types (prefill) and their decode
    /// twins, as for Q8_0.
    pub(in crate::quant) gemm_q4_1: GemmFn<BlockQ4_1>,
    pub(in crate::quant) gemm_q5_0: GemmFn<BlockQ5_0>,
    pub(in crate::quant) gemm_q5_1: GemmFn<BlockQ5_1>,
    pub(in crate::quant) gemm_iq4_nl: GemmFn<BlockIq4Nl>,
    pub(in crate::quant) gemv_q4_1: GemmFn<BlockQ4_1>,
    pub(in crate::quant) gemv_q5_0: GemmFn<BlockQ5_0>,
    pub(in crate::quant) gemv_q5_1: GemmFn<BlockQ5_1>,
    pub(in crate::quant) gemv_iq4_nl: GemmFn<BlockIq4Nl>,
    /// Products of the K-quants and IQ4_XS (prefill) and their decode twins.
    pub(in crate::quant) gemm_q2_k: GemmFn<BlockQ2K>,
    pub(in crate::quant) gemm_q3_k: GemmFn<BlockQ3K>,
    pub(in crate::quant) gemm_q4_k: GemmFn<BlockQ4K>,
    pub(in crate::quant) gemm_q5_k: GemmFn<BlockQ5K>,
    pub(in crate::quant) gemm_q6_k: GemmFn<BlockQ6K>,
    pub(in crate::quant) gemm_iq4_xs: GemmFn<BlockIq4Xs>,
    pub(in crate::quant) gemv_q2_k: GemmFn<BlockQ2K>,
    pub(in crate::quant) gemv_q3_k: GemmFn<BlockQ3K>,
    pub(in crate::quant) gemv_q4_k: GemmFn<BlockQ4K>,
    pub(in crate::quant) gemv_q5_k: GemmFn<BlockQ5K>,
    pub(in crate::quant) gemv_q6_k: GemmFn<BlockQ6K>,
    pub(in crate::quant) gemv_iq4_xs: GemmFn<BlockIq4Xs>,
    /// BF16 weights times f32 activations.
    pub(in crate::quant) gemm_bf16: FloatGemmFn<bf16>,
    /// F16 weights times f32 activations.
    pub(in crate::quant) gemm_f16: FloatGemmFn<f16>,
    /// F32 weights times f32 activations.
    pub(in crate::quant) gemm_f32: FloatGemmFn<f32>,
    /// LayerNorm of one row.
    pub(in crate::quant) layer_norm: LayerNormFn,
    /// GPT-2's GELU (tanh approximation) in place.
    pub(in crate::quant) gelu: InPlaceFn,
    /// `y += x`.
    pub(in crate::quant) add: AddFn,
    /// A log-softmax's normaliser (the scoring tools': perplexity, KL
    /// divergence): the portable code compiled for the path's vectors.
    pub(in crate::quant) exp_sum: ExpSumFn,
    /// The largest logit of a row, as [`exp_sum`](Self::exp_sum).
    pub(in crate::quant) max_logit: MaxLogitFn,
    /// One query's attention over an f32 cache (the scores, a stable
    /// softmax, the weighted sum of the values).
    pub(in crate::quant) attend_f32: AttendFn<f32>,
    /// One query's attention over an f16 cache.
    pub(in crate::quant) attend_f16: AttendFn<f16>,
    /// Many queries of one head at once over an f32 cache (prefill), where
    /// the path has such a kernel; without one, the forward pass attends
    /// each query alone.
    pub(in crate::quant) attend_head_f32: Option<AttendHeadFn>,
}

/// A [`KernelTable`] whose features this CPU has: the only way to call a
/// kernel. Made only by `dispatch`, after the check (see the module
/// documentation); its methods are the kernels, safe to call.
#[derive(Clone, Copy)]
pub(crate) struct VerifiedTable(&'static KernelTable);

impl VerifiedTable {
    /// `table`, to be called through the safe methods.
    ///
    /// # Safety
    /// The CPU has every feature the entries of `table` are compiled for, and
    /// the OS has granted every state they use (AMX tiles).
    pub(in crate::quant) const unsafe fn new(table: &'static KernelTable) -> VerifiedTable {
        VerifiedTable(table)
    }

    /// The variant's name (`"avx512+vbmi"`).
    pub(crate) fn name(self) -> &'static str {
        self.0.name
    }

    /// Whether `self` and `other` are the same table.
    #[cfg(test)]
    pub(crate) fn same(self, other: VerifiedTable) -> bool {
        std::ptr::eq(self.0, other.0)
    }

    /// Quantizes one row of activations (whole blocks) to `A`, with each
    /// block's sum in `sums` where `A` keeps them beside its blocks (else
    /// `sums` is empty).
    ///
    /// # Panics
    /// When `q` (and `sums`) do not hold one entry per block of `x`.
    #[inline]
    pub(crate) fn quantize<A: Quantize>(self, x: &[f32], q: &mut [A], sums: &mut [i16]) {
        // SAFETY: see the module documentation.
        unsafe { (A::entry(self.0))(x, q, sums) }
    }

    /// Weight rows of block type `W` times activations quantized to its
    /// partner, into `out`.
    #[inline]
    pub(crate) fn gemm<W: Gemm>(
        self,
        w: &[W],
        a: &QuantActs<'_, W::Partner>,
        out: &mut OutTile<'_>,
    ) {
        // SAFETY: see the module documentation.
        unsafe { (W::entry(self.0))(w, a, out) }
    }

    /// [`gemm`](Self::gemm) for tokens decoded together (one per session of
    /// a batch): each token's row of `out` is bitwise the one `gemm` gives
    /// it alone, while one pass over the weights serves them all.
    #[inline]
    pub(crate) fn gemv<W: Gemm>(
        self,
        w: &[W],
        a: &QuantActs<'_, W::Partner>,
        out: &mut OutTile<'_>,
    ) {
        // SAFETY: see the module documentation.
        unsafe { (W::gemv_entry(self.0))(w, a, out) }
    }

    /// Float weight rows of element type `W` times float activations, into
    /// `out`.
    #[inline]
    pub(crate) fn gemm_float<W: FloatGemm>(
        self,
        w: &[W],
        x: &FloatActs<'_>,
        out: &mut OutTile<'_>,
    ) {
        // SAFETY: see the module documentation.
        unsafe { (W::entry(self.0))(w, x, out) }
    }

    /// `out = (x - mean) / sqrt(var + eps) · w + b`.
    #[inline]
    pub(crate) fn layer_norm(self, x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
        // SAFETY: see the module documentation.
        unsafe { (self.0.layer_norm)(x, w, b, eps, out) }
    }

    /// GPT-2's GELU (tanh approximation), in place.
    #[inline]
    pub(crate) fn gelu(self, x: &mut [f32]) {
        // SAFETY: see the module documentation.
        unsafe { (self.0.gelu)(x) }
    }

    /// `y += x`.
    #[inline]
    pub(crate) fn add(self, x: &[f32], y: &mut [f32]) {
        // SAFETY: see the module documentation.
        unsafe { (self.0.add)(x, y) }
    }

    /// `Σ exp(v − max)` over `logits` in f64: the same bits on every path.
    #[inline]
    pub(crate) fn exp_sum(self, logits: &[f32], max: f32) -> f64 {
        // SAFETY: see the module documentation.
        unsafe { (self.0.exp_sum)(logits, max) }
    }

    /// The largest of `logits` (NaN when one is NaN).
    #[inline]
    pub(crate) fn max_logit(self, logits: &[f32]) -> f32 {
        // SAFETY: see the module documentation.
        unsafe { (self.0.max_logit)(logits) }
    }

    /// One query's attention over `n` positions of an f32 cache (see
    /// [`AttendFn`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn attend_f32(
        self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        n: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: see the module documentation.
        unsafe { (self.0.attend_f32)(q, k, v, stride, n, scale, scores, out) }
    }

    /// One query's attention over `n` positions of an f16 cache (see
    /// [`AttendFn`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn attend_f16(
        self,
        q: &[f32],
        k: &[f16],
        v: &[f16],
        stride: usize,
        n: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: see the module documentation.
        unsafe { (self.0.attend_f16)(q, k, v, stride, n, scale, scores, out) }
    }

    /// Whether the path has a many-query head kernel
    /// ([`attend_head_f32`](Self::attend_head_f32)).
    #[inline]
    pub(crate) fn has_attend_head_f32(self) -> bool {
        self.0.attend_head_f32.is_some()
    }

    /// Every query of `h`, into `out[i·hd ..][..hd]`.
    ///
    /// # Panics
    /// When the path has no head kernel
    /// ([`has_attend_head_f32`](Self::has_attend_head_f32)).
    #[inline]
    pub(crate) fn attend_head_f32(self, h: &HeadQueries<'_>, out: &mut [f32]) {
        let f = self
            .0
            .attend_head_f32
            .expect("this kernel path has no head kernel");
        // SAFETY: see the module documentation.
        unsafe { f(h, out) }
    }
}

/// A weight block type's products in the kernel tables.
pub(crate) trait Gemm: VecDot {
    /// The entry of `table` for this type's products.
    fn entry(table: &KernelTable) -> GemmFn<Self>;
    /// The entry of `table` for this type's decode products.
    fn gemv_entry(table: &KernelTable) -> GemmFn<Self>;
}

impl Gemm for BlockQ8_0 {
    fn entry(table: &KernelTable) -> GemmFn<Self> {
        table.gemm_q8_0
    }
    fn gemv_entry(table: &KernelTable) -> GemmFn<Self> {
        table.gemv_q8_0
    }
}

/// The block types with a decode twin beside the prefill entry.
macro_rules! gemm_two_entries {
    ($($blk:ty => $field:ident, $gemv:ident),* $(,)?) => {$(
        impl Gemm for $blk {
            fn entry(table: &KernelTable) -> GemmFn<Self> {
                table.$field
            }
            fn gemv_entry(table: &KernelTable) -> GemmFn<Self> {
                table.$gemv
            }
        }
    )*};
}

gemm_two_entries!(
    BlockQ4_1 => gemm_q4_1, gemv_q4_1,
    BlockQ5_0 => gemm_q5_0, gemv_q5_0,
    BlockQ5_1 => gemm_q5_1, gemv_q5_1,
    BlockIq4Nl => gemm_iq4_nl, gemv_iq4_nl,
    BlockQ2K => gemm_q2_k, gemv_q2_k,
    BlockQ3K => gemm_q3_k, gemv_q3_k,
    BlockQ4K => gemm_q4_k, gemv_q4_k,
    BlockQ5K => gemm_q5_k, gemv_q5_k,
    BlockQ6K => gemm_q6_k, gemv_q6_k,
    BlockIq4Xs => gemm_iq4_xs, gemv_iq4_xs,
);

impl Gemm for BlockQ4_0 {
    fn entry(table: &KernelTable) -> GemmFn<Self> {
        table.gemm_q4_0
    }
    fn gemv_entry(table: &KernelTable) -> GemmFn<Self> {
        table.gemv_q4_0
    }
}

/// A float weight type's product in the kernel tables.
pub(crate) trait FloatGemm: Copy + Sync {
    /// The entry of `table` for this type.
    fn entry(table: &KernelTable) -> FloatGemmFn<Self>;
}

impl FloatGemm for f32 {
    fn entry(table: &KernelTable) -> FloatGemmFn<Self> {
        table.gemm_f32
    }
}

impl FloatGemm for bf16 {
    fn entry(table: &KernelTable) -> FloatGemmFn<Self> {
        table.gemm_bf16
    }
}

impl FloatGemm for f16 {
    fn entry(table: &KernelTable) -> FloatGemmFn<Self> {
        table.gemm_f16
    }
}

/// An activation block type's quantizer in the kernel tables.
pub(crate) trait Quantize: ActBlock {
    /// The entry of `table` for this type.
    fn entry(table: &KernelTable) -> QuantizeFn<Self>;
}

impl Quantize for BlockQ8_0 {
    fn entry(table: &KernelTable) -> QuantizeFn<Self> {
        table.quantize_q8_0
    }
}

impl Quantize for BlockQ8K {
    fn entry(table: &KernelTable) -> QuantizeFn<Self> {
        table.quantize_q8_k
    }
}
