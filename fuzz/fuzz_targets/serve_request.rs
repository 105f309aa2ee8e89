//! `gptq serve`'s request handling, in process: one HTTP request (method,
//! endpoint, API key, content type, body) through the server's router with a
//! tiny model and the engine thread behind it, generation included. Every
//! request ends in a response: never a panic (in a handler or in the engine
//! thread), never a 500; an error is a 4xx (or 503) with OpenAI's error body;
//! a 200 is whole JSON or server-sent events whose items are JSON (or
//! `[DONE]`).
//!
//! Input: byte 0 picks the method and endpoint, byte 1 the API key, the
//! content type and the server (bit 3: the one started with
//! `--context-shift`, whose generations may run past the context); the rest
//! is the body (the seeds are valid requests of every endpoint;
//! `dict/json.dict` and `dict/serve.dict` give the field names).

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use clap::Parser;
use gptq_cli::serve::{ServeArgs, Server};
use gptq_core::HParams;
use gptq_core::gguf::GgmlType;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// `gptq serve`'s flags, parsed as the command line would.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The endpoints (and two that do not exist), with the method each takes.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/completion"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/completions"),
    ("POST", "/chat/completions"),
    ("GET", "/v1/completions"),
    ("POST", "/v1/nothing"),
    // ollama's API (appended, so that the seeds' first bytes keep naming
    // the endpoints above).
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("POST", "/api/pull"),
];

/// The API key the server is started with.
const KEY: &str = "fuzz-key";

struct App {
    _servers: [Server; 2],
    /// The plain server's router, then the `--context-shift` one's.
    routers: [axum::Router; 2],
    runtime: tokio::runtime::Runtime,
}

/// Two servers for the whole run, both over a tiny model (a byte-level
/// vocabulary, so any text tokenizes) with a 64-token context over two
/// slots: the plain one refuses what does not fit, so that no request can
/// generate for long; the `--context-shift` one goes on past the context,
/// bounded by its 2-second `--timeout`.
fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        // One pool thread per server: each engine's loop holds one.
        gptq_fuzz::pool_threads(2);
        let dir = std::env::temp_dir().join(format!("gptq-fuzz-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tiny.gguf");
        let hparams = HParams {
            n_vocab: 300,
            n_ctx: 64,
            n_embd: 32,
            n_ff: 128,
            n_layer: 1,
            n_head: 2,
            ln_eps: 1e-5,
        };
        write_synthetic(&path, &SyntheticSpec::new(hparams, GgmlType::Q8_0)).expect("tiny model");
        let model = path.to_str().expect("utf-8 temp path");
        let start = |extra: &[&str]| {
            let mut argv = vec![
                "serve",
                "-m",
                model,
                "--parallel",
                "2",
                "-t",
                "1",
                "--api-key",
                KEY,
                "--max-body",
                "65536",
            ];
            argv.extend_from_slice(extra);
            let flags = Flags::try_parse_from(argv).expect("flags");
            Server::start(&flags.serve).expect("server")
        };
        // With --context-shift a request may ask for tokens without end; the
        // short timeout bounds it well inside libFuzzer's hang limit.
        let servers = [
            start(&["--timeout", "20"]),
            start(&["--timeout", "2", "--context-shift"]),
        ];
        let routers = [servers[0].router(), servers[1].router()];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        App {
            _servers: servers,
            routers,
            runtime,
        }
    })
}

/// Checks an error body: `{"error": {"message": "...", "type": "...", ...}}`,
/// or ollama's `{"error": "..."}` from its endpoints' handlers (the router's
/// own 401 and 405 answer in OpenAI's shape on every path).
fn check_error(status: StatusCode, path: &str, body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{status}: the error body is not JSON ({e})"));
    let err = &v["error"];
    let router = [StatusCode::UNAUTHORIZED, StatusCode::METHOD_NOT_ALLOWED];
    if path.starts_with("/api/") && !router.contains(&status) {
        assert!(err.is_string(), "{status}: no ollama error in {v}");
        return;
    }
    assert!(
        err["message"].is_string(),
        "{status}: no error.message in {v}"
    );
    assert!(err["type"].is_string(), "{status}: no error.type in {v}");
}

/// Checks ollama's stream: every line is a JSON object, the last one
/// `"done": true` or an error.
fn check_lines(body: &[u8]) {
    let text = std::str::from_utf8(body).expect("the stream is UTF-8");
    let mut last = serde_json::Value::Null;
    for line in text.lines() {
        last = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stream line is not JSON ({e}): {line}"));
    }
    assert!(
        last["done"] == true || last["error"].is_string(),
        "the stream ends with neither done nor an error: {last}"
    );
}

/// Checks a stream of server-sent events: every `data:` item is JSON or
/// `[DONE]`.
fn check_events(body: &[u8]) {
    let text = std::str::from_utf8(body).expect("the event stream is UTF-8");
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            if data != "[DONE]" {
                serde_json::from_str::<serde_json::Value>(data)
                    .unwrap_or_else(|e| panic!("event item is not JSON ({e}): {data}"));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let app = app();
    let (method, path) = ROUTES[usize::from(data[0]) % ROUTES.len()];
    // Now and then the other method, to reach the 405 answers.
    let method = match (data[0] / 32, method) {
        (7, "GET") => Method::POST,
        (7, _) => Method::GET,
        _ => Method::from_bytes(method.as_bytes()).expect("method"),
    };
    let mut req = Request::builder().method(method).uri(path);
    req = match data[1] & 3 {
        0 => req.header(header::AUTHORIZATION, format!("Bearer {KEY}")),
        1 => req.header(header::AUTHORIZATION, "Bearer wrong"),
        2 => req.header(header::AUTHORIZATION, KEY),
        _ => req,
    };
    if data[1] & 4 == 0 {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = data[2..].to_vec();
    let req = req.body(Body::from(body)).expect("request");
    let router = app.routers[usize::from(data[1] & 8 != 0)].clone();
    app.runtime.block_on(async move {
        let resp = tokio::time::timeout(Duration::from_secs(60), router.oneshot(req))
            .await
            .expect("no response within 60 s")
            .expect("the router is infallible");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let is_events = content_type.starts_with("text/event-stream");
        let is_lines = content_type.starts_with("application/x-ndjson");
        let body = tokio::time::timeout(
            Duration::from_secs(60),
            axum::body::to_bytes(resp.into_body(), 64 << 20),
        )
        .await
        .expect("the body ends within 60 s")
        .expect("the body reads");
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR && !status.is_informational(),
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_success() {
            if is_events {
                check_events(&body);
            } else if is_lines {
                check_lines(&body);
            } else if path != "/metrics" {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .unwrap_or_else(|e| panic!("{path}: a 200 body that is not JSON ({e})"));
            }
        } else {
            check_error(status, path, &body);
        }
    });
});
