//! What `/api/generate` and `/api/chat` send: newline-delimited JSON
//! streams of shaped engine events, one-object replies, log-probability
//! entries and the last object's totals.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use gptq_core::Tokenizer;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::super::AppState;
use super::super::engine::{Event, GenSpec, Outcome};
use super::super::error::ApiError;
use super::super::logprobs::TokenLogprob;
use super::super::stream::{Collected, Tok, collect, merged, submit_all};
use super::{error_text, rfc3339};

/// Nanoseconds, ollama's unit of duration.
fn nanos(ms: f64) -> u64 {
    (ms * 1e6).max(0.0) as u64
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

/// The `logprobs` of a whole reply: each generated token's entry.
pub(super) fn logprobs_of(tok: &Tokenizer, tokens: &[Tok]) -> Value {
    tokens
        .iter()
        .filter_map(|t| t.logprob.as_ref().map(|l| logprob_entry(tok, l)))
        .collect()
}

/// A streamed token's object `v`, with the token's `logprobs` entry when
/// asked; none when it carries neither text (`empty`) nor a log-probability.
pub(super) fn token_object(
    mut v: Value,
    tok: &Tokenizer,
    logprob: Option<&TokenLogprob>,
    empty: bool,
) -> Option<Value> {
    match logprob {
        Some(l) => v["logprobs"] = json!([logprob_entry(tok, l)]),
        None if empty => return None,
        None => {}
    }
    Some(v)
}

/// The fields of a response's last object: why it ended and what it cost.
pub(super) fn totals(o: &Outcome, started: Instant) -> Map<String, Value> {
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
pub(super) const NDJSON: &str = "application/x-ndjson";

/// The objects of one endpoint's reply.
pub(super) trait Shape: Send + Sized + 'static {
    /// The object a stream sends for an engine event, if any.
    fn on(&mut self, ev: Event) -> Option<Value>;
    /// The whole reply at once (`stream: false`).
    fn whole(self, c: Collected) -> Value;
}

/// The reply to `spec`: a stream of `shape`'s objects, or the whole reply.
pub(super) async fn answer(
    state: &Arc<AppState>,
    spec: GenSpec,
    shape: impl Shape,
    stream: bool,
) -> Result<Response, ApiError> {
    let rx = submit_all(state, vec![spec])?.remove(0);
    if stream {
        return Ok(ndjson(rx, shape));
    }
    let c = collect(rx).await?;
    Ok(Json(shape.whole(c)).into_response())
}

/// The reply to a request with nothing to generate, ollama's way of loading
/// a model (or, with `keep_alive` 0, unloading it): one finished object
/// with `empty` (the empty `response` or `message`).
pub(super) fn loaded(
    model: &str,
    keep_alive: &Option<Value>,
    stream: bool,
    empty: (&str, Value),
) -> Response {
    let reason = if is_unload(keep_alive) {
        "unload"
    } else {
        "load"
    };
    let mut r = json!({
        "model": model, "created_at": rfc3339(SystemTime::now()),
        "done": true, "done_reason": reason,
    });
    r[empty.0] = empty.1;
    one_object(r, stream)
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
