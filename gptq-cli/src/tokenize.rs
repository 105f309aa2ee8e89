//! `gptq tokenize`: the token ids of a text.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use crate::args::{ModelArgs, PromptArgs};
use crate::load;

/// Flags of `gptq tokenize`.
#[derive(Debug, Clone, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Treat control-token text such as <|endoftext|> as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
}

/// Runs `gptq tokenize`: prints the ids on one line, comma-separated.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    // Written with `?`, not println!, so a closed pipe (`| head`) ends the
    // command quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    if args.model.repack {
        anyhow::bail!("--repack: tokenize runs no model products, so there is nothing to repack");
    }
    let loaded = load::load(&args.model)?;
    let tok = loaded.model.tokenizer();
    let text = args.prompt.text()?.unwrap_or_default();
    let ids = if args.no_parse_special {
        tok.encode(&text)
    } else {
        tok.encode_with_special(&text)
    };
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    writeln!(out, "{}", ids.join(","))?;
    Ok(())
}
