//! Layer-by-layer calibration: the residual stream of the calibration
//! sequences is carried from block to block through the model as quantized
//! so far, so each block is calibrated on the inputs it will see in the
//! finished file (each block's inputs come from the already-quantized
//! prefix). Within a block the four matrices are quantized in forward order,
//! each on inputs computed with the matrices before it already quantized.
//!
//! The forward pass is gptq-core's own ([`BlockRunner`]), on the weights held
//! here: the original F32 ones for what is not quantized yet, the new ggml
//! blocks for what is (types gptq-core has no kernels for are expanded to
//! F32 for this pass: the same values, without the activations' 8-bit
//! rounding). Memory: the calibration residual stream, one block's weights
//! and one matrix's Hessian.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use gptq_core::calibrate::BlockRunner;
use gptq_core::gguf::{GgmlType, as_bytes};
use gptq_core::model::{ActivationObserver, BlockWeights, HParams, Site};
use gptq_core::quant::types::dequantize_row;
use gptq_core::quant::{Kernels, Matrix};
use gptq_core::tokenizer::Tokenizer;

use super::hessian::Hessian;
use super::inverse::inverse_factor;
use super::solve::{SolveOptions, gptq_matrix};
use crate::awq;
use crate::convert::Importance;
use crate::quantize::quantize_rows;

/// How the block matrices are quantized.
#[derive(Clone, Debug)]
pub struct CalibOptions {
    /// Run GPTQ (else round to nearest, with the importance matrix if any).
    pub gptq: bool,
    /// Activation-aware scaling folded into the preceding LayerNorm / value
    /// projection, before quantizing.
    pub awq: bool,
    /// GPTQ: process columns by decreasing activation (act-order).
    pub act_order: bool,
    /// GPTQ: damping, as a fraction of the Hessian's mean diagonal.
    pub damp: f64,
    /// Calibration tokens to use (whole sequences of `seq_len`).
    pub tokens: usize,
    /// Positions per calibration sequence (at most the model's context).
    pub seq_len: usize,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            gptq: true,
            awq: false,
            act_order: false,
            damp: 0.01,
            tokens: 8192,
            seq_len: 256,
        }
    }
}

/// The tensors of one block, `[out, in]` matrices.
#[derive(Clone, Debug)]
pub struct LayerF32 {
    /// Tensors by their GGUF name suffix (`attn_qkv.weight`, ...).
    pub t: HashMap<&'static str, Vec<f32>>,
}

impl LayerF32 {
    /// The block's weights for gptq-core's block runner, all F32.
    pub fn view(&self, hp: &HParams) -> Result<BlockWeights<'_>> {
        static NONE: std::sync::LazyLock<HashMap<Site, (GgmlType, Aligned)>> =
            std::sync::LazyLock::new(HashMap::new);
        block_weights(hp, self, &NONE)
    }
}

/// The GGUF name suffixes of a block's tensors.
pub const LAYER_TENSORS: [&str; 12] = [
    "attn_norm.weight",
    "attn_norm.bias",
    "attn_qkv.weight",
    "attn_qkv.bias",
    "attn_output.weight",
    "attn_output.bias",
    "ffn_norm.weight",
    "ffn_norm.bias",
    "ffn_up.weight",
    "ffn_up.bias",
    "ffn_down.weight",
    "ffn_down.bias",
];

fn suffix(site: Site) -> &'static str {
    match site {
        Site::AttnQkv => "attn_qkv.weight",
        Site::AttnOut => "attn_output.weight",
        Site::FfnUp => "ffn_up.weight",
        Site::FfnDown => "ffn_down.weight",
    }
}

/// Bytes kept in an f32 buffer, so that any block type's view of them is
/// aligned.
#[derive(Clone, Debug)]
struct Aligned {
    words: Vec<f32>,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let words = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                f32::from_le_bytes(w)
            })
            .collect();
        Aligned {
            words,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &as_bytes(&self.words)[..self.len]
    }
}

/// Calibration state carried through the conversion.
pub struct Calibrator {
    hp: HParams,
    opts: CalibOptions,
    /// Calibration token sequences, `n_seq × seq_len`.
    tokens: Vec<u32>,
    n_seq: usize,
    /// Residual stream at the next block's input, `n_seq × seq_len × n_embd`.
    x: Vec<f32>,
    runner: BlockRunner,
    imatrix: Option<Importance>,
    token_embd: Option<(GgmlType, Aligned)>,
    position_embd: Option<Vec<f32>>,
    next_layer: usize,
}

impl Calibrator {
    /// Tokenizes the calibration text and prepares the runner.
    pub fn new(
        hp: &HParams,
        tokenizer: &Tokenizer,
        text: &str,
        opts: CalibOptions,
        imatrix: Option<Importance>,
    ) -> Result<Calibrator> {
        let seq_len = opts.seq_len.min(hp.n_ctx).max(16);
        let all = tokenizer.encode(text);
        let n_seq = (opts.tokens.min(all.len()) / seq_len).max(1);
        if all.len() < seq_len {
            bail!(
                "the calibration text has {} tokens, fewer than one sequence of {seq_len}",
                all.len()
            );
        }
        let tokens = all[..n_seq * seq_len].to_vec();
        let runner = BlockRunner::new(hp, Kernels::from_env()?, seq_len)?;
        Ok(Calibrator {
            hp: hp.clone(),
            opts: CalibOptions { seq_len, ..opts },
            tokens,
            n_seq,
            x: Vec::new(),
            runner,
            imatrix,
            token_embd: None,
            position_embd: None,
            next_layer: 0,
        })
    }

    /// Calibration tokens in use.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Records the token embedding as written to the file (the first block's
    /// inputs are computed from it, quantized as it is).
    pub fn set_token_embd(&mut self, ty: GgmlType, bytes: &[u8]) {
        self.token_embd = Some((ty, Aligned::new(bytes)));
    }

    /// Records the position embedding.
    pub fn set_position_embd(&mut self, values: &[f32]) {
        self.position_embd = Some(values.to_vec());
    }

    fn embed(&mut self) -> Result<()> {
        let d = self.hp.n_embd;
        let (Some((ty, wte)), Some(wpe)) = (&self.token_embd, &self.position_embd) else {
            bail!("the embeddings must precede the blocks");
        };
        let row_bytes = wte.bytes().len() / self.hp.n_vocab.max(1);
        let seq_len = self.opts.seq_len;
        self.x = vec![0.0; self.tokens.len() * d];
        for (i, (&t, x)) in self
            .tokens
            .iter()
            .zip(self.x.chunks_exact_mut(d))
            .enumerate()
        {
            let row = wte
                .bytes()
                .get(t as usize * row_bytes..(t as usize + 1) * row_bytes);
            let row = row.with_context(|| format!("token {t} is not in the vocabulary"))?;
            dequantize_row(*ty, row, x).with_context(|| format!("token embedding of type {ty}"))?;
            let p = &wpe[(i % seq_len) * d..][..d];
            for (a, b) in x.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok(())
    }

    /// Quantizes block `layer` (given as F32, matrices `[out, in]`) into the
    /// types `types` gives per matrix suffix, and returns every tensor's bytes
    /// by suffix. Blocks must come in order.
    pub fn layer(
        &mut self,
        layer: usize,
        mut w: LayerF32,
        types: &dyn Fn(&str) -> GgmlType,
    ) -> Result<HashMap<&'static str, Vec<u8>>> {
        if layer != self.next_layer {
            bail!(
                "blocks must be calibrated in order: expected {}, got {layer}",
                self.next_layer
            );
        }
        if layer == 0 {
            self.embed()?;
        }
        self.next_layer += 1;
        let (d, ff) = (self.hp.n_embd, self.hp.n_ff);
        let shape = |site: Site| match site {
            Site::AttnQkv => (3 * d, d),
            Site::AttnOut => (d, d),
            Site::FfnUp => (ff, d),
            Site::FfnDown => (d, ff),
        };
        let imp = |site: Site| -> Option<Vec<f32>> {
            self.imatrix
                .as_ref()
                .and_then(|m| m.get(&site.tensor_name(layer)))
                .cloned()
        };
        let mut importance: HashMap<Site, Vec<f32>> = HashMap::new();
        for site in Site::ALL {
            if let Some(v) = imp(site) {
                if v.len() != shape(site).1 {
                    bail!(
                        "importance matrix entry {} has {} values, the matrix has {} columns",
                        site.tensor_name(layer),
                        v.len(),
                        shape(site).1
                    );
                }
                importance.insert(site, v);
            }
        }
        if self.opts.awq {
            let stats = self.input_stats(layer, &w)?;
            let scales = awq::search_layer(&self.hp, &mut w, &stats, types, &importance)?;
            // Importance weights were measured on the unscaled inputs: input j
            // is now x_j / s_j.
            for (site, s) in scales {
                if let Some(v) = importance.get_mut(&site) {
                    for (a, b) in v.iter_mut().zip(&s) {
                        *a /= b * b;
                    }
                }
            }
        }
        // The matrices as the calibration pass computes with them.
        let mut quantized: HashMap<Site, (GgmlType, Aligned)> = HashMap::new();
        // Their stored bytes.
        let mut stored: HashMap<Site, Vec<u8>> = HashMap::new();
        for site in Site::ALL {
            let name = suffix(site);
            let ty = types(name);
            let (rows, cols) = shape(site);
            let values = &w.t[name];
            let imp = importance.get(&site).map(Vec::as_slice);
            let blocks = ty.block_size() > 1 && cols.is_multiple_of(ty.block_size());
            let bytes = if self.opts.gptq && blocks {
                let h = self.hessian(layer, &w, &quantized, site)?;
                let f = inverse_factor(h.values(), cols, self.opts.act_order, self.opts.damp)
                    .with_context(|| site.tensor_name(layer))?;
                gptq_matrix(values, rows, cols, &f, ty, imp, SolveOptions::default())
                    .with_context(|| site.tensor_name(layer))?
            } else {
                quantize_rows(ty, values, cols, imp).with_context(|| site.tensor_name(layer))?
            };
            quantized.insert(site, runnable(ty, &bytes, rows, cols)?);
            stored.insert(site, bytes);
        }
        // Carry the residual stream through the finished block.
        {
            let bw = block_weights(&self.hp, &w, &quantized)?;
            let n = self.opts.seq_len * d;
            for x in self.x.chunks_exact_mut(n) {
                self.runner.run(layer, &bw, x, None)?;
            }
        }
        let mut out = HashMap::new();
        for name in LAYER_TENSORS {
            let bytes = match Site::ALL.iter().find(|&&s| suffix(s) == name) {
                Some(site) => stored.remove(site).expect("every site was quantized"),
                None => as_bytes(&w.t[name]).to_vec(),
            };
            out.insert(name, bytes);
        }
        Ok(out)
    }

    /// Runs the block with the F32 weights, collecting per-input statistics
    /// of every matrix (for activation-aware scaling).
    fn input_stats(&mut self, layer: usize, w: &LayerF32) -> Result<awq::InputStats> {
        let bw = w.view(&self.hp)?;
        let mut stats = awq::InputStats::new(&self.hp);
        let n = self.opts.seq_len * self.hp.n_embd;
        for x in self.x.chunks(n) {
            let mut x = x.to_vec();
            self.runner.run(layer, &bw, &mut x, Some(&mut stats))?;
        }
        Ok(stats)
    }

    /// `XᵀX` of `site`'s inputs over the calibration set, with the matrices
    /// in `quantized` in their quantized form.
    fn hessian(
        &mut self,
        layer: usize,
        w: &LayerF32,
        quantized: &HashMap<Site, (GgmlType, Aligned)>,
        site: Site,
    ) -> Result<Hessian> {
        struct Collect {
            site: Site,
            h: Hessian,
        }
        impl ActivationObserver for Collect {
            fn observe(&mut self, _: usize, site: Site, rows: &[f32], n: usize) {
                if site == self.site {
                    self.h.add(rows, n);
                }
            }
        }
        let cols = if site == Site::FfnDown {
            self.hp.n_ff
        } else {
            self.hp.n_embd
        };
        let mut c = Collect {
            site,
            h: Hessian::new(cols),
        };
        let bw = block_weights(&self.hp, w, quantized)?;
        let n = self.opts.seq_len * self.hp.n_embd;
        for x in self.x.chunks(n) {
            let mut x = x.to_vec();
            self.runner.run(layer, &bw, &mut x, Some(&mut c))?;
        }
        let _ = self.n_seq;
        Ok(c.h)
    }
}

/// Stored bytes of a `rows × cols` matrix in the form the block runner
/// computes with: as they are where gptq-core has kernels for `ty`, else
/// expanded to F32 (the values the file holds).
fn runnable(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<(GgmlType, Aligned)> {
    let kept = Aligned::new(bytes);
    if Matrix::from_bytes(ty, kept.bytes(), rows, cols).is_some() {
        return Ok((ty, kept));
    }
    let mut values = vec![0.0f32; rows * cols];
    let rb = bytes.len() / rows.max(1);
    for (o, b) in values.chunks_exact_mut(cols).zip(bytes.chunks_exact(rb)) {
        dequantize_row(ty, b, o).with_context(|| format!("expanding {ty}"))?;
    }
    Ok((GgmlType::F32, Aligned::new(as_bytes(&values))))
}

/// The block's weights for the runner: quantized matrices where given, F32
/// otherwise.
fn block_weights<'a>(
    hp: &HParams,
    w: &'a LayerF32,
    quantized: &'a HashMap<Site, (GgmlType, Aligned)>,
) -> Result<BlockWeights<'a>> {
    let (d, ff) = (hp.n_embd, hp.n_ff);
    let m = |site: Site, rows: usize, cols: usize| -> Result<Matrix<'a>> {
        let view = match quantized.get(&site) {
            Some((ty, b)) => Matrix::from_bytes(*ty, b.bytes(), rows, cols),
            None => Matrix::from_bytes(GgmlType::F32, as_bytes(&w.t[suffix(site)]), rows, cols),
        };
        view.with_context(|| format!("{} cannot be computed with", suffix(site)))
    };
    let v = |name: &str| w.t[name].as_slice();
    Ok(BlockWeights {
        attn_norm_w: v("attn_norm.weight"),
        attn_norm_b: v("attn_norm.bias"),
        attn_qkv_w: m(Site::AttnQkv, 3 * d, d)?,
        attn_qkv_b: v("attn_qkv.bias"),
        attn_out_w: m(Site::AttnOut, d, d)?,
        attn_out_b: v("attn_output.bias"),
        ffn_norm_w: v("ffn_norm.weight"),
        ffn_norm_b: v("ffn_norm.bias"),
        ffn_up_w: m(Site::FfnUp, ff, d)?,
        ffn_up_b: v("ffn_up.bias"),
        ffn_down_w: m(Site::FfnDown, d, ff)?,
        ffn_down_b: v("ffn_down.bias"),
    })
}
