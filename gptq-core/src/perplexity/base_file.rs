//! llama-perplexity's `--kl-divergence-base` file: the base model's
//! log-probabilities at every scored position, 16 bits each, so that a
//! quantized model can later be compared with it without the base model.
//!
//! Layout (little-endian; as llama.cpp's `perplexity.cpp` writes and reads it):
//!
//! ```text
//! "_logits_"                      8 bytes
//! n_ctx: u32, n_vocab: i32, n_chunk: i32
//! tokens: i32 × n_chunk·n_ctx     the evaluated text
//! per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them), one row of
//! nv = 2·⌈n_vocab/2⌉ + 4 u16:
//!   scale: f32, min_log_prob: f32 (the first four u16)
//!   q[i]: u16 for each token i    log p(i) ≈ scale·q[i] + min_log_prob
//! ```
//!
//! Log-probabilities below `max - 16` (relative to the largest logit) are
//! clamped to that floor and stored as 0.

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// What the file is called in errors.
const KIND: &str = "llama-perplexity logits file";

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"_logits_";

/// u16 values per stored row for a vocabulary of `n_vocab`: the two f32 of the
/// row header, then the vocabulary padded to an even count.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Rows stored per chunk of `n_ctx`: the scored positions.
pub fn rows_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// The header of a base file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Chunk length the base model was evaluated with.
    pub n_ctx: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Chunks stored.
    pub n_chunk: usize,
    /// The evaluated tokens, `n_chunk · n_ctx` of them.
    pub tokens: Vec<u32>,
}

impl Header {
    /// Bytes of the header and tokens.
    pub fn n_bytes(&self) -> u64 {
        8 + 12 + 4 * self.tokens.len() as u64
    }

    /// Bytes of the whole file.
    pub fn file_bytes(&self) -> u64 {
        self.n_bytes()
            + self.n_chunk as u64
                * rows_per_chunk(self.n_ctx) as u64
                * row_len(self.n_vocab) as u64
                * 2
    }

    /// Writes the header and the tokens.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let i32_of = |v: usize| {
            i32::try_from(v).map_err(|_| std::io::Error::other(format!("{v} exceeds an i32")))
        };
        out.write_all(MAGIC)?;
        out.write_all(&(i32_of(self.n_ctx)? as u32).to_le_bytes())?;
        out.write_all(&i32_of(self.n_vocab)?.to_le_bytes())?;
        out.write_all(&i32_of(self.n_chunk)?.to_le_bytes())?;
        let mut buf = Vec::with_capacity(self.tokens.len() * 4);
        for &t in &self.tokens {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&buf)
    }

    /// Reads a header and its tokens, checking that they are self-consistent
    /// and, when `file_len` is given, that the file holds exactly the rows the
    /// header promises.
    pub fn read(input: &mut impl Read, file_len: Option<u64>) -> Result<Header> {
        let fail = |at: u64, what: String| Error::file_format(KIND, at, what);
        let mut head = [0u8; 20];
        input
            .read_exact(&mut head)
            .map_err(|_| fail(0, "too short for a header".into()))?;
        if &head[..8] != MAGIC {
            return Err(fail(0, "no \"_logits_\" magic".into()));
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (n_ctx, n_vocab, n_chunk) = (word(8), word(12) as i32, word(16) as i32);
        if !(4..=1 << 24).contains(&n_ctx) {
            return Err(fail(8, format!("implausible context length {n_ctx}")));
        }
        if !(1..=1 << 24).contains(&n_vocab) {
            return Err(fail(12, format!("implausible vocabulary size {n_vocab}")));
        }
        if !(1..=1 << 24).contains(&n_chunk) {
            return Err(fail(16, format!("implausible chunk count {n_chunk}")));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let n_tokens = n_ctx
            .checked_mul(n_chunk)
            .filter(|&n| n <= 1 << 32)
            .ok_or_else(|| fail(16, "token count overflows".into()))?;
        let mut header = Header {
            n_ctx,
            n_vocab,
            n_chunk,
            tokens: Vec::new(),
        };
        if let Some(len) = file_len {
            header.tokens = vec![0; n_tokens];
            let want = header.file_bytes();
            if len != want {
                return Err(fail(
                    len.min(want),
                    format!(
                        "the header promises {n_chunk} chunks of {n_ctx} tokens over a vocabulary of {n_vocab} ({want} bytes), but the file has {len} bytes"
                    ),
                ));
            }
        }
        let mut raw = vec![0u8; n_tokens * 4];
        input
            .read_exact(&mut raw)
            .map_err(|_| fail(20, format!("file ends inside its {n_tokens} tokens")))?;
        header.tokens = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(at) = header.tokens.iter().position(|&t| t as usize >= n_vocab) {
            return Err(fail(
                20 + 4 * at as u64,
                format!(
                    "token {} at position {at} lies outside the vocabulary of {n_vocab}",
                    header.tokens[at] as i32
                ),
            ));
        }
        Ok(header)
    }
}

/// Encodes one row of logits as llama-perplexity stores it (`row` has
/// [`row_len`] entries) and returns the NLL of `target`.
pub fn encode_row(logits: &[f32], target: u32, row: &mut [u16]) -> f64 {
    debug_assert_eq!(row.len(), row_len(logits.len()));
    let (mut max, mut min) = (logits[0], logits[0]);
    for &v in &logits[1..] {
        max = max.max(v);
        min = min.min(v);
    }
    let min = min.max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, q) = row.split_at_mut(4);
    let s = scale.to_bits();
    let m = min_log_prob.to_bits();
    head.copy_from_slice(&[s as u16, (s >> 16) as u16, m as u16, (m >> 16) as u16]);
    q.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &v) in q.iter_mut().zip(logits) {
            if v > min {
                // Round to nearest, ties to even, as ggml's nearest_int.
                *o = (inv * (v - min)).round_ties_even().clamp(0.0, 65535.0) as u16;
            }
        }
    }
    f64::from(max + log_sum_exp - logits[target as usize])
}

/// The stored row's `(scale, min_log_prob)` header.
pub fn row_header(row: &[u16]) -> (f32, f32) {
    let f = |i: usize| f32::from_bits(u32::from(row[i]) | (u32::from(row[i + 1]) << 16));
    (f(0), f(2))
}

/// Reads `rows.len() / row_len` stored rows (a chunk) into `rows`.
pub fn read_rows(input: &mut impl Read, rows: &mut [u16]) -> std::io::Result<()> {
    let mut raw = vec![0u8; rows.len() * 2];
    input.read_exact(&mut raw)?;
    for (o, b) in rows.iter_mut().zip(raw.chunks_exact(2)) {
        *o = u16::from_le_bytes([b[0], b[1]]);
    }
    Ok(())
}

/// Writes stored rows.
pub fn write_rows(out: &mut impl Write, rows: &[u16]) -> std::io::Result<()> {
    let mut raw = Vec::with_capacity(rows.len() * 2);
    for &v in rows {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    out.write_all(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_lengths() {
        assert_eq!(row_len(50257), 50262);
        assert_eq!(row_len(4), 8);
        assert_eq!(rows_per_chunk(256), 127);
        assert_eq!(rows_per_chunk(5), 2);
    }

    #[test]
    fn encoded_rows_decode_to_log_probs() {
        let logits = [0.5f32, -3.0, 2.0, 1.0, -30.0];
        let mut row = vec![0u16; row_len(logits.len())];
        let nll = encode_row(&logits, 2, &mut row);
        let z: f64 = logits.iter().map(|&v| f64::from(v).exp()).sum();
        let (scale, min_lp) = row_header(&row);
        for (i, &v) in logits.iter().enumerate() {
            let want = (f64::from(v) - z.ln()).max(f64::from(min_lp));
            let got = f64::from(scale) * f64::from(row[4 + i]) + f64::from(min_lp);
            assert!((got - want).abs() < 2e-4, "{i}: {got} vs {want}");
        }
        assert!((nll - (z.ln() - 2.0)).abs() < 1e-6);
        // The padding entry stays zero.
        assert_eq!(row[4 + 5], 0);
    }

    #[test]
    fn header_round_trip_and_errors() {
        let h = Header {
            n_ctx: 8,
            n_vocab: 5,
            n_chunk: 2,
            tokens: (0..16).map(|i| i % 5).collect(),
        };
        let mut bytes = Vec::new();
        h.write(&mut bytes).unwrap();
        let rows = vec![7u16; 2 * rows_per_chunk(8) * row_len(5)];
        write_rows(&mut bytes, &rows).unwrap();
        assert_eq!(bytes.len() as u64, h.file_bytes());
        let mut r = &bytes[..];
        assert_eq!(Header::read(&mut r, Some(bytes.len() as u64)).unwrap(), h);
        let mut back = vec![0u16; rows.len()];
        read_rows(&mut r, &mut back).unwrap();
        assert_eq!(back, rows);

        // Truncated, bad magic, token outside the vocabulary.
        let cut = &bytes[..bytes.len() - 1];
        let e = Header::read(&mut &cut[..], Some(cut.len() as u64)).unwrap_err();
        assert!(e.to_string().contains("promises"), "{e}");
        let mut bad = bytes.clone();
        bad[0] = b'x';
        assert!(Header::read(&mut &bad[..], None).is_err());
        let mut bad = bytes.clone();
        bad[20] = 9;
        let e = Header::read(&mut &bad[..], None).unwrap_err();
        assert!(e.to_string().contains("vocabulary"), "{e}");
        assert!(Header::read(&mut &bytes[..10], None).is_err());
    }
}
