//! GPT-2 byte-level BPE tokenizer, built from what a GGUF file stores.
//!
//! - `bytes`: GPT-2's byte ↔ unicode table, in which tokens are spelled;
//! - `pretokenize`: the GPT-2 pattern that splits text into pieces;
//! - `bpe`: the ranked merges applied to each piece;
//! - `stream`: UTF-8-safe streaming decode ([`DecodeStream`]).
//!
//! It agrees token for token with OpenAI's GPT-2 encoder (tiktoken's
//! `r50k_base`) and Hugging Face's `GPT2Tokenizer`.

mod bpe;
pub(crate) mod bytes;
mod pretokenize;
mod stream;

use std::collections::HashMap;
use std::fmt;

pub use stream::DecodeStream;

use crate::{Error, Result};
use bpe::{Merge, Merges, Scratch};
use pretokenize::CharClasses;

/// `tokenizer.ggml.token_type` of a control token such as `<|endoftext|>`.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// `tokenizer.ggml.token_type` of a user-defined (added) token.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// GPT-2 byte-level BPE tokenizer.
///
/// Built once from the vocabulary and merges of a model file, then shared: it
/// is immutable, `Send + Sync`, and encoding takes `&self`.
#[derive(Clone)]
pub struct Tokenizer {
    /// Raw bytes of every token, concatenated; token `i` is
    /// `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// Id of each token by its stored (byte-level unicode) spelling.
    by_spelling: HashMap<String, u32>,
    /// Id of the one-byte token for each byte value.
    byte_ids: [u32; 256],
    merges: Merges,
    /// Whether each token is a control token.
    control: Vec<bool>,
    /// Control tokens matched by [`Tokenizer::encode_with_special`]: their
    /// text and id, longest text first.
    specials: Vec<(String, u32)>,
    classes: &'static CharClasses,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab())
            .field("n_merges", &self.merges.len())
            .field("n_control", &self.specials.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

impl Tokenizer {
    /// Builds the tokenizer from the GGUF vocabulary.
    ///
    /// - `tokens`: `tokenizer.ggml.tokens`, index = id, spelled in GPT-2's
    ///   byte-level unicode (`"Ġthe"`). Control (type 3) and user-defined
    ///   (type 4) tokens are plain text (`"<|endoftext|>"`), as in llama.cpp.
    /// - `merges`: `tokenizer.ggml.merges`, `"Ġ t"`, in rank order. A pair
    ///   listed twice keeps its first rank.
    /// - `token_types`: `tokenizer.ggml.token_type`, one per token, if the file
    ///   has it; without it, the bos and eos tokens are taken as the control
    ///   tokens and all others as normal.
    /// - `bos`, `eos`: the begin/end-of-sequence ids.
    ///
    /// Fails with [`Error::Tokenizer`] on inconsistent data: duplicate tokens,
    /// a normal token that is not valid byte-level unicode, a byte with no
    /// one-byte token, a malformed merge, a merge naming an unknown symbol or
    /// whose result is not in the vocabulary, a type list of the wrong length,
    /// or a bos/eos id outside the vocabulary.
    pub fn new(
        tokens: &[String],
        merges: &[String],
        token_types: Option<&[i32]>,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<Tokenizer> {
        let n_vocab = tokens.len();
        if u32::try_from(n_vocab).is_err() {
            return Err(err(format!("{n_vocab} tokens do not fit in 32-bit ids")));
        }
        if let Some(types) = token_types
            && types.len() != n_vocab
        {
            return Err(err(format!(
                "{} token types for {n_vocab} tokens",
                types.len()
            )));
        }
        for (name, id) in [("bos", bos), ("eos", eos)] {
            if let Some(id) = id
                && id as usize >= n_vocab
            {
                return Err(err(format!(
                    "{name} token id {id} is outside the vocabulary of {n_vocab} tokens"
                )));
            }
        }
        let classes = CharClasses::get().map_err(err)?;

        let is_control = |id: usize| match token_types {
            Some(types) => types[id] == TOKEN_TYPE_CONTROL,
            None => [bos, eos].contains(&Some(id as u32)),
        };
        let is_plain_text = |id: usize| {
            is_control(id) || token_types.is_some_and(|t| t[id] == TOKEN_TYPE_USER_DEFINED)
        };

        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n_vocab + 1);
        let mut by_spelling = HashMap::with_capacity(n_vocab);
        let mut control = Vec::with_capacity(n_vocab);
        let mut specials = Vec::new();
        offsets.push(0);
        for (id, spelling) in tokens.iter().enumerate() {
            if let Some(first) = by_spelling.insert(spelling.clone(), id as u32) {
                return Err(err(format!(
                    "token {spelling:?} appears twice, at ids {first} and {id}"
                )));
            }
            if is_plain_text(id) {
                bytes.extend_from_slice(spelling.as_bytes());
            } else {
                let raw = bytes::decode_spelling(spelling).map_err(|c| {
                    err(format!(
                        "token {id} ({spelling:?}) is not byte-level unicode: \
                         character {c:?} (U+{:04X}) stands for no byte",
                        u32::from(c)
                    ))
                })?;
                bytes.extend_from_slice(&raw);
            }
            offsets.push(bytes.len());
            control.push(is_control(id));
            if is_control(id) && !spelling.is_empty() {
                specials.push((spelling.clone(), id as u32));
            }
        }
        specials.sort_by_key(|(text, id)| (std::cmp::Reverse(text.len()), *id));

        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let image = bytes::BYTE_TO_CHAR[b];
            let id = *by_spelling
                .get(image.encode_utf8(&mut [0; 4]) as &str)
                .ok_or_else(|| {
                    err(format!(
                        "no token for byte 0x{b:02X} (spelled {image:?}); \
                         every byte needs a one-byte token"
                    ))
                })?;
            if raw_token(&bytes, &offsets, id) != [b as u8] {
                return Err(err(format!(
                    "token {id} ({image:?}) should stand for byte 0x{b:02X} but is a \
                     plain-text token"
                )));
            }
            *slot = id;
        }

        let merges = parse_merges(merges, &by_spelling, &bytes, &offsets)?;

        Ok(Tokenizer {
            bytes,
            offsets,
            by_spelling,
            byte_ids,
            merges,
            control,
            specials,
            classes,
            bos,
            eos,
        })
    }

    /// Encodes ordinary text: control-token text such as `"<|endoftext|>"` is
    /// encoded as plain text (like tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut ids, &mut Scratch::default());
        ids
    }

    /// Encodes text in which control tokens (type 3, e.g. `"<|endoftext|>"`)
    /// written literally become their ids; the text between them is encoded
    /// as by [`Tokenizer::encode`]. Where two control tokens start at the same
    /// place, the longer wins. User-defined tokens (type 4) are not matched.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        // Next occurrence of each special at or after `pos` (None: no more).
        let mut next: Vec<Option<usize>> = self
            .specials
            .iter()
            .map(|(s, _)| text.find(s.as_str()))
            .collect();
        let mut pos = 0;
        loop {
            // Earliest start; `specials` is sorted longest first, so the first
            // found at the earliest start is the longest there.
            let best = next
                .iter()
                .enumerate()
                .filter_map(|(i, at)| at.map(|at| (at, i)))
                .min();
            let Some((start, which)) = best else {
                break;
            };
            let (special, id) = &self.specials[which];
            self.encode_into(&text[pos..start], &mut ids, &mut scratch);
            ids.push(*id);
            pos = start + special.len();
            for (slot, (s, _)) in next.iter_mut().zip(&self.specials) {
                if slot.is_some_and(|at| at < pos) {
                    *slot = text[pos..].find(s.as_str()).map(|at| pos + at);
                }
            }
        }
        self.encode_into(&text[pos..], &mut ids, &mut scratch);
        ids
    }

    fn encode_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut Scratch) {
        let mut symbols = Vec::new();
        for piece in self.classes.split(text) {
            if let &[b] = piece.as_bytes() {
                ids.push(self.byte_ids[usize::from(b)]);
                continue;
            }
            symbols.clear();
            symbols.extend(piece.bytes().map(|b| self.byte_ids[usize::from(b)]));
            self.merges.apply(&mut symbols, scratch);
            ids.extend_from_slice(&symbols);
        }
    }

    /// Decodes ids to text. Byte sequences that are not valid UTF-8 become
    /// U+FFFD (like Hugging Face's `errors="replace"`); control tokens give
    /// their text (`"<|endoftext|>"`).
    ///
    /// Fails with [`Error::InvalidToken`] for an id `>= n_vocab`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A streaming decoder for this tokenizer: feed it one id at a time with
    /// [`DecodeStream::push`] and it appends only whole characters.
    ///
    /// ```
    /// # fn main() -> gptq_core::Result<()> {
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/trained-small-q8_0.gguf");
    /// let model = gptq_core::Model::load(path)?;
    /// let tok = model.tokenizer();
    /// let mut stream = tok.decode_stream();
    /// let mut text = String::new();
    /// for id in tok.encode("naïve café") {
    ///     stream.push(tok, id, &mut text)?;
    /// }
    /// stream.flush(&mut text);
    /// assert_eq!(text, "naïve café");
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode_stream(&self) -> DecodeStream {
        DecodeStream::new()
    }

    /// The raw bytes of a sequence of ids (not necessarily valid UTF-8).
    ///
    /// Fails with [`Error::InvalidToken`] for an id `>= n_vocab`.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let bytes = self.token_bytes(id).ok_or(Error::InvalidToken {
                id,
                vocab: self.n_vocab(),
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// The raw bytes of one token, or `None` if `id` is outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let start = *self.offsets.get(id)?;
        let end = *self.offsets.get(id + 1)?;
        self.bytes.get(start..end)
    }

    /// The id of a token by its stored (byte-level unicode) spelling, e.g.
    /// `"Ġthe"` or `"<|endoftext|>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.by_spelling.get(token).copied()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.control.len()
    }

    /// The begin-of-sequence token, if the file names one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the file names one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `id` is a control token (such as `<|endoftext|>`); false for
    /// ids outside the vocabulary.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }
}

/// The raw bytes of token `id`, which must be in range.
fn raw_token<'b>(bytes: &'b [u8], offsets: &[usize], id: u32) -> &'b [u8] {
    let id = id as usize;
    &bytes[offsets[id]..offsets[id + 1]]
}

/// Parses `"left right"` merges into the merge table, ranked by position.
/// A merge's result must stand for the bytes of its two symbols, so that
/// decoding always restores the encoded text.
fn parse_merges(
    merges: &[String],
    by_spelling: &HashMap<String, u32>,
    bytes: &[u8],
    offsets: &[usize],
) -> Result<Merges> {
    let mut table = Merges::default();
    let mut joined = String::new();
    for (rank, merge) in merges.iter().enumerate() {
        let bad = |what: &str| err(format!("merge {rank} ({merge:?}): {what}"));
        let rank = u32::try_from(rank).map_err(|_| bad("too many merges for 32-bit ranks"))?;
        let (left, right) = merge
            .split_once(' ')
            .filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' '))
            .ok_or_else(|| bad("expected two symbols separated by one space"))?;
        let symbol = |s: &str| {
            by_spelling
                .get(s)
                .copied()
                .ok_or_else(|| bad(&format!("symbol {s:?} is not in the vocabulary")))
        };
        let (left_id, right_id) = (symbol(left)?, symbol(right)?);
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        let id = *by_spelling
            .get(joined.as_str())
            .ok_or_else(|| bad(&format!("result {joined:?} is not in the vocabulary")))?;
        let (l, r, m) = (
            raw_token(bytes, offsets, left_id),
            raw_token(bytes, offsets, right_id),
            raw_token(bytes, offsets, id),
        );
        if m.len() != l.len() + r.len() || !m.starts_with(l) || !m.ends_with(r) {
            return Err(bad(&format!(
                "token {id} does not stand for the bytes of {left:?} followed by {right:?}"
            )));
        }
        table.insert(left_id, right_id, Merge { rank, id });
    }
    Ok(table)
}

#[cfg(test)]
mod tests;
