//! The logit adjustments made before the candidates are ranked, in
//! llama.cpp's order: a fixed bias per token (`logit_bias`), then the
//! penalties on recent tokens (`llama_sampler_penalties`: repetition,
//! frequency and presence).

use crate::error::{Error, Result};

/// Adds each `(id, bias)` to candidate `id`'s logit (the candidates in id
/// order); a token listed twice gets both. A sum that is not a number (`+inf`
/// biased by `-inf`) becomes `-inf`, which is never chosen. An id outside
/// the candidates is an error.
pub(super) fn add_bias(cand: &mut [(f32, u32)], bias: &[(u32, f32)]) -> Result<()> {
    let n = cand.len();
    for &(id, b) in bias {
        let c = cand.get_mut(id as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "logit bias for token {id}, outside the vocabulary of {n}"
            ))
        })?;
        c.0 = super::sanitize(c.0 + b);
    }
    Ok(())
}

/// The penalties' settings (see `SamplerParams`).
pub(super) struct Penalties {
    pub repeat: f32,
    pub frequency: f32,
    pub presence: f32,
}

impl Penalties {
    /// Whether they change anything (llama.cpp's test: a repetition penalty
    /// of 1 and no frequency or presence penalty is off).
    pub fn active(&self) -> bool {
        self.repeat != 1.0 || self.frequency != 0.0 || self.presence != 0.0
    }

    /// Applies them for the tokens of `recent` (ids outside the candidates
    /// are ignored), each distinct token once: a token seen `c` times has
    /// its logit divided by the repetition penalty when positive
    /// (multiplied when not, so that a penalty above 1 always lowers it),
    /// then lowered by `c · frequency + presence`, as llama.cpp computes it.
    /// An infinity lowered by an infinity (a -inf or NaN logit under a
    /// penalty that overflows to -inf, a +inf one under +inf) is NaN, which
    /// is made -inf like every NaN: never chosen.
    /// `sorted` is scratch (kept by the sampler, so that sampling allocates
    /// nothing once it has grown to the window).
    pub fn apply(&self, cand: &mut [(f32, u32)], recent: &[u32], sorted: &mut Vec<u32>) {
        sorted.clear();
        sorted.extend_from_slice(recent);
        sorted.sort_unstable();
        for run in sorted.chunk_by(|a, b| a == b) {
            let Some(c) = cand.get_mut(run[0] as usize) else {
                continue;
            };
            let v = if c.0 <= 0.0 {
                c.0 * self.repeat
            } else {
                c.0 / self.repeat
            };
            c.0 = super::sanitize(v - (run.len() as f32 * self.frequency + self.presence));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(logits: &[f32]) -> Vec<(f32, u32)> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect()
    }

    fn values(c: &[(f32, u32)]) -> Vec<f32> {
        c.iter().map(|c| c.0).collect()
    }

    /// The formula on hand-checked values: counts within the window, the
    /// sign rule of the repetition penalty, the presence term once.
    #[test]
    fn penalties_by_count() {
        let p = Penalties {
            repeat: 2.0,
            frequency: 0.5,
            presence: 0.25,
        };
        let mut c = cand(&[4.0, -1.0, 3.0, 0.0]);
        let mut scratch = Vec::new();
        // Token 0 three times, 1 once, 3 once, 7 (outside) ignored.
        p.apply(&mut c, &[0, 1, 0, 7, 3, 0], &mut scratch);
        // 4/2 - (3·0.5 + 0.25); -1·2 - (0.5 + 0.25); untouched; 0·2 - 0.75.
        assert_eq!(values(&c), [0.25, -2.75, 3.0, -0.75]);
        let off = Penalties {
            repeat: 1.0,
            frequency: 0.0,
            presence: 0.0,
        };
        assert!(!off.active() && p.active());
        let mut c = cand(&[4.0, -1.0, f32::NEG_INFINITY, -0.0]);
        off.apply(&mut c, &[0, 1, 2, 3, 3], &mut scratch);
        assert_eq!(values(&c)[..3], [4.0, -1.0, f32::NEG_INFINITY]);
        assert!(c[3].0 == 0.0 && c[3].0.is_sign_negative());
    }

    /// A penalty that overflows to an infinity meets an infinite logit: the
    /// NaN it makes is -inf, not a value that ranks first (the sampler
    /// fuzzer's find: a NaN logit chosen at temperature 0).
    #[test]
    fn infinite_penalties_on_infinite_logits_are_never_nan() {
        let mut scratch = Vec::new();
        let mut c = cand(&[f32::NEG_INFINITY, f32::INFINITY, 1.0]);
        let down = Penalties {
            repeat: 1.0,
            frequency: -3e38,
            presence: 0.0,
        };
        down.apply(&mut c, &[0, 0, 2, 2], &mut scratch);
        assert_eq!(
            values(&c),
            [f32::NEG_INFINITY, f32::INFINITY, f32::INFINITY]
        );
        let up = Penalties {
            repeat: 1.0,
            frequency: 3e38,
            presence: 0.0,
        };
        up.apply(&mut c, &[1, 1, 2, 2], &mut scratch);
        assert_eq!(values(&c)[..2], [f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!(values(&c).iter().all(|v| !v.is_nan()));
    }

    #[test]
    fn bias_adds_and_bans() {
        let mut c = cand(&[1.0, 2.0, f32::INFINITY]);
        add_bias(
            &mut c,
            &[
                (0, 0.5),
                (0, 0.25),
                (1, f32::NEG_INFINITY),
                (2, f32::NEG_INFINITY),
            ],
        )
        .unwrap();
        assert_eq!(values(&c), [1.75, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let e = add_bias(&mut c, &[(3, 1.0)]).unwrap_err();
        assert!(e.to_string().contains("token 3"), "{e}");
    }
}
