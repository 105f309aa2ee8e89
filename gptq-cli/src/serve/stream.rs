//! From the engine's events to responses: collecting a whole completion, or
//! merging the events of one or more choices into one stream, and the
//! server-sent-events framing.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use super::engine::{Event, GenSpec, Outcome};
use super::error::ApiError;
use super::logprobs::TokenLogprob;

/// One generated token of a collected completion.
#[derive(Clone, Debug)]
pub struct Tok {
    /// Its id.
    pub id: u32,
    /// Its log-probability, when requested.
    pub logprob: Option<TokenLogprob>,
    /// Byte offset in the completion's text where this token's text starts.
    pub offset: usize,
}

/// A finished completion.
#[derive(Clone, Debug)]
pub struct Collected {
    /// The text.
    pub text: String,
    /// The tokens.
    pub tokens: Vec<Tok>,
    /// How it ended.
    pub outcome: Outcome,
    /// The prompt's tokens after the first, scored, when the request asked.
    pub prompt_logprobs: Option<Vec<TokenLogprob>>,
}

/// Queues one job per spec, all or none (a refused one cancels the others).
pub fn submit_all(
    state: &AppState,
    specs: Vec<GenSpec>,
) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
    let deadline = Instant::now() + state.timeout;
    let mut rxs = Vec::with_capacity(specs.len());
    for spec in specs {
        match state.engine.submit(spec, deadline) {
            Ok(rx) => rxs.push(rx),
            Err(e) => {
                state
                    .metrics
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(rxs)
}

/// Waits for a whole completion.
pub async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut prompt_logprobs = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token {
                id,
                text: t,
                logprob,
            } => {
                tokens.push(Tok {
                    id,
                    logprob,
                    offset: text.len(),
                });
                text.push_str(&t);
            }
            Event::Text(t) => text.push_str(&t),
            Event::Prompt(lps) => prompt_logprobs = Some(lps),
            Event::Done(outcome) => {
                return Ok(Collected {
                    text,
                    tokens,
                    outcome,
                    prompt_logprobs,
                });
            }
            Event::Error(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the engine stopped"))
}

/// Waits for every completion, in order.
pub async fn collect_all(rxs: Vec<UnboundedReceiver<Event>>) -> Result<Vec<Collected>, ApiError> {
    let mut out = Vec::with_capacity(rxs.len());
    for rx in rxs {
        out.push(collect(rx).await?);
    }
    Ok(out)
}

/// The events of several choices as one stream of `(choice, event)`, in the
/// order they arrive; it ends when every choice has ended.
pub fn merged(rxs: Vec<UnboundedReceiver<Event>>) -> impl Stream<Item = (usize, Event)> + Send {
    stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| {
        stream::unfold(Some(rx), move |rx| async move {
            let mut rx = rx?;
            let ev = rx.recv().await?;
            let last = matches!(ev, Event::Done(_) | Event::Error(_));
            Some(((i, ev), (!last).then_some(rx)))
        })
        .boxed()
    }))
}

/// SSE data lines as a response: every item of `data` is one `data: …`
/// event; comments keep idle connections alive.
pub fn sse(
    data: impl Stream<Item = String> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(data.map(|d| Ok(SseEvent::default().data(d))))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The SSE payload of an error in the middle of a stream (the status line
/// has gone out already).
pub fn error_data(e: &ApiError) -> String {
    e.body().to_string()
}
