//! Several sessions evaluated in one forward pass: continuous batching.
//!
//! Decode is bound by memory bandwidth: a step streams every weight once to
//! produce one token. A [`Batch`] step streams the weights once for every
//! session it serves, so `n` sessions decoding together cost little more
//! than one. Each session keeps its own KV cache and position; a step may
//! mix sessions that decode one token with sessions that bring a prompt chunk
//! (a request joining the batch), as llama-server's continuous batching does.
//!
//! ```
//! use std::sync::Arc;
//! use gptq_core::{Batch, BatchParams, Model, SamplerParams, Session, SessionParams};
//!
//! # fn main() -> gptq_core::Result<()> {
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
//! let model = Arc::new(Model::load(path)?);
//! let tok = model.tokenizer();
//! let mut batch = Batch::new(Arc::clone(&model), BatchParams::default())?;
//! let mut a = Session::new(Arc::clone(&model), SessionParams::default())?;
//! let mut b = Session::new(Arc::clone(&model), SessionParams::default())?;
//! let mut greedy = SamplerParams::greedy().build()?;
//!
//! // `a` starts alone; `b` joins with its whole prompt while `a` decodes.
//! a.feed(&tok.encode("The old house"))?;
//! let mut next_a = greedy.sample(a.logits().unwrap(), &[])?;
//! let prompt_b = tok.encode("It was a dark and stormy night");
//! batch.eval(&mut [(&mut a, &[next_a][..]), (&mut b, &prompt_b[..])])?;
//! next_a = greedy.sample(a.logits().unwrap(), &[])?;
//! let mut next_b = greedy.sample(b.logits().unwrap(), &[])?;
//! // From now on, one token each per step.
//! for _ in 0..4 {
//!     batch.eval(&mut [(&mut a, &[next_a][..]), (&mut b, &[next_b][..])])?;
//!     next_a = greedy.sample(a.logits().unwrap(), &[])?;
//!     next_b = greedy.sample(b.logits().unwrap(), &[])?;
//! }
//! assert_eq!(b.len(), prompt_b.len() + 4);
//! # Ok(())
//! # }
//! ```
//!
//! ## Same results as alone
//!
//! Every session gets bitwise the logits it would get evaluating the same
//! tokens alone with [`Session::feed`] in the same chunks (so greedy
//! decoding gives the same tokens, on every kernel path): the decode rows of
//! a step go through decode products that compute each row exactly as a
//! single-token product does, a prompt chunk's rows go through the same
//! product `feed` uses for that chunk, and everything else is row by row or
//! per session. (A prompt fed in different chunks than alone, say after
//! reusing a cached prefix, may round differently in its last bits: the
//! products for many tokens sum in a different order than those for one.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::forward::batch::{Rows, forward_batch};
use crate::model::forward::{self, Scratch};
use crate::quant::team::{Par, Team};
use crate::session::Session;

/// Most rows [`Batch::score`] puts through the LM head at once (the LM head
/// is the largest matrix: more rows per pass read it fewer times).
pub const SCORE_ROWS: usize = 64;

/// How a [`Batch`] is sized: everything it needs is allocated when it is made.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchParams {
    /// Most sessions in one step.
    pub max_seqs: usize,
    /// Most tokens in one step, over all sessions (decode tokens and prompt
    /// chunks).
    pub max_tokens: usize,
    /// Longest context of the sessions it serves; 0 means the model's.
    pub n_ctx: usize,
}

impl Default for BatchParams {
    fn default() -> Self {
        BatchParams {
            max_seqs: 8,
            max_tokens: 256 + 8,
            n_ctx: 0,
        }
    }
}

/// Scratch for evaluating several sessions in one forward pass; see the
/// [module documentation](self). A step borrows the sessions mutably and
/// leaves each session's [`logits`](Session::logits) set to its last token's.
/// A step allocates nothing.
pub struct Batch {
    model: Arc<Model>,
    params: BatchParams,
    scratch: Scratch,
    /// One row of logits per session of a step.
    logits: Vec<f32>,
    order: Vec<usize>,
    first: Vec<usize>,
    /// The last step's items, in the caller's order: first row, tokens.
    last: Vec<(usize, usize)>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// A batch for sessions of `model`, with every buffer allocated now.
    pub fn new(model: Arc<Model>, params: BatchParams) -> Result<Batch> {
        let hp = model.hparams();
        if params.max_seqs == 0 || params.max_tokens < params.max_seqs {
            return Err(Error::InvalidArgument(format!(
                "a batch needs max_seqs >= 1 and max_tokens >= max_seqs (got {} and {})",
                params.max_seqs, params.max_tokens
            )));
        }
        let n_ctx = match params.n_ctx {
            0 => hp.n_ctx,
            n => n.min(hp.n_ctx),
        };
        let params = BatchParams { n_ctx, ..params };
        let scratch = Scratch::new(&model, n_ctx, params.max_tokens, params.max_seqs)?;
        let n_logits = params
            .max_seqs
            .checked_mul(hp.n_vocab)
            .ok_or_else(|| Error::InvalidArgument("batch logits size overflows".into()))?;
        let mut logits = Vec::new();
        logits.try_reserve_exact(n_logits).map_err(|_| {
            Error::InvalidArgument(format!(
                "cannot allocate {} bytes for batch logits",
                n_logits * 4
            ))
        })?;
        logits.resize(n_logits, 0.0);
        Ok(Batch {
            order: Vec::with_capacity(params.max_seqs),
            first: Vec::with_capacity(params.max_seqs),
            last: Vec::with_capacity(params.max_seqs),
            model,
            params,
            scratch,
            logits,
        })
    }

    /// The sizes this batch was made with (`n_ctx` resolved).
    pub fn params(&self) -> &BatchParams {
        &self.params
    }

    /// Bytes of scratch and logits the batch holds.
    pub fn n_bytes(&self) -> usize {
        self.scratch.n_bytes() + self.logits.len() * 4
    }

    /// Evaluates, in one forward pass, each item's tokens after the tokens
    /// already in its session; afterwards each session's
    /// [`logits`](Session::logits) are those of its last new token. Items
    /// with one token are decode steps; items with more are prompt chunks.
    ///
    /// Nothing is evaluated (and an error says why) when there are no items
    /// or more than `max_seqs`, more than `max_tokens` tokens in all, an item
    /// with no tokens, a session of another model or with a longer context
    /// than the batch's, or when any session would overflow its context or
    /// a token id is outside the vocabulary. Sessions' cancel flags are not
    /// consulted: a step is short, and the caller decides which sessions
    /// take part in the next one.
    pub fn eval(&mut self, items: &mut [(&mut Session, &[u32])]) -> Result<()> {
        self.check(items)?;
        // Decode rows first (in the callers' order), then prompt chunks.
        self.order.clear();
        self.first.clear();
        self.last.clear();
        let decode = |&(_, t): &(&mut Session, &[u32])| t.len() == 1;
        self.order
            .extend((0..items.len()).filter(|&i| decode(&items[i])));
        let n_decode = self.order.len();
        self.order
            .extend((0..items.len()).filter(|&i| !decode(&items[i])));
        let mut row = 0;
        for &i in &self.order {
            self.first.push(row);
            row += items[i].1.len();
        }
        self.last.resize(items.len(), (0, 0));
        for (&i, &r) in self.order.iter().zip(&self.first) {
            self.last[i] = (r, items[i].1.len());
        }
        let rows = Rows {
            order: &self.order,
            first: &self.first,
            n_decode,
            n_rows: row,
        };
        for (session, _) in items.iter_mut() {
            session.has_logits = false;
        }
        let vocab = self.model.hparams().n_vocab;
        let logits = &mut self.logits[..rows.order.len() * vocab];
        let (model, scratch) = (&*self.model, &mut self.scratch);
        // As in `Session::feed`: decode steps share their many small loops on a
        // spinning team; a step with a prompt chunk runs on the rayon pool.
        if n_decode == items.len() {
            Team::run(|team| forward_batch(Par::Team(team), model, items, &rows, scratch, logits));
        } else {
            rayon::scope(|_| forward_batch(Par::Pool, model, items, &rows, scratch, logits));
        }
        for (i, &item) in rows.order.iter().enumerate() {
            let (session, tokens) = &mut items[item];
            session.tokens.extend_from_slice(tokens);
            session.logits[..vocab].copy_from_slice(&logits[i * vocab..(i + 1) * vocab]);
            session.has_logits = true;
        }
        Ok(())
    }

    /// Logits of any token of the last step, for scoring a prompt (OpenAI's
    /// `echo` with log-probabilities): `on_logits(j, row)` for each index `j`
    /// in `tokens` of item `item`'s tokens in the last [`eval`](Self::eval)
    /// (items in the caller's order). The final LayerNorm and the LM head
    /// run on those rows, up to [`SCORE_ROWS`] at a time, into `out`, which
    /// grows to that (the caller keeps it, so this allocates once). Nothing
    /// is computed, and an error says why, when there was no step, `item` was
    /// not in it or `tokens` goes past its tokens. The rows are the ones the
    /// step computed; another step replaces them.
    pub fn score(
        &mut self,
        item: usize,
        tokens: std::ops::Range<usize>,
        out: &mut Vec<f32>,
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let &(first, len) = self.last.get(item).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "item {item} was not in the last step ({} items)",
                self.last.len()
            ))
        })?;
        if tokens.start > tokens.end || tokens.end > len {
            return Err(Error::InvalidArgument(format!(
                "tokens {tokens:?} of item {item}, which had {len}"
            )));
        }
        let vocab = self.model.hparams().n_vocab;
        let group = SCORE_ROWS.min(self.params.max_tokens);
        if out.len() < group * vocab {
            out.resize(group * vocab, 0.0);
        }
        let (model, scratch) = (&*self.model, &mut self.scratch);
        let mut j = tokens.start;
        while j < tokens.end {
            let m = group.min(tokens.end - j);
            let (r, rows) = (first + j, &mut out[..m * vocab]);
            rayon::scope(|_| forward::logits(Par::Pool, model, scratch, r..r + m, rows));
            for (k, row) in out[..m * vocab].chunks_exact(vocab).enumerate() {
                on_logits(j + k, row);
            }
            j += m;
        }
        Ok(())
    }

    fn check(&self, items: &[(&mut Session, &[u32])]) -> Result<()> {
        let p = &self.params;
        if items.is_empty() || items.len() > p.max_seqs {
            return Err(Error::InvalidArgument(format!(
                "a batch step takes 1 to {} sessions, got {}",
                p.max_seqs,
                items.len()
            )));
        }
        let total: usize = items.iter().map(|(_, t)| t.len()).sum();
        if total > p.max_tokens {
            return Err(Error::InvalidArgument(format!(
                "a batch step takes at most {} tokens, got {total}",
                p.max_tokens
            )));
        }
        for (i, (session, tokens)) in items.iter().enumerate() {
            if !Arc::ptr_eq(session.model(), &self.model) {
                return Err(Error::InvalidArgument(format!(
                    "batch item {i}: the session runs another model"
                )));
            }
            if session.n_ctx() > p.n_ctx {
                return Err(Error::InvalidArgument(format!(
                    "batch item {i}: the session's context ({}) is longer than the batch's ({})",
                    session.n_ctx(),
                    p.n_ctx
                )));
            }
            session.check(tokens)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Batch>();
    }
}
