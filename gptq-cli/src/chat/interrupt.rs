//! Ctrl-C in a session.
//!
//! Whether Ctrl-C is a key or a signal is decided by the terminal, not by us:
//! while the line editor reads, the terminal is in raw mode (no `ISIG`) and
//! Ctrl-C arrives as a key, which the editor hands back as
//! [`Input::Interrupted`](super::editor::Input::Interrupted); the rest of the
//! time (from the moment the editor gives the terminal back after Enter until
//! it takes it again for the next prompt) the terminal turns Ctrl-C into
//! SIGINT, which the `ctrlc` crate hands to [`on_sigint`] on a thread of its
//! own.
//!
//! So a SIGINT always means "stop what you are doing": [`on_sigint`] sets the
//! session's cancellation flag, which a turn checks between layers of every
//! evaluation (prompt, window slide) and before every token, whatever phase it
//! is in. The flag is cleared at exactly one point, [`before_prompt`], when the
//! work it was for is over; never when a turn starts, so a Ctrl-C that comes
//! between Enter and the first evaluation stops the turn at its first check.
//! A SIGINT handled while the line editor holds the terminal is left alone: it
//! was sent before the prompt took the terminal, for work that is over (or by
//! `kill`), and must not stop the next turn. A second SIGINT while the first is still pending
//! (the main thread has not reached a check, e.g. it is blocked writing to a
//! terminal that does not read) quits: the program is not responding.
//!
//! The "twice within a second quits" rule belongs to the prompt alone, with a
//! clock of its own: a turn's Ctrl-C never counts towards it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use gptq_core::Session;

/// The session's cancellation flag, set by [`on_sigint`].
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Milliseconds (since [`EPOCH`]) of the last Ctrl-C at the prompt, 0 if none.
static LAST_AT_PROMPT: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// Installs the SIGINT handler for `session` (after the line editor, which
/// installs one of its own when it is created).
pub fn install(session: &Session) -> Result<()> {
    EPOCH.get_or_init(Instant::now);
    if CANCEL.set(session.cancel_flag()).is_err() {
        anyhow::bail!("the Ctrl-C handler is already installed");
    }
    ctrlc::set_handler(on_sigint).context("cannot install the Ctrl-C handler")
}

/// A SIGINT (on the `ctrlc` thread).
fn on_sigint() {
    let Some(cancel) = CANCEL.get() else {
        return;
    };
    if line_editor_has_the_terminal() {
        return;
    }
    if cancel.swap(true, Ordering::SeqCst) {
        // The last Ctrl-C has not been taken yet: not responding. Nothing is
        // printed: the main thread may hold stdout or stderr, blocked on a
        // terminal that does not read.
        std::process::exit(EXIT_INTERRUPTED);
    }
}

/// Whether the terminal on stdin is in the line editor's raw mode, where
/// Ctrl-C is a key and not a signal.
#[cfg(unix)]
fn line_editor_has_the_terminal() -> bool {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    tcgetattr(std::io::stdin()).is_ok_and(|t| !t.local_flags.contains(LocalFlags::ISIG))
}

#[cfg(not(unix))]
fn line_editor_has_the_terminal() -> bool {
    false
}

/// Called just before the line editor reads the next input: a Ctrl-C that
/// came after the last turn's last check (it ended by itself), or during a
/// command, was for work that is over.
pub fn before_prompt() {
    if let Some(cancel) = CANCEL.get() {
        cancel.store(false, Ordering::SeqCst);
    }
}

fn now_ms() -> u64 {
    // Never 0, so that 0 can mean "no Ctrl-C yet".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Records a Ctrl-C key at the prompt; true when it is the second one there
/// within a second.
pub fn twice_within_a_second() -> bool {
    let now = now_ms();
    let prev = LAST_AT_PROMPT.swap(now, Ordering::Relaxed);
    prev != 0 && now.saturating_sub(prev) < 1000
}

/// Ends the program as Ctrl-C does (on the main thread).
pub fn exit_interrupted() -> ! {
    let _ = std::io::stdout().flush();
    eprintln!();
    std::process::exit(EXIT_INTERRUPTED);
}
