//! Hugging Face GPT-2 tensor names → llama.cpp's GGUF names.

/// What becomes of one checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Written under `name`; `transpose` for Conv1D weights, which Hugging Face
    /// stores as `[in, out]` while GGUF rows are output features.
    Tensor {
        /// The GGUF tensor name.
        name: String,
        /// Whether the `[in, out]` matrix must become `[out, in]`.
        transpose: bool,
    },
    /// The LM head (`lm_head.weight`): `output.weight` when untied, else dropped.
    LmHead,
    /// A buffer that is not a weight (`attn.bias`, `attn.masked_bias`).
    Skip,
}

/// Maps a checkpoint tensor name, in either spelling found in the wild
/// (`transformer.h.0.attn.c_attn.weight` or `h.0.attn.c_attn.weight`). `None`
/// for a name GPT-2 does not have.
pub fn map_name(hf: &str) -> Option<Mapping> {
    if hf == "lm_head.weight" {
        return Some(Mapping::LmHead);
    }
    let n = hf.strip_prefix("transformer.").unwrap_or(hf);
    let plain = |s: &str| {
        Some(Mapping::Tensor {
            name: s.to_string(),
            transpose: false,
        })
    };
    match n {
        "wte.weight" => return plain("token_embd.weight"),
        "wpe.weight" => return plain("position_embd.weight"),
        "ln_f.weight" => return plain("output_norm.weight"),
        "ln_f.bias" => return plain("output_norm.bias"),
        _ => {}
    }
    let rest = n.strip_prefix("h.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if layer.to_string() != layer_str(rest) {
        return None; // "h.01.", "h.+1." and the like
    }
    let (gguf, transpose) = match part {
        "attn.bias" | "attn.masked_bias" => return Some(Mapping::Skip),
        "ln_1.weight" => ("attn_norm.weight", false),
        "ln_1.bias" => ("attn_norm.bias", false),
        "attn.c_attn.weight" => ("attn_qkv.weight", true),
        "attn.c_attn.bias" => ("attn_qkv.bias", false),
        "attn.c_proj.weight" => ("attn_output.weight", true),
        "attn.c_proj.bias" => ("attn_output.bias", false),
        "ln_2.weight" => ("ffn_norm.weight", false),
        "ln_2.bias" => ("ffn_norm.bias", false),
        "mlp.c_fc.weight" => ("ffn_up.weight", true),
        "mlp.c_fc.bias" => ("ffn_up.bias", false),
        "mlp.c_proj.weight" => ("ffn_down.weight", true),
        "mlp.c_proj.bias" => ("ffn_down.bias", false),
        _ => return None,
    };
    Some(Mapping::Tensor {
        name: format!("blk.{layer}.{gguf}"),
        transpose,
    })
}

fn layer_str(rest: &str) -> &str {
    rest.split_once('.').map_or(rest, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_map_alike() {
        for prefix in ["", "transformer."] {
            assert_eq!(
                map_name(&format!("{prefix}h.11.attn.c_attn.weight")),
                Some(Mapping::Tensor {
                    name: "blk.11.attn_qkv.weight".into(),
                    transpose: true
                })
            );
            assert_eq!(
                map_name(&format!("{prefix}wte.weight")),
                Some(Mapping::Tensor {
                    name: "token_embd.weight".into(),
                    transpose: false
                })
            );
            assert_eq!(
                map_name(&format!("{prefix}h.0.attn.masked_bias")),
                Some(Mapping::Skip)
            );
        }
        assert_eq!(map_name("lm_head.weight"), Some(Mapping::LmHead));
        assert_eq!(map_name("h.01.ln_1.weight"), None);
        assert_eq!(map_name("model.layers.0.self_attn.q_proj.weight"), None);
    }
}
