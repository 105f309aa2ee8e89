//! The router: every endpoint, the API-key layer, and JSON errors for
//! unknown paths and methods.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use super::metrics::Endpoint;
use super::{AppState, auth, llama, ollama, openai};

/// Every route of `gptq serve`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/props", get(llama::props))
        .route("/v1/completions", post(openai::completions))
        .route("/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/chat/completions", post(openai::chat))
        .route("/completion", post(llama::completion))
        .route("/tokenize", post(llama::tokenize))
        .route("/detokenize", post(llama::detokenize))
        .route("/apply-template", post(llama::apply_template))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/version", get(ollama::version))
        .route("/api/pull", any(ollama::unsupported))
        .route("/api/push", any(ollama::unsupported))
        .route("/api/create", any(ollama::unsupported))
        .route("/api/copy", any(ollama::unsupported))
        .route("/api/delete", any(ollama::unsupported))
        .route("/api/embed", any(ollama::unsupported))
        .route("/api/embeddings", any(ollama::unsupported))
        .route("/api/blobs/{digest}", any(ollama::unsupported))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_key,
        ))
        .with_state(state)
}

/// `GET /health`: 200 `{"status": "ok", ...}` with the slots' state.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Other);
    let busy = state
        .metrics
        .slots_busy
        .load(std::sync::atomic::Ordering::Relaxed);
    let total = state.engine.config().n_slots;
    Json(json!({
        "status": "ok",
        "slots_idle": total.saturating_sub(busy),
        "slots_processing": busy,
        "queue": state.engine.queued(),
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Other);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.engine.config().n_slots),
    )
        .into_response()
}

/// `GET /v1/models`: the one model, OpenAI's list shape (with llama-server's
/// `meta`).
async fn models(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request(Endpoint::Other);
    let hp = state.model.hparams();
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "gptq",
            "meta": {
                "n_vocab": hp.n_vocab,
                "n_ctx_train": hp.n_ctx,
                "n_ctx_slot": state.engine.config().n_ctx,
                "n_embd": hp.n_embd,
                "n_layer": hp.n_layer,
                "n_head": hp.n_head,
            }
        }]
    }))
    .into_response()
}

async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    state.fail(super::error::ApiError::not_found(uri.path()))
}

async fn method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    state.fail(super::error::ApiError::method_not_allowed())
}
