//! Running one transformer block at a time on weights the caller holds in
//! memory, for quantization calibration: a converter keeps the residual
//! stream of its calibration sequences at a block's input, runs the block with
//! its original or already-quantized weights (any type the kernels compute
//! with), and watches the inputs of the block's matrix products through an
//! [`ActivationObserver`]. It is the model's own forward pass
//! ([`Session`](crate::Session) runs the same block code), so calibration sees
//! exactly the arithmetic the quantized file will be run with.

use crate::error::{Error, Result};
use crate::model::block::{ActivationObserver, BlockWeights, Site};
use crate::model::forward::{KvCache, Scratch, forward_block};
use crate::model::{HParams, KvType};
use crate::quant::Kernels;
use crate::quant::team::Par;

/// Runs single blocks over one sequence of up to `max_len` positions at a time.
pub struct BlockRunner {
    hp: HParams,
    kernels: Kernels,
    max_len: usize,
    kv: KvCache,
    scratch: Scratch,
}

impl std::fmt::Debug for BlockRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRunner")
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

/// Reports the caller's layer number instead of the runner's cache slot.
struct Relabel<'a> {
    inner: &'a mut dyn ActivationObserver,
    layer: usize,
}

impl ActivationObserver for Relabel<'_> {
    fn observe(&mut self, _: usize, site: Site, rows: &[f32], n: usize) {
        self.inner.observe(self.layer, site, rows, n);
    }
}

impl BlockRunner {
    /// A runner for the model shape `hp`, for sequences of at most `max_len`
    /// positions (at most the model's context).
    pub fn new(hp: &HParams, kernels: Kernels, max_len: usize) -> Result<BlockRunner> {
        if max_len == 0 || max_len > hp.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "calibration sequences of {max_len} positions: use 1 to {}",
                hp.n_ctx
            )));
        }
        Ok(BlockRunner {
            hp: hp.clone(),
            kernels,
            max_len,
            kv: KvCache::new(1, max_len, hp.n_embd, hp.n_head, KvType::F32)?,
            scratch: Scratch::for_hparams(hp, max_len, max_len, 1)?,
        })
    }

    /// Runs block `layer` (the number only labels what `observer` sees) with
    /// weights `w` on `x`: the residual stream of one sequence at positions
    /// `0..n`, `n·n_embd` values, replaced by the block's output.
    pub fn run(
        &mut self,
        layer: usize,
        w: &BlockWeights<'_>,
        x: &mut [f32],
        observer: Option<&mut dyn ActivationObserver>,
    ) -> Result<()> {
        let d = self.hp.n_embd;
        if x.is_empty() || !x.len().is_multiple_of(d) || x.len() / d > self.max_len {
            return Err(Error::InvalidArgument(format!(
                "{} residual values are not 1 to {} rows of {d}",
                x.len(),
                self.max_len
            )));
        }
        check_shapes(&self.hp, w)?;
        let n = x.len() / d;
        self.scratch.x_mut()[..n * d].copy_from_slice(x);
        let mut relabel;
        let observer = match observer {
            Some(inner) => {
                relabel = Relabel { inner, layer };
                Some(&mut relabel as &mut dyn ActivationObserver)
            }
            None => None,
        };
        forward_block(
            Par::Pool,
            self.kernels.table(),
            &self.hp,
            w,
            &mut self.kv,
            0,
            &mut self.scratch,
            n,
            0,
            observer,
        );
        x.copy_from_slice(&self.scratch.x_mut()[..n * d]);
        Ok(())
    }
}

fn check_shapes(hp: &HParams, w: &BlockWeights<'_>) -> Result<()> {
    let (d, ff) = (hp.n_embd, hp.n_ff);
    let mats = [
        ("attn_qkv", &w.attn_qkv_w, 3 * d, d),
        ("attn_output", &w.attn_out_w, d, d),
        ("ffn_up", &w.ffn_up_w, ff, d),
        ("ffn_down", &w.ffn_down_w, d, ff),
    ];
    for (name, m, rows, cols) in mats {
        if (m.rows(), m.cols()) != (rows, cols) {
            return Err(Error::InvalidArgument(format!(
                "{name}: {}×{} matrix, the model needs {rows}×{cols}",
                m.rows(),
                m.cols()
            )));
        }
    }
    let vecs = [
        ("attn_norm.weight", w.attn_norm_w.len(), d),
        ("attn_norm.bias", w.attn_norm_b.len(), d),
        ("attn_qkv.bias", w.attn_qkv_b.len(), 3 * d),
        ("attn_output.bias", w.attn_out_b.len(), d),
        ("ffn_norm.weight", w.ffn_norm_w.len(), d),
        ("ffn_norm.bias", w.ffn_norm_b.len(), d),
        ("ffn_up.bias", w.ffn_up_b.len(), ff),
        ("ffn_down.bias", w.ffn_down_b.len(), d),
    ];
    for (name, len, want) in vecs {
        if len != want {
            return Err(Error::InvalidArgument(format!(
                "{name}: {len} values, the model needs {want}"
            )));
        }
    }
    Ok(())
}
