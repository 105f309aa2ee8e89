//! Shared pieces of gptq's fuzz targets: structure-aware generators that turn
//! the fuzzer's bytes into inputs deep enough to get past the headers (a tiny
//! GPT-2 GGUF file, a tokenizer vocabulary, a PyTorch checkpoint around a
//! pickle), and writers for the seed corpora.
//!
//! The targets themselves are in `fuzz_targets/`; `README.md` lists them.

pub mod byte_tokens;
pub mod model;
pub mod torch;
pub mod vocab;

use std::sync::Once;

/// Runs rayon (the model's thread pool) on one thread, so a fuzz run keeps to
/// one core and a crash does not depend on thread scheduling.
pub fn single_threaded() {
    pool_threads(1);
}

/// Runs rayon on `n` threads (the first call decides): the serving target's
/// two servers each hold one for their engine's loop.
pub fn pool_threads(n: usize) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    });
}

/// Reads every tensor of an opened checkpoint: a float tensor gives exactly
/// its shape's element count, any other read is a clean error.
pub fn read_all(ckpt: &dyn gptq_convert::checkpoint::Checkpoint) {
    for meta in ckpt.tensors() {
        if let Ok(values) = ckpt.read_f32(&meta.name) {
            assert!(meta.dtype.is_float(), "{meta:?}");
            assert_eq!(values.len(), meta.numel(), "{meta:?}");
        }
        assert_eq!(ckpt.meta(&meta.name).map(|m| &m.name), Some(&meta.name));
    }
}

/// Splits `data` at its first `n - 1` zero bytes into `n` parts (the last
/// parts empty when there are fewer zeros): several texts in one input, each
/// freely mutable, for targets that read more than one file.
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 1..n {
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                parts.push(rest);
                rest = &[];
            }
        }
    }
    parts.push(rest);
    parts
}

/// Encoding then decoding gives the text back: plain, with special tokens,
/// and through the streaming decoder.
pub fn round_trip(tok: &gptq_core::Tokenizer, text: &str) {
    let ids = tok.encode(text);
    assert_eq!(tok.decode(&ids).expect("encoded ids decode"), text);
    let mut streamed = String::new();
    let mut stream = tok.decode_stream();
    for &id in &ids {
        stream
            .push(tok, id, &mut streamed)
            .expect("encoded ids decode");
    }
    stream.flush(&mut streamed);
    assert_eq!(streamed, text);
    let special = tok.encode_with_special(text);
    assert_eq!(tok.decode(&special).expect("encoded ids decode"), text);
}

/// Every byte of `bytes` as its one-byte token through the streaming decoder:
/// the pieces concatenate to `String::from_utf8_lossy(bytes)`.
pub fn stream_bytes(tok: &gptq_core::Tokenizer, bytes: &[u8]) {
    let ids: Vec<u32> = bytes
        .iter()
        .map(|&b| {
            tok.token_to_id(&byte_tokens::byte_char(b).to_string())
                .expect("every byte has a token")
        })
        .collect();
    let mut out = String::new();
    let mut stream = tok.decode_stream();
    for &id in &ids {
        stream.push(tok, id, &mut out).expect("byte tokens decode");
    }
    stream.flush(&mut out);
    assert_eq!(out, String::from_utf8_lossy(bytes));
    assert_eq!(tok.decode(&ids).expect("byte tokens decode"), out);
}

/// Streaming decode of any ids: out-of-range ids are errors that append
/// nothing; the pieces of the others concatenate to `decode` of them.
pub fn stream_ids(tok: &gptq_core::Tokenizer, ids: &[u32]) {
    let mut out = String::new();
    let mut stream = tok.decode_stream();
    let mut valid = Vec::new();
    for &id in ids {
        let before = out.len();
        match stream.push(tok, id, &mut out) {
            Ok(n) => {
                assert_eq!(out.len() - before, n);
                valid.push(id);
            }
            Err(_) => {
                assert!(id as usize >= tok.n_vocab());
                assert_eq!(out.len(), before);
            }
        }
    }
    stream.flush(&mut out);
    assert_eq!(tok.decode(&valid).expect("valid ids decode"), out);
    assert_eq!(tok.decode(ids).is_err(), valid.len() != ids.len());
}
