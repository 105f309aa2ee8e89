//! `gptq chat` / `gptq complete -i`: an interactive running text that the
//! person extends and the model continues, with the KV cache kept between
//! turns.
//!
//! Tokenization rule at the turn boundary: the session's tokens are always
//! the tokenization of the whole running text (after `<|endoftext|>` when the
//! session started from no text). Each turn re-tokenizes the text, keeps the
//! cached prefix that agrees with it, and evaluates only from the first token
//! that differs. So a turn sees exactly what a fresh `gptq complete -p TEXT`
//! would, and usually only the new text is evaluated.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gptq_core::sample::{Sampler, SamplerParams};
use gptq_core::{Error as CoreError, FinishReason, GenerateOptions, Model, Session};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

use crate::complete::{ColorWhen, CompleteArgs};
use crate::load;
use crate::timing::Phase;

/// Set while tokens are being generated: a SIGINT then stops the answer
/// instead of the program.
static GENERATING: AtomicBool = AtomicBool::new(false);
/// Milliseconds (since [`EPOCH`]) of the last Ctrl-C, 0 if none.
static LAST_INTERRUPT: AtomicU64 = AtomicU64::new(0);
/// The session's cancellation flag, set by the SIGINT handler.
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

fn now_ms() -> u64 {
    // Never 0, so that 0 can mean "no Ctrl-C yet".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Records a Ctrl-C; true when it is the second one within a second.
fn interrupt_twice() -> bool {
    let now = now_ms();
    let prev = LAST_INTERRUPT.swap(now, Ordering::Relaxed);
    prev != 0 && now.saturating_sub(prev) < 1000
}

fn install_sigint(cancel: Arc<AtomicBool>) -> Result<()> {
    let _ = CANCEL.set(cancel);
    EPOCH.get_or_init(Instant::now);
    ctrlc::set_handler(|| {
        if !GENERATING.load(Ordering::Relaxed) || interrupt_twice() {
            // Not generating (or asked twice): Ctrl-C means quit.
            let _ = std::io::stdout().flush();
            eprintln!();
            std::process::exit(EXIT_INTERRUPTED);
        }
        if let Some(c) = CANCEL.get() {
            c.store(true, Ordering::Relaxed);
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// Marks a turn in progress for the SIGINT handler while it lives.
struct Generating;

impl Generating {
    fn start() -> Generating {
        GENERATING.store(true, Ordering::Relaxed);
        Generating
    }
}

impl Drop for Generating {
    fn drop(&mut self) {
        GENERATING.store(false, Ordering::Relaxed);
    }
}

/// Settings a turn runs with; `/set` changes them, `/save` stores them.
#[derive(Clone, Debug)]
struct Settings {
    sampling: SamplerParams,
    /// Tokens per turn; `None`: until end of text, a reverse prompt or a
    /// full context.
    n_predict: Option<usize>,
    ignore_eos: bool,
    reverse: Vec<String>,
    /// End each input with a newline.
    newline: bool,
}

/// Figures of the last turn.
#[derive(Clone, Copy, Debug, Default)]
struct TurnStats {
    /// Tokens evaluated before generating (new text, and any re-evaluated).
    prompt: Phase,
    /// Of those, tokens that had been in the cache but had to be redone.
    reevaluated: usize,
    /// Generated tokens and the time from the first sample to the end.
    generation: Phase,
    /// From Enter to the first streamed piece.
    first_token: Option<Duration>,
}

/// How a turn ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TurnEnd {
    /// Budget or end of text: the person continues from the end.
    Done,
    /// A reverse prompt: the person continues after it.
    Reverse(String),
    /// Ctrl-C.
    Cancelled,
}

/// The running text, the session that has evaluated it, and the sampler.
struct Chat {
    model: Arc<Model>,
    session: Session,
    sampler: Sampler,
    settings: Settings,
    /// Everything the person typed and the model wrote.
    text: String,
    /// The session began from no text, so its tokens start with <|endoftext|>.
    eos_prefix: bool,
    /// For /regen: the length of the text before the last answer.
    last_turn: Option<usize>,
    stats: TurnStats,
    verbose: bool,
}

impl Chat {
    fn new(model: Arc<Model>, session: Session, settings: Settings, verbose: bool) -> Result<Chat> {
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

    fn eos(&self) -> u32 {
        let tok = self.model.tokenizer();
        tok.eos().or(tok.bos()).unwrap_or(0)
    }

    /// The tokens the running text stands for.
    fn target_tokens(&mut self) -> Vec<u32> {
        if self.text.is_empty() {
            self.eos_prefix = true;
        }
        let mut t = Vec::new();
        if self.eos_prefix {
            t.push(self.eos());
        }
        t.extend(self.model.tokenizer().encode_with_special(&self.text));
        t
    }

    /// Drops the start of the text so that what is left fits in half the
    /// context; the session is cleared (GPT-2 positions are absolute, so the
    /// kept window is evaluated again from position 0).
    fn keep_recent_window(&mut self) -> Result<()> {
        let n_ctx = self.session.n_ctx();
        let keep = (n_ctx / 2).max(1);
        let tokens = self.model.tokenizer().encode_with_special(&self.text);
        let cut = tokens.len().saturating_sub(keep);
        let kept_bytes = self.model.tokenizer().decode_bytes(&tokens[cut..])?.len();
        let mut start = self.text.len().saturating_sub(kept_bytes);
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        let dropped = self.text[..start].chars().count();
        self.text.drain(..start);
        self.eos_prefix = false;
        self.session.reset();
        self.last_turn = None;
        eprintln!(
            "\ngptq: context full ({n_ctx} tokens): keeping the most recent {} tokens of text (dropped {dropped} characters) and evaluating them again",
            tokens.len() - cut
        );
        Ok(())
    }

    /// Brings the session to the running text: keeps the agreeing cached
    /// prefix and evaluates the rest, leaving the logits of the last token.
    /// Returns false when cancelled.
    fn sync(&mut self) -> Result<bool> {
        let mut target = self.target_tokens();
        if target.len() >= self.session.n_ctx() {
            self.keep_recent_window()?;
            target = self.target_tokens();
        }
        let cached = self.session.tokens();
        let mut p = cached
            .iter()
            .zip(&target)
            .take_while(|(a, b)| a == b)
            .count();
        if p == target.len() && p == cached.len() && self.session.logits().is_some() {
            return Ok(true);
        }
        // At least the last token is evaluated, for its logits.
        p = p.min(target.len() - 1);
        let redo = cached.len().saturating_sub(p).min(target.len() - p);
        self.session.rewind(cached.len() - p)?;
        let t = Instant::now();
        let r = self.session.feed(&target[p..]);
        self.stats.prompt.time += t.elapsed();
        match r {
            Ok(_) => {
                self.stats.prompt.n += target.len() - p;
                self.stats.reevaluated += redo;
                Ok(true)
            }
            Err(CoreError::Cancelled) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Continues the running text, streaming what the model writes to `out`.
    fn respond(&mut self, out: &mut dyn Write, enter: Instant) -> Result<TurnEnd> {
        self.stats = TurnStats::default();
        // From here until the turn ends, Ctrl-C stops the turn, not the program.
        self.session.cancel_flag().store(false, Ordering::Relaxed);
        let _generating = Generating::start();
        let mut budget = self.settings.n_predict.unwrap_or(usize::MAX);
        loop {
            if !self.sync()? {
                return Ok(TurnEnd::Cancelled);
            }
            let opts = self.settings.reverse.iter().fold(
                GenerateOptions::max_tokens(budget).stop_at_eos(!self.settings.ignore_eos),
                |opts, r| opts.stop(r.as_str()),
            );
            let t = Instant::now();
            let mut pieces = self.session.generate(&mut self.sampler, opts.clone());
            let mut result: Result<()> = Ok(());
            for piece in pieces.by_ref() {
                match piece {
                    Ok(piece) => {
                        if self.stats.first_token.is_none() {
                            self.stats.first_token = Some(enter.elapsed());
                        }
                        self.text.push_str(&piece);
                        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                            result = Err(e.into());
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let n = pieces.tokens().len();
            let reason = pieces.finish_reason();
            drop(pieces);
            self.stats.generation.n += n;
            self.stats.generation.time += t.elapsed();
            result?;
            budget = budget.saturating_sub(n);
            match reason {
                Some(FinishReason::Stop(i)) => {
                    let r = opts.stop_strings()[i].clone();
                    self.text.push_str(&r);
                    return Ok(TurnEnd::Reverse(r));
                }
                Some(FinishReason::Cancelled) => return Ok(TurnEnd::Cancelled),
                // With a token budget (-n N) a turn goes on past a full
                // context; with -n -1 it ends there (the next turn makes room).
                Some(FinishReason::ContextFull)
                    if self.settings.n_predict.is_some() && budget > 0 =>
                {
                    self.keep_recent_window()?;
                }
                _ => return Ok(TurnEnd::Done),
            }
        }
    }

    fn reset(&mut self) {
        self.text.clear();
        self.eos_prefix = false;
        self.session.reset();
        self.last_turn = None;
    }

    /// Applies `/set KEY VALUE`.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.replace('_', "-");
        let mut s = self.settings.clone();
        let num = |v: &str| -> Result<f32> {
            v.parse::<f32>()
                .with_context(|| format!("'{v}' is not a number"))
        };
        let int = |v: &str| -> Result<i64> {
            v.parse::<i64>()
                .with_context(|| format!("'{v}' is not a whole number"))
        };
        let flag = |v: &str| -> Result<bool> {
            match v {
                "on" | "true" | "yes" | "1" => Ok(true),
                "off" | "false" | "no" | "0" => Ok(false),
                _ => bail!("'{v}' is not on or off"),
            }
        };
        match key.as_str() {
            "temp" | "temperature" => s.sampling.temperature = num(value)?,
            "top-k" => s.sampling.top_k = usize::try_from(int(value)?).context("top-k >= 0")?,
            "top-p" => s.sampling.top_p = num(value)?,
            "min-p" => s.sampling.min_p = num(value)?,
            "repeat-penalty" => s.sampling.repeat_penalty = num(value)?,
            "repeat-last-n" => {
                s.sampling.repeat_last_n = match int(value)? {
                    -1 => self.session.n_ctx(),
                    n => usize::try_from(n).context("repeat-last-n must be >= 0 or -1")?,
                }
            }
            "seed" | "s" => {
                s.sampling.seed = u64::try_from(int(value)?).context("the seed must be >= 0")?
            }
            "n" | "n-predict" => {
                s.n_predict = match int(value)? {
                    n if n < 0 => None,
                    n => Some(n as usize),
                }
            }
            "ignore-eos" => s.ignore_eos = flag(value)?,
            "newline" => s.newline = flag(value)?,
            "reverse-prompt" | "r" => {
                s.reverse = if value.is_empty() {
                    Vec::new()
                } else {
                    vec![value.to_string()]
                }
            }
            _ => bail!(
                "unknown setting '{key}' (temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n, seed, n, ignore-eos, newline, reverse-prompt)"
            ),
        }
        self.sampler.set_params(s.sampling.clone())?;
        self.settings = s;
        Ok(())
    }

    fn show(&self) -> String {
        let p = &self.settings.sampling;
        let hp = self.model.hparams();
        let n = self.settings.n_predict.map_or(
            "-1 (until end of text or a full context)".to_string(),
            |n| n.to_string(),
        );
        format!(
            "sampling: temp {} | top-k {} | top-p {} | min-p {} | repeat-penalty {} | repeat-last-n {} | seed {}\n\
             turn: n {n} | ignore-eos {} | newline {} | reverse-prompt {:?}\n\
             model: {} ({}) | n_vocab {} | n_ctx {} | n_embd {} | n_head {} | n_layer {} | n_ff {}\n\
             kernel path: {} | threads {}\n\
             context: {} of {} tokens used | text {} characters",
            p.temperature,
            p.top_k,
            p.top_p,
            p.min_p,
            p.repeat_penalty,
            p.repeat_last_n,
            p.seed,
            self.settings.ignore_eos,
            if self.settings.newline { "on" } else { "off" },
            self.settings.reverse,
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

    fn stats_line(&self) -> String {
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

    fn stats_report(&self) -> String {
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

    fn save(&self, path: &Path) -> Result<()> {
        let p = &self.settings.sampling;
        let v = serde_json::json!({
            "format": "gptq-chat",
            "version": 1,
            "text": self.text,
            "starts_with_eos": self.eos_prefix,
            "settings": {
                "temp": p.temperature,
                "top_k": p.top_k,
                "top_p": p.top_p,
                "min_p": p.min_p,
                "repeat_penalty": p.repeat_penalty,
                "repeat_last_n": p.repeat_last_n,
                "seed": p.seed,
                "n_predict": self.settings.n_predict,
                "ignore_eos": self.settings.ignore_eos,
                "newline": self.settings.newline,
                "reverse_prompt": self.settings.reverse,
            }
        });
        let s = serde_json::to_string_pretty(&v)?;
        std::fs::write(path, s + "\n").with_context(|| format!("cannot write {}", path.display()))
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&raw)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if v["format"] != "gptq-chat" {
            bail!("{} is not a file written by /save", path.display());
        }
        let text = v["text"]
            .as_str()
            .context("the file has no \"text\"")?
            .to_string();
        let st = &v["settings"];
        let mut s = self.settings.clone();
        let f = |k: &str, d: f32| st[k].as_f64().map_or(d, |x| x as f32);
        let u = |k: &str, d: usize| st[k].as_u64().map_or(d, |x| x as usize);
        s.sampling.temperature = f("temp", s.sampling.temperature);
        s.sampling.top_k = u("top_k", s.sampling.top_k);
        s.sampling.top_p = f("top_p", s.sampling.top_p);
        s.sampling.min_p = f("min_p", s.sampling.min_p);
        s.sampling.repeat_penalty = f("repeat_penalty", s.sampling.repeat_penalty);
        s.sampling.repeat_last_n = u("repeat_last_n", s.sampling.repeat_last_n);
        s.sampling.seed = st["seed"].as_u64().unwrap_or(s.sampling.seed);
        if st.get("n_predict").is_some() {
            s.n_predict = st["n_predict"].as_u64().map(|n| n as usize);
        }
        s.ignore_eos = st["ignore_eos"].as_bool().unwrap_or(s.ignore_eos);
        s.newline = st["newline"].as_bool().unwrap_or(s.newline);
        if let Some(r) = st["reverse_prompt"].as_array() {
            s.reverse = r
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
        }
        self.sampler.set_params(s.sampling.clone())?;
        // Restart the random sequence so that a loaded file replays.
        self.sampler.reseed(s.sampling.seed);
        self.settings = s;
        self.reset();
        self.text = text;
        self.eos_prefix = v["starts_with_eos"].as_bool().unwrap_or(false);
        Ok(())
    }
}

const HELP: &str = "\
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
  /set KEY VAL  temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n, seed,
                n, ignore-eos, newline (on/off), reverse-prompt
  /show         parameters, model, kernel path, context used
  /save FILE    save the running text and the settings (JSON)
  /load FILE    load them (the text is evaluated again on the next turn)
  /stats        timings of the last turn
  /exit         quit (also /quit, /bye, Ctrl-D; Ctrl-C twice within a second)
Ctrl-C while the model writes stops it; the text so far is kept.";

/// What the person entered.
enum Input {
    Text(String),
    Eof,
    Interrupted,
}

struct Repl {
    editor: Editor<(), DefaultHistory>,
    history: Option<PathBuf>,
    color: bool,
}

impl Repl {
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

    fn read(&mut self, prompt: &str) -> Result<Input> {
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

fn history_path(args: &CompleteArgs) -> Option<PathBuf> {
    if let Some(p) = &args.history_file {
        return Some(p.clone());
    }
    let dir = dirs::data_dir()?.join("gptq");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

fn settings(args: &CompleteArgs, n_ctx: usize) -> Result<Settings> {
    Ok(Settings {
        sampling: args.sampling.params(n_ctx)?,
        n_predict: usize::try_from(args.n_predict).ok(),
        ignore_eos: args.ignore_eos,
        reverse: args
            .reverse_prompt
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect(),
        newline: !args.no_newline,
    })
}

/// Runs `gptq chat` (or `gptq complete -i`).
pub fn run(args: &CompleteArgs) -> Result<()> {
    let loaded = load::load(&args.model)?;
    let session = load::session(&loaded.model, &args.model, 1)?;
    let n_ctx = session.n_ctx();
    let st = settings(args, n_ctx)?;
    if args.model.verbose {
        eprintln!("gptq: seed {}", st.sampling.seed);
    }
    let cancel = session.cancel_flag();
    let mut chat = Chat::new(Arc::clone(&loaded.model), session, st, args.model.verbose)?;
    let initial = args.prompt.text()?;

    if !std::io::stdin().is_terminal() {
        install_sigint(cancel)?;
        return run_piped(&mut chat, initial);
    }
    let color = match args.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let config = Config::builder()
        .auto_add_history(false)
        // We keep track of the cursor ourselves; asking the terminal where
        // it is could swallow keys typed ahead.
        .check_cursor_position(false)
        .max_history_size(1000)?
        .build();
    let mut editor: Editor<(), DefaultHistory> = Editor::with_config(config)?;
    // After the editor: it installs a SIGINT handler of its own when created,
    // which ours replaces (while it reads a line the terminal sends Ctrl-C as a
    // key, not a signal).
    install_sigint(cancel)?;
    let history = history_path(args);
    if let Some(h) = &history
        && h.exists()
        && let Err(e) = editor.load_history(h)
    {
        eprintln!("gptq: cannot read the history {}: {e}", h.display());
    }
    let mut repl = Repl {
        editor,
        history,
        color,
    };
    eprintln!(
        "gptq: {}, {n_ctx}-token context. Enter sends, /help lists commands, Ctrl-C stops the model, Ctrl-D or /exit quits.",
        chat.model.name().unwrap_or("model")
    );

    let mut out = Tracked {
        inner: std::io::stdout(),
        at_line_start: true,
    };
    // The prompt shown for the next input: a reverse prompt the model wrote.
    let mut prefix: Option<String> = None;
    if let Some(p) = initial.filter(|p| !p.is_empty()) {
        // The initial prompt is shown, then the model continues it.
        out.write_all(p.as_bytes())?;
        out.flush()?;
        chat.text = p;
        let end = chat.respond(&mut out, Instant::now())?;
        chat.last_turn = Some(chat.text.len());
        prefix = after_turn(&chat, end, &mut out)?;
    }
    loop {
        out.line_start()?;
        let prompt = prefix.clone().unwrap_or_else(|| "> ".to_string());
        let input = repl.read(&prompt)?;
        let enter = Instant::now();
        out.at_line_start = true;
        let line = match input {
            Input::Eof => {
                eprintln!();
                return Ok(());
            }
            Input::Interrupted => {
                if interrupt_twice() {
                    eprintln!();
                    std::process::exit(EXIT_INTERRUPTED);
                }
                eprintln!("(Ctrl-C again within a second, Ctrl-D or /exit to quit)");
                continue;
            }
            Input::Text(l) => l,
        };
        if let Some(cmd) = line.strip_prefix('/').filter(|c| !c.starts_with('/')) {
            let mut words = cmd.trim().splitn(2, char::is_whitespace);
            let name = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("").trim();
            match name {
                "exit" | "quit" | "bye" => return Ok(()),
                "help" | "?" => eprintln!("{HELP}"),
                "reset" | "clear" => {
                    chat.reset();
                    prefix = None;
                    eprintln!("gptq: text and cache cleared");
                }
                "regen" => {
                    let Some(len) = chat.last_turn.filter(|&l| l <= chat.text.len()) else {
                        eprintln!("gptq: no answer to redo yet");
                        continue;
                    };
                    chat.text.truncate(len);
                    eprintln!("gptq: redoing the last answer");
                    let end = chat.respond(&mut out, enter)?;
                    prefix = after_turn(&chat, end, &mut out)?;
                }
                "set" => {
                    let mut kv = rest.splitn(2, char::is_whitespace);
                    let (k, v) = (kv.next().unwrap_or(""), kv.next().unwrap_or("").trim());
                    if k.is_empty() {
                        eprintln!("usage: /set KEY VALUE (see /help)");
                    } else if let Err(e) = chat.set(k, v) {
                        eprintln!("gptq: {e:#}");
                    } else {
                        eprintln!("gptq: {k} = {v}");
                    }
                }
                "show" => eprintln!("{}", chat.show()),
                "stats" => eprintln!("{}", chat.stats_report()),
                "save" | "load" if rest.is_empty() => eprintln!("usage: /{name} FILE"),
                "save" => match chat.save(Path::new(rest)) {
                    Ok(()) => eprintln!("gptq: saved to {rest}"),
                    Err(e) => eprintln!("gptq: {e:#}"),
                },
                "load" => match chat.load(Path::new(rest)) {
                    Ok(()) => {
                        prefix = None;
                        eprintln!(
                            "gptq: loaded {rest} ({} characters of text, evaluated on the next turn):",
                            chat.text.chars().count()
                        );
                        out.write_all(chat.text.as_bytes())?;
                        out.flush()?;
                    }
                    Err(e) => eprintln!("gptq: {e:#}"),
                },
                _ => eprintln!("gptq: unknown command /{name} (/help lists them)"),
            }
            continue;
        }
        // "//text" is text that starts with '/'.
        let line = match line.strip_prefix('/') {
            Some(l) if l.starts_with('/') => l,
            _ => line.as_str(),
        };
        if !line.is_empty() {
            chat.text.push_str(line);
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
        prefix = after_turn(&chat, end, &mut out)?;
    }
}

/// Stdout, remembering whether the cursor is at the start of a line.
struct Tracked {
    inner: std::io::Stdout,
    at_line_start: bool,
}

impl Tracked {
    /// Ends the current line unless it is empty.
    fn line_start(&mut self) -> std::io::Result<()> {
        if !self.at_line_start {
            self.write_all(b"\n")?;
        }
        self.flush()
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

/// Stdin is not a terminal: all of it (after `-p`/`-f`, if given) is the
/// prompt; print the continuation and exit.
fn run_piped(chat: &mut Chat, initial: Option<String>) -> Result<()> {
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
        std::process::exit(EXIT_INTERRUPTED);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Chat {
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
    fn session_tokens_are_the_tokenized_text_across_a_joined_word() {
        let mut c = chat();
        c.text = "The weather is hel".into();
        assert!(c.sync().unwrap());
        let before = c.session.len();
        c.stats = TurnStats::default();
        // The new text joins the last word: "hel" + "lo" is re-tokenized.
        c.text.push_str("lo world");
        assert!(c.sync().unwrap());
        let whole = c.model.tokenizer().encode(&c.text);
        assert_eq!(c.session.tokens(), &whole[..]);
        assert!(c.stats.reevaluated >= 1, "{:?}", c.stats);
        assert!(
            c.stats.prompt.n < whole.len(),
            "the agreeing prefix was kept"
        );
        assert!(before > 0);
    }

    #[test]
    fn a_turn_appends_the_answer_and_keeps_the_cache() {
        let mut c = chat();
        c.text = "Once upon a time".into();
        let mut out = Vec::new();
        assert_eq!(c.respond(&mut out, Instant::now()).unwrap(), TurnEnd::Done);
        let answer = String::from_utf8(out).unwrap();
        assert_eq!(c.text, format!("Once upon a time{answer}"));
        assert_eq!(c.stats.generation.n, 8);
        assert!(c.stats.first_token.is_some());
        // The next turn evaluates only its own tokens.
        c.text.push_str(" The end.\n");
        let n_before = c.session.len();
        let mut out = Vec::new();
        c.respond(&mut out, Instant::now()).unwrap();
        assert_eq!(c.stats.reevaluated, 0);
        assert_eq!(
            c.stats.prompt.n,
            c.model.tokenizer().encode(&c.text).len() - 8 - n_before
        );
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
        assert_eq!(d.settings.sampling.temperature, 0.5);
        assert_eq!(d.settings.sampling.top_k, 7);
        assert_eq!(d.settings.n_predict, None);
        assert!(!d.settings.newline);
        assert!(d.load(Path::new("/nonexistent/file.json")).is_err());
    }
}
