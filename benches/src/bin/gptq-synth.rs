//! `gptq-synth`: random GPT-2 models of the real shapes, for speed and memory
//! work without real weights (none can be downloaded on the build machines).
//!
//! ```text
//! gptq-synth gguf 124M q8_0 OUT.gguf   # a GGUF file, as gptq-convert would write it
//! gptq-synth hf 124M OUT_DIR           # a Hugging Face folder (config.json,
//!                                      # model.safetensors, vocab.json, merges.txt)
//! ```
//! Sizes: 124M, 355M, 774M, 1.5B. The Hugging Face folder is written one tensor
//! at a time, so even the 1.5B shape (6 GB of f32) needs little memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gptq_core::gguf::GgmlType;
use gptq_core::sample::Rng;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gguf", size, ty, out] => gguf(size, ty, Path::new(out)),
        ["hf", size, out] => hf(size, Path::new(out)),
        _ => Err(
            "usage: gptq-synth gguf SIZE TYPE OUT.gguf | gptq-synth hf SIZE OUT_DIR \
                  (SIZE: 124M 355M 774M 1.5B; TYPE: f32 f16 q8_0 q4_0)"
                .to_string(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gptq-synth: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn spec(size: &str, ty: GgmlType) -> Result<SyntheticSpec, String> {
    SyntheticSpec::gpt2(size, ty).ok_or_else(|| format!("unknown size '{size}'"))
}

fn gguf(size: &str, ty: &str, out: &Path) -> Result<(), String> {
    let ty = match ty {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        other => return Err(format!("unknown type '{other}'")),
    };
    write_synthetic(out, &spec(size, ty)?).map_err(|e| e.to_string())
}

/// The tokenizer files shipped in testdata/.
fn tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join("tokenizer")
}

fn hf(size: &str, out: &Path) -> Result<(), String> {
    let hp = spec(size, GgmlType::F32)?.hparams;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    std::fs::create_dir_all(out).map_err(io)?;
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tokenizer_dir().join(f), out.join(f)).map_err(io)?;
    }
    let config = format!(
        r#"{{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
 "n_embd": {}, "n_head": {}, "n_layer": {}, "n_positions": {}, "n_ctx": {}, "vocab_size": {},
 "layer_norm_epsilon": 1e-05, "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": true}}"#,
        hp.n_embd, hp.n_head, hp.n_layer, hp.n_ctx, hp.n_ctx, hp.n_vocab
    );
    std::fs::write(out.join("config.json"), config).map_err(io)?;

    // Hugging Face's names and [in, out] Conv1D shapes.
    let (e, f) = (hp.n_embd, hp.n_ff);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("transformer.wte.weight".into(), vec![hp.n_vocab, e]),
        ("transformer.wpe.weight".into(), vec![hp.n_ctx, e]),
    ];
    for i in 0..hp.n_layer {
        let p = format!("transformer.h.{i}");
        for (n, s) in [
            ("ln_1.weight", vec![e]),
            ("ln_1.bias", vec![e]),
            ("attn.c_attn.weight", vec![e, 3 * e]),
            ("attn.c_attn.bias", vec![3 * e]),
            ("attn.c_proj.weight", vec![e, e]),
            ("attn.c_proj.bias", vec![e]),
            ("ln_2.weight", vec![e]),
            ("ln_2.bias", vec![e]),
            ("mlp.c_fc.weight", vec![e, f]),
            ("mlp.c_fc.bias", vec![f]),
            ("mlp.c_proj.weight", vec![f, e]),
            ("mlp.c_proj.bias", vec![e]),
        ] {
            tensors.push((format!("{p}.{n}"), s));
        }
    }
    tensors.push(("transformer.ln_f.weight".into(), vec![e]));
    tensors.push(("transformer.ln_f.bias".into(), vec![e]));

    // The safetensors header: 8-byte length, JSON, then the data back to back.
    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product::<usize>() * 4;
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            r#","{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{offset},{}]}}"#,
            dims.join(","),
            offset + n
        ));
        offset += n;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let path = out.join("model.safetensors");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io)?);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(header.as_bytes()).map_err(io)?;
    let mut rng = Rng::new(7);
    let mut buf = Vec::with_capacity(1 << 20);
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        // Scales like a trained GPT-2: unit LayerNorm gains, small weights.
        let (base, amp) = if name.contains("ln_") && name.ends_with("weight") {
            (1.0f32, 0.1f32)
        } else {
            (0.0, 0.035)
        };
        let mut left = n;
        while left > 0 {
            let m = left.min(1 << 18);
            buf.clear();
            for _ in 0..m {
                let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                buf.extend_from_slice(&(base + (2.0 * u - 1.0) * amp).to_le_bytes());
            }
            w.write_all(&buf).map_err(io)?;
            left -= m;
        }
    }
    w.flush().map_err(io)?;
    Ok(())
}
