//! Unit tests of the tokenizer on small hand-made vocabularies (the GPT-2
//! oracle tests are in `tests/tokenizer_oracle.rs`).

use super::bytes::{BYTE_TO_CHAR, encode_spelling};
use super::*;

/// The 256 byte tokens in byte order, then `extra` spellings.
fn vocab(extra: &[&str]) -> Vec<String> {
    let mut tokens: Vec<String> = BYTE_TO_CHAR.iter().map(|c| c.to_string()).collect();
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn small() -> Tokenizer {
    // 256 "Ġt", 257 "he", 258 "Ġthe", 259 "<|endoftext|>", 260 "<|end|>"
    let tokens = vocab(&["Ġt", "he", "Ġthe", "<|endoftext|>", "<|end|>"]);
    let merges = strings(&["Ġ t", "h e", "Ġt he"]);
    let mut types = vec![1; tokens.len()];
    types[259] = 3;
    types[260] = 3;
    Tokenizer::new(&tokens, &merges, Some(&types), Some(259), Some(259)).expect("valid")
}

#[test]
fn encode_and_decode() {
    let t = small();
    assert_eq!(t.n_vocab(), 261);
    assert_eq!(t.encode(" the"), [258]);
    assert_eq!(t.encode("he the"), [257, 258]);
    assert_eq!(t.encode("a"), [u32::from(b'a')]);
    assert_eq!(t.decode(&[258, 259]).expect("ids"), " the<|endoftext|>");
    assert_eq!(t.token_bytes(258), Some(&b" the"[..]));
    assert_eq!(t.token_to_id("Ġthe"), Some(258));
    assert_eq!(t.token_to_id(" the"), None);
    assert!(t.is_control(259));
    assert!(!t.is_control(258));
    assert!(!t.is_control(100_000));
    assert_eq!((t.bos(), t.eos()), (Some(259), Some(259)));
    assert!(matches!(
        t.decode(&[261]),
        Err(Error::InvalidToken {
            id: 261,
            vocab: 261
        })
    ));
    let text = "x <|endoftext|> y";
    assert_eq!(t.decode(&t.encode(text)).expect("ids"), text);
    assert!(!t.encode(text).contains(&259));
    let dbg = format!("{t:?}");
    assert!(dbg.contains("n_vocab: 261"), "{dbg}");
}

#[test]
fn special_tokens() {
    let t = small();
    let a = u32::from(b'a');
    assert_eq!(t.encode_with_special("a<|endoftext|>"), [a, 259]);
    assert_eq!(
        t.encode_with_special("<|end|><|endoftext|>a"),
        [260, 259, a]
    );
    assert_eq!(
        t.encode_with_special("<|endoftext|><|endoftext|>"),
        [259, 259]
    );
    assert_eq!(t.encode_with_special("<|end"), t.encode("<|end"));
    assert_eq!(t.encode_with_special(""), Vec::<u32>::new());
}

#[test]
fn without_token_types_bos_and_eos_are_control() {
    let tokens = vocab(&["<|endoftext|>"]);
    let t = Tokenizer::new(&tokens, &[], None, None, Some(256)).expect("valid");
    assert!(t.is_control(256));
    assert_eq!(t.encode_with_special("<|endoftext|>"), [256]);
}

#[test]
fn invalid_data_is_an_error() {
    let check = |tokens: &[String], merges: &[&str], types: Option<&[i32]>, bos, what: &str| {
        match Tokenizer::new(tokens, &strings(merges), types, bos, None) {
            Err(Error::Tokenizer(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
            other => panic!("expected a tokenizer error about {what}, got {other:?}"),
        }
    };
    let good = vocab(&["ab"]);
    check(&vocab(&["a"]), &[], None, None, "appears twice");
    check(&vocab(&["x y"]), &[], None, None, "not byte-level");
    check(&good[1..], &[], None, None, "no token for byte 0x00");
    check(&good, &["ab"], None, None, "two symbols");
    check(&good, &["a  b"], None, None, "two symbols");
    check(&good, &["a b c"], None, None, "two symbols");
    check(&good, &["a zz"], None, None, "not in the vocabulary");
    check(&good, &["b a"], None, None, "result \"ba\"");
    check(&good, &["a b"], Some(&[1, 1]), None, "token types");
    check(&good, &["a b"], None, Some(257), "bos token id 257");
    // A plain-text token standing where a byte token is needed.
    let mut types = vec![1; good.len()];
    types[0] = 4; // "Ā" (byte 0x00) as user-defined text is two bytes
    check(&good, &[], Some(&types), None, "plain-text token");
    // A merge whose result is a plain-text token with other bytes.
    let tokens = vocab(&["ĠĠ"]);
    let mut types = vec![1; tokens.len()];
    types[256] = 4;
    check(
        &tokens,
        &["Ġ Ġ"],
        Some(&types),
        None,
        "does not stand for the bytes",
    );
}

#[test]
fn duplicate_merge_keeps_first_rank() {
    let tokens = vocab(&["ab", "bc"]);
    let merges = strings(&["b c", "a b", "b c"]);
    let t = Tokenizer::new(&tokens, &merges, None, None, None).expect("valid");
    assert_eq!(t.encode("abc"), [u32::from(b'a'), 257]);
}

#[test]
fn streaming_decode_never_splits_a_character() {
    let t = small();
    let text = "é日😀 the x";
    let ids = t.encode(text);
    assert!(
        ids.len() > 8,
        "multi-byte characters are split into byte tokens"
    );
    let mut stream = DecodeStream::new();
    let mut out = String::new();
    for &id in &ids {
        let before = out.len();
        let n = stream.push(&t, id, &mut out).expect("id");
        assert_eq!(n, out.len() - before);
        assert!(stream.pending.len() <= 3);
    }
    stream.flush(&mut out);
    assert_eq!(out, text);

    // Incomplete bytes at the end become one U+FFFD on flush.
    let mut out = String::new();
    stream.push(&t, 0xE6, &mut out).expect("id");
    stream.push(&t, 0x97, &mut out).expect("id");
    assert_eq!(out, "");
    stream.flush(&mut out);
    assert_eq!(out, "\u{FFFD}");
    // A stray continuation byte is replaced at once.
    let mut out = String::new();
    assert_eq!(stream.push(&t, 0x80, &mut out).expect("id"), 3);
    assert_eq!(out, "\u{FFFD}");
    // A broken sequence followed by a control token.
    let mut out = String::new();
    stream.push(&t, 0xE6, &mut out).expect("id");
    stream.push(&t, 259, &mut out).expect("id");
    assert_eq!(out, "\u{FFFD}<|endoftext|>");
    assert!(matches!(
        stream.push(&t, 9999, &mut out),
        Err(Error::InvalidToken { id: 9999, .. })
    ));
    stream.reset();
    assert!(stream.pending.is_empty());
}

/// A tiny xorshift generator, for reproducible random tests.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random vocabularies and merges never panic `new`; whenever one is accepted,
/// encoding round-trips through decoding.
#[test]
fn fuzz_new_never_panics() {
    const ALPHABET: [&str; 7] = ["a", "b", "Ġ", "Ċ", "é", "Ā", "ab"];
    // Rarely: a space (the merge separator), a character that stands for no
    // byte, an empty piece.
    const RARE: [&str; 3] = [" ", "日", ""];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..1500 {
        // Even rounds build well-formed data (which may still be rejected,
        // e.g. for a plain-text token inside a merge); odd rounds corrupt it.
        let clean = round % 2 == 0;
        let full = clean || rng.below(3) != 0;
        let mut tokens = if full { vocab(&[]) } else { Vec::new() };
        let mut merges = Vec::new();
        let mut pieces: Vec<String> = Vec::new();
        for _ in 0..rng.below(20) {
            let mut s = String::new();
            for _ in 0..1 + rng.below(3) {
                if !clean && rng.below(60) == 0 {
                    s.push_str(RARE[rng.below(RARE.len())]);
                } else {
                    s.push_str(ALPHABET[rng.below(ALPHABET.len())]);
                }
            }
            pieces.push(s);
        }
        let allow_duplicates = !clean && rng.below(10) == 0;
        for p in &pieces {
            if (clean || rng.below(10) != 0) && (allow_duplicates || !tokens.contains(p)) {
                tokens.push(p.clone());
            }
        }
        // Merges of two random pieces, often with their result added.
        for _ in 0..rng.below(30) {
            let l = pieces
                .get(rng.below(pieces.len().max(1)))
                .cloned()
                .unwrap_or_default();
            let r = pieces
                .get(rng.below(pieces.len().max(1)))
                .cloned()
                .unwrap_or_default();
            let sep = if !clean && rng.below(10) == 0 {
                ["", "  "][rng.below(2)]
            } else {
                " "
            };
            merges.push(format!("{l}{sep}{r}"));
            let joined = format!("{l}{r}");
            if (clean || rng.below(8) != 0) && !tokens.contains(&joined) {
                tokens.push(joined);
            }
        }
        // Mostly normal; the byte tokens are left normal unless the round is
        // meant to break them.
        let break_bytes = !clean && rng.below(8) == 0;
        let types: Vec<i32> = (0..tokens.len())
            .map(|i| {
                if (i < 256 && !break_bytes) || rng.below(10) != 0 {
                    1
                } else {
                    [3, 4, 6][rng.below(3)]
                }
            })
            .collect();
        let types = (rng.below(2) == 0).then_some(types.as_slice());
        let bos = (rng.below(2) == 0).then(|| rng.below(tokens.len() + 2) as u32);
        if let Ok(t) = Tokenizer::new(&tokens, &merges, types, bos, bos) {
            accepted += 1;
            for text in ["ab ab a", "日é a\n\nb", "  Ā ", ""] {
                assert_eq!(t.decode(&t.encode(text)).expect("ids"), text);
                assert_eq!(t.decode(&t.encode_with_special(text)).expect("ids"), text);
            }
        }
    }
    assert!(
        accepted > 300,
        "only {accepted} random vocabularies accepted"
    );
}

#[test]
fn encode_long_piece_uses_heap_path() {
    // 1000 spaces: one piece; with "Ġ Ġ" and "ĠĠ ĠĠ" merges.
    let tokens = vocab(&["ĠĠ", "ĠĠĠĠ"]);
    let merges = strings(&["Ġ Ġ", "ĠĠ ĠĠ"]);
    let t = Tokenizer::new(&tokens, &merges, None, None, None).expect("valid");
    let text = " ".repeat(1001);
    let ids = t.encode(&text);
    assert_eq!(ids.len(), 250 + 1);
    assert!(ids[..250].iter().all(|&id| id == 257));
    assert_eq!(ids[250], t.byte_ids[usize::from(b' ')]);
    assert_eq!(t.decode(&ids).expect("ids"), text);
    assert_eq!(encode_spelling(b" "), "Ġ");
}
