//! The model endpoints: `GET /api/tags`, `GET /api/ps`, `POST /api/show`,
//! `GET /api/version`, and the 501 of those a server of one file does not
//! have.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gptq_core::gguf::{FileType, MetaArray, MetaValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::chat_template::CHAT_STOP;
use super::super::error::ApiError;
use super::super::metrics::Endpoint;
use super::super::{AppState, read_json};
use super::{check_model, fail, rfc3339, tagged_name};

/// `POST /api/show`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShowRequest {
    model: Option<String>,
    /// Older clients' name for `model`.
    name: Option<String>,
    verbose: Option<bool>,
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
