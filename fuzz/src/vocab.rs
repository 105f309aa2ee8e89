//! A tiny byte-level BPE vocabulary built from fuzzer input: the 256 byte
//! tokens (in a rotated order), merges of existing tokens that add new ones,
//! control and user-defined tokens, and at most one deliberate corruption, so
//! that both the tokenizer's checks and its encoding get exercised.

use arbitrary::Arbitrary;

use crate::byte_tokens::{byte_char, spell};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The recipe for a vocabulary.
#[derive(Arbitrary, Debug, Clone)]
pub struct VocabSpec {
    /// Where the byte tokens start in the id order.
    pub rotate: u8,
    /// Pairs of token indices (reduced modulo the tokens so far) to merge.
    pub merges: Vec<(u16, u16)>,
    /// Extra tokens spelled as plain text: `(text, is_control)`.
    pub specials: Vec<(String, bool)>,
    /// Which token, if any, is the end of text (modulo the vocabulary).
    pub eos: Option<u16>,
    /// One thing to break, or none.
    pub corruption: Option<Corruption>,
}

/// A deliberate inconsistency the tokenizer must refuse (or tolerate) cleanly.
#[derive(Arbitrary, Debug, Clone)]
pub enum Corruption {
    /// A token spelled like another one.
    DuplicateToken(u16),
    /// A merge line that is not two known symbols.
    BadMerge(String),
    /// The type list one entry short or long.
    TypesLength(bool),
    /// A byte without its one-byte token.
    DropByte(u8),
    /// A normal token whose spelling stands for no byte.
    BadSpelling(u16, char),
    /// A merge whose result is spelled like the pair but is a plain-text token.
    PlainResult(u16, u16),
    /// A raw token type value.
    Type(u16, i32),
}

/// A vocabulary as a GGUF file stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// Spellings by id.
    pub tokens: Vec<String>,
    /// A type per token (llama.cpp's numbering).
    pub types: Vec<i32>,
    /// `"left right"` merges by rank.
    pub merges: Vec<String>,
    /// End-of-text id (also used as the beginning of text).
    pub eos: Option<u32>,
}

/// At most this many merges and special tokens, to keep executions fast.
const MAX_MERGES: usize = 48;
const MAX_SPECIALS: usize = 4;

impl VocabSpec {
    /// Builds the vocabulary.
    pub fn build(&self) -> Vocab {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_char(b.wrapping_add(self.rotate)).to_string())
            .collect();
        let mut types = vec![NORMAL; 256];
        let mut merges = Vec::new();
        // Byte values of each normal token, to spell merge results.
        let mut raw: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| vec![b.wrapping_add(self.rotate)])
            .collect();
        for &(a, b) in self.merges.iter().take(MAX_MERGES) {
            let (a, b) = (a as usize % raw.len(), b as usize % raw.len());
            let joined: Vec<u8> = raw[a].iter().chain(&raw[b]).copied().collect();
            merges.push(format!("{} {}", tokens[a], tokens[b]));
            let spelling = spell(&joined);
            if !tokens.contains(&spelling) {
                tokens.push(spelling);
                types.push(NORMAL);
                raw.push(joined);
            }
        }
        for (text, control) in self.specials.iter().take(MAX_SPECIALS) {
            if text.is_empty() || tokens.contains(text) {
                continue;
            }
            tokens.push(text.clone());
            types.push(if *control { CONTROL } else { USER_DEFINED });
        }
        let eos = self.eos.map(|e| e as u32 % tokens.len() as u32);
        let mut vocab = Vocab {
            tokens,
            types,
            merges,
            eos,
        };
        if let Some(c) = &self.corruption {
            vocab.corrupt(c);
        }
        vocab
    }
}

impl Vocab {
    fn corrupt(&mut self, c: &Corruption) {
        let n = self.tokens.len();
        let at = |i: u16| i as usize % n;
        match c {
            Corruption::DuplicateToken(i) => {
                let dup = self.tokens[at(*i)].clone();
                self.tokens.push(dup);
                self.types.push(NORMAL);
            }
            Corruption::BadMerge(line) => self.merges.insert(0, line.clone()),
            Corruption::TypesLength(longer) => {
                if *longer {
                    self.types.push(NORMAL);
                } else {
                    self.types.pop();
                }
            }
            Corruption::DropByte(b) => {
                let spelling = byte_char(*b).to_string();
                if let Some(i) = self.tokens.iter().position(|t| *t == spelling) {
                    self.tokens[i] = format!("<dropped {b}>");
                    self.types[i] = USER_DEFINED;
                }
            }
            Corruption::BadSpelling(i, ch) => {
                self.tokens[at(*i)].push(*ch);
            }
            Corruption::PlainResult(a, b) => {
                let text = format!("{}{}", self.tokens[at(*a)], self.tokens[at(*b)]);
                if !self.tokens.contains(&text) {
                    self.merges
                        .push(format!("{} {}", self.tokens[at(*a)], self.tokens[at(*b)]));
                    self.tokens.push(text);
                    self.types.push(USER_DEFINED);
                }
            }
            Corruption::Type(i, ty) => self.types[at(*i)] = *ty,
        }
    }
}
