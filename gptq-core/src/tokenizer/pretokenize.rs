//! GPT-2's pre-tokenizer: splits text into the pieces that BPE then encodes
//! one by one.
//!
//! The pattern is
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! with leftmost-first alternation. It is scanned by hand rather than run
//! through `fancy-regex`: the pattern needs only four character classes
//! (letter, number, white space, other), which are disjoint, and one
//! character of look-ahead, so a scanner is short, allocation-free and several
//! times faster than a backtracking engine. The classes come from
//! `regex-syntax`, the crate whose tables `regex` / `fancy-regex` (and so
//! tiktoken) match against, so both agree on every code point of the same
//! Unicode version; `char::is_alphabetic` is not `\p{L}` (it includes marks
//! and letter-like numbers).

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// The class of a character as far as the GPT-2 pattern is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CharClass {
    /// General category L (`\p{L}`).
    Letter,
    /// General category N (`\p{N}`).
    Number,
    /// The White_Space property (`\s`).
    Space,
    /// Everything else (`[^\s\p{L}\p{N}]`).
    Other,
}

/// Character classes: a direct table for ASCII, sorted ranges above it.
#[derive(Debug)]
pub(crate) struct CharClasses {
    ascii: [CharClass; 128],
    /// Disjoint ranges (first, last code point, class) sorted by start; code
    /// points in no range are `Other`.
    ranges: Vec<(u32, u32, CharClass)>,
}

impl CharClasses {
    /// The shared tables, built on first use.
    pub(crate) fn get() -> Result<&'static CharClasses, String> {
        static TABLES: OnceLock<Result<CharClasses, String>> = OnceLock::new();
        TABLES
            .get_or_init(CharClasses::build)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build() -> Result<CharClasses, String> {
        let mut ranges = Vec::new();
        for (pattern, class) in [
            (r"\p{L}", CharClass::Letter),
            (r"\p{N}", CharClass::Number),
            (r"\s", CharClass::Space),
        ] {
            let hir = regex_syntax::parse(pattern)
                .map_err(|e| format!("cannot build the Unicode class {pattern}: {e}"))?;
            let HirKind::Class(Class::Unicode(set)) = hir.kind() else {
                return Err(format!("{pattern} did not parse to a Unicode class"));
            };
            ranges.extend(
                set.ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end()), class)),
            );
        }
        ranges.sort_unstable_by_key(|&(start, _, _)| start);
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("the Unicode classes L, N and White_Space overlap".into());
        }
        let mut ascii = [CharClass::Other; 128];
        for (c, slot) in ascii.iter_mut().enumerate() {
            *slot = lookup(&ranges, c as u32);
        }
        Ok(CharClasses { ascii, ranges })
    }

    /// The class of `c`.
    #[inline]
    pub(crate) fn class(&self, c: char) -> CharClass {
        match self.ascii.get(c as usize) {
            Some(&class) => class,
            None => lookup(&self.ranges, c as u32),
        }
    }

    /// Splits `text` into GPT-2 pre-tokens.
    pub(crate) fn split<'t>(&'t self, text: &'t str) -> PreTokens<'t> {
        PreTokens {
            classes: self,
            rest: text,
        }
    }
}

fn lookup(ranges: &[(u32, u32, CharClass)], code: u32) -> CharClass {
    // Index of the first range starting after `code`; the one before it is the
    // only candidate.
    let after = ranges.partition_point(|&(start, _, _)| start <= code);
    match after.checked_sub(1).map(|i| ranges[i]) {
        Some((_, end, class)) if code <= end => class,
        _ => CharClass::Other,
    }
}

/// Iterator over the pre-tokens of a text, in order; together they cover the
/// text exactly.
pub(crate) struct PreTokens<'t> {
    classes: &'t CharClasses,
    rest: &'t str,
}

impl<'t> Iterator for PreTokens<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let len = self.piece_len()?;
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

impl PreTokens<'_> {
    /// Byte length of the next pre-token, or `None` at the end of the text.
    fn piece_len(&self) -> Option<usize> {
        let text = self.rest;
        let mut chars = text.chars();
        let first = chars.next()?;

        // 's 't 're 've 'm 'll 'd: ASCII and case-sensitive.
        if first == '\'' {
            let after = &text.as_bytes()[1..];
            if after.starts_with(b"re") || after.starts_with(b"ve") || after.starts_with(b"ll") {
                return Some(3);
            }
            if matches!(after.first(), Some(b's' | b't' | b'm' | b'd')) {
                return Some(2);
            }
        }

        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional leading
        // space, then a run of one non-space class.
        let first_class = self.classes.class(first);
        let (run_start, run_class) = if first == ' ' {
            match chars.next().map(|c| self.classes.class(c)) {
                Some(class) if class != CharClass::Space => (1, class),
                _ => (0, CharClass::Space),
            }
        } else {
            (0, first_class)
        };
        if run_class != CharClass::Space {
            return Some(run_start + self.run_len(&text[run_start..], run_class));
        }

        // `\s+(?!\S)|\s+`: a run of white space. When a non-space follows, the
        // run gives up its last character (which then starts the next piece,
        // e.g. as the space of ` word`), unless the run is one character long.
        let run = self.run_len(text, CharClass::Space);
        if run == text.len() {
            return Some(run);
        }
        let last_len = text[..run].chars().next_back().map_or(0, char::len_utf8);
        if run > last_len {
            Some(run - last_len)
        } else {
            Some(run)
        }
    }

    /// Byte length of the longest prefix of `text` whose characters are all of `class`.
    fn run_len(&self, text: &str, class: CharClass) -> usize {
        text.char_indices()
            .find(|&(_, c)| self.classes.class(c) != class)
            .map_or(text.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        let classes = CharClasses::get().expect("tables");
        let pieces: Vec<&str> = classes.split(text).collect();
        assert_eq!(pieces.concat(), text);
        pieces
    }

    #[test]
    fn classes() {
        let c = CharClasses::get().expect("tables");
        assert_eq!(c.class('a'), CharClass::Letter);
        assert_eq!(c.class('日'), CharClass::Letter);
        assert_eq!(c.class('é'), CharClass::Letter);
        assert_eq!(c.class('\u{301}'), CharClass::Other); // combining acute: Mn
        assert_eq!(c.class('\u{93f}'), CharClass::Other); // devanagari vowel sign: Mc
        assert_eq!(c.class('7'), CharClass::Number);
        assert_eq!(c.class('٣'), CharClass::Number);
        assert_eq!(c.class('Ⅻ'), CharClass::Number); // Nl: alphabetic but not a letter
        assert_eq!(c.class('½'), CharClass::Number);
        assert_eq!(c.class(' '), CharClass::Space);
        assert_eq!(c.class('\u{a0}'), CharClass::Space);
        assert_eq!(c.class('\u{3000}'), CharClass::Space);
        assert_eq!(c.class('\u{85}'), CharClass::Space);
        assert_eq!(c.class('\u{200b}'), CharClass::Other); // zero-width space is not White_Space
        assert_eq!(c.class('😀'), CharClass::Other);
        assert_eq!(c.class('\''), CharClass::Other);
    }

    #[test]
    fn words_and_spaces() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a   b"), ["a", "  ", " b"]);
        assert_eq!(split("  a"), [" ", " a"]);
        assert_eq!(split("a  "), ["a", "  "]);
        assert_eq!(split(" "), [" "]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split("a\n \nb"), ["a", "\n ", "\n", "b"]);
        assert_eq!(split("a\n  b"), ["a", "\n ", " b"]);
        assert_eq!(split("a\tb"), ["a", "\t", "b"]);
        assert_eq!(split("a \tb"), ["a", " ", "\t", "b"]);
        assert_eq!(split("x\r\ny"), ["x", "\r", "\n", "y"]);
        assert_eq!(split("x\ry"), ["x", "\r", "y"]);
    }

    #[test]
    fn classes_split_pieces() {
        assert_eq!(split("abc123def"), ["abc", "123", "def"]);
        assert_eq!(split(" 12 ab !?"), [" 12", " ab", " !?"]);
        assert_eq!(split("1,000,000"), ["1", ",", "000", ",", "000"]);
        assert_eq!(split("é\u{301}x"), ["é", "\u{301}", "x"]);
        assert_eq!(split("hi😀😀!"), ["hi", "😀😀!"]);
        assert_eq!(split("<|endoftext|>"), ["<|", "endoftext", "|>"]);
        assert_eq!(split("a\u{a0}b"), ["a", "\u{a0}", "b"]);
    }

    #[test]
    fn contractions() {
        assert_eq!(split("I'm"), ["I", "'m"]);
        assert_eq!(split("can't've"), ["can", "'t", "'ve"]);
        assert_eq!(split("they'll'd're"), ["they", "'ll", "'d", "'re"]);
        assert_eq!(split("I'M"), ["I", "'", "M"]);
        assert_eq!(split("'sam"), ["'s", "am"]);
        assert_eq!(split(" 's"), [" '", "s"]);
        assert_eq!(split("!'s"), ["!'", "s"]);
        assert_eq!(split("''s"), ["''", "s"]);
        assert_eq!(split("'"), ["'"]);
        assert_eq!(split("'l"), ["'", "l"]);
    }
}
