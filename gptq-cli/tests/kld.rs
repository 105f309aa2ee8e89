//! `gptq perplexity --kl-divergence-base / --kl-divergence`: llama-perplexity's
//! base file written and read back, and a base file written by
//! llama-perplexity itself (testdata/kld/) read with the statistics it
//! printed for the same pair of models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn gptq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gptq"));
    c.env_remove("GPTQ_MODEL").env_remove("GPTQ_KERNEL");
    c.stdin(Stdio::null());
    c
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
}

fn run(args: &[&str]) -> Output {
    let out = gptq().args(args).output().expect("gptq runs");
    assert!(
        out.status.success(),
        "gptq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A model compared with its own base file: no divergence, every top token
/// the same, the two perplexities equal.
#[test]
fn base_file_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.kld");
    let base_s = base.to_str().unwrap();
    let text = testdata().join("text").join("heldout-books.txt");
    let out = run(&[
        "perplexity",
        "-f",
        text.to_str().unwrap(),
        "-c",
        "32",
        "--chunks",
        "8",
        "--kl-divergence-base",
        base_s,
        "--json",
    ]);
    let plain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Header, 8·32 tokens, 8 chunks of 15 rows of 2·⌈50257/2⌉ + 4 u16.
    let len = std::fs::metadata(&base).unwrap().len();
    assert_eq!(len, 20 + 8 * 32 * 4 + 8 * 15 * 50262 * 2);
    let out = run(&[
        "perplexity",
        "--kl-divergence-base",
        base_s,
        "--kl-divergence",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 120);
    assert!(v["kld_mean"].as_f64().unwrap().abs() < 1e-4, "{v}");
    assert!(v["kld_p99"].as_f64().unwrap().abs() < 1e-3, "{v}");
    assert_eq!(v["same_top_p"], 1.0);
    assert!(v["rms_dp"].as_f64().unwrap() < 1e-3, "{v}");
    let (p, pb, pp) = (
        v["ppl"].as_f64().unwrap(),
        v["ppl_base"].as_f64().unwrap(),
        plain["ppl"].as_f64().unwrap(),
    );
    assert!((p - pp).abs() / pp < 1e-6, "{p} vs {pp}");
    assert!((pb - pp).abs() / pp < 1e-3, "{pb} vs {pp}");
    // The text report has llama-perplexity's sections.
    let out = run(&[
        "perplexity",
        "--kl-divergence-base",
        base_s,
        "--kl-divergence",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    for want in [
        "====== Perplexity statistics ======",
        "Mean PPL(Q)/PPL(base)",
        "====== KL divergence statistics ======",
        "Mean    KLD:",
        "99.0%   KLD:",
        "Median  KLD:",
        "====== Token probability statistics ======",
        "RMS Δp    :",
        "Same top p: 100.000 ±",
    ] {
        assert!(report.contains(want), "{want:?} missing from:\n{report}");
    }
}

#[test]
fn bad_base_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.kld");
    std::fs::write(&bad, b"_logits_\x20\x00\x00\x00").unwrap();
    let out = gptq()
        .args([
            "perplexity",
            "--kl-divergence-base",
            bad.to_str().unwrap(),
            "--kl-divergence",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.kld") && err.contains("header"), "{err}");
    // -f has no use with --kl-divergence: a usage error.
    let out = gptq()
        .args([
            "perplexity",
            "-f",
            "x",
            "--kl-divergence-base",
            "b",
            "--kl-divergence",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The numbers of one line of the per-chunk table (PPL, ln ratio, KLD, Δp
/// RMS %, same top %), values without their errors.
fn table_line(line: &str) -> Option<(usize, [f64; 5])> {
    let mut it = line.split_whitespace();
    let chunk: usize = it.next()?.parse().ok()?;
    let nums: Vec<f64> = it.filter_map(|t| t.parse().ok()).collect();
    // value ± err pairs: take every other number.
    (nums.len() >= 10).then(|| (chunk, [nums[0], nums[2], nums[4], nums[6], nums[8]]))
}

/// A base file written by llama-perplexity (F32 trained-small, -c 32,
/// 2 chunks of heldout-books.txt): gptq reads it, and its figures for the
/// default model (the Q8_0 weights) agree with what llama-perplexity printed
/// for the same Q8_0 weights against the same file
/// (testdata/kld/llama-perplexity-q8_0.txt).
#[test]
fn reads_llama_perplexity_base_files() {
    let dir = testdata().join("kld");
    let base = dir.join("trained-small-f32-c32.kld");
    let llama = std::fs::read_to_string(dir.join("llama-perplexity-q8_0.txt")).unwrap();
    let want: Vec<(usize, [f64; 5])> = llama.lines().filter_map(table_line).collect();
    assert_eq!(want.len(), 2, "{llama}");
    let out = run(&[
        "perplexity",
        "--kl-divergence-base",
        base.to_str().unwrap(),
        "--kl-divergence",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let got: Vec<(usize, [f64; 5])> = err.lines().filter_map(table_line).collect();
    assert_eq!(got.len(), 2, "{err}");
    for ((c, g), (_, w)) in got.iter().zip(&want) {
        // 15 positions per chunk, and Q8_0 products that round differently
        // from ggml's (the F32 model reproduces the base to 5e-5 in ln PPL):
        // PPL to 0.5 %, ln ratio to 0.005, KLD to 10 % (printed to 5
        // decimals), Δp RMS to 0.05 %, same top within one position.
        assert!(
            (g[0] - w[0]).abs() / w[0] < 5e-3,
            "chunk {c} PPL {} vs {}",
            g[0],
            w[0]
        );
        assert!(
            (g[1] - w[1]).abs() <= 5e-3,
            "chunk {c} ln ratio {} vs {}",
            g[1],
            w[1]
        );
        assert!(
            (g[2] - w[2]).abs() <= 0.1 * w[2].abs() + 1e-5,
            "chunk {c} KLD {} vs {}",
            g[2],
            w[2]
        );
        assert!(
            (g[3] - w[3]).abs() <= 0.05,
            "chunk {c} RMS Δp {} vs {}",
            g[3],
            w[3]
        );
        assert!(
            (g[4] - w[4]).abs() <= 100.0 / 15.0 + 1e-3,
            "chunk {c} same top {} vs {}",
            g[4],
            w[4]
        );
    }
}
