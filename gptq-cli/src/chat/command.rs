//! What a line the person entered means: text for the model, or a command.

use std::path::PathBuf;

/// A parsed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Text to add to the running text ("//x" is the text "/x").
    Text(&'a str),
    /// A `/command`.
    Command(Command),
}

/// The commands of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/exit`, `/quit`, `/bye`.
    Exit,
    /// `/help`, `/?`.
    Help,
    /// `/reset`, `/clear`: clear the text and the cache.
    Reset,
    /// `/regen`: redo the last answer.
    Regen,
    /// `/set KEY VALUE`.
    Set {
        /// The setting.
        key: String,
        /// Its new value (may be empty: `/set reverse-prompt`).
        value: String,
    },
    /// `/show`.
    Show,
    /// `/stats`.
    Stats,
    /// `/save FILE`.
    Save(PathBuf),
    /// `/load FILE`.
    Load(PathBuf),
    /// A known command without what it needs: its usage line.
    Usage(&'static str),
    /// An unknown command, by name.
    Unknown(String),
}

/// The usage line of `/set`.
const SET_USAGE: &str = "usage: /set KEY VALUE (see /help)";

/// Parses one input: a single leading `/` starts a command.
pub fn parse(line: &str) -> Line<'_> {
    let Some(cmd) = line.strip_prefix('/') else {
        return Line::Text(line);
    };
    if cmd.starts_with('/') {
        return Line::Text(cmd);
    }
    let mut words = cmd.trim().splitn(2, char::is_whitespace);
    let name = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim();
    Line::Command(match name {
        "exit" | "quit" | "bye" => Command::Exit,
        "help" | "?" => Command::Help,
        "reset" | "clear" => Command::Reset,
        "regen" => Command::Regen,
        "set" => {
            let mut kv = rest.splitn(2, char::is_whitespace);
            let (key, value) = (kv.next().unwrap_or(""), kv.next().unwrap_or("").trim());
            if key.is_empty() {
                Command::Usage(SET_USAGE)
            } else {
                Command::Set {
                    key: key.to_string(),
                    value: value.to_string(),
                }
            }
        }
        "show" => Command::Show,
        "stats" => Command::Stats,
        "save" if rest.is_empty() => Command::Usage("usage: /save FILE"),
        "load" if rest.is_empty() => Command::Usage("usage: /load FILE"),
        "save" => Command::Save(PathBuf::from(rest)),
        "load" => Command::Load(PathBuf::from(rest)),
        _ => Command::Unknown(name.to_string()),
    })
}

/// `/help`.
pub const HELP: &str = "\
Type text and press Enter: it is added to the running text (followed by a
newline; /set newline off to let the model continue your line) and the model
continues it. An empty line lets the model go on.
  \"\"\"           start or end a multi-line input (text may follow on the same line)
  line\\         a trailing backslash continues the input on the next line
  //text        text that starts with '/'
Commands:
  /help         this help
  /reset        clear the text and the cache
  /regen        redo the last answer
  /set KEY VAL  temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n,
                presence-penalty, frequency-penalty, seed,
                n, ignore-eos, newline (on/off), reverse-prompt
  /show         parameters, model, kernel path, context used
  /save FILE    save the running text and the settings (JSON)
  /load FILE    load them (the text is evaluated again on the next turn)
  /stats        timings of the last turn
  /exit         quit (also /quit, /bye, Ctrl-D; Ctrl-C twice within a second)
Ctrl-C while the model writes stops it; the text so far is kept.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_commands() {
        assert_eq!(parse("hello"), Line::Text("hello"));
        assert_eq!(parse(""), Line::Text(""));
        assert_eq!(parse("//x y"), Line::Text("/x y"));
        assert_eq!(parse("/exit"), Line::Command(Command::Exit));
        assert_eq!(parse(" /exit"), Line::Text(" /exit"));
        assert_eq!(parse("/bye  "), Line::Command(Command::Exit));
        assert_eq!(
            parse("/set temp 0.7"),
            Line::Command(Command::Set {
                key: "temp".into(),
                value: "0.7".into()
            })
        );
        assert_eq!(
            parse("/set reverse-prompt"),
            Line::Command(Command::Set {
                key: "reverse-prompt".into(),
                value: String::new()
            })
        );
        assert_eq!(parse("/set"), Line::Command(Command::Usage(SET_USAGE)));
        assert_eq!(
            parse("/save  my file.json "),
            Line::Command(Command::Save("my file.json".into()))
        );
        assert_eq!(
            parse("/load"),
            Line::Command(Command::Usage("usage: /load FILE"))
        );
        assert_eq!(
            parse("/frobnicate now"),
            Line::Command(Command::Unknown("frobnicate".into()))
        );
    }
}
