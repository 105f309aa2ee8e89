//! What a turn runs with: the sampler's parameters and the turn's limits, set
//! from the flags and changed by `/set KEY VALUE`.

use anyhow::{Context, Result, bail};
use gptq_core::sample::SamplerParams;

use super::ChatArgs;

/// Settings a turn runs with; `/set` changes them, `/save` stores them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The sampler's parameters.
    pub sampling: SamplerParams,
    /// Tokens per turn; `None`: until end of text, a reverse prompt or a
    /// full context.
    pub n_predict: Option<usize>,
    /// Keep generating past `<|endoftext|>`.
    pub ignore_eos: bool,
    /// Reverse prompts (never empty strings).
    pub reverse: Vec<String>,
    /// End each input with a newline.
    pub newline: bool,
}

/// The keys `/set` knows, for its error message and `/help`.
pub const KEYS: &str = "temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n, presence-penalty, frequency-penalty, seed, n, ignore-eos, newline, reverse-prompt";

impl Settings {
    /// The settings the flags ask for, in a context of `n_ctx` tokens and a
    /// vocabulary of `n_vocab`.
    pub fn from_args(args: &ChatArgs, n_ctx: usize, n_vocab: usize) -> Result<Settings> {
        Ok(Settings {
            sampling: args.sampling.params(n_ctx, n_vocab)?,
            n_predict: usize::try_from(args.generation.n_predict).ok(),
            ignore_eos: args.generation.ignore_eos,
            reverse: args
                .session
                .reverse_prompt
                .iter()
                .filter(|r| !r.is_empty())
                .cloned()
                .collect(),
            newline: !args.session.no_newline,
        })
    }

    /// These settings with `/set KEY VALUE` applied (`-1` for repeat-last-n
    /// means the whole context of `n_ctx` tokens). The sampler checks the
    /// sampling values when they are applied.
    pub fn with(&self, key: &str, value: &str, n_ctx: usize) -> Result<Settings> {
        let key = key.replace('_', "-");
        let mut s = self.clone();
        match key.as_str() {
            "temp" | "temperature" => s.sampling.temperature = number(value)?,
            "top-k" => s.sampling.top_k = usize::try_from(int(value)?).context("top-k >= 0")?,
            "top-p" => s.sampling.top_p = number(value)?,
            "min-p" => s.sampling.min_p = number(value)?,
            "repeat-penalty" => s.sampling.repeat_penalty = number(value)?,
            "presence-penalty" => s.sampling.presence_penalty = number(value)?,
            "frequency-penalty" => s.sampling.frequency_penalty = number(value)?,
            "repeat-last-n" => {
                s.sampling.repeat_last_n = match int(value)? {
                    -1 => n_ctx,
                    n => usize::try_from(n).context("repeat-last-n must be >= 0 or -1")?,
                }
            }
            "seed" | "s" => {
                s.sampling.seed = u64::try_from(int(value)?).context("the seed must be >= 0")?
            }
            "n" | "n-predict" => s.n_predict = usize::try_from(int(value)?).ok(),
            "ignore-eos" => s.ignore_eos = flag(value)?,
            "newline" => s.newline = flag(value)?,
            "reverse-prompt" | "r" => {
                s.reverse = if value.is_empty() {
                    Vec::new()
                } else {
                    vec![value.to_string()]
                }
            }
            _ => bail!("unknown setting '{key}' ({KEYS})"),
        }
        Ok(s)
    }

    /// The lines of `/show` about the settings.
    pub fn describe(&self) -> String {
        let p = &self.sampling;
        let n = self.n_predict.map_or(
            "-1 (until end of text or a full context)".to_string(),
            |n| n.to_string(),
        );
        format!(
            "sampling: temp {} | top-k {} | top-p {} | min-p {} | repeat-penalty {} | repeat-last-n {} | presence-penalty {} | frequency-penalty {} | logit-bias {:?} | seed {}\n\
             turn: n {n} | ignore-eos {} | newline {} | reverse-prompt {:?}",
            p.temperature,
            p.top_k,
            p.top_p,
            p.min_p,
            p.repeat_penalty,
            p.repeat_last_n,
            p.presence_penalty,
            p.frequency_penalty,
            p.logit_bias,
            p.seed,
            self.ignore_eos,
            if self.newline { "on" } else { "off" },
            self.reverse,
        )
    }
}

fn number(v: &str) -> Result<f32> {
    v.parse::<f32>()
        .with_context(|| format!("'{v}' is not a number"))
}

fn int(v: &str) -> Result<i64> {
    v.parse::<i64>()
        .with_context(|| format!("'{v}' is not a whole number"))
}

fn flag(v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => bail!("'{v}' is not on or off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            sampling: SamplerParams::greedy(),
            n_predict: Some(8),
            ignore_eos: false,
            reverse: Vec::new(),
            newline: true,
        }
    }

    #[test]
    fn set_parses_each_kind_of_value() {
        let s = settings();
        assert_eq!(
            s.with("temp", "0.5", 256).unwrap().sampling.temperature,
            0.5
        );
        assert_eq!(s.with("top_k", "7", 256).unwrap().sampling.top_k, 7);
        assert_eq!(
            s.with("repeat-last-n", "-1", 256)
                .unwrap()
                .sampling
                .repeat_last_n,
            256
        );
        assert_eq!(s.with("n", "-1", 256).unwrap().n_predict, None);
        assert_eq!(s.with("n", "12", 256).unwrap().n_predict, Some(12));
        assert!(!s.with("newline", "off", 256).unwrap().newline);
        assert_eq!(s.with("r", "User:", 256).unwrap().reverse, ["User:"]);
        assert!(s.with("r", "", 256).unwrap().reverse.is_empty());
        for (k, v) in [
            ("temp", "hot"),
            ("top-k", "-2"),
            ("seed", "-1"),
            ("newline", "maybe"),
            ("bogus", "1"),
        ] {
            let e = s.with(k, v, 256).unwrap_err();
            assert!(!format!("{e:#}").is_empty(), "{k} {v}");
        }
    }
}
