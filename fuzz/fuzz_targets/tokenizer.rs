//! The GPT-2 tokenizer (50,257 tokens, 50,000 merges, from `testdata/`) and
//! a small generated one, on arbitrary strings, bytes and ids:
//!
//! - text → `encode` → `decode` is the text again (also with special tokens,
//!   and through the streaming decoder);
//! - any byte string, as byte tokens through the streaming decoder, gives
//!   exactly `String::from_utf8_lossy` of it: the decoder never splits a
//!   character and its pieces concatenate to the whole;
//! - any ids: pieces + flush equal `decode`, out-of-range ids are errors.

#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use gptq_convert::vocab::vocab_from_files;
use gptq_core::Tokenizer;
use gptq_fuzz::vocab::VocabSpec;
use libfuzzer_sys::fuzz_target;

fn gpt2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/tokenizer");
        let read = |name: &str| {
            std::fs::read_to_string(format!("{dir}/{name}")).expect("testdata/tokenizer")
        };
        let v = vocab_from_files(
            &read("vocab.json"),
            &read("merges.txt"),
            50257,
            50256,
            50256,
        )
        .expect("the GPT-2 vocabulary");
        Tokenizer::new(
            &v.tokens,
            &v.merges,
            Some(&v.types),
            Some(v.bos),
            Some(v.eos),
        )
        .expect("the GPT-2 tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let small;
    let (tok, rest) = if mode & 0x80 == 0 {
        (gpt2(), rest)
    } else {
        // A generated vocabulary from the first part of the input; the rest
        // is the payload.
        let mut u = Unstructured::new(rest);
        let Ok(spec) = VocabSpec::arbitrary(&mut u) else {
            return;
        };
        let v = spec.build();
        let Ok(t) = Tokenizer::new(&v.tokens, &v.merges, Some(&v.types), v.eos, v.eos) else {
            return;
        };
        small = t;
        (&small, u.take_rest())
    };
    match mode % 3 {
        0 => gptq_fuzz::round_trip(tok, &String::from_utf8_lossy(rest)),
        1 => gptq_fuzz::stream_bytes(tok, rest),
        _ => {
            let ids: Vec<u32> = rest
                .chunks(2)
                .map(|c| u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 8)
                .map(|id| id % (tok.n_vocab() as u32 + 2))
                .collect();
            gptq_fuzz::stream_ids(tok, &ids);
        }
    }
});
