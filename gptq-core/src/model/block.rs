//! One transformer block's weights as the forward pass reads them, and the
//! hook through which a caller sees the inputs of its matrix products (for
//! importance matrices and quantization calibration).

use crate::quant::Matrix;

/// The four matrix products of a GPT-2 block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Fused query|key|value projection; input: the first LayerNorm's output.
    AttnQkv,
    /// Attention output projection; input: the heads' concatenated outputs.
    AttnOut,
    /// MLP up projection; input: the second LayerNorm's output.
    FfnUp,
    /// MLP down projection; input: the GELU of the up projection.
    FfnDown,
}

impl Site {
    /// Every site, in the order the forward pass reaches them.
    pub const ALL: [Site; 4] = [Site::AttnQkv, Site::AttnOut, Site::FfnUp, Site::FfnDown];

    /// The GGUF name of the matrix at this site of block `layer`
    /// (`blk.3.attn_qkv.weight`).
    pub fn tensor_name(self, layer: usize) -> String {
        let s = match self {
            Site::AttnQkv => "attn_qkv",
            Site::AttnOut => "attn_output",
            Site::FfnUp => "ffn_up",
            Site::FfnDown => "ffn_down",
        };
        format!("blk.{layer}.{s}.weight")
    }

    /// The site and layer of a block matrix's GGUF name.
    pub fn parse(name: &str) -> Option<(usize, Site)> {
        let rest = name.strip_prefix("blk.")?;
        let (digits, rest) = rest.split_once('.')?;
        let site = match rest {
            "attn_qkv.weight" => Site::AttnQkv,
            "attn_output.weight" => Site::AttnOut,
            "ffn_up.weight" => Site::FfnUp,
            "ffn_down.weight" => Site::FfnDown,
            _ => return None,
        };
        let layer: usize = digits.parse().ok()?;
        // "blk.01." and "blk.+1." are not names llama.cpp writes.
        (layer.to_string() == digits).then_some((layer, site))
    }
}

/// Sees the input of every block matrix product while the forward pass runs
/// (after the LayerNorm, attention or GELU that produces it, before the
/// product).
pub trait ActivationObserver {
    /// `rows` holds `n` rows, one per token, each as long as the matrix's
    /// columns.
    fn observe(&mut self, layer: usize, site: Site, rows: &[f32], n: usize);
}

/// Reborrows an optional observer for one call (shortening the trait
/// object's lifetime, which `Option::as_deref_mut` cannot do).
pub(crate) fn reborrow<'a>(
    o: &'a mut Option<&mut dyn ActivationObserver>,
) -> Option<&'a mut dyn ActivationObserver> {
    match o {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

/// The weights of one block: borrowed from a mapped file by the model, or from
/// a caller's buffers (see [`BlockRunner`](crate::calibrate::BlockRunner)).
#[derive(Clone, Copy, Debug)]
pub struct BlockWeights<'a> {
    /// First LayerNorm's weight.
    pub attn_norm_w: &'a [f32],
    /// First LayerNorm's bias.
    pub attn_norm_b: &'a [f32],
    /// `3·n_embd × n_embd` query|key|value projection.
    pub attn_qkv_w: Matrix<'a>,
    /// Its bias.
    pub attn_qkv_b: &'a [f32],
    /// `n_embd × n_embd` output projection.
    pub attn_out_w: Matrix<'a>,
    /// Its bias.
    pub attn_out_b: &'a [f32],
    /// Second LayerNorm's weight.
    pub ffn_norm_w: &'a [f32],
    /// Second LayerNorm's bias.
    pub ffn_norm_b: &'a [f32],
    /// `n_ff × n_embd` up projection.
    pub ffn_up_w: Matrix<'a>,
    /// Its bias.
    pub ffn_up_b: &'a [f32],
    /// `n_embd × n_ff` down projection.
    pub ffn_down_w: Matrix<'a>,
    /// Its bias.
    pub ffn_down_b: &'a [f32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Site::ALL {
            assert_eq!(Site::parse(&s.tensor_name(11)), Some((11, s)));
        }
        assert_eq!(Site::parse("blk.01.ffn_up.weight"), None);
        assert_eq!(Site::parse("blk.1.ffn_up.bias"), None);
        assert_eq!(Site::parse("output.weight"), None);
    }
}
