//! Quantized block formats and the kernels that compute with them.
//!
//! - [`types`]: ggml's block types, one file each, with their scalar
//!   reference (and how to add a type).
//! - [`matrix`]: typed views of stored weight matrices.
//! - [`matmul`](mod@matmul): matrix products, split across threads.
//! - [`pack`]: f32 rows into stored tensor bytes (for converters).
//! - `table`: the kernel table, the one way to call a kernel; `dispatch`:
//!   the tables of every path and the choice among them ([`Kernels`],
//!   `GPTQ_KERNEL` overrides it).
//! - `scalar`, `avx2`, `avxvnni`, `avx512`, `amx`, `neon`: the kernel paths.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
mod dispatch;
#[cfg(test)]
mod harness;
pub mod matmul;
pub mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pack;
// The float prefill panels of the SIMD paths (x86-64 and aarch64).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod panels;
pub(crate) mod prefetch;
mod scalar;
mod scratch;
mod table;
pub(crate) mod team;
pub(crate) mod tile;
#[cfg(test)]
mod twins;
pub mod types;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{KernelPath, Kernels};
#[cfg(target_arch = "x86_64")]
pub use x86::repacked::{Registration as RepackRegistration, repacked_bytes};

/// Registers weight memory with the x86-64 prefill's repack cache
/// ([`crate::Model::enable_repack`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn register_repack(bytes: &[u8]) -> RepackRegistration {
    x86::repacked::register(bytes)
}

/// A registration with the repack cache (x86-64 only: nothing here).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Debug)]
pub struct RepackRegistration;

/// Bytes of repacked weights kept (x86-64 only: none here).
#[cfg(not(target_arch = "x86_64"))]
pub fn repacked_bytes() -> usize {
    0
}

/// Nothing to register off x86-64 (no path there repacks).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn register_repack(_bytes: &[u8]) -> RepackRegistration {
    RepackRegistration
}
pub use matmul::{MatmulScratch, matmul};
pub use matrix::{Matrix, WeightData};
pub use pack::pack_rows;
pub(crate) use table::{HeadQueries, VerifiedTable};
pub use types::{ActBlock, BlockQ4_0, BlockQ8_0, BlockQ8K, QK, QK_K, QuantBlock, VecDot};
