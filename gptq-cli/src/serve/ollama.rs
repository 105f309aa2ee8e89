//! ollama's API, for the tools that speak it instead of OpenAI's (the
//! `ollama` client libraries, front ends set up for an ollama server):
//! `POST /api/generate`, `POST /api/chat` (newline-delimited JSON streams,
//! streaming by default), `GET /api/tags`, `POST /api/show`, `GET /api/ps`,
//! `GET /api/version`. Errors are ollama's `{"error": "..."}`.
//!
//! One model is served, the file the server started with: a request names
//! it as `/api/tags` lists it (the file name or `-a` alias, `:latest`
//! optional); any other name is ollama's 404. Model management (`pull`,
//! `create`, `delete`, …) and embeddings answer 501. The `options` ollama
//! accepts are accepted: the sampling ones apply, `num_ctx` limits the
//! request's context (at most a slot's, as ollama clamps it to the model's),
//! load-time ones (`num_gpu`, `num_thread`, `use_mmap`, …) are fixed by the
//! server's flags and ignored, as ollama ignores them for a loaded model;
//! sampling methods gptq does not have (`mirostat`, `typical_p`, `tfs_z`) are
//! refused unless neutral, and an unknown option is refused.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use gptq_core::Tokenizer;
use gptq_core::gguf::{FileType, MetaArray, MetaValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::chat_template::{self, CHAT_STOP, Message};
use super::engine::{Event, Outcome};
use super::error::ApiError;
use super::logprobs::TokenLogprob;
use super::metrics::Endpoint;
use super::request::{Common, MAX_LOGPROBS};
use super::stream::{Collected, collect, merged, submit_all};
use super::{AppState, read_json};

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
    // Context shifting, which gptq does not do (a prompt that does not fit
    // is refused), and a switch ollama itself no longer reads.
    num_keep: Option<Value>,
    penalize_newline: Option<Value>,
}

/// Fields `/api/generate` and `/api/chat` share.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Base {
    model: Option<String>,
    options: Option<Options>,
    stream: Option<bool>,
    format: Option<Value>,
    keep_alive: Option<Value>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
}

/// `POST /api/generate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerateRequest {
    prompt: Option<String>,
    suffix: Option<String>,
    system: Option<String>,
    template: Option<String>,
    context: Option<Vec<i64>>,
    /// Accepted: the prompt is always raw (there is no template).
    raw: Option<bool>,
    images: Option<Vec<Value>>,
    width: Option<Value>,
    height: Option<Value>,
    steps: Option<Value>,
    #[serde(flatten)]
    base: Base,
}

/// `POST /api/chat`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatRequest {
    messages: Option<Vec<ChatMessage>>,
    tools: Option<Vec<Value>>,
    #[serde(flatten)]
    base: Base,
}

/// One of `messages`: ollama's content is a string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatMessage {
    role: String,
    content: Option<String>,
    images: Option<Vec<Value>>,
    tool_calls: Option<Vec<Value>>,
}

/// `POST /api/show`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShowRequest {
    model: Option<String>,
    /// Older clients' name for `model`.
    name: Option<String>,
    verbose: Option<bool>,
}

/// ollama's error response: `{"error": "..."}` with the status.
fn fail(state: &AppState, e: ApiError) -> Response {
    state
        .metrics
        .errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (e.status, Json(json!({"error": error_text(&e)}))).into_response()
}

/// An error's message, with the field at fault when the message does not
/// already name it.
fn error_text(e: &ApiError) -> String {
    match &e.param {
        Some(p) if !e.message.contains(p.as_str()) => format!("{p}: {}", e.message),
        _ => e.message.clone(),
    }
}

/// The name `/api/tags` lists: the model's id with ollama's `:latest` tag
/// when it has none.
fn tagged_name(state: &AppState) -> String {
    if state.model_id.contains(':') {
        state.model_id.clone()
    } else {
        format!("{}:latest", state.model_id)
    }
}

/// The request's model must be the one served (ollama's rules: required,
/// and an unknown name is a 404).
fn check_model(state: &AppState, name: Option<&str>) -> Result<(), ApiError> {
    let name = name.unwrap_or("").trim();
    if name.is_empty() {
        return Err(ApiError::invalid_param("model", "model is required"));
    }
    if name == state.model_id || name == tagged_name(state) {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        code: Some("model_not_found"),
        ..ApiError::invalid(format!(
            "model \"{name}\" not found: this server serves \"{}\"",
            tagged_name(state)
        ))
    })
}

/// A time as ollama writes it (RFC 3339, UTC, nanoseconds).
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Nanoseconds, ollama's unit of duration.
fn nanos(ms: f64) -> u64 {
    (ms * 1e6).max(0.0) as u64
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
struct Plan {
    /// The model as the request named it (ollama echoes it).
    model: String,
    common: Common,
    num_predict: Option<i64>,
    n_ctx: usize,
    logprobs: Option<usize>,
    stream: bool,
}

impl Base {
    fn plan(&self, state: &AppState) -> Result<Plan, ApiError> {
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
        let top = match self.top_logprobs {
            None => None,
            Some(n) if (0..=MAX_LOGPROBS as i64).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    format!("top_logprobs must be between 0 and {MAX_LOGPROBS}, got {n}"),
                ));
            }
        };
        let logprobs = match (self.logprobs.unwrap_or(false), top) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, Some(t)) if t > 0 => {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ));
            }
            (false, _) => None,
        };
        Ok(Plan {
            model: self.model.as_deref().unwrap_or_default().trim().to_string(),
            common: opts.map(Options::common).unwrap_or_default(),
            num_predict: opts.and_then(|o| o.num_predict),
            n_ctx,
            logprobs,
            stream: self.stream.unwrap_or(true),
        })
    }
}

impl Plan {
    /// The engine's job for `prompt`. ollama's `num_predict`: -1 (or any
    /// value of 0 or less) runs until the context is full, and a limit past
    /// the context ends there ("length") rather than being refused.
    fn spec(
        &self,
        state: &AppState,
        prompt: Vec<u32>,
        extra_stop: &[&str],
    ) -> Result<super::engine::GenSpec, ApiError> {
        let mut d = state.defaults.clone();
        d.n_ctx = self.n_ctx;
        let room = d.n_ctx.saturating_sub(prompt.len()) as i64;
        let max = self
            .num_predict
            .map(|n| if n <= 0 { -1 } else { n.min(room.max(1)) });
        self.common
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

/// ollama's log-probability entry of a token.
fn logprob_entry(tok: &Tokenizer, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, l: f32| {
        let b = tok.token_bytes(id).unwrap_or_default();
        json!({"token": String::from_utf8_lossy(b), "logprob": l, "bytes": b})
    };
    let mut e = entry(lp.id, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
    e
}

/// The fields of a response's last object: why it ended and what it cost.
fn totals(o: &Outcome, started: Instant) -> Map<String, Value> {
    let v = json!({
        "done_reason": o.finish.openai(),
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": o.prompt_tokens,
        "prompt_eval_duration": nanos(o.prompt_ms),
        "eval_count": o.completion_tokens,
        "eval_duration": nanos(o.gen_ms),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `POST /api/generate`: the prompt as raw text (GPT-2 has no template),
/// continued; `context` (a previous response's) goes before it.
pub async fn generate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Ollama);
    let started = Instant::now();
    match generate_inner(&state, body, started).await {
        Ok(r) => r,
        Err(e) => fail(&state, e),
    }
}

async fn generate_inner(
    state: &Arc<AppState>,
    body: Body,
    started: Instant,
) -> Result<Response, ApiError> {
    let req: GenerateRequest = read_json(state, body).await?;
    let plan = req.base.plan(state)?;
    for (name, set) in [
        ("suffix", req.suffix.as_ref().is_some_and(|s| !s.is_empty())),
        ("system", req.system.as_ref().is_some_and(|s| !s.is_empty())),
        (
            "template",
            req.template.as_ref().is_some_and(|s| !s.is_empty()),
        ),
        ("images", req.images.as_ref().is_some_and(|i| !i.is_empty())),
        ("width", req.width.as_ref().is_some_and(|v| !v.is_null())),
        ("height", req.height.as_ref().is_some_and(|v| !v.is_null())),
        ("steps", req.steps.as_ref().is_some_and(|v| !v.is_null())),
    ] {
        if set {
            return Err(ApiError::invalid_param(
                name,
                format!(
                    "{name} is not supported (GPT-2 continues the prompt as raw text, with no template)"
                ),
            ));
        }
    }
    let tok = state.model.tokenizer();
    let n_vocab = state.defaults.n_vocab;
    let mut ids: Vec<u32> = req
        .context
        .unwrap_or_default()
        .iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&i| (i as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "context",
                        format!("token id {id} is outside the vocabulary of {n_vocab}"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let prompt = req.prompt.unwrap_or_default();
    ids.extend(tok.encode_with_special(&prompt));
    let model = plan.model.clone();
    if ids.is_empty() {
        // ollama's "load the model" request: nothing to generate.
        let reason = if is_unload(&req.base.keep_alive) {
            "unload"
        } else {
            "load"
        };
        let r = json!({
            "model": model, "created_at": rfc3339(SystemTime::now()),
            "response": "", "done": true, "done_reason": reason,
        });
        return Ok(one_object(r, plan.stream));
    }
    let spec = plan.spec(state, ids.clone(), &[])?;
    let rx = submit_all(state, vec![spec])?.remove(0);
    let shape = GenerateShape {
        state: Arc::clone(state),
        model,
        started,
        context: ids,
        logprobs: plan.logprobs.is_some(),
    };
    if plan.stream {
        return Ok(ndjson(rx, shape));
    }
    let c = collect(rx).await?;
    Ok(Json(shape.whole(c)).into_response())
}

/// `keep_alive` 0 (a number or "0", "0s", …): ollama's request to unload.
fn is_unload(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.trim_end_matches(|c: char| c.is_alphabetic()) == "0",
        _ => false,
    }
}

/// A response of one object: JSON, or a stream of one line.
fn one_object(v: Value, stream: bool) -> Response {
    if stream {
        ([(header::CONTENT_TYPE, NDJSON)], format!("{v}\n")).into_response()
    } else {
        Json(v).into_response()
    }
}

/// ollama's stream content type.
const NDJSON: &str = "application/x-ndjson";

/// The objects of `/api/generate`.
struct GenerateShape {
    state: Arc<AppState>,
    model: String,
    started: Instant,
    /// The prompt's tokens, then each generated one (the final `context`).
    context: Vec<u32>,
    logprobs: bool,
}

impl GenerateShape {
    fn object(&self, response: &str) -> Value {
        json!({
            "model": self.model,
            "created_at": rfc3339(SystemTime::now()),
            "response": response,
            "done": false,
        })
    }

    fn last(&self, response: &str, o: &Outcome) -> Value {
        let mut v = self.object(response);
        v["done"] = json!(true);
        if let Value::Object(m) = &mut v {
            m.extend(totals(o, self.started));
        }
        v["context"] = json!(self.context);
        v
    }

    /// The whole response at once.
    fn whole(mut self, c: Collected) -> Value {
        let tok = self.state.model.tokenizer();
        self.context.extend(c.tokens.iter().map(|t| t.id));
        let mut v = self.last(&c.text, &c.outcome);
        if self.logprobs {
            v["logprobs"] = c
                .tokens
                .iter()
                .filter_map(|t| t.logprob.as_ref().map(|l| logprob_entry(tok, l)))
                .collect();
        }
        v
    }
}

impl Shape for GenerateShape {
    fn on(&mut self, ev: Event) -> Option<Value> {
        match ev {
            Event::Token { id, text, logprob } => {
                self.context.push(id);
                let mut v = self.object(&text);
                if let Some(l) = &logprob {
                    v["logprobs"] = json!([logprob_entry(self.state.model.tokenizer(), l)]);
                } else if text.is_empty() {
                    return None;
                }
                Some(v)
            }
            Event::Text(text) => Some(self.object(&text)),
            Event::Done(o) => Some(self.last("", &o)),
            Event::Prompt(_) | Event::Error(_) => None,
        }
    }
}

/// `POST /api/chat`: the messages as the plain transcript of
/// [`chat_template`] (as on `/v1/chat/completions`), the answer as the
/// assistant's message.
pub async fn chat(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Ollama);
    let started = Instant::now();
    match chat_inner(&state, body, started).await {
        Ok(r) => r,
        Err(e) => fail(&state, e),
    }
}

async fn chat_inner(
    state: &Arc<AppState>,
    body: Body,
    started: Instant,
) -> Result<Response, ApiError> {
    let req: ChatRequest = read_json(state, body).await?;
    let plan = req.base.plan(state)?;
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_param("tools", "tools are not supported"));
    }
    let messages = req.messages.unwrap_or_default();
    let mut converted = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if m.images.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}].images"),
                "images are not supported",
            ));
        }
        if m.tool_calls.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}].tool_calls"),
                "tool calls are not supported",
            ));
        }
        converted.push(Message {
            role: m.role.clone(),
            content: Value::String(m.content.clone().unwrap_or_default()),
        });
    }
    let model = plan.model.clone();
    if converted.is_empty() {
        // ollama's "load the model" request.
        let reason = if is_unload(&req.base.keep_alive) {
            "unload"
        } else {
            "load"
        };
        let r = json!({
            "model": model, "created_at": rfc3339(SystemTime::now()),
            "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": reason,
        });
        return Ok(one_object(r, plan.stream));
    }
    let text = chat_template::render(&converted)?;
    let ids = state.model.tokenizer().encode_with_special(&text);
    let spec = plan.spec(state, ids, CHAT_STOP)?;
    let rx = submit_all(state, vec![spec])?.remove(0);
    let shape = ChatShape {
        state: Arc::clone(state),
        model,
        started,
        begun: false,
        logprobs: plan.logprobs.is_some(),
    };
    if plan.stream {
        return Ok(ndjson(rx, shape));
    }
    let c = collect(rx).await?;
    Ok(Json(shape.whole(c)).into_response())
}

/// The objects of `/api/chat`.
struct ChatShape {
    state: Arc<AppState>,
    model: String,
    started: Instant,
    /// Whether the answer has begun (the space GPT-2 writes after
    /// `Assistant:` is dropped, as on `/v1/chat/completions`).
    begun: bool,
    logprobs: bool,
}

impl ChatShape {
    fn object(&self, content: &str, done: bool) -> Value {
        json!({
            "model": self.model,
            "created_at": rfc3339(SystemTime::now()),
            "message": {"role": "assistant", "content": content},
            "done": done,
        })
    }

    fn last(&self, content: &str, o: &Outcome) -> Value {
        let mut v = self.object(content, true);
        if let Value::Object(m) = &mut v {
            m.extend(totals(o, self.started));
        }
        v
    }

    fn whole(self, c: Collected) -> Value {
        let tok = self.state.model.tokenizer();
        let mut v = self.last(c.text.trim_start(), &c.outcome);
        if self.logprobs {
            v["logprobs"] = c
                .tokens
                .iter()
                .filter_map(|t| t.logprob.as_ref().map(|l| logprob_entry(tok, l)))
                .collect();
        }
        v
    }

    /// The content of a piece: leading whitespace dropped until the answer
    /// begins.
    fn piece<'a>(&mut self, text: &'a str) -> &'a str {
        if self.begun {
            return text;
        }
        let t = text.trim_start();
        self.begun = !t.is_empty();
        t
    }
}

impl Shape for ChatShape {
    fn on(&mut self, ev: Event) -> Option<Value> {
        match ev {
            Event::Token { text, logprob, .. } => {
                let content = self.piece(&text);
                let mut v = self.object(content, false);
                if let Some(l) = &logprob {
                    v["logprobs"] = json!([logprob_entry(self.state.model.tokenizer(), l)]);
                } else if content.is_empty() {
                    return None;
                }
                Some(v)
            }
            Event::Text(text) => {
                let content = self.piece(&text);
                (!content.is_empty()).then(|| self.object(content, false))
            }
            Event::Done(o) => Some(self.last("", &o)),
            Event::Prompt(_) | Event::Error(_) => None,
        }
    }
}

/// Turns an engine event into the object a stream sends, if any.
trait Shape: Send + 'static {
    fn on(&mut self, ev: Event) -> Option<Value>;
}

/// A newline-delimited JSON stream of `rx`'s events shaped by `shape`; an
/// error ends it with an `{"error": "..."}` line (the status has gone out).
/// A client that goes away drops the stream, which cancels the request.
fn ndjson(rx: UnboundedReceiver<Event>, mut shape: impl Shape) -> Response {
    let mut failed = false;
    let lines = merged(vec![rx]).filter_map(move |(_, ev)| {
        let line = match ev {
            _ if failed => None,
            Event::Error(e) => {
                failed = true;
                Some(json!({"error": error_text(&e)}))
            }
            ev => shape.on(ev),
        };
        std::future::ready(line.map(|v| Ok::<_, std::convert::Infallible>(format!("{v}\n"))))
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response()
}

/// The model file's SHA-256 (ollama's digest of a model), computed once on
/// first use, off the async threads.
async fn digest(state: &Arc<AppState>) -> String {
    if let Some(d) = state.digest.get() {
        return d.clone();
    }
    let path = state.model.path().to_path_buf();
    let d = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    state.digest.get_or_init(|| d).clone()
}

fn sha256_file(path: &std::path::Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// The file's size and modification time.
fn file_facts(state: &AppState) -> (u64, SystemTime) {
    std::fs::metadata(state.model.path()).map_or((0, SystemTime::UNIX_EPOCH), |m| {
        (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))
    })
}

/// Weights in the file (every tensor's elements).
fn parameter_count(state: &AppState) -> u64 {
    state
        .model
        .gguf()
        .tensors
        .iter()
        .map(|t| t.n_elements())
        .sum()
}

/// ollama's `details` of the model.
fn details(state: &AppState) -> Value {
    let gguf = state.model.gguf();
    let arch = gguf
        .get("general.architecture")
        .and_then(|v| match v {
            MetaValue::String(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "gpt2".into());
    let quant = gguf
        .get("general.file_type")
        .and_then(MetaValue::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .and_then(|ft| FileType(ft).name())
        .unwrap_or("unknown");
    let n = parameter_count(state) as f64;
    let size = if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else {
        format!("{:.2}M", n / 1e6)
    };
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size,
        "quantization_level": quant,
    })
}

/// The one model as `/api/tags` and `/api/ps` list it.
async fn model_entry(state: &Arc<AppState>) -> Value {
    let (size, modified) = file_facts(state);
    json!({
        "name": tagged_name(state),
        "model": tagged_name(state),
        "modified_at": rfc3339(modified),
        "size": size,
        "digest": digest(state).await,
        "details": details(state),
    })
}

/// `GET /api/tags`: the model the server serves.
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Ollama);
    Json(json!({"models": [model_entry(&state).await]})).into_response()
}

/// `GET /api/ps`: the loaded model (always loaded; it never expires).
pub async fn ps(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Ollama);
    let mut m = model_entry(&state).await;
    m["expires_at"] = json!("9999-12-31T23:59:59Z");
    m["size_vram"] = json!(0);
    m["context_length"] = json!(state.defaults.n_ctx);
    Json(json!({"models": [m]})).into_response()
}

/// `GET /api/version`.
pub async fn version(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Ollama);
    Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// The chat transcript as a Go template, for `/api/show`'s `template`
/// (ollama's templates are Go templates; this renders what
/// [`chat_template::render`] does).
const GO_TEMPLATE: &str = "{{- range .Messages }}{{ if or (eq .Role \"system\") (eq .Role \"developer\") }}{{ .Content }}\n\n{{ end }}{{ end }}{{- range .Messages }}{{ if eq .Role \"user\" }}User: {{ .Content }}\n{{ else if eq .Role \"assistant\" }}Assistant: {{ .Content }}\n{{ end }}{{ end }}Assistant:";

/// `POST /api/show`: the model's details, its GGUF metadata as
/// `model_info` (arrays such as the vocabulary only with `verbose`), the
/// server's sampling defaults as `parameters`.
pub async fn show(State(state): State<Arc<AppState>>, body: Body) -> Response {
    state.metrics.request(Endpoint::Ollama);
    let run = async {
        let req: ShowRequest = read_json(&state, body).await?;
        check_model(&state, req.model.as_deref().or(req.name.as_deref()))?;
        let verbose = req.verbose.unwrap_or(false);
        let mut info = Map::new();
        for (k, v) in &state.model.gguf().metadata {
            if let Some(v) = meta_json(v, verbose) {
                info.insert(k.clone(), v);
            }
        }
        info.insert(
            "general.parameter_count".into(),
            json!(parameter_count(&state)),
        );
        let s = &state.defaults.sampling;
        let mut parameters = format!(
            "temperature {}\ntop_k {}\ntop_p {}\nmin_p {}\nrepeat_penalty {}\nrepeat_last_n {}\n",
            s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.repeat_last_n
        );
        for stop in CHAT_STOP {
            parameters.push_str(&format!("stop {stop:?}\n"));
        }
        let (_, modified) = file_facts(&state);
        Ok::<_, ApiError>(
            Json(json!({
                "license": "",
                "modelfile": format!("# served by gptq serve\nFROM {}\n", state.model_path),
                "parameters": parameters,
                "template": GO_TEMPLATE,
                "details": details(&state),
                "model_info": info,
                "capabilities": ["completion"],
                "modified_at": rfc3339(modified),
            }))
            .into_response(),
        )
    };
    run.await.unwrap_or_else(|e| fail(&state, e))
}

/// A metadata value as JSON: scalars always, arrays only when `verbose`
/// (ollama leaves them out otherwise).
fn meta_json(v: &MetaValue, verbose: bool) -> Option<Value> {
    Some(match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F32(x) => json!(x),
        MetaValue::F64(x) => json!(x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(x) => json!(x),
        MetaValue::Array(a) if verbose => array_json(a),
        MetaValue::Array(_) => return None,
    })
}

fn array_json(a: &MetaArray) -> Value {
    match a {
        MetaArray::U8(v) => json!(v),
        MetaArray::I8(v) => json!(v),
        MetaArray::U16(v) => json!(v),
        MetaArray::I16(v) => json!(v),
        MetaArray::U32(v) => json!(v),
        MetaArray::I32(v) => json!(v),
        MetaArray::U64(v) => json!(v),
        MetaArray::I64(v) => json!(v),
        MetaArray::F32(v) => json!(v),
        MetaArray::F64(v) => json!(v),
        MetaArray::Bool(v) => json!(v),
        MetaArray::String(v) => json!(v),
        MetaArray::Array(v) => v.iter().map(array_json).collect(),
    }
}

/// ollama's answer to the endpoints that manage models or embed, which a
/// server of one GGUF file does not have: 501 naming the endpoint.
pub async fn unsupported(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    state.metrics.request(Endpoint::Ollama);
    let what = if uri.path().contains("embed") {
        "embeddings are not available"
    } else {
        "models are not managed here: the server serves the one GGUF file it was started with (-m)"
    };
    fail(
        &state,
        ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            ..ApiError::invalid(format!("{}: {what}", uri.path()))
        },
    )
}
