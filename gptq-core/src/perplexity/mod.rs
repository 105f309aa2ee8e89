//! Perplexity and KL divergence exactly as llama.cpp's `llama-perplexity`
//! computes them, so that figures compare directly.
//!
//! - [`perplexity`]: `exp(mean NLL)` of the second half of every chunk.
//! - [`base_file`]: llama-perplexity's `--kl-divergence-base` file (the base
//!   model's log-probabilities, 16 bits each), read and written.
//! - [`kld`]: the statistics of `llama-perplexity --kl-divergence`.
//!
//! Every one of them runs [`evaluate_chunks`]: the text cut into
//! non-overlapping chunks of `n_ctx` tokens (remainder dropped), each
//! evaluated from its start with no BOS, and the logits at positions
//! `n_ctx/2 .. n_ctx-1` scored against the token after each.

pub mod base_file;
pub mod exp_sum;
pub mod kld;

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::Kernels;
use crate::session::{Session, SessionParams};

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// Standard error of the perplexity estimate (llama.cpp's `+/-`).
    pub ppl_err: f64,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
}

/// Running sums of negative log-likelihoods, llama-perplexity's way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllSums {
    /// Σ nll.
    pub sum: f64,
    /// Σ nll².
    pub sum2: f64,
    /// Number of scored tokens.
    pub count: usize,
}

impl NllSums {
    /// Adds one token's NLL.
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum2 += v * v;
        self.count += 1;
    }

    /// `exp(mean NLL)`, or NaN before any token.
    pub fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// The perplexity with llama.cpp's error estimate: the standard error of
    /// the mean NLL, propagated through `exp`.
    pub fn result(&self, chunks: usize) -> Perplexity {
        let count = self.count.max(1) as f64;
        let mean = self.sum / count;
        let var = (self.sum2 / count - mean * mean).max(0.0);
        let err = if self.count > 1 {
            (var / (count - 1.0)).sqrt()
        } else {
            0.0
        };
        Perplexity {
            ppl: mean.exp(),
            ppl_err: mean.exp() * err,
            mean_nll: mean,
            tokens: self.count,
            chunks,
        }
    }
}

/// `-log softmax(logits)[target]`: f32 exponentials summed in f64 (as
/// llama-perplexity: each exponential in f32 is several times faster than
/// f64 and exact to 2 ulp; see [`exp_sum`]).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    // The scalar table's entries are the portable `exp_sum` functions.
    nll_on(&Kernels::scalar(), logits, target)
}

/// [`nll`] with the exponentials on `kernels`' vectors: the same value.
pub fn nll_on(kernels: &Kernels, logits: &[f32], target: u32) -> f64 {
    let max = kernels.max_logit(logits);
    let sum = kernels.exp_sum(logits, max);
    -(f64::from(logits[target as usize] - max) - sum.ln())
}

/// The scored logits of one chunk, handed to [`evaluate_chunks`]' callback.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLogits<'a> {
    /// Chunk number, from 0.
    pub index: usize,
    /// `targets.len()` rows of `n_vocab` logits: row `i` is the model's output
    /// at position `n_ctx/2 + i` of the chunk.
    pub logits: &'a [f32],
    /// The token each row predicts (the one at the next position).
    pub targets: &'a [u32],
    /// Vocabulary size (the row length).
    pub n_vocab: usize,
    /// The model's kernels, which score the rows ([`chunk_nlls`]).
    pub kernels: Kernels,
}

impl ChunkLogits<'_> {
    /// Row `i` of the logits.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.n_vocab..(i + 1) * self.n_vocab]
    }
}

/// Chunks `tokens` holds for a context of `n_ctx`, at most `max_chunks` when
/// given; an error when that is none or the context is too small to score.
pub fn chunk_count(n_tokens: usize, n_ctx: usize, max_chunks: Option<usize>) -> Result<usize> {
    if n_ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "context {n_ctx} too small for perplexity"
        )));
    }
    let n = n_tokens / n_ctx;
    if n == 0 {
        return Err(Error::InvalidArgument(format!(
            "the text has {n_tokens} tokens, fewer than one chunk of {n_ctx}"
        )));
    }
    Ok(max_chunks.map_or(n, |m| n.min(m.max(1))))
}

/// Evaluates the first `n_chunks` chunks of `n_ctx` tokens of `tokens` (see
/// the module doc) and calls `on_chunk` with each chunk's scored logits, in
/// order.
pub fn evaluate_chunks(
    model: &Arc<Model>,
    tokens: &[u32],
    n_ctx: usize,
    n_chunks: usize,
    mut on_chunk: impl FnMut(ChunkLogits<'_>) -> Result<()>,
) -> Result<()> {
    let have = chunk_count(tokens.len(), n_ctx, None)?;
    if n_chunks > have {
        return Err(Error::InvalidArgument(format!(
            "{n_chunks} chunks of {n_ctx} requested, but the text holds {have}"
        )));
    }
    let params = SessionParams {
        n_ctx,
        n_batch: n_ctx,
        n_outputs: 32,
        ..SessionParams::default()
    };
    let mut session = Session::new(Arc::clone(model), params)?;
    let n_vocab = model.hparams().n_vocab;
    let first = n_ctx / 2;
    let rows = n_ctx - 1 - first;
    let mut logits = vec![0.0f32; rows * n_vocab];
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        session.reset();
        // Logits at positions first .. n_ctx-2 predict tokens first+1 .. n_ctx-1.
        session.feed_logits(chunk, first..n_ctx - 1, |i, row| {
            let r = i - first;
            logits[r * n_vocab..(r + 1) * n_vocab].copy_from_slice(row);
        })?;
        on_chunk(ChunkLogits {
            index: c,
            logits: &logits,
            targets: &chunk[first + 1..],
            n_vocab,
            kernels: model.kernels(),
        })?;
    }
    Ok(())
}

/// The NLL of every row of a chunk, computed in parallel, in row order.
pub fn chunk_nlls(chunk: &ChunkLogits<'_>) -> Vec<f64> {
    (0..chunk.targets.len())
        .into_par_iter()
        .map(|i| nll_on(&chunk.kernels, chunk.row(i), chunk.targets[i]))
        .collect()
}

/// Cuts `tokens` into non-overlapping chunks of `n_ctx` (the remainder is
/// dropped), evaluates each from its start with no BOS, and scores the tokens
/// at positions `n_ctx/2 + 1 .. n_ctx` of each chunk, each from the logits at
/// the position before it. `progress(chunk, running_ppl)` is called after each
/// chunk.
pub fn perplexity(
    model: &Arc<Model>,
    tokens: &[u32],
    n_ctx: usize,
    progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    perplexity_chunks(model, tokens, n_ctx, None, progress)
}

/// [`perplexity`] over at most `max_chunks` chunks (llama-perplexity's
/// `--chunks`).
pub fn perplexity_chunks(
    model: &Arc<Model>,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    let n_chunks = chunk_count(tokens.len(), n_ctx, max_chunks)?;
    let mut sums = NllSums::default();
    evaluate_chunks(model, tokens, n_ctx, n_chunks, |chunk| {
        for v in chunk_nlls(&chunk) {
            sums.add(v);
        }
        progress(chunk.index, sums.ppl());
        Ok(())
    })?;
    Ok(sums.result(n_chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&v| (v as f64).exp()).sum();
        // The exponentials are f32 (as llama-perplexity's): 1e-7 relative each.
        assert!((nll(&l, 2) - (-(3.0f64.exp() / z).ln())).abs() < 1e-6);
    }

    #[test]
    fn error_estimate_is_llama_perplexity_s() {
        let mut s = NllSums::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            s.add(v);
        }
        let r = s.result(1);
        // mean 2.5, population variance 1.25, standard error sqrt(1.25/3).
        assert!((r.mean_nll - 2.5).abs() < 1e-12);
        assert!((r.ppl_err - 2.5f64.exp() * (1.25f64 / 3.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(chunk_count(100, 10, None).unwrap(), 10);
        assert_eq!(chunk_count(100, 10, Some(3)).unwrap(), 3);
        assert_eq!(chunk_count(100, 10, Some(30)).unwrap(), 10);
        assert!(chunk_count(9, 10, None).is_err());
        assert!(chunk_count(100, 3, None).is_err());
    }
}
