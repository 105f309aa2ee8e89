//! The GPT-2 forward pass over a batch of consecutive positions. Prefill (many
//! tokens) and decode (one token) run the same code; only the parallel split
//! differs.

use std::sync::atomic::{AtomicBool, Ordering};

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

pub(crate) mod batch;

use super::Model;
use super::block::{ActivationObserver, BlockWeights, Site, reborrow};
use super::hparams::HParams;
use super::weights::VectorLoc;
use crate::error::{Error, Result};
use crate::quant::matmul::matmul_on;
use crate::quant::team::Par;
use crate::quant::{HeadQueries, MatmulScratch, VerifiedTable};

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvType {
    /// 32-bit floats: exact.
    #[default]
    F32,
    /// Half floats: half the memory, keys and values rounded to 11 bits.
    F16,
}

enum KvStore {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

/// Keys and values of every layer for every position of one session, laid
/// out `[layer][head][position][head_dim]`, allocated once. Head-major, so
/// that attention reads each head's keys and values as one contiguous run
/// (which the hardware prefetchers follow) rather than `head_dim` floats out
/// of every `n_embd`.
pub(crate) struct KvCache {
    store: KvStore,
    n_ctx: usize,
    d: usize,
    n_head: usize,
}

fn try_alloc<T: Clone>(n: usize, zero: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        what: what.into(),
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    v.resize(n, zero);
    Ok(v)
}

impl KvCache {
    /// A zeroed cache for `n_head` heads of `d / n_head` values.
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        d: usize,
        n_head: usize,
        ty: KvType,
    ) -> Result<KvCache> {
        if n_head == 0 || !d.is_multiple_of(n_head) {
            return Err(Error::InvalidArgument(format!(
                "KV cache: {n_head} heads do not split {d} values"
            )));
        }
        let n = n_layer
            .checked_mul(n_ctx)
            .and_then(|v| v.checked_mul(d))
            .ok_or_else(|| Error::InvalidArgument("KV cache size overflows".into()))?;
        let store = match ty {
            KvType::F32 => KvStore::F32 {
                k: try_alloc(n, 0.0, "KV cache")?,
                v: try_alloc(n, 0.0, "KV cache")?,
            },
            KvType::F16 => KvStore::F16 {
                k: try_alloc(n, f16::ZERO, "KV cache")?,
                v: try_alloc(n, f16::ZERO, "KV cache")?,
            },
        };
        Ok(KvCache {
            store,
            n_ctx,
            d,
            n_head,
        })
    }

    pub fn n_bytes(&self) -> usize {
        match &self.store {
            KvStore::F32 { k, v } => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
            KvStore::F16 { k, v } => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
        }
    }

    /// Stores the keys and values of `n` tokens (from their fused q|k|v rows)
    /// at positions `pos0..pos0 + n` of `layer`: a prompt's heads in
    /// parallel on `par` (each head's rows are its own run of the cache), a
    /// few tokens' on this thread.
    fn store(&mut self, par: Par<'_>, layer: usize, pos0: usize, qkv: &[f32], n: usize) {
        let (d, n_ctx) = (self.d, self.n_ctx);
        let hd = d / self.n_head;
        let r = self.layer_range(layer);
        // Head `h`'s key and value of every token, with where they go in the
        // head's run of the layer.
        let rows = |h: usize| {
            (0..n).map(move |t| {
                let row = &qkv[t * 3 * d..(t + 1) * 3 * d];
                let (k, v) = (&row[d + h * hd..][..hd], &row[2 * d + h * hd..][..hd]);
                ((pos0 + t) * hd, k, v)
            })
        };
        match &mut self.store {
            KvStore::F32 { k: kc, v: vc } => {
                let each = |h: usize, kh: &mut [f32], vh: &mut [f32]| {
                    for (at, k, v) in rows(h) {
                        kh[at..at + hd].copy_from_slice(k);
                        vh[at..at + hd].copy_from_slice(v);
                    }
                };
                store_heads(par, n, &mut kc[r.clone()], &mut vc[r], n_ctx * hd, each);
            }
            KvStore::F16 { k: kc, v: vc } => {
                let each = |h: usize, kh: &mut [f16], vh: &mut [f16]| {
                    for (at, k, v) in rows(h) {
                        for (c, src) in [(&mut *kh, k), (&mut *vh, v)] {
                            for (o, &x) in c[at..at + hd].iter_mut().zip(src) {
                                *o = f16::from_f32(x);
                            }
                        }
                    }
                };
                store_heads(par, n, &mut kc[r.clone()], &mut vc[r], n_ctx * hd, each);
            }
        }
    }

    /// Where `layer`'s keys (and, in their own buffer, values) lie.
    fn layer_range(&self, layer: usize) -> std::ops::Range<usize> {
        let size = self.n_ctx * self.d;
        layer * size..(layer + 1) * size
    }

    /// The keys and values of `layer`.
    fn layer(&self, layer: usize) -> Layer<'_> {
        let r = self.layer_range(layer);
        match &self.store {
            KvStore::F32 { k, v } => Layer::F32(&k[r.clone()], &v[r]),
            KvStore::F16 { k, v } => Layer::F16(&k[r.clone()], &v[r]),
        }
    }
}

/// Tokens from which [`KvCache::store`] shares the heads out in parallel:
/// below, the copies (a few hundred bytes per head and token) cost less than
/// handing out a parallel loop.
const STORE_PAR_MIN_TOKENS: usize = 16;

/// Runs `each(h, keys_h, values_h)` over the heads' runs (`run` long) of one
/// layer's keys and values: in parallel on `par` from
/// [`STORE_PAR_MIN_TOKENS`] tokens, else on this thread.
fn store_heads<T: Send>(
    par: Par<'_>,
    n: usize,
    k: &mut [T],
    v: &mut [T],
    run: usize,
    each: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    if n >= STORE_PAR_MIN_TOKENS {
        par.for_each_chunks2(k, run, v, run, each);
    } else {
        for (h, (kh, vh)) in k.chunks_mut(run).zip(v.chunks_mut(run)).enumerate() {
            each(h, kh, vh);
        }
    }
}

/// One layer of the cache, keys then values: head `h`'s row for position
/// `p` starts at `(h·n_ctx + p)·head_dim` of each.
#[derive(Clone, Copy)]
enum Layer<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [f16], &'a [f16]),
}

/// Activation buffers for up to `n_batch` tokens, allocated once per session.
pub(crate) struct Scratch {
    n_batch: usize,
    /// Residual stream, `[n_batch][n_embd]`.
    x: Vec<f32>,
    /// Normalised input of the current sub-layer / its output, `[rows][n_embd]`.
    h: Vec<f32>,
    /// Fused query|key|value, `[n_batch][3·n_embd]`.
    qkv: Vec<f32>,
    /// Attention output before the projection, `[n_batch][n_embd]`.
    att: Vec<f32>,
    /// MLP hidden layer, `[n_batch][n_ff]`.
    ff: Vec<f32>,
    /// Attention scores, one lane of `n_ctx` per parallel task.
    scores: Vec<f32>,
    n_lanes: usize,
    mm: MatmulScratch,
}

impl Scratch {
    pub fn new(model: &Model, n_ctx: usize, n_batch: usize, n_outputs: usize) -> Result<Scratch> {
        let rows = n_batch.max(n_outputs);
        let mm = MatmulScratch::for_matrices(rows, model.weights().matrices(model.bytes()));
        Scratch::with_matmul(model.hparams(), n_ctx, n_batch, n_outputs, mm)
    }

    /// Scratch for a model of shape `hp` whose matrices are not known yet
    /// (the calibration's block runner): products with any block type.
    pub fn for_hparams(
        hp: &HParams,
        n_ctx: usize,
        n_batch: usize,
        n_outputs: usize,
    ) -> Result<Scratch> {
        let rows = n_batch.max(n_outputs);
        let mm = MatmulScratch::new(rows, hp.n_embd.max(hp.n_ff));
        Scratch::with_matmul(hp, n_ctx, n_batch, n_outputs, mm)
    }

    fn with_matmul(
        hp: &HParams,
        n_ctx: usize,
        n_batch: usize,
        n_outputs: usize,
        mm: MatmulScratch,
    ) -> Result<Scratch> {
        let d = hp.n_embd;
        let rows = n_batch.max(n_outputs);
        let n_lanes = n_batch.max(hp.n_head);
        let sized = |a: usize, b: usize, what: &str| -> Result<Vec<f32>> {
            let n = a
                .checked_mul(b)
                .ok_or_else(|| Error::InvalidArgument(format!("{what} size overflows")))?;
            try_alloc(n, 0.0, what)
        };
        Ok(Scratch {
            n_batch,
            x: sized(n_batch, d, "activations")?,
            h: sized(rows, d, "activations")?,
            qkv: sized(n_batch, 3 * d, "activations")?,
            att: sized(n_batch, d, "activations")?,
            ff: sized(n_batch, hp.n_ff, "activations")?,
            scores: sized(n_lanes, n_ctx, "attention scores")?,
            n_lanes,
            mm,
        })
    }

    /// The residual stream buffer, `[n_batch][n_embd]`.
    pub fn x_mut(&mut self) -> &mut [f32] {
        &mut self.x
    }

    pub fn n_bytes(&self) -> usize {
        4 * (self.x.len()
            + self.h.len()
            + self.qkv.len()
            + self.att.len()
            + self.ff.len()
            + self.scores.len())
            + self.mm.n_bytes()
    }
}

fn vget<'a>(bytes: &'a [u8], v: &'a VectorLoc) -> &'a [f32] {
    v.get(bytes)
}

/// Runs `f(t, row)` over the first `n` rows of width `w` of `buf`, in parallel
/// when there is more than one.
fn for_rows(buf: &mut [f32], w: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let buf = &mut buf[..n * w];
    if n > 1 {
        buf.par_chunks_mut(w)
            .enumerate()
            .for_each(|(t, row)| f(t, row));
    } else {
        f(0, buf);
    }
}

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    if cancel.swap(false, Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    Ok(())
}

/// Runs tokens `tokens` at positions `pos0..` through every block, writing their
/// keys and values into `kv`; afterwards `s.x` holds their residual streams.
/// The caller has checked the ids and that the positions fit the cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_hidden(
    par: Par<'_>,
    model: &Model,
    kv: &mut KvCache,
    s: &mut Scratch,
    tokens: &[u32],
    pos0: usize,
    cancel: &AtomicBool,
    mut observer: Option<&mut dyn ActivationObserver>,
) -> Result<()> {
    let hp = model.hparams();
    let k = model.kernels().table();
    let t = model.bytes();
    let w = model.weights();
    let n = tokens.len();
    let d = hp.n_embd;
    assert!(n >= 1 && n <= s.n_batch && pos0 + n <= kv.n_ctx);

    let wte = w.token_embd.view(t);
    let wpe = w.position_embd.view(t);
    for (i, &tok) in tokens.iter().enumerate() {
        let x = &mut s.x[i * d..(i + 1) * d];
        let h = &mut s.h[i * d..(i + 1) * d];
        wte.dequantize_row(tok as usize, x);
        wpe.dequantize_row(pos0 + i, h);
        k.add(h, x);
    }

    for li in 0..w.layers.len() {
        check_cancel(cancel)?;
        let bw = model.block(li);
        forward_block(par, k, hp, &bw, kv, li, s, n, pos0, reborrow(&mut observer));
    }
    Ok(())
}

/// Runs the `n` residual rows in `s.x` (positions `pos0..pos0 + n`) through
/// one block with weights `w`, storing keys and values as layer `li` of `kv`.
/// `observer` sees the input of each matrix product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_block(
    par: Par<'_>,
    k: VerifiedTable,
    hp: &HParams,
    w: &BlockWeights<'_>,
    kv: &mut KvCache,
    li: usize,
    s: &mut Scratch,
    n: usize,
    pos0: usize,
    mut observer: Option<&mut dyn ActivationObserver>,
) {
    let d = hp.n_embd;
    let mut observe = |site: Site, rows: &[f32], width: usize| {
        if let Some(o) = reborrow(&mut observer) {
            o.observe(li, site, &rows[..n * width], n);
        }
    };
    // Attention sub-layer.
    layer_norm_rows(
        k,
        &s.x,
        &mut s.h,
        n,
        d,
        w.attn_norm_w,
        w.attn_norm_b,
        hp.ln_eps,
    );
    observe(Site::AttnQkv, &s.h, d);
    matmul_on(par, k, &w.attn_qkv_w, &s.h, n, &mut s.qkv, &mut s.mm);
    add_bias(k, &mut s.qkv, n, w.attn_qkv_b);
    kv.store(par, li, pos0, &s.qkv, n);
    attention(
        par,
        k,
        kv,
        li,
        &s.qkv,
        n,
        pos0,
        hp.n_head,
        &mut s.att,
        &mut s.scores,
        s.n_lanes,
        &mut s.ff,
    );
    observe(Site::AttnOut, &s.att, d);
    matmul_on(par, k, &w.attn_out_w, &s.att, n, &mut s.h, &mut s.mm);
    add_residual(k, &mut s.x, &s.h, n, d, w.attn_out_b);

    // MLP sub-layer.
    layer_norm_rows(
        k,
        &s.x,
        &mut s.h,
        n,
        d,
        w.ffn_norm_w,
        w.ffn_norm_b,
        hp.ln_eps,
    );
    observe(Site::FfnUp, &s.h, d);
    matmul_on(par, k, &w.ffn_up_w, &s.h, n, &mut s.ff, &mut s.mm);
    let b_up = w.ffn_up_b;
    for_rows(&mut s.ff, hp.n_ff, n, |_, row| {
        k.add(b_up, row);
        k.gelu(row);
    });
    observe(Site::FfnDown, &s.ff, hp.n_ff);
    matmul_on(par, k, &w.ffn_down_w, &s.ff, n, &mut s.h, &mut s.mm);
    add_residual(k, &mut s.x, &s.h, n, d, w.ffn_down_b);
}

/// Logits of residual rows `rows` of the last [`forward_hidden`]: the final
/// LayerNorm, then the LM head. `out` receives `rows.len()` rows of `n_vocab`.
pub(crate) fn logits(
    par: Par<'_>,
    model: &Model,
    s: &mut Scratch,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let hp = model.hparams();
    let k = model.kernels().table();
    let t = model.bytes();
    let w = model.weights();
    let d = hp.n_embd;
    let n = rows.len();
    let x = &s.x[rows.start * d..rows.end * d];
    layer_norm_rows(
        k,
        x,
        &mut s.h,
        n,
        d,
        w.output_norm_w.get(t),
        w.output_norm_b.get(t),
        hp.ln_eps,
    );
    matmul_on(par, k, &w.output.view(t), &s.h, n, out, &mut s.mm);
}

#[allow(clippy::too_many_arguments)]
fn layer_norm_rows(
    k: VerifiedTable,
    x: &[f32],
    h: &mut [f32],
    n: usize,
    d: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    for_rows(h, d, n, |i, row| {
        k.layer_norm(&x[i * d..(i + 1) * d], w, b, eps, row)
    });
}

fn add_bias(k: VerifiedTable, y: &mut [f32], n: usize, b: &[f32]) {
    for_rows(y, b.len(), n, |_, row| k.add(b, row));
}

/// `x += y + b`, row by row.
fn add_residual(k: VerifiedTable, x: &mut [f32], y: &[f32], n: usize, d: usize, b: &[f32]) {
    for_rows(x, d, n, |i, row| {
        k.add(&y[i * d..(i + 1) * d], row);
        k.add(b, row);
    });
}

/// Queries from which a path's many-query head kernel takes over attention.
const HEAD_KERNEL_MIN_QUERIES: usize = 4;

thread_local! {
    /// A head's f16 keys and values widened for the many-query kernel: grown
    /// to the longest context a thread has attended, then reused.
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Causal self-attention of `n` queries at positions `pos0..pos0 + n` over the
/// cached keys and values `0..=position`. Where the kernel path has a
/// many-query head kernel, each head is one unit of work (written head-major
/// to `spare`, then interleaved into `att`; an f16 cache widened per head
/// first); otherwise
/// each (token, head) pair is, and each parallel task owns one lane of score
/// scratch.
#[allow(clippy::too_many_arguments)]
fn attention(
    par: Par<'_>,
    k: VerifiedTable,
    kv: &KvCache,
    layer: usize,
    qkv: &[f32],
    n: usize,
    pos0: usize,
    n_head: usize,
    att: &mut [f32],
    scores: &mut [f32],
    n_lanes: usize,
    spare: &mut [f32],
) {
    let d = kv.d;
    let hd = d / n_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let n_ctx = kv.n_ctx;
    let cache = kv.layer(layer);
    if k.has_attend_head_f32() && n >= HEAD_KERNEL_MIN_QUERIES && spare.len() >= n * d {
        let heads = &mut spare[..n * d];
        // Every head's queries alike but for where its data starts: head h's
        // queries at qkv[h·hd] (rows 3d apart), its keys and values at
        // h·n_ctx·hd of the layer's cache (position p at p·hd).
        let base = HeadQueries {
            q: &[],
            q_stride: 3 * d,
            k: &[],
            v: &[],
            kv_stride: hd,
            pos0,
            n,
            hd,
            scale,
        };
        match cache {
            Layer::F32(kc, vc) => {
                heads
                    .par_chunks_mut(n * hd)
                    .enumerate()
                    .for_each(|(h, out)| {
                        let at = h * n_ctx * hd;
                        let head = HeadQueries {
                            q: &qkv[h * hd..],
                            k: &kc[at..],
                            v: &vc[at..],
                            ..base
                        };
                        k.attend_head_f32(&head, out);
                    });
            }
            Layer::F16(kc, vc) => {
                // The head's keys and values up to the last query, widened
                // once (exactly) for all its queries: (pos0 + n)·hd
                // conversions against n times as many products.
                let len = (pos0 + n) * hd;
                heads
                    .par_chunks_mut(n * hd)
                    .enumerate()
                    .for_each(|(h, out)| {
                        WIDENED.with_borrow_mut(|w| {
                            w.resize(2 * len, 0.0);
                            let (kw, vw) = w.split_at_mut(len);
                            let at = h * n_ctx * hd;
                            kc[at..at + len].convert_to_f32_slice(kw);
                            vc[at..at + len].convert_to_f32_slice(vw);
                            let head = HeadQueries {
                                q: &qkv[h * hd..],
                                k: kw,
                                v: vw,
                                ..base
                            };
                            k.attend_head_f32(&head, out);
                        });
                    });
            }
        }
        let heads = &*heads;
        par.for_each_chunks(&mut att[..n * d], d, |t, row| {
            for (h, o) in row.chunks_exact_mut(hd).enumerate() {
                o.copy_from_slice(&heads[(h * n + t) * hd..][..hd]);
            }
        });
        return;
    }
    let pairs = n * n_head;
    let per_lane = pairs.div_ceil(n_lanes.min(pairs));
    let run = |lane: usize, out: &mut [f32], sc: &mut [f32]| {
        for (j, o) in out.chunks_mut(hd).enumerate() {
            let p = lane * per_lane + j;
            let (t, h) = (p / n_head, p % n_head);
            let q = &qkv[t * 3 * d + h * hd..t * 3 * d + (h + 1) * hd];
            let len = pos0 + t + 1;
            let at = h * n_ctx * hd;
            match cache {
                Layer::F32(kc, vc) => k.attend_f32(q, &kc[at..], &vc[at..], hd, len, scale, sc, o),
                Layer::F16(kc, vc) => k.attend_f16(q, &kc[at..], &vc[at..], hd, len, scale, sc, o),
            }
        }
    };
    let att = &mut att[..n * d];
    if pairs <= per_lane {
        run(0, att, &mut scores[..n_ctx]);
    } else {
        par.for_each_chunks2(att, hd * per_lane, scores, n_ctx, run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::team::Team;

    /// The keys and values a cache holds, widened to f32.
    fn contents(kv: &KvCache) -> Vec<f32> {
        match &kv.store {
            KvStore::F32 { k, v } => k.iter().chain(v).copied().collect(),
            KvStore::F16 { k, v } => k.iter().chain(v).map(|x| x.to_f32()).collect(),
        }
    }

    /// A prompt's keys and values stored by heads in parallel (on the pool
    /// and on a team) land exactly where storing them a few tokens at a time
    /// on one thread puts them, for both cache types and a ragged count at
    /// an offset.
    #[test]
    fn parallel_store_equals_serial_store() {
        let (n_layer, n_ctx, d, n_head) = (2, 64, 48, 3);
        let (pos0, n) = (5, 41);
        let qkv: Vec<f32> = (0..n * 3 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        for ty in [KvType::F32, KvType::F16] {
            let serial = {
                let mut kv = KvCache::new(n_layer, n_ctx, d, n_head, ty).unwrap();
                for layer in 0..n_layer {
                    // Chunks below STORE_PAR_MIN_TOKENS: the serial path.
                    for t0 in (0..n).step_by(7) {
                        let m = 7.min(n - t0);
                        kv.store(Par::Pool, layer, pos0 + t0, &qkv[t0 * 3 * d..], m);
                    }
                }
                contents(&kv)
            };
            assert!(n >= STORE_PAR_MIN_TOKENS);
            let mut pool = KvCache::new(n_layer, n_ctx, d, n_head, ty).unwrap();
            let mut team = KvCache::new(n_layer, n_ctx, d, n_head, ty).unwrap();
            for layer in 0..n_layer {
                pool.store(Par::Pool, layer, pos0, &qkv, n);
                Team::run(|t| team.store(Par::Team(t), layer, pos0, &qkv, n));
            }
            assert_eq!(contents(&pool), serial, "{ty:?} on the pool");
            assert_eq!(contents(&team), serial, "{ty:?} on a team");
            assert!(serial.iter().any(|&x| x != 0.0));
        }
    }
}
