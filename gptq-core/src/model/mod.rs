//! A GPT-2 model mapped from a GGUF file: hyper-parameters, weight views,
//! tokenizer and the kernels that run it.

pub mod block;
pub(crate) mod forward;
pub mod hparams;
pub mod layout;
pub(crate) mod weights;

use std::path::{Path, PathBuf};

pub use block::{ActivationObserver, BlockWeights, Site};
pub use forward::KvType;
pub use hparams::HParams;
use weights::Weights;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MappedFile};
use crate::quant::Kernels;
use crate::tokenizer::Tokenizer;

/// A GPT-2 model over a memory-mapped GGUF file. The weights are read in place,
/// never copied. `Send + Sync`: load it once, share it with `Arc`, and run one
/// [`Session`](crate::Session) per stream.
pub struct Model {
    /// The weights' registration with the repack cache ([`Model::enable_repack`]):
    /// first, so that it is dropped, and its repacks evicted, before the
    /// mapping is.
    repack: Option<crate::quant::RepackRegistration>,
    file: MappedFile,
    gguf: GgufFile,
    hparams: HParams,
    weights: Weights,
    tokenizer: Tokenizer,
    kernels: Kernels,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.file.path())
            .field("hparams", &self.hparams)
            .field("kernels", &self.kernels.path())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Maps and validates a GGUF file, with the kernels chosen by
    /// [`Kernels::from_env`] (the best for this CPU unless `GPTQ_KERNEL` says
    /// otherwise).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with_kernels(path, Kernels::from_env()?)
    }

    /// Maps and validates a GGUF file and runs it with `kernels`.
    pub fn load_with_kernels(path: impl AsRef<Path>, kernels: Kernels) -> Result<Model> {
        Model::from_file(MappedFile::open(path.as_ref())?, kernels)
    }

    /// Validates a GGUF file held in memory (copied once into an aligned
    /// buffer) and runs it with `kernels`; `name` stands for the file's path in
    /// [`Model::path`] and messages. The same checks as [`Model::load`].
    pub fn from_bytes(bytes: &[u8], name: impl Into<PathBuf>, kernels: Kernels) -> Result<Model> {
        Model::from_file(MappedFile::from_bytes(bytes, name), kernels)
    }

    fn from_file(file: MappedFile, kernels: Kernels) -> Result<Model> {
        let gguf = GgufFile::parse(file.bytes())?;
        let hparams = HParams::from_gguf(&gguf)?;
        let weights = Weights::from_gguf(&gguf, file.bytes(), &hparams)?;
        let tokenizer = load_tokenizer(&gguf)?;
        Ok(Model {
            repack: None,
            file,
            gguf,
            hparams,
            weights,
            tokenizer,
            kernels,
        })
    }

    /// Keeps each prefill product's repacked weights between calls instead
    /// of repacking them on every call (as ik_llama.cpp's `-rtr` repacks at
    /// load): faster prompts, most at short ones, for the memory of the
    /// repacked copies beside the mapping ([`crate::quant::repacked_bytes`];
    /// made at each product's first prefill). The file is not changed.
    ///
    /// # Errors
    /// When the kernel path keeps no repack of any of the model's weight
    /// types (the scalar and NEON paths, float weights, Q4_1, Q5_0, Q5_1 and
    /// IQ4_NL everywhere, Q8_0 and Q4_0 but on the AMX path, IQ4_XS on the
    /// AVX2 path: their repack is a transposition about as fast as reading
    /// the weights, and a kept copy only adds its reads): the option would
    /// do nothing.
    pub fn enable_repack(&mut self) -> Result<()> {
        if !self
            .gguf
            .tensors
            .iter()
            .any(|t| self.kernels.path().keeps_repack(t.ty))
        {
            return Err(Error::InvalidArgument(format!(
                "repacking would change nothing here: the {} kernels keep no repack of any \
                 weight type of this file (the x86 prefill kernels keep those of the K-quants, \
                 of IQ4_XS but on the AVX2 path, and of Q8_0 and Q4_0 on the AMX path only)",
                self.kernels.describe()
            )));
        }
        if self.repack.is_none() {
            self.repack = Some(crate::quant::register_repack(self.file.bytes()));
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The tokenizer stored in the file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The kernels every computation of this model goes through.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The parsed GGUF metadata and tensor list.
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// `general.name`, when the file has one.
    pub fn name(&self) -> Option<&str> {
        self.gguf.get("general.name").and_then(|v| v.as_str())
    }

    /// Weight bytes read to decode one token (every block matrix and the LM head):
    /// multiplied by tokens per second, the memory bandwidth decode uses.
    pub fn weight_bytes_per_token(&self) -> usize {
        self.weights.bytes_per_token()
    }

    /// Whether the LM head is a separate `output.weight` rather than the tied
    /// token embedding.
    pub fn has_output_weight(&self) -> bool {
        self.weights.has_output
    }

    /// The weights of block `layer`, read in place.
    ///
    /// # Panics
    /// When `layer >= n_layer`.
    pub fn block(&self, layer: usize) -> BlockWeights<'_> {
        let (t, lw) = (self.bytes(), &self.weights.layers[layer]);
        BlockWeights {
            attn_norm_w: lw.attn_norm_w.get(t),
            attn_norm_b: lw.attn_norm_b.get(t),
            attn_qkv_w: lw.attn_qkv_w.view(t),
            attn_qkv_b: lw.attn_qkv_b.get(t),
            attn_out_w: lw.attn_out_w.view(t),
            attn_out_b: lw.attn_out_b.get(t),
            ffn_norm_w: lw.ffn_norm_w.get(t),
            ffn_norm_b: lw.ffn_norm_b.get(t),
            ffn_up_w: lw.ffn_up_w.view(t),
            ffn_up_b: lw.ffn_up_b.get(t),
            ffn_down_w: lw.ffn_down_w.view(t),
            ffn_down_b: lw.ffn_down_b.get(t),
        }
    }

    /// The token and position embeddings, added: the residual stream at the
    /// first block's input for `tokens` at positions `0..`, `n·n_embd` values.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (d, hp) = (self.hparams.n_embd, &self.hparams);
        if tokens.len() > hp.n_ctx {
            return Err(Error::ContextOverflow {
                needed: tokens.len(),
                capacity: hp.n_ctx,
            });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= hp.n_vocab) {
            return Err(Error::InvalidToken {
                id,
                vocab: hp.n_vocab,
            });
        }
        let t = self.bytes();
        let (wte, wpe) = (
            self.weights.token_embd.view(t),
            self.weights.position_embd.view(t),
        );
        let mut x = vec![0.0f32; tokens.len() * d];
        let mut p = vec![0.0f32; d];
        for (i, (&tok, row)) in tokens.iter().zip(x.chunks_exact_mut(d)).enumerate() {
            wte.dequantize_row(tok as usize, row);
            wpe.dequantize_row(i, &mut p);
            self.kernels.table().add(&p, row);
        }
        Ok(x)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    pub(crate) fn weights(&self) -> &Weights {
        &self.weights
    }
}

fn load_tokenizer(gguf: &GgufFile) -> Result<Tokenizer> {
    let kind = gguf.get_str("tokenizer.ggml.model")?;
    if kind != "gpt2" {
        return Err(Error::metadata(
            "tokenizer.ggml.model",
            format!("unsupported tokenizer '{kind}': GPT-2 models use 'gpt2' (byte-level BPE)"),
        ));
    }
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let types = match gguf.get("tokenizer.ggml.token_type") {
        Some(_) => Some(gguf.get_i32_array("tokenizer.ggml.token_type")?),
        None => None,
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match gguf.get(key) {
            None => Ok(None),
            Some(_) => {
                let v = gguf.get_u64(key)?;
                u32::try_from(v)
                    .ok()
                    .filter(|&v| (v as usize) < tokens.len())
                    .map(Some)
                    .ok_or_else(|| {
                        Error::metadata(key, format!("token id {v} is outside the vocabulary"))
                    })
            }
        }
    };
    Tokenizer::new(
        tokens,
        merges,
        types,
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Model>();
    }
}
