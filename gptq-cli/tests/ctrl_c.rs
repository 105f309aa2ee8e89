//! Ctrl-C while the model writes, at random moments, through a real
//! pseudo-terminal: every one must stop the turn and give the prompt back
//! quickly, whatever the turn was doing (evaluating the prompt, evaluating the
//! kept window again after the context filled, sampling, streaming), and the
//! session must go on as if nothing happened.
//!
//! Two models: the default one (256 positions, so with `-n 100000` the window
//! slides every ~128 tokens and many Ctrl-Cs land in a slide's re-evaluation),
//! and a small random one of 1,024 positions written at test time, reset every
//! turn so that it never slides. Each on 2 threads and on 1. Half the Ctrl-Cs
//! come within 20 ms of Enter (prompt evaluation), the rest anywhere in the
//! first [`MAX_DELAY_MS`]; every turn starts within a second of the last
//! Ctrl-C, which once made the program quit.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, T, model, spawn_chat};
use gptq_core::HParams;
use gptq_core::gguf::GgmlType;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};

/// Turns per configuration (four configurations).
const TURNS: usize = 26;
/// The longest a Ctrl-C may take to bring the prompt back.
const MAX_LATENCY: Duration = Duration::from_millis(300);
/// The Ctrl-C comes this long after Enter, at most.
const MAX_DELAY_MS: u64 = 250;

/// xorshift64*: the moments and the texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random model of 1,024 positions and GPT-2's vocabulary, small enough
/// to write in a moment, slow enough per token (about 30 M weights) that a
/// turn of 900 tokens outlasts [`MAX_DELAY_MS`].
fn write_no_slide_model(path: &Path) {
    let hp = HParams {
        n_vocab: 50257,
        n_ctx: 1024,
        n_embd: 384,
        n_ff: 1536,
        n_layer: 6,
        n_head: 6,
        ln_eps: 1e-5,
    };
    write_synthetic(path, &SyntheticSpec::new(hp, GgmlType::Q8_0)).unwrap();
}

/// What one configuration saw.
#[derive(Debug, Default)]
struct Figures {
    turns: usize,
    stopped: usize,
    /// Turns that had ended by themselves before the Ctrl-C came.
    ended_first: usize,
    max_latency: Duration,
    /// Window slides the turns went through.
    slides: usize,
}

/// `turns` turns of `gptq chat ARGS` on `model`, each stopped by a Ctrl-C
/// at a random moment after Enter (`reset`: each turn starts from no text).
fn ctrl_c_turns(model: &Path, args: &[&str], reset: bool, rng: &mut Rng, turns: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_chat(dir.path(), model, args);
    p.poll = Duration::from_millis(2);
    p.wait_for("> ", T);
    let mut f = Figures::default();
    for turn in 0..turns {
        if reset {
            p.send_line("/reset");
            p.wait_for("cleared", T);
            p.wait_for("> ", T);
        }
        let line = text(rng, if reset { 150 } else { 60 });
        p.send_line(&line);
        // The line editor ends the line once it has given the terminal back:
        // from here on Ctrl-C is a signal. Half the Ctrl-Cs come in the first
        // 20 ms (prompt evaluation), the others anywhere up to MAX_DELAY_MS.
        p.wait_for("\n", T);
        let max = if rng.below(2) == 0 { 20 } else { MAX_DELAY_MS };
        p.drain_for(Duration::from_micros(rng.below(max * 1000 + 1)));
        p.ctrl_c();
        let sent = Instant::now();
        // The turn's end: "stopped" when the Ctrl-C stopped it; the timing
        // line alone when it had ended before.
        let shown = p.wait_for("t/s ]", T);
        p.wait_for("> ", T);
        let latency = sent.elapsed();
        let stopped = shown.contains("stopped (Ctrl-C)");
        f.turns += 1;
        f.slides += shown.matches("context full").count();
        if stopped {
            f.stopped += 1;
            f.max_latency = f.max_latency.max(latency);
            assert!(
                latency <= MAX_LATENCY,
                "turn {turn} of {args:?}: the prompt came back {latency:?} after Ctrl-C; the terminal showed:\n{shown}"
            );
        } else {
            // Too late for the turn: the Ctrl-C reached the prompt (as a key,
            // which says how to quit) or was dropped there. Not a second one
            // within a second, which would quit.
            f.ended_first += 1;
            p.drain_for(Duration::from_millis(1100));
        }
        assert!(p.is_alive(), "turn {turn} of {args:?}: gptq ended");
    }
    // The session is intact: its bookkeeping agrees, and a greedy turn gives
    // what a fresh process gives for the same text.
    p.send_line("/show");
    let show = p.wait_for("characters", T);
    assert!(show.contains("context: "), "{show}");
    p.send_line("/set temp 0");
    p.wait_for("temp = 0", T);
    p.send_line("/set n 8");
    p.wait_for("n = 8", T);
    p.send_line("/reset");
    p.wait_for("cleared", T);
    p.send_line("The old man walked");
    let answer = p.wait_for("t/s ]", T);
    p.send_line("/exit");
    assert_eq!(p.exit_code(), 0);
    let expected = complete(model, &args[..2], "The old man walked\n", 8);
    assert!(
        answer.contains(expected.trim()),
        "after {turns} stopped turns the greedy answer {answer:?} differs from a fresh one {expected:?}"
    );
    f
}

/// Random printable text of up to `max` characters.
fn text(rng: &mut Rng, max: u64) -> String {
    const WORDS: [&str; 12] = [
        "the", "old", "man", "walked", "into", "a", "quiet", "town", "and", "said", "nothing",
        "more",
    ];
    let mut s = String::from("Once upon a time");
    let len = rng.below(max) as usize;
    while s.len() < len {
        s.push(' ');
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// `gptq complete` greedy, for comparison.
fn complete(model: &Path, threads: &[&str], prompt: &str, n: usize) -> String {
    let out = Command::new(BIN)
        .args(["complete", "--temp", "0", "-n"])
        .arg(n.to_string())
        .args(threads)
        .arg("-m")
        .arg(model)
        .arg("-p")
        .arg(prompt)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_ctrl_c_while_the_model_writes_stops_the_turn() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("ctrl_c: seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let no_slide = dir.path().join("no-slide.gguf");
    write_no_slide_model(&no_slide);
    let start = Instant::now();
    let mut total = 0;
    for threads in ["2", "1"] {
        let sliding = [
            "-t",
            threads,
            "--temp",
            "0.8",
            "--ignore-eos",
            "-n",
            "100000",
        ];
        let f = ctrl_c_turns(&model(), &sliding, false, &mut rng, TURNS);
        eprintln!("ctrl_c: default model (sliding window), {threads} thread(s): {f:?}");
        assert!(f.slides > 0, "no window slide happened: {f:?}");
        total += f.stopped;

        let fixed = ["-t", threads, "--temp", "0.8", "--ignore-eos", "-n", "900"];
        let f = ctrl_c_turns(&no_slide, &fixed, true, &mut rng, TURNS);
        eprintln!("ctrl_c: 1024-position model (no slide), {threads} thread(s): {f:?}");
        assert_eq!(f.slides, 0, "{f:?}");
        total += f.stopped;
    }
    eprintln!(
        "ctrl_c: {total} turns stopped by Ctrl-C in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(total >= 100, "only {total} turns were stopped by Ctrl-C");
}
