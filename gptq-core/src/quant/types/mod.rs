//! ggml's block types, one file per type: the `#[repr(C)]` layout (byte for
//! byte ggml's, with its size and alignment asserted), the scalar reference
//! (dequantization, which defines what the bytes mean; quantization where
//! ggml has a reference quantizer; the dot product with the type's
//! activation partner) and their tests. Dequantization is checked bit for
//! bit against the `gguf` Python package (`gptq-core/tests/gguf_py_vectors.rs`);
//! the weight quantizers of the newer types live in `gptq-convert`.
//!
//! Two traits tie a block type to the rest of the crate:
//! - [`QuantBlock`] (every block type): its [`GgmlType`], elements per
//!   block, a zero block and the scalar dequantization. From it follow the
//!   memory-mapped views ([`Pod`](crate::gguf::Pod)), [`dequantize_row`]
//!   and embedding lookups.
//! - [`VecDot`] (the types the kernels compute with): the activation
//!   partner and the scalar dot, the reference every kernel path's product
//!   is tested against, and through `table.rs`'s `Gemm` its entries in the
//!   kernel tables.
//!
//! Each quantized product is an exact integer dot per block of the weights
//! and their activation partner (the block type the activations are
//! quantized to, ggml's `vec_dot_type`), scaled by the blocks' scales.
//! Activation partners:
//! - [`BlockQ8_0`] with the exact `i16` sum of each block beside it, for the
//!   32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL: ggml's Q8_1
//!   scale-times-sum is `d · sum`);
//! - [`BlockQ8K`], for the 256-element K-quants and IQ4_XS.
//!
//! BF16 weights take float activations, like F16 ([`bf16`]).
//!
//! # Adding a block type
//!
//! 1. Here: a file `q5_k.rs` with the block (`#[repr(C)]`, size and
//!    alignment asserted, a `ZERO`), its scalar dequantization, its tests,
//!    and `unsafe impl QuantBlock` (`TYPE`, `ELEMS`, `ZERO`, `dequantize`);
//!    then `pub mod q5_k;` and `pub use q5_k::BlockQ5K;` below, and its arm
//!    in [`dequantize_row`] (`dequant.rs`) and, for its f16 scales, in
//!    `validate.rs`. The block is then mappable, dequantizable and
//!    checkable.
//! 2. To compute with it: the scalar dot with its partner
//!    (`vec_dot_q5_k_q8_k`) and `impl VecDot` (`Partner`, `dot`) in the same
//!    file, a test generator (`impl harness::Gen`, test only); then
//!    - `matrix.rs`: a [`WeightData`](super::WeightData) variant and its arms
//!      in `match_weights!` (quantized side) and `WeightData::from_bytes`;
//!    - `table.rs`: fields `gemm_q5_k`, `gemv_q5_k: GemmFn<BlockQ5K>` in
//!      `KernelTable` and `impl Gemm for BlockQ5K` returning them;
//!    - `dispatch.rs`: the scalar table's entries
//!      `gemm_q5_k: scalar::gemm::<BlockQ5K>` (and the same for `gemv_q5_k`).
//!      Every other table inherits the scalar twin (`..SCALAR`) until a path
//!      writes its kernel; then that path's entry points at it
//!      (`gemm_q5_k: avx2::gemm_q5_k`), and its tests call the kernel
//!      harness's `GemmSuite` with the type.
//! 3. `pack.rs`: an arm, if converters should write the type with a
//!    quantizer of this crate.
//!
//! Nothing else changes: the model's loader, the memory-mapped views, the
//! scratch of the products and the scalar kernels follow from the traits.

use std::fmt::Debug;

use crate::gguf::GgmlType;

pub mod bf16;
mod dequant;
pub mod float;
#[cfg(test)]
mod ggml_vectors;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;
#[cfg(test)]
pub(crate) mod testkit;
mod validate;

pub use dequant::{DEQUANTIZABLE, dequantize_row};
pub use iq4_nl::BlockIq4Nl;
pub use iq4_xs::BlockIq4Xs;
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_k::BlockQ8K;
pub use validate::validate_row;

/// Elements per block of the 32-element types (ggml's `QK8_0`, `QK4_0`).
pub const QK: usize = 32;

/// Elements per super-block of the K types (Q2_K..Q6_K) and IQ4_XS: ggml's
/// `QK_K`.
pub const QK_K: usize = 256;

/// A block type of quantized weights: its layout and what its bytes mean.
///
/// # Safety
/// Implementors are `#[repr(C)]` without padding, and every bit pattern of
/// their size is a valid value: the bytes of a mapped GGUF file are viewed
/// as blocks in place, and blocks are written out as their bytes.
pub unsafe trait QuantBlock: Copy + Send + Sync + Debug + 'static {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Elements per block.
    const ELEMS: usize;
    /// A block whose elements are all zero.
    const ZERO: Self;
    /// Expands blocks into `y` (`ELEMS` values each): the scalar reference
    /// of what the bytes mean (ggml's `dequantize_row_*`).
    ///
    /// # Panics
    /// When `y.len() != ELEMS · x.len()`.
    fn dequantize(x: &[Self], y: &mut [f32]);
}

/// A block type the kernels compute with: the block type its activations are
/// quantized to and the scalar dot product with them (ggml's `vec_dot_*`),
/// the reference every kernel path's product is tested against.
pub trait VecDot: QuantBlock {
    /// The block type the activations are quantized to for a product with
    /// these weights.
    type Partner: ActBlock;
    /// Σ x·y over a row of weight blocks and the same number of activation
    /// blocks.
    ///
    /// # Panics
    /// When the lengths differ.
    fn dot(x: &[Self], y: &[Self::Partner]) -> f32;
}

/// [`QuantBlock::dequantize`] from a block type's dequantization of one
/// block (`N = ELEMS` values).
///
/// # Panics
/// When `y.len() != N · x.len()`.
pub(crate) fn dequantize_blocks<B, const N: usize>(
    x: &[B],
    y: &mut [f32],
    one: impl Fn(&B, &mut [f32; N]),
) {
    assert_eq!(y.len(), x.len() * N, "dequantize: length mismatch");
    for (b, out) in x.iter().zip(y.chunks_exact_mut(N)) {
        // `chunks_exact_mut(N)` yields slices of exactly `N` values.
        one(b, out.try_into().expect("a chunk of N values"));
    }
}

/// A block type activations are quantized to at run time (ggml's
/// `vec_dot_type`).
pub trait ActBlock: Copy + Send + Sync + Debug + 'static {
    /// Elements per block.
    const ELEMS: usize;
    /// A block of zeros.
    const ZERO: Self;
    /// Whether the products receive the exact sum of each block's values
    /// beside the blocks (Q8_0); K-quant partners carry their sums inside.
    const SUMS: bool;
    /// Quantizes a row (whole blocks) into `y` and, when [`Self::SUMS`],
    /// each block's sum into `sums` (else `sums` is empty): the reference
    /// every kernel path's quantizer equals bit for bit.
    ///
    /// # Panics
    /// When the lengths disagree.
    fn quantize(x: &[f32], y: &mut [Self], sums: &mut [i16]);
}
