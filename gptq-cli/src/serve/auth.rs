//! `--api-key`: every endpoint but the public ones wants
//! `Authorization: Bearer <key>` (llama-server's rule: `/health` and the
//! model list stay open, for load balancers and discovery).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;

/// Paths served without a key.
const PUBLIC: &[&str] = &["/health", "/v1/health", "/models", "/v1/models"];

/// Whether `a` equals `b`, in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request with this `Authorization` header value carries `key`.
pub fn authorized(header: Option<&str>, key: &str) -> bool {
    header
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| same(k.trim().as_bytes(), key.as_bytes()))
}

/// The middleware: a 401 in OpenAI's shape when the key is missing or wrong.
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key
        && !PUBLIC.contains(&req.uri().path())
    {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !authorized(header, key) {
            return state.fail(ApiError::unauthorized());
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_key() {
        assert!(authorized(Some("Bearer sekret"), "sekret"));
        assert!(!authorized(Some("Bearer sekreT"), "sekret"));
        assert!(!authorized(Some("sekret"), "sekret"));
        assert!(!authorized(Some("Bearer "), "sekret"));
        assert!(!authorized(None, "sekret"));
    }
}
