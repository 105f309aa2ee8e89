//! `gptq chat` driven through a real pseudo-terminal, and through a pipe.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use expectrl::process::unix::WaitStatus;
use expectrl::{ControlCode, Expect};

const BIN: &str = env!("CARGO_BIN_EXE_gptq");

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/trained-small-q8_0.gguf")
}

/// A pseudo-terminal session and what it showed that no wait consumed yet.
struct Pty {
    p: expectrl::session::OsSession,
    seen: String,
}

impl Pty {
    fn send(&mut self, s: impl AsRef<[u8]>) {
        self.p.send(s).unwrap();
    }

    fn get_process(&self) -> &expectrl::process::unix::UnixProcess {
        self.p.get_process()
    }
}

/// Starts `gptq chat` on a pseudo-terminal with its history in `dir`.
fn spawn(dir: &Path, extra: &[&str]) -> Pty {
    let mut cmd = Command::new(BIN);
    cmd.arg("chat")
        .arg("-m")
        .arg(model())
        .args(["--color", "never", "-t", "2", "--history-file"])
        .arg(dir.join("history"))
        .args(extra)
        .env("NO_COLOR", "1")
        .env("HOME", dir);
    let mut p = expectrl::session::Session::spawn(cmd).expect("spawn gptq chat on a pty");
    p.get_process_mut()
        .set_window_size(200, 50)
        .expect("window size");
    Pty {
        p,
        seen: String::new(),
    }
}

/// Everything the terminal showed up to and including `needle` (carriage
/// returns removed), polling gently so that the model keeps the CPU.
fn wait_for(p: &mut Pty, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    let mut raw = Vec::new();
    loop {
        if let Some(at) = p.seen.find(needle) {
            let rest = p.seen.split_off(at + needle.len());
            return std::mem::replace(&mut p.seen, rest);
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out waiting for {needle:?}; the terminal showed:\n{}",
                p.seen
            );
        }
        let mut buf = [0u8; 4096];
        match p.p.try_read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                // Keep an incomplete UTF-8 character for the next read.
                let valid = match std::str::from_utf8(&raw) {
                    Ok(_) => raw.len(),
                    Err(e) if e.error_len().is_none() => e.valid_up_to(),
                    Err(_) => raw.len(),
                };
                let text = String::from_utf8_lossy(&raw[..valid]).replace('\r', "");
                p.seen.push_str(&text);
                raw.drain(..valid);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reading the pty: {e}; seen so far: {:?}", p.seen),
        }
    }
}

const T: Duration = Duration::from_secs(60);

/// The prompt after a turn: the per-turn timing line, then "> ".
const TURN_END: &str = "generation:";

fn send_line(p: &mut Pty, line: &str) {
    // Enter on a terminal is a carriage return.
    p.send(line);
    p.send("\r");
}

fn exit_code(p: &Pty) -> i32 {
    let deadline = Instant::now() + T;
    loop {
        match p.get_process().status().expect("process status") {
            WaitStatus::Exited(_, code) => return code,
            WaitStatus::Signaled(_, sig, _) => panic!("killed by {sig:?}"),
            _ if Instant::now() > deadline => panic!("gptq chat did not exit"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn complete(prompt: &str, n: usize) -> String {
    let out = Command::new(BIN)
        .args(["complete", "--temp", "0", "-t", "2", "-n"])
        .arg(n.to_string())
        .arg("-m")
        .arg(model())
        .arg("-p")
        .arg(prompt)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

fn saved_text(path: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["text"].as_str().unwrap().to_string()
}

#[test]
fn interactive_session_on_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &["--temp", "0", "-n", "12"]);
    wait_for(&mut p, "/help", T);
    wait_for(&mut p, "> ", T);

    // A first turn streams the greedy continuation of the typed line.
    let expected = complete("The old man walked\n", 12);
    send_line(&mut p, "The old man walked");
    let shown = wait_for(&mut p, TURN_END, T);
    assert!(
        shown.contains(expected.trim()),
        "expected {expected:?} in {shown:?}"
    );
    wait_for(&mut p, "> ", T);

    // /stats reports the time to the first token.
    send_line(&mut p, "/stats");
    let stats = wait_for(&mut p, "after Enter", T);
    eprintln!("/stats after a 12-token turn: {stats}");
    wait_for(&mut p, "> ", T);

    // /regen redoes the answer: greedy, so the same text again.
    let saved = dir.path().join("s.json");
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    let before = saved_text(&saved);
    send_line(&mut p, "/regen");
    wait_for(&mut p, TURN_END, T);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    assert_eq!(saved_text(&saved), before);

    // Ctrl-C in the middle of a long generation stops it and gives the prompt
    // back; the session goes on.
    send_line(&mut p, "/set n 100000");
    wait_for(&mut p, "n = 100000", T);
    send_line(&mut p, "/set ignore-eos on");
    wait_for(&mut p, "ignore-eos = on", T);
    send_line(&mut p, "Once upon a time");
    // Text streams while the turn is still going: two lines of it appear
    // long before 100000 tokens are done.
    wait_for(&mut p, "Once upon a time", T);
    wait_for(&mut p, "\n", T);
    let streamed = wait_for(&mut p, "\n", T);
    assert!(!streamed.trim().is_empty());
    assert!(!streamed.contains(TURN_END));
    p.send(ControlCode::EndOfText);
    wait_for(&mut p, "stopped (Ctrl-C)", T);
    wait_for(&mut p, "> ", T);
    assert!(p.get_process().is_alive().unwrap());
    send_line(&mut p, "/show");
    let show = wait_for(&mut p, "tokens used", T);
    let used: usize = show
        .rsplit("context: ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("context used in /show");
    assert!(used > 20, "the session kept its tokens: {show}");

    // /set, then another turn on the kept session.
    send_line(&mut p, "/set n 5");
    wait_for(&mut p, "n = 5", T);
    send_line(&mut p, "/set temp 0.7");
    wait_for(&mut p, "temp = 0.7", T);
    send_line(&mut p, "/show");
    wait_for(&mut p, "temp 0.7", T);
    send_line(&mut p, "The end.");
    wait_for(&mut p, TURN_END, T);
    wait_for(&mut p, "> ", T);

    // /reset clears the text and the cache.
    send_line(&mut p, "/reset");
    wait_for(&mut p, "cleared", T);
    send_line(&mut p, "/show");
    wait_for(&mut p, "context: 0 of", T);

    // """ multi-line input.
    send_line(&mut p, "\"\"\"First line");
    wait_for(&mut p, "... ", T);
    send_line(&mut p, "second line\"\"\"");
    wait_for(&mut p, TURN_END, T);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    assert!(saved_text(&saved).starts_with("First line\nsecond line\n"));

    // A trailing backslash continues the line.
    send_line(&mut p, "/reset");
    wait_for(&mut p, "cleared", T);
    send_line(&mut p, "one\\");
    wait_for(&mut p, "... ", T);
    send_line(&mut p, "two");
    wait_for(&mut p, TURN_END, T);
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    assert!(saved_text(&saved).starts_with("one\ntwo\n"));

    // A bracketed paste of several lines is one input.
    send_line(&mut p, "/reset");
    wait_for(&mut p, "cleared", T);
    p.send("\x1b[200~pasted one\npasted two\x1b[201~");
    p.send("\r");
    wait_for(&mut p, TURN_END, T);
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    assert!(saved_text(&saved).starts_with("pasted one\npasted two\n"));

    // Ctrl-C at the prompt tells how to quit; /exit quits with 0.
    std::thread::sleep(Duration::from_millis(1100));
    p.send(ControlCode::EndOfText);
    wait_for(&mut p, "to quit", T);
    std::thread::sleep(Duration::from_millis(1100));
    send_line(&mut p, "/exit");
    assert_eq!(exit_code(&p), 0);

    // The history file kept the lines.
    let history = std::fs::read_to_string(dir.path().join("history")).unwrap();
    assert!(history.contains("The old man walked"));
}

#[test]
fn ctrl_d_quits_with_0_and_double_ctrl_c_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &[]);
    wait_for(&mut p, "> ", T);
    p.send(ControlCode::EndOfTransmission);
    assert_eq!(exit_code(&p), 0);

    let mut p = spawn(dir.path(), &[]);
    wait_for(&mut p, "> ", T);
    p.send(ControlCode::EndOfText);
    wait_for(&mut p, "to quit", T);
    p.send(ControlCode::EndOfText);
    assert_eq!(exit_code(&p), 130);
}

/// The second turn's greedy answer equals what a fresh process gives for the
/// same text: the kept KV cache is exact, and the turn's tokens are the
/// tokenization of the whole running text.
#[test]
fn second_turn_equals_a_fresh_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &["--temp", "0", "-n", "20"]);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, "The old man walked");
    wait_for(&mut p, TURN_END, T);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, "Then he said");
    wait_for(&mut p, TURN_END, T);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, "/stats");
    let stats = wait_for(&mut p, "after Enter", T);
    eprintln!("/stats after a 20-token turn: {stats}");
    let saved = dir.path().join("s.json");
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    send_line(&mut p, "/exit");
    assert_eq!(exit_code(&p), 0);

    let text = saved_text(&saved);
    let at = text
        .find("Then he said\n")
        .expect("second input in the text")
        + 13;
    let (history, answer) = text.split_at(at);
    assert!(!answer.is_empty());
    assert_eq!(complete(history, 20), answer);
}

/// `gptq chat ARGS -m MODEL` with `input` on a pipe as stdin (closed after
/// it), stdout and stderr captured.
fn chat_piped(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("chat")
        .args(args)
        .arg("-m")
        .arg(model())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn piped_stdin_is_one_prompt_and_one_continuation() {
    let out = chat_piped(
        &["--temp", "0", "-n", "16", "-t", "2"],
        b"The old man walked\n",
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout, complete("The old man walked", 16) + "\n");
    // Logs and timings are on stderr only.
    assert!(stderr.contains("[ prompt:"), "{stderr}");
    assert!(!stdout.contains("t/s"));

    // A full context keeps the most recent window and says so once per trim
    // on stderr; stdout still gets exactly the continuation.
    let out = chat_piped(
        &["--temp", "0", "-n", "100", "--ignore-eos", "-c", "48"],
        b"The old man walked",
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("context full (48 tokens)"), "{stderr}");
    assert!(
        !String::from_utf8(out.stdout)
            .unwrap()
            .contains("context full")
    );

    // Empty stdin (e.g. < /dev/null) does not wait for anything.
    let out = Command::new(BIN)
        .args(["chat", "--temp", "0", "-n", "4", "-m"])
        .arg(model())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// A reverse prompt stops the answer and is handed back as the next line's
/// prefix: what the person types goes right after it.
#[test]
fn reverse_prompt_is_handed_back() {
    let free = complete("The old man walked\n", 12);
    let stop = free
        .split_whitespace()
        .nth(1)
        .expect("two words of greedy text")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &["--temp", "0", "-n", "12", "-r", &stop]);
    wait_for(&mut p, "> ", T);
    send_line(&mut p, "The old man walked");
    wait_for(&mut p, TURN_END, T);
    // The next prompt is the reverse prompt itself.
    wait_for(&mut p, "t/s ]", T);
    wait_for(&mut p, &stop, T);
    send_line(&mut p, " and so on");
    wait_for(&mut p, TURN_END, T);
    let saved = dir.path().join("s.json");
    send_line(&mut p, &format!("/save {}", saved.display()));
    wait_for(&mut p, "saved to", T);
    p.send(ControlCode::EndOfTransmission);
    assert_eq!(exit_code(&p), 0);
    let at = free.find(&stop).unwrap() + stop.len();
    let expected = format!("The old man walked\n{} and so on\n", &free[..at]);
    let text = saved_text(&saved);
    assert!(
        text.starts_with(&expected),
        "{text:?} should start with {expected:?}"
    );
}
