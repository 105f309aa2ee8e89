//! KL divergence of a model's token distributions from a base model's, with
//! the statistics `llama-perplexity --kl-divergence` prints, computed the way
//! it computes them (f32 per token, f64 sums), so that figures compare.

use rayon::prelude::*;

use super::base_file::row_header;

/// One scored position compared with the base model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenKld {
    /// KL(base ‖ model) over the vocabulary (base log-probabilities below -16
    /// are left out, as llama.cpp does).
    pub kld: f64,
    /// NLL of the actual next token under the model.
    pub nll: f32,
    /// NLL of the actual next token under the base model.
    pub nll_base: f32,
    /// `p(token) - p_base(token)`.
    pub p_diff: f32,
    /// Whether both models' most likely token is the same.
    pub same_top: bool,
}

/// Compares one row of `logits` with a stored base row (see
/// [`base_file`](super::base_file)) at a position whose next token is
/// `target`.
pub fn token_kld(logits: &[f32], base: &[u16], target: u32) -> TokenKld {
    let (mut max, mut imax) = (logits[0], 0usize);
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > max {
            max = v;
            imax = i;
        }
    }
    let sum_exp = super::exp_sum::exp_sum(logits, max);
    let log_sum_exp = sum_exp.ln() as f32;
    let (scale, min_log_prob) = row_header(base);
    let q = &base[4..4 + logits.len()];
    let t = target as usize;
    let nll = max + log_sum_exp - logits[t];
    let nll_base = -(scale * f32::from(q[t]) + min_log_prob);
    let log_norm = max + log_sum_exp;
    let mut kld = 0.0f64;
    let (mut imax_base, mut lp_base_max) = (0usize, f32::NEG_INFINITY);
    for (i, (&qi, &l)) in q.iter().zip(logits).enumerate() {
        let lp_base = scale * f32::from(qi) + min_log_prob;
        if i == 0 || lp_base > lp_base_max {
            lp_base_max = lp_base;
            imax_base = i;
        }
        if lp_base > -16.0 {
            kld += f64::from(lp_base.exp() * (lp_base - l + log_norm));
        }
    }
    TokenKld {
        kld,
        nll,
        nll_base,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax == imax_base,
    }
}

/// [`token_kld`] for every row of a chunk, in parallel, in row order.
pub fn chunk_klds(logits: &[f32], base: &[u16], targets: &[u32], n_vocab: usize) -> Vec<TokenKld> {
    let nv = super::base_file::row_len(n_vocab);
    (0..targets.len())
        .into_par_iter()
        .map(|i| {
            token_kld(
                &logits[i * n_vocab..(i + 1) * n_vocab],
                &base[i * nv..(i + 1) * nv],
                targets[i],
            )
        })
        .collect()
}

/// A mean and its standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its uncertainty (one standard error).
    pub err: f64,
}

/// llama.cpp's `mean_and_uncertainty`: the mean of `count` values from their
/// sum and sum of squares, with the standard error of the mean (0 for ten
/// values or fewer).
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count < 1 {
        return Estimate::default();
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Estimate { value: f, err: df }
}

/// llama.cpp's `percentile`: linear interpolation between sorted values.
pub fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * sorted[ip] + p * sorted[(ip + 1).min(sorted.len() - 1)]
}

fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

/// The running sums of a KL-divergence run (llama.cpp's
/// `kl_divergence_result`) and every token's KLD and Δp for the percentiles.
#[derive(Clone, Debug, Default)]
pub struct KldStats {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    max_p_diff: f32,
    n_same_top: usize,
    count: usize,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
}

/// The figures of one line of llama-perplexity's per-chunk table: running
/// values after that chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Running {
    /// PPL of the model.
    pub ppl: Estimate,
    /// `ln(PPL(Q)/PPL(base))`.
    pub ln_ppl_ratio: Estimate,
    /// Mean KLD.
    pub kld: Estimate,
    /// RMS of Δp (a fraction, not per cent).
    pub rms_dp: Estimate,
    /// Fraction of positions with the same most likely token.
    pub same_top: Estimate,
}

/// Every statistic `llama-perplexity --kl-divergence` prints at the end.
/// Probabilities and their differences are fractions (the printout shows
/// per cent).
#[derive(Clone, Debug, PartialEq)]
pub struct KldSummary {
    /// Scored positions.
    pub count: usize,
    /// PPL of the model.
    pub ppl: Estimate,
    /// PPL of the base model (from the stored log-probabilities).
    pub ppl_base: Estimate,
    /// Correlation of the per-token `ln` PPLs (as llama.cpp computes it).
    pub ln_ppl_correlation: f64,
    /// `ln(PPL(Q)/PPL(base))`.
    pub ln_ppl_ratio: Estimate,
    /// `PPL(Q)/PPL(base)`.
    pub ppl_ratio: Estimate,
    /// `PPL(Q) - PPL(base)`.
    pub ppl_diff: Estimate,
    /// Mean KLD.
    pub kld: Estimate,
    /// KLD percentiles: (label, value), from the maximum down to the minimum.
    pub kld_percentiles: Vec<(&'static str, f32)>,
    /// Mean Δp.
    pub dp: Estimate,
    /// Δp percentiles: (label, value), from the maximum down to the minimum.
    pub dp_percentiles: Vec<(&'static str, f32)>,
    /// RMS Δp.
    pub rms_dp: Estimate,
    /// Fraction of positions with the same most likely token.
    pub same_top: Estimate,
}

impl KldStats {
    /// Adds the positions of one chunk.
    pub fn add(&mut self, tokens: &[TokenKld]) {
        for t in tokens {
            let (nll, nll_base) = (f64::from(t.nll), f64::from(t.nll_base));
            self.sum_nll += nll;
            self.sum_nll2 += nll * nll;
            self.sum_nll_base += nll_base;
            self.sum_nll_base2 += nll_base * nll_base;
            self.sum_nll_nll_base += nll * nll_base;
            self.sum_kld += t.kld;
            self.sum_kld2 += t.kld * t.kld;
            let pd = f64::from(t.p_diff);
            self.sum_p_diff += pd;
            self.sum_p_diff2 += pd * pd;
            self.sum_p_diff4 += pd * pd * pd * pd;
            self.max_p_diff = self.max_p_diff.max(t.p_diff.abs());
            self.n_same_top += usize::from(t.same_top);
            self.count += 1;
            self.kld_values.push(t.kld as f32);
            self.p_diff_values.push(t.p_diff);
        }
    }

    /// Positions added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    fn covariance(&self) -> f64 {
        if self.count < 10 {
            return 0.0;
        }
        let n = self.count as f64;
        (self.sum_nll_nll_base / n - (self.sum_nll / n) * (self.sum_nll_base / n)) / (n - 1.0)
    }

    fn ln_ppls(&self) -> (Estimate, Estimate, Estimate) {
        let q = mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count);
        let b = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count);
        let ratio = Estimate {
            value: q.value - b.value,
            err: (q.err * q.err + b.err * b.err - 2.0 * self.covariance())
                .max(0.0)
                .sqrt(),
        };
        (q, b, ratio)
    }

    fn rms_dp(&self) -> Estimate {
        let mse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count);
        let v = mse.value.sqrt();
        Estimate {
            value: v,
            err: if v > 0.0 { 0.5 / v * mse.err } else { 0.0 },
        }
    }

    fn same_top(&self) -> Estimate {
        let p = self.n_same_top as f64 / self.count.max(1) as f64;
        let err = if self.count > 1 {
            (p * (1.0 - p) / (self.count - 1) as f64).sqrt()
        } else {
            0.0
        };
        Estimate { value: p, err }
    }

    /// The running figures of the per-chunk table.
    pub fn running(&self) -> Running {
        let (q, _, ratio) = self.ln_ppls();
        let ppl = q.value.exp();
        Running {
            ppl: Estimate {
                value: ppl,
                err: ppl * q.err,
            },
            ln_ppl_ratio: ratio,
            kld: mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count),
            rms_dp: self.rms_dp(),
            same_top: self.same_top(),
        }
    }

    /// The final statistics; `None` before any position was added.
    pub fn summary(&self) -> Option<KldSummary> {
        if self.count == 0 {
            return None;
        }
        let mut kv = self.kld_values.clone();
        let mut pv = self.p_diff_values.clone();
        kv.sort_by(f32::total_cmp);
        pv.sort_by(f32::total_cmp);
        let (q, b, ratio) = self.ln_ppls();
        let (ppl, ppl_base) = (q.value.exp(), b.value.exp());
        let (ppl_err, ppl_base_err) = (ppl * q.err, ppl_base * b.err);
        let cov = self.covariance();
        let ppl_ratio = ratio.value.exp();
        let ppl_cov = ppl * ppl_base * cov;
        let kld_percentiles = vec![
            ("Maximum", kv[kv.len() - 1]),
            ("99.9%", percentile(&kv, 0.999)),
            ("99.0%", percentile(&kv, 0.990)),
            ("95.0%", percentile(&kv, 0.950)),
            ("90.0%", percentile(&kv, 0.900)),
            ("Median", median(&kv)),
            ("10.0%", percentile(&kv, 0.100)),
            (" 5.0%", percentile(&kv, 0.050)),
            (" 1.0%", percentile(&kv, 0.010)),
            (" 0.1%", percentile(&kv, 0.001)),
            ("Minimum", kv[0]),
        ];
        let dp_percentiles = vec![
            ("Maximum", pv[pv.len() - 1]),
            ("99.9%", percentile(&pv, 0.999)),
            ("99.0%", percentile(&pv, 0.990)),
            ("95.0%", percentile(&pv, 0.950)),
            ("90.0%", percentile(&pv, 0.900)),
            ("75.0%", percentile(&pv, 0.750)),
            ("Median", median(&pv)),
            ("25.0%", percentile(&pv, 0.250)),
            ("10.0%", percentile(&pv, 0.100)),
            (" 5.0%", percentile(&pv, 0.050)),
            (" 1.0%", percentile(&pv, 0.010)),
            (" 0.1%", percentile(&pv, 0.001)),
            ("Minimum", pv[0]),
        ];
        Some(KldSummary {
            count: self.count,
            ppl: Estimate {
                value: ppl,
                err: ppl_err,
            },
            ppl_base: Estimate {
                value: ppl_base,
                err: ppl_base_err,
            },
            ln_ppl_correlation: cov / (q.err * b.err),
            ln_ppl_ratio: ratio,
            ppl_ratio: Estimate {
                value: ppl_ratio,
                err: ppl_ratio * ratio.err,
            },
            ppl_diff: Estimate {
                value: ppl - ppl_base,
                err: (ppl_err * ppl_err + ppl_base_err * ppl_base_err - 2.0 * ppl_cov)
                    .max(0.0)
                    .sqrt(),
            },
            kld: mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count),
            kld_percentiles,
            dp: mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count),
            dp_percentiles,
            rms_dp: self.rms_dp(),
            same_top: self.same_top(),
        })
    }
}

impl KldSummary {
    /// A KLD percentile by its label (`"99.0%"`, `"Median"`, ...).
    pub fn kld_at(&self, label: &str) -> Option<f32> {
        self.kld_percentiles
            .iter()
            .find(|(l, _)| l.trim() == label)
            .map(|&(_, v)| v)
    }

    /// A Δp percentile by its label.
    pub fn dp_at(&self, label: &str) -> Option<f32> {
        self.dp_percentiles
            .iter()
            .find(|(l, _)| l.trim() == label)
            .map(|&(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::base_file::{encode_row, row_len};
    use super::*;

    fn softmax(l: &[f32]) -> Vec<f64> {
        let z: f64 = l.iter().map(|&v| f64::from(v).exp()).sum();
        l.iter().map(|&v| f64::from(v).exp() / z).collect()
    }

    #[test]
    fn kld_of_a_model_with_itself_is_about_zero_and_matches_the_definition() {
        let base = [1.0f32, 0.0, -1.0, 2.5, 0.3];
        let other = [0.8f32, 0.4, -1.5, 2.0, 0.3];
        let mut row = vec![0u16; row_len(base.len())];
        encode_row(&base, 3, &mut row);
        let same = token_kld(&base, &row, 3);
        assert!(same.kld.abs() < 1e-4, "{}", same.kld);
        assert!(same.same_top && same.p_diff.abs() < 1e-4);
        let t = token_kld(&other, &row, 1);
        let (p, q) = (softmax(&base), softmax(&other));
        let want: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((t.kld - want).abs() < 1e-4, "{} vs {want}", t.kld);
        assert!((f64::from(t.p_diff) - (q[1] - p[1])).abs() < 1e-4);
        assert!(t.same_top);
    }

    #[test]
    fn llama_cpp_percentiles_and_uncertainties() {
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.9), 4.6);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        // Ten values or fewer: no uncertainty.
        assert_eq!(mean_and_uncertainty(10.0, 30.0, 5).err, 0.0);
        let e = mean_and_uncertainty(55.0, 385.0, 11);
        assert!((e.value - 5.0).abs() < 1e-12);
        assert!((e.err - (10.0f64 / 10.0).sqrt()).abs() < 1e-12);
    }
}
