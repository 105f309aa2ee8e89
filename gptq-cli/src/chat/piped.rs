//! A session whose stdin is not a terminal: all of stdin (after `-p`/`-f`
//! text, if given) is the prompt; the continuation is printed and the program
//! exits. It never waits for input that cannot come.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{Context, Result};

use super::interrupt;
use super::state::Chat;
use super::turn::TurnEnd;

/// Completes `initial` + stdin and exits.
pub fn run(chat: &mut Chat, initial: Option<String>) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read stdin")?;
    // `echo TEXT | gptq chat` means TEXT: one final line break is not part
    // of the prompt.
    let input = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input);
    let mut text = initial.unwrap_or_default();
    text.push_str(input);
    chat.text = text;
    let mut stdout = std::io::stdout();
    let end = chat.respond(&mut stdout, Instant::now())?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    eprintln!("{}", chat.stats_line());
    if end == TurnEnd::Cancelled {
        interrupt::exit_interrupted();
    }
    Ok(())
}
