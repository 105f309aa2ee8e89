//! All of one head's queries of a prompt at once on AVX2 (the AVX-512
//! kernel's design at eight lanes): the head's keys are transposed once
//! (`kt[d][p]`), so that the scores of eight positions are one register
//! summed over `d` with a broadcast query element (no horizontal sums), and
//! groups of [`QG`] queries share each key and value load. Before, a prompt's
//! attention ran one query at a time (`attend_f32`): every query re-read every
//! key and summed each score across lanes, 12–19 % of a 512-token prefill.

use std::arch::x86_64::*;
use std::cell::Cell;

use super::super::table::HeadQueries;
use super::{attend_f32, softmax, st, transpose8};

/// Queries attended together: each transposed key row and each value row
/// loaded serves this many. Six, not four: the group's twelve accumulators,
/// two loaded rows and a broadcast fill the sixteen registers, and each load
/// serves half as many products again (one head of 512 queries, `hd` 64:
/// 640 → 550 µs on the Intel machine of the README).
const QG: usize = 6;

/// Key blocks (of eight positions) per pass of [`scores`]: the group's
/// `QG · KB` accumulators are the independent FMA chains two FMA ports of
/// four cycles' latency need.
const KB: usize = 2;

/// Value columns per pass of [`weighted_values`]: the group's accumulators
/// of two registers each leave room for the loads in sixteen registers.
const VW: usize = 2;

thread_local! {
    /// Each thread's transposed keys, group scores and transposed group
    /// queries, grown once to the longest context.
    static ATTEND: Cell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Every query of `h` into `out[i·hd ..][..hd]`. A head dimension that is not
/// a multiple of 8 takes the single-query kernel.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn attend_head_f32(h: &HeadQueries<'_>, out: &mut [f32]) {
    let (hd, n, pos0) = (h.hd, h.n, h.pos0);
    assert!(
        n >= 1 && hd >= 1 && out.len() >= n * hd,
        "attend_head: sizes"
    );
    assert!(
        h.q.len() >= (n - 1) * h.q_stride + hd,
        "attend_head: queries too short"
    );
    let n_keys = pos0 + n;
    let last = (n_keys - 1) * h.kv_stride + hd;
    assert!(
        h.k.len() >= last && h.v.len() >= last,
        "attend_head: cache too short"
    );
    let ldk = n_keys.next_multiple_of(8);
    let (mut kt, mut sc, mut qt) = ATTEND.take();
    sc.clear();
    sc.resize(QG * ldk, 0.0);
    if !hd.is_multiple_of(8) {
        for (i, o) in out[..n * hd].chunks_exact_mut(hd).enumerate() {
            let q = &h.q[i * h.q_stride..][..hd];
            attend_f32(q, h.k, h.v, h.kv_stride, pos0 + i + 1, h.scale, &mut sc, o);
        }
        ATTEND.set((kt, sc, qt));
        return;
    }
    transpose_keys(h, n_keys, &mut kt, ldk);
    let scale = _mm256_set1_ps(h.scale);
    for g0 in (0..n).step_by(QG) {
        let gn = QG.min(n - g0);
        // Padding queries of a short last group repeat its last query.
        transpose_queries(h, g0, gn, QG, &mut qt);
        let keys = pos0 + g0 + gn;
        let blocks = keys.div_ceil(8);
        let mut b = 0;
        while b + KB <= blocks {
            scores::<KB>(&kt, ldk, hd, &qt, b, scale, &mut sc);
            b += KB;
        }
        while b < blocks {
            scores::<1>(&kt, ldk, hd, &qt, b, scale, &mut sc);
            b += 1;
        }
        for g in 0..QG {
            let row = &mut sc[g * ldk..(g + 1) * ldk];
            if g < gn {
                let len = pos0 + g0 + g + 1;
                softmax(&mut row[..len]);
                row[len..keys].fill(0.0);
            } else {
                row[..keys].fill(0.0);
            }
        }
        let mut c = 0;
        while c + 8 * VW <= hd {
            weighted_values::<VW>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 8 * VW;
        }
        while c < hd {
            weighted_values::<1>(h, &sc, ldk, keys, c, &mut out[g0 * hd..], gn);
            c += 8;
        }
    }
    ATTEND.set((kt, sc, qt));
}

/// Queries `g0..g0 + gn` of `h` transposed into `qt` (`qt[d·group + g]`,
/// `group` ≥ `gn` of them, the padding ones repeating the last query), so
/// that a group's scores read each `d`'s query elements from one place.
pub(in crate::quant) fn transpose_queries(
    h: &HeadQueries<'_>,
    g0: usize,
    gn: usize,
    group: usize,
    qt: &mut Vec<f32>,
) {
    let hd = h.hd;
    assert!(gn >= 1 && gn <= group, "transpose_queries: group");
    qt.resize(hd * group, 0.0);
    for g in 0..group {
        let q = &h.q[(g0 + g.min(gn - 1)) * h.q_stride..][..hd];
        for (d, &x) in q.iter().enumerate() {
            qt[d * group + g] = x;
        }
    }
}

/// The head's first `n_keys` keys transposed into `kt` (`kt[d·ldk + p]`,
/// `ldk >= n_keys`; `hd` a multiple of 8): eight keys by eight dimensions
/// per register transpose, the last `n_keys mod 8` keys one value at a time.
/// (One value at a time throughout, the transposition was 14 % of the
/// AVX-512 kernel's time at 512 tokens.)
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::quant) fn transpose_keys(
    h: &HeadQueries<'_>,
    n_keys: usize,
    kt: &mut Vec<f32>,
    ldk: usize,
) {
    let (hd, stride) = (h.hd, h.kv_stride);
    assert!(
        hd.is_multiple_of(8) && ldk >= n_keys,
        "transpose_keys: sizes"
    );
    kt.clear();
    kt.resize(hd * ldk, 0.0);
    let whole = n_keys - n_keys % 8;
    for p0 in (0..whole).step_by(8) {
        for d0 in (0..hd).step_by(8) {
            transpose8(
                &h.k[p0 * stride + d0..],
                stride,
                &mut kt[d0 * ldk + p0..],
                ldk,
            );
        }
    }
    for p in whole..n_keys {
        for (d, &x) in h.k[p * stride..][..hd].iter().enumerate() {
            kt[d * ldk + p] = x;
        }
    }
}

/// The group's scaled scores of key blocks `b..b + K` (eight positions each)
/// into `sc` (row `g` at `g·ldk`): each score sums its `d` terms in order in
/// one lane. `qt` holds the group's queries transposed (`qt[d·QG + g]`), so
/// that each `d` reads its [`QG`] query elements from one place.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scores<const K: usize>(
    kt: &[f32],
    ldk: usize,
    hd: usize,
    qt: &[f32],
    b: usize,
    scale: __m256,
    sc: &mut [f32],
) {
    assert!(
        hd >= 1 && qt.len() >= hd * QG && kt.len() >= (hd - 1) * ldk + 8 * (b + K),
        "scores: sizes"
    );
    let mut acc = [[_mm256_setzero_ps(); K]; QG];
    let kp = kt.as_ptr();
    for (d, q) in qt.chunks_exact(QG).take(hd).enumerate() {
        // SAFETY: `d < hd` and `j < K`, so the eight floats at
        // `d·ldk + 8·(b + j)` end by `(hd - 1)·ldk + 8·(b + K)`, inside `kt`
        // (asserted above); the loads are unaligned. (Checked slices here
        // cost a compare and branch per load.)
        let kv: [__m256; K] =
            std::array::from_fn(|j| unsafe { _mm256_loadu_ps(kp.add(d * ldk + 8 * (b + j))) });
        for (a, &qv) in acc.iter_mut().zip(q) {
            let qd = _mm256_set1_ps(qv);
            for (x, k) in a.iter_mut().zip(&kv) {
                *x = _mm256_fmadd_ps(qd, *k, *x);
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        for (j, x) in a.iter().enumerate() {
            st(&mut sc[g * ldk + 8 * (b + j)..], _mm256_mul_ps(*x, scale));
        }
    }
}

/// Columns `c..c + 8·W` of the group's outputs: `Σ_p w[g][p] · v[p]` over the
/// first `keys` positions, with `w[g]` the group's score row `g`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_values<const W: usize>(
    h: &HeadQueries<'_>,
    sc: &[f32],
    ldk: usize,
    keys: usize,
    c: usize,
    out: &mut [f32],
    gn: usize,
) {
    assert!(
        keys >= 1
            && sc.len() >= (QG - 1) * ldk + keys
            && h.v.len() >= (keys - 1) * h.kv_stride + c + 8 * W,
        "weighted_values: sizes"
    );
    let mut acc = [[_mm256_setzero_ps(); W]; QG];
    let rows: [*const f32; QG] = std::array::from_fn(|g| sc[g * ldk..].as_ptr());
    let vp = h.v[c..].as_ptr();
    for p in 0..keys {
        // SAFETY: `p < keys`, so value row `p`'s floats `c..c + 8·W` end by
        // `(keys - 1)·kv_stride + c + 8·W` and score `p` of row `g` lies
        // before `(QG - 1)·ldk + keys`, both asserted above; the loads are
        // unaligned. (As in [`scores`], checked indexing cost a compare and
        // branch per load.)
        let vv: [__m256; W] =
            std::array::from_fn(|j| unsafe { _mm256_loadu_ps(vp.add(p * h.kv_stride + 8 * j)) });
        for (a, &row) in acc.iter_mut().zip(&rows) {
            // SAFETY: row `g` starts at `g·ldk` of `sc`, so its score `p`
            // (`p < keys`) lies before `(QG - 1)·ldk + keys`, asserted above.
            let w = _mm256_set1_ps(unsafe { *row.add(p) });
            for (x, v) in a.iter_mut().zip(&vv) {
                *x = _mm256_fmadd_ps(w, *v, *x);
            }
        }
    }
    for (g, a) in acc.iter().enumerate().take(gn) {
        for (j, x) in a.iter().enumerate() {
            st(&mut out[g * h.hd + c + 8 * j..], *x);
        }
    }
}
