//! `gptq chat` driven through a real pseudo-terminal, and through a pipe.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Pty, T, model, spawn_chat};

/// Starts `gptq chat` on the default model, 2 threads.
fn spawn(dir: &Path, extra: &[&str]) -> Pty {
    spawn_chat(dir, &model(), &[&["-t", "2"], extra].concat())
}

/// The prompt after a turn: the per-turn timing line, then "> ".
const TURN_END: &str = "generation:";

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
    p.wait_for("/help", T);
    p.wait_for("> ", T);

    // A first turn streams the greedy continuation of the typed line.
    let expected = complete("The old man walked\n", 12);
    p.send_line("The old man walked");
    let shown = p.wait_for(TURN_END, T);
    assert!(
        shown.contains(expected.trim()),
        "expected {expected:?} in {shown:?}"
    );
    p.wait_for("> ", T);

    // /stats reports the time to the first token.
    p.send_line("/stats");
    let stats = p.wait_for("after Enter", T);
    eprintln!("/stats after a 12-token turn: {stats}");
    p.wait_for("> ", T);

    // /regen redoes the answer: greedy, so the same text again.
    let saved = dir.path().join("s.json");
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    let before = saved_text(&saved);
    p.send_line("/regen");
    p.wait_for(TURN_END, T);
    p.wait_for("> ", T);
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    assert_eq!(saved_text(&saved), before);

    // Ctrl-C in the middle of a long generation stops it and gives the prompt
    // back; the session goes on.
    p.send_line("/set n 100000");
    p.wait_for("n = 100000", T);
    p.send_line("/set ignore-eos on");
    p.wait_for("ignore-eos = on", T);
    p.send_line("Once upon a time");
    // Text streams while the turn is still going: two lines of it appear
    // long before 100000 tokens are done.
    p.wait_for("Once upon a time", T);
    p.wait_for("\n", T);
    let streamed = p.wait_for("\n", T);
    assert!(!streamed.trim().is_empty());
    assert!(!streamed.contains(TURN_END));
    p.ctrl_c();
    p.wait_for("stopped (Ctrl-C)", T);
    p.wait_for("> ", T);
    assert!(p.is_alive());
    p.send_line("/show");
    let show = p.wait_for("tokens used", T);
    let used: usize = show
        .rsplit("context: ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("context used in /show");
    assert!(used > 20, "the session kept its tokens: {show}");

    // /set, then another turn on the kept session.
    p.send_line("/set n 5");
    p.wait_for("n = 5", T);
    p.send_line("/set temp 0.7");
    p.wait_for("temp = 0.7", T);
    p.send_line("/show");
    p.wait_for("temp 0.7", T);
    p.send_line("The end.");
    p.wait_for(TURN_END, T);
    p.wait_for("> ", T);

    // /reset clears the text and the cache.
    p.send_line("/reset");
    p.wait_for("cleared", T);
    p.send_line("/show");
    p.wait_for("context: 0 of", T);

    // """ multi-line input.
    p.send_line("\"\"\"First line");
    p.wait_for("... ", T);
    p.send_line("second line\"\"\"");
    p.wait_for(TURN_END, T);
    p.wait_for("> ", T);
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    assert!(saved_text(&saved).starts_with("First line\nsecond line\n"));

    // A trailing backslash continues the line.
    p.send_line("/reset");
    p.wait_for("cleared", T);
    p.send_line("one\\");
    p.wait_for("... ", T);
    p.send_line("two");
    p.wait_for(TURN_END, T);
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    assert!(saved_text(&saved).starts_with("one\ntwo\n"));

    // A bracketed paste of several lines is one input.
    p.send_line("/reset");
    p.wait_for("cleared", T);
    p.send("\x1b[200~pasted one\npasted two\x1b[201~");
    p.send("\r");
    p.wait_for(TURN_END, T);
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    assert!(saved_text(&saved).starts_with("pasted one\npasted two\n"));

    // Ctrl-C at the prompt tells how to quit; /exit quits with 0.
    std::thread::sleep(Duration::from_millis(1100));
    p.ctrl_c();
    p.wait_for("to quit", T);
    std::thread::sleep(Duration::from_millis(1100));
    p.send_line("/exit");
    assert_eq!(p.exit_code(), 0);

    // The history file kept the lines.
    let history = std::fs::read_to_string(dir.path().join("history")).unwrap();
    assert!(history.contains("The old man walked"));
}

#[test]
fn ctrl_d_quits_with_0_and_double_ctrl_c_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &[]);
    p.wait_for("> ", T);
    p.send("\x04");
    assert_eq!(p.exit_code(), 0);

    let mut p = spawn(dir.path(), &[]);
    p.wait_for("> ", T);
    p.ctrl_c();
    p.wait_for("to quit", T);
    p.ctrl_c();
    assert_eq!(p.exit_code(), 130);
}

/// The second turn's greedy answer equals what a fresh process gives for the
/// same text: the kept KV cache is exact, and the turn's tokens are the
/// tokenization of the whole running text.
#[test]
fn second_turn_equals_a_fresh_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &["--temp", "0", "-n", "20"]);
    p.wait_for("> ", T);
    p.send_line("The old man walked");
    p.wait_for(TURN_END, T);
    p.wait_for("> ", T);
    p.send_line("Then he said");
    p.wait_for(TURN_END, T);
    p.wait_for("> ", T);
    p.send_line("/stats");
    let stats = p.wait_for("after Enter", T);
    eprintln!("/stats after a 20-token turn: {stats}");
    let saved = dir.path().join("s.json");
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    p.send_line("/exit");
    assert_eq!(p.exit_code(), 0);

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
    p.wait_for("> ", T);
    p.send_line("The old man walked");
    p.wait_for(TURN_END, T);
    // The next prompt is the reverse prompt itself.
    p.wait_for("t/s ]", T);
    p.wait_for(&stop, T);
    p.send_line(" and so on");
    p.wait_for(TURN_END, T);
    let saved = dir.path().join("s.json");
    p.send_line(&format!("/save {}", saved.display()));
    p.wait_for("saved to", T);
    p.send("\x04");
    assert_eq!(p.exit_code(), 0);
    let at = free.find(&stop).unwrap() + stop.len();
    let expected = format!("The old man walked\n{} and so on\n", &free[..at]);
    let text = saved_text(&saved);
    assert!(
        text.starts_with(&expected),
        "{text:?} should start with {expected:?}"
    );
}
