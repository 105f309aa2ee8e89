//! Command-line flags shared by the subcommands (llama.cpp's names).

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
    /// How many recent tokens the penalty looks at (0 = off, -1 = the context).
    #[arg(
        long = "repeat-last-n",
        value_name = "N",
        default_value_t = 64,
        allow_hyphen_values = true
    )]
    pub repeat_last_n: i64,
    /// Random seed (-1 = random).
    #[arg(short = 's', long = "seed", value_name = "SEED", default_value_t = -1, allow_hyphen_values = true)]
    pub seed: i64,
}

impl SamplingArgs {
    /// The sampler parameters, with a random seed drawn when `-s` is -1.
    pub fn params(&self, n_ctx: usize) -> Result<SamplerParams> {
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
        Ok(SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            seed,
        })
    }
}

fn random_seed() -> u64 {
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
