//! Ctrl-C in a session.
//!
//! At the prompt the line editor holds the terminal in raw mode, so Ctrl-C
//! arrives as a key: the first one says how to quit, a second within a second
//! quits. While a turn runs ([`Generating`] alive) the terminal turns Ctrl-C
//! into SIGINT, which the `ctrlc` crate hands to the handler on a thread of
//! its own: it sets the session's cancellation flag, and a second one within a
//! second quits. A SIGINT outside a turn quits.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use gptq_core::Session;

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
pub fn twice_within_a_second() -> bool {
    let now = now_ms();
    let prev = LAST_INTERRUPT.swap(now, Ordering::Relaxed);
    prev != 0 && now.saturating_sub(prev) < 1000
}

/// Installs the SIGINT handler for `session` (after the line editor, which
/// installs one of its own when it is created).
pub fn install(session: &Session) -> Result<()> {
    let _ = CANCEL.set(session.cancel_flag());
    EPOCH.get_or_init(Instant::now);
    ctrlc::set_handler(|| {
        if !GENERATING.load(Ordering::Relaxed) || twice_within_a_second() {
            // Not generating (or asked twice): Ctrl-C means quit.
            exit_interrupted();
        }
        if let Some(c) = CANCEL.get() {
            c.store(true, Ordering::Relaxed);
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// Marks a turn in progress for the SIGINT handler while it lives.
pub struct Generating;

impl Generating {
    /// From now until the value is dropped, Ctrl-C stops the turn.
    pub fn start() -> Generating {
        GENERATING.store(true, Ordering::Relaxed);
        Generating
    }
}

impl Drop for Generating {
    fn drop(&mut self) {
        GENERATING.store(false, Ordering::Relaxed);
    }
}

/// Ends the program as Ctrl-C does.
pub fn exit_interrupted() -> ! {
    let _ = std::io::stdout().flush();
    eprintln!();
    std::process::exit(EXIT_INTERRUPTED);
}
