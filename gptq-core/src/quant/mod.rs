//! Quantized block formats and the kernels that compute with them.
//!
//! - [`blocks`]: ggml's Q8_0 and Q4_0 block layouts.
//! - [`types`]: the other block types (Q4_1..Q6_K, IQ4_NL, IQ4_XS, BF16) and their
//!   scalar dequantization.
//! - [`reference`]: scalar definitions of quantization and dot products.
//! - [`matrix`]: typed views of stored weight matrices.
//! - [`matmul`]: matrix products split across the rayon pool.
//! - [`pack`]: f32 rows into stored tensor bytes (for converters).
//! - `scalar`, `avx2`, `avx512`, `amx`, `neon`: the kernel paths, chosen at run time by
//!   [`Kernels`] (`GPTQ_KERNEL` overrides the choice).

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod blocks;
mod dispatch;
pub mod matmul;
pub mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pack;
pub mod prefetch;
pub mod reference;
mod scalar;
mod scratch;
pub mod team;
pub mod tile;
pub mod types;

pub use blocks::{BlockQ4_0, BlockQ8_0, QK};
pub(crate) use dispatch::HeadQueries;
pub use dispatch::{KernelPath, Kernels};
pub use matmul::{MatmulScratch, matmul};
pub use matrix::{Matrix, WeightData};
pub use pack::pack_rows;
