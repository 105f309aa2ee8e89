//! `POST /api/generate`: the prompt continued as raw text.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::engine::{Event, Outcome};
use super::super::error::ApiError;
use super::super::metrics::Endpoint;
use super::super::request::token_ids;
use super::super::stream::Collected;
use super::super::{AppState, read_json};
use super::options::Base;
use super::reply::{Shape, answer, loaded, logprobs_of, token_object, totals};
use super::{fail, rfc3339};

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
    let context = req.context.unwrap_or_default();
    let mut ids = token_ids("context", &context, state.defaults.n_vocab)?;
    let prompt = req.prompt.unwrap_or_default();
    ids.extend(tok.encode_with_special(&prompt));
    let model = plan.model.clone();
    if ids.is_empty() {
        // ollama's "load the model" request: nothing to generate.
        return Ok(loaded(
            &model,
            &req.base.keep_alive,
            plan.stream,
            ("response", json!("")),
        ));
    }
    let ids = plan.fit(ids)?;
    let spec = plan.spec(state, ids.clone(), &[])?;
    let shape = GenerateShape {
        state: Arc::clone(state),
        model,
        started,
        context: ids,
        logprobs: plan.logprobs.is_some(),
    };
    answer(state, spec, shape, plan.stream).await
}

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
}

impl Shape for GenerateShape {
    /// The whole response at once.
    fn whole(mut self, c: Collected) -> Value {
        let tok = self.state.model.tokenizer();
        self.context.extend(c.tokens.iter().map(|t| t.id));
        let mut v = self.last(&c.text, &c.outcome);
        if self.logprobs {
            v["logprobs"] = logprobs_of(tok, &c.tokens);
        }
        v
    }

    fn on(&mut self, ev: Event) -> Option<Value> {
        match ev {
            Event::Token { id, text, logprob } => {
                self.context.push(id);
                let tok = self.state.model.tokenizer();
                token_object(self.object(&text), tok, logprob.as_ref(), text.is_empty())
            }
            Event::Text(text) => Some(self.object(&text)),
            Event::Done(o) => Some(self.last("", &o)),
            Event::Prompt(_) | Event::Error(_) => None,
        }
    }
}
