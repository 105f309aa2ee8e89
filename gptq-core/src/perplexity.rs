//! Perplexity exactly as llama.cpp's `llama-perplexity` computes it, so that
//! figures compare directly.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Model;
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

/// `-log softmax(logits)[target]`: f32 exponentials summed in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // As llama-perplexity: each exponential in f32 (several times faster than
    // f64, and exact to 1e-7 relative), the sum in f64; a row of 50k
    // exponentials is split across the pool.
    let sum: f64 = logits
        .par_chunks(8192)
        .map(|c| c.iter().map(|&v| f64::from((v - max).exp())).sum::<f64>())
        .sum();
    -(f64::from(logits[target as usize] - max) - sum.ln())
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
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    if n_ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "context {n_ctx} too small for perplexity"
        )));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(Error::InvalidArgument(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let params = SessionParams {
        n_ctx,
        n_batch: n_ctx,
        n_outputs: 32,
        ..SessionParams::default()
    };
    let mut session = Session::new(Arc::clone(model), params)?;
    let first = n_ctx / 2;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        session.reset();
        // Logits at positions first .. n_ctx-2 predict tokens first+1 .. n_ctx-1.
        session.feed_logits(chunk, first..n_ctx - 1, |i, logits| {
            let v = nll(logits, chunk[i + 1]);
            sum += v;
            sum2 += v * v;
            count += 1;
        })?;
        progress(c, (sum / count as f64).exp());
    }
    let mean = sum / count as f64;
    // llama.cpp: error of the mean NLL, propagated through exp.
    let var = (sum2 / count as f64 - mean * mean).max(0.0);
    let err = if count > 1 {
        (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    Ok(Perplexity {
        ppl: mean.exp(),
        ppl_err: mean.exp() * err,
        mean_nll: mean,
        tokens: count,
        chunks: n_chunks,
    })
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
}
