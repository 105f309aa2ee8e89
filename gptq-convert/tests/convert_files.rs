//! The converter's output: identical from either weights format, loadable,
//! atomic, and a clear error for every kind of bad input.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gptq_convert::{ConvertOptions, convert};
use gptq_core::Model;
use gptq_core::gguf::{GgmlType, GgufFile, MappedFile};

fn opts(ty: GgmlType) -> ConvertOptions {
    ConvertOptions {
        out_type: ty.into(),
        progress: false,
        name: Some("fixture".into()),
        ..ConvertOptions::default()
    }
}

/// A folder holding links to the named files of fixture `src` (and `config`,
/// when given, written as config.json).
fn folder(dir: &Path, src: &str, files: &[&str], config: Option<serde_json::Value>) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = dir.join(format!("{src}-{n}"));
    std::fs::create_dir_all(&out).unwrap();
    for f in files {
        let from = checkpoint(src).join(f).canonicalize().unwrap();
        std::os::unix::fs::symlink(from, out.join(f)).unwrap();
    }
    if let Some(c) = config {
        std::fs::write(out.join("config.json"), c.to_string()).unwrap();
    } else {
        std::os::unix::fs::symlink(checkpoint(src).join("config.json"), out.join("config.json"))
            .unwrap();
    }
    out
}

fn config_of(src: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(checkpoint(src).join("config.json")).unwrap())
        .unwrap()
}

fn err_of(dir: &Path, out: &Path) -> String {
    let e = convert(dir, out, &opts(GgmlType::F16)).expect_err("conversion should fail");
    format!("{e:#}")
}

fn no_output(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

#[test]
fn safetensors_and_pytorch_bin_give_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let st = folder(
        tmp.path(),
        "tiny-scaled",
        &["model.safetensors", "vocab.json", "merges.txt"],
        None,
    );
    let pt = folder(
        tmp.path(),
        "tiny-scaled",
        &["pytorch_model.bin", "vocab.json", "merges.txt"],
        None,
    );
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let a = tmp.path().join(format!("st-{ty}.gguf"));
        let b = tmp.path().join(format!("pt-{ty}.gguf"));
        convert(&st, &a, &opts(ty)).unwrap();
        convert(&pt, &b, &opts(ty)).unwrap();
        let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert!(
            a == b,
            "{ty}: safetensors and pytorch_model.bin conversions differ"
        );
    }
}

#[test]
fn hub_spelling_and_tokenizer_json_give_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.gguf");
    convert(&checkpoint("tiny-scaled"), &base, &opts(GgmlType::Q8_0)).unwrap();
    // Hub spelling: no `transformer.` prefix, legacy attn.bias buffers, n_ctx in config.
    let hub = tmp.path().join("hub.gguf");
    convert(
        &checkpoint("tiny-scaled-hubstyle"),
        &hub,
        &opts(GgmlType::Q8_0),
    )
    .unwrap();
    assert!(std::fs::read(&base).unwrap() == std::fs::read(&hub).unwrap());
    // tokenizer.json instead of vocab.json + merges.txt.
    let tj = folder(tmp.path(), "tiny-scaled", &["model.safetensors"], None);
    std::os::unix::fs::symlink(
        testdata().join("tokenizer").join("tokenizer.json"),
        tj.join("tokenizer.json"),
    )
    .unwrap();
    let out = tmp.path().join("tj.gguf");
    convert(&tj, &out, &opts(GgmlType::Q8_0)).unwrap();
    assert!(std::fs::read(&base).unwrap() == std::fs::read(&out).unwrap());
}

#[test]
fn output_follows_the_design_layout_and_loads() {
    let path = converted("trained-small", GgmlType::Q4_0);
    let f = MappedFile::open(&path).unwrap();
    let g = GgufFile::parse(f.bytes()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert!(
        g.get("general.alignment").is_none(),
        "llama.cpp's files carry no alignment key"
    );
    assert_eq!(g.get_str("general.architecture").unwrap(), "gpt2");
    assert_eq!(g.get_u64("general.file_type").unwrap(), 2);
    assert_eq!(g.get_u64("gpt2.context_length").unwrap(), 256);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        50257
    );
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        50000
    );
    let ty = |n: &str| g.tensor(n).unwrap().ty;
    assert_eq!(
        ty("token_embd.weight"),
        GgmlType::Q8_0,
        "the tied embedding stays Q8_0 in int4 files"
    );
    assert_eq!(ty("position_embd.weight"), GgmlType::F32);
    assert_eq!(ty("blk.0.attn_qkv.weight"), GgmlType::Q4_0);
    assert_eq!(ty("blk.3.ffn_down.bias"), GgmlType::F32);
    assert_eq!(
        g.tensor("blk.0.attn_qkv.weight").unwrap().dims,
        vec![256, 768]
    );
    assert!(g.tensor("output.weight").is_none());
    assert_eq!(g.tensors.len(), 2 + 4 * 12 + 2);
    Model::load(&path).unwrap();
}

/// `--output-weight` writes the tied head a second time as `output.weight`
/// (llama.cpp needs it); the model computes the same logits either way.
#[test]
fn separate_output_weight_gives_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("untied.gguf");
    let o = ConvertOptions {
        output_weight: true,
        ..opts(GgmlType::Q8_0)
    };
    convert(&checkpoint("trained-small"), &out, &o).unwrap();
    let untied = std::sync::Arc::new(Model::load(&out).unwrap());
    assert!(untied.has_output_weight());
    let tied = model("trained-small", GgmlType::Q8_0, gptq_core::Kernels::best());
    assert!(!tied.has_output_weight());
    {
        let f = MappedFile::open(&out).unwrap();
        let g = GgufFile::parse(f.bytes()).unwrap();
        assert_eq!(g.tensor("output.weight").unwrap().ty, GgmlType::Q8_0);
        assert_eq!(g.tensors.len(), 2 + 4 * 12 + 2 + 1);
    }
    let ids = [15496u32, 11, 616, 3290, 318, 13779];
    let logits = |m: &std::sync::Arc<Model>| {
        let mut s = gptq_core::Session::new(std::sync::Arc::clone(m), Default::default()).unwrap();
        s.feed(&ids).unwrap().to_vec()
    };
    assert_eq!(logits(&untied), logits(&tied));
}

#[test]
fn output_path_that_is_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = err_of(&checkpoint("tiny-scaled"), tmp.path());
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn missing_config_keys_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for key in ["n_embd", "n_head", "n_layer", "vocab_size", "n_positions"] {
        let mut c = config_of("tiny-scaled");
        c.as_object_mut().unwrap().remove(key);
        let dir = folder(
            tmp.path(),
            "tiny-scaled",
            &["model.safetensors", "vocab.json", "merges.txt"],
            Some(c),
        );
        let out = tmp.path().join("out.gguf");
        let e = err_of(&dir, &out);
        assert!(e.contains(&format!("missing key '{key}'")), "{key}: {e}");
        assert!(!out.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
    no_output(tmp.path());
}

#[test]
fn other_architectures_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config_of("tiny-scaled");
    c["model_type"] = serde_json::json!("llama");
    c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    let dir = folder(
        tmp.path(),
        "tiny-scaled",
        &["model.safetensors", "vocab.json", "merges.txt"],
        Some(c),
    );
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(
        e.contains("unsupported architecture") && e.contains("llama"),
        "{e}"
    );
    no_output(tmp.path());
}

#[test]
fn shapes_that_disagree_with_the_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config_of("tiny-scaled");
    c["n_embd"] = serde_json::json!(128);
    let dir = folder(
        tmp.path(),
        "tiny-scaled",
        &["model.safetensors", "vocab.json", "merges.txt"],
        Some(c),
    );
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(
        e.contains("has shape") && e.contains("config.json implies"),
        "{e}"
    );
    let mut c = config_of("tiny-scaled");
    c["n_layer"] = serde_json::json!(3);
    let dir = folder(
        tmp.path(),
        "tiny-scaled",
        &["model.safetensors", "vocab.json", "merges.txt"],
        Some(c),
    );
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(e.contains("missing tensor") && e.contains("blk.2."), "{e}");
    no_output(tmp.path());
}

/// Sizes in config.json far beyond the checkpoint: the tensor list (12 per
/// block), `3 · n_embd` and the vocabulary's padding were sized from them
/// before any tensor was compared (a trillion blocks or tokens asked for
/// terabytes; a huge n_embd overflowed). Now each is refused first.
#[test]
fn sizes_far_beyond_the_checkpoint_are_refused_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("n_layer", serde_json::json!(1_000_000_000_000u64)),
        ("vocab_size", serde_json::json!(1_000_000_000_000u64)),
        ("n_positions", serde_json::json!(1_000_000_000_000u64)),
        ("n_inner", serde_json::json!(1_000_000_000_000u64)),
    ] {
        let mut c = config_of("tiny-scaled");
        c[key] = value;
        let dir = folder(
            tmp.path(),
            "tiny-scaled",
            &["model.safetensors", "vocab.json", "merges.txt"],
            Some(c),
        );
        let e = err_of(&dir, &tmp.path().join("out.gguf"));
        assert!(e.contains(key) && e.contains("config.json"), "{key}: {e}");
    }
    let mut c = config_of("tiny-scaled");
    c["n_embd"] = serde_json::json!(u64::MAX / 2);
    c["n_head"] = serde_json::json!(1);
    c["n_inner"] = serde_json::json!(64);
    let dir = folder(
        tmp.path(),
        "tiny-scaled",
        &["model.safetensors", "vocab.json", "merges.txt"],
        Some(c),
    );
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(e.contains("n_embd"), "{e}");
    no_output(tmp.path());
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = folder(
        tmp.path(),
        "tiny-scaled",
        &["vocab.json", "merges.txt"],
        None,
    );
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(
        e.contains("model.safetensors") && e.contains("pytorch_model.bin"),
        "{e}"
    );
    let dir = folder(tmp.path(), "tiny-scaled", &["model.safetensors"], None);
    let e = err_of(&dir, &tmp.path().join("out.gguf"));
    assert!(e.contains("tokenizer"), "{e}");
    no_output(tmp.path());
}

#[test]
fn truncated_weights_fail_cleanly_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read(checkpoint("tiny-scaled").join("model.safetensors")).unwrap();
    for (i, cut) in [7usize, 100, src.len() / 2, src.len() - 1]
        .into_iter()
        .enumerate()
    {
        let dir = folder(
            tmp.path(),
            "tiny-scaled",
            &["vocab.json", "merges.txt"],
            None,
        );
        std::fs::write(dir.join("model.safetensors"), &src[..cut]).unwrap();
        let out = tmp.path().join(format!("out{i}.gguf"));
        let e = err_of(&dir, &out);
        assert!(!e.is_empty() && !out.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
    no_output(tmp.path());
}
