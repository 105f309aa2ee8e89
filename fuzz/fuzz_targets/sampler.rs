//! The sampler on arbitrary logits (NaN, infinities, huge and subnormal
//! values), parameters and histories. Parameters out of range are refused;
//! otherwise a row of logits gives an error or a token that is in range and
//! could have been drawn: not NaN, not -inf while a finite logit exists, and
//! the argmax when the temperature is 0 and there is no penalty or bias; a
//! bias names any token (outside the row: an error, never a panic).

#![no_main]

use arbitrary::Arbitrary;
use gptq_core::SamplerParams;
use gptq_core::sample::argmax;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    temperature: f32,
    top_k: u16,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    repeat_last_n: u8,
    presence_penalty: f32,
    frequency_penalty: f32,
    logit_bias: Vec<(u16, f32)>,
    seed: u64,
    logits: Vec<f32>,
    history: Vec<u16>,
    /// Draw this many times from the same sampler (its generator moves on).
    draws: u8,
}

fuzz_target!(|input: Input| {
    let params = SamplerParams::default()
        .temperature(input.temperature)
        .top_k(input.top_k.into())
        .top_p(input.top_p)
        .min_p(input.min_p)
        .repeat_penalty(input.repeat_penalty, input.repeat_last_n.into())
        .presence_penalty(input.presence_penalty)
        .frequency_penalty(input.frequency_penalty)
        .logit_bias(
            input
                .logit_bias
                .iter()
                .map(|&(id, b)| (id.into(), b))
                .collect(),
        )
        .seed(input.seed);
    let Ok(mut sampler) = params.build() else {
        return;
    };
    let logits = &input.logits;
    let history: Vec<u32> = input.history.iter().map(|&t| t.into()).collect();
    let any_finite = logits.iter().any(|v| v.is_finite());
    for _ in 0..=input.draws % 4 {
        // (A penalty or a bias may push a huge negative logit to -inf, so
        // the checks that compare with the raw logits hold without them.)
        let no_penalty = input.logit_bias.is_empty()
            && (input.repeat_last_n == 0
                || (input.repeat_penalty == 1.0
                    && input.presence_penalty == 0.0
                    && input.frequency_penalty == 0.0));
        let Ok(id) = sampler.sample(logits, &history) else {
            if no_penalty {
                assert!(logits.iter().all(|v| v.is_nan() || *v == f32::NEG_INFINITY));
            }
            return;
        };
        let v = logits[id as usize];
        assert!(!v.is_nan(), "token {id} has a NaN logit");
        if any_finite && no_penalty {
            assert!(
                v != f32::NEG_INFINITY,
                "token {id} has a -inf logit: {input:?}"
            );
        }
        if input.temperature == 0.0 && no_penalty {
            assert_eq!(
                logits[argmax(logits) as usize],
                v,
                "greedy must take a largest logit"
            );
        }
    }
});
