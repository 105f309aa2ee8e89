//! # gptq-core
//!
//! Quantized CPU inference for GPT-2 over a single GGUF v3 file: a zero-copy
//! GGUF reader and a streaming writer, ggml-compatible Q8_0 / Q4_0 blocks with
//! scalar, AVX2, AVX-512 (VNNI, VBMI/GFNI), AMX and NEON kernels chosen at run
//! time ([`Kernels`]), the GPT-2 forward pass over a preallocated KV cache, the
//! GPT-2 byte-level BPE tokenizer and the samplers.
//!
//! ## Embedding
//!
//! Load a [`Model`] once (it maps the file and is `Send + Sync`: share it with
//! [`Arc`](std::sync::Arc)), give every stream of text its own [`Session`]
//! (which owns its KV cache), and pick tokens with a [`Sampler`]:
//!
//! ```
//! use std::sync::Arc;
//! use gptq_core::{GenerateOptions, Model, SamplerParams, Session, SessionParams};
//!
//! # fn main() -> gptq_core::Result<()> {
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
//! let model = Arc::new(Model::load(path)?);
//! let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
//! let mut sampler = SamplerParams::default().temperature(0.7).seed(42).build()?;
//!
//! let prompt = model.tokenizer().encode("The meaning of life is");
//! session.feed(&prompt)?;
//! let mut text = String::new();
//! for piece in session.generate(&mut sampler, GenerateOptions::max_tokens(16)) {
//!     text.push_str(&piece?);
//! }
//! assert!(session.len() <= prompt.len() + 16);
//! # Ok(())
//! # }
//! ```
//!
//! Lower level, [`Session::feed`] returns the logits of the last token,
//! [`Session::step`] evaluates one more, and [`Sampler::sample`] works on any
//! row of logits:
//!
//! ```
//! # use std::sync::Arc;
//! # use gptq_core::{Model, SamplerParams, Session, SessionParams};
//! # fn main() -> gptq_core::Result<()> {
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
//! # let model = Arc::new(Model::load(path)?);
//! let tok = model.tokenizer();
//! let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
//! let mut sampler = SamplerParams::greedy().build()?;
//! let mut id = sampler.sample(session.feed(&tok.encode("Hello"))?, &[])?;
//! let mut out = vec![id];
//! for _ in 0..8 {
//!     id = sampler.sample(session.step(id)?, &out)?;
//!     out.push(id);
//! }
//! println!("{}", tok.decode(&out)?);
//! # Ok(())
//! # }
//! ```
//!
//! Errors are typed ([`Error`], `#[non_exhaustive]`): a bad token id, a full
//! context or an out-of-range parameter is an `Err`, never a panic.

#![deny(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!(
    "gptq-core reads little-endian GGUF files in place and supports little-endian targets only"
);

pub mod batch;
pub mod calibrate;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod imatrix;
pub mod membw;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sample;
pub mod session;
pub mod synthetic;
pub mod tokenizer;

pub use batch::{Batch, BatchParams, SCORE_ROWS};
pub use error::{Error, Result};
pub use generate::{FinishReason, Generate, GenerateOptions};
pub use model::{HParams, KvType, Model};
pub use quant::{KernelPath, Kernels};
pub use sample::{Sampler, SamplerParams};
pub use session::{Session, SessionParams, on_pool};
pub use tokenizer::{DecodeStream, Tokenizer};
