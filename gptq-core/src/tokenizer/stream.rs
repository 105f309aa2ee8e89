//! Streaming decode: turns token ids into text one at a time without ever
//! emitting half a UTF-8 character.

use super::Tokenizer;
use crate::{Error, Result};

/// Streaming decoder: holds at most 3 pending bytes of an incomplete UTF-8
/// character; never emits half a character.
///
/// Bytes that can never become valid UTF-8 (a stray continuation byte, a
/// lead byte followed by a non-continuation) are emitted as U+FFFD as soon as
/// that is certain, following the same "maximal subpart" rule as
/// [`String::from_utf8_lossy`]; so the concatenation of everything pushed and
/// flushed equals [`Tokenizer::decode`] of all the ids at once.
///
/// It does not borrow the tokenizer, so a session can store it beside the model.
#[derive(Default, Clone, Debug)]
pub struct DecodeStream {
    /// Bytes not yet emitted. Between calls: at most 3 bytes, the start of one
    /// character that is still incomplete.
    pub(super) pending: Vec<u8>,
}

impl DecodeStream {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the text that became complete with token `id` to `out`; returns
    /// the number of bytes appended.
    ///
    /// Fails with [`Error::InvalidToken`] when `id` is outside the vocabulary
    /// (nothing is appended and the pending bytes are kept).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32, out: &mut String) -> Result<usize> {
        let bytes = tokenizer.token_bytes(id).ok_or(Error::InvalidToken {
            id,
            vocab: tokenizer.n_vocab(),
        })?;
        let before = out.len();
        if self.pending.is_empty() {
            let done = decode_prefix(bytes, out);
            self.pending.extend_from_slice(&bytes[done..]);
        } else {
            self.pending.extend_from_slice(bytes);
            let done = decode_prefix(&self.pending, out);
            self.pending.drain(..done);
        }
        Ok(out.len() - before)
    }

    /// Emits whatever is pending (incomplete bytes become U+FFFD) and resets.
    pub fn flush(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            // The pending bytes are the start of one character: one maximal
            // subpart, so one replacement character.
            out.push(char::REPLACEMENT_CHARACTER);
        }
        self.reset();
    }

    /// Drops whatever is pending.
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}

/// Appends the decodable prefix of `bytes` to `out`, invalid sequences as
/// U+FFFD, and returns its length; what is left is an incomplete (at most
/// 3-byte) start of a character that later bytes may complete.
fn decode_prefix(bytes: &[u8], out: &mut String) -> usize {
    let mut at = 0;
    loop {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(text) => {
                out.push_str(text);
                return bytes.len();
            }
            Err(e) => {
                let valid_end = at + e.valid_up_to();
                if let Ok(text) = std::str::from_utf8(&bytes[at..valid_end]) {
                    out.push_str(text);
                }
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        at = valid_end + bad;
                    }
                    None => return valid_end,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_prefix;

    fn run(bytes: &[u8]) -> (String, usize) {
        let mut out = String::new();
        let done = decode_prefix(bytes, &mut out);
        (out, done)
    }

    #[test]
    fn prefixes() {
        assert_eq!(run(b"abc"), ("abc".into(), 3));
        assert_eq!(run("é".as_bytes()), ("é".into(), 2));
        assert_eq!(run(&"日".as_bytes()[..2]), (String::new(), 0));
        assert_eq!(run(b"a\xe6\x97"), ("a".into(), 1));
        assert_eq!(run(b"\x80"), ("\u{FFFD}".into(), 1));
        assert_eq!(run(b"\xff\xfea"), ("\u{FFFD}\u{FFFD}a".into(), 3));
        assert_eq!(run(b"\xe6\x97a"), ("\u{FFFD}a".into(), 3));
        assert_eq!(run(b"\xe0\x80"), ("\u{FFFD}\u{FFFD}".into(), 2));
        assert_eq!(run(b"\xf0\x9f\x98"), (String::new(), 0));
    }
}
