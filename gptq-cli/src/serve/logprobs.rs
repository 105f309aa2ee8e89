//! Log-probabilities of the model's next-token distribution: the log-softmax
//! of the raw logits (before any sampling setting), as OpenAI reports them.

/// A token's log-probability and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The chosen token.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The `n` most likely tokens and their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// `log Σ exp(logits)`, computed stably (in f64).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (v as f64 - max).exp())
        .sum();
    max + sum.ln()
}

/// The log-probability of `id` and of the `top` most likely tokens.
pub fn token_logprob(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let lse = log_sum_exp(logits);
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &v) in logits.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            if best.len() == top && v <= logits[best[top - 1].0 as usize] {
                continue;
            }
            let at = best.partition_point(|&(j, _)| logits[j as usize] >= v);
            best.insert(at, (i as u32, 0.0));
            best.truncate(top);
        }
        for e in &mut best {
            e.1 = lp(e.0 as usize);
        }
    }
    TokenLogprob {
        id,
        logprob: lp(id as usize),
        top: best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_and_top() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let t = token_logprob(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        assert!((t.logprob as f64 - (2.0 - z.ln())).abs() < 1e-6);
        // Ties keep the lower id first.
        assert_eq!(t.top.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f64 = logits
            .iter()
            .map(|&v| (v as f64 - log_sum_exp(&logits)).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }
}
