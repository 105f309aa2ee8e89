//! The converter's tokenizer files and the tokenizer built from them.
//!
//! Input: a mode byte, a two-byte vocabulary size, then zero-separated parts:
//! `vocab.json`, `merges.txt` and a text (even mode), or `tokenizer.json` and
//! a text (odd mode). Whatever parses into a vocabulary that the tokenizer
//! accepts must encode the text and decode it back exactly.

#![no_main]

use gptq_convert::vocab::{vocab_from_files, vocab_from_tokenizer_json};
use gptq_core::Tokenizer;
use gptq_fuzz::split_parts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, lo, hi, rest @ ..] = data else {
        return;
    };
    // Up to 1024 tokens: room for the 256 byte tokens and some merges.
    let n_vocab = usize::from(u16::from_le_bytes([*lo, *hi]) % 1024) + 1;
    let eos = (n_vocab - 1) as u32;
    let (vocab, text) = if mode % 2 == 0 {
        let parts = split_parts(rest, 3);
        let (v, m) = (
            String::from_utf8_lossy(parts[0]),
            String::from_utf8_lossy(parts[1]),
        );
        (vocab_from_files(&v, &m, n_vocab, eos, eos), parts[2])
    } else {
        let parts = split_parts(rest, 2);
        let json = String::from_utf8_lossy(parts[0]);
        (
            vocab_from_tokenizer_json(&json, n_vocab, eos, eos),
            parts[1],
        )
    };
    let Ok(vocab) = vocab else {
        return;
    };
    assert_eq!(vocab.tokens.len(), n_vocab);
    assert_eq!(vocab.types.len(), n_vocab);
    let Ok(tok) = Tokenizer::new(
        &vocab.tokens,
        &vocab.merges,
        Some(&vocab.types),
        Some(vocab.bos),
        Some(vocab.eos),
    ) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    gptq_fuzz::round_trip(&tok, &text);
});
