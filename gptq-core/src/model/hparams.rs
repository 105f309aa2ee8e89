//! GPT-2 hyper-parameters, read from a GGUF file's metadata.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The architecture name this crate runs.
pub const ARCH: &str = "gpt2";

/// The shape of a GPT-2 model.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Trained context length: rows of `position_embd`, the most positions a
    /// session can hold.
    pub n_ctx: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Width of the MLP's hidden layer.
    pub n_ff: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// LayerNorm epsilon.
    pub ln_eps: f32,
}

impl HParams {
    /// Reads and checks the hyper-parameters of a GPT-2 GGUF file. `n_vocab` is
    /// taken from the tokenizer's token list (as llama.cpp does); the loader
    /// checks it against `token_embd`.
    pub fn from_gguf(file: &GgufFile) -> Result<HParams> {
        let arch = file.get_str("general.architecture")?;
        if arch != ARCH {
            return Err(Error::metadata(
                "general.architecture",
                format!(
                    "unsupported architecture '{arch}': gptq runs GPT-2 ('{ARCH}') models only"
                ),
            ));
        }
        let get = |name: &str| -> Result<usize> {
            let key = format!("{ARCH}.{name}");
            let v = file.get_u64(&key)?;
            usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
                Error::metadata(key, format!("must be a positive integer, found {v}"))
            })
        };
        let hp = HParams {
            n_vocab: file.get_str_array("tokenizer.ggml.tokens")?.len(),
            n_ctx: get("context_length")?,
            n_embd: get("embedding_length")?,
            n_ff: get("feed_forward_length")?,
            n_layer: get("block_count")?,
            n_head: get("attention.head_count")?,
            ln_eps: file.get_f32(&format!("{ARCH}.attention.layer_norm_epsilon"))?,
        };
        if !hp.n_embd.is_multiple_of(hp.n_head) {
            return Err(Error::metadata(
                format!("{ARCH}.attention.head_count"),
                format!(
                    "{} heads do not divide the embedding width {}",
                    hp.n_head, hp.n_embd
                ),
            ));
        }
        if !(hp.ln_eps.is_finite() && hp.ln_eps > 0.0) {
            return Err(Error::metadata(
                format!("{ARCH}.attention.layer_norm_epsilon"),
                format!("must be a positive number, found {}", hp.ln_eps),
            ));
        }
        if hp.n_vocab == 0 {
            return Err(Error::metadata(
                "tokenizer.ggml.tokens",
                "the vocabulary is empty",
            ));
        }
        Ok(hp)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}
