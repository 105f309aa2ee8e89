//! The model side of the server: one thread that owns the slots (a
//! [`Session`] each) and runs continuous batching over them.
//!
//! Requests arrive on a channel. Every step, the engine takes new requests
//! into free slots (the one whose cache shares the longest reusable prefix,
//! see [`super::slots`]), then evaluates one [`Batch`] step: one token for
//! every slot that is generating, plus the next prompt chunk of the slots
//! still reading their prompts, first come first, as many whole chunks as
//! fit `n_batch` prompt tokens (at least one). It then
//! samples each slot's next token, streams it to the request's channel, and
//! frees the slots whose requests finished, went away (their channel
//! closed: the client disconnected) or ran out of time. With
//! `--context-shift`, a slot whose context is full is shifted instead of
//! ending (see [`shift_context`]): it reads its shortened context again,
//! like a joining prompt, and goes on.
//!
//! The engine runs on a thread of the rayon pool (the kernel threads); the
//! HTTP side only parses, queues and forwards events, on its own tokio
//! threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gptq_core::sample::SamplerParams;
use gptq_core::{Batch, BatchParams, DecodeStream, KvType, Model, Sampler, Session, SessionParams};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::error::ApiError;
use super::logprobs::{TokenLogprob, token_logprob};
use super::metrics::Metrics;
use super::request::Shift;
use super::slots::{SlotView, choose};

/// What a request asks for: the prompt's tokens and how to continue it.
#[derive(Clone, Debug)]
pub struct GenSpec {
    /// Prompt tokens (at least one).
    pub prompt: Vec<u32>,
    /// Sampling settings (seed included).
    pub sampling: SamplerParams,
    /// Most tokens to generate; `usize::MAX` runs until the context is full,
    /// 0 only reads the prompt (to score it).
    pub max_tokens: usize,
    /// Stop strings: generation ends before the first one (not returned).
    pub stop: Vec<String>,
    /// Go on past `<|endoftext|>`.
    pub ignore_eos: bool,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// May reuse a slot's cached prefix.
    pub cache_prompt: bool,
    /// Score the prompt: each of its tokens after the first gets its
    /// log-probability and this many alternatives ([`Event::Prompt`]). The
    /// whole prompt is then evaluated (no cached prefix).
    pub prompt_logprobs: Option<usize>,
    /// Shift a full context instead of ending (`--context-shift`).
    pub shift: Option<Shift>,
    /// The context the request runs in: the slot's, or less (ollama's
    /// `num_ctx`); full at this many tokens.
    pub n_ctx: usize,
    /// The prompt was cut to fit the context (`--context-shift`).
    pub truncated: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model wrote `<|endoftext|>`.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The slot's context is full.
    ContextFull,
    /// The request's time (`--timeout`) ran out.
    Timeout,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Eos | Finish::Stop => "stop",
            Finish::Length | Finish::ContextFull | Finish::Timeout => "length",
        }
    }

    /// llama-server's `stop_type`.
    pub fn llama(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Stop => "word",
            Finish::Length | Finish::ContextFull | Finish::Timeout => "limit",
        }
    }
}

/// The end of a request: why, and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Why generation ended.
    pub finish: Finish,
    /// The stop string that ended it, if one did.
    pub stopping_word: String,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens reused from the slot's cache (not evaluated).
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Time from taking a slot to the first token.
    pub prompt_ms: f64,
    /// Time from the first token to the end.
    pub gen_ms: f64,
    /// The slot that served the request.
    pub slot: usize,
    /// The prompt was cut or the context shifted (llama-server's
    /// `truncated`).
    pub truncated: bool,
}

/// What the engine sends a request, in order: tokens, then one `Done` or
/// `Error`.
#[derive(Clone, Debug)]
pub enum Event {
    /// The prompt's tokens after the first, scored, when the request asked
    /// ([`GenSpec::prompt_logprobs`]); sent once the prompt is read, before
    /// any token.
    Prompt(Vec<TokenLogprob>),
    /// One generated token and the text it releases (empty while a character
    /// is incomplete or text might start a stop string).
    Token {
        /// The token id.
        id: u32,
        /// Text released by this token.
        text: String,
        /// Its log-probability, when requested.
        logprob: Option<TokenLogprob>,
    },
    /// Text released at the end with no token of its own: the tail of a
    /// character split across tokens, or text held back as a possible stop
    /// string.
    Text(String),
    /// Generation ended.
    Done(Outcome),
    /// The request failed (timed out in the queue, server shutting down).
    Error(ApiError),
}

/// How the engine is sized.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Slots: sequences decoded at once.
    pub n_slots: usize,
    /// Context of each slot.
    pub n_ctx: usize,
    /// Prompt tokens evaluated per step (one chunk).
    pub n_batch: usize,
    /// KV cache type.
    pub kv_type: KvType,
    /// Requests that may wait for a slot.
    pub max_queue: usize,
    /// Whether slots may reuse cached prefixes at all.
    pub cache_prompt: bool,
}

struct Job {
    spec: GenSpec,
    events: UnboundedSender<Event>,
    deadline: Instant,
    seq: u64,
}

/// The handle the HTTP side holds: submits requests, reads the sizes, stops
/// the engine.
pub struct Engine {
    tx: Mutex<Option<Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    shutdown: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    seq: AtomicUsize,
    config: EngineConfig,
}

impl Engine {
    /// Allocates the slots and the batch, and starts the engine thread on
    /// the rayon pool.
    pub fn start(model: Arc<Model>, config: EngineConfig, metrics: Arc<Metrics>) -> Result<Engine> {
        // Slots only ever run in the batch, whose scratch serves them all: a
        // session's own scratch is kept to one row.
        let params = SessionParams {
            n_ctx: config.n_ctx,
            n_batch: 1,
            n_outputs: 1,
            kv_type: config.kv_type,
        };
        let mut slots = Vec::with_capacity(config.n_slots);
        for i in 0..config.n_slots {
            let session = Session::new(Arc::clone(&model), params.clone())
                .with_context(|| format!("cannot allocate slot {i}"))?;
            slots.push(Slot {
                session,
                exact: 0,
                run: None,
            });
        }
        let batch = Batch::new(
            Arc::clone(&model),
            BatchParams {
                max_seqs: config.n_slots,
                max_tokens: config.n_batch + config.n_slots,
                n_ctx: config.n_ctx,
            },
        )
        .context("cannot allocate the batch")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            model,
            slots,
            batch,
            waiting: VecDeque::new(),
            rx,
            queued: Arc::clone(&queued),
            shutdown: Arc::clone(&shutdown),
            metrics,
            n_batch: config.n_batch,
            cache_prompt: config.cache_prompt,
            score_rows: Vec::new(),
            last_seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name("gptq-engine".into())
            // The loop runs inside the pool, as `gptq complete`'s decoding
            // does: a step's team then needs no cross-thread hand-off to
            // start. It holds one of the pool's threads meanwhile.
            .spawn(move || gptq_core::on_pool(|| worker.run()))
            .context("cannot start the engine thread")?;
        Ok(Engine {
            tx: Mutex::new(Some(tx)),
            queued,
            shutdown,
            thread: Mutex::new(Some(thread)),
            seq: AtomicUsize::new(0),
            config,
        })
    }

    /// The sizes the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues a request; its events arrive on the returned channel. Dropping
    /// the receiver cancels the request. A full queue or a stopping server is
    /// a 503.
    pub fn submit(
        &self,
        spec: GenSpec,
        deadline: Instant,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        if self.shutdown.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        let max = self.config.max_queue;
        // Takes a queue place only below the limit. A compare-exchange loop:
        // `fetch_update` is deprecated on nightly (renamed `try_update`, not
        // yet on stable), and the fuzz build uses nightly.
        let mut q = self.queued.load(Ordering::Acquire);
        loop {
            if q >= max {
                return Err(ApiError::unavailable(format!(
                    "the server is busy: {max} requests are already waiting (--max-queue)"
                )));
            }
            match self
                .queued
                .compare_exchange_weak(q, q + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => q = now,
            }
        }
        let (events, rx) = unbounded_channel();
        let job = Job {
            spec,
            events,
            deadline,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) as u64,
        };
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(job).is_ok()));
        if sent != Some(true) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        Ok(rx)
    }

    /// Ends every request (each gets a 503 error event) and stops the engine
    /// thread; returns when it has stopped.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

struct Slot {
    session: Session,
    /// Leading cached positions reusable exactly (whole prompt chunks from 0).
    exact: usize,
    run: Option<Running>,
}

/// A request in a slot.
struct Running {
    job: Job,
    /// Next prompt token to evaluate.
    pending: usize,
    /// The sampled token to evaluate in the next step.
    next: Option<u32>,
    sampler: Sampler,
    decoder: DecodeStream,
    held: String,
    generated: usize,
    cached: usize,
    started: Instant,
    first_token: Option<Instant>,
    /// The prompt's scores so far, when it is scored.
    prompt_lps: Vec<TokenLogprob>,
    /// The request's prompt tokens (`job.spec.prompt` holds the context to
    /// read again after a shift).
    prompt_tokens: usize,
    /// Context shifts so far.
    shifts: usize,
    /// Where the slot's prompt reading ranks (first come first): twice the
    /// request's arrival number, or after a shift, one past twice the last
    /// arrival then (a shifted context is read again after the prompts that
    /// were already waiting and before those that come later, so that a
    /// long generation's shifts do not keep newer prompts waiting).
    order: u64,
}

struct Worker {
    model: Arc<Model>,
    slots: Vec<Slot>,
    batch: Batch,
    waiting: VecDeque<Job>,
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    n_batch: usize,
    cache_prompt: bool,
    /// Logits of the prompt rows being scored (grown once, by the first
    /// request that scores a prompt).
    score_rows: Vec<f32>,
    /// The latest arrival number taken in.
    last_seq: u64,
}

/// How long an idle engine waits for a request before looking at the
/// shutdown flag again.
const IDLE_POLL: Duration = Duration::from_millis(50);

impl Worker {
    fn run(&mut self) {
        loop {
            if !self.intake() {
                break;
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            self.reap();
            self.place();
            self.publish_gauges();
            if self.slots.iter().any(|s| s.run.is_some()) {
                self.step();
                self.publish_gauges();
            }
        }
        let err = ApiError::unavailable("the server is shutting down");
        for slot in &mut self.slots {
            if let Some(run) = slot.run.take() {
                let _ = run.job.events.send(Event::Error(err.clone()));
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.waiting.push_back(job);
        }
        for job in self.waiting.drain(..) {
            let _ = job.events.send(Event::Error(err.clone()));
        }
        self.queued.store(0, Ordering::Relaxed);
        self.publish_gauges();
    }

    /// Moves new requests into the waiting queue; blocks (briefly) only when
    /// there is nothing else to do. False when the server is gone.
    fn intake(&mut self) -> bool {
        let idle = self.waiting.is_empty() && self.slots.iter().all(|s| s.run.is_none());
        if idle {
            match self.rx.recv_timeout(IDLE_POLL) {
                Ok(job) => self.take_in(job),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.take_in(job);
        }
        true
    }

    /// Queues a request that arrived.
    fn take_in(&mut self, job: Job) {
        self.last_seq = self.last_seq.max(job.seq);
        self.waiting.push_back(job);
    }

    /// Drops requests whose client went away, and ends those out of time.
    fn reap(&mut self) {
        let now = Instant::now();
        let before = self.waiting.len();
        let metrics = &self.metrics;
        self.waiting.retain(|job| {
            if job.events.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if now >= job.deadline {
                metrics.timed_out.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(Event::Error(ApiError::unavailable(
                    "timed out waiting for a free slot (--timeout)",
                )));
                return false;
            }
            true
        });
        self.queued
            .fetch_sub(before - self.waiting.len(), Ordering::AcqRel);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(run) = &slot.run else { continue };
            if run.job.events.is_closed() {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                slot.run = None;
            } else if now >= run.job.deadline {
                self.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
                finish(slot, i, Finish::Timeout);
            }
        }
    }

    /// Takes waiting requests, oldest first, into free slots.
    fn place(&mut self) {
        while let Some(job) = self.waiting.front() {
            let views: Vec<SlotView<'_>> = self
                .slots
                .iter()
                .map(|s| SlotView {
                    free: s.run.is_none(),
                    tokens: s.session.tokens(),
                    exact: s.exact,
                })
                .collect();
            let reuse =
                self.cache_prompt && job.spec.cache_prompt && job.spec.prompt_logprobs.is_none();
            let Some((i, keep)) = choose(&views, &job.spec.prompt, self.n_batch, reuse) else {
                return;
            };
            let job = self.waiting.pop_front().expect("front exists");
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let slot = &mut self.slots[i];
            let drop = slot.session.len() - keep;
            slot.session
                .rewind(drop)
                .expect("keeping a prefix of the cache");
            slot.exact = slot.exact.min(keep);
            let sampler = match Sampler::new(job.spec.sampling.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = job
                        .events
                        .send(Event::Error(ApiError::invalid(e.to_string())));
                    continue;
                }
            };
            self.metrics
                .prompt_tokens_cached
                .fetch_add(keep as u64, Ordering::Relaxed);
            slot.run = Some(Running {
                pending: keep,
                next: None,
                sampler,
                decoder: DecodeStream::new(),
                held: String::new(),
                generated: 0,
                cached: keep,
                started: Instant::now(),
                first_token: None,
                prompt_lps: Vec::new(),
                prompt_tokens: job.spec.prompt.len(),
                shifts: 0,
                order: 2 * job.seq,
                job,
            });
        }
    }

    /// One batched forward pass, then sampling for every slot that took part.
    fn step(&mut self) {
        // Slots reading their prompts, first come first: each takes its next
        // whole chunk (as `n_batch`-token chunks from its start, the way it
        // would be fed alone) while the step's prompt tokens stay within
        // `n_batch`; the first always gets its chunk. So requests that arrive
        // together read their prompts in one step and decode together from
        // the next, instead of joining one step apart.
        let waiting: Vec<(u64, usize, usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.run.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.pending < r.job.spec.prompt.len())
            .map(|(i, r)| (r.order, i, r.pending, r.job.spec.prompt.len() - r.pending))
            .collect();
        let prefill = prompt_chunks(waiting, self.n_batch);
        let mut items: Vec<(&mut Session, &[u32])> = Vec::with_capacity(self.slots.len());
        let mut stepped: Vec<usize> = Vec::with_capacity(self.slots.len());
        let (mut n_prompt, mut n_decode) = (0, 0);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Slot { session, run, .. } = slot;
            let Some(run) = run.as_mut() else { continue };
            if let Some(next) = &run.next {
                items.push((session, std::slice::from_ref(next)));
                stepped.push(i);
                n_decode += 1;
            } else if let Some(&(_, from, n)) = prefill.iter().find(|c| c.0 == i) {
                items.push((session, &run.job.spec.prompt[from..from + n]));
                stepped.push(i);
                n_prompt += n;
            }
        }
        if items.is_empty() {
            return;
        }
        let t = Instant::now();
        let result = self.batch.eval(&mut items);
        drop(items);
        let dt = t.elapsed();
        self.metrics.record_step(n_prompt, n_decode, dt);
        if let Err(e) = result {
            // Validated before queueing, so this is a bug; fail the requests
            // of this step rather than the server.
            for &i in &stepped {
                abort(&mut self.slots[i], "evaluation", &e);
            }
            return;
        }
        for (item, &i) in stepped.iter().enumerate() {
            let slot = &mut self.slots[i];
            let run = slot.run.as_mut().expect("stepped slots run");
            if run.next.take().is_none() {
                let &(_, from, n) = prefill
                    .iter()
                    .find(|c| c.0 == i)
                    .expect("a prompt chunk was evaluated");
                if n == self.n_batch && from == slot.exact && from.is_multiple_of(self.n_batch) {
                    slot.exact = from + n;
                }
                if let Some(top) = run.job.spec.prompt_logprobs.filter(|_| run.shifts == 0) {
                    // Row j's logits predict prompt token from + j + 1.
                    let prompt = &run.job.spec.prompt;
                    let rows = 0..n.min(prompt.len() - 1 - from);
                    let lps = &mut run.prompt_lps;
                    let scored = self
                        .batch
                        .score(item, rows, &mut self.score_rows, |j, row| {
                            lps.push(token_logprob(row, prompt[from + j + 1], top));
                        });
                    if let Err(e) = scored {
                        abort(slot, "scoring the prompt", &e);
                        continue;
                    }
                }
                run.pending += n;
                if run.pending < run.job.spec.prompt.len() {
                    continue;
                }
                if run.job.spec.prompt_logprobs.is_some() && run.shifts == 0 {
                    let lps = std::mem::take(&mut run.prompt_lps);
                    let _ = run.job.events.send(Event::Prompt(lps));
                }
                if run.job.spec.max_tokens == 0 {
                    finish(slot, i, Finish::Length);
                    continue;
                }
            }
            self.sample(i);
        }
    }

    /// Samples slot `i`'s next token from its logits and sends it.
    fn sample(&mut self, i: usize) {
        let model = Arc::clone(&self.model);
        let tok = model.tokenizer();
        let slot = &mut self.slots[i];
        let run = slot.run.as_mut().expect("sampling a running slot");
        let logits = slot.session.logits().expect("logits after a step");
        let id = match run.sampler.sample(logits, slot.session.tokens()) {
            Ok(id) => id,
            Err(e) => {
                abort(slot, "sampling", &e);
                return;
            }
        };
        if run.first_token.is_none() {
            run.first_token = Some(Instant::now());
        }
        let spec = &run.job.spec;
        if !spec.ignore_eos && Some(id) == tok.eos() {
            finish(slot, i, Finish::Eos);
            return;
        }
        let logprob = spec.logprobs.map(|n| token_logprob(logits, id, n));
        run.generated += 1;
        self.metrics.generated.fetch_add(1, Ordering::Relaxed);
        if run.decoder.push(tok, id, &mut run.held).is_err() {
            // Not a token of the vocabulary: the sampler never returns one.
            run.held.push('\u{fffd}');
        }
        // A stop string ends the text before it.
        let hit = spec
            .stop
            .iter()
            .filter_map(|s| run.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, word)) = hit {
            let word = word.clone();
            run.held.truncate(at);
            let text = std::mem::take(&mut run.held);
            let _ = run.job.events.send(Event::Token { id, text, logprob });
            finish_with(slot, i, Finish::Stop, word);
            return;
        }
        let n = safe_len(&run.held, &spec.stop);
        let rest = run.held.split_off(n);
        let text = std::mem::replace(&mut run.held, rest);
        let _ = run.job.events.send(Event::Token { id, text, logprob });
        if run.generated >= spec.max_tokens {
            finish(slot, i, Finish::Length);
        } else if slot.session.len() < spec.n_ctx.min(slot.session.n_ctx()) {
            run.next = Some(id);
        } else if let Some(shift) = spec.shift {
            if let Err(e) = shift_context(slot, i, id, shift, self.n_batch, self.last_seq) {
                abort(slot, "shifting the context", &e);
            }
        } else {
            finish(slot, i, Finish::ContextFull);
        }
    }

    fn publish_gauges(&self) {
        let busy = self.slots.iter().filter(|s| s.run.is_some()).count();
        self.metrics.slots_busy.store(busy, Ordering::Relaxed);
        self.metrics
            .queue
            .store(self.waiting.len(), Ordering::Relaxed);
    }
}

/// Ends the slot's request with an internal error (`what` failed: a bug,
/// since requests are checked before they queue) and frees the slot.
fn abort(slot: &mut Slot, what: &str, e: &dyn std::fmt::Display) {
    if let Some(run) = slot.run.take() {
        let _ = run.job.events.send(Event::Error(ApiError::internal(format!(
            "{what} failed: {e}"
        ))));
    }
}

/// Ends slot `i`'s request with `reason` (not a stop string).
fn finish(slot: &mut Slot, i: usize, reason: Finish) {
    finish_with(slot, i, reason, String::new())
}

/// Ends slot `i`'s request: releases the text still held (unless a stop
/// string cut it), sends the outcome, frees the slot (its cache stays for
/// prefix reuse).
fn finish_with(slot: &mut Slot, i: usize, reason: Finish, word: String) {
    let Some(mut run) = slot.run.take() else {
        return;
    };
    if reason != Finish::Stop {
        run.decoder.flush(&mut run.held);
        if !run.held.is_empty() {
            // The tail of a character split across tokens, or text held back
            // as a possible stop string: released with no token of its own.
            let _ = run
                .job
                .events
                .send(Event::Text(std::mem::take(&mut run.held)));
        }
    }
    let now = Instant::now();
    let first = run.first_token.unwrap_or(now);
    let outcome = Outcome {
        finish: reason,
        stopping_word: word,
        prompt_tokens: run.prompt_tokens,
        cached_tokens: run.cached,
        completion_tokens: run.generated,
        prompt_ms: (first - run.started).as_secs_f64() * 1e3,
        gen_ms: (now - first).as_secs_f64() * 1e3,
        slot: i,
        truncated: run.job.spec.truncated || run.shifts > 0 || reason == Finish::ContextFull,
    };
    let _ = run.job.events.send(Event::Done(outcome));
}

/// Shifts slot `i`'s full context as llama-server does, so that `next` (the
/// token just sampled and sent) can be evaluated: the first `n_keep` tokens
/// stay, the `n_discard` after them (half of those by default) go, the rest
/// move down. GPT-2's positions are learned, not rotated, so the moved
/// tokens cannot keep their cached keys and values as llama.cpp's cache
/// shift keeps them: the kept context and `next` are read again as a prompt
/// (the leading whole chunks the cache holds exactly are reused), which makes
/// the continuation exactly the one a fresh request for that context gets.
/// A context with nothing to drop (`n_keep` reaches its end) ends the
/// request as full.
fn shift_context(
    slot: &mut Slot,
    i: usize,
    next: u32,
    shift: Shift,
    n_batch: usize,
    last_seq: u64,
) -> gptq_core::Result<()> {
    let tokens = slot.session.tokens();
    let n_past = tokens.len();
    let n_keep = shift.n_keep.min(n_past);
    let n_left = n_past - n_keep;
    let n_discard = match shift.n_discard {
        0 => n_left / 2,
        n => n.min(n_left),
    };
    if n_discard == 0 {
        finish(slot, i, Finish::ContextFull);
        return Ok(());
    }
    let mut context = Vec::with_capacity(n_past - n_discard + 1);
    context.extend_from_slice(&tokens[..n_keep]);
    context.extend_from_slice(&tokens[n_keep + n_discard..]);
    context.push(next);
    let reuse = slot.exact.min(n_keep - n_keep % n_batch);
    slot.session.rewind(n_past - reuse)?;
    slot.exact = reuse;
    let run = slot.run.as_mut().expect("shifting a running slot");
    run.job.spec.prompt = context;
    run.pending = reuse;
    run.shifts += 1;
    run.order = 2 * last_seq + 1;
    Ok(())
}

/// This step's prompt chunks `(slot, from, n)` from the slots still reading
/// their prompts, given as `(order, slot, from, left)`: first come first, each
/// its next whole chunk of at most `n_batch` tokens, while their sum stays
/// within `n_batch` (the first always fits). A chunk is never cut to fill
/// the step: a prompt is read in the chunks it would be read in alone.
fn prompt_chunks(
    mut waiting: Vec<(u64, usize, usize, usize)>,
    n_batch: usize,
) -> Vec<(usize, usize, usize)> {
    waiting.sort_unstable();
    let mut chunks = Vec::with_capacity(waiting.len());
    let mut budget = n_batch;
    for (_, slot, from, left) in waiting {
        let n = left.min(n_batch);
        if n > budget {
            break;
        }
        budget -= n;
        chunks.push((slot, from, n));
    }
    chunks
}

/// Length of the prefix of `held` that cannot be the start of a stop string.
fn safe_len(held: &str, stop: &[String]) -> usize {
    if stop.is_empty() {
        return held.len();
    }
    held.char_indices()
        .map(|(i, _)| i)
        .find(|&i| stop.iter().any(|s| s.starts_with(&held[i..])))
        .unwrap_or(held.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_that_fit_share_a_step_in_arrival_order() {
        // Three short prompts arrived together (seq 7, 8, 9 in slots 2, 0, 1):
        // one step reads all three.
        let w = vec![(8, 0, 0, 30), (9, 1, 0, 25), (7, 2, 0, 40)];
        assert_eq!(
            prompt_chunks(w, 256),
            vec![(2, 0, 40), (0, 0, 30), (1, 0, 25)]
        );
        // A long prompt takes its whole chunk; the next waits (FIFO), even
        // though a later, shorter one would fit.
        let w = vec![(1, 0, 0, 300), (2, 1, 0, 200), (3, 2, 0, 10)];
        assert_eq!(prompt_chunks(w, 256), vec![(0, 0, 256)]);
        // Its rest (44) then shares a step with the next whole chunk.
        let w = vec![(1, 0, 256, 44), (2, 1, 0, 200), (3, 2, 0, 10)];
        assert_eq!(
            prompt_chunks(w, 256),
            vec![(0, 256, 44), (1, 0, 200), (2, 0, 10)]
        );
        assert_eq!(prompt_chunks(vec![], 256), vec![]);
    }

    #[test]
    fn held_back_text_is_a_possible_stop_start() {
        let stop = vec!["\nUser:".to_string()];
        assert_eq!(safe_len("Hello\nUs", &stop), 5);
        assert_eq!(safe_len("Hello", &stop), 5);
        assert_eq!(safe_len("Hello\n", &stop), 5);
        assert_eq!(safe_len("abc", &[]), 3);
    }
}
