//! llama-server's own endpoints: `POST /completion` (with its `n_predict`,
//! `n_probs`, `stream`, … fields and response shape), `POST /tokenize`,
//! `POST /detokenize`, `POST /apply-template`, `GET /props`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use gptq_core::Tokenizer;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat_template::{self, Message};
use super::engine::Event;
use super::error::ApiError;
use super::logprobs::TokenLogprob;
use super::metrics::Endpoint;
use super::openai::{StreamShape, stream_response, timings};
use super::request::{Common, MAX_LOGPROBS, token_ids};
use super::stream::{collect, submit_all};
use super::{AppState, read_json};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CompletionRequest {
    prompt: Option<Value>,
    /// Tokens to generate; -1 = until the context is full.
    n_predict: Option<i64>,
    /// OpenAI's name, also accepted.
    max_tokens: Option<i64>,
    /// Top alternatives per token (with the chosen token's log-probability).
    n_probs: Option<i64>,
    /// Return the generated token ids.
    return_tokens: Option<bool>,
    #[serde(flatten)]
    common: Common,
}

/// llama.cpp's prompt: a string, token ids, or a list mixing both (one
/// prompt).
fn prompt_tokens(tok: &Tokenizer, v: Option<&Value>) -> Result<Vec<u32>, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("prompt", m.to_string());
    let mut ids = Vec::new();
    let mut push = |v: &Value| -> Result<(), ApiError> {
        match v {
            Value::String(s) => ids.extend(tok.encode_with_special(s)),
            Value::Number(n) => ids.push(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("token ids must be integers from 0 to 2^32-1"))?,
            ),
            _ => {
                return Err(bad(
                    "prompt must be a string, or a list of strings and token ids",
                ));
            }
        }
        Ok(())
    };
    match v {
        None | Some(Value::Null) => return Err(bad("prompt is required")),
        Some(Value::Array(a)) => a.iter().try_for_each(&mut push)?,
        Some(v) => push(v)?,
    }
    if ids.is_empty() {
        ids.push(tok.bos().or(tok.eos()).unwrap_or(0));
    }
    Ok(ids)
}

/// llama-server's `completion_probabilities` entry of a token.
fn probs(tok: &Tokenizer, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, l: f32| {
        let b = tok.token_bytes(id).unwrap_or_default();
        json!({"id": id, "token": String::from_utf8_lossy(b), "logprob": l, "bytes": b})
    };
    let mut e = entry(lp.id, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
    e
}

/// `POST /completion`.
pub async fn completion(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Completion);
    match completion_inner(&state, body).await {
        Ok(r) => r,
        Err(e) => state.fail(e),
    }
}

async fn completion_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = read_json(state, body).await?;
    if req.common.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_param(
            "n",
            "/completion gives one completion (use /v1/completions for n)",
        ));
    }
    let n_probs = match req.n_probs {
        None | Some(0) => None,
        Some(n) if (1..=MAX_LOGPROBS as i64).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(ApiError::invalid_param(
                "n_probs",
                format!("n_probs must be between 0 and {MAX_LOGPROBS}, got {n}"),
            ));
        }
    };
    let tok = state.model.tokenizer();
    let ids = prompt_tokens(tok, req.prompt.as_ref())?;
    let (max, param) = match (req.n_predict, req.max_tokens) {
        (Some(n), _) => (Some(n), "n_predict"),
        (None, m) => (m, "max_tokens"),
    };
    let spec = req
        .common
        .spec(&state.defaults, ids, max, param, &[], n_probs, 0)?;
    let n_prompt = spec.prompt.len();
    let rx = submit_all(state, vec![spec])?.remove(0);
    if !req.common.stream() {
        let c = collect(rx).await?;
        let o = &c.outcome;
        let mut r = json!({
            "content": c.text,
            "id_slot": o.slot,
            "stop": true,
            "model": state.model_id,
            "tokens_predicted": o.completion_tokens,
            "tokens_evaluated": n_prompt,
            "tokens_cached": o.cached_tokens,
            "stop_type": o.finish.llama(),
            "stopping_word": o.stopping_word,
            "truncated": o.truncated,
            "timings": timings(o),
        });
        if req.return_tokens == Some(true) {
            r["tokens"] = c.tokens.iter().map(|t| t.id).collect();
        }
        if n_probs.is_some() {
            r["completion_probabilities"] = c
                .tokens
                .iter()
                .filter_map(|t| t.logprob.as_ref().map(|l| probs(tok, l)))
                .collect();
        }
        return Ok(Json(r).into_response());
    }
    let shape = LlamaStream {
        state: Arc::clone(state),
        n_prompt,
    };
    Ok(stream_response(vec![rx], shape, false))
}

/// The stream of `/completion`: `{"content", "tokens", "stop": false}` per
/// token, then one item with `"stop": true` and the totals.
struct LlamaStream {
    state: Arc<AppState>,
    n_prompt: usize,
}

impl StreamShape for LlamaStream {
    fn on(&mut self, _: usize, ev: Event) -> Vec<String> {
        let tok = self.state.model.tokenizer();
        match ev {
            Event::Token { id, text, logprob } => {
                let mut v = json!({"content": text, "tokens": [id], "stop": false});
                if let Some(l) = &logprob {
                    v["completion_probabilities"] = json!([probs(tok, l)]);
                }
                vec![v.to_string()]
            }
            Event::Text(text) => {
                vec![json!({"content": text, "tokens": [], "stop": false}).to_string()]
            }
            Event::Done(o) => vec![
                json!({
                    "content": "",
                    "tokens": [],
                    "id_slot": o.slot,
                    "stop": true,
                    "model": self.state.model_id,
                    "tokens_predicted": o.completion_tokens,
                    "tokens_evaluated": self.n_prompt,
                    "tokens_cached": o.cached_tokens,
                    "stop_type": o.finish.llama(),
                    "stopping_word": o.stopping_word,
                    "truncated": o.truncated,
                    "timings": timings(&o),
                })
                .to_string(),
            ],
            Event::Prompt(_) | Event::Error(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApplyTemplateRequest {
    messages: Option<Vec<Message>>,
}

/// `POST /apply-template`: llama-server's: `{"messages"}` → `{"prompt"}`,
/// the text `/v1/chat/completions` would feed the model (the plain
/// transcript of [`chat_template`]), without generating anything.
pub async fn apply_template(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Other);
    let run = async {
        let req: ApplyTemplateRequest = read_json(&state, body).await?;
        let messages = req
            .messages
            .as_deref()
            .ok_or_else(|| ApiError::invalid_param("messages", "messages is required"))?;
        let prompt = chat_template::render(messages)?;
        Ok::<_, ApiError>(Json(json!({"prompt": prompt})).into_response())
    };
    run.await.unwrap_or_else(|e| state.fail(e))
}

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

/// `POST /tokenize`: `{"content", "add_special", "with_pieces"}` →
/// `{"tokens": [...]}` (ids, or `{"id", "piece"}` objects whose piece is a
/// string, or a list of bytes when not valid UTF-8 alone).
pub async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Tokenize);
    let run = async {
        let req: TokenizeRequest = read_json(&state, body).await?;
        let tok = state.model.tokenizer();
        let mut ids = tok.encode_with_special(&req.content);
        if req.add_special
            && let Some(bos) = tok.bos()
        {
            ids.insert(0, bos);
        }
        let tokens: Vec<Value> = if req.with_pieces {
            ids.iter()
                .map(|&id| {
                    let b = tok.token_bytes(id).unwrap_or_default();
                    let piece = match std::str::from_utf8(b) {
                        Ok(s) => json!(s),
                        Err(_) => json!(b),
                    };
                    json!({"id": id, "piece": piece})
                })
                .collect()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        };
        Ok::<_, ApiError>(Json(json!({"tokens": tokens})).into_response())
    };
    run.await.unwrap_or_else(|e| state.fail(e))
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<i64>,
}

/// `POST /detokenize`: `{"tokens": [...]}` → `{"content": "..."}`.
pub async fn detokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Tokenize);
    let run = async {
        let req: DetokenizeRequest = read_json(&state, body).await?;
        let tok = state.model.tokenizer();
        let ids = token_ids("tokens", &req.tokens, tok.n_vocab())?;
        let bytes = tok
            .decode_bytes(&ids)
            .map_err(|e| ApiError::invalid_param("tokens", e.to_string()))?;
        let content = String::from_utf8_lossy(&bytes).into_owned();
        Ok::<_, ApiError>(Json(json!({"content": content})).into_response())
    };
    run.await.unwrap_or_else(|e| state.fail(e))
}

/// `GET /props`: llama-server's server properties, which its web UI and
/// some clients read the slot context and the sampling defaults from: the
/// fields that apply here, under llama-server's names (`seed` -1: drawn per
/// request; a banned token's bias, `-inf`, is `null` in JSON, as there).
pub async fn props(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Other);
    let d = &state.defaults;
    let s = &d.sampling;
    let tok = state.model.tokenizer();
    let piece = |id: Option<u32>| {
        id.and_then(|id| tok.token_bytes(id))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let n_predict = i64::try_from(d.n_predict).unwrap_or(-1);
    // An f32 as the decimal it prints as (0.05, not 0.05000000074505806).
    let f = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
    let bias: Vec<_> = s
        .logit_bias
        .iter()
        .map(|&(token, bias)| json!({"token": token, "bias": f(bias)}))
        .collect();
    Json(json!({
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": d.n_ctx,
            "is_processing": false,
            "params": {
                "n_predict": n_predict,
                "max_tokens": n_predict,
                "seed": if d.fixed_seed { i64::try_from(s.seed).unwrap_or(-1) } else { -1 },
                "temperature": f(s.temperature),
                "top_k": s.top_k,
                "top_p": f(s.top_p),
                "min_p": f(s.min_p),
                "repeat_last_n": s.repeat_last_n,
                "repeat_penalty": f(s.repeat_penalty),
                "presence_penalty": f(s.presence_penalty),
                "frequency_penalty": f(s.frequency_penalty),
                "logit_bias": bias,
                "stop": [],
                "ignore_eos": false,
                "stream": false,
                "n_probs": 0,
                "n_keep": 0,
                "n_discard": 0,
                "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
            },
        },
        "total_slots": state.engine.config().n_slots,
        "model_path": state.model_path,
        "chat_template": chat_template::DESCRIPTION,
        "bos_token": piece(tok.bos()),
        "eos_token": piece(tok.eos()),
        "build_info": state.fingerprint,
    }))
    .into_response()
}
