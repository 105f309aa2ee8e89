//! llama-imatrix's `.dat` file: per weight matrix, the mean square of each
//! input feature over the calibration text (scaled by the number of
//! evaluations), as llama.cpp's `llama-imatrix` writes it and
//! `llama-quantize --imatrix` reads it.
//!
//! Layout (little-endian; llama.cpp `examples/imatrix/imatrix.cpp`):
//!
//! ```text
//! n_entries: i32
//! per entry:  len: i32, name: len bytes (no terminator),
//!             ncall: i32, nval: i32, values: f32 × nval
//! chunks: i32                       (optional: older files end here)
//! len: i32, dataset: len bytes      (the calibration text's file name)
//! ```
//!
//! Each stored value is `Σx² / count · ncall`, where `count` is the number of
//! rows (tokens) seen and `ncall` the number of matrix products observed;
//! readers divide by `ncall` to get the mean of `x²`.

use std::io::{Read, Write};

use crate::error::{Error, Result};

const KIND: &str = "importance matrix file";

/// One matrix's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The weight's GGUF name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// Matrix products observed.
    pub ncall: i32,
    /// Stored values: mean `x²` per input feature times `ncall`.
    pub values: Vec<f32>,
}

impl Entry {
    /// Mean `x²` per input feature: the importance weights llama-quantize
    /// passes to its quantizers.
    pub fn importance(&self) -> Vec<f32> {
        let n = self.ncall.max(1) as f32;
        if self.ncall > 0 {
            self.values.iter().map(|v| v / n).collect()
        } else {
            self.values.clone()
        }
    }
}

/// A whole importance-matrix file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// Entries in file order.
    pub entries: Vec<Entry>,
    /// Chunks of text evaluated (`m_last_call`); 0 when the file does not say.
    pub chunks: i32,
    /// The calibration text's file name; empty when the file does not say.
    pub dataset: String,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::file_format(
                KIND,
                self.at as u64,
                format!("file ends inside {what}"),
            ));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len(&mut self, what: &str, max: usize) -> Result<usize> {
        let at = self.at as u64;
        let v = self.i32(what)?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| Error::file_format(KIND, at, format!("implausible {what} {v}")))
    }
}

impl Imatrix {
    /// Parses a file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Imatrix> {
        let mut r = Reader { bytes, at: 0 };
        let n = r.i32("the entry count")?;
        if n < 1 {
            return Err(Error::file_format(KIND, 0, format!("{n} entries: no data")));
        }
        let mut entries = Vec::new();
        for i in 0..n {
            let len = r.len("name length", 4096)?;
            let at = r.at as u64;
            let name = String::from_utf8(r.take(len, "a name")?.to_vec()).map_err(|_| {
                Error::file_format(KIND, at, format!("entry {}: name is not UTF-8", i + 1))
            })?;
            let ncall = r.i32("a call count")?;
            let nval = r.len("value count", 1 << 28)?;
            if nval == 0 {
                return Err(Error::file_format(
                    KIND,
                    r.at as u64 - 4,
                    format!("entry '{name}' has no values"),
                ));
            }
            let at = r.at as u64;
            let raw = r.take(nval * 4, &format!("the values of '{name}'"))?;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(j) = values.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(Error::file_format(
                    KIND,
                    at + 4 * j as u64,
                    format!("entry '{name}': value {j} is {}", values[j]),
                ));
            }
            entries.push(Entry {
                name,
                ncall,
                values,
            });
        }
        let mut m = Imatrix {
            entries,
            ..Imatrix::default()
        };
        if r.at < bytes.len() {
            m.chunks = r.i32("the chunk count")?;
            let len = r.len("dataset name length", 1 << 20)?;
            m.dataset = String::from_utf8_lossy(r.take(len, "the dataset name")?).into_owned();
        }
        if r.at != bytes.len() {
            return Err(Error::file_format(
                KIND,
                r.at as u64,
                format!("{} bytes after the end", bytes.len() - r.at),
            ));
        }
        Ok(m)
    }

    /// Reads a file.
    pub fn read(path: &std::path::Path) -> Result<Imatrix> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::io(path, e))?;
        Imatrix::parse(&bytes).map_err(|e| match e {
            Error::FileFormat { kind, offset, msg } => Error::FileFormat {
                kind,
                offset,
                msg: format!("{}: {msg}", path.display()),
            },
            e => e,
        })
    }

    /// Writes the file, entries in the order held.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let i32_of = |v: usize| {
            i32::try_from(v).map_err(|_| std::io::Error::other(format!("{v} exceeds an i32")))
        };
        let mut buf = Vec::new();
        buf.extend_from_slice(&i32_of(self.entries.len())?.to_le_bytes());
        for e in &self.entries {
            buf.extend_from_slice(&i32_of(e.name.len())?.to_le_bytes());
            buf.extend_from_slice(e.name.as_bytes());
            buf.extend_from_slice(&e.ncall.to_le_bytes());
            buf.extend_from_slice(&i32_of(e.values.len())?.to_le_bytes());
            for v in &e.values {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        buf.extend_from_slice(&self.chunks.to_le_bytes());
        buf.extend_from_slice(&i32_of(self.dataset.len())?.to_le_bytes());
        buf.extend_from_slice(self.dataset.as_bytes());
        out.write_all(&buf)
    }

    /// The entry for a weight, by GGUF name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        Imatrix {
            entries: vec![
                Entry {
                    name: "blk.0.attn_qkv.weight".into(),
                    ncall: 4,
                    values: vec![4.0, 8.0, 0.0, 2.0],
                },
                Entry {
                    name: "blk.0.ffn_down.weight".into(),
                    ncall: 4,
                    values: vec![1.0; 8],
                },
            ],
            chunks: 4,
            dataset: "calibration.txt".into(),
        }
    }

    #[test]
    fn round_trip_and_importance() {
        let m = sample();
        let mut bytes = Vec::new();
        m.write(&mut bytes).unwrap();
        assert_eq!(Imatrix::parse(&bytes).unwrap(), m);
        assert_eq!(m.entries[0].importance(), vec![1.0, 2.0, 0.0, 0.5]);
        assert!(m.get("blk.0.ffn_down.weight").is_some());
        // Files without the trailing chunk count and dataset (older writers).
        let old = &bytes[..bytes.len() - 8 - "calibration.txt".len()];
        let o = Imatrix::parse(old).unwrap();
        assert_eq!((o.chunks, o.dataset.as_str()), (0, ""));
        assert_eq!(o.entries, m.entries);
    }

    #[test]
    fn bad_files_are_errors() {
        let mut bytes = Vec::new();
        sample().write(&mut bytes).unwrap();
        for cut in [0, 3, 10, 40, bytes.len() - 1] {
            assert!(Imatrix::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Imatrix::parse(&extra).is_err());
        let mut neg = bytes.clone();
        neg[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(Imatrix::parse(&neg).is_err());
        let mut nan = bytes.clone();
        let at = 4 + 4 + 21 + 8;
        nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let e = Imatrix::parse(&nan).unwrap_err().to_string();
        assert!(e.contains("value 0"), "{e}");
    }
}
