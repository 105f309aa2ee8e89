//! gptq-convert against llama-quantize (llama.cpp c392e50), byte for byte.
//!
//! `testdata/llama-quantize/manifest.json` records, for gptq-convert's F32 files of
//! trained-small and tiny-scaled, the type and sha256 of every weight matrix that
//! llama-quantize writes for each mix, without and with an importance matrix (the
//! committed `*.imatrix`, made by llama-imatrix), and for a 48-layer random model the
//! type of every matrix (`make_manifest.sh` says how). Here the same F32 values go
//! through gptq-convert's mix policy and quantizers and must give the same bytes.
//! Each distinct (matrix, type, weights) is quantized once and shared by the mixes
//! that contain it, so the whole check takes seconds.

mod common;

use std::collections::HashMap;
use std::path::Path;

use gptq_convert::quantize::mix::{self, TensorSite};
use gptq_convert::quantize::quantize_rows;
use gptq_convert::{ConvertOptions, Importance, OutType, convert};
use gptq_core::gguf::{FileType, GgmlType, GgufFile, MappedFile, cast_slice};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn manifest() -> Value {
    let path = common::testdata().join("llama-quantize/manifest.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// llama-imatrix's `.dat` file as llama-quantize reads it: per tensor, the sums
/// divided by the number of calls.
fn read_imatrix(path: &Path) -> Importance {
    let raw = std::fs::read(path).expect("imatrix file");
    let mut pos = 0;
    let i32_at = |pos: &mut usize| {
        let v = i32::from_le_bytes(raw[*pos..*pos + 4].try_into().unwrap());
        *pos += 4;
        v
    };
    let n = i32_at(&mut pos);
    let mut out = Importance::new();
    for _ in 0..n {
        let len = i32_at(&mut pos) as usize;
        let name = String::from_utf8(raw[pos..pos + len].to_vec()).unwrap();
        pos += len;
        let ncall = i32_at(&mut pos);
        let nval = i32_at(&mut pos) as usize;
        let mut v: Vec<f32> = raw[pos..pos + 4 * nval]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        pos += 4 * nval;
        if ncall > 0 {
            for x in &mut v {
                *x /= ncall as f32;
            }
        }
        out.insert(name, v);
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// gptq-convert's F32 file of a fixture, with output.weight, as llama-quantize's input.
fn f32_file(model: &str, dir: &Path) -> std::path::PathBuf {
    let out = dir.join(format!("{model}-f32.gguf"));
    let opts = ConvertOptions {
        out_type: OutType::Pure(GgmlType::F32),
        output_weight: true,
        progress: false,
        ..ConvertOptions::default()
    };
    convert(&common::checkpoint(model), &out, &opts).expect("F32 conversion");
    out
}

/// The entries of the manifest for `model`.
fn entries<'a>(m: &'a Value, model: &str) -> Vec<&'a Value> {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["model"] == model)
        .collect()
}

fn n_layer(tensors: &serde_json::Map<String, Value>) -> usize {
    tensors
        .keys()
        .filter(|k| k.ends_with("ffn_down.weight"))
        .count()
}

/// Checks every recorded file of `model`: the type the mix gives each matrix,
/// the file type, and (when recorded) the bytes.
fn check_model(model: &str) {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let path = f32_file(model, dir.path());
    let file = MappedFile::open(&path).unwrap();
    let gguf = GgufFile::parse(file.bytes()).unwrap();
    let imatrix = read_imatrix(&common::testdata().join(format!("llama-quantize/{model}.imatrix")));
    let mut hashes: HashMap<(String, GgmlType, bool), String> = HashMap::new();
    let mut checked = 0;
    for e in entries(&m, model) {
        let mix_name = e["mix"].as_str().unwrap();
        let with_imatrix = e["imatrix"].as_bool().unwrap();
        let ft = FileType::from_name(mix_name).unwrap();
        assert_eq!(
            e["file"]["file_type"], ft.0,
            "{model} {mix_name}: file type"
        );
        let tensors = e["file"]["tensors"].as_object().unwrap();
        for (name, want) in tensors {
            let (want_ty, row_len, want_hash) = (
                want[0].as_str().unwrap(),
                want[1].as_u64().unwrap() as usize,
                want[2].as_str().unwrap(),
            );
            if name == "position_embd.weight" {
                continue; // never quantized
            }
            let site = TensorSite {
                name,
                row_len,
                n_layer: n_layer(tensors),
                has_output: true,
                has_imatrix: with_imatrix,
            };
            let ty = mix::tensor_type(ft, &site).unwrap();
            assert_eq!(
                ty.name(),
                want_ty,
                "{model} {mix_name} imatrix={with_imatrix}: type of {name}"
            );
            let weights = if with_imatrix {
                imatrix.get(name.as_str()).filter(|w| w.len() == row_len)
            } else {
                None
            };
            // token_embd and output.weight hold the same values: share their bytes.
            let source = if name == "output.weight" && weights.is_none() {
                "token_embd.weight"
            } else {
                name.as_str()
            };
            let key = (source.to_string(), ty, weights.is_some());
            let got = hashes.entry(key).or_insert_with(|| {
                let t = gguf.tensor(name).unwrap();
                let values: &[f32] = cast_slice(gguf.tensor_data(file.bytes(), t)).unwrap();
                let bytes = quantize_rows(ty, values, row_len, weights.map(Vec::as_slice)).unwrap();
                sha256(&bytes)
            });
            assert_eq!(
                got, want_hash,
                "{model} {mix_name} imatrix={with_imatrix}: bytes of {name} ({ty})"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no manifest entries for {model}");
    eprintln!(
        "{model}: {checked} matrices equal llama-quantize's ({} distinct quantizations)",
        hashes.len()
    );
}

#[test]
fn trained_small_mixes_equal_llama_quantize() {
    check_model("trained-small");
}

#[test]
fn tiny_scaled_mixes_with_fallback_types_equal_llama_quantize() {
    check_model("tiny-scaled");
}

#[test]
fn deep_model_types_equal_llama_quantize() {
    let m = manifest();
    let es = entries(&m, "deep-48x64");
    assert!(!es.is_empty());
    for e in es {
        let ft = FileType::from_name(e["mix"].as_str().unwrap()).unwrap();
        let tensors = e["file"]["tensors"].as_object().unwrap();
        for (name, want) in tensors {
            if name == "position_embd.weight" {
                continue;
            }
            let site = TensorSite {
                name,
                row_len: want[1].as_u64().unwrap() as usize,
                n_layer: n_layer(tensors),
                has_output: true,
                has_imatrix: false,
            };
            let ty = mix::tensor_type(ft, &site).unwrap();
            assert_eq!(ty.name(), want[0].as_str().unwrap(), "{} {name}", e["mix"]);
        }
    }
}

/// The converter end to end: a mix written by `convert` from the checkpoint
/// (not from the F32 file) has llama-quantize's bytes in every matrix.
#[test]
fn converted_mix_files_equal_llama_quantize() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let model = "tiny-scaled";
    let imatrix = read_imatrix(&common::testdata().join(format!("llama-quantize/{model}.imatrix")));
    for (mix_name, with_imatrix) in [("Q4_K_M", true), ("Q2_K", false), ("IQ4_XS", true)] {
        let e = entries(&m, model)
            .into_iter()
            .find(|e| e["mix"] == mix_name && e["imatrix"] == with_imatrix)
            .expect("manifest entry");
        let out = dir.path().join(format!("{mix_name}.gguf"));
        let opts = ConvertOptions {
            out_type: OutType::Mix(FileType::from_name(mix_name).unwrap()),
            imatrix: with_imatrix.then(|| imatrix.clone()),
            output_weight: true,
            progress: false,
            ..ConvertOptions::default()
        };
        convert(&common::checkpoint(model), &out, &opts).unwrap();
        let file = MappedFile::open(&out).unwrap();
        let gguf = GgufFile::parse(file.bytes()).unwrap();
        assert_eq!(
            gguf.get("general.file_type").and_then(|v| v.as_u64()),
            e["file"]["file_type"].as_u64()
        );
        for (name, want) in e["file"]["tensors"].as_object().unwrap() {
            let t = gguf.tensor(name).unwrap();
            assert_eq!(t.ty.name(), want[0].as_str().unwrap(), "{mix_name}: {name}");
            assert_eq!(
                sha256(gguf.tensor_data(file.bytes(), t)),
                want[2].as_str().unwrap(),
                "{mix_name} imatrix={with_imatrix}: {name}"
            );
        }
    }
}
