//! gptq's numerics on every block type against llama.cpp's: the perplexity of
//! each llama-quantize mix of the trained fixture model equals
//! llama-perplexity's on the same file to 1e-3 relative.
//!
//! `testdata/llama-perplexity/ppl.json` records llama-perplexity (ik_llama.cpp
//! 8337e4cd as `ppl`, mainline llama.cpp c392e50 as `mainline`) on
//! llama-quantize's mixes of gptq-convert's F32 files (with output.weight),
//! over the start of `heldout-books.txt` (`testdata/llama-perplexity/make.sh`
//! says how, and why ik_llama.cpp is the reference for the trained model). gptq-convert writes the same
//! files byte for byte (`llama_quantize_identity.rs`), so this test makes them
//! here and scores them with gptq on every kernel path this CPU runs. The
//! models: trained-small (256 wide: the K-quants throughout) and tiny-scaled
//! (64 wide: its matrices fall back to IQ4_NL, Q5_0, Q5_1 and Q8_0).
//!
//! tiny-scaled has random, enlarged weights and is numerically chaotic: the
//! two peers differ by up to 20 % on its files and gptq's own paths by up to
//! 7e-4, so its check is against mainline's numbers (ggml's activation
//! formats, which gptq uses) at 1e-2 (seen: 3.3e-3 at most), and leaves out
//! Q4_0 and Q4_1, which mainline computed on its AMX
//! backend (see make.sh). The trained model holds the 1e-3 bound.

mod common;

use std::sync::Arc;

use gptq_convert::{ConvertOptions, OutType, convert};
use gptq_core::gguf::{FileType, GgmlType};
use gptq_core::perplexity::perplexity;
use gptq_core::{KernelPath, Kernels, Model};
use serde_json::Value;

/// The text: `heldout-books.txt` up to the last line end before byte 12000.
fn text() -> String {
    let raw = std::fs::read(common::testdata().join("text/heldout-books.txt")).unwrap();
    let raw = &raw[..12000];
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
        let (field, bound) = match model {
            "tiny-scaled" if matches!(mix, "Q4_0" | "Q4_1") => continue,
            "tiny-scaled" => ("mainline", 1e-2),
            _ => ("ppl", 1e-3),
        };
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
        let llama = e[field].as_f64().unwrap();
        // The best path (AMX, where present, runs the AVX-512 kernels for
        // every type it has no tiles for) and AVX2, the laptops' path; the
        // scalar path only on the small model: its LM head is 64 wide.
        // twins.rs checks every table against the scalar one kernel by kernel.
        let mut paths = vec![KernelPath::best()];
        for p in [KernelPath::Avx2, KernelPath::Scalar] {
            let wanted = p != KernelPath::Scalar || model == "tiny-scaled";
            if wanted && !paths.contains(&p) && KernelPath::available().contains(&p) {
                paths.push(p);
            }
        }
        for path in paths {
            let m = Arc::new(Model::load_with_kernels(&file, Kernels::new(path).unwrap()).unwrap());
            let tokens = m.tokenizer().encode(&text);
            let got = perplexity(&m, &tokens, n_ctx, |_, _| {}).unwrap().ppl;
            let rel = (got - llama).abs() / llama;
            eprintln!("{model} {mix} {path}: gptq {got:.4} llama.cpp {llama:.4} ({rel:.1e})");
            assert!(
                rel <= bound,
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
