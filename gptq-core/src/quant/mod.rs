//! Quantized block formats and the kernels that compute with them.

pub mod blocks;

pub use blocks::{BlockQ4_0, BlockQ8_0, QK};
