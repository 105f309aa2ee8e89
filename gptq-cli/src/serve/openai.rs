//! OpenAI's `POST /v1/completions` and `POST /v1/chat/completions`: request
//! fields, response and stream-chunk shapes.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use gptq_core::Tokenizer;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat_template::{self, CHAT_STOP, Message};
use super::engine::{Event, Outcome};
use super::error::ApiError;
use super::logprobs::TokenLogprob;
use super::metrics::Endpoint;
use super::request::{Common, logprobs_asked, logprobs_count, parse_prompts};
use super::stream::{Collected, collect_all, error_data, merged, sse, submit_all};
use super::{AppState, read_json};

/// `POST /v1/completions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CompletionRequest {
    prompt: Option<Value>,
    max_tokens: Option<i64>,
    /// An integer: the chosen token's log-probability and this many
    /// alternatives per token.
    logprobs: Option<i64>,
    /// Return the prompt before the completion (with its tokens'
    /// log-probabilities when `logprobs` is set: how evaluation harnesses
    /// score a text); `max_tokens` may then be 0.
    echo: Option<bool>,
    suffix: Option<Value>,
    best_of: Option<i64>,
    #[serde(flatten)]
    common: Common,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatRequest {
    messages: Option<Vec<Message>>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    response_format: Option<Value>,
    tools: Option<Vec<Value>>,
    #[serde(flatten)]
    common: Common,
}

/// A response id: the kind, the server's start time and a counter.
fn new_id(state: &AppState, kind: &str) -> String {
    let n = state.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{kind}-{:x}{n:06x}", state.created)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// A token's text as OpenAI shows it (invalid UTF-8 replaced) and its bytes.
fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_bytes(id).unwrap_or_default().to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// One token of completions' `logprobs`: its id, its score (none for a
/// prompt's first token, which nothing predicts) and its text's offset.
type LpEntry<'a> = (u32, Option<&'a TokenLogprob>, usize);

/// Completions' `logprobs` object for some tokens.
fn completion_logprobs(tok: &Tokenizer, toks: &[LpEntry<'_>]) -> Value {
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for &(id, lp, offset) in toks {
        tokens.push(token_text(tok, id).0);
        lps.push(lp.map(|l| l.logprob));
        tops.push(lp.map(|l| {
            let mut top = serde_json::Map::new();
            for &(id, l) in &l.top {
                top.insert(token_text(tok, id).0, json!(l));
            }
            Value::Object(top)
        }));
        offsets.push(offset);
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// A prompt as `echo` returns it: its text, its tokens, and where each
/// token's text starts.
#[derive(Clone, Debug)]
struct Echo {
    text: String,
    ids: Vec<u32>,
    offsets: Vec<usize>,
}

impl Echo {
    fn of(tok: &Tokenizer, ids: &[u32]) -> Echo {
        let bytes = tok.decode_bytes(ids).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut offsets = Vec::with_capacity(ids.len());
        let mut at = 0;
        for &id in ids {
            offsets.push(at.min(text.len()));
            at += tok.token_bytes(id).map_or(0, <[u8]>::len);
        }
        Echo {
            text,
            ids: ids.to_vec(),
            offsets,
        }
    }

    /// The prompt's entries of `logprobs`, scored by `lps` (the tokens after
    /// the first).
    fn entries<'a>(&self, lps: &'a [TokenLogprob]) -> Vec<LpEntry<'a>> {
        self.ids
            .iter()
            .zip(&self.offsets)
            .enumerate()
            .map(|(k, (&id, &at))| (id, k.checked_sub(1).and_then(|k| lps.get(k)), at))
            .collect()
    }
}

/// Chat's `logprobs.content` entries for some tokens.
fn chat_logprobs(tok: &Tokenizer, toks: &[&TokenLogprob]) -> Value {
    let entry = |id: u32, lp: f32| {
        let (t, b) = token_text(tok, id);
        json!({"token": t, "logprob": lp, "bytes": b})
    };
    let content: Vec<Value> = toks
        .iter()
        .map(|lp| {
            let mut e = entry(lp.id, lp.logprob);
            e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Completions);
    match completions_inner(&state, body).await {
        Ok(r) => r,
        Err(e) => state.fail(e),
    }
}

async fn completions_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = read_json(state, body).await?;
    let echo = req.echo == Some(true);
    if req.suffix.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(ApiError::invalid_param("suffix", "suffix is not supported"));
    }
    let n = req.common.n()?;
    if req.best_of.is_some_and(|b| b != n as i64) {
        return Err(ApiError::invalid_param("best_of", "best_of must equal n"));
    }
    let logprobs = logprobs_count("logprobs", req.logprobs)?;
    let tok = state.model.tokenizer();
    let prompts = parse_prompts(req.prompt.as_ref())?;
    let mut specs = Vec::new();
    let mut echoes = Vec::new();
    let mut prompt_tokens = 0;
    // With echo, max_tokens 0 only scores the prompt.
    let score_only = echo && req.max_tokens == Some(0);
    for p in &prompts {
        let ids = p.tokens(tok);
        let mut echoed = None;
        for i in 0..n {
            let max = if score_only { Some(1) } else { req.max_tokens };
            let mut spec = req.common.spec(
                &state.defaults,
                ids.clone(),
                max,
                "max_tokens",
                &[],
                logprobs,
                i,
            )?;
            if score_only {
                spec.max_tokens = 0;
            }
            if echo {
                spec.prompt_logprobs = logprobs;
            }
            if i == 0 {
                // The prompt as read (cut, with --context-shift, when it
                // did not fit): what the usage counts and echo returns.
                prompt_tokens += spec.prompt.len();
                echoed = echo.then(|| Echo::of(tok, &spec.prompt));
            }
            specs.push(spec);
            echoes.push(echoed.clone());
        }
    }
    let rxs = submit_all(state, specs)?;
    let (id, created, model) = (new_id(state, "cmpl"), state.now(), state.model_id.clone());
    if !req.common.stream() {
        let done = collect_all(rxs).await?;
        let completion: usize = done.iter().map(|c| c.outcome.completion_tokens).sum();
        let choices: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let echo = echoes[i].as_ref();
                let shift = echo.map_or(0, |e| e.text.len());
                let lp = logprobs.map(|_| {
                    let prompt_lps = c.prompt_logprobs.as_deref().unwrap_or_default();
                    let mut t = echo.map(|e| e.entries(prompt_lps)).unwrap_or_default();
                    t.extend(c.tokens.iter().filter_map(|t| {
                        t.logprob
                            .as_ref()
                            .map(|l| (t.id, Some(l), t.offset + shift))
                    }));
                    completion_logprobs(tok, &t)
                });
                let text = match echo {
                    Some(e) => format!("{}{}", e.text, c.text),
                    None => c.text.clone(),
                };
                json!({
                    "index": i,
                    "text": text,
                    "logprobs": lp,
                    "finish_reason": c.outcome.finish.openai(),
                })
            })
            .collect();
        return Ok(Json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": state.fingerprint,
            "choices": choices,
            "usage": usage(prompt_tokens, completion),
        }))
        .into_response());
    }
    let st = CompletionStream {
        state: Arc::clone(state),
        id,
        created,
        model,
        include_usage: req.common.include_usage(),
        offsets: vec![0; rxs.len()],
        echoes,
        prompt_tokens,
        completion_tokens: 0,
        open: rxs.len(),
    };
    Ok(stream_response(rxs, st, true))
}

/// Turns one choice's event into the SSE data items it sends.
pub trait StreamShape: Send + 'static {
    /// The data items for event `ev` of choice `i` (`[DONE]` included when
    /// it is the last).
    fn on(&mut self, i: usize, ev: Event) -> Vec<String>;
}

/// An SSE response over the merged events of `rxs`, shaped by `shape`; an
/// error ends the stream with an error item (and `[DONE]` when `done`:
/// OpenAI's streams end so, llama-server's own do not).
pub fn stream_response(
    rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>,
    mut shape: impl StreamShape,
    done: bool,
) -> Response {
    let mut failed = false;
    let items = merged(rxs).flat_map(move |(i, ev)| {
        let out = match ev {
            _ if failed => Vec::new(),
            Event::Error(e) => {
                failed = true;
                let mut v = vec![error_data(&e)];
                if done {
                    v.push("[DONE]".to_string());
                }
                v
            }
            ev => shape.on(i, ev),
        };
        futures_util::stream::iter(out)
    });
    sse(items).into_response()
}

/// The stream of `/v1/completions`.
struct CompletionStream {
    state: Arc<AppState>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    offsets: Vec<usize>,
    /// Each choice's prompt while it is still to be echoed.
    echoes: Vec<Option<Echo>>,
    prompt_tokens: usize,
    completion_tokens: usize,
    open: usize,
}

impl CompletionStream {
    fn chunk(&self, choices: Value, usage_v: Option<Value>) -> String {
        let mut c = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.state.fingerprint,
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = usage_v.unwrap_or(Value::Null);
        }
        c.to_string()
    }
}

impl StreamShape for CompletionStream {
    fn on(&mut self, i: usize, ev: Event) -> Vec<String> {
        let tok = self.state.model.tokenizer();
        // The echoed prompt comes first, scored when the event scores it.
        let mut v = Vec::new();
        if let Some(e) = self.echoes[i].take() {
            let lp = match &ev {
                Event::Prompt(lps) => Some(completion_logprobs(tok, &e.entries(lps))),
                _ => None,
            };
            self.offsets[i] = e.text.len();
            v.push(self.chunk(
                json!([{"index": i, "text": e.text, "logprobs": lp, "finish_reason": null}]),
                None,
            ));
        }
        v.extend(self.event(i, ev));
        v
    }
}

impl CompletionStream {
    fn event(&mut self, i: usize, ev: Event) -> Vec<String> {
        let tok = self.state.model.tokenizer();
        match ev {
            Event::Token { id, text, logprob } => {
                let lp = logprob
                    .as_ref()
                    .map(|l| completion_logprobs(tok, &[(id, Some(l), self.offsets[i])]));
                self.offsets[i] += text.len();
                if text.is_empty() && lp.is_none() {
                    return Vec::new();
                }
                vec![self.chunk(
                    json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]),
                    None,
                )]
            }
            Event::Text(text) => {
                self.offsets[i] += text.len();
                vec![self.chunk(
                    json!([{"index": i, "text": text, "logprobs": null, "finish_reason": null}]),
                    None,
                )]
            }
            Event::Done(o) => {
                self.completion_tokens += o.completion_tokens;
                self.open -= 1;
                let mut v = vec![self.chunk(
                    json!([{"index": i, "text": "", "logprobs": null, "finish_reason": o.finish.openai()}]),
                    None,
                )];
                if self.open == 0 {
                    if self.include_usage {
                        let u = usage(self.prompt_tokens, self.completion_tokens);
                        v.push(self.chunk(json!([]), Some(u)));
                    }
                    v.push("[DONE]".into());
                }
                v
            }
            // The prompt's scores went out with the echo.
            Event::Prompt(_) | Event::Error(_) => Vec::new(),
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Chat);
    match chat_inner(&state, body).await {
        Ok(r) => r,
        Err(e) => state.fail(e),
    }
}

async fn chat_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: ChatRequest = read_json(state, body).await?;
    let messages = req
        .messages
        .as_deref()
        .ok_or_else(|| ApiError::invalid_param("messages", "messages is required"))?;
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_param("tools", "tools are not supported"));
    }
    if let Some(f) = &req.response_format
        && f.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid_param(
            "response_format",
            "only {\"type\": \"text\"} is supported",
        ));
    }
    let n = req.common.n()?;
    let logprobs = logprobs_asked(req.logprobs, req.top_logprobs)?;
    let (max, max_param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let text = chat_template::render(messages)?;
    let tok = state.model.tokenizer();
    let ids = tok.encode_with_special(&text);
    let specs = (0..n)
        .map(|i| {
            req.common.spec(
                &state.defaults,
                ids.clone(),
                max,
                max_param,
                CHAT_STOP,
                logprobs,
                i,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The prompt as read (cut, with --context-shift, when it did not fit).
    let prompt_tokens = specs.first().map_or(ids.len(), |s| s.prompt.len());
    let rxs = submit_all(state, specs)?;
    let (id, created, model) = (
        new_id(state, "chatcmpl"),
        state.now(),
        state.model_id.clone(),
    );
    if !req.common.stream() {
        let done = collect_all(rxs).await?;
        let completion: usize = done.iter().map(|c| c.outcome.completion_tokens).sum();
        let choices: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = logprobs.map(|_| {
                    let t: Vec<_> = c.tokens.iter().filter_map(|t| t.logprob.as_ref()).collect();
                    chat_logprobs(tok, &t)
                });
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": answer(c), "refusal": null},
                    "logprobs": lp,
                    "finish_reason": c.outcome.finish.openai(),
                })
            })
            .collect();
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": state.fingerprint,
            "choices": choices,
            "usage": usage(prompt_tokens, completion),
        }))
        .into_response());
    }
    let st = ChatStream {
        state: Arc::clone(state),
        id,
        created,
        model,
        include_usage: req.common.include_usage(),
        started: vec![false; rxs.len()],
        prompt_tokens,
        completion_tokens: 0,
        open: rxs.len(),
    };
    Ok(stream_response(rxs, st, true))
}

/// The assistant's answer: the completion without the space GPT-2 writes
/// after `Assistant:` (the template puts it back in the next turn).
fn answer(c: &Collected) -> &str {
    c.text.trim_start()
}

/// The stream of `/v1/chat/completions`.
struct ChatStream {
    state: Arc<AppState>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Whether each choice's answer has begun (leading whitespace is dropped
    /// until then, as in the whole answer).
    started: Vec<bool>,
    prompt_tokens: usize,
    completion_tokens: usize,
    open: usize,
}

impl ChatStream {
    fn chunk(&self, choices: Value, usage_v: Option<Value>) -> String {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.state.fingerprint,
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = usage_v.unwrap_or(Value::Null);
        }
        c.to_string()
    }

    /// A content delta for choice `i`, with the role on its first.
    fn delta(&mut self, i: usize, text: &str, lp: Option<Value>) -> Option<String> {
        let text = if self.started[i] {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() && lp.is_none() {
            return None;
        }
        let mut delta = json!({"content": text});
        if !self.started[i] && !text.is_empty() {
            self.started[i] = true;
            delta["role"] = json!("assistant");
        }
        Some(self.chunk(
            json!([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": null}]),
            None,
        ))
    }
}

impl StreamShape for ChatStream {
    fn on(&mut self, i: usize, ev: Event) -> Vec<String> {
        match ev {
            Event::Token { text, logprob, .. } => {
                let tok = self.state.model.tokenizer();
                let lp = logprob.as_ref().map(|l| chat_logprobs(tok, &[l]));
                self.delta(i, &text, lp).into_iter().collect()
            }
            Event::Text(text) => self.delta(i, &text, None).into_iter().collect(),
            Event::Done(o) => {
                self.completion_tokens += o.completion_tokens;
                self.open -= 1;
                let mut v = vec![self.chunk(
                    json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": o.finish.openai()}]),
                    None,
                )];
                if self.open == 0 {
                    if self.include_usage {
                        let u = usage(self.prompt_tokens, self.completion_tokens);
                        v.push(self.chunk(json!([]), Some(u)));
                    }
                    v.push("[DONE]".into());
                }
                v
            }
            Event::Prompt(_) | Event::Error(_) => Vec::new(),
        }
    }
}

/// The timings object llama-server reports.
pub fn timings(o: &Outcome) -> Value {
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let evaluated = o.prompt_tokens - o.cached_tokens;
    json!({
        "cache_n": o.cached_tokens,
        "prompt_n": evaluated,
        "prompt_ms": o.prompt_ms,
        "prompt_per_second": per_s(evaluated, o.prompt_ms),
        "predicted_n": o.completion_tokens,
        "predicted_ms": o.gen_ms,
        "predicted_per_second": per_s(o.completion_tokens, o.gen_ms),
    })
}
