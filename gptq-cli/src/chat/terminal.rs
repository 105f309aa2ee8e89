//! A session at a terminal: the loop that reads an input with the line
//! editor, runs a command or a turn, and reads the next.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use super::command::{self, Command, HELP, Line};
use super::editor::{Input, LineEditor};
use super::interrupt;
use super::output::Tracked;
use super::state::Chat;
use super::turn::TurnEnd;

/// Runs the session until `/exit` or Ctrl-D; `initial` (`-p`/`-f`) is shown
/// and continued first.
pub fn run(chat: &mut Chat, editor: &mut LineEditor, initial: Option<String>) -> Result<()> {
    eprintln!(
        "gptq: {}, {}-token context. Enter sends, /help lists commands, Ctrl-C stops the model, Ctrl-D or /exit quits.",
        chat.model.name().unwrap_or("model"),
        chat.session.n_ctx()
    );
    let mut out = Tracked::stdout();
    // The prompt shown for the next input: a reverse prompt the model wrote.
    let mut prefix: Option<String> = None;
    if let Some(p) = initial.filter(|p| !p.is_empty()) {
        // The initial prompt is shown, then the model continues it.
        out.write_all(p.as_bytes())?;
        out.flush()?;
        chat.text = p;
        let end = chat.respond(&mut out, Instant::now())?;
        chat.last_turn = Some(chat.text.len());
        prefix = after_turn(chat, end, &mut out)?;
    }
    loop {
        out.line_start()?;
        let prompt = prefix.clone().unwrap_or_else(|| "> ".to_string());
        interrupt::before_prompt();
        let input = editor.read(&prompt)?;
        let enter = Instant::now();
        out.at_line_start = true;
        let line = match input {
            Input::Eof => {
                eprintln!();
                return Ok(());
            }
            Input::Interrupted => {
                if interrupt::twice_within_a_second() {
                    interrupt::exit_interrupted();
                }
                eprintln!("(Ctrl-C again within a second, Ctrl-D or /exit to quit)");
                continue;
            }
            Input::Text(l) => l,
        };
        let text = match command::parse(&line) {
            Line::Text(t) => t,
            Line::Command(cmd) => {
                if run_command(chat, cmd, &mut out, enter, &mut prefix)? == Flow::Exit {
                    return Ok(());
                }
                continue;
            }
        };
        if !text.is_empty() {
            chat.text.push_str(text);
            if chat.settings.newline {
                chat.text.push('\n');
            } else {
                // The model continues on the line the person typed.
                out.at_line_start = false;
            }
        }
        let answer_start = chat.text.len();
        let end = chat.respond(&mut out, enter)?;
        chat.last_turn = Some(answer_start);
        prefix = after_turn(chat, end, &mut out)?;
    }
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Runs a command; messages go to stderr, a redone answer to `out`.
fn run_command(
    chat: &mut Chat,
    cmd: Command,
    out: &mut Tracked,
    enter: Instant,
    prefix: &mut Option<String>,
) -> Result<Flow> {
    let error_line = |e: anyhow::Error| format!("gptq: {}", crate::report::error_line(&e));
    match cmd {
        Command::Exit => return Ok(Flow::Exit),
        Command::Help => eprintln!("{HELP}"),
        Command::Reset => {
            chat.reset();
            *prefix = None;
            eprintln!("gptq: text and cache cleared");
        }
        Command::Regen => match chat.last_turn.filter(|&l| l <= chat.text.len()) {
            None => eprintln!("gptq: no answer to redo yet"),
            Some(len) => {
                chat.text.truncate(len);
                eprintln!("gptq: redoing the last answer");
                let end = chat.respond(out, enter)?;
                *prefix = after_turn(chat, end, out)?;
            }
        },
        Command::Set { key, value } => match chat.set(&key, &value) {
            Ok(()) => eprintln!("gptq: {key} = {value}"),
            Err(e) => eprintln!("{}", error_line(e)),
        },
        Command::Show => eprintln!("{}", chat.show()),
        Command::Stats => eprintln!("{}", chat.stats_report()),
        Command::Save(path) => match chat.save(&path) {
            Ok(()) => eprintln!("gptq: saved to {}", path.display()),
            Err(e) => eprintln!("{}", error_line(e)),
        },
        Command::Load(path) => match chat.load(&path) {
            Ok(()) => {
                *prefix = None;
                eprintln!(
                    "gptq: loaded {} ({} characters of text, evaluated on the next turn):",
                    path.display(),
                    chat.text.chars().count()
                );
                out.write_all(chat.text.as_bytes())?;
                out.flush()?;
            }
            Err(e) => eprintln!("{}", error_line(e)),
        },
        Command::Usage(usage) => eprintln!("{usage}"),
        Command::Unknown(name) => eprintln!("gptq: unknown command /{name} (/help lists them)"),
    }
    Ok(Flow::Continue)
}

/// After a turn: end the line, print the timing line, and return the
/// reverse prompt to hand back as the next input's prefix.
fn after_turn(chat: &Chat, end: TurnEnd, out: &mut Tracked) -> Result<Option<String>> {
    out.line_start()?;
    let prefix = match end {
        TurnEnd::Reverse(r) => Some(r),
        TurnEnd::Cancelled => {
            eprintln!("gptq: stopped (Ctrl-C); the text so far is kept");
            None
        }
        TurnEnd::Done => None,
    };
    eprintln!("{}", chat.stats_line());
    if chat.verbose {
        eprintln!("{}", chat.stats_report());
    }
    Ok(prefix)
}
