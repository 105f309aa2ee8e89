//! `gptq serve`: an OpenAI-compatible HTTP server with continuous batching.
//!
//! - `engine`: the model thread: slots, batched steps, sampling, events.
//! - `slots`: which slot a request takes and what of its cache it reuses.
//! - `openai`, `llama`, `ollama`: the endpoints and their JSON shapes;
//!   `request`: the fields they share, checked against the limits;
//!   `chat_template`: messages as a transcript.
//! - `stream`: engine events to whole responses or server-sent events.
//! - `routes`, `auth`, `http`: the router, the API key, the listener
//!   (connection bounds, header deadline, graceful stop).
//! - `metrics`, `logprobs`, `error`.
//!
//! The model runs on the rayon pool (`-t` threads); HTTP runs on its own
//! tokio threads (`--threads-http`), which only parse, queue and forward.

mod auth;
mod chat_template;
mod engine;
mod error;
mod http;
mod llama;
mod logprobs;
mod metrics;
mod ollama;
mod openai;
mod request;
mod routes;
mod slots;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use clap::Args;
use gptq_core::Model;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::args::{CacheType, SamplingArgs};
use crate::{load, model_path};
use engine::{Engine, EngineConfig};
use error::ApiError;
use metrics::Metrics;
use request::Defaults;

/// `gptq serve` flags (llama-server's names where they apply).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// GGUF model file (default: the model in models/).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// The model's name in responses and /v1/models (default: the file name).
    #[arg(short = 'a', long = "alias", value_name = "NAME")]
    pub alias: Option<String>,
    /// Address to listen on. Anything but loopback exposes the server to the
    /// network: set --api-key.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Kernel threads for the model (default: all cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Threads for HTTP (parsing, streaming); the model never runs on them.
    #[arg(long = "threads-http", value_name = "N", default_value_t = 2)]
    pub threads_http: usize,
    /// KV cache size in tokens over all slots, as llama-server: each slot
    /// gets c/np (at most the model's context). 0 = the model's context for
    /// every slot.
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 0)]
    pub ctx_size: usize,
    /// Slots: requests decoded together in one batch (`-np` also works).
    #[arg(long = "parallel", value_name = "N", default_value_t = 4)]
    pub parallel: usize,
    /// Prompt tokens evaluated per step (a prompt is read in chunks of this
    /// size while the other slots go on decoding; also the granularity of
    /// prefix reuse).
    #[arg(
        short = 'b',
        long = "batch-size",
        value_name = "N",
        default_value_t = 256
    )]
    pub batch_size: usize,
    /// Tokens to generate when a request does not say (-1 = until the
    /// context is full).
    #[arg(
        short = 'n',
        long = "n-predict",
        value_name = "N",
        default_value_t = -1,
        allow_hyphen_values = true
    )]
    pub n_predict: i64,
    /// KV cache type.
    #[arg(
        long = "cache-type",
        visible_alias = "ctk",
        value_enum,
        default_value = "f32"
    )]
    pub cache_type: CacheType,
    /// Keep each prefill product's repacked weights between calls (like
    /// ik_llama.cpp's -rtr; see `gptq bench --repack`).
    #[arg(long = "repack", visible_alias = "rtr")]
    pub repack: bool,
    /// Require `Authorization: Bearer KEY` (all but /health and /v1/models).
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Seconds a request may take in all (waiting for a slot and
    /// generating); generation that runs out ends with finish_reason
    /// "length".
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// Requests that may wait for a slot; more get 503.
    #[arg(long = "max-queue", value_name = "N", default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long = "max-body", value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Connections served at once; more wait until one closes.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Never reuse a slot's cached prompt prefix.
    #[arg(long = "no-cache-prompt")]
    pub no_cache_prompt: bool,
    /// llama-server's (and ollama's) context shift: a prompt too long for
    /// the context is cut (the first `n_keep` tokens, then the end) and a
    /// full context drops the `n_discard` tokens after the first `n_keep`
    /// (half by default; ollama's routes keep `num_keep`) and goes on, so
    /// that a generation is limited only by its token budget. Off, such
    /// requests are refused (400) on the OpenAI and llama-server endpoints
    /// (ollama's cut leaves room for the answer) and a full context ends
    /// the generation ("length").
    #[arg(long = "context-shift")]
    pub context_shift: bool,
    /// Default sampling settings for requests that do not give them.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// What every handler shares.
pub struct AppState {
    model: Arc<Model>,
    engine: Engine,
    metrics: Arc<Metrics>,
    defaults: Defaults,
    model_id: String,
    model_path: String,
    fingerprint: String,
    created: u64,
    ids: AtomicUsize,
    timeout: Duration,
    max_body: usize,
    body_timeout: Duration,
    api_key: Option<String>,
    /// The model file's SHA-256, once ollama's listing has asked for it.
    digest: std::sync::OnceLock<String>,
}

impl AppState {
    /// Seconds since the epoch.
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The error response, counted.
    fn fail(&self, e: ApiError) -> Response {
        self.metrics
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e.into_response()
    }
}

/// Time a client has to send a request's headers, and then its body.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a JSON body of at most `--max-body` bytes within [`CLIENT_TIMEOUT`].
async fn read_json<T: DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiError> {
    let limited = Limited::new(body, state.max_body);
    let bytes = match tokio::time::timeout(state.body_timeout, limited.collect()).await {
        Err(_) => return Err(ApiError::slow_body()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::too_large(state.max_body));
        }
        Ok(Err(e)) => return Err(ApiError::invalid(format!("cannot read the body: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the body is empty: send a JSON object"));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// llama.cpp spells some flags with two letters after one dash (`-np`);
/// clap takes one. Rewrites them to their long names.
pub fn llama_flags(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-np") => "--parallel".into(),
        _ => a,
    })
    .collect()
}

/// A server ready to take requests: the flags checked, the model loaded and
/// the engine thread running. [`run`] puts it behind a listener; the fuzz
/// targets call its [`router`](Server::router) in process.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Checks the flags, loads the model and starts the engine thread. The
    /// engine's loop runs on a thread of the rayon pool for as long as the
    /// server lives (see `gptq_core::on_pool`): a second server in the same
    /// process needs a pool of at least two threads to run at all.
    pub fn start(args: &ServeArgs) -> Result<Server> {
        if args.parallel == 0 {
            bail!("-np must be at least 1");
        }
        if args.batch_size == 0 {
            bail!("-b must be at least 1");
        }
        if args.threads_http == 0 {
            bail!("--threads-http must be at least 1");
        }
        if args.max_connections == 0 || args.max_body == 0 || args.timeout == 0 {
            bail!("--max-connections, --max-body and --timeout must be at least 1");
        }
        load::set_threads(args.threads)?;
        let path = model_path::resolve(args.model.as_deref())?;
        let mut model =
            Model::load(&path).with_context(|| format!("cannot load {}", path.display()))?;
        if args.repack {
            model.enable_repack().context("--repack")?;
        }
        let model = Arc::new(model);
        let hp = model.hparams().clone();
        let n_ctx = match args.ctx_size {
            0 => hp.n_ctx,
            c => {
                let per = c / args.parallel;
                if per < 2 {
                    bail!(
                        "-c {c} over {} slots leaves under 2 tokens per slot",
                        args.parallel
                    );
                }
                if per > hp.n_ctx {
                    bail!(
                        "-c {c} over {} slots gives {per} tokens per slot, more than the model's context of {} (GPT-2 positions are learned)",
                        args.parallel,
                        hp.n_ctx
                    );
                }
                per
            }
        };
        let sampling = args.sampling.params(n_ctx, hp.n_vocab)?;
        let metrics = Arc::new(Metrics::default());
        let config = EngineConfig {
            n_slots: args.parallel,
            n_ctx,
            n_batch: args.batch_size.min(n_ctx),
            kv_type: args.cache_type.into(),
            max_queue: args.max_queue,
            cache_prompt: !args.no_cache_prompt,
        };
        let engine = Engine::start(Arc::clone(&model), config, Arc::clone(&metrics))?;
        let model_id = args.alias.clone().unwrap_or_else(|| {
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "gptq".into())
        });
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let state = Arc::new(AppState {
            defaults: Defaults {
                sampling,
                fixed_seed: args.sampling.seed >= 0,
                n_predict: usize::try_from(args.n_predict).unwrap_or(usize::MAX),
                n_ctx,
                n_vocab: hp.n_vocab,
                context_shift: args.context_shift,
            },
            fingerprint: format!(
                "gptq-{}-{}",
                env!("CARGO_PKG_VERSION"),
                model.kernels().describe()
            ),
            model,
            engine,
            metrics,
            model_id,
            model_path: path.display().to_string(),
            created,
            ids: AtomicUsize::new(0),
            timeout: Duration::from_secs(args.timeout),
            max_body: args.max_body,
            body_timeout: CLIENT_TIMEOUT,
            api_key: args.api_key.clone(),
            digest: std::sync::OnceLock::new(),
        });
        Ok(Server { state })
    }

    /// Every endpoint, as a service (`axum::Router`) over the shared state.
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.state))
    }

    /// Ends the requests in flight and stops the engine thread.
    pub fn stop(&self) {
        self.state.engine.stop();
    }
}

/// Starts the server; returns after a graceful stop (Ctrl-C or SIGTERM).
pub fn run(args: &ServeArgs) -> Result<()> {
    let state = Server::start(args)?.state;
    let n_ctx = state.engine.config().n_ctx;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads_http)
        .thread_name("gptq-http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let app = routes::router(Arc::clone(&state));
    runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "gptq serve: {} on http://{local} ({} slots of {n_ctx} tokens, kernel path {}, {} threads)",
            state.model_id,
            args.parallel,
            state.model.kernels().describe(),
            rayon::current_num_threads(),
        );
        let limits = http::ConnLimits {
            max_connections: args.max_connections,
            header_timeout: CLIENT_TIMEOUT,
            drain: Duration::from_secs(5),
        };
        let engine_state = Arc::clone(&state);
        let before_drain = async move {
            eprintln!("gptq serve: stopping");
            let _ = tokio::task::spawn_blocking(move || engine_state.engine.stop()).await;
        };
        http::serve(listener, app, limits, http::stop_signal(), before_drain).await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("gptq serve: stopped");
    Ok(())
}
