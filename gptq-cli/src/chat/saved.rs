//! Saved sessions (`/save FILE`, `/load FILE`): the running text and the
//! settings as JSON, read and written through typed records, so that a field
//! of the wrong type is an error that names it.
//!
//! ```json
//! {
//!   "format": "gptq-chat",
//!   "version": 1,
//!   "text": "Once upon a time",
//!   "starts_with_eos": true,
//!   "settings": { "temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
//!                 "repeat_penalty": 1.0, "repeat_last_n": 64,
//!                 "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": 42,
//!                 "n_predict": null, "ignore_eos": false, "newline": true,
//!                 "reverse_prompt": [] }
//! }
//! ```
//! A missing (or `null`) setting keeps its current value, except `n_predict`,
//! whose `null` means "until end of text" (`-n -1`). The logit bias (`-l`) is
//! not saved: it names token ids of one vocabulary, and JSON has no `-inf`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer, Serialize};

use super::settings::Settings;

/// The value of `"format"`.
const FORMAT: &str = "gptq-chat";
/// The version this build writes and reads.
const VERSION: u32 = 1;

/// A saved session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedChat {
    format: String,
    version: u32,
    /// The running text.
    pub text: String,
    /// The session began from no text: its tokens start with `<|endoftext|>`.
    #[serde(default)]
    pub starts_with_eos: bool,
    #[serde(default)]
    settings: SavedSettings,
}

/// The settings of a saved session; `None` keeps the current value.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSettings {
    temp: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<usize>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<u64>,
    /// Outer `None`: absent; `Some(None)`: `null`, until end of text.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    n_predict: Option<Option<usize>>,
    ignore_eos: Option<bool>,
    newline: Option<bool>,
    reverse_prompt: Option<Vec<String>>,
}

/// A field that is present, `null` or not, is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl SavedChat {
    /// A record of `text` and `settings`.
    pub fn new(text: &str, starts_with_eos: bool, settings: &Settings) -> SavedChat {
        let p = &settings.sampling;
        SavedChat {
            format: FORMAT.to_string(),
            version: VERSION,
            text: text.to_string(),
            starts_with_eos,
            settings: SavedSettings {
                temp: Some(p.temperature),
                top_k: Some(p.top_k),
                top_p: Some(p.top_p),
                min_p: Some(p.min_p),
                repeat_penalty: Some(p.repeat_penalty),
                repeat_last_n: Some(p.repeat_last_n),
                presence_penalty: Some(p.presence_penalty),
                frequency_penalty: Some(p.frequency_penalty),
                seed: Some(p.seed),
                n_predict: Some(settings.n_predict),
                ignore_eos: Some(settings.ignore_eos),
                newline: Some(settings.newline),
                reverse_prompt: Some(settings.reverse.clone()),
            },
        }
    }

    /// `current` with the saved settings applied over it.
    pub fn settings(&self, current: &Settings) -> Settings {
        let saved = &self.settings;
        let mut s = current.clone();
        let p = &mut s.sampling;
        p.temperature = saved.temp.unwrap_or(p.temperature);
        p.top_k = saved.top_k.unwrap_or(p.top_k);
        p.top_p = saved.top_p.unwrap_or(p.top_p);
        p.min_p = saved.min_p.unwrap_or(p.min_p);
        p.repeat_penalty = saved.repeat_penalty.unwrap_or(p.repeat_penalty);
        p.repeat_last_n = saved.repeat_last_n.unwrap_or(p.repeat_last_n);
        p.presence_penalty = saved.presence_penalty.unwrap_or(p.presence_penalty);
        p.frequency_penalty = saved.frequency_penalty.unwrap_or(p.frequency_penalty);
        p.seed = saved.seed.unwrap_or(p.seed);
        s.n_predict = saved.n_predict.unwrap_or(s.n_predict);
        s.ignore_eos = saved.ignore_eos.unwrap_or(s.ignore_eos);
        s.newline = saved.newline.unwrap_or(s.newline);
        if let Some(r) = &saved.reverse_prompt {
            s.reverse = r.iter().filter(|r| !r.is_empty()).cloned().collect();
        }
        s
    }

    /// Reads a file written by [`SavedChat::write`].
    pub fn read(path: &Path) -> Result<SavedChat> {
        let file = path.display();
        let raw = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&raw).with_context(|| format!("{file} is not JSON"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            bail!("{file} is not a file written by /save (its \"format\" is not \"{FORMAT}\")");
        }
        let saved: SavedChat =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&raw))
                .with_context(|| format!("{file}: not a session this gptq can load"))?;
        if saved.version != VERSION {
            bail!(
                "{file}: version {} of the saved-session format; this gptq reads version {VERSION}",
                saved.version
            );
        }
        Ok(saved)
    }

    /// Writes the record to `path` whole or not at all (through a temporary
    /// file beside it, renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let file = path.display();
        let json = serde_json::to_string_pretty(self)? + "\n";
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write {file}"))?;
        tmp.write_all(json.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {file}"))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {file}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gptq_core::sample::SamplerParams;

    use super::*;

    fn settings() -> Settings {
        Settings {
            sampling: SamplerParams::greedy(),
            n_predict: Some(8),
            ignore_eos: false,
            reverse: vec!["User:".into()],
            newline: true,
        }
    }

    fn load(json: &str) -> Result<SavedChat> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(&f, json).unwrap();
        SavedChat::read(&f)
    }

    #[test]
    fn round_trip() {
        let mut s = settings();
        s.sampling.temperature = 0.5;
        s.n_predict = None;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        SavedChat::new("Some text", true, &s).write(&f).unwrap();
        let back = SavedChat::read(&f).unwrap();
        assert_eq!(back.text, "Some text");
        assert!(back.starts_with_eos);
        assert_eq!(back.settings(&settings()), s);
        let raw = std::fs::read_to_string(&f).unwrap();
        assert!(raw.contains("\"n_predict\": null"), "{raw}");
        // Nothing else is left beside the file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_settings_keep_the_current_ones() {
        let saved = load(r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"temp": 0.25, "top_k": null}}"#).unwrap();
        let s = saved.settings(&settings());
        assert_eq!(s.sampling.temperature, 0.25);
        assert_eq!(s.sampling.top_k, settings().sampling.top_k);
        assert_eq!(s.n_predict, Some(8));
        assert!(!saved.starts_with_eos);
        let saved = load(r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"n_predict": null}}"#).unwrap();
        assert_eq!(saved.settings(&settings()).n_predict, None);
    }

    #[test]
    fn a_wrong_field_is_an_error_naming_it() {
        for (json, field) in [
            (
                r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"temp": "hot"}}"#,
                "settings.temp",
            ),
            (
                r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"top_k": -1}}"#,
                "settings.top_k",
            ),
            (
                r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"newline": "off"}}"#,
                "settings.newline",
            ),
            (
                r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"reverse_prompt": [1]}}"#,
                "settings.reverse_prompt",
            ),
            (
                r#"{"format": "gptq-chat", "version": 1, "text": 7}"#,
                "text",
            ),
            (
                r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"temperature": 1}}"#,
                "temperature",
            ),
            (r#"{"format": "gptq-chat", "version": 1}"#, "text"),
        ] {
            let e = format!("{:#}", load(json).unwrap_err());
            assert!(e.contains(field), "{field} not named in: {e}");
        }
        for (json, want) in [
            ("not json", "not JSON"),
            (r#"{"format": "other"}"#, "not a file written by /save"),
            (
                r#"{"format": "gptq-chat", "version": 2, "text": "x"}"#,
                "version 2",
            ),
        ] {
            let e = format!("{:#}", load(json).unwrap_err());
            assert!(e.contains(want), "{want} not in: {e}");
        }
    }
}
