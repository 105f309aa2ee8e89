//! The line editor: reads one input (a line, a `"""` block, or lines joined by
//! trailing backslashes) with history, through rustyline.

use std::path::PathBuf;

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

/// What the person entered.
pub enum Input {
    /// A whole input.
    Text(String),
    /// Ctrl-D.
    Eof,
    /// Ctrl-C (a key while the editor reads, not a signal).
    Interrupted,
}

/// A line editor with a history file.
pub struct LineEditor {
    editor: Editor<(), DefaultHistory>,
    history: Option<PathBuf>,
    color: bool,
}

impl LineEditor {
    /// An editor that keeps its history in `history` (if any) and colours
    /// its prompt when `color`.
    ///
    /// Creating it installs rustyline's SIGINT handler: install ours after.
    pub fn new(history: Option<PathBuf>, color: bool) -> Result<LineEditor> {
        let config = Config::builder()
            .auto_add_history(false)
            // We keep track of the cursor ourselves; asking the terminal where
            // it is could swallow keys typed ahead.
            .check_cursor_position(false)
            .max_history_size(1000)?
            .build();
        let mut editor: Editor<(), DefaultHistory> = Editor::with_config(config)?;
        if let Some(h) = &history
            && h.exists()
            && let Err(e) = editor.load_history(h)
        {
            eprintln!("gptq: cannot read the history {}: {e}", h.display());
        }
        Ok(LineEditor {
            editor,
            history,
            color,
        })
    }

    fn paint(&self, s: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// The next line of a multi-line input, or the input that ends it
    /// (Ctrl-D, Ctrl-C).
    fn continuation(&mut self) -> Result<std::result::Result<String, Input>> {
        match self.editor.readline(&self.paint("... ", "2")) {
            Ok(l) => Ok(Ok(l)),
            Err(ReadlineError::Eof) => Ok(Err(Input::Eof)),
            Err(ReadlineError::Interrupted) => Ok(Err(Input::Interrupted)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one input after showing `prompt`, and adds it to the history.
    pub fn read(&mut self, prompt: &str) -> Result<Input> {
        let first = match self.editor.readline(&self.paint(prompt, "1;32")) {
            Ok(l) => l,
            Err(ReadlineError::Eof) => return Ok(Input::Eof),
            Err(ReadlineError::Interrupted) => return Ok(Input::Interrupted),
            Err(e) => return Err(e.into()),
        };
        // """ opens a multi-line input; a trailing backslash continues a line.
        let mut text;
        let mut lines = vec![first.clone()];
        if let Some(rest) = first.trim_start().strip_prefix("\"\"\"") {
            if rest.len() >= 3 && rest.ends_with("\"\"\"") {
                text = rest[..rest.len() - 3].to_string();
            } else {
                text = rest.to_string();
                let mut at_start = rest.is_empty();
                loop {
                    let line = match self.continuation()? {
                        Ok(l) => l,
                        Err(end) => return Ok(end),
                    };
                    lines.push(line.clone());
                    let (body, done) = match line.strip_suffix("\"\"\"") {
                        Some(b) => (b, true),
                        None => (line.as_str(), false),
                    };
                    if !at_start {
                        text.push('\n');
                    }
                    at_start = false;
                    text.push_str(body);
                    if done {
                        break;
                    }
                }
            }
        } else {
            text = first;
            while text.ends_with('\\') {
                text.pop();
                text.push('\n');
                let line = match self.continuation()? {
                    Ok(l) => l,
                    Err(end) => return Ok(end),
                };
                lines.push(line.clone());
                text.push_str(&line);
            }
        }
        let entry = lines.join("\n");
        if !entry.trim().is_empty() {
            let _ = self.editor.add_history_entry(entry);
            if let Some(h) = &self.history {
                let _ = self.editor.save_history(h);
            }
        }
        Ok(Input::Text(text))
    }
}

/// `--history-file`, else `gptq/history` in the user's data folder.
pub fn history_path(flag: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.clone());
    }
    let dir = dirs::data_dir()?.join("gptq");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}
