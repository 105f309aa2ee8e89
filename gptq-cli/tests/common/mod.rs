//! Driving `gptq` through a real pseudo-terminal, as a person at a terminal
//! would: typed lines end in a carriage return, Ctrl-C is the byte 0x03 that
//! the terminal turns into SIGINT (or hands to the line editor as a key).
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use expectrl::Expect;
use expectrl::process::unix::WaitStatus;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gptq");

/// Generous bound for waits that only fail when something is broken.
pub const T: Duration = Duration::from_secs(60);

/// The default model (trained-small: 256 positions).
pub fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/trained-small-q8_0.gguf")
}

/// A pseudo-terminal session and what it showed that no wait consumed yet.
pub struct Pty {
    p: expectrl::session::OsSession,
    /// Shown but not yet consumed by a wait (carriage returns removed).
    pub seen: String,
    /// Bytes of an incomplete UTF-8 character.
    raw: Vec<u8>,
    /// Sleep between reads that find nothing.
    pub poll: Duration,
}

impl Pty {
    /// Sends bytes as typed.
    pub fn send(&mut self, s: impl AsRef<[u8]>) {
        self.p.send(s).unwrap();
    }

    /// Types `line` and Enter (a carriage return on a terminal).
    pub fn send_line(&mut self, line: &str) {
        self.send(line);
        self.send("\r");
    }

    /// Ctrl-C.
    pub fn ctrl_c(&mut self) {
        self.send(expectrl::ControlCode::EndOfText);
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        self.p.get_process().is_alive().unwrap_or(false)
    }

    /// Reads what is available; false when nothing was.
    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        match self.p.try_read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                // Keep an incomplete UTF-8 character for the next read.
                let valid = match std::str::from_utf8(&self.raw) {
                    Ok(_) => self.raw.len(),
                    Err(e) if e.error_len().is_none() => e.valid_up_to(),
                    Err(_) => self.raw.len(),
                };
                let text = String::from_utf8_lossy(&self.raw[..valid]).replace('\r', "");
                self.seen.push_str(&text);
                self.raw.drain(..valid);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("reading the pty: {e}; seen so far: {:?}", self.seen),
        }
    }

    /// Everything the terminal showed up to and including `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        match self.try_wait_for(needle, timeout) {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {needle:?}; the terminal showed:\n{}",
                self.seen
            ),
        }
    }

    /// Like [`Pty::wait_for`], `None` on a timeout.
    pub fn try_wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(at) = self.seen.find(needle) {
                let rest = self.seen.split_off(at + needle.len());
                return Some(std::mem::replace(&mut self.seen, rest));
            }
            if start.elapsed() > timeout {
                return None;
            }
            if !self.read_some() {
                std::thread::sleep(self.poll);
            }
        }
    }

    /// Keeps reading (so that output never backs up) for `d`.
    pub fn drain_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if !self.read_some() {
                std::thread::sleep(self.poll.min(end.saturating_duration_since(Instant::now())));
            }
        }
    }

    /// The exit code, waiting for the process to end.
    pub fn exit_code(&self) -> i32 {
        let deadline = Instant::now() + T;
        loop {
            match self.p.get_process().status().expect("process status") {
                WaitStatus::Exited(_, code) => return code,
                WaitStatus::Signaled(_, sig, _) => panic!("killed by {sig:?}"),
                _ if Instant::now() > deadline => panic!("gptq did not exit"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Starts `gptq chat -m MODEL EXTRA...` on a pseudo-terminal of 200×50, with
/// its history in `dir`, no colours.
pub fn spawn_chat(dir: &Path, model: &Path, extra: &[&str]) -> Pty {
    let mut cmd = Command::new(BIN);
    cmd.arg("chat")
        .arg("-m")
        .arg(model)
        .args(["--color", "never", "--history-file"])
        .arg(dir.join("history"))
        .args(extra)
        .env("NO_COLOR", "1")
        .env("HOME", dir)
        .env_remove("GPTQ_KERNEL");
    let mut p = expectrl::session::Session::spawn(cmd).expect("spawn gptq chat on a pty");
    p.get_process_mut()
        .set_window_size(200, 50)
        .expect("window size");
    Pty {
        p,
        seen: String::new(),
        raw: Vec::new(),
        poll: Duration::from_millis(20),
    }
}
