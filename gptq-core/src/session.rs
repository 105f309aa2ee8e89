//! One inference stream over a shared model: a KV cache and scratch allocated
//! once, fed with tokens in batches or one at a time.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use crate::model::block::{ActivationObserver, reborrow};
use crate::model::forward::{self, KvCache, Scratch};
use crate::model::{KvType, Model};
use crate::quant::team::{Par, Team};

/// Prompts of at most this many tokens run on a decode step's spinning team
/// (`quant::team`) rather than as rayon jobs: their sixty-odd parallel loops
/// are short enough that waking rayon's sleeping workers for each was a
/// tenth of the time. `gptq bench -p 4,8,16,32 -n 0 -r 5`, 2 threads, team
/// against pool in one build, alternated twice (124M Q8_0, 355M Q8_0, 124M
/// Q4_K_M mix, native): pp4 1.07–1.29×, pp8 1.02–1.17×, pp16 1.00–1.25×,
/// pp32 0.92–1.05×.
const TEAM_MAX_TOKENS: usize = 16;

/// How a session is sized.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionParams {
    /// Positions the session can hold; 0 means the model's trained context.
    /// GPT-2's positions are learned, so it cannot exceed that.
    pub n_ctx: usize,
    /// Most tokens evaluated in one forward pass (longer inputs are split).
    pub n_batch: usize,
    /// Positions whose logits one LM-head product computes in
    /// [`Session::feed_logits`]; the logits buffer holds this many rows.
    pub n_outputs: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 0,
            n_batch: 256,
            n_outputs: 1,
            kv_type: KvType::F32,
        }
    }
}

/// One stream of tokens through a [`Model`]: owns its KV cache, scratch and
/// logits, all allocated by [`Session::new`]. Decoding a token allocates nothing.
///
/// A session computes on the rayon pool. Each [`feed`](Session::feed) or
/// [`step`](Session::step) called from a thread outside the pool enters it:
/// the call's work goes to a pool thread and the caller is woken when it is
/// done. A decode loop run inside the pool through [`on_pool`] pays neither
/// hand-off.
pub struct Session {
    model: Arc<Model>,
    n_ctx: usize,
    n_batch: usize,
    n_outputs: usize,
    pub(crate) kv: KvCache,
    scratch: Scratch,
    pub(crate) tokens: Vec<u32>,
    /// `n_outputs` rows of `n_vocab`; row 0 holds the last token's logits
    /// after [`Session::feed`] (or a [`Batch`](crate::Batch) step).
    pub(crate) logits: Vec<f32>,
    pub(crate) has_logits: bool,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("n_ctx", &self.n_ctx)
            .field("len", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over `model`, with every buffer it will need allocated now.
    pub fn new(model: Arc<Model>, params: SessionParams) -> Result<Session> {
        let hp = model.hparams();
        let n_ctx = match params.n_ctx {
            0 => hp.n_ctx,
            n if n <= hp.n_ctx => n,
            n => {
                return Err(Error::InvalidArgument(format!(
                    "context of {n} positions requested, but the model was trained for {} (GPT-2 positions are learned)",
                    hp.n_ctx
                )));
            }
        };
        if params.n_batch == 0 || params.n_outputs == 0 {
            return Err(Error::InvalidArgument(
                "n_batch and n_outputs must be at least 1".into(),
            ));
        }
        let n_batch = params.n_batch.min(n_ctx);
        let n_outputs = params.n_outputs.min(n_ctx);
        let kv = KvCache::new(hp.n_layer, n_ctx, hp.n_embd, hp.n_head, params.kv_type)?;
        let scratch = Scratch::new(&model, n_ctx, n_batch, n_outputs)?;
        let n_logits = n_outputs
            .checked_mul(hp.n_vocab)
            .ok_or_else(|| Error::InvalidArgument("logits buffer size overflows".into()))?;
        let mut logits = Vec::new();
        logits
            .try_reserve_exact(n_logits)
            .map_err(|_| Error::OutOfMemory {
                what: "logits".into(),
                bytes: n_logits.saturating_mul(4),
            })?;
        logits.resize(n_logits, 0.0);
        Ok(Session {
            model,
            n_ctx,
            n_batch,
            n_outputs,
            kv,
            scratch,
            tokens: Vec::with_capacity(n_ctx),
            logits,
            has_logits: false,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Positions the session can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens evaluated so far (the next token's position).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token has been evaluated.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.n_ctx - self.tokens.len()
    }

    /// The tokens evaluated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Bytes of the KV cache, scratch and logits this session holds.
    pub fn n_bytes(&self) -> usize {
        self.kv.n_bytes() + self.scratch.n_bytes() + self.logits.len() * 4
    }

    /// A flag another thread (or a signal handler) may set to stop the
    /// session's current work. A running [`feed`](Session::feed) checks it
    /// between layers and returns [`Error::Cancelled`], discarding the batch
    /// being evaluated; a [`generate`](Session::generate) iterator checks it
    /// before every token and ends with
    /// [`FinishReason::Cancelled`](crate::FinishReason::Cancelled). Either
    /// clears the flag, and the session stays usable.
    ///
    /// ```
    /// # use std::sync::{Arc, atomic::Ordering};
    /// # use gptq_core::{GenerateOptions, FinishReason, Model, SamplerParams, Session, SessionParams};
    /// # fn main() -> gptq_core::Result<()> {
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
    /// # let model = Arc::new(Model::load(path)?);
    /// let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
    /// let mut sampler = SamplerParams::greedy().build()?;
    /// session.feed(&model.tokenizer().encode("Hello"))?;
    /// let cancel = session.cancel_flag();
    /// let stopper = std::thread::spawn(move || cancel.store(true, Ordering::Relaxed));
    /// stopper.join().unwrap();
    /// let mut pieces = session.generate(&mut sampler, GenerateOptions::max_tokens(100));
    /// assert!(pieces.next().is_none());
    /// assert_eq!(pieces.finish_reason(), Some(FinishReason::Cancelled));
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Forgets every token (the cache is reused, not freed).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.has_logits = false;
    }

    /// Forgets the last `n` tokens, so that evaluation resumes at `len() - n`.
    /// The logits of the new last token are not available until the next feed.
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        if n > self.tokens.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot rewind {n} tokens: the session holds {}",
                self.tokens.len()
            )));
        }
        self.tokens.truncate(self.tokens.len() - n);
        self.has_logits = false;
        Ok(())
    }

    /// The logits of the last evaluated token, if the last call left them.
    pub fn logits(&self) -> Option<&[f32]> {
        self.has_logits
            .then(|| &self.logits[..self.model.hparams().n_vocab])
    }

    pub(crate) fn check(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(Error::ContextOverflow {
                needed,
                capacity: self.n_ctx,
            });
        }
        let vocab = self.model.hparams().n_vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::InvalidToken { id, vocab });
        }
        Ok(())
    }

    /// Evaluates `tokens` after the ones already in the session (batched
    /// prefill; one token is a decode step) and returns the logits of the last.
    /// Nothing is evaluated when the tokens would overflow the context or hold
    /// an id outside the vocabulary.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.check(tokens)?;
        self.has_logits = false;
        let n = batch_len(tokens.len(), self.n_batch);
        let vocab = self.model.hparams().n_vocab;
        // The whole evaluation runs as one job on the rayon pool: entering the
        // pool once per call, rather than once per parallel product, costs one
        // cross-thread hand-off instead of dozens, and from inside the pool the
        // products' jobs go to the workers' own deques, which allocate nothing.
        // A decode step's loops are small and many, so they share a spinning
        // team instead of rayon's jobs (see `quant::team`), and so do a short
        // prompt's ([`TEAM_MAX_TOKENS`]).
        let mut run = |par: Par<'_>| -> Result<()> {
            for batch in tokens.chunks(self.n_batch) {
                self.eval(par, batch, None)?;
            }
            forward::logits(
                par,
                &self.model,
                &mut self.scratch,
                n - 1..n,
                &mut self.logits[..vocab],
            );
            Ok(())
        };
        if tokens.len() <= TEAM_MAX_TOKENS {
            Team::run(|team| run(Par::Team(team)))?;
        } else {
            rayon::scope(|_| run(Par::Pool))?;
        }
        self.has_logits = true;
        Ok(&self.logits[..vocab])
    }

    /// Evaluates one token and returns its logits: a decode step. A loop of
    /// steps is best run inside [`on_pool`].
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.feed(&[token])
    }

    /// Evaluates `tokens` like [`feed`](Session::feed) and calls
    /// `on_logits(i, logits)` for every token `i` of `tokens` that lies in
    /// `outputs` (for perplexity and scoring; only those rows pay for the LM
    /// head). Afterwards [`logits`](Session::logits) is `None` unless the last
    /// token was among them.
    pub fn feed_logits(
        &mut self,
        tokens: &[u32],
        outputs: std::ops::Range<usize>,
        on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        self.feed_logits_inner(tokens, outputs, on_logits, None)
    }

    /// [`feed_logits`](Session::feed_logits), with `observer` shown the input
    /// of every block matrix product (for importance matrices and
    /// quantization calibration).
    pub fn feed_observed(
        &mut self,
        tokens: &[u32],
        outputs: std::ops::Range<usize>,
        on_logits: impl FnMut(usize, &[f32]),
        observer: &mut dyn ActivationObserver,
    ) -> Result<()> {
        self.feed_logits_inner(tokens, outputs, on_logits, Some(observer))
    }

    fn feed_logits_inner(
        &mut self,
        tokens: &[u32],
        outputs: std::ops::Range<usize>,
        mut on_logits: impl FnMut(usize, &[f32]),
        mut observer: Option<&mut dyn ActivationObserver>,
    ) -> Result<()> {
        self.check(tokens)?;
        self.has_logits = false;
        let vocab = self.model.hparams().n_vocab;
        let mut last_row = None;
        for (b, batch) in tokens.chunks(self.n_batch).enumerate() {
            self.eval(Par::Pool, batch, reborrow(&mut observer))?;
            let b0 = b * self.n_batch;
            let lo = outputs.start.clamp(b0, b0 + batch.len()) - b0;
            let hi = outputs.end.clamp(b0, b0 + batch.len()) - b0;
            for r in (lo..hi).step_by(self.n_outputs) {
                let m = self.n_outputs.min(hi - r);
                forward::logits(
                    Par::Pool,
                    &self.model,
                    &mut self.scratch,
                    r..r + m,
                    &mut self.logits[..m * vocab],
                );
                for (j, row) in self.logits[..m * vocab].chunks_exact(vocab).enumerate() {
                    on_logits(b0 + r + j, row);
                }
                last_row = Some((b0 + r + m - 1, m - 1));
            }
        }
        if let Some((i, row)) = last_row
            && i + 1 == tokens.len()
        {
            self.logits.copy_within(row * vocab..(row + 1) * vocab, 0);
            self.has_logits = true;
        }
        Ok(())
    }

    fn eval(
        &mut self,
        par: Par<'_>,
        batch: &[u32],
        observer: Option<&mut dyn ActivationObserver>,
    ) -> Result<()> {
        let pos0 = self.tokens.len();
        forward::forward_hidden(
            par,
            &self.model,
            &mut self.kv,
            &mut self.scratch,
            batch,
            pos0,
            &self.cancel,
            observer,
        )?;
        self.tokens.extend_from_slice(batch);
        Ok(())
    }
}

/// Runs `f` on a thread of the rayon pool the sessions compute on (at once
/// when called from one) and returns what it returns.
///
/// A [`Session::feed`] or [`Session::step`] called from outside the pool
/// hands its work to a pool thread and waits to be woken when it is done:
/// two cross-thread wake-ups per call, 25–35 µs together on the Intel
/// machine measured (TSC), which a decode step of a small model feels. Called inside the
/// pool, the steps run where they are called. Measured with `gptq bench -p
/// 0 -n 128 -r 3 --no-membw`, 124M shape, 2 threads, Intel Xeon (Sapphire
/// Rapids class), outside and inside alternated three times: Q4_K_M mix
/// AVX2 390–395 against 398–408 t/s, AVX-512 420–429 against 428–436; Q8_0
/// AVX2 300–302 against 307–309, AVX-512 322–325 against 327–332.
///
/// `f` should not block for long waiting on other threads (it holds one of
/// the pool's threads meanwhile).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Length of the last of the batches `n` tokens are cut into.
fn batch_len(n: usize, n_batch: usize) -> usize {
    match n % n_batch {
        0 => n_batch.min(n),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Session>();
    }

    #[test]
    fn last_batch_length() {
        assert_eq!(batch_len(10, 4), 2);
        assert_eq!(batch_len(8, 4), 4);
        assert_eq!(batch_len(3, 4), 3);
    }
}
