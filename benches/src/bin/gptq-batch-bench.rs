//! `gptq-batch-bench`: aggregate decode throughput of [`Batch`] steps for
//! several session counts, without the server around them (no HTTP, no
//! sampling beyond greedy argmax), beside the same file's solo decode
//! (`Session::step`), which the one-session batch step should match.
//!
//! ```text
//! gptq-batch-bench [--prompt N] [--cache-type f32|f16] MODEL.gguf [STEPS] [SESSIONS...]
//! # default: 16-token prompts, f32 cache, 64 steps, 1 2 4 8 16 sessions
//! ```
//! Threads: `RAYON_NUM_THREADS`; kernel path: `GPTQ_KERNEL`. Each session
//! first reads its own `N`-token prompt (not timed); then every step decodes
//! one token for every session, so the caches are `N` to `N + STEPS` deep
//! (`--prompt 137` gives the depths of `benches/serve_load.py`'s requests).
//! Reported per session count: steps/s and tokens/s over all sessions.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use gptq_core::{Batch, BatchParams, KvType, Model, Session, SessionParams};

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// What to run.
struct Args {
    path: String,
    steps: usize,
    counts: Vec<usize>,
    prompt: usize,
    kv_type: KvType,
}

fn run(args: &Args) -> gptq_core::Result<()> {
    let (steps, counts) = (args.steps, &args.counts);
    let model = Arc::new(Model::load(&args.path)?);
    let max = counts.iter().copied().max().unwrap_or(1);
    let n_ctx = (args.prompt + steps + 1).max(512);
    let params = SessionParams {
        n_ctx,
        kv_type: args.kv_type,
        ..SessionParams::default()
    };
    let prompt = |i: usize| -> Vec<u32> {
        (0..args.prompt)
            .map(|j| (1000 + 37 * i + 11 * j) as u32)
            .collect()
    };
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
            max_tokens: max.max(args.prompt),
            n_ctx,
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

/// A count of 1 or more.
fn number(s: String) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or(format!("{s:?} is not a count of 1 or more"))
}

/// The command line, or what is wrong with it.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut prompt, mut kv_type, mut rest) = (16, KvType::F32, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--prompt" => {
                let v = args.next().ok_or("--prompt needs a token count")?;
                prompt = number(v).map_err(|e| format!("--prompt: {e}"))?;
            }
            "--cache-type" => {
                kv_type = match args.next().as_deref() {
                    Some("f32") => KvType::F32,
                    Some("f16") => KvType::F16,
                    v => return Err(format!("--cache-type: {v:?} is not f32 or f16")),
                }
            }
            f if f.starts_with("--") => return Err(format!("unknown flag {f}")),
            _ => rest.push(a),
        }
    }
    let mut rest = rest.into_iter();
    let path = rest.next().ok_or("no model file")?;
    let steps = rest.next().map(number).transpose()?.unwrap_or(64);
    let mut counts = rest.map(number).collect::<Result<Vec<_>, _>>()?;
    if counts.is_empty() {
        counts = vec![1, 2, 4, 8, 16];
    }
    Ok(Args {
        path,
        steps,
        counts,
        prompt,
        kv_type,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gptq-batch-bench: error: {e}");
            eprintln!(
                "usage: gptq-batch-bench [--prompt N] [--cache-type f32|f16] MODEL.gguf [STEPS] [SESSIONS...]"
            );
            return ExitCode::FAILURE;
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gptq-batch-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
