//! ollama's API, for the tools that speak it instead of OpenAI's (the
//! `ollama` client libraries, front ends set up for an ollama server):
//! `POST /api/generate`, `POST /api/chat` (newline-delimited JSON streams,
//! streaming by default), `GET /api/tags`, `POST /api/show`, `GET /api/ps`,
//! `GET /api/version`. Errors are ollama's `{"error": "..."}`.
//!
//! One model is served, the file the server started with: a request names
//! it as `/api/tags` lists it (the file name or `-a` alias, `:latest`
//! optional); any other name is ollama's 404. Model management (`pull`,
//! `create`, `delete`, …) and embeddings answer 501.
//!
//! - `options`: the request fields generate and chat share (ollama's
//!   `options` among them), checked into the engine's job.
//! - `generate`, `chat`: the two generation endpoints and their objects.
//! - `reply`: what both send: NDJSON streams, log-probabilities, totals.
//! - `truncate`: a prompt longer than the context cut as ollama cuts it.
//! - `models`: the listing and model endpoints (`tags`, `ps`, `show`,
//!   `version`) and the 501s.

mod chat;
mod generate;
mod models;
mod options;
mod reply;
mod truncate;

use std::time::SystemTime;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

pub use chat::chat;
pub use generate::generate;
pub use models::{ps, show, tags, unsupported, version};

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
