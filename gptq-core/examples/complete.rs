//! Minimal completion: `cargo run -p gptq-core --example complete -- [MODEL] [PROMPT]`.
use std::{io::Write, sync::Arc};

use gptq_core::{GenerateOptions, Model, SamplerParams, Session, SessionParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or("models/trained-small-q8_0.gguf".into());
    let prompt = args.next().unwrap_or("Once upon a time".into());
    let model = Arc::new(Model::load(path)?);
    let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
    let mut sampler = SamplerParams::default().temperature(0.7).seed(1).build()?;
    session.feed(&model.tokenizer().encode(&prompt))?;
    print!("{prompt}");
    for piece in session.generate(&mut sampler, GenerateOptions::max_tokens(40)) {
        print!("{}", piece?);
        std::io::stdout().flush()?;
    }
    println!();
    Ok(())
}
