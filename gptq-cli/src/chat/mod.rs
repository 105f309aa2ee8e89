//! `gptq chat` / `gptq complete -i`: an interactive running text that the
//! person extends and the model continues, with the KV cache kept between
//! turns.
//!
//! - [`state`] holds the running text, session, sampler and settings;
//!   [`turn`] runs one turn (sync the session to the text, generate);
//! - [`terminal`] is the loop at a terminal ([`editor`] reads inputs,
//!   [`command`] parses them); [`piped`] serves stdin that is not a terminal;
//! - [`settings`] and `/set`; [`saved`] is `/save` and `/load`;
//! - [`interrupt`] handles Ctrl-C.

mod command;
mod editor;
mod interrupt;
mod output;
mod piped;
mod saved;
mod settings;
mod state;
mod terminal;
mod turn;

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use crate::args::{
    ColorWhen, GenerationArgs, InteractiveArgs, ModelArgs, PromptArgs, SamplingArgs,
};
use crate::load;

use self::editor::LineEditor;
use self::settings::Settings;
use self::state::Chat;

/// Flags of `gptq chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub session: InteractiveArgs,
}

/// Runs `gptq chat` (or `gptq complete -i`).
pub fn run(args: &ChatArgs) -> Result<()> {
    let loaded = load::load(&args.model)?;
    let session = load::session(&loaded.model, &args.model, 1)?;
    let settings = Settings::from_args(args, session.n_ctx(), loaded.model.hparams().n_vocab)?;
    if args.model.verbose {
        eprintln!("gptq: seed {}", settings.sampling.seed);
    }
    let mut chat = Chat::new(
        Arc::clone(&loaded.model),
        session,
        settings,
        args.model.verbose,
    )?;
    let initial = args.prompt.text()?;

    if !std::io::stdin().is_terminal() {
        interrupt::install(&chat.session)?;
        return piped::run(&mut chat, initial);
    }
    let color = match args.session.color.unwrap_or(ColorWhen::Auto) {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let history = editor::history_path(args.session.history_file.as_ref());
    let mut editor = LineEditor::new(history, color)?;
    // After the editor: it installs a SIGINT handler of its own when created,
    // which ours replaces (while it reads a line the terminal sends Ctrl-C as a
    // key, not a signal).
    interrupt::install(&chat.session)?;
    terminal::run(&mut chat, &mut editor, initial)
}
