//! Request fields shared by the generation endpoints (OpenAI's and
//! llama-server's), parsed leniently where OpenAI is (a stop string or a
//! list, a prompt as text, texts or token arrays) and checked against the
//! limits: every problem is a 400 naming the field.

use gptq_core::Tokenizer;
use gptq_core::sample::SamplerParams;
use serde::Deserialize;
use serde_json::Value;

use crate::args::random_seed;

use super::engine::GenSpec;
use super::error::ApiError;

/// Most stop strings a request may give.
pub const MAX_STOP: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Most choices (`n`) per prompt.
pub const MAX_N: usize = 16;
/// Most alternatives per token in logprobs.
pub const MAX_LOGPROBS: usize = 20;
/// Most `logit_bias` entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// OpenAI's range of a logit bias.
const MAX_BIAS: f32 = 100.0;
/// OpenAI's range of the presence and frequency penalties.
const MAX_PENALTY: f32 = 2.0;

/// Sampling and stopping fields every generation endpoint accepts (OpenAI's
/// names and llama.cpp's extras).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Common {
    /// Sampling temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// llama.cpp: top-k (0 = off).
    pub top_k: Option<i64>,
    /// llama.cpp: min-p.
    pub min_p: Option<f32>,
    /// llama.cpp: repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// llama.cpp: tokens the penalty looks back (-1 = the context).
    pub repeat_last_n: Option<i64>,
    /// Random seed (negative = random).
    pub seed: Option<i64>,
    /// Stop strings: a string or a list.
    pub stop: Option<Value>,
    /// llama.cpp: go on past `<|endoftext|>`.
    pub ignore_eos: Option<bool>,
    /// llama.cpp: may reuse a slot's cached prefix (default true).
    pub cache_prompt: Option<bool>,
    /// Whether to stream server-sent events.
    pub stream: Option<bool>,
    /// OpenAI: `{"include_usage": true}` adds a usage chunk to a stream.
    pub stream_options: Option<StreamOptions>,
    /// OpenAI: lower each recently seen token's logit once (-2 to 2; the
    /// window is `repeat_last_n`, as in llama.cpp).
    pub presence_penalty: Option<f32>,
    /// OpenAI: lower each recently seen token's logit by this times its
    /// count (-2 to 2).
    pub frequency_penalty: Option<f32>,
    /// OpenAI's `{"token id": bias}` (-100 to 100), or llama.cpp's `[[id,
    /// bias], …]` where a bias of `false` bans the token.
    pub logit_bias: Option<Value>,
    /// Choices per prompt.
    pub n: Option<i64>,
    /// llama.cpp: prompt tokens a context shift keeps (-1 = the whole
    /// prompt); used only with `--context-shift`.
    pub n_keep: Option<i64>,
    /// llama.cpp: tokens after the kept ones a context shift drops (0 = half
    /// of them); used only with `--context-shift`.
    pub n_discard: Option<i64>,
}

/// OpenAI's `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    /// Send a final chunk with the usage.
    pub include_usage: bool,
}

/// Server-wide defaults and limits a request is checked against.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Sampling defaults (`--temp`, `--top-k`, …); the seed is drawn per
    /// request unless `-s` fixed it.
    pub sampling: SamplerParams,
    /// Whether `-s` fixed the seed.
    pub fixed_seed: bool,
    /// Tokens per request when the request does not say (`-n`; `usize::MAX`
    /// = until the context is full).
    pub n_predict: usize,
    /// A slot's context.
    pub n_ctx: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// `--context-shift`: a prompt too long for the context is cut and a
    /// full context is shifted, as llama-server does, instead of refusing.
    pub context_shift: bool,
}

impl Common {
    /// Whether to stream.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Choices per prompt, checked.
    pub fn n(&self) -> Result<usize, ApiError> {
        match self.n.unwrap_or(1) {
            n if (1..=MAX_N as i64).contains(&n) => Ok(n as usize),
            n => Err(ApiError::invalid_param(
                "n",
                format!("n must be between 1 and {MAX_N}, got {n}"),
            )),
        }
    }

    /// The generation spec for `prompt`, choice `index` (which offsets the
    /// seed, so that `n` sampled choices differ), with `max_tokens` as the
    /// request gave it (`None`: the server's default), `extra_stop` after the
    /// request's stop strings, and `logprobs` alternatives.
    #[allow(clippy::too_many_arguments)]
    pub fn spec(
        &self,
        d: &Defaults,
        prompt: Vec<u32>,
        max_tokens: Option<i64>,
        max_param: &str,
        extra_stop: &[&str],
        logprobs: Option<usize>,
        index: usize,
    ) -> Result<GenSpec, ApiError> {
        let shift = if d.context_shift {
            check_ids(d, &prompt)?;
            Some(self.shift_spec(prompt.len(), d.n_ctx)?)
        } else {
            check_prompt(d, &prompt)?;
            None
        };
        let (prompt, truncated) = match shift {
            Some(sh) if prompt.len() >= d.n_ctx => (cut_prompt(&prompt, sh.n_keep, d.n_ctx), true),
            _ => (prompt, false),
        };
        let room = d.n_ctx - prompt.len();
        let max_tokens = match max_tokens {
            // A shifting context has no end: the budget alone limits (and the
            // end of text, a stop string, the timeout), as in llama-server.
            None if shift.is_some() => d.n_predict,
            Some(n) if n < 0 && shift.is_some() => usize::MAX,
            Some(n) if n > 0 && shift.is_some() => usize::try_from(n).unwrap_or(usize::MAX),
            None => d.n_predict.min(room),
            Some(n) if n < 0 => room,
            Some(0) => {
                return Err(ApiError::invalid_param(
                    max_param,
                    format!("{max_param} must be at least 1"),
                ));
            }
            Some(n) if n as u64 > room as u64 => {
                return Err(ApiError {
                    code: Some("context_length_exceeded"),
                    ..ApiError::invalid_param(
                        max_param,
                        format!(
                            "the context of {} tokens cannot hold the prompt ({} tokens) and {max_param} = {n}: at most {room} more tokens fit",
                            d.n_ctx,
                            prompt.len()
                        ),
                    )
                });
            }
            Some(n) => n as usize,
        };
        let mut s = d.sampling.clone();
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        if let Some(p) = self.top_p {
            s.top_p = p;
        }
        if let Some(k) = self.top_k {
            s.top_k = usize::try_from(k)
                .map_err(|_| ApiError::invalid_param("top_k", "top_k must be 0 or more"))?;
        }
        if let Some(p) = self.min_p {
            s.min_p = p;
        }
        if let Some(p) = self.repeat_penalty {
            s.repeat_penalty = p;
        }
        for (name, v, field) in [
            (
                "presence_penalty",
                self.presence_penalty,
                &mut s.presence_penalty,
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                &mut s.frequency_penalty,
            ),
        ] {
            if let Some(v) = v {
                if !(-MAX_PENALTY..=MAX_PENALTY).contains(&v) {
                    return Err(ApiError::invalid_param(
                        name,
                        format!("{name} must be between -{MAX_PENALTY} and {MAX_PENALTY}, got {v}"),
                    ));
                }
                *field = v;
            }
        }
        if let Some(bias) = parse_logit_bias(self.logit_bias.as_ref(), d.n_vocab)? {
            s.logit_bias = bias;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = match n {
                -1 => d.n_ctx,
                n if n >= 0 => n as usize,
                n => {
                    return Err(ApiError::invalid_param(
                        "repeat_last_n",
                        format!("repeat_last_n must be -1 or more, got {n}"),
                    ));
                }
            };
        }
        s.seed = match self.seed {
            Some(seed) if seed >= 0 => (seed as u64).wrapping_add(index as u64),
            _ if d.fixed_seed => d.sampling.seed.wrapping_add(index as u64),
            _ => random_seed(),
        };
        s.validate()
            .map_err(|e| ApiError::invalid(format!("sampling: {e}")))?;
        let mut stop = parse_stop(self.stop.as_ref())?;
        stop.extend(extra_stop.iter().map(|s| s.to_string()));
        Ok(GenSpec {
            prompt,
            sampling: s,
            max_tokens,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs,
            cache_prompt: self.cache_prompt.unwrap_or(true),
            prompt_logprobs: None,
            shift,
            n_ctx: d.n_ctx,
            truncated,
        })
    }

    /// The context shift's sizes for a prompt of `n_prompt` tokens:
    /// llama-server's `n_keep` (-1 = the whole prompt), at most `n_ctx - 4`,
    /// and `n_discard` (0 = half of what follows the kept tokens).
    fn shift_spec(&self, n_prompt: usize, n_ctx: usize) -> Result<Shift, ApiError> {
        let n_keep = match self.n_keep.unwrap_or(0) {
            -1 => n_prompt,
            n if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            n => {
                return Err(ApiError::invalid_param(
                    "n_keep",
                    format!("n_keep must be -1 or more, got {n}"),
                ));
            }
        };
        let n_discard = match self.n_discard.unwrap_or(0) {
            n if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            n => {
                return Err(ApiError::invalid_param(
                    "n_discard",
                    format!("n_discard must be 0 or more, got {n}"),
                ));
            }
        };
        Ok(Shift {
            n_keep: n_keep.min(n_ctx.saturating_sub(4)),
            n_discard,
        })
    }
}

/// How a full context is shifted (`--context-shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// Leading tokens always kept.
    pub n_keep: usize,
    /// Tokens after them dropped per shift; 0 = half of those.
    pub n_discard: usize,
}

/// A prompt of at least `n_ctx` tokens cut as llama-server cuts it (context
/// shift on): the first `n_keep` tokens, then the rest without as many
/// leading blocks of half the remaining room as it takes to fit, so that
/// the result is shorter than the context.
pub fn cut_prompt(prompt: &[u32], n_keep: usize, n_ctx: usize) -> Vec<u32> {
    let n_keep = n_keep.min(n_ctx.saturating_sub(4)).min(prompt.len());
    let block = ((n_ctx - n_keep) / 2).max(1);
    let over = prompt.len() - n_keep;
    let erased = over.saturating_sub(block) / block;
    let mut cut = prompt[..n_keep].to_vec();
    cut.extend_from_slice(&prompt[n_keep + erased * block..]);
    cut
}

/// A prompt's tokens must fit the context with room for one more, and be
/// ids of the vocabulary.
pub fn check_prompt(d: &Defaults, prompt: &[u32]) -> Result<(), ApiError> {
    check_ids(d, prompt)?;
    if prompt.len() >= d.n_ctx {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid_param(
                "prompt",
                format!(
                    "the prompt is {} tokens, which leaves no room in the context of {} tokens",
                    prompt.len(),
                    d.n_ctx
                ),
            )
        });
    }
    Ok(())
}

/// A prompt's tokens must be ids of the vocabulary.
pub fn check_ids(d: &Defaults, prompt: &[u32]) -> Result<(), ApiError> {
    match prompt.iter().find(|&&id| id as usize >= d.n_vocab) {
        Some(&id) => Err(ApiError::invalid_param(
            "prompt",
            format!("token id {id} is outside the vocabulary of {}", d.n_vocab),
        )),
        None => Ok(()),
    }
}

/// `logit_bias`: absent or null (`None`: the server's default), OpenAI's
/// object of token ids (as strings) to biases in [-100, 100], or llama.cpp's
/// list of `[id, bias]` pairs, where a bias of `false` bans the token (as
/// `-inf`). Token text as a key (a llama.cpp extension) is refused: ids only.
pub fn parse_logit_bias(
    v: Option<&Value>,
    n_vocab: usize,
) -> Result<Option<Vec<(u32, f32)>>, ApiError> {
    let bad = |m: String| ApiError::invalid_param("logit_bias", m);
    let id = |k: &Value| -> Result<u32, ApiError> {
        let n = match k {
            Value::String(s) => s.trim().parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match n {
            Some(n) if n < n_vocab as u64 => Ok(n as u32),
            Some(n) => Err(bad(format!(
                "token id {n} is outside the vocabulary of {n_vocab}"
            ))),
            None => Err(bad(format!(
                "keys must be token ids (integers from 0), got {k}"
            ))),
        }
    };
    let bias = |b: &Value| -> Result<f32, ApiError> {
        match b {
            Value::Bool(false) => Ok(f32::NEG_INFINITY),
            Value::Number(n) => match n.as_f64() {
                Some(x) if (-f64::from(MAX_BIAS)..=f64::from(MAX_BIAS)).contains(&x) => {
                    Ok(x as f32)
                }
                _ => Err(bad(format!(
                    "a bias must be between -{MAX_BIAS} and {MAX_BIAS}, got {n}"
                ))),
            },
            _ => Err(bad(format!(
                "a bias must be a number (or false, to ban the token), got {b}"
            ))),
        }
    };
    let entries: Vec<(u32, f32)> = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) if m.len() <= MAX_LOGIT_BIAS => m
            .iter()
            .map(|(k, b)| Ok((id(&Value::String(k.clone()))?, bias(b)?)))
            .collect::<Result<_, ApiError>>()?,
        Some(Value::Array(a)) if a.len() <= MAX_LOGIT_BIAS => a
            .iter()
            .map(|e| match e.as_array().map(Vec::as_slice) {
                Some([k, b]) => Ok((id(k)?, bias(b)?)),
                _ => Err(bad(format!(
                    "a list entry must be [token id, bias], got {e}"
                ))),
            })
            .collect::<Result<_, ApiError>>()?,
        Some(Value::Object(_) | Value::Array(_)) => {
            return Err(bad(format!("at most {MAX_LOGIT_BIAS} entries")));
        }
        Some(_) => {
            return Err(bad(
                "logit_bias must be an object of token ids to biases, or a list of [id, bias]"
                    .to_string(),
            ));
        }
    };
    Ok(Some(entries))
}

/// `stop`: absent, null, a string, or a list of strings.
pub fn parse_stop(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::invalid_param("stop", m);
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad("stop must be a string or a list of strings".into())),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop must be a string or a list of strings".into())),
    };
    if list.len() > MAX_STOP {
        return Err(bad(format!("at most {MAX_STOP} stop strings")));
    }
    if let Some(s) = list.iter().find(|s| s.len() > MAX_STOP_LEN) {
        return Err(bad(format!(
            "a stop string is {} bytes; at most {MAX_STOP_LEN}",
            s.len()
        )));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// One prompt of a request: text, or token ids.
pub enum PromptItem {
    /// Text, tokenized with special tokens recognised (as `gptq complete`).
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

impl PromptItem {
    /// The tokens (an empty prompt becomes `<|endoftext|>`, GPT-2's start).
    pub fn tokens(&self, tok: &Tokenizer) -> Vec<u32> {
        let mut t = match self {
            PromptItem::Text(s) => tok.encode_with_special(s),
            PromptItem::Tokens(t) => t.clone(),
        };
        if t.is_empty() {
            t.push(tok.bos().or(tok.eos()).unwrap_or(0));
        }
        t
    }
}

/// OpenAI's `prompt`: a string, a list of strings, a list of token ids, or a
/// list of lists of token ids (llama.cpp also accepts a list mixing text and
/// ids, as one prompt).
pub fn parse_prompts(v: Option<&Value>) -> Result<Vec<PromptItem>, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("prompt", m.to_string());
    let ids = |a: &[Value]| -> Option<Vec<u32>> {
        a.iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    let prompts = match v {
        None | Some(Value::Null) => return Err(bad("prompt is required")),
        Some(Value::String(s)) => vec![PromptItem::Text(s.clone())],
        Some(Value::Array(a)) if a.is_empty() => return Err(bad("prompt is an empty list")),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|v| PromptItem::Text(v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => {
            vec![PromptItem::Tokens(ids(a).ok_or_else(|| {
                bad("token ids must be integers from 0 to 2^32-1")
            })?)]
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_array) => a
            .iter()
            .map(|v| {
                let a = v.as_array().map(Vec::as_slice).unwrap_or_default();
                ids(a)
                    .map(PromptItem::Tokens)
                    .ok_or_else(|| bad("token ids must be integers from 0 to 2^32-1"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(bad(
                "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
            ));
        }
    };
    Ok(prompts)
}

/// A count of log-probability alternatives (`param`: 0 to [`MAX_LOGPROBS`]).
pub fn logprobs_count(param: &str, v: Option<i64>) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(n) if (0..=MAX_LOGPROBS as i64).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::invalid_param(
            param,
            format!("{param} must be between 0 and {MAX_LOGPROBS}, got {n}"),
        )),
    }
}

/// Chat's `logprobs` switch and `top_logprobs` count (OpenAI's and
/// ollama's rule: alternatives only with `logprobs: true`) as the number of
/// alternatives per token, or `None` for no log-probabilities.
pub fn logprobs_asked(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<usize>, ApiError> {
    let top = logprobs_count("top_logprobs", top)?;
    match (logprobs.unwrap_or(false), top) {
        (true, top) => Ok(Some(top.unwrap_or(0))),
        (false, Some(t)) if t > 0 => Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        )),
        (false, _) => Ok(None),
    }
}

/// Token ids from a request's `field`, each checked against the vocabulary.
pub fn token_ids(field: &str, ids: &[i64], n_vocab: usize) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&i| (i as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        field,
                        format!("token id {id} is outside the vocabulary of {n_vocab}"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> Defaults {
        Defaults {
            sampling: SamplerParams::default(),
            fixed_seed: false,
            n_predict: usize::MAX,
            n_ctx: 32,
            n_vocab: 100,
            context_shift: false,
        }
    }

    #[test]
    fn stop_forms() {
        assert_eq!(parse_stop(None).unwrap(), Vec::<String>::new());
        assert_eq!(parse_stop(Some(&json!("x"))).unwrap(), vec!["x"]);
        assert_eq!(
            parse_stop(Some(&json!(["a", "", "b"]))).unwrap(),
            vec!["a", "b"]
        );
        assert!(parse_stop(Some(&json!(3))).is_err());
        assert!(parse_stop(Some(&json!([1]))).is_err());
    }

    #[test]
    fn prompt_forms() {
        let n = |v: Value| parse_prompts(Some(&v)).map(|p| p.len());
        assert_eq!(n(json!("hi")).unwrap(), 1);
        assert_eq!(n(json!(["a", "b"])).unwrap(), 2);
        assert_eq!(n(json!([1, 2, 3])).unwrap(), 1);
        assert_eq!(n(json!([[1], [2, 3]])).unwrap(), 2);
        assert!(n(json!([])).is_err());
        assert!(n(json!([-1])).is_err());
        assert!(n(json!({"a": 1})).is_err());
        assert!(parse_prompts(None).is_err());
    }

    #[test]
    fn logit_bias_forms() {
        let parse = |v: Value| parse_logit_bias(Some(&v), 100);
        assert_eq!(parse_logit_bias(None, 100).unwrap(), None);
        assert_eq!(parse(json!(null)).unwrap(), None);
        assert_eq!(parse(json!({})).unwrap(), Some(vec![]));
        assert_eq!(
            parse(json!({"7": -100, "9": 2.5})).unwrap(),
            Some(vec![(7, -100.0), (9, 2.5)])
        );
        assert_eq!(
            parse(json!([[7, false], [9, 1]])).unwrap(),
            Some(vec![(7, f32::NEG_INFINITY), (9, 1.0)])
        );
        for bad in [
            json!({"hello": 1}),
            json!({"100": 1}),
            json!({"7": 101}),
            json!({"7": true}),
            json!({"7": "1"}),
            json!([[7]]),
            json!([["7x", 1]]),
            json!(5),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("logit_bias"), "{bad}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_LOGIT_BIAS)
            .map(|i| (i.to_string(), json!(1)))
            .collect();
        assert!(parse_logit_bias(Some(&Value::Object(many)), 1 << 20).is_err());
    }

    #[test]
    fn penalties_and_bias_reach_the_sampling() {
        let d = defaults();
        let c: Common = serde_json::from_value(json!({
            "presence_penalty": 0.5, "frequency_penalty": -0.25, "logit_bias": {"3": -1}
        }))
        .unwrap();
        let s = c
            .spec(&d, vec![1], None, "max_tokens", &[], None, 0)
            .unwrap()
            .sampling;
        assert_eq!(
            (s.presence_penalty, s.frequency_penalty, s.logit_bias),
            (0.5, -0.25, vec![(3, -1.0)])
        );
        let c: Common = serde_json::from_value(json!({"presence_penalty": 2.5})).unwrap();
        let e = c
            .spec(&d, vec![1], None, "max_tokens", &[], None, 0)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("presence_penalty"));
    }

    #[test]
    fn limits_name_the_field() {
        let d = defaults();
        let c = Common::default();
        let e = c
            .spec(&d, vec![1; 40], None, "max_tokens", &[], None, 0)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = c
            .spec(&d, vec![1; 10], Some(30), "max_tokens", &[], None, 0)
            .unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        let e = c
            .spec(&d, vec![100], None, "max_tokens", &[], None, 0)
            .unwrap_err();
        assert!(e.message.contains("outside the vocabulary"));
        let s = c
            .spec(&d, vec![1; 10], None, "max_tokens", &[], None, 0)
            .unwrap();
        assert_eq!(s.max_tokens, 22);
        let t = Common {
            temperature: Some(-1.0),
            ..Common::default()
        };
        assert!(
            t.spec(&d, vec![1], None, "max_tokens", &[], None, 0)
                .is_err()
        );
    }

    #[test]
    fn a_long_prompt_is_cut_in_llama_server_blocks() {
        let p: Vec<u32> = (0..40).collect();
        // n_ctx 32, n_keep 4: room 28 in blocks of 14; one block of the 36
        // after the kept ones goes (llama-server: (40 - 4 - 14) / 14 = 1).
        let want: Vec<u32> = (0..4).chain(18..40).collect();
        assert_eq!(cut_prompt(&p, 4, 32), want);
        // No kept tokens: blocks of 16, one erased of 40 → the last 24.
        assert_eq!(cut_prompt(&p, 0, 32), (16..40).collect::<Vec<u32>>());
        // Exactly the context: one block erased, 16 left.
        let q: Vec<u32> = (0..32).collect();
        assert_eq!(cut_prompt(&q, 0, 32), (16..32).collect::<Vec<u32>>());
        // n_keep past n_ctx - 4 is held to it; every cut is shorter than the
        // context.
        for n in 32..200 {
            let p: Vec<u32> = (0..n).collect();
            for keep in [0, 1, 4, 27, 28, 31, 100] {
                let c = cut_prompt(&p, keep, 32);
                assert!(c.len() < 32 && c.len() >= 16, "{n} {keep}: {}", c.len());
                let k = keep.min(28);
                assert_eq!(&c[..k], &p[..k]);
                assert_eq!(c.last(), p.last());
            }
        }
        // A tiny context still leaves room.
        assert_eq!(cut_prompt(&p, 4, 2).len(), 1);
    }

    #[test]
    fn with_context_shift_long_prompts_and_budgets_pass() {
        let d = Defaults {
            context_shift: true,
            ..defaults()
        };
        let c: Common = serde_json::from_value(json!({"n_keep": 4})).unwrap();
        let s = c
            .spec(&d, (0..40).collect(), Some(100), "n_predict", &[], None, 0)
            .unwrap();
        assert!(s.truncated);
        assert_eq!(s.prompt, cut_prompt(&(0..40).collect::<Vec<u32>>(), 4, 32));
        assert_eq!(s.max_tokens, 100);
        assert_eq!(
            s.shift,
            Some(Shift {
                n_keep: 4,
                n_discard: 0
            })
        );
        let s = c
            .spec(&d, vec![1; 10], Some(-1), "n_predict", &[], None, 0)
            .unwrap();
        assert!(!s.truncated);
        assert_eq!(s.max_tokens, usize::MAX);
        // -1 keeps the whole prompt, held to n_ctx - 4.
        let all: Common = serde_json::from_value(json!({"n_keep": -1, "n_discard": 3})).unwrap();
        let s = all
            .spec(&d, vec![1; 10], None, "n_predict", &[], None, 0)
            .unwrap();
        assert_eq!(
            s.shift,
            Some(Shift {
                n_keep: 10,
                n_discard: 3
            })
        );
        for (field, v) in [("n_keep", -2), ("n_discard", -1)] {
            let bad: Common = serde_json::from_value(json!({ field: v })).unwrap();
            let e = bad
                .spec(&d, vec![1; 10], None, "n_predict", &[], None, 0)
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field));
        }
        // Still refused: no tokens to generate, ids outside the vocabulary.
        assert!(
            c.spec(&d, vec![1], Some(0), "n_predict", &[], None, 0)
                .is_err()
        );
        assert!(
            c.spec(&d, vec![100; 40], None, "n_predict", &[], None, 0)
                .is_err()
        );
    }
}
