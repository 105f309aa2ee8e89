//! Model load and one forward step, structure-aware: the input describes a
//! tiny GPT-2 GGUF file (hyper-parameters, tensor types and shapes, metadata,
//! vocabulary, weights) that is written, then patched or cut at any byte, and
//! loaded from memory. Loading either fails with an error or gives a model
//! that a session can run: prefill, one decode step, and logits of the
//! vocabulary's length.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use gptq_core::{KernelPath, Kernels, KvType, Model, Session, SessionParams};
use gptq_fuzz::model::ModelSpec;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    spec: ModelSpec,
    /// Prompt ids (reduced modulo a little more than the vocabulary, so some
    /// are out of range).
    prompt: Vec<u16>,
    /// Which of the CPU's kernel paths runs the model.
    kernel: u8,
    kv_f16: bool,
    n_batch: u8,
}

fuzz_target!(|input: Input| {
    gptq_fuzz::single_threaded();
    let Some(bytes) = input.spec.build() else {
        return;
    };
    let paths = KernelPath::available();
    let path = paths[input.kernel as usize % paths.len()];
    let kernels = Kernels::new(path).expect("an available path");
    let Ok(model) = Model::from_bytes(&bytes, "fuzz.gguf", kernels) else {
        return;
    };
    let model = Arc::new(model);
    let n_vocab = model.hparams().n_vocab;
    assert_eq!(model.tokenizer().n_vocab(), n_vocab);
    let params = SessionParams {
        n_ctx: 0,
        n_batch: 1 + input.n_batch as usize % 8,
        n_outputs: 1,
        kv_type: if input.kv_f16 {
            KvType::F16
        } else {
            KvType::F32
        },
    };
    let mut session =
        Session::new(Arc::clone(&model), params).expect("a session of a loaded model");
    let prompt: Vec<u32> = input
        .prompt
        .iter()
        .take(model.hparams().n_ctx + 1)
        .map(|&t| u32::from(t) % (n_vocab as u32 + 3))
        .collect();
    let all_valid = prompt.iter().all(|&t| (t as usize) < n_vocab);
    match session.feed(&prompt) {
        Ok(logits) => {
            assert_eq!(logits.len(), n_vocab);
            assert!(all_valid && !prompt.is_empty());
        }
        Err(_) => return,
    }
    if let Ok(logits) = session.step(0) {
        assert_eq!(logits.len(), n_vocab);
    }
    let text = model.tokenizer().decode(&prompt).expect("valid ids decode");
    let _ = model.tokenizer().encode(&text);
});
