//! The checkpoint's `config.json`: checked to be GPT-2 and read into the
//! hyper-parameters the GGUF file records.

use std::path::Path;

use anyhow::{Context, Result, bail};
use gptq_core::HParams;
use serde_json::Value;

/// Hyper-parameters of a Hugging Face GPT-2 checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    /// Vocabulary size (`vocab_size`).
    pub n_vocab: usize,
    /// Learned positions (`n_positions`, or `n_ctx` in old configs).
    pub n_ctx: usize,
    /// Residual width (`n_embd`).
    pub n_embd: usize,
    /// MLP width (`n_inner`, default `4 · n_embd`).
    pub n_ff: usize,
    /// Blocks (`n_layer`).
    pub n_layer: usize,
    /// Heads (`n_head`).
    pub n_head: usize,
    /// LayerNorm epsilon (`layer_norm_epsilon`, default 1e-5).
    pub ln_eps: f32,
    /// Whether the LM head is the token embedding (`tie_word_embeddings`, default true).
    pub tied: bool,
    /// `bos_token_id`, default 50256.
    pub bos: u32,
    /// `eos_token_id`, default 50256.
    pub eos: u32,
}

impl GptConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<GptConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        GptConfig::from_json(&v).with_context(|| format!("{}", path.display()))
    }

    /// Interprets a parsed `config.json`.
    pub fn from_json(v: &Value) -> Result<GptConfig> {
        let model_type = v.get("model_type").and_then(Value::as_str);
        let archs: Vec<&str> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match model_type {
            Some("gpt2") => {}
            Some(other) => bail!(
                "unsupported architecture: model_type is '{other}'{}; gptq-convert converts GPT-2 checkpoints only",
                if archs.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", archs.join(", "))
                }
            ),
            None if archs.iter().any(|a| a.starts_with("GPT2")) => {}
            None => bail!(
                "missing key 'model_type' (and no GPT-2 entry in 'architectures'): cannot tell that this is GPT-2"
            ),
        }
        if let Some(a) = archs.iter().find(|a| !a.starts_with("GPT2")) {
            bail!("unsupported architecture '{a}': gptq-convert converts GPT-2 checkpoints only");
        }
        let n_embd = req_usize(v, "n_embd")?;
        let n_head = req_usize(v, "n_head")?;
        let n_layer = req_usize(v, "n_layer")?;
        let n_vocab = req_usize(v, "vocab_size")?;
        let n_ctx = match opt_usize(v, "n_positions")? {
            Some(n) => n,
            None => opt_usize(v, "n_ctx")?.context("missing key 'n_positions' (or 'n_ctx')")?,
        };
        let n_ff = match opt_usize(v, "n_inner")? {
            Some(n) => n,
            None => n_embd
                .checked_mul(4)
                .with_context(|| format!("n_embd = {n_embd} is too large"))?,
        };
        if n_embd % n_head != 0 {
            bail!("n_head = {n_head} does not divide n_embd = {n_embd}");
        }
        let ln_eps = match v.get("layer_norm_epsilon") {
            None | Some(Value::Null) => 1e-5,
            // Checked as the f32 it becomes: 1e-300 would round to 0, 1e300 to inf.
            Some(x) => x
                .as_f64()
                .map(|e| e as f32)
                .filter(|e| e.is_finite() && *e > 0.0)
                .with_context(|| {
                    format!("'layer_norm_epsilon' must be a positive number within f32's range, found {x}")
                })?,
        };
        match v.get("activation_function").and_then(Value::as_str) {
            None | Some("gelu_new") | Some("gelu_pytorch_tanh") | Some("gelu_fast") => {}
            Some(other) => bail!(
                "activation_function '{other}' is not supported: GPT-2 uses the tanh GELU ('gelu_new')"
            ),
        }
        if v.get("scale_attn_by_inverse_layer_idx")
            .and_then(Value::as_bool)
            == Some(true)
        {
            bail!(
                "scale_attn_by_inverse_layer_idx = true is not supported (a Mistral/Stanford variant, not GPT-2)"
            );
        }
        if v.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
            bail!(
                "scale_attn_weights = false is not supported: GPT-2 scales attention by 1/sqrt(head_dim)"
            );
        }
        let tied = v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let id = |k: &str| -> Result<u32> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(50256),
                Some(x) => x
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .with_context(|| format!("'{k}' must be a token id")),
            }
        };
        Ok(GptConfig {
            n_vocab,
            n_ctx,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            ln_eps,
            tied,
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
        })
    }
}

impl GptConfig {
    /// The hyper-parameters as gptq-core names them.
    pub fn hparams(&self) -> HParams {
        HParams {
            n_vocab: self.n_vocab,
            n_ctx: self.n_ctx,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_layer: self.n_layer,
            n_head: self.n_head,
            ln_eps: self.ln_eps,
        }
    }
}

fn opt_usize(v: &Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .map(Some)
            .with_context(|| format!("key '{key}' must be a positive integer, found {x}")),
    }
}

fn req_usize(v: &Value, key: &str) -> Result<usize> {
    opt_usize(v, key)?.with_context(|| format!("missing key '{key}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_head": 4,
               "n_layer": 2, "n_positions": 128, "vocab_size": 50257, "n_inner": null,
               "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5})
    }

    #[test]
    fn reads_gpt2() {
        let c = GptConfig::from_json(&base()).unwrap();
        assert_eq!(
            (c.n_embd, c.n_ff, c.n_ctx, c.n_layer, c.n_head),
            (64, 256, 128, 2, 4)
        );
        assert!(c.tied);
        assert_eq!(c.eos, 50256);
    }

    #[test]
    fn refuses_other_architectures_and_missing_keys() {
        let mut v = base();
        v["model_type"] = json!("llama");
        let e = GptConfig::from_json(&v).unwrap_err().to_string();
        assert!(
            e.contains("unsupported architecture") && e.contains("llama"),
            "{e}"
        );
        let mut v = base();
        v.as_object_mut().unwrap().remove("n_embd");
        let e = GptConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("missing key 'n_embd'"), "{e}");
        let mut v = base();
        v.as_object_mut().unwrap().remove("n_positions");
        v["n_ctx"] = json!(64);
        assert_eq!(GptConfig::from_json(&v).unwrap().n_ctx, 64);
        let mut v = base();
        v["n_head"] = json!(5);
        assert!(GptConfig::from_json(&v).is_err());
        let mut v = base();
        v["activation_function"] = json!("relu");
        assert!(GptConfig::from_json(&v).is_err());
    }

    /// A `layer_norm_epsilon` that is positive as an f64 but rounds to 0 (or
    /// inf) as the f32 the file stores would write a file no loader accepts.
    #[test]
    fn epsilon_is_checked_as_f32() {
        for eps in [1e-300, 1e300] {
            let mut v = base();
            v["layer_norm_epsilon"] = json!(eps);
            let e = GptConfig::from_json(&v).unwrap_err().to_string();
            assert!(e.contains("layer_norm_epsilon"), "{e}");
        }
    }

    /// Found by the `hf_config` fuzz target: `n_inner` defaults to `4 * n_embd`,
    /// which overflowed (a panic) for a huge `n_embd`.
    #[test]
    fn huge_n_embd_is_an_error_not_an_overflow() {
        let mut v = base();
        v["n_embd"] = json!(u64::MAX / 2);
        v["n_head"] = json!(1);
        let e = GptConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("n_embd"), "{e}");
    }
}
