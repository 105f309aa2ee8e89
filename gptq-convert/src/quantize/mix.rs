//! llama-quantize's choice of tensor type for each tensor of a GPT-2 file
//! (`llama_tensor_get_type` in llama.cpp's src/llama-quant.cpp at c392e50),
//! for the file types gptq-convert writes.
//!
//! A *mix* names a file type (`Q4_K_M`, ...): most matrices get its main type,
//! a few get more bits: `output.weight` is Q6_K (Q8_0 when its rows are not
//! whole blocks of the main type), `attn_qkv` and `attn_output` are bumped in
//! some mixes, `ffn_down` on a pattern of layers. A matrix whose rows are not a
//! whole number of blocks of its type falls back (Q2_K, Q3_K, IQ4_XS → IQ4_NL;
//! Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0; then F16 if even that does not fit).
//! With an importance matrix, Q4_0 and Q5_0 files give the first eighth of the
//! `ffn_down` layers Q4_1 / Q5_1, and IQ4_NL / IQ4_XS files stop bumping them.
//!
//! llama-quantize refuses a 32-element type (Q4_0, ...) on rows that are not
//! whole blocks; here such a matrix stays F16, as gptq-convert always did.

use anyhow::{Result, bail};
use gptq_core::gguf::{FileType, GgmlType};

/// The file types whose mixes gptq-convert reproduces, by llama-quantize's names.
pub const MIXES: &[&str] = &[
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q4_0",
    "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS",
];

/// Where a tensor sits in the model, which is all the policy looks at.
#[derive(Clone, Copy, Debug)]
pub struct TensorSite<'a> {
    /// The GGUF name (`blk.3.ffn_down.weight`, `output.weight`, ...).
    pub name: &'a str,
    /// Elements per row (GGUF's `ne[0]`).
    pub row_len: usize,
    /// Number of transformer blocks of the model.
    pub n_layer: usize,
    /// Whether the file has a separate `output.weight` (else the token
    /// embedding doubles as the LM head and is treated as the output).
    pub has_output: bool,
    /// Whether an importance matrix is in use.
    pub has_imatrix: bool,
}

/// Checks that gptq-convert can make `ft`'s mix and returns its main type.
pub fn main_type(ft: FileType) -> Result<GgmlType> {
    match (ft.name(), ft.main_type()) {
        (Some(name), Some(ty)) if MIXES.contains(&name) => Ok(ty),
        _ => bail!(
            "no llama-quantize mix for file type {ft}; gptq-convert makes {}",
            MIXES.join(", ")
        ),
    }
}

/// llama's `use_more_bits`: the first and last eighth of the layers and every
/// third layer in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer of a `blk.N.` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type llama-quantize gives the weight matrix at `site` in a file of type
/// `ft` (a mix accepted by [`main_type`]).
pub fn tensor_type(ft: FileType, site: &TensorSite) -> Result<GgmlType> {
    let base = main_type(ft)?;
    let name = site.name;
    let mut ty = base;
    let is_output = name == "output.weight" || (!site.has_output && name == "token_embd.weight");
    if is_output {
        if !site.row_len.is_multiple_of(base.block_size()) {
            ty = GgmlType::Q8_0;
        } else if base != GgmlType::Q8_0 {
            ty = GgmlType::Q6_K;
        }
    } else if name == "token_embd.weight" {
        // No mix made here changes the token embedding.
    } else if name.contains("ffn_down") {
        let Some(i) = layer_of(name) else {
            bail!("tensor {name}: no layer number");
        };
        let n = site.n_layer;
        ty = match ft {
            FileType::MOSTLY_Q2_K => GgmlType::Q3_K,
            FileType::MOSTLY_Q3_K_M if i < n / 16 => GgmlType::Q5_K,
            FileType::MOSTLY_Q3_K_M => GgmlType::Q4_K,
            FileType::MOSTLY_Q3_K_L => GgmlType::Q5_K,
            FileType::MOSTLY_Q4_K_M | FileType::MOSTLY_Q5_K_M if use_more_bits(i, n) => {
                GgmlType::Q6_K
            }
            FileType::MOSTLY_IQ4_NL | FileType::MOSTLY_IQ4_XS if i < n / 8 && !site.has_imatrix => {
                GgmlType::Q5_K
            }
            FileType::MOSTLY_Q4_K_S if i < n / 8 => GgmlType::Q5_K,
            FileType::MOSTLY_Q4_0 if site.has_imatrix && i < n / 8 => GgmlType::Q4_1,
            FileType::MOSTLY_Q5_0 if site.has_imatrix && i < n / 8 => GgmlType::Q5_1,
            _ => base,
        };
    } else if name.contains("attn_output.weight") {
        ty = match ft {
            FileType::MOSTLY_Q2_K => GgmlType::Q3_K,
            FileType::MOSTLY_Q3_K_M => GgmlType::Q4_K,
            FileType::MOSTLY_Q3_K_L => GgmlType::Q5_K,
            _ => base,
        };
    } else if name.contains("attn_qkv.weight") {
        ty = match ft {
            FileType::MOSTLY_Q3_K_M | FileType::MOSTLY_Q3_K_L => GgmlType::Q4_K,
            FileType::MOSTLY_Q4_K_M => GgmlType::Q5_K,
            FileType::MOSTLY_Q5_K_M => GgmlType::Q6_K,
            _ => base,
        };
    }
    Ok(fit_rows(ty, site.row_len))
}

/// llama-quantize's fallback for a type whose blocks do not tile the rows,
/// then F16 when the fallback does not either.
pub fn fit_rows(ty: GgmlType, row_len: usize) -> GgmlType {
    if row_len.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let fallback = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    if row_len.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(mix: &str, name: &str, row_len: usize, n_layer: usize, imatrix: bool) -> GgmlType {
        let site = TensorSite {
            name,
            row_len,
            n_layer,
            has_output: true,
            has_imatrix: imatrix,
        };
        tensor_type(FileType::from_name(mix).unwrap(), &site).unwrap()
    }

    #[test]
    fn output_takes_q6_k_or_q8_0() {
        assert_eq!(ty("Q4_0", "output.weight", 768, 12, false), GgmlType::Q6_K);
        assert_eq!(ty("Q8_0", "output.weight", 768, 12, false), GgmlType::Q8_0);
        assert_eq!(
            ty("Q4_K_M", "output.weight", 1600, 48, false),
            GgmlType::Q8_0
        );
        // Q4_0's output is Q6_K by the rule, then falls back for rows of 1600.
        assert_eq!(ty("Q4_0", "output.weight", 1600, 48, false), GgmlType::Q8_0);
        assert_eq!(
            ty("Q4_K_M", "token_embd.weight", 768, 12, false),
            GgmlType::Q4_K
        );
    }

    #[test]
    fn ffn_down_follows_the_layer_pattern() {
        // use_more_bits over 12 layers: 0 (first eighth), 10, 11 (last eighth),
        // and every third from the first eighth on: 3, 6, 9.
        let bumped: Vec<usize> = (0..12)
            .filter(|&i| {
                ty(
                    "Q4_K_M",
                    &format!("blk.{i}.ffn_down.weight"),
                    3072,
                    12,
                    false,
                ) == GgmlType::Q6_K
            })
            .collect();
        assert_eq!(bumped, [0, 3, 6, 9, 10, 11]);
        assert_eq!(
            ty("Q3_K_M", "blk.0.ffn_down.weight", 3072, 24, false),
            GgmlType::Q5_K
        );
        assert_eq!(
            ty("Q3_K_M", "blk.2.ffn_down.weight", 3072, 24, false),
            GgmlType::Q4_K
        );
        assert_eq!(
            ty("Q4_K_S", "blk.2.ffn_down.weight", 3072, 24, false),
            GgmlType::Q5_K
        );
        assert_eq!(
            ty("Q4_K_S", "blk.3.ffn_down.weight", 3072, 24, false),
            GgmlType::Q4_K
        );
        assert_eq!(
            ty("Q4_0", "blk.0.ffn_down.weight", 3072, 12, true),
            GgmlType::Q4_1
        );
        assert_eq!(
            ty("Q4_0", "blk.0.ffn_down.weight", 3072, 12, false),
            GgmlType::Q4_0
        );
        assert_eq!(
            ty("IQ4_XS", "blk.0.ffn_down.weight", 3072, 12, false),
            GgmlType::Q5_K
        );
        assert_eq!(
            ty("IQ4_XS", "blk.0.ffn_down.weight", 3072, 12, true),
            GgmlType::IQ4_XS
        );
    }

    #[test]
    fn attention_bumps_and_fallbacks() {
        assert_eq!(
            ty("Q4_K_M", "blk.0.attn_qkv.weight", 768, 12, false),
            GgmlType::Q5_K
        );
        assert_eq!(
            ty("Q4_K_M", "blk.0.attn_qkv.weight", 1600, 48, false),
            GgmlType::Q5_1
        );
        assert_eq!(
            ty("Q2_K", "blk.0.attn_output.weight", 768, 12, false),
            GgmlType::Q3_K
        );
        assert_eq!(
            ty("Q2_K", "blk.0.ffn_up.weight", 1600, 48, false),
            GgmlType::IQ4_NL
        );
        assert_eq!(
            ty("Q4_K_S", "blk.0.ffn_up.weight", 1600, 48, false),
            GgmlType::Q5_0
        );
        assert_eq!(
            ty("Q6_K", "blk.0.ffn_up.weight", 1600, 48, false),
            GgmlType::Q8_0
        );
        assert_eq!(
            ty("Q6_K", "blk.0.ffn_up.weight", 80, 4, false),
            GgmlType::F16
        );
        assert_eq!(
            ty("Q4_0", "blk.0.ffn_up.weight", 80, 4, false),
            GgmlType::F16
        );
    }

    #[test]
    fn only_known_mixes_are_made() {
        assert!(main_type(FileType::from_name("IQ2_XXS").unwrap()).is_err());
        assert!(main_type(FileType::ALL_F32).is_err());
        assert_eq!(main_type(FileType::MOSTLY_Q3_K_S).unwrap(), GgmlType::Q3_K);
    }
}
