//! Writes the seed corpora of the fuzz targets into `seeds/<target>/`
//! (`cargo +nightly run --example make_seeds` in `fuzz/`). The seeds are committed; run
//! this again only when a format or a target's input layout changes.

use std::path::Path;

use gptq_fuzz::byte_tokens::spell;
use gptq_fuzz::torch::{Pickle, fixed_storages, legacy_checkpoint, seed_tensors, zip_checkpoint};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// Deterministic pseudo-random bytes (SplitMix64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn gguf() {
    // Models built from a few spec inputs: valid tiny GGUF files.
    let mut n = 0;
    for seed in 0..64u64 {
        let bytes = noise(512, seed);
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(spec) = <gptq_fuzz::model::ModelSpec as arbitrary::Arbitrary>::arbitrary(&mut u)
        else {
            continue;
        };
        let mut spec = spec;
        spec.patches.clear();
        spec.truncate = None;
        spec.meta_edits.clear();
        spec.tensor_edits.clear();
        spec.vocab.corruption = None;
        if let Some(file) = spec.build()
            && file.len() < 64 << 10
            && gptq_core::gguf::GgufFile::parse(&file).is_ok()
        {
            write("gguf_parse", &format!("model-{seed}.gguf"), &file);
            n += 1;
            if n == 4 {
                break;
            }
        }
    }
    for (i, len) in [64usize, 512, 2048, 8192].into_iter().enumerate() {
        write(
            "gguf_model",
            &format!("noise-{i}"),
            &noise(len, 100 + i as u64),
        );
    }
}

fn safetensors() {
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[32,36]},"d":{"dtype":"I64","shape":[1],"data_offsets":[36,44]}}"#;
    let mut header = header.as_bytes().to_vec();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend(f32_bytes([1.0, -2.0, 0.5, 3.25, 0.0, -0.125]));
    file.extend([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b]);
    file.extend([0x80, 0x3f, 0x00, 0xc0]);
    file.extend(7u64.to_le_bytes());
    write("safetensors", "four-dtypes.safetensors", &file);
}

fn pytorch() {
    let storages = fixed_storages();
    let refs: Vec<(&str, &[u8])> = storages
        .iter()
        .map(|(k, b)| (k.as_str(), b.as_slice()))
        .collect();
    let tensors = seed_tensors();
    let pickle = Pickle::state_dict(&tensors);
    write("pytorch_pickle", "state-dict.pkl", &pickle);
    write(
        "pytorch_zip",
        "state-dict.bin",
        &zip_checkpoint(&pickle, &refs[..1]),
    );
    // Two storages, one tensor each, the second HalfStorage.
    let mut two = tensors.clone();
    two[1].key = "1".into();
    two[1].class = "HalfStorage";
    two[1].storage_numel = 32;
    let pickle2 = Pickle::state_dict(&two);
    write("pytorch_pickle", "two-storages.pkl", &pickle2);
    write(
        "pytorch_zip",
        "two-storages.bin",
        &zip_checkpoint(&pickle2, &refs[..2]),
    );
    let legacy = legacy_checkpoint(&pickle, &[("0", 16, &storages[0].1)]);
    write("pytorch_legacy", "legacy.bin", &legacy);
}

fn configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    for (i, dir) in ["tiny-scaled", "tiny-scaled-hubstyle", "trained-small"]
        .iter()
        .enumerate()
    {
        if let Ok(text) = std::fs::read(root.join(dir).join("config.json")) {
            write("hf_config", &format!("config-{i}.json"), &text);
        }
    }
    write(
        "hf_config",
        "minimal.json",
        br#"{"model_type":"gpt2","n_embd":64,"n_head":4,"n_layer":2,"n_positions":128,"vocab_size":300,"n_inner":null,"layer_norm_epsilon":1e-5}"#,
    );
}

/// A small vocabulary: the 256 byte tokens, three merges, `<|endoftext|>`.
fn vocab_seeds() {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| spell(&[b])).collect();
    let merges = ["t h", "th e", "Ġ th"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|endoftext|>".into());
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let vocab_json = serde_json::Value::Object(vocab.clone()).to_string();
    let n = tokens.len() as u16;
    let text = "the theme of the other: naïve café, 日本語 <|endoftext|>!";
    let mut seed = vec![0u8];
    seed.extend(n.to_le_bytes());
    seed.extend(vocab_json.as_bytes());
    seed.push(0);
    seed.extend(format!("#version: 0.2\n{}\n", merges.join("\n")).as_bytes());
    seed.push(0);
    seed.extend(text.as_bytes());
    write("hf_vocab", "files", &seed);

    let tj = serde_json::json!({
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
        "added_tokens": [{"id": n - 1, "content": "<|endoftext|>", "special": true}],
    });
    let mut seed = vec![1u8];
    seed.extend(n.to_le_bytes());
    seed.extend(tj.to_string().as_bytes());
    seed.push(0);
    seed.extend(text.as_bytes());
    write("hf_vocab", "tokenizer-json", &seed);
}

fn tokenizer() {
    let texts = [
        "Hello, world! It's 2024 and we're   testing\n\nnaïve café 日本語 🎉 <|endoftext|> done",
        "    indented\tcode() { return x'' + 'y'; }\r\n",
    ];
    for (i, t) in texts.iter().enumerate() {
        let mut s = vec![0u8];
        s.extend(t.as_bytes());
        write("tokenizer", &format!("text-{i}"), &s);
    }
    let mut s = vec![1u8];
    s.extend(b"ok \xe6\x97\xa5 \xf0\x9f\x8e half \xe6\x97 stray \x80\xff end");
    write("tokenizer", "bytes", &s);
    let mut s = vec![2u8];
    for id in [15496u16, 11, 995, 0, 50256, 50257, 65535, 171, 254] {
        s.extend(id.to_le_bytes());
    }
    write("tokenizer", "ids", &s);
    write(
        "tokenizer",
        "small-vocab",
        &noise(600, 7)
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { 0x80 } else { b })
            .collect::<Vec<_>>(),
    );
}

fn sampler() {
    for (i, len) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        write(
            "sampler",
            &format!("noise-{i}"),
            &noise(len, 200 + i as u64),
        );
    }
}

/// `gptq serve` requests: byte 0 picks the endpoint (`serve_request`'s
/// `ROUTES`), byte 1 = 0 sends the right API key and a JSON content type.
fn serve() {
    let requests: &[(u8, &str, &str)] = &[
        (0, "completion", r#"{"prompt": "The old house", "max_tokens": 8, "temperature": 0}"#),
        (0, "completion-stream", r#"{"prompt": ["a", "bc"], "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}, "logprobs": 2, "stop": ["x", "\n"], "seed": 3, "n": 2}"#),
        (0, "completion-ids", r#"{"prompt": [[1, 2, 3], [299]], "max_tokens": 3, "top_p": 0.5, "top_k": 4, "min_p": 0.1, "repeat_penalty": 1.1, "ignore_eos": true}"#),
        (1, "chat", r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}], "max_tokens": 6}"#),
        (1, "chat-stream", r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "stream": true, "logprobs": true, "top_logprobs": 3, "max_completion_tokens": 4}"#),
        (2, "llama-completion", r#"{"prompt": "Once", "n_predict": 5, "n_probs": 2, "stream": true, "return_tokens": true, "cache_prompt": true}"#),
        (3, "tokenize", r#"{"content": "Hello <|endoftext|> world", "add_special": true, "with_pieces": true}"#),
        (4, "detokenize", r#"{"tokens": [72, 101, 108, 108, 111, 299]}"#),
        (5, "models", ""),
        (6, "health", ""),
        (7, "metrics", ""),
    ];
    for &(route, name, body) in requests {
        let mut bytes = vec![route, 0];
        bytes.extend_from_slice(body.as_bytes());
        write("serve_request", name, &bytes);
    }
    // Byte 1 = 8: the server started with --context-shift, asked for more
    // than its context holds (a budget past it, a prompt longer than it).
    let long = format!(
        r#"{{"prompt": "{}", "max_tokens": 90, "logprobs": 2}}"#,
        "x ".repeat(120)
    );
    let shifted = [
        (2, "completion-context-shift", r#"{"prompt": "The old house on the hill", "n_predict": 150, "n_keep": 4, "stream": true, "temperature": 0}"#.to_string()),
        (0, "completions-long-prompt-shift", long),
    ];
    for (route, name, body) in shifted {
        let mut bytes = vec![route, 8];
        bytes.extend_from_slice(body.as_bytes());
        write("serve_request", name, &bytes);
    }
}

fn main() {
    serve();
    gguf();
    safetensors();
    pytorch();
    configs();
    vocab_seeds();
    tokenizer();
    sampler();
}
