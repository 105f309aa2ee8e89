//! The forward pass over several sessions at once: every session's new tokens
//! are rows of one activation matrix, so each weight matrix is streamed once
//! per step for all of them; attention runs per session over its own cache.
//!
//! Rows are ordered decode sessions first (one new token each), then the
//! sessions that bring several tokens (a prompt chunk). The decode rows go
//! through one [`matmul_decode_on`] per matrix, whose rows are bitwise what a
//! single-token product gives; each multi-token session's rows go through
//! their own [`matmul_on`], the call [`Session::feed`] makes for the same
//! chunk. Every other operation (embedding, LayerNorm, bias, GELU, residual,
//! attention) is computed row by row, or per session, by the same kernels as
//! the single-session pass. So each session gets exactly the logits it gets
//! alone, given the same chunks.

use super::{Scratch, attention, vget};
use crate::model::Model;
use crate::model::weights::MatrixLoc;
use crate::quant::VerifiedTable;
use crate::quant::matmul::{matmul_decode_on, matmul_on};
use crate::quant::team::Par;
use crate::session::Session;

/// Runs `f(t, row)` over the first `n` rows of width `w` of `buf` on `par`
/// (a decode step's rows share its team instead of entering rayon's pool).
/// Every row gets the same kernel call as in the single-session pass.
fn rows_on(
    par: Par<'_>,
    buf: &mut [f32],
    w: usize,
    n: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let buf = &mut buf[..n * w];
    if n == 1 {
        f(0, buf);
    } else {
        par.for_each_chunks(buf, w, f);
    }
}

/// LayerNorm of the first `n` rows of `x` into `h`.
#[allow(clippy::too_many_arguments)]
fn layer_norm_rows(
    par: Par<'_>,
    k: VerifiedTable,
    x: &[f32],
    h: &mut [f32],
    n: usize,
    d: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    rows_on(par, h, d, n, |i, row| {
        k.layer_norm(&x[i * d..(i + 1) * d], w, b, eps, row)
    });
}

/// `x += y + b`, row by row (as the single-session pass: `y` first).
fn add_residual(
    par: Par<'_>,
    k: VerifiedTable,
    x: &mut [f32],
    y: &[f32],
    n: usize,
    d: usize,
    b: &[f32],
) {
    rows_on(par, x, d, n, |i, row| {
        k.add(&y[i * d..(i + 1) * d], row);
        k.add(b, row);
    });
}

/// The rows of one step: `order[i]` is the index (into the caller's items)
/// of the session whose rows come `i`-th; `first[i]` its first row; the
/// first `n_decode` sessions bring one token each.
pub(crate) struct Rows<'a> {
    pub order: &'a [usize],
    pub first: &'a [usize],
    pub n_decode: usize,
    pub n_rows: usize,
}

/// One matrix product over every row of the step: the decode rows together,
/// each other session's rows alone.
#[allow(clippy::too_many_arguments)]
fn product(
    par: Par<'_>,
    model: &Model,
    w: &MatrixLoc,
    rows: &Rows<'_>,
    x: &[f32],
    y: &mut [f32],
    s_mm: &mut crate::quant::MatmulScratch,
) {
    let k = model.kernels().table();
    let m = w.view(model.bytes());
    let (cols, out) = (m.cols(), m.rows());
    if rows.n_decode > 0 {
        matmul_decode_on(par, k, &m, x, rows.n_decode, y, s_mm);
    }
    for i in rows.n_decode..rows.order.len() {
        let r0 = rows.first[i];
        let n = rows.first.get(i + 1).copied().unwrap_or(rows.n_rows) - r0;
        matmul_on(par, k, &m, &x[r0 * cols..], n, &mut y[r0 * out..], s_mm);
    }
}

/// Runs every session's tokens through every block (writing keys and values
/// into each session's cache at its own positions), then the final LayerNorm
/// and the LM head on each session's last row: `logits` receives one row of
/// `n_vocab` per session, in `rows.order`'s order. The caller has checked
/// the ids, the positions and the scratch sizes.
pub(crate) fn forward_batch(
    par: Par<'_>,
    model: &Model,
    items: &mut [(&mut Session, &[u32])],
    rows: &Rows<'_>,
    s: &mut Scratch,
    logits: &mut [f32],
) {
    let hp = model.hparams();
    let k = model.kernels().table();
    let t = model.bytes();
    let w = model.weights();
    let d = hp.n_embd;
    let n = rows.n_rows;
    assert!(n >= 1 && n <= s.n_batch);

    let wte = w.token_embd.view(t);
    let wpe = w.position_embd.view(t);
    for (i, &item) in rows.order.iter().enumerate() {
        let (session, tokens) = &items[item];
        let pos0 = session.len();
        for (j, &tok) in tokens.iter().enumerate() {
            let r = rows.first[i] + j;
            let x = &mut s.x[r * d..(r + 1) * d];
            let h = &mut s.h[r * d..(r + 1) * d];
            wte.dequantize_row(tok as usize, x);
            wpe.dequantize_row(pos0 + j, h);
            k.add(h, x);
        }
    }

    for (li, lw) in w.layers.iter().enumerate() {
        // Attention sub-layer.
        layer_norm_rows(
            par,
            k,
            &s.x,
            &mut s.h,
            n,
            d,
            vget(t, &lw.attn_norm_w),
            vget(t, &lw.attn_norm_b),
            hp.ln_eps,
        );
        product(
            par,
            model,
            &lw.attn_qkv_w,
            rows,
            &s.h,
            &mut s.qkv,
            &mut s.mm,
        );
        let b_qkv = vget(t, &lw.attn_qkv_b);
        rows_on(par, &mut s.qkv, 3 * d, n, |_, row| k.add(b_qkv, row));
        for (i, &item) in rows.order.iter().enumerate() {
            let (session, tokens) = &mut items[item];
            let (r0, m, pos0) = (rows.first[i], tokens.len(), session.len());
            let kv = &mut session.kv;
            kv.store(par, li, pos0, &s.qkv[r0 * 3 * d..], m);
            attention(
                par,
                k,
                kv,
                li,
                &s.qkv[r0 * 3 * d..],
                m,
                pos0,
                hp.n_head,
                &mut s.att[r0 * d..],
                &mut s.scores,
                s.n_lanes,
                &mut s.ff,
            );
        }
        product(
            par,
            model,
            &lw.attn_out_w,
            rows,
            &s.att,
            &mut s.h,
            &mut s.mm,
        );
        add_residual(par, k, &mut s.x, &s.h, n, d, vget(t, &lw.attn_out_b));

        // MLP sub-layer.
        layer_norm_rows(
            par,
            k,
            &s.x,
            &mut s.h,
            n,
            d,
            vget(t, &lw.ffn_norm_w),
            vget(t, &lw.ffn_norm_b),
            hp.ln_eps,
        );
        product(par, model, &lw.ffn_up_w, rows, &s.h, &mut s.ff, &mut s.mm);
        let b_up = vget(t, &lw.ffn_up_b);
        rows_on(par, &mut s.ff, hp.n_ff, n, |_, row| {
            k.add(b_up, row);
            k.gelu(row);
        });
        product(par, model, &lw.ffn_down_w, rows, &s.ff, &mut s.h, &mut s.mm);
        add_residual(par, k, &mut s.x, &s.h, n, d, vget(t, &lw.ffn_down_b));
    }

    // Each session's last row: the final LayerNorm into row `i` of `h`, then
    // one decode product of the LM head for all of them.
    let n_seq = rows.order.len();
    for (i, &item) in rows.order.iter().enumerate() {
        let last = rows.first[i] + items[item].1.len() - 1;
        layer_norm_rows(
            par,
            k,
            &s.x[last * d..(last + 1) * d],
            &mut s.h[i * d..(i + 1) * d],
            1,
            d,
            w.output_norm_w.get(t),
            w.output_norm_b.get(t),
            hp.ln_eps,
        );
    }
    let head = w.output.view(t);
    matmul_decode_on(par, k, &head, &s.h, n_seq, logits, &mut s.mm);
}
