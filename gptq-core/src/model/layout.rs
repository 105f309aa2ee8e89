//! What a GPT-2 GGUF file contains: its metadata keys and its tensors, as
//! llama.cpp names them. Writers (the converter, synthetic models) build files
//! from this; the loader checks files against the same names and shapes.

use super::hparams::{ARCH, HParams};
use crate::gguf::{GgmlType, MetaArray, MetaValue};

/// One tensor of the layout: a `rows × cols` matrix (`cols` is GGUF's
/// `ne[0]`), or a vector of `cols` values stored with one dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// llama.cpp's tensor name.
    pub name: String,
    /// Rows (output features); 1 for vectors.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    vector: bool,
}

impl TensorSpec {
    fn matrix(name: impl Into<String>, rows: usize, cols: usize) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            rows,
            cols,
            vector: false,
        }
    }

    fn vector(name: impl Into<String>, n: usize) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            rows: 1,
            cols: n,
            vector: true,
        }
    }

    /// Whether this is a one-dimensional parameter (a norm or a bias).
    pub fn is_vector(&self) -> bool {
        self.vector
    }

    /// GGUF dimensions (`ne`): `[cols]` for vectors, else `[cols, rows]`.
    pub fn dims(&self) -> Vec<u64> {
        if self.is_vector() {
            vec![self.cols as u64]
        } else {
            vec![self.cols as u64, self.rows as u64]
        }
    }
}

/// Every tensor of a GPT-2 model in the order files are written: embeddings,
/// blocks, final norm, and `output.weight` when the LM head is not tied.
pub fn gpt2_tensors(hp: &HParams, untied_output: bool) -> Vec<TensorSpec> {
    let (d, ff) = (hp.n_embd, hp.n_ff);
    let mut v = vec![
        TensorSpec::matrix("token_embd.weight", hp.n_vocab, d),
        TensorSpec::matrix("position_embd.weight", hp.n_ctx, d),
    ];
    for i in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        v.extend([
            TensorSpec::vector(n("attn_norm.weight"), d),
            TensorSpec::vector(n("attn_norm.bias"), d),
            TensorSpec::matrix(n("attn_qkv.weight"), 3 * d, d),
            TensorSpec::vector(n("attn_qkv.bias"), 3 * d),
            TensorSpec::matrix(n("attn_output.weight"), d, d),
            TensorSpec::vector(n("attn_output.bias"), d),
            TensorSpec::vector(n("ffn_norm.weight"), d),
            TensorSpec::vector(n("ffn_norm.bias"), d),
            TensorSpec::matrix(n("ffn_up.weight"), ff, d),
            TensorSpec::vector(n("ffn_up.bias"), ff),
            TensorSpec::matrix(n("ffn_down.weight"), d, ff),
            TensorSpec::vector(n("ffn_down.bias"), d),
        ]);
    }
    v.push(TensorSpec::vector("output_norm.weight", d));
    v.push(TensorSpec::vector("output_norm.bias", d));
    if untied_output {
        v.push(TensorSpec::matrix("output.weight", hp.n_vocab, d));
    }
    v
}

/// llama.cpp's `general.file_type` for a file whose matrices are `ty`.
pub fn file_type(ty: GgmlType) -> Option<u32> {
    crate::gguf::FileType::for_type(ty).map(|f| f.0)
}

/// The tokenizer as a GPT-2 GGUF file stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct VocabData {
    /// Token spellings in byte-level unicode, index = id.
    pub tokens: Vec<String>,
    /// llama.cpp token types (1 normal, 3 control, 4 user-defined, 5 unused).
    pub types: Vec<i32>,
    /// BPE merges in rank order, `"left right"`.
    pub merges: Vec<String>,
    /// Beginning-of-text id.
    pub bos: u32,
    /// End-of-text id.
    pub eos: u32,
}

/// The metadata of a GPT-2 GGUF file, in the order we write it: general keys,
/// hyper-parameters, tokenizer. `None` when a hyper-parameter does not fit the
/// u32 that llama.cpp reads.
pub fn gpt2_metadata(
    hp: &HParams,
    ty: GgmlType,
    name: &str,
    vocab: &VocabData,
) -> Option<Vec<(String, MetaValue)>> {
    let u = |n: usize| u32::try_from(n).ok().map(MetaValue::U32);
    let s = |v: &str| MetaValue::String(v.to_string());
    let key = |k: &str| format!("{ARCH}.{k}");
    Some(vec![
        ("general.architecture".into(), s(ARCH)),
        ("general.type".into(), s("model")),
        ("general.name".into(), s(name)),
        ("general.file_type".into(), MetaValue::U32(file_type(ty)?)),
        ("general.quantization_version".into(), MetaValue::U32(2)),
        (key("context_length"), u(hp.n_ctx)?),
        (key("embedding_length"), u(hp.n_embd)?),
        (key("feed_forward_length"), u(hp.n_ff)?),
        (key("block_count"), u(hp.n_layer)?),
        (key("attention.head_count"), u(hp.n_head)?),
        (
            key("attention.layer_norm_epsilon"),
            MetaValue::F32(hp.ln_eps),
        ),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("gpt-2")),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(MetaArray::String(vocab.tokens.clone())),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(MetaArray::I32(vocab.types.clone())),
        ),
        (
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(MetaArray::String(vocab.merges.clone())),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            MetaValue::U32(vocab.bos),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            MetaValue::U32(vocab.eos),
        ),
    ])
}
