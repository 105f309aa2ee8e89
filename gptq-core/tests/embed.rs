//! The embedding API on the default model: shared model across threads,
//! generation, stop strings, cancellation, and that a kept KV cache gives the
//! same tokens as a fresh session.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use gptq_core::{
    Error, FinishReason, GenerateOptions, Model, Sampler, SamplerParams, Session, SessionParams,
};

fn model() -> Arc<Model> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/trained-small-q8_0.gguf");
    Arc::new(Model::load(&path).expect("the default model loads"))
}

fn session(model: &Arc<Model>) -> Session {
    Session::new(Arc::clone(model), SessionParams::default()).unwrap()
}

/// Generates on `s` until `opts` stop it: the tokens and why it stopped.
fn generate_all(
    s: &mut Session,
    sampler: &mut Sampler,
    opts: GenerateOptions,
) -> (Vec<u32>, Option<FinishReason>) {
    let mut g = s.generate(sampler, opts);
    for piece in g.by_ref() {
        piece.unwrap();
    }
    (g.tokens().to_vec(), g.finish_reason())
}

/// Tokens generated after `prompt` with `params`.
fn run(model: &Arc<Model>, prompt: &str, params: SamplerParams, n: usize) -> Vec<u32> {
    let mut s = session(model);
    let mut sampler = params.build().unwrap();
    s.feed(&model.tokenizer().encode(prompt)).unwrap();
    let opts = GenerateOptions::max_tokens(n).stop_at_eos(false);
    let (tokens, why) = generate_all(&mut s, &mut sampler, opts);
    assert_eq!(why, Some(FinishReason::MaxTokens));
    tokens
}

#[test]
fn four_threads_sharing_a_model_match_one_thread() {
    let model = model();
    let prompts = ["The cat", "Once upon a time", "In 1999,", "Water is"];
    let params = |i: usize| {
        if i.is_multiple_of(2) {
            SamplerParams::greedy()
        } else {
            SamplerParams::default().seed(7 + i as u64)
        }
    };
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| run(&model, p, params(i), 24))
        .collect();
    let together: Vec<Vec<u32>> = thread::scope(|sc| {
        let hs: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let model = Arc::clone(&model);
                sc.spawn(move || run(&model, p, params(i), 24))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn kept_cache_equals_fresh_session() {
    let model = model();
    let tok = model.tokenizer();
    let mut s = session(&model);
    let mut sampler = SamplerParams::greedy().build().unwrap();
    // Turn 1: a prompt and its greedy continuation, generated token by token.
    s.feed(&tok.encode("The old man walked")).unwrap();
    let (answer1, _) = generate_all(&mut s, &mut sampler, GenerateOptions::max_tokens(20));
    // Turn 2: more text on top of the kept cache.
    s.feed(&tok.encode(" Then he said")).unwrap();
    let (kept, _) = generate_all(&mut s, &mut sampler, GenerateOptions::max_tokens(20));
    // A fresh session fed the same token sequence in one batch.
    let history = s.tokens()[..s.len() - kept.len()].to_vec();
    assert!(history.len() > answer1.len());
    let mut fresh = session(&model);
    fresh.feed(&history).unwrap();
    let (again, _) = generate_all(&mut fresh, &mut sampler, GenerateOptions::max_tokens(20));
    assert_eq!(again, kept);
}

#[test]
fn pieces_concatenate_to_the_decoded_tokens() {
    let model = model();
    let mut s = session(&model);
    let mut sampler = SamplerParams::default().seed(3).build().unwrap();
    s.feed(&model.tokenizer().encode("Hello")).unwrap();
    let mut g = s.generate(&mut sampler, GenerateOptions::max_tokens(40));
    let mut text = String::new();
    for p in g.by_ref() {
        let p = p.unwrap();
        assert!(!p.is_empty());
        text.push_str(&p);
    }
    let tokens = g.tokens().to_vec();
    drop(g);
    assert_eq!(text, model.tokenizer().decode(&tokens).unwrap());
    // Every generated token is in the session.
    assert!(s.tokens().ends_with(&tokens));
}

#[test]
fn stop_string_ends_generation_and_is_not_yielded() {
    let model = model();
    let tok = model.tokenizer();
    // Find what greedy decoding says, then stop at a word from it.
    let free = run(&model, "The old man walked", SamplerParams::greedy(), 30);
    let text = tok.decode(&free).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let stop = words[words.len() / 2].to_string();
    let mut s = session(&model);
    let mut sampler = SamplerParams::greedy().build().unwrap();
    s.feed(&tok.encode("The old man walked")).unwrap();
    let mut g = s.generate(
        &mut sampler,
        GenerateOptions::max_tokens(30)
            .stop_at_eos(false)
            .stop(stop.clone()),
    );
    let got: String = g.by_ref().map(|p| p.unwrap()).collect();
    assert_eq!(g.finish_reason(), Some(FinishReason::Stop(0)));
    assert_eq!(got, text[..text.find(&stop).unwrap()]);
}

#[test]
fn cancel_flag_stops_generation_from_another_thread() {
    let model = model();
    let mut s = session(&model);
    let mut sampler = SamplerParams::greedy().build().unwrap();
    s.feed(&model.tokenizer().encode("A")).unwrap();
    let flag = s.cancel_flag();
    let mut g = s.generate(
        &mut sampler,
        GenerateOptions::max_tokens(500).stop_at_eos(false),
    );
    let mut n = 0;
    for p in g.by_ref() {
        p.unwrap();
        n += 1;
        if n == 3 {
            thread::scope(|sc| {
                sc.spawn(|| flag.store(true, Ordering::Relaxed));
            });
        }
    }
    assert_eq!(g.finish_reason(), Some(FinishReason::Cancelled));
    assert!(g.tokens().len() < 10);
    drop(g);
    // The flag is cleared and the session still works.
    assert!(!flag.load(Ordering::Relaxed));
    assert!(s.feed(&[11]).is_ok());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let model = model();
    let mut s = session(&model);
    let mut sampler = SamplerParams::greedy().build().unwrap();
    // Generating before feeding anything.
    let mut g = s.generate(&mut sampler, GenerateOptions::max_tokens(4));
    assert!(matches!(g.next(), Some(Err(Error::InvalidArgument(_)))));
    assert!(g.next().is_none());
    drop(g);
    assert!(matches!(
        s.feed(&[u32::MAX]),
        Err(Error::InvalidToken { .. })
    ));
    assert!(matches!(s.feed(&[]), Err(Error::InvalidArgument(_))));
    assert!(s.rewind(1).is_err());
    assert!(SamplerParams::default().top_p(0.0).build().is_err());
    let n_ctx = s.n_ctx();
    assert!(matches!(
        s.feed(&vec![11; n_ctx + 1]),
        Err(Error::ContextOverflow { .. })
    ));
    // Filling the context ends generation with ContextFull.
    s.feed(&vec![11; n_ctx - 2]).unwrap();
    let mut g = s.generate(
        &mut sampler,
        GenerateOptions::max_tokens(10).stop_at_eos(false),
    );
    for p in g.by_ref() {
        p.unwrap();
    }
    assert_eq!(g.finish_reason(), Some(FinishReason::ContextFull));
}
