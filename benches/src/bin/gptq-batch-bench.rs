//! `gptq-batch-bench`: aggregate decode throughput of [`Batch`] steps for
//! several session counts, without the server around them (no HTTP, no
//! sampling beyond greedy argmax), beside the same file's solo decode
//! (`Session::step`), which the one-session batch step should match.
//!
//! ```text
//! gptq-batch-bench MODEL.gguf [STEPS] [SESSIONS...]   # default 64 steps, 1 2 4 8 16
//! ```
//! Threads: `RAYON_NUM_THREADS`; kernel path: `GPTQ_KERNEL`. Each session
//! first reads its own 16-token prompt (not timed); then every step decodes
//! one token for every session. Reported per session count: steps/s and
//! tokens/s over all sessions.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use gptq_core::{Batch, BatchParams, Model, Session, SessionParams};

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn run(path: &str, steps: usize, counts: &[usize]) -> gptq_core::Result<()> {
    let model = Arc::new(Model::load(path)?);
    let max = counts.iter().copied().max().unwrap_or(1);
    let params = SessionParams {
        n_ctx: 512,
        ..SessionParams::default()
    };
    let prompt =
        |i: usize| -> Vec<u32> { (0..16).map(|j| (1000 + 37 * i + 11 * j) as u32).collect() };
    // Solo decode, as `gptq bench` runs it.
    {
        let mut s = Session::new(Arc::clone(&model), params.clone())?;
        let mut next = argmax(s.feed(&prompt(0))?);
        let t = Instant::now();
        for _ in 0..steps {
            next = argmax(s.step(next)?);
        }
        let dt = t.elapsed().as_secs_f64();
        println!("solo      1 sessions: {:7.1} tokens/s", steps as f64 / dt);
    }
    let mut batch = Batch::new(
        Arc::clone(&model),
        BatchParams {
            max_seqs: max,
            max_tokens: max.max(16),
            n_ctx: 512,
        },
    )?;
    for &n in counts {
        let mut sessions: Vec<Session> = (0..n)
            .map(|_| Session::new(Arc::clone(&model), params.clone()))
            .collect::<gptq_core::Result<_>>()?;
        let mut next: Vec<u32> = Vec::with_capacity(n);
        for (i, s) in sessions.iter_mut().enumerate() {
            next.push(argmax(s.feed(&prompt(i))?));
        }
        let t = Instant::now();
        for _ in 0..steps {
            let mut items: Vec<(&mut Session, &[u32])> = sessions
                .iter_mut()
                .zip(&next)
                .map(|(s, t)| (s, std::slice::from_ref(t)))
                .collect();
            batch.eval(&mut items)?;
            drop(items);
            for (s, t) in sessions.iter().zip(next.iter_mut()) {
                *t = argmax(s.logits().expect("logits after a step"));
            }
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "batch {n:5} sessions: {:7.1} tokens/s ({:.1} steps/s)",
            (n * steps) as f64 / dt,
            steps as f64 / dt
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: gptq-batch-bench MODEL.gguf [STEPS] [SESSIONS...]");
        return ExitCode::FAILURE;
    };
    let steps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let mut counts: Vec<usize> = args.iter().skip(2).filter_map(|s| s.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![1, 2, 4, 8, 16];
    }
    match run(path, steps, &counts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gptq-batch-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
