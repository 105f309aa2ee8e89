//! The GPT-2 tokenizer built from `testdata/tokenizer` against OpenAI's
//! encoder (tiktoken-rs `r50k_base`), token for token.

use std::sync::OnceLock;

use gptq_core::tokenizer::{DecodeStream, Tokenizer};

const ENDOFTEXT: u32 = 50256;

fn testdata(rel: &str) -> String {
    let path = format!("{}/../testdata/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Builds the tokenizer the way a GGUF file stores it: tokens by id, merges
/// in rank order, `<|endoftext|>` a control token and both bos and eos.
fn gpt2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&testdata("tokenizer/vocab.json")).expect("vocab.json");
        let mut tokens = vec![String::new(); vocab.len()];
        for (spelling, id) in vocab {
            let id = id.as_u64().expect("numeric id") as usize;
            tokens[id] = spelling;
        }
        assert!(tokens.iter().all(|t| !t.is_empty()), "ids are dense");
        let merges: Vec<String> = testdata("tokenizer/merges.txt")
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(merges.len(), 50_000);
        let mut types = vec![1; tokens.len()];
        types[ENDOFTEXT as usize] = 3;
        Tokenizer::new(
            &tokens,
            &merges,
            Some(&types),
            Some(ENDOFTEXT),
            Some(ENDOFTEXT),
        )
        .expect("GPT-2 tokenizer")
    })
}

fn oracle() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

const HARD: &[&str] = &[
    // contractions: ASCII, case-sensitive
    "I'm can't won't they'll we'd you're I've it's",
    "I'M CAN'T THEY'LL WE'D YOU'RE I'VE IT'S",
    "can't've y'all'd've",
    "'s 't 're 've 'm 'll 'd 'S 'x '",
    "''s ''' '''' ' 's !'s rock'n'roll",
    "don’t it’s", // typographic apostrophe is punctuation
    // digits
    "12345 1,000,000 3.14159 -42 +7 0x1F 1e10",
    "３４ ٣٤ ۱۲ १२३ ௧௨ ๑๒ ²³ ½ Ⅻ ⅻ 〇",
    "abc123def 456ghi",
    // white space
    "   leading spaces",
    "trailing spaces   ",
    "middle   spaces and\ttabs\t\there",
    "\t\tleading tabs",
    "lines\n\nwith\n\n\nblank\n \n  \nlines\n",
    "\n\n\n",
    "   ",
    " ",
    "\t",
    "a \t b  \t\t c",
    "windows\r\nline\r\nends\r\n",
    "lone\rcarriage\r return\r",
    "no-break\u{a0}space\u{a0}\u{a0}x \u{a0}y\u{3000}z\u{2003}w\u{85}v\u{2028}u",
    "zero\u{200b}width\u{200c}non\u{200d}joiners\u{feff}",
    "\u{b}vertical\u{c}feed\u{1c}\u{1f}",
    // non-Latin scripts
    "日本語のテキストです。東京タワー、ひらがなカタカナ",
    "Ελληνικά: Καλημέρα κόσμε, ΆΈΉ",
    "русский язык: Съешь же ещё этих мягких французских булок",
    "हिन्दी भाषा: नमस्ते दुनिया",
    "العربية: مرحبا بالعالم ١٢٣",
    "עברית: שָׁלוֹם עוֹלָם",
    "ภาษาไทย สวัสดีครับ",
    "한국어 텍스트 ㄱㄴㄷ",
    "தமிழ் மொழி",
    "中文，标点。！？“引号”",
    "ǅemal ǈ ǋ ʰʱ ー ᾼ ᾈ",
    // combining marks
    "e\u{301}te\u{301} cafe\u{301} n\u{303}o",
    "a\u{300}\u{301}\u{302}\u{303}\u{304} Z\u{35f}a\u{36b}l\u{352}g\u{34d}o",
    "\u{301}leading mark",
    // emoji
    "emoji 😀😃😄 🎉!",
    "family 👨‍👩‍👧‍👦 and 👩🏽‍💻 and 🏳️‍🌈",
    "flags 🇺🇸🇫🇷🇯🇵 keycap 1️⃣ #️⃣",
    "skin 👍🏻👍🏿 ✌️ ❤️‍🔥",
    "🤖🦀🧬𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    // special text as plain text
    "<|endoftext|>",
    "Hello<|endoftext|>World <|endoftext|> <|endoftext|>\n",
    // punctuation and symbols
    "!!! ??? ... --- === *** ### $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "https://example.com/path?q=1&r=2#frag user@mail.org",
    "fn main() { println!(\"{}\", x[0] + y.z()); } // c'est",
    "    indented code\n        more\n\ttabbed\n",
    "@-@ 1 @,@ 000 @.@ 5",
    "",
    "a",
    "\u{fffd}",
    "\u{10ffff}\u{e000}\u{f8ff}",
];

fn check_round_trip_and_stream(t: &Tokenizer, text: &str, ids: &[u32]) {
    assert_eq!(
        t.decode(ids).expect("ids"),
        text,
        "decode(encode({text:?}))"
    );
    let mut stream = DecodeStream::new();
    let mut out = String::new();
    for &id in ids {
        let mut piece = String::new();
        let n = stream.push(t, id, &mut piece).expect("id");
        assert_eq!(n, piece.len());
        assert!(!piece.contains('\u{fffd}') || text.contains('\u{fffd}'));
        out.push_str(&piece);
        assert!(
            text.is_char_boundary(out.len()),
            "{text:?}: a push ended inside a character"
        );
        assert!(text.starts_with(&out), "{text:?}: streamed {out:?}");
    }
    stream.flush(&mut out);
    assert_eq!(out, text);
}

#[test]
fn hard_strings_match_tiktoken() {
    let t = gpt2();
    for &text in HARD {
        let ids = t.encode(text);
        assert_eq!(ids, oracle().encode_ordinary(text), "encode({text:?})");
        check_round_trip_and_stream(t, text, &ids);
    }
    // All of them at once, so that pieces meet across the joins.
    let all = HARD.concat();
    assert_eq!(t.encode(&all), oracle().encode_ordinary(&all));
}

#[test]
fn whole_wikitext_matches_tiktoken() {
    let text = testdata("text/wiki.test.raw");
    let ids = gpt2().encode(&text);
    assert_eq!(ids.len(), 283_287);
    let expected = oracle().encode_ordinary(&text);
    if let Some(at) = ids.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "first difference at token {at}: ours {:?}, tiktoken {:?}",
            &ids[at..ids.len().min(at + 8)],
            &expected[at..expected.len().min(at + 8)]
        );
    }
    assert_eq!(ids, expected);
    assert_eq!(gpt2().decode(&ids).expect("ids"), text);
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

/// Random strings over characters that stress the pre-tokenizer.
#[test]
fn random_strings_match_tiktoken() {
    const POOL: &[&str] = &[
        " ",
        " ",
        " ",
        "  ",
        "\t",
        "\n",
        "\r",
        "\r\n",
        "\u{a0}",
        "\u{3000}",
        "'",
        "'",
        "s",
        "t",
        "re",
        "ve",
        "m",
        "ll",
        "d",
        "S",
        "T",
        "a",
        "Z",
        "é",
        "e\u{301}",
        "\u{301}",
        "日",
        "ж",
        "ह",
        "ि",
        "1",
        "٣",
        "３",
        "½",
        "Ⅻ",
        ".",
        ",",
        "!",
        "-",
        "😀",
        "👨‍👩‍👧",
        "🇫🇷",
        "\u{200d}",
        "<|endoftext|>",
        "_",
        "$",
        "ǅ",
        "ー",
    ];
    let t = gpt2();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let text: String = (0..1 + rng.below(12))
            .map(|_| POOL[rng.below(POOL.len())])
            .collect();
        let ids = t.encode(&text);
        assert_eq!(ids, oracle().encode_ordinary(&text), "encode({text:?})");
        check_round_trip_and_stream(t, &text, &ids);
    }
}

/// Every assigned Unicode scalar value (planes 0-3 and 14, the ends of the
/// private-use planes 15-16; planes 4-13 are unassigned), in contexts that
/// exercise each alternative of the pattern: the character classes agree
/// with the regex engine's.
#[test]
fn every_code_point_matches_tiktoken() {
    let t = gpt2();
    let chars: Vec<char> = (0..0x40000u32)
        .chain(0xE0000..0xE1000)
        .chain(0xF0000..0xF0100)
        .chain(0x10FF00..=0x10FFFF)
        .filter_map(char::from_u32)
        .collect();
    for chunk in chars.chunks(4096) {
        let mut text = String::new();
        for &c in chunk {
            text.extend([' ', c, 'a', c, '1', c, c, '\'', c, '\n', c]);
        }
        assert_eq!(
            t.encode(&text),
            oracle().encode_ordinary(&text),
            "chunk starting at U+{:04X}",
            u32::from(chunk[0])
        );
    }
}

#[test]
fn special_tokens() {
    let t = gpt2();
    assert_eq!(
        t.encode_with_special("a<|endoftext|>b"),
        [64, ENDOFTEXT, 65]
    );
    assert_eq!(
        t.encode_with_special("<|endoftext|>"),
        [ENDOFTEXT],
        "whole text"
    );
    assert_ne!(t.encode("a<|endoftext|>b"), [64, ENDOFTEXT, 65]);
    assert!(t.is_control(ENDOFTEXT));
    assert!(!t.is_control(64));
    assert_eq!(t.decode(&[ENDOFTEXT]).expect("id"), "<|endoftext|>");
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(ENDOFTEXT));
    assert_eq!(t.token_to_id("Ġthe"), Some(262));
    assert_eq!(t.token_bytes(262), Some(&b" the"[..]));
    assert_eq!(t.n_vocab(), 50257);
    assert_eq!((t.bos(), t.eos()), (Some(ENDOFTEXT), Some(ENDOFTEXT)));
    assert!(t.decode(&[50257]).is_err());
    assert!(t.decode_bytes(&[u32::MAX]).is_err());
}

#[test]
fn stray_byte_decodes_to_replacement_character() {
    let t = gpt2();
    let byte_token = |b: u8| {
        (0..t.n_vocab() as u32)
            .find(|&id| t.token_bytes(id) == Some(&[b][..]))
            .expect("one-byte token")
    };
    let (cont, lead3) = (byte_token(0x80), byte_token(0xE6));
    assert_eq!(t.decode(&[cont]).expect("id"), "\u{fffd}");
    assert_eq!(t.decode_bytes(&[cont]).expect("id"), [0x80]);
    assert_eq!(t.decode(&[64, lead3, 65]).expect("ids"), "a\u{fffd}b");

    let mut stream = DecodeStream::new();
    let mut out = String::new();
    stream.push(t, cont, &mut out).expect("id");
    assert_eq!(
        out, "\u{fffd}",
        "a stray continuation byte is replaced at once"
    );
    stream.push(t, lead3, &mut out).expect("id");
    assert_eq!(out, "\u{fffd}", "a lead byte waits for its continuation");
    stream.push(t, 64, &mut out).expect("id");
    assert_eq!(out, "\u{fffd}\u{fffd}a");
    stream.push(t, lead3, &mut out).expect("id");
    stream.flush(&mut out);
    assert_eq!(out, "\u{fffd}\u{fffd}a\u{fffd}");
}

#[test]
fn tokenizer_is_shareable() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_traits::<Tokenizer>();
    assert_traits::<DecodeStream>();
    let t = gpt2();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || t.encode(&format!("thread {i} says hello")))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let ids = h.join().expect("thread");
        assert_eq!(
            gpt2().decode(&ids).expect("ids"),
            format!("thread {i} says hello")
        );
    }
}
