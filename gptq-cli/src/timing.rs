//! llama.cpp-style timing lines on stderr.

use std::time::Duration;

/// Time and count of one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phase {
    /// Wall time spent.
    pub time: Duration,
    /// Tokens (or runs) processed.
    pub n: usize,
}

impl Phase {
    /// Milliseconds.
    pub fn ms(&self) -> f64 {
        self.time.as_secs_f64() * 1e3
    }

    /// Tokens per second (0 when nothing was timed).
    pub fn tps(&self) -> f64 {
        let s = self.time.as_secs_f64();
        if s > 0.0 { self.n as f64 / s } else { 0.0 }
    }
}

/// Prints llama.cpp's performance summary: load, prompt eval, eval, total.
pub fn print_summary(load: Duration, prompt: Phase, eval: Phase, sample: Phase, total: Duration) {
    let per = |p: &Phase, unit: &str| {
        if p.n == 0 {
            format!("{:>6} {unit}", p.n)
        } else {
            format!(
                "{:>6} {unit} ({:>8.2} ms per token, {:>8.2} tokens per second)",
                p.n,
                p.ms() / p.n as f64,
                p.tps()
            )
        }
    };
    eprintln!(
        "gptq_perf:        load time = {:>10.2} ms",
        load.as_secs_f64() * 1e3
    );
    eprintln!(
        "gptq_perf:    sampling time = {:>10.2} ms / {}",
        sample.ms(),
        per(&sample, "runs  ")
    );
    eprintln!(
        "gptq_perf: prompt eval time = {:>10.2} ms / {}",
        prompt.ms(),
        per(&prompt, "tokens")
    );
    eprintln!(
        "gptq_perf:        eval time = {:>10.2} ms / {}",
        eval.ms(),
        per(&eval, "runs  ")
    );
    eprintln!(
        "gptq_perf:       total time = {:>10.2} ms / {:>6} tokens",
        total.as_secs_f64() * 1e3,
        prompt.n + eval.n
    );
}
