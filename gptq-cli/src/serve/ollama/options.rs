//! The fields `/api/generate` and `/api/chat` share, ollama's `options`
//! among them, checked into a [`Plan`] and then the engine's job.
//!
//! The `options` ollama accepts are accepted: the sampling ones apply,
//! `num_ctx` limits the request's context (at most a slot's, as ollama
//! clamps it to the model's) and a prompt longer than it is cut to fit
//! (`num_keep`, `truncate`; see [`super::truncate`]), load-time ones
//! (`num_gpu`, `num_thread`, `use_mmap`, …) are fixed by the server's flags
//! and ignored, as ollama ignores them for a loaded model; sampling methods
//! gptq does not have (`mirostat`, `typical_p`, `tfs_z`) are refused unless
//! neutral, and an unknown option is refused.

use serde::Deserialize;
use serde_json::Value;

use super::super::AppState;
use super::super::engine::GenSpec;
use super::super::error::ApiError;
use super::super::request::{Common, logprobs_asked};
use super::check_model;
use super::truncate::{NUM_KEEP, keep_fitting};

/// ollama's `options` (every key its API defines).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Options {
    // Sampling and stopping: applied.
    num_predict: Option<i64>,
    num_ctx: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    stop: Option<Value>,
    // Sampling methods gptq does not have: refused unless neutral.
    typical_p: Option<f32>,
    tfs_z: Option<f32>,
    mirostat: Option<i64>,
    mirostat_tau: Option<f32>,
    mirostat_eta: Option<f32>,
    // Load-time settings: the server's flags fix them (ignored, as ollama
    // ignores them for a model that is already loaded).
    numa: Option<Value>,
    num_batch: Option<Value>,
    num_gpu: Option<Value>,
    main_gpu: Option<Value>,
    low_vram: Option<Value>,
    f16_kv: Option<Value>,
    logits_all: Option<Value>,
    vocab_only: Option<Value>,
    use_mmap: Option<Value>,
    use_mlock: Option<Value>,
    embedding_only: Option<Value>,
    num_thread: Option<Value>,
    // Tokens a prompt that does not fit (see `truncate`) and a shifted
    // context (`--context-shift`) keep from their start; then a switch
    // ollama itself no longer reads.
    num_keep: Option<i64>,
    penalize_newline: Option<Value>,
}

/// Fields `/api/generate` and `/api/chat` share.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Base {
    model: Option<String>,
    options: Option<Options>,
    stream: Option<bool>,
    format: Option<Value>,
    pub(super) keep_alive: Option<Value>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    /// Whether a prompt longer than the context is cut to fit (ollama's
    /// default) or refused.
    truncate: Option<bool>,
}

impl Options {
    /// The refusals: sampling methods gptq does not have, set to do
    /// something.
    fn check(&self) -> Result<(), ApiError> {
        let unsupported = |name: &str, why: &str| {
            Err(ApiError::invalid_param(
                &format!("options.{name}"),
                format!("{why} is not supported"),
            ))
        };
        if self.mirostat.is_some_and(|m| m != 0) {
            return unsupported("mirostat", "mirostat sampling");
        }
        if self.typical_p.is_some_and(|p| p != 1.0) {
            return unsupported("typical_p", "locally typical sampling");
        }
        if self.tfs_z.is_some_and(|z| z != 1.0) {
            return unsupported("tfs_z", "tail-free sampling");
        }
        Ok(())
    }

    /// The shared request fields these options set.
    fn common(&self) -> Common {
        Common {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            stop: self.stop.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            ..Common::default()
        }
    }
}

/// What a generation request asks, checked: the sampling fields, the token
/// limit, the context and the log-probabilities.
pub(super) struct Plan {
    /// The model as the request named it (ollama echoes it).
    pub(super) model: String,
    pub(super) common: Common,
    pub(super) num_predict: Option<i64>,
    pub(super) n_ctx: usize,
    pub(super) logprobs: Option<usize>,
    pub(super) stream: bool,
    /// Cut a prompt that does not fit (else refuse it).
    truncate: bool,
    /// Tokens a cut prompt keeps from its start (and a context shift keeps).
    num_keep: i64,
    /// The server shifts full contexts (`--context-shift`), as ollama does.
    shift: bool,
}

impl Base {
    pub(super) fn plan(&self, state: &AppState) -> Result<Plan, ApiError> {
        check_model(state, self.model.as_deref())?;
        if let Some(f) = &self.format
            && !(f.is_null() || f.as_str() == Some(""))
        {
            return Err(ApiError::invalid_param(
                "format",
                "structured output (format) is not supported",
            ));
        }
        if let Some(t) = &self.think
            && !(t.is_null() || *t == Value::Bool(false))
        {
            return Err(ApiError::invalid_param(
                "think",
                "thinking is not supported (GPT-2 does not think)",
            ));
        }
        let opts = self.options.as_ref();
        if let Some(o) = opts {
            o.check()?;
        }
        let slot = state.defaults.n_ctx;
        let n_ctx = match opts.and_then(|o| o.num_ctx) {
            None => slot,
            Some(n) if n < 2 => {
                return Err(ApiError::invalid_param(
                    "options.num_ctx",
                    format!("num_ctx must be at least 2, got {n}"),
                ));
            }
            // Larger than a slot: a slot's, as ollama clamps num_ctx to the
            // model's trained context.
            Some(n) => usize::try_from(n).map_or(slot, |n| n.min(slot)),
        };
        let logprobs = logprobs_asked(self.logprobs, self.top_logprobs)?;
        Ok(Plan {
            model: self.model.as_deref().unwrap_or_default().trim().to_string(),
            common: opts.map(Options::common).unwrap_or_default(),
            num_predict: opts.and_then(|o| o.num_predict),
            n_ctx,
            logprobs,
            stream: self.stream.unwrap_or(true),
            truncate: self.truncate.unwrap_or(true),
            num_keep: opts.and_then(|o| o.num_keep).unwrap_or(NUM_KEEP),
            shift: state.defaults.context_shift,
        })
    }
}

impl Plan {
    /// Whether a prompt of `n` tokens fits the context as it is (with room
    /// for one more).
    pub(super) fn fits(&self, n: usize) -> bool {
        n < self.n_ctx
    }

    /// The tokens a prompt that does not fit is cut to. With
    /// `--context-shift`, as ollama cuts it: the whole context but the one
    /// token gptq needs free to read it (the generation then shifts the
    /// context). Without, room is left for the answer: `num_predict` tokens
    /// up to half the context, half when unlimited (what ollama's context
    /// shift frees), at least one.
    pub(super) fn cut_to(&self) -> usize {
        if self.shift {
            return self.n_ctx - 1;
        }
        let half = (self.n_ctx / 2).max(1);
        let room = match self.num_predict {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(half).min(half),
            _ => half,
        };
        self.n_ctx - room
    }

    /// `ids` as ollama feeds a prompt: as it is if it fits, else cut (see
    /// [`keep_fitting`]) to [`cut_to`](Self::cut_to) tokens, or refused
    /// with `"truncate": false`.
    pub(super) fn fit(&self, ids: Vec<u32>) -> Result<Vec<u32>, ApiError> {
        if self.fits(ids.len()) {
            return Ok(ids);
        }
        self.may_cut(ids.len())?;
        Ok(keep_fitting(ids, self.cut_to(), self.num_keep))
    }

    /// The refusal of a prompt of `n` tokens that does not fit, with
    /// `"truncate": false`.
    pub(super) fn may_cut(&self, n: usize) -> Result<(), ApiError> {
        if self.truncate {
            return Ok(());
        }
        Err(ApiError::invalid_param(
            "truncate",
            format!(
                "the input length exceeds the context length: the prompt is {n} tokens and the context {} (with \"truncate\": true it would be cut to fit)",
                self.n_ctx
            ),
        ))
    }

    /// The engine's job for `prompt`. ollama's `num_predict`: -1 (or any
    /// value of 0 or less) runs until the context is full, and a limit past
    /// the context ends there ("length") rather than being refused. With
    /// `--context-shift`, as in ollama: a full context is shifted (the first
    /// `num_keep` tokens kept, half of the rest dropped), so -1 runs until
    /// the end of text, a stop string or the timeout, -2 until the context
    /// is full, and a limit is generated in full.
    pub(super) fn spec(
        &self,
        state: &AppState,
        prompt: Vec<u32>,
        extra_stop: &[&str],
    ) -> Result<GenSpec, ApiError> {
        let mut d = state.defaults.clone();
        d.n_ctx = self.n_ctx;
        // ollama's cut (see `fit`) has made the prompt fit: the shift, when
        // on, only acts while generating, keeping `num_keep` tokens.
        d.context_shift = self.shift;
        let room = d.n_ctx.saturating_sub(prompt.len()) as i64;
        let max = self.num_predict.map(|n| match n {
            // ollama's -2: until the context is full.
            -2 if self.shift => room.max(1),
            n if n <= 0 => -1,
            n if self.shift => n,
            n => n.min(room.max(1)),
        });
        let mut common = self.common.clone();
        common.n_keep = Some(self.num_keep.max(-1));
        common
            .spec(
                &d,
                prompt,
                max,
                "options.num_predict",
                extra_stop,
                self.logprobs,
                0,
            )
            .map_err(|mut e| {
                if e.param.as_deref() == Some("prompt") && self.n_ctx < state.defaults.n_ctx {
                    e.message.push_str(" (options.num_ctx)");
                }
                e
            })
    }
}
