//! Counters and gauges for `GET /metrics` (Prometheus text format) and
//! `GET /health`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The server's counters; the engine and the HTTP side update them.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests received, per endpoint.
    pub requests: [AtomicU64; Endpoint::COUNT],
    /// Requests answered with a 4xx or 5xx status.
    pub errors: AtomicU64,
    /// Requests refused with 503 because the queue was full.
    pub rejected: AtomicU64,
    /// Requests whose client went away before the end.
    pub cancelled: AtomicU64,
    /// Requests that ran out of time.
    pub timed_out: AtomicU64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens reused from a slot's cache.
    pub prompt_tokens_cached: AtomicU64,
    /// Tokens generated.
    pub generated: AtomicU64,
    /// Decode tokens evaluated in batched steps.
    pub decode_tokens: AtomicU64,
    /// Microseconds spent in steps with a prompt chunk.
    pub prompt_us: AtomicU64,
    /// Microseconds spent in steps with decode tokens only.
    pub decode_us: AtomicU64,
    /// Batched steps run.
    pub steps: AtomicU64,
    /// Slots serving a request now.
    pub slots_busy: AtomicUsize,
    /// Requests waiting for a slot now.
    pub queue: AtomicUsize,
}

/// The endpoints counted separately.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /completion`
    Completion,
    /// `/tokenize`, `/detokenize`
    Tokenize,
    /// ollama's `/api/...`
    Ollama,
    /// Everything else.
    Other,
}

impl Endpoint {
    const COUNT: usize = 6;
    const ALL: [(Endpoint, &'static str); Endpoint::COUNT] = [
        (Endpoint::Completions, "/v1/completions"),
        (Endpoint::Chat, "/v1/chat/completions"),
        (Endpoint::Completion, "/completion"),
        (Endpoint::Tokenize, "tokenize"),
        (Endpoint::Ollama, "/api"),
        (Endpoint::Other, "other"),
    ];
}

impl Metrics {
    /// Counts a request to `e`.
    pub fn request(&self, e: Endpoint) {
        self.requests[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one batched step: `n_prompt` prompt tokens and `n_decode`
    /// decode tokens in `dt`.
    pub fn record_step(&self, n_prompt: usize, n_decode: usize, dt: Duration) {
        let us = dt.as_micros() as u64;
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(n_prompt as u64, Ordering::Relaxed);
        self.decode_tokens
            .fetch_add(n_decode as u64, Ordering::Relaxed);
        if n_prompt > 0 {
            self.prompt_us.fetch_add(us, Ordering::Relaxed);
        } else {
            self.decode_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition, with `slots` slots in all.
    pub fn render(&self, slots: usize) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, values: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP gptq_{name} {help}");
            let _ = writeln!(out, "# TYPE gptq_{name} {kind}");
            for (labels, v) in values {
                let _ = writeln!(out, "gptq_{name}{labels} {v}");
            }
        };
        let requests: Vec<(String, f64)> = Endpoint::ALL
            .iter()
            .map(|(e, name)| {
                (
                    format!("{{endpoint=\"{name}\"}}"),
                    get(&self.requests[*e as usize]) as f64,
                )
            })
            .collect();
        let one = |v: f64| vec![(String::new(), v)];
        metric("requests_total", "counter", "Requests received.", &requests);
        metric(
            "requests_errors_total",
            "counter",
            "Requests answered with an error status.",
            &one(get(&self.errors) as f64),
        );
        metric(
            "requests_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            &one(get(&self.rejected) as f64),
        );
        metric(
            "requests_cancelled_total",
            "counter",
            "Requests whose client went away.",
            &one(get(&self.cancelled) as f64),
        );
        metric(
            "requests_timed_out_total",
            "counter",
            "Requests that ran out of time (--timeout).",
            &one(get(&self.timed_out) as f64),
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            &one(get(&self.prompt_tokens) as f64),
        );
        metric(
            "prompt_tokens_cached_total",
            "counter",
            "Prompt tokens reused from a slot's cache.",
            &one(get(&self.prompt_tokens_cached) as f64),
        );
        metric(
            "tokens_predicted_total",
            "counter",
            "Tokens generated.",
            &one(get(&self.generated) as f64),
        );
        let rate = |n: u64, us: u64| {
            if us == 0 {
                0.0
            } else {
                n as f64 * 1e6 / us as f64
            }
        };
        metric(
            "prompt_tokens_seconds",
            "gauge",
            "Prompt tokens per second in steps with a prompt chunk.",
            &one(rate(get(&self.prompt_tokens), get(&self.prompt_us))),
        );
        metric(
            "predicted_tokens_seconds",
            "gauge",
            "Decode tokens per second (all slots together) in decode-only steps.",
            &one(rate(get(&self.decode_tokens), get(&self.decode_us))),
        );
        metric(
            "steps_total",
            "counter",
            "Batched forward passes.",
            &one(get(&self.steps) as f64),
        );
        metric(
            "slots_busy",
            "gauge",
            "Slots serving a request.",
            &one(self.slots_busy.load(Ordering::Relaxed) as f64),
        );
        metric("slots_total", "gauge", "Slots (-np).", &one(slots as f64));
        metric(
            "requests_deferred",
            "gauge",
            "Requests waiting for a slot.",
            &one(self.queue.load(Ordering::Relaxed) as f64),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(Endpoint::Chat);
        m.record_step(0, 4, Duration::from_millis(20));
        let text = m.render(4);
        assert!(text.contains("gptq_requests_total{endpoint=\"/v1/chat/completions\"} 1\n"));
        assert!(text.contains("gptq_predicted_tokens_seconds 200\n"));
        assert!(text.contains("# TYPE gptq_slots_busy gauge\n"));
        assert!(text.contains("gptq_slots_total 4\n"));
    }
}
