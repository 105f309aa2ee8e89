//! `config.json` parsing: any bytes are refused or give hyper-parameters
//! that are positive and consistent.

#![no_main]

use gptq_convert::config::GptConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(c) = GptConfig::from_json(&value) else {
        return;
    };
    assert!(c.n_embd > 0 && c.n_head > 0 && c.n_layer > 0 && c.n_vocab > 0 && c.n_ctx > 0);
    assert!(c.n_embd.is_multiple_of(c.n_head));
    assert!(c.ln_eps.is_finite() && c.ln_eps > 0.0, "{}", c.ln_eps);
    let hp = c.hparams();
    assert_eq!(hp.n_ff, c.n_ff);
});
