//! Loading GPT-2 GGUF files: a good file runs; every kind of bad file is one
//! clear error that names what and where, never a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gptq_core::gguf::{GgmlType, GgufWriter, MetaValue};
use gptq_core::model::layout::{TensorSpec, VocabData, gpt2_metadata, gpt2_tensors};
use gptq_core::quant::pack_rows;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{Error, HParams, Kernels, Model, Session, SessionParams};

fn tiny() -> HParams {
    HParams {
        n_vocab: 300,
        n_ctx: 64,
        n_embd: 64,
        n_ff: 256,
        n_layer: 2,
        n_head: 4,
        ln_eps: 1e-5,
    }
}

fn synthetic(dir: &Path, ty: GgmlType) -> PathBuf {
    let p = dir.join(format!("tiny-{ty}.gguf"));
    write_synthetic(&p, &SyntheticSpec::new(tiny(), ty)).unwrap();
    p
}

/// A tiny model written by hand, after `edit` may change its metadata and tensors.
fn custom(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, MetaValue)>, &mut Vec<(TensorSpec, GgmlType, Vec<u64>)>),
) -> PathBuf {
    let hp = tiny();
    let mut tokens: Vec<String> = (0..256u32).map(|b| byte_token(b as u8)).collect();
    tokens.extend((256..299).map(|i| format!("[PAD{i}]")));
    tokens.push("<|endoftext|>".into());
    let vocab = VocabData {
        types: (0..300).map(|i| if i == 299 { 3 } else { 1 }).collect(),
        tokens,
        merges: vec![],
        bos: 299,
        eos: 299,
    };
    let mut meta = gpt2_metadata(&hp, GgmlType::F32, "custom", &vocab).unwrap();
    let mut tensors: Vec<_> = gpt2_tensors(&hp, false)
        .into_iter()
        .map(|t| {
            let dims = t.dims();
            (t, GgmlType::F32, dims)
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new(64).unwrap();
    for (k, v) in meta {
        w.add_metadata(&k, v).unwrap();
    }
    for (t, ty, dims) in &tensors {
        w.add_tensor(&t.name, dims, *ty).unwrap();
    }
    let path = dir.join(format!("{name}.gguf"));
    let mut data = w.begin(std::fs::File::create(&path).unwrap()).unwrap();
    for (t, ty, dims) in &tensors {
        let n: u64 = dims.iter().product();
        let row = dims[0] as usize;
        let bytes = match *ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0 => {
                pack_rows(*ty, &vec![0.01; n as usize], row).unwrap()
            }
            other => vec![0u8; other.row_bytes(n).unwrap() as usize],
        };
        data.write_tensor(&t.name, &bytes).unwrap();
    }
    data.finish().unwrap();
    path
}

/// GPT-2's byte-level spelling of one byte (printable ASCII stands for itself;
/// the rest map to U+0100 onwards).
fn byte_token(b: u8) -> String {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    if printable(b) {
        return char::from(b).to_string();
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap().to_string()
}

fn load_err(path: &Path) -> String {
    let e = Model::load(path).expect_err("the file should not load");
    e.to_string()
}

#[test]
fn synthetic_models_of_every_type_run() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let model = Arc::new(Model::load(synthetic(dir.path(), ty)).unwrap());
        let mut s = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
        let l = s.feed(&[1, 2, 3]).unwrap();
        assert_eq!(l.len(), 300);
        assert!(l.iter().all(|v| v.is_finite()));
    }
}

/// Prefill (many tokens at once) and decode (one at a time) are one code path:
/// the last logits agree exactly on the scalar path and to float rounding on
/// the SIMD path, whose kernels may group several tokens per weight load.
#[test]
fn prefill_equals_token_by_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 % 299) as u32).collect();
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0] {
        let path = synthetic(dir.path(), ty);
        for k in [Kernels::scalar(), Kernels::best()] {
            let model = Arc::new(Model::load_with_kernels(&path, k).unwrap());
            let params = SessionParams {
                n_batch: 16,
                ..SessionParams::default()
            };
            let mut a = Session::new(Arc::clone(&model), params.clone()).unwrap();
            let batched = a.feed(&tokens).unwrap().to_vec();
            let mut b = Session::new(Arc::clone(&model), params).unwrap();
            let mut single = Vec::new();
            for &t in &tokens {
                single = b.step(t).unwrap().to_vec();
            }
            let diff = batched
                .iter()
                .zip(&single)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            let scale = single.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if k.path() == Kernels::scalar().path() {
                assert_eq!(diff, 0.0, "{ty} scalar");
            } else {
                assert!(diff <= 1e-4 * scale.max(1.0), "{ty} {}: {diff}", k.path());
            }
        }
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Model::load(synthetic(dir.path(), GgmlType::F32)).unwrap());
    let mut s = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    let long = vec![5u32; 65];
    assert!(matches!(
        s.feed(&long),
        Err(Error::ContextOverflow {
            needed: 65,
            capacity: 64
        })
    ));
    assert_eq!(s.len(), 0, "nothing is evaluated on overflow");
    assert!(matches!(
        s.feed(&[300]),
        Err(Error::InvalidToken {
            id: 300,
            vocab: 300
        })
    ));
    s.feed(&[1; 64]).unwrap();
    assert!(matches!(s.step(1), Err(Error::ContextOverflow { .. })));
    let too_big = SessionParams {
        n_ctx: 65,
        ..SessionParams::default()
    };
    assert!(Session::new(model, too_big).is_err());
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = custom(dir.path(), "missing", |_, t| {
        t.retain(|(s, ..)| s.name != "blk.1.ffn_up.bias")
    });
    let e = load_err(&p);
    assert!(
        e.contains("blk.1.ffn_up.bias") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn shape_not_matching_the_hyper_parameters_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = custom(dir.path(), "shape", |_, t| {
        let e = t
            .iter_mut()
            .find(|(s, ..)| s.name == "blk.0.attn_qkv.weight")
            .unwrap();
        e.2 = vec![64, 128];
    });
    let e = load_err(&p);
    assert!(
        e.contains("blk.0.attn_qkv.weight") && e.contains("[64, 128]") && e.contains("[64, 192]"),
        "{e}"
    );
    let p = custom(dir.path(), "ctx", |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "gpt2.context_length")
            .unwrap()
            .1 = MetaValue::U32(128);
    });
    let e = load_err(&p);
    assert!(e.contains("position_embd.weight"), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = custom(dir.path(), "iq2xxs", |_, t| {
        let e = t
            .iter_mut()
            .find(|(s, ..)| s.name == "blk.0.ffn_down.weight")
            .unwrap();
        e.1 = GgmlType::IQ2_XXS;
        e.2 = vec![256, 64];
    });
    let e = load_err(&p);
    assert!(
        e.contains("blk.0.ffn_down.weight") && e.contains("IQ2_XXS") && e.contains("gptq runs"),
        "{e}"
    );
}

#[test]
fn wrong_architecture_and_missing_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = custom(dir.path(), "llama", |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "general.architecture")
            .unwrap()
            .1 = MetaValue::String("llama".into());
    });
    let e = load_err(&p);
    assert!(e.contains("unsupported architecture 'llama'"), "{e}");
    let p = custom(dir.path(), "nokey", |m, _| {
        m.retain(|(k, _)| k != "gpt2.block_count")
    });
    let e = load_err(&p);
    assert!(e.contains("gpt2.block_count"), "{e}");
    let p = custom(dir.path(), "heads", |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "gpt2.attention.head_count")
            .unwrap()
            .1 = MetaValue::U32(5);
    });
    let e = load_err(&p);
    assert!(e.contains("head_count"), "{e}");
}

/// A real file cut short inside each section: header, metadata, tensor infos,
/// padding, tensor data. Each cut is a format error, never a panic.
#[test]
fn truncation_in_every_section_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path(), GgmlType::Q8_0);
    let bytes = std::fs::read(&p).unwrap();
    let data_offset = {
        let f = gptq_core::gguf::MappedFile::open(&p).unwrap();
        gptq_core::gguf::GgufFile::parse(f.bytes())
            .unwrap()
            .data_offset as usize
    };
    let cuts = [
        0,
        3,
        10,
        20,
        100,
        5_000,
        data_offset - 600,
        data_offset - 3,
        data_offset + 10,
        bytes.len() - 1,
    ];
    for cut in cuts {
        let q = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let e = Model::load(&q).expect_err("truncated file");
        assert!(
            matches!(e, Error::Format { .. } | Error::Tensor { .. }),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn wrong_magic_and_version_are_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path(), GgmlType::F32);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    let q = dir.path().join("magic.gguf");
    std::fs::write(&q, &bytes).unwrap();
    assert!(load_err(&q).contains("not a GGUF file"));
    bytes[..4].copy_from_slice(b"GGUF");
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&q, &bytes).unwrap();
    assert!(load_err(&q).contains("version 7"));
}

#[test]
fn missing_file_and_directory_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_err(&dir.path().join("nope.gguf")).contains("nope.gguf"));
    assert!(Model::load(dir.path()).is_err());
}
