//! `gptq complete`: one prompt, one streamed continuation.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use gptq_core::sample::Sampler;
use gptq_core::tokenizer::DecodeStream;

use crate::args::{ModelArgs, PromptArgs, SamplingArgs};
use crate::load;
use crate::timing::{Phase, print_summary};

/// Flags of `gptq complete`.
#[derive(Debug, Clone, Args)]
pub struct CompleteArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Tokens to generate (-1 = until end of text or the context is full).
    #[arg(short = 'n', long = "n-predict", value_name = "N", default_value_t = -1, allow_hyphen_values = true)]
    pub n_predict: i64,
    /// Keep generating past <|endoftext|>.
    #[arg(long)]
    pub ignore_eos: bool,
    /// After the text, print one line with the generated token ids, comma-separated.
    #[arg(long)]
    pub print_ids: bool,
    /// Print the prompt before the continuation.
    #[arg(long)]
    pub display_prompt: bool,
    /// Interactive session (the same as `gptq chat`): you extend the text,
    /// the model continues it, the KV cache is kept between turns.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Stop generating when the text reaches this string and hand it back to
    /// you as the next line's prefix (may be repeated).
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    pub reverse_prompt: Vec<String>,
    /// When to colour the interactive prompt.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: ColorWhen,
    /// Interactive: file of the line-editing history (default: gptq/history
    /// in the user's data folder).
    #[arg(long, value_name = "FILE")]
    pub history_file: Option<std::path::PathBuf>,
    /// Interactive: do not end each input with a newline (the model then
    /// continues your line).
    #[arg(long)]
    pub no_newline: bool,
}

/// When to use colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Runs `gptq complete`.
pub fn run(args: &CompleteArgs) -> Result<()> {
    if args.interactive {
        return crate::chat::run(args);
    }
    let t0 = Instant::now();
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let tok = model.tokenizer();
    let mut session = load::session(model, &args.model, 1)?;
    let n_ctx = session.n_ctx();
    let params = args.sampling.params(n_ctx)?;
    if args.model.verbose {
        eprintln!("gptq: seed {}", params.seed);
    }
    let mut sampler = Sampler::new(params)?;

    let text = args.prompt.text()?.unwrap_or_default();
    let mut prompt = tok.encode_with_special(&text);
    if prompt.is_empty() {
        // GPT-2 needs one token to condition on: start from <|endoftext|>.
        prompt.push(tok.bos().or(tok.eos()).unwrap_or(0));
    }
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt is {} tokens, which leaves no room in the context of {n_ctx} tokens (shorten it, or raise -c up to the model's {})",
            prompt.len(),
            model.hparams().n_ctx
        );
    }
    let n_predict = match args.n_predict {
        n if n < 0 => usize::MAX,
        n => n as usize,
    };

    let mut out = std::io::stdout().lock();
    if args.display_prompt {
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    let mut prompt_phase = Phase::default();
    let mut eval = Phase::default();
    let mut sample = Phase::default();

    let t = Instant::now();
    session.feed(&prompt)?;
    prompt_phase.time = t.elapsed();
    prompt_phase.n = prompt.len();

    let mut stream = DecodeStream::new();
    let mut piece = String::new();
    let mut generated = Vec::new();
    let eos = tok.eos();
    while generated.len() < n_predict {
        let t = Instant::now();
        let logits = session.logits().expect("logits after a feed");
        let id = sampler.sample(logits, session.tokens())?;
        sample.time += t.elapsed();
        sample.n += 1;
        if Some(id) == eos && !args.ignore_eos {
            break;
        }
        generated.push(id);
        piece.clear();
        stream.push(tok, id, &mut piece)?;
        if !piece.is_empty() {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        if generated.len() == n_predict {
            break;
        }
        if session.remaining() == 0 {
            eprintln!("\ngptq: context full ({n_ctx} tokens), stopping");
            break;
        }
        let t = Instant::now();
        session.step(id)?;
        eval.time += t.elapsed();
        eval.n += 1;
    }
    piece.clear();
    stream.flush(&mut piece);
    out.write_all(piece.as_bytes())?;
    if args.print_ids {
        let ids: Vec<String> = generated.iter().map(u32::to_string).collect();
        writeln!(out)?;
        writeln!(out, "{}", ids.join(","))?;
    } else {
        writeln!(out)?;
    }
    out.flush()?;
    eprintln!();
    print_summary(loaded.load_time, prompt_phase, eval, sample, t0.elapsed());
    Ok(())
}
