//! `POST /api/chat`: messages as the plain transcript, answered as the
//! assistant's message.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::chat_template::{self, CHAT_STOP, Message};
use super::super::engine::{Event, Outcome};
use super::super::error::ApiError;
use super::super::metrics::Endpoint;
use super::super::stream::Collected;
use super::super::{AppState, read_json};
use super::options::Base;
use super::reply::{Shape, answer, loaded, logprobs_of, token_object, totals};
use super::truncate::recent_messages;
use super::{fail, rfc3339};

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
        return Ok(loaded(
            &model,
            &req.base.keep_alive,
            plan.stream,
            ("message", json!({"role": "assistant", "content": ""})),
        ));
    }
    let tok = state.model.tokenizer();
    let tokens =
        |m: &[Message]| Ok::<_, ApiError>(tok.encode_with_special(&chat_template::render(m)?));
    let mut ids = tokens(&converted)?;
    if !plan.fits(ids.len()) {
        plan.may_cut(ids.len())?;
        let kept = recent_messages(&converted, |m| Ok(tokens(m)?.len() <= plan.cut_to()))?;
        ids = plan.fit(tokens(&kept)?)?;
    }
    let spec = plan.spec(state, ids, CHAT_STOP)?;
    let shape = ChatShape {
        state: Arc::clone(state),
        model,
        started,
        begun: false,
        logprobs: plan.logprobs.is_some(),
    };
    answer(state, spec, shape, plan.stream).await
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
    fn whole(self, c: Collected) -> Value {
        let tok = self.state.model.tokenizer();
        let mut v = self.last(c.text.trim_start(), &c.outcome);
        if self.logprobs {
            v["logprobs"] = logprobs_of(tok, &c.tokens);
        }
        v
    }

    fn on(&mut self, ev: Event) -> Option<Value> {
        match ev {
            Event::Token { text, logprob, .. } => {
                let content = self.piece(&text);
                let tok = self.state.model.tokenizer();
                token_object(
                    self.object(content, false),
                    tok,
                    logprob.as_ref(),
                    content.is_empty(),
                )
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
