//! gptq's numerics on every block type against llama.cpp's: the perplexity of
//! each llama-quantize mix of the fixture models equals llama-perplexity's on
//! the same file to 1e-3 relative.
//!
//! `testdata/llama-perplexity/ppl.json` records llama-perplexity (llama.cpp
//! c392e50) on llama-quantize's mixes of gptq-convert's F32 files (with
//! output.weight), over the start of `heldout-books.txt`
//! (`testdata/llama-perplexity/make.sh` says how). gptq-convert writes the same
//! files byte for byte (`llama_quantize_identity.rs`), so this test makes them
//! here and scores them with gptq on every kernel path this CPU runs. The
//! models: trained-small (256 wide: the K-quants throughout) and tiny-scaled
//! (64 wide: its matrices fall back to IQ4_NL, Q5_0, Q5_1 and Q8_0).

mod common;

use std::sync::Arc;

use gptq_convert::{ConvertOptions, OutType, convert};
use gptq_core::gguf::{FileType, GgmlType};
use gptq_core::perplexity::perplexity;
use gptq_core::{KernelPath, Kernels, Model};
use serde_json::Value;

/// The text: `heldout-books.txt` up to the last line end before byte 24000.
fn text() -> String {
    let raw = std::fs::read(common::testdata().join("text/heldout-books.txt")).unwrap();
    let raw = &raw[..24000];
    let end = raw.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    String::from_utf8(raw[..end].to_vec()).unwrap()
}

fn check(model: &str) {
    let path = common::testdata().join("llama-perplexity/ppl.json");
    let want: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = text();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for e in want["ppl"].as_array().unwrap() {
        if e["model"] != model {
            continue;
        }
        let mix = e["mix"].as_str().unwrap();
        let out_type = match mix {
            "BF16" => OutType::Pure(GgmlType::BF16),
            m => OutType::Mix(FileType::from_name(m).unwrap()),
        };
        let file = dir.path().join(format!("{model}-{mix}.gguf"));
        let opts = ConvertOptions {
            out_type,
            output_weight: true,
            progress: false,
            ..ConvertOptions::default()
        };
        convert(&common::checkpoint(model), &file, &opts).expect("conversion");
        let n_ctx = e["ctx"].as_u64().unwrap() as usize;
        let llama = e["ppl"].as_f64().unwrap();
        // The scalar path only on the small model: its LM head is 64 wide
        // (twins.rs checks the scalar table against every other).
        let paths = KernelPath::available()
            .into_iter()
            .filter(|&p| p != KernelPath::Scalar || model == "tiny-scaled");
        for path in paths {
            let m = Arc::new(Model::load_with_kernels(&file, Kernels::new(path).unwrap()).unwrap());
            let tokens = m.tokenizer().encode(&text);
            let got = perplexity(&m, &tokens, n_ctx, |_, _| {}).unwrap().ppl;
            let rel = (got - llama).abs() / llama;
            eprintln!("{model} {mix} {path}: gptq {got:.4} llama.cpp {llama:.4} ({rel:.1e})");
            assert!(
                rel <= 1e-3,
                "{model} {mix} {path}: gptq {got} vs llama.cpp {llama}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{model}: only {checked} mixes recorded");
}

#[test]
fn trained_small_mixes_match_llama_perplexity() {
    check("trained-small");
}

#[test]
fn tiny_scaled_mixes_with_fallback_types_match_llama_perplexity() {
    check("tiny-scaled");
}
