//! `gptq perplexity`: llama-perplexity's method and output.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use gptq_core::perplexity::perplexity;

use crate::args::ModelArgs;
use crate::load;

/// Flags of `gptq perplexity`.
#[derive(Debug, Clone, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON object {"ppl", "tokens", "chunks"} on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gptq perplexity`.
pub fn run(args: &PerplexityArgs) -> Result<()> {
    // Written with `?`, not println!, so a closed pipe (`| head`) ends the
    // command quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let t = Instant::now();
    let tokens = model.tokenizer().encode(&text);
    let n_ctx = match args.model.ctx_size {
        0 => model.hparams().n_ctx,
        c => c,
    };
    eprintln!(
        "gptq: tokenized {} in {:.0} ms: {} tokens; {} chunks of {n_ctx}",
        args.file.display(),
        t.elapsed().as_secs_f64() * 1e3,
        tokens.len(),
        tokens.len() / n_ctx
    );
    let t = Instant::now();
    let mut err = std::io::stderr();
    let r = perplexity(model, &tokens, n_ctx, |c, ppl| {
        let _ = write!(err, "[{}]{ppl:.4},", c + 1);
        let _ = err.flush();
    })?;
    eprintln!();
    eprintln!(
        "gptq: {} tokens scored in {:.2} s ({:.1} tokens/s evaluated)",
        r.tokens,
        t.elapsed().as_secs_f64(),
        (r.chunks * n_ctx) as f64 / t.elapsed().as_secs_f64()
    );
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"ppl": r.ppl, "tokens": r.tokens, "chunks": r.chunks})
        )?;
    } else {
        writeln!(
            out,
            "Final estimate: PPL = {:.4} +/- {:.5}",
            r.ppl, r.ppl_err
        )?;
    }
    Ok(())
}
