//! # gptq-core
//!
//! Quantized CPU inference for GPT-2 over a single GGUF v3 file: a zero-copy
//! GGUF reader and a streaming writer, ggml-compatible Q8_0 / Q4_0 blocks with
//! scalar, AVX2 and NEON kernels chosen at run time, the GPT-2 forward pass
//! over a preallocated KV cache, the GPT-2 byte-level BPE tokenizer and the
//! samplers.

#![deny(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!(
    "gptq-core reads little-endian GGUF files in place and supports little-endian targets only"
);

pub mod error;
pub mod gguf;
pub mod membw;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sample;
pub mod session;
pub mod synthetic;
pub mod tokenizer;

pub use error::{Error, Result};
pub use model::{HParams, KvType, Model};
pub use quant::{KernelPath, Kernels};
pub use session::{Session, SessionParams};
pub use tokenizer::Tokenizer;
