//! ggml's block types, one module each: the `#[repr(C)]` layout (byte for byte
//! ggml's, with size and alignment asserts), the scalar dequantization that
//! defines what the bytes mean, and their tests. Dequantization is checked bit
//! for bit against the `gguf` Python package (`gptq-core/tests/gguf_py_vectors.rs`).
//!
//! The quantizers that produce these blocks live in `gptq-convert`; the compute
//! kernels in the kernel paths.

pub mod bf16;
mod dequant;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod q2_k;
pub mod q3_k;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
mod validate;

pub use dequant::{DEQUANTIZABLE, dequantize_row};
pub use iq4_nl::BlockIq4Nl;
pub use iq4_xs::BlockIq4Xs;
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use validate::validate_row;

/// Elements per super-block of the K types (Q2_K..Q6_K) and IQ4_XS: ggml's `QK_K`.
pub const QK_K: usize = 256;
