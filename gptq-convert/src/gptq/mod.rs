//! GPTQ (Frantar et al., 2022): quantization with second-order error
//! compensation, into standard ggml blocks.
//!
//! - [`hessian`]: `XᵀX` of a matrix's calibration inputs.
//! - [`inverse`]: the damped inverse Hessian's Cholesky factor, in
//!   processing order (act-order or natural).
//! - [`solve`]: the column loop with lazy batch updates, for one matrix,
//!   on any ggml block type through [`crate::quantize::grid::RowGrid`].
//! - [`layerwise`]: the calibration pass, block by block through the model
//!   as quantized so far.

pub mod hessian;
pub mod inverse;
pub mod layerwise;
pub mod solve;
