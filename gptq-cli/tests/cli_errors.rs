//! The `gptq` binary end to end: a greedy completion on the default model, and
//! bad input of every kind ending in one clear error line and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn gptq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gptq"));
    c.env_remove("GPTQ_MODEL").env_remove("GPTQ_KERNEL");
    c.stdin(Stdio::null());
    c
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join("trained-small-q8_0.gguf")
}

fn run(args: &[&str]) -> Output {
    gptq().args(args).output().expect("gptq runs")
}

/// Runs a `--json` command that must succeed and returns its JSON.
fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

/// Exits non-zero with exactly one non-empty stderr line that contains every
/// piece of `want`, and nothing on stdout.
fn assert_one_error_line(out: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code (a panic exits 101): {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected, got: {err}");
    assert!(lines[0].starts_with("gptq: error: "), "{err}");
    for w in want {
        assert!(lines[0].contains(w), "'{w}' missing from: {err}");
    }
    assert!(out.stdout.is_empty(), "stdout must stay clean");
}

#[test]
fn greedy_completion_on_the_default_model_prints_text_and_ids() {
    let out = run(&[
        "complete",
        "-p",
        "Hello, my dog is cute",
        "-n",
        "8",
        "--temp",
        "0",
        "--print-ids",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.trim_end().lines().last().unwrap();
    let ids: Vec<u32> = last.split(',').map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids.len(), 8);
    // The Q8_0 default model keeps transformers' greedy start (", and\n the").
    assert_eq!(&ids[..3], &[11, 290, 198]);
    assert!(stderr.contains("eval time"), "timing summary on stderr");
}

#[test]
fn missing_model_file_names_the_path() {
    let out = run(&["-m", "/nonexistent/model.gguf", "-p", "x"]);
    assert_one_error_line(&out, &["/nonexistent/model.gguf"]);
}

#[test]
fn model_path_that_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["-m", dir.path().to_str().unwrap(), "-p", "x"]);
    assert_one_error_line(&out, &[dir.path().to_str().unwrap()]);
}

#[test]
fn wrong_magic_and_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(default_model()).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "magic.gguf",
            [b"GGML".as_slice(), &good[4..]].concat(),
            "magic",
        ),
        ("empty.gguf", Vec::new(), "byte"),
        ("header.gguf", good[..20].to_vec(), "byte"),
        ("meta.gguf", good[..4096].to_vec(), "byte"),
        ("data.gguf", good[..good.len() - 1000].to_vec(), ""),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = run(&["info", p.to_str().unwrap()]);
        assert_one_error_line(&out, &[want]);
        let out = run(&["-m", p.to_str().unwrap(), "-p", "x", "-n", "1"]);
        assert_one_error_line(&out, &[name]);
    }
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(default_model()).unwrap();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    let p = dir.path().join("v7.gguf");
    std::fs::write(&p, bytes).unwrap();
    let out = run(&["-m", p.to_str().unwrap(), "-p", "x"]);
    assert_one_error_line(&out, &["version"]);
}

#[test]
fn prompt_longer_than_the_context() {
    let long = "word ".repeat(400);
    let out = run(&["-p", &long, "-n", "4"]);
    assert_one_error_line(&out, &["prompt", "context"]);
    let out = run(&["-p", "a b c d e f g h", "-c", "4", "-n", "4"]);
    assert_one_error_line(&out, &["prompt", "context"]);
    let out = run(&["-p", "x", "-c", "100000"]);
    assert_one_error_line(&out, &["context"]);
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["--no-such-flag"][..],
        &["-n", "many"],
        &["--temp", "hot"],
        &["perplexity"],
        &["-p", "x", "-l", "15043"],
        &["-p", "x", "--logit-bias", "hello+1"],
        &["-p", "x", "-l", "15043+nan"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
    }
    for (args, want) in [
        (&["-p", "x", "--temp=-1"][..], "temperature"),
        (&["-p", "x", "--top-p", "0"], "top-p"),
        (&["-p", "x", "-t", "0"], "-t"),
        (&["-p", "x", "-s", "-5"], "seed"),
        (&["-p", "x", "-l", "99999999+1"], "vocabulary"),
        (
            &["-p", "x", "--presence-penalty", "1", "--repeat-last-n", "0"],
            "--presence-penalty",
        ),
        (
            &["-p", "x", "--frequency-penalty", "inf"],
            "frequency penalty",
        ),
    ] {
        let out = run(args);
        assert_one_error_line(&out, &[want]);
    }
}

/// A successful `gptq bench` run's stdout and the test column of its table
/// rows, in order.
fn bench_tests(out: &Output) -> (String, Vec<String>) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let tests = stdout
        .lines()
        .filter(|l| l.starts_with("| trained-small"))
        .map(|l| l.split('|').nth(5).unwrap().trim().to_string())
        .collect();
    (stdout, tests)
}

/// `gptq bench` takes llama-bench's value lists (`-p 8,16`, repeated flags)
/// and reports one row per test; `--json` reports one test of each kind and
/// refuses lists.
#[test]
fn bench_runs_each_listed_size() {
    let out = run(&[
        "bench",
        "-p",
        "8,16",
        "-p",
        "0",
        "-n",
        "2,3",
        "-r",
        "1",
        "--no-membw",
    ]);
    let (stdout, tests) = bench_tests(&out);
    assert_eq!(tests, ["pp8", "pp16", "tg2", "tg3"], "{stdout}");
    assert!(stdout.contains("tg2 weight bandwidth") && stdout.contains("tg3 weight bandwidth"));
    let v = run_json(&[
        "bench",
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "--no-membw",
        "--json",
    ]);
    assert_eq!(
        (v["n_prompt"].as_u64(), v["n_gen"].as_u64()),
        (Some(8), Some(2))
    );
    assert!(v["pp_tps"].as_f64().unwrap() > 0.0 && v["tg_tps"].as_f64().unwrap() > 0.0);
    let out = run(&["bench", "-p", "8,16", "-n", "2", "--json"]);
    assert_one_error_line(&out, &["--json", "once per value"]);
}

/// Decode against the streaming reads: each tg test's line gives the median
/// of the repetitions' own ratios and their range, and `--json` the medians.
#[test]
fn bench_pairs_decode_with_the_streaming_reads() {
    let out = run(&["bench", "-p", "0", "-n", "2", "-r", "3", "--membw-mib", "4"]);
    let (stdout, tests) = bench_tests(&out);
    assert_eq!(tests, ["tg2"], "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("streaming read on"))
        .unwrap_or_else(|| panic!("no streaming-read line: {stdout}"));
    for part in [
        "of 4 MiB, read after each timed repetition",
        "median of the repetitions' ratios",
        "of the weights'",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    // Two tg tokens, then `extra`, as JSON.
    let json = |extra: &[&str]| run_json(&[&["bench", "-p", "0", "-n", "2"], extra].concat());
    let v = json(&["-r", "2", "--membw-mib", "4", "--json"]);
    for key in [
        "membw_gbps",
        "membw_weights_gbps",
        "tg_membw_pct",
        "tg_membw_weights_pct",
    ] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
        assert!(x.is_finite() && x > 0.0, "{key}: {x}");
    }
    // Without the reads: no line, no keys.
    let v = json(&["-r", "1", "--no-membw", "--json"]);
    assert!(v.get("tg_membw_pct").is_none(), "{v}");
}

/// `--gp PP,TG` (ik_llama.cpp's `-gp`): generation timed after an untimed
/// prompt, one row per pair; a pair that is not two positive counts, one
/// past the context and one with `--json` are refused.
#[test]
fn bench_generation_after_a_prompt() {
    let out = run(&[
        "bench", "-p", "0", "-n", "0", "--gp", "8,2", "--gp", "16,3", "-r", "1",
    ]);
    let (stdout, tests) = bench_tests(&out);
    assert_eq!(tests, ["tg2@pp8", "tg3@pp16"], "{stdout}");
    for bad in ["8", "8,0", "0,8", "a,b"] {
        assert_usage_error(&["bench", "--gp", bad], &["--gp", "PP,TG"]);
    }
    let out = run(&["bench", "-p", "0", "-n", "0", "--gp", "250,10"]);
    assert_one_error_line(&out, &["--gp 250,10", "context of 256"]);
    let out = run(&["bench", "--gp", "8,2", "--json"]);
    assert_one_error_line(&out, &["--json", "--gp"]);
}

#[test]
fn perplexity_json_on_the_default_model() {
    let text = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join("text")
        .join("heldout-books.txt");
    let v = run_json(&[
        "perplexity",
        "-f",
        text.to_str().unwrap(),
        "-c",
        "256",
        "--json",
    ]);
    assert_eq!(v["chunks"], 156);
    assert_eq!(v["tokens"], 19812);
    let ppl = v["ppl"].as_f64().unwrap();
    // Q8_0 of a model whose F32 figure is 174.943 (transformers).
    assert!((ppl - 174.943).abs() / 174.943 < 0.01, "{ppl}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    for args in [&["info", "--full"][..], &["tokenize", "-p", "x"]] {
        let mut child = gptq()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is gone: the rest of the output meets a closed pipe.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// A usage error (status 2, clap's "error:" line and usage) that says `want`.
fn assert_usage_error(args: &[&str], want: &[&str]) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: '{w}' missing from: {err}");
    }
}

#[test]
fn interactive_flags_are_refused_outside_a_session() {
    for (flags, name) in [
        (&["-r", "User:"][..], "-r/--reverse-prompt"),
        (&["--reverse-prompt=User:"], "-r/--reverse-prompt"),
        (&["--color", "never"], "--color"),
        (&["--history-file", "h.txt"], "--history-file"),
        (&["--no-newline"], "--no-newline"),
    ] {
        for sub in [&["complete"][..], &[]] {
            let args = [sub, &["-p", "x"], flags].concat();
            assert_usage_error(&args, &[name, "interactive session", "-i"]);
        }
    }
}

#[test]
fn completion_flags_are_refused_in_a_session() {
    for flag in ["--print-ids", "--display-prompt"] {
        assert_usage_error(&["complete", "-i", flag], &[flag, "one-shot completion"]);
        assert_usage_error(&["-i", flag], &[flag, "one-shot completion"]);
        assert_usage_error(&["chat", flag], &[flag]);
    }
    assert_usage_error(&["chat", "-i"], &["-i"]);
    assert_usage_error(&["chat", "--interactive"], &["--interactive"]);
}

#[test]
fn line_editor_flags_are_refused_without_a_terminal() {
    // stdin is /dev/null here: the session reads it as one prompt.
    for (flags, name) in [
        (&["--color", "always"][..], "--color"),
        (&["--history-file", "h.txt"], "--history-file"),
        (&["--no-newline"], "--no-newline"),
    ] {
        for sub in [&["chat"][..], &["complete", "-i"]] {
            let args = [sub, flags].concat();
            assert_usage_error(&args, &[name, "stdin is not a terminal"]);
        }
    }
    // A reverse prompt still stops a piped completion: accepted.
    let out = run(&["chat", "-n", "2", "--temp", "0", "-r", "zzz"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every subcommand that opens a file names it once and says the OS error
/// once.
#[test]
fn a_missing_file_is_reported_once() {
    let text = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/text/heldout-books.txt")
        .display()
        .to_string();
    let (model, prompt) = ("/nonexistent/m.gguf", "/nonexistent/p.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-m", model, "-p", "x"], model),
        (vec!["complete", "-m", model, "-p", "x"], model),
        (vec!["complete", "-f", prompt], prompt),
        (vec!["chat", "-m", model], model),
        (vec!["chat", "-f", prompt], prompt),
        (vec!["perplexity", "-m", model, "-f", &text], model),
        (vec!["perplexity", "-f", prompt], prompt),
        (vec!["bench", "-m", model], model),
        (vec!["info", model], model),
        (vec!["info", "-m", model], model),
        (vec!["tokenize", "-m", model, "-p", "x"], model),
        (vec!["tokenize", "-f", prompt], prompt),
    ];
    for (args, file) in cases {
        let out = run(&args);
        assert_one_error_line(&out, &[file]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches(file).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("(os error 2)").count(), 1, "{args:?}: {err}");
    }
}
