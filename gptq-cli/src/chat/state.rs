//! The state of a session: the running text, the session that has evaluated
//! it, the sampler and the settings, and what `/show`, `/stats`, `/save` and
//! `/load` make of them. Turns are in [`super::turn`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use gptq_core::sample::Sampler;
use gptq_core::{Model, Session};

use super::saved::SavedChat;
use super::settings::Settings;
use crate::timing::Phase;

/// Figures of the last turn.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurnStats {
    /// Tokens evaluated before generating (new text, and any re-evaluated).
    pub prompt: Phase,
    /// Of those, tokens that had been in the cache but had to be redone.
    pub reevaluated: usize,
    /// Generated tokens and the time from the first sample to the end.
    pub generation: Phase,
    /// From Enter to the first streamed piece.
    pub first_token: Option<Duration>,
}

/// The running text, the session that has evaluated it, and the sampler.
pub struct Chat {
    pub(super) model: Arc<Model>,
    pub(super) session: Session,
    pub(super) sampler: Sampler,
    pub(super) settings: Settings,
    /// Everything the person typed and the model wrote.
    pub(super) text: String,
    /// The session began from no text, so its tokens start with <|endoftext|>.
    pub(super) eos_prefix: bool,
    /// For /regen: the length of the text before the last answer.
    pub(super) last_turn: Option<usize>,
    pub(super) stats: TurnStats,
    pub(super) verbose: bool,
}

impl Chat {
    /// A session with no text yet.
    pub fn new(
        model: Arc<Model>,
        session: Session,
        settings: Settings,
        verbose: bool,
    ) -> Result<Chat> {
        let sampler = Sampler::new(settings.sampling.clone())?;
        Ok(Chat {
            model,
            session,
            sampler,
            settings,
            text: String::new(),
            eos_prefix: false,
            last_turn: None,
            stats: TurnStats::default(),
            verbose,
        })
    }

    /// Clears the text and the cache.
    pub fn reset(&mut self) {
        self.text.clear();
        self.eos_prefix = false;
        self.session.reset();
        self.last_turn = None;
    }

    /// Applies `/set KEY VALUE`; a rejected value changes nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let s = self.settings.with(key, value, self.session.n_ctx())?;
        self.sampler.set_params(s.sampling.clone())?;
        self.settings = s;
        Ok(())
    }

    /// `/show`: settings, model, kernel path, context used.
    pub fn show(&self) -> String {
        let hp = self.model.hparams();
        format!(
            "{}\n\
             model: {} ({}) | n_vocab {} | n_ctx {} | n_embd {} | n_head {} | n_layer {} | n_ff {}\n\
             kernel path: {} | threads {}\n\
             context: {} of {} tokens used | text {} characters",
            self.settings.describe(),
            self.model.name().unwrap_or("unnamed"),
            self.model.path().display(),
            hp.n_vocab,
            hp.n_ctx,
            hp.n_embd,
            hp.n_head,
            hp.n_layer,
            hp.n_ff,
            self.model.kernels().describe(),
            rayon::current_num_threads(),
            self.session.len(),
            self.session.n_ctx(),
            self.text.chars().count(),
        )
    }

    /// The one line of speeds printed after each turn.
    pub fn stats_line(&self) -> String {
        let tps = |p: &Phase| {
            if p.n == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", p.tps())
            }
        };
        format!(
            "[ prompt: {} t/s | generation: {} t/s ]",
            tps(&self.stats.prompt),
            tps(&self.stats.generation)
        )
    }

    /// `/stats`: the last turn in detail.
    pub fn stats_report(&self) -> String {
        let s = &self.stats;
        let first = s.first_token.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        });
        format!(
            "last turn: prompt {} tokens in {:.1} ms ({:.1} t/s; {} re-evaluated) | first token {first} after Enter | generation {} tokens in {:.1} ms ({:.1} t/s)\ncontext: {} of {} tokens used",
            s.prompt.n,
            s.prompt.ms(),
            s.prompt.tps(),
            s.reevaluated,
            s.generation.n,
            s.generation.ms(),
            s.generation.tps(),
            self.session.len(),
            self.session.n_ctx()
        )
    }

    /// `/save FILE`.
    pub fn save(&self, path: &Path) -> Result<()> {
        SavedChat::new(&self.text, self.eos_prefix, &self.settings).write(path)
    }

    /// `/load FILE`: the text and settings replace the current ones, which
    /// stay as they were when the file cannot be loaded. The text is
    /// evaluated on the next turn.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let saved = SavedChat::read(path)?;
        let s = saved.settings(&self.settings);
        self.sampler
            .set_params(s.sampling.clone())
            .with_context(|| format!("{}: settings", path.display()))?;
        // Restart the random sequence so that a loaded file replays.
        self.sampler.reseed(s.sampling.seed);
        self.settings = s;
        self.reset();
        self.text = saved.text;
        self.eos_prefix = saved.starts_with_eos;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use gptq_core::SamplerParams;

    use super::*;

    /// A session on the default model: greedy, 8 tokens a turn.
    pub fn chat() -> Chat {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/trained-small-q8_0.gguf");
        let model = Arc::new(Model::load(path).unwrap());
        let session = Session::new(Arc::clone(&model), Default::default()).unwrap();
        let settings = Settings {
            sampling: SamplerParams::greedy(),
            n_predict: Some(8),
            ignore_eos: true,
            reverse: Vec::new(),
            newline: true,
        };
        Chat::new(model, session, settings, false).unwrap()
    }

    #[test]
    fn set_and_save_load_round_trip() {
        let mut c = chat();
        c.set("temp", "0.5").unwrap();
        c.set("top_k", "7").unwrap();
        c.set("n", "-1").unwrap();
        c.set("newline", "off").unwrap();
        assert!(c.set("temp", "hot").is_err());
        assert!(c.set("top-p", "0").is_err(), "validated by the sampler");
        assert_eq!(
            c.settings.sampling.top_p, 0.95,
            "a rejected value changes nothing"
        );
        assert!(c.set("bogus", "1").is_err());
        c.text = "Some text".into();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        c.save(&f).unwrap();
        let mut d = chat();
        d.load(&f).unwrap();
        assert_eq!(d.text, "Some text");
        assert_eq!(d.settings, c.settings);
        assert!(d.load(Path::new("/nonexistent/file.json")).is_err());
    }

    #[test]
    fn a_file_that_cannot_be_loaded_changes_nothing() {
        let mut c = chat();
        c.text = "Kept".into();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        for json in [
            r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"temp": "hot"}}"#,
            r#"{"format": "gptq-chat", "version": 1, "text": "x", "settings": {"top_p": 0}}"#,
        ] {
            std::fs::write(&f, json).unwrap();
            let e = format!("{:#}", c.load(&f).unwrap_err());
            assert!(e.contains("s.json"), "{e}");
            assert_eq!(c.text, "Kept");
            assert_eq!(c.settings, chat().settings);
        }
    }
}
