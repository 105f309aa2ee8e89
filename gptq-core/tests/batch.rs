//! Sessions evaluated together in a `Batch` get bitwise the logits (so the
//! greedy tokens) they get alone, on every kernel path this CPU runs and
//! every weight type, with sessions joining (a prompt chunk beside the
//! others' decode tokens) and leaving mid-way.

use std::sync::Arc;

use gptq_core::gguf::GgmlType;
use gptq_core::model::HParams;
use gptq_core::sample::argmax;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{
    Batch, BatchParams, Error, KernelPath, Kernels, KvType, Model, Session, SessionParams,
};

fn hparams() -> HParams {
    HParams {
        n_vocab: 300,
        n_ctx: 128,
        n_embd: 128,
        n_ff: 512,
        n_layer: 2,
        n_head: 4,
        ln_eps: 1e-5,
    }
}

/// Greedy decoding alone: the logits' bits after the prompt and after each
/// of `n` steps, and the tokens.
fn alone(
    model: &Arc<Model>,
    params: &SessionParams,
    prompt: &[u32],
    n: usize,
) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut s = Session::new(Arc::clone(model), params.clone()).unwrap();
    let mut bits = Vec::new();
    let mut toks = Vec::new();
    let mut logits = s.feed(prompt).unwrap().to_vec();
    for _ in 0..n {
        bits.push(logits.iter().map(|v| v.to_bits()).collect());
        let t = argmax(&logits);
        toks.push(t);
        logits = s.step(t).unwrap().to_vec();
    }
    (bits, toks)
}

/// Three prompts; `b` joins at step 2 and `c` at step 4 (its prompt in two
/// chunks of `n_batch`), `a` leaves after 7 tokens; every session's logits
/// match its solo run's at every step.
#[test]
fn batched_sessions_match_their_solo_runs_bitwise() {
    let prompts = vec![
        vec![5, 17, 42],
        vec![7],
        (0..23).map(|i| (i * 13 + 1) % 300).collect(),
    ];
    check_against_solo(&prompts, &[0, 2, 4], &[7, 10, 8]);
}

/// Eleven sessions, so that decode steps hold more tokens than the kernels'
/// register groups (eight on AVX-512, four on AVX2) and their products split
/// into several tasks per thread: sessions join one or two per step and leave
/// at different times, so every count from 1 to 11 decodes together.
#[test]
fn many_batched_sessions_match_their_solo_runs_bitwise() {
    let n = 11;
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            (0..1 + (i * 5) % 19)
                .map(|j| ((i * 31 + j * 7 + 3) % 300) as u32)
                .collect()
        })
        .collect();
    let joins: Vec<usize> = (0..n).map(|i| i / 2).collect();
    let n_gen: Vec<usize> = (0..n).map(|i| 4 + (i * 3) % 7).collect();
    check_against_solo(&prompts, &joins, &n_gen);
}

/// Eighteen sessions decoding together: past the float weights' prefill
/// panels (from 16 tokens), which a decode step must not take.
#[test]
fn eighteen_batched_sessions_match_their_solo_runs_bitwise() {
    let n = 18;
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| ((i * 17 + j * 5 + 1) % 300) as u32)
                .collect()
        })
        .collect();
    let joins = vec![0; n];
    let n_gen: Vec<usize> = (0..n).map(|i| 3 + i % 2).collect();
    check_against_solo(&prompts, &joins, &n_gen);
}

/// Session `i` reads `prompts[i]` from step `joins[i]` on (in chunks of 16)
/// and then generates `n_gen[i]` greedy tokens; at every step, on every kernel
/// path, weight type and cache type, its logits equal its solo run's bitwise.
fn check_against_solo(prompts: &[Vec<u32>], joins: &[usize], n_gen: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let n_seq = prompts.len();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let path = dir.path().join(format!("{ty}.gguf"));
        write_synthetic(&path, &SyntheticSpec::new(hparams(), ty)).unwrap();
        for kp in KernelPath::available() {
            for kv in [KvType::F32, KvType::F16] {
                let model =
                    Arc::new(Model::load_with_kernels(&path, Kernels::new(kp).unwrap()).unwrap());
                let params = SessionParams {
                    n_batch: 16,
                    kv_type: kv,
                    ..SessionParams::default()
                };
                let solo: Vec<_> = (0..n_seq)
                    .map(|i| alone(&model, &params, &prompts[i], n_gen[i]))
                    .collect();
                let mut batch = Batch::new(
                    Arc::clone(&model),
                    BatchParams {
                        max_seqs: n_seq,
                        // Sessions may join in the same step, each with a
                        // prompt chunk.
                        max_tokens: 16 * n_seq,
                        n_ctx: 0,
                    },
                )
                .unwrap();
                let mut sessions: Vec<Session> = (0..n_seq)
                    .map(|_| Session::new(Arc::clone(&model), params.clone()).unwrap())
                    .collect();
                // Per session: prompt tokens fed, tokens generated, next token.
                let mut fed = vec![0usize; n_seq];
                let mut got: Vec<Vec<u32>> = vec![Vec::new(); n_seq];
                let mut next = vec![None::<u32>; n_seq];
                let what = format!("{kp} kernels, {ty} weights, {kv:?} cache");
                for step in 0.. {
                    let mut plan: Vec<(usize, Vec<u32>)> = Vec::new();
                    for i in 0..n_seq {
                        if step < joins[i] || got[i].len() >= n_gen[i] {
                            continue;
                        }
                        if let Some(t) = next[i] {
                            plan.push((i, vec![t]));
                        } else {
                            let chunk = &prompts[i][fed[i]..(fed[i] + 16).min(prompts[i].len())];
                            plan.push((i, chunk.to_vec()));
                        }
                    }
                    if plan.is_empty() {
                        break;
                    }
                    {
                        let mut refs: Vec<Option<&mut Session>> =
                            sessions.iter_mut().map(Some).collect();
                        // Items in reverse session order, to mix the rows up.
                        let mut picked: Vec<(&mut Session, &[u32])> = plan
                            .iter()
                            .rev()
                            .map(|(i, toks)| (refs[*i].take().unwrap(), &toks[..]))
                            .collect();
                        batch.eval(&mut picked).unwrap();
                    }
                    for (i, toks) in &plan {
                        let i = *i;
                        if next[i].take().is_none() {
                            fed[i] += toks.len();
                            if fed[i] < prompts[i].len() {
                                continue;
                            }
                        }
                        let logits = sessions[i].logits().unwrap();
                        let k = got[i].len();
                        let want = &solo[i].0[k];
                        let have: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
                        assert!(
                            &have == want,
                            "{what}: session {i}, token {k}: logits differ from the solo run"
                        );
                        let t = argmax(logits);
                        got[i].push(t);
                        next[i] = Some(t);
                    }
                }
                for i in 0..n_seq {
                    assert_eq!(got[i], solo[i].1, "{what}: session {i}'s tokens");
                }
            }
        }
    }
}

/// Bad steps are refused before anything is evaluated, naming the problem.
#[test]
fn bad_steps_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_synthetic(&path, &SyntheticSpec::new(hparams(), GgmlType::Q8_0)).unwrap();
    let model = Arc::new(Model::load(&path).unwrap());
    let params = BatchParams {
        max_seqs: 2,
        max_tokens: 4,
        n_ctx: 0,
    };
    let mut batch = Batch::new(Arc::clone(&model), params).unwrap();
    let mut a = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    let mut b = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    let mut c = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    assert!(batch.eval(&mut []).is_err());
    let e = batch
        .eval(&mut [(&mut a, &[1][..]), (&mut b, &[1][..]), (&mut c, &[1][..])])
        .unwrap_err();
    assert!(e.to_string().contains("1 to 2 sessions"), "{e}");
    let e = batch
        .eval(&mut [(&mut a, &[1, 2, 3, 4, 5][..])])
        .unwrap_err();
    assert!(e.to_string().contains("at most 4 tokens"), "{e}");
    let e = batch.eval(&mut [(&mut a, &[1000][..])]).unwrap_err();
    assert!(matches!(e, Error::InvalidToken { .. }), "{e}");
    assert!(batch.eval(&mut [(&mut a, &[][..])]).is_err());
    let other = Arc::new(Model::load(&path).unwrap());
    let mut d = Session::new(other, SessionParams::default()).unwrap();
    let e = batch.eval(&mut [(&mut d, &[1][..])]).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    assert_eq!(a.len(), 0, "nothing was evaluated");
    batch
        .eval(&mut [(&mut a, &[1, 2][..]), (&mut b, &[3][..])])
        .unwrap();
    assert_eq!((a.len(), b.len()), (2, 1));
    assert!(a.logits().is_some() && b.logits().is_some());
}

/// `Batch::score` gives every token of a step the logits a session scoring
/// the same chunk alone gets (`Session::feed_logits`): a prompt chunk beside
/// another session's decode token, more rows than one LM-head pass takes,
/// on every kernel path this CPU runs; bad items and ranges are errors.
#[test]
fn scored_rows_equal_a_sessions_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_synthetic(&path, &SyntheticSpec::new(hparams(), GgmlType::Q8_0)).unwrap();
    let n = gptq_core::SCORE_ROWS + 9;
    let prompt: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 11) % 300).collect();
    for path_kind in KernelPath::available() {
        let kernels = Kernels::new(path_kind).unwrap();
        let model = Arc::new(Model::load_with_kernels(&path, kernels).unwrap());
        let params = SessionParams {
            n_ctx: 128,
            n_batch: n,
            n_outputs: n,
            kv_type: KvType::F32,
        };
        let mut want = vec![Vec::new(); n];
        let mut solo = Session::new(Arc::clone(&model), params.clone()).unwrap();
        solo.feed_logits(&prompt, 0..n, |j, row| want[j] = row.to_vec())
            .unwrap();
        let mut batch = Batch::new(
            Arc::clone(&model),
            BatchParams {
                max_seqs: 2,
                max_tokens: n + 1,
                n_ctx: 128,
            },
        )
        .unwrap();
        let mut a = Session::new(Arc::clone(&model), params.clone()).unwrap();
        let mut b = Session::new(Arc::clone(&model), params.clone()).unwrap();
        a.feed(&[3, 4]).unwrap();
        batch
            .eval(&mut [(&mut a, &[5][..]), (&mut b, &prompt[..])])
            .unwrap();
        let mut out = Vec::new();
        let mut seen = 0;
        batch
            .score(1, 0..n, &mut out, |j, row| {
                let scale = want[j].iter().fold(1f32, |m, v| m.max(v.abs()));
                for (x, y) in row.iter().zip(&want[j]) {
                    assert!(
                        (x - y).abs() <= 1e-5 * scale,
                        "{path_kind:?} row {j}: {x} vs {y}"
                    );
                }
                seen += 1;
            })
            .unwrap();
        assert_eq!(seen, n);
        // The last row is the logits the step left in the session.
        let mut last = Vec::new();
        batch
            .score(1, n - 1..n, &mut out, |_, row| last = row.to_vec())
            .unwrap();
        assert_eq!(last, b.logits().unwrap());
        let mut count = 0;
        batch.score(0, 0..1, &mut out, |_, _| count += 1).unwrap();
        assert_eq!(count, 1);
        assert!(batch.score(2, 0..1, &mut out, |_, _| {}).is_err());
        assert!(batch.score(0, 0..2, &mut out, |_, _| {}).is_err());
    }
}
