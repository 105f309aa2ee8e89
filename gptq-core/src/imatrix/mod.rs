//! llama.cpp's importance matrix: the mean square of every input feature of
//! every block matrix over a calibration text, which importance-weighted
//! quantizers use to spend precision where activations are large.
//!
//! - [`file`](mod@file): llama-imatrix's `.dat` layout, read and written.
//! - [`Collector`]: an [`ActivationObserver`] that gathers the sums while a
//!   [`Session`] evaluates text, as `llama-imatrix` does (it
//!   ignores products of fewer than 16 tokens, and counts one call per
//!   product).

pub mod file;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use file::{Entry, Imatrix};

use crate::error::Result;
use crate::model::Model;
use crate::model::block::{ActivationObserver, Site};
use crate::perplexity::{NllSums, Perplexity, chunk_count, nll};
use crate::session::{Session, SessionParams};

/// Tokens per forward pass: llama.cpp's default micro-batch, so that a chunk
/// counts as many calls as in llama-imatrix.
const UBATCH: usize = 512;

/// What [`compute`] produced.
#[derive(Clone, Debug)]
pub struct Computed {
    /// The importance matrix.
    pub imatrix: Imatrix,
    /// The perplexity of the second half of each chunk, when asked for (as
    /// llama-imatrix prints it).
    pub perplexity: Option<Perplexity>,
}

/// Evaluates the first `max_chunks` (or all) chunks of `n_ctx` tokens of
/// `tokens`, each from its start with no BOS, as llama-imatrix does, and
/// gathers the importance matrix of every block matrix. With `with_ppl`, also
/// scores the second half of each chunk. `progress(chunk, running_ppl)` is
/// called after each chunk (the PPL is NaN without `with_ppl`). `dataset`
/// names the text in the file.
pub fn compute(
    model: &Arc<Model>,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    with_ppl: bool,
    dataset: &str,
    mut progress: impl FnMut(usize, f64),
) -> Result<Computed> {
    let n_chunks = chunk_count(tokens.len(), n_ctx, max_chunks)?;
    let params = SessionParams {
        n_ctx,
        n_batch: n_ctx.min(UBATCH),
        n_outputs: 32,
        ..SessionParams::default()
    };
    let mut session = Session::new(Arc::clone(model), params)?;
    let mut collector = Collector::new();
    let mut sums = NllSums::default();
    let first = n_ctx / 2;
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        session.reset();
        let outputs = if with_ppl { first..n_ctx - 1 } else { 0..0 };
        session.feed_observed(
            chunk,
            outputs,
            |i, logits| sums.add(nll(logits, chunk[i + 1])),
            &mut collector,
        )?;
        progress(c, if with_ppl { sums.ppl() } else { f64::NAN });
    }
    Ok(Computed {
        imatrix: collector.finish(n_chunks, dataset),
        perplexity: with_ppl.then(|| sums.result(n_chunks)),
    })
}

/// llama-imatrix skips matrix products over fewer tokens than this.
pub const MIN_ROWS: usize = 16;

#[derive(Clone, Debug, Default)]
struct Sums {
    sq: Vec<f64>,
    rows: u64,
    ncall: i32,
}

/// Accumulates the squares of every block matrix's inputs.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    sums: BTreeMap<(usize, Site), Sums>,
}

impl ActivationObserver for Collector {
    fn observe(&mut self, layer: usize, site: Site, rows: &[f32], n: usize) {
        if n < MIN_ROWS {
            return;
        }
        let width = rows.len() / n;
        let e = self.sums.entry((layer, site)).or_default();
        if e.sq.is_empty() {
            e.sq = vec![0.0; width];
        }
        for row in rows.chunks_exact(width) {
            for (s, &x) in e.sq.iter_mut().zip(row) {
                *s += f64::from(x) * f64::from(x);
            }
        }
        e.rows += n as u64;
        e.ncall += 1;
    }
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Collector {
        Collector::default()
    }

    /// The file contents: entries in layer order, then site order.
    pub fn finish(&self, chunks: usize, dataset: &str) -> Imatrix {
        let entries = self
            .sums
            .iter()
            .map(|(&(layer, site), s)| Entry {
                name: site.tensor_name(layer),
                ncall: s.ncall,
                values: s
                    .sq
                    .iter()
                    .map(|&v| (v / s.rows as f64 * f64::from(s.ncall)) as f32)
                    .collect(),
            })
            .collect();
        Imatrix {
            entries,
            chunks: i32::try_from(chunks).unwrap_or(i32::MAX),
            dataset: dataset.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_squares_times_calls() {
        let mut c = Collector::new();
        let rows: Vec<f32> = (0..32)
            .map(|i| if i % 2 == 0 { 1.0 } else { 3.0 })
            .collect();
        // 16 rows of width 2: [1, 3] each.
        c.observe(0, Site::FfnUp, &rows, 16);
        c.observe(0, Site::FfnUp, &rows, 16);
        // Too few rows: ignored.
        c.observe(0, Site::FfnUp, &rows[..4], 2);
        let m = c.finish(2, "t.txt");
        assert_eq!(m.entries.len(), 1);
        let e = &m.entries[0];
        assert_eq!((e.name.as_str(), e.ncall), ("blk.0.ffn_up.weight", 2));
        assert_eq!(e.values, vec![2.0, 18.0]);
        assert_eq!(e.importance(), vec![1.0, 9.0]);
    }
}
