//! The block runner (calibration's forward pass) computes what a session
//! computes: run block by block from the embeddings, it shows an observer the
//! same inputs of every matrix product as a session's forward pass does.

use std::collections::BTreeMap;
use std::sync::Arc;

use gptq_core::calibrate::BlockRunner;
use gptq_core::model::{ActivationObserver, Site};
use gptq_core::{Model, Session, SessionParams};

#[derive(Default)]
struct Capture(BTreeMap<(usize, Site), Vec<f32>>);

impl ActivationObserver for Capture {
    fn observe(&mut self, layer: usize, site: Site, rows: &[f32], _n: usize) {
        self.0
            .entry((layer, site))
            .or_default()
            .extend_from_slice(rows);
    }
}

fn default_model() -> Arc<Model> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/trained-small-q8_0.gguf"
    );
    Arc::new(Model::load(path).unwrap())
}

#[test]
fn block_runner_sees_what_a_session_sees() {
    let model = default_model();
    let tokens = model
        .tokenizer()
        .encode("It was the best of times, it was the worst of times, it was the age of wisdom.");
    let mut session = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    let mut want = Capture::default();
    session
        .feed_observed(&tokens, 0..0, |_, _| {}, &mut want)
        .unwrap();

    let hp = model.hparams();
    let mut runner = BlockRunner::new(hp, model.kernels(), hp.n_ctx).unwrap();
    let mut got = Capture::default();
    let mut x = model.embed(&tokens).unwrap();
    for layer in 0..hp.n_layer {
        runner
            .run(layer, &model.block(layer), &mut x, Some(&mut got))
            .unwrap();
    }
    assert_eq!(want.0.len(), 4 * hp.n_layer);
    assert_eq!(
        got.0.keys().collect::<Vec<_>>(),
        want.0.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want.0 {
        let g = &got.0[k];
        assert_eq!(g.len(), w.len(), "{k:?}");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{k:?}: relative difference {worst}");
    }
}

#[test]
fn block_runner_refuses_bad_shapes() {
    let model = default_model();
    let hp = model.hparams();
    assert!(BlockRunner::new(hp, model.kernels(), hp.n_ctx + 1).is_err());
    let mut runner = BlockRunner::new(hp, model.kernels(), 8).unwrap();
    let mut x = vec![0.0f32; 9 * hp.n_embd];
    assert!(runner.run(0, &model.block(0), &mut x, None).is_err());
    let mut x = vec![0.0f32; hp.n_embd + 1];
    assert!(runner.run(0, &model.block(0), &mut x, None).is_err());
}
