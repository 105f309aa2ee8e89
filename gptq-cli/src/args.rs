//! Command-line flags shared by the subcommands (llama.cpp's names), in groups
//! that each subcommand flattens into its own flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gptq_core::KvType;
use gptq_core::sample::SamplerParams;

/// Which model and how to run it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file (default: the model in models/).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Threads for the matrix products (default: all cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Context size in tokens (0 = the model's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 0)]
    pub ctx_size: usize,
    /// Most tokens evaluated in one forward pass [default: 256; for bench,
    /// the prompt length].
    #[arg(short = 'b', long = "batch-size", value_name = "N")]
    pub batch_size: Option<usize>,
    /// KV cache type for keys and values.
    #[arg(
        long = "cache-type",
        visible_alias = "ctk",
        value_enum,
        default_value = "f32"
    )]
    pub cache_type: CacheType,
    /// Keep each prefill product's repacked weights between calls instead of
    /// repacking them per call (like ik_llama.cpp's -rtr): faster prompts for
    /// the memory of the repacked copies (x86-64 AVX2/AVX-512 kernels).
    #[arg(long = "repack", visible_alias = "rtr")]
    pub repack: bool,
    /// Print the kernel path and model details on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// KV cache element type.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CacheType {
    /// 32-bit floats.
    F32,
    /// Half floats (half the memory).
    F16,
}

impl From<CacheType> for KvType {
    fn from(c: CacheType) -> KvType {
        match c {
            CacheType::F32 => KvType::F32,
            CacheType::F16 => KvType::F16,
        }
    }
}

/// Sampling flags.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", value_name = "T", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k sampling (0 = off).
    #[arg(long = "top-k", value_name = "N", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) sampling (1.0 = off).
    #[arg(long = "top-p", value_name = "P", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p sampling (0.0 = off).
    #[arg(long = "min-p", value_name = "P", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for repeating recent tokens (1.0 = off).
    #[arg(long = "repeat-penalty", value_name = "P", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0 = off, -1 = the context).
    #[arg(
        long = "repeat-last-n",
        value_name = "N",
        default_value_t = 64,
        allow_hyphen_values = true
    )]
    pub repeat_last_n: i64,
    /// Lower the logit of each recently seen token by P, once (0.0 = off).
    #[arg(
        long = "presence-penalty",
        value_name = "P",
        default_value_t = 0.0,
        allow_hyphen_values = true
    )]
    pub presence_penalty: f32,
    /// Lower the logit of each recently seen token by P times its count (0.0 = off).
    #[arg(
        long = "frequency-penalty",
        value_name = "P",
        default_value_t = 0.0,
        allow_hyphen_values = true
    )]
    pub frequency_penalty: f32,
    /// Add BIAS to the logit of token ID, as `ID+BIAS` or `ID-BIAS`
    /// (`ID-inf` bans it); repeatable.
    #[arg(
        short = 'l',
        long = "logit-bias",
        value_name = "ID(+|-)BIAS",
        value_parser = parse_logit_bias
    )]
    pub logit_bias: Vec<(u32, f32)>,
    /// Random seed (-1 = random).
    #[arg(short = 's', long = "seed", value_name = "SEED", default_value_t = -1, allow_hyphen_values = true)]
    pub seed: i64,
}

/// llama.cpp's `--logit-bias` value: a token id, then its signed bias.
fn parse_logit_bias(v: &str) -> std::result::Result<(u32, f32), String> {
    let bad = || format!("'{v}' is not ID+BIAS or ID-BIAS (e.g. 15043+1.5, 50256-inf)");
    let at = v.find(['+', '-']).ok_or_else(bad)?;
    let id = v[..at].parse::<u32>().map_err(|_| bad())?;
    let bias = v[at..].parse::<f32>().map_err(|_| bad())?;
    if bias.is_nan() || bias == f32::INFINITY {
        return Err(format!("the bias in '{v}' must be a number or -inf"));
    }
    Ok((id, bias))
}

impl SamplingArgs {
    /// The sampler parameters for a model of `n_vocab` tokens, with a random
    /// seed drawn when `-s` is -1.
    pub fn params(&self, n_ctx: usize, n_vocab: usize) -> Result<SamplerParams> {
        let seed = match self.seed {
            -1 => random_seed(),
            s if s >= 0 => s as u64,
            s => bail!("invalid seed {s}: use a non-negative number, or -1 for a random one"),
        };
        let repeat_last_n = match self.repeat_last_n {
            -1 => n_ctx,
            n if n >= 0 => n as usize,
            n => bail!(
                "invalid --repeat-last-n {n}: use a non-negative number, or -1 for the whole context"
            ),
        };
        if repeat_last_n == 0 {
            for (flag, on) in [
                ("--repeat-penalty", self.repeat_penalty != 1.0),
                ("--presence-penalty", self.presence_penalty != 0.0),
                ("--frequency-penalty", self.frequency_penalty != 0.0),
            ] {
                if on {
                    bail!(
                        "{flag} would do nothing with --repeat-last-n 0, which turns the penalties off"
                    );
                }
            }
        }
        if let Some(&(id, _)) = self
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= n_vocab)
        {
            bail!("--logit-bias for token {id}, outside the model's vocabulary of {n_vocab}");
        }
        Ok(SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            seed,
        })
    }
}

/// A seed drawn at random (for `-s -1` and for a server request that gave
/// none).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mix in the time for good measure.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() >> 1
}

/// The prompt: `-p TEXT` or `-f FILE`.
#[derive(Debug, Clone, Args)]
pub struct PromptArgs {
    /// Prompt text.
    #[arg(short = 'p', long = "prompt", value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "prompt"
    )]
    pub file: Option<PathBuf>,
}

impl PromptArgs {
    /// The prompt text, if one was given.
    pub fn text(&self) -> Result<Option<String>> {
        if let Some(p) = &self.prompt {
            return Ok(Some(p.clone()));
        }
        if let Some(f) = &self.file {
            return std::fs::read_to_string(f)
                .map(Some)
                .with_context(|| format!("cannot read prompt file {}", f.display()));
        }
        Ok(None)
    }
}

/// How much a completion (or a turn of a session) generates.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// Tokens to generate, per turn in an interactive session (-1 = until end
    /// of text or the context is full).
    #[arg(short = 'n', long = "n-predict", value_name = "N", default_value_t = -1, allow_hyphen_values = true)]
    pub n_predict: i64,
    /// Keep generating past <|endoftext|>.
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Flags of an interactive session (`gptq chat`, `gptq complete -i`); they do
/// nothing elsewhere, so the other modes refuse them.
#[derive(Debug, Clone, Default, Args)]
pub struct InteractiveArgs {
    /// Stop generating when the text reaches this string and hand it back to
    /// you as the next line's prefix (may be repeated).
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    pub reverse_prompt: Vec<String>,
    /// When to colour the prompt [default: auto: when stdout is a terminal
    /// and NO_COLOR is not set].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub color: Option<ColorWhen>,
    /// File of the line-editing history (default: gptq/history in the user's
    /// data folder).
    #[arg(long, value_name = "FILE")]
    pub history_file: Option<PathBuf>,
    /// Do not end each input with a newline (the model then continues your
    /// line).
    #[arg(long)]
    pub no_newline: bool,
}

impl InteractiveArgs {
    /// The flags given that need a person at a terminal (the line editor's).
    pub fn terminal_flags_given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.color.is_some() {
            given.push("--color");
        }
        if self.history_file.is_some() {
            given.push("--history-file");
        }
        if self.no_newline {
            given.push("--no-newline");
        }
        given
    }

    /// Every flag of this group that was given.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if !self.reverse_prompt.is_empty() {
            given.push("-r/--reverse-prompt");
        }
        given.extend(self.terminal_flags_given());
        given
    }
}

/// When to use colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}
