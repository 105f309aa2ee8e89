//! One `Model` shared by several threads, each with its own `Session`:
//! `cargo run -p gptq-core --example threads -- [MODEL]`.
use std::sync::Arc;
use std::thread;

use gptq_core::{GenerateOptions, Model, SamplerParams, Session, SessionParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("models/trained-small-q8_0.gguf".into());
    // Loaded (mapped) once; every thread reads the same weights in place.
    let model = Arc::new(Model::load(path)?);
    let prompts = [
        "The cat",
        "In the morning",
        "Science is",
        "My favourite food",
    ];
    let handles: Vec<_> = prompts
        .into_iter()
        .map(|prompt| {
            let model = Arc::clone(&model);
            thread::spawn(move || -> gptq_core::Result<String> {
                // A session owns its KV cache: one per thread (or per request).
                let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
                let mut sampler = SamplerParams::greedy().build()?;
                session.feed(&model.tokenizer().encode(prompt))?;
                let mut text = prompt.to_string();
                for piece in session.generate(&mut sampler, GenerateOptions::max_tokens(24)) {
                    text.push_str(&piece?);
                }
                Ok(text)
            })
        })
        .collect();
    for h in handles {
        let text = h.join().expect("worker thread panicked")?;
        println!("{}\n---", text.trim_end());
    }
    Ok(())
}
