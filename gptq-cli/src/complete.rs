//! `gptq complete`: one prompt, one streamed continuation.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use gptq_core::sample::Sampler;
use gptq_core::tokenizer::DecodeStream;

use crate::args::{GenerationArgs, InteractiveArgs, ModelArgs, PromptArgs, SamplingArgs};
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
    #[command(flatten)]
    pub generation: GenerationArgs,
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
    #[command(flatten, next_help_heading = "Interactive session (-i)")]
    pub session: InteractiveArgs,
}

impl CompleteArgs {
    /// The flags given that only a one-shot completion uses.
    pub fn completion_flags_given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.print_ids {
            given.push("--print-ids");
        }
        if self.display_prompt {
            given.push("--display-prompt");
        }
        given
    }
}

/// Runs `gptq complete`.
pub fn run(args: &CompleteArgs) -> Result<()> {
    debug_assert!(!args.interactive, "main routes -i to the chat");
    let t0 = Instant::now();
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let tok = model.tokenizer();
    let mut session = load::session(model, &args.model, 1)?;
    let n_ctx = session.n_ctx();
    let params = args.sampling.params(n_ctx, model.hparams().n_vocab)?;
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
    let n_predict = match args.generation.n_predict {
        n if n < 0 => usize::MAX,
        n => n as usize,
    };

    // The prompt and every decode step run on the pool, where the steps
    // hand nothing across threads (`gptq_core::on_pool`).
    let (prompt_phase, eval, sample) = gptq_core::on_pool(|| -> Result<(Phase, Phase, Phase)> {
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
            if Some(id) == eos && !args.generation.ignore_eos {
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
        Ok((prompt_phase, eval, sample))
    })?;
    eprintln!();
    print_summary(loaded.load_time, prompt_phase, eval, sample, t0.elapsed());
    Ok(())
}
