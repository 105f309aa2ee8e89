//! Text generation as an iterator of UTF-8-complete pieces.
//!
//! [`Session::generate`] samples a token from the session's current logits,
//! turns it into text with a [`DecodeStream`] (never half a character), and
//! evaluates it before sampling the next one. It stops at a token budget, at
//! the end-of-text token, at a stop string, when the context is full, or when
//! the session's cancellation flag is set; [`Generate::finish_reason`] says
//! which.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::sample::Sampler;
use crate::session::Session;
use crate::tokenizer::DecodeStream;

/// What [`Session::generate`] does and when it stops, built with the methods
/// below: `GenerateOptions::max_tokens(64).stop_at_eos(false).stop("\n\n")`.
///
/// The default generates until the end-of-text token (or a full context), with
/// no stop string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    max_tokens: usize,
    stop_at_eos: bool,
    stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: usize::MAX,
            stop_at_eos: true,
            stop: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Options that stop after `max_tokens` tokens (and at end of text);
    /// `usize::MAX` leaves only the other conditions.
    pub fn max_tokens(max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            ..GenerateOptions::default()
        }
    }

    /// Sets whether to stop at the end-of-text token (`<|endoftext|>`), which
    /// is then neither yielded nor evaluated (the default). When false it is
    /// generated like any other token.
    pub fn stop_at_eos(mut self, stop: bool) -> Self {
        self.stop_at_eos = stop;
        self
    }

    /// Adds a stop string (llama.cpp's reverse prompt; empty strings are
    /// ignored): generation stops right after the text contains one. Text
    /// that could be the start of a stop string is held back until it is
    /// certain it is not; the stop string itself is not yielded (its tokens
    /// are evaluated, so the session holds them).
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        let s = s.into();
        if !s.is_empty() {
            self.stop.push(s);
        }
        self
    }

    /// The stop strings, in the order they were added:
    /// [`FinishReason::Stop`] holds an index into this.
    pub fn stop_strings(&self) -> &[String] {
        &self.stop
    }
}

/// Why a [`Generate`] iterator ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The model produced the end-of-text token.
    EndOfText,
    /// The text reached the stop string with this index in
    /// [`GenerateOptions::stop_strings`].
    Stop(usize),
    /// Every position of the session is used: nothing more can be evaluated.
    ContextFull,
    /// The session's [cancellation flag](Session::cancel_flag) was set.
    Cancelled,
    /// An error was yielded.
    Error,
}

/// Iterator over the text a session generates, in UTF-8-complete pieces
/// (never empty). Created by [`Session::generate`].
///
/// Every yielded token is evaluated into the session before the next one is
/// sampled, and the last one before the iterator ends (unless generation was
/// cancelled or failed), so afterwards [`Session::tokens`] ends with the
/// generated tokens and the session can be fed more text.
#[derive(Debug)]
pub struct Generate<'a> {
    session: &'a mut Session,
    sampler: &'a mut Sampler,
    opts: GenerateOptions,
    decoder: DecodeStream,
    /// Decoded text not yet yielded (held back for the stop strings).
    held: String,
    /// A sampled token not yet evaluated.
    unevaluated: Option<u32>,
    tokens: Vec<u32>,
    finish: Option<FinishReason>,
    /// Whether the decoder has been flushed into `held` after finishing.
    flushed: bool,
}

impl Session {
    /// Generates text after the tokens fed so far, sampling with `sampler`.
    /// The session must hold logits: call [`feed`](Session::feed) first (the
    /// first call of [`Iterator::next`] yields an error otherwise).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use gptq_core::{GenerateOptions, Model, SamplerParams, Session, SessionParams};
    ///
    /// # fn main() -> gptq_core::Result<()> {
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
    /// let model = Arc::new(Model::load(path)?);
    /// let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
    /// let mut sampler = SamplerParams::greedy().build()?;
    /// session.feed(&model.tokenizer().encode("Once upon a time"))?;
    /// for piece in session.generate(&mut sampler, GenerateOptions::max_tokens(20)) {
    ///     print!("{}", piece?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn generate<'a>(
        &'a mut self,
        sampler: &'a mut Sampler,
        opts: GenerateOptions,
    ) -> Generate<'a> {
        Generate {
            session: self,
            sampler,
            opts,
            decoder: DecodeStream::new(),
            held: String::new(),
            unevaluated: None,
            tokens: Vec::new(),
            finish: None,
            flushed: false,
        }
    }
}

impl Generate<'_> {
    /// The tokens generated so far (excluding a final end-of-text token).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Why generation ended; `None` while it can go on.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The session being extended.
    pub fn session(&self) -> &Session {
        self.session
    }

    fn finish(&mut self, reason: FinishReason) {
        if self.finish.is_none() {
            self.finish = Some(reason);
        }
    }

    /// Length of the prefix of `held` that cannot be part of a stop string.
    fn safe_len(&self) -> usize {
        if self.opts.stop.is_empty() {
            return self.held.len();
        }
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.opts.stop.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }

    /// One more token: evaluates the previous one, samples, decodes.
    fn advance(&mut self) -> Result<()> {
        let cancel = self.session.cancel_flag();
        if cancel.swap(false, Ordering::Relaxed) {
            self.finish(FinishReason::Cancelled);
            return Ok(());
        }
        if let Some(id) = self.unevaluated.take() {
            match self.session.step(id) {
                Ok(_) => {}
                Err(Error::Cancelled) => {
                    self.finish(FinishReason::Cancelled);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if self.tokens.len() >= self.opts.max_tokens {
            self.finish(FinishReason::MaxTokens);
            return Ok(());
        }
        let Some(logits) = self.session.logits() else {
            return Err(Error::InvalidArgument(
                "the session holds no logits to sample from: feed tokens before generating".into(),
            ));
        };
        let id = self.sampler.sample(logits, self.session.tokens())?;
        let tok = self.session.model().tokenizer();
        if self.opts.stop_at_eos && Some(id) == tok.eos() {
            self.finish(FinishReason::EndOfText);
            return Ok(());
        }
        self.tokens.push(id);
        self.decoder.push(tok, id, &mut self.held)?;
        // Positions are exhausted: the token just sampled cannot be evaluated.
        let full = self.session.remaining() == 0;
        if !full {
            self.unevaluated = Some(id);
        }
        for (i, s) in self.opts.stop.iter().enumerate() {
            if let Some(at) = self.held.find(s.as_str()) {
                self.held.truncate(at);
                self.finish(FinishReason::Stop(i));
                // The stop string's tokens belong to the session's text.
                if let Some(id) = self.unevaluated.take() {
                    match self.session.step(id) {
                        Ok(_) => {}
                        Err(Error::Cancelled) => self.finish = Some(FinishReason::Cancelled),
                        Err(e) => return Err(e),
                    }
                }
                return Ok(());
            }
        }
        if full {
            self.finish(FinishReason::ContextFull);
        }
        Ok(())
    }
}

impl Iterator for Generate<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            if let Some(reason) = self.finish {
                if !self.flushed {
                    self.flushed = true;
                    if !matches!(reason, FinishReason::Stop(_)) {
                        self.decoder.flush(&mut self.held);
                    }
                }
                if self.held.is_empty() {
                    return None;
                }
                return Some(Ok(std::mem::take(&mut self.held)));
            }
            if let Err(e) = self.advance() {
                self.finish(FinishReason::Error);
                self.held.clear();
                self.flushed = true;
                return Some(Err(e));
            }
            if self.finish.is_none() {
                let n = self.safe_len();
                if n > 0 {
                    let rest = self.held.split_off(n);
                    return Some(Ok(std::mem::replace(&mut self.held, rest)));
                }
            }
        }
    }
}
