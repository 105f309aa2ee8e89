//! The converter killed (SIGKILL) at random moments never leaves a partial
//! target: after each kill the target is absent or byte-identical to a
//! complete conversion. A killed run's temporary file may remain beside the
//! target (nothing runs at SIGKILL); the next conversion to that target
//! removes it, so at most one is ever left, and none after a finished run.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join(name)
}

fn spawn(out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gptq-convert"))
        .arg(fixture("tiny-scaled"))
        .arg("-o")
        .arg(out)
        .args(["--type", "q8_0", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gptq-convert runs")
}

/// Temporary files beside the target (`.<name>.XXXXXX.tmp`).
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".model.gguf.") && n.ends_with(".tmp"))
        .collect()
}

/// xorshift64, for reproducible kill times.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn killed_conversions_leave_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");

    let start = Instant::now();
    let status = spawn(&out).wait().unwrap();
    let full = start.elapsed();
    assert!(status.success());
    let complete = std::fs::read(&out).unwrap();
    gptq_core::gguf::GgufFile::parse(&complete).expect("a complete conversion parses");
    assert!(temps(dir.path()).is_empty());

    let rounds = 40;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut absent, mut whole) = (0, 0);
    for round in 0..rounds {
        std::fs::remove_file(&out).ok();
        // Kill anywhere from before the process starts working to just after
        // a complete run would have finished.
        let delay = full.mul_f64((next(&mut rng) % 1200) as f64 / 1000.0);
        let mut child = spawn(&out);
        std::thread::sleep(delay);
        child.kill().ok();
        child.wait().unwrap();
        match std::fs::read(&out) {
            Ok(bytes) => {
                assert!(
                    bytes == complete,
                    "round {round} (killed after {delay:?}): the target is not the complete file \
                     ({} bytes, want {})",
                    bytes.len(),
                    complete.len()
                );
                whole += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "round {round}");
                absent += 1;
            }
        }
        let left = temps(dir.path());
        assert!(
            left.len() <= 1,
            "round {round}: temporary files pile up: {left:?}"
        );
    }
    eprintln!("{rounds} kills (full run {full:?}): target absent {absent}, complete {whole} times");

    // A finished run removes whatever a killed one left.
    assert!(spawn(&out).wait().unwrap().success());
    assert_eq!(std::fs::read(&out).unwrap(), complete);
    assert_eq!(temps(dir.path()), Vec::<String>::new());
    // Waiting for the children avoids zombies; wall time stays a few seconds.
    assert!(start.elapsed() < Duration::from_secs(600));
}
