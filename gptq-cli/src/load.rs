//! Loading the model the flags name, with the thread count applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gptq_core::{Model, Session, SessionParams};

use crate::args::ModelArgs;
use crate::model_path;

/// A loaded model and how long loading took.
pub struct Loaded {
    /// The model.
    pub model: Arc<Model>,
    /// Time to map and validate the file.
    pub load_time: Duration,
}

/// Sets the size of the global thread pool (once per process).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    let n = match threads {
        Some(0) => anyhow::bail!("-t must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Only the first call in a process can size the pool; later calls keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

/// Loads the model named by the flags (or the default one).
pub fn load(args: &ModelArgs) -> Result<Loaded> {
    set_threads(args.threads)?;
    let path = model_path::resolve(args.model.as_deref())?;
    let start = Instant::now();
    let mut model =
        Model::load(&path).with_context(|| format!("cannot load {}", path.display()))?;
    if args.repack {
        model.enable_repack().context("--repack")?;
    }
    let load_time = start.elapsed();
    if args.verbose {
        let hp = model.hparams();
        eprintln!(
            "gptq: model {} ({}): n_vocab {}, n_ctx {}, n_embd {}, n_head {}, n_layer {}, n_ff {}",
            path.display(),
            model.name().unwrap_or("unnamed"),
            hp.n_vocab,
            hp.n_ctx,
            hp.n_embd,
            hp.n_head,
            hp.n_layer,
            hp.n_ff
        );
        eprintln!(
            "gptq: kernel path {}, {} threads, {:.1} MB of weights per token",
            model.kernels().describe(),
            rayon::current_num_threads(),
            model.weight_bytes_per_token() as f64 / 1e6
        );
    }
    Ok(Loaded {
        model: Arc::new(model),
        load_time,
    })
}

/// Tokens per forward pass when `-b` is not given.
pub const DEFAULT_BATCH: usize = 256;

/// A session sized by the flags.
pub fn session(model: &Arc<Model>, args: &ModelArgs, n_outputs: usize) -> Result<Session> {
    let params = SessionParams {
        n_ctx: args.ctx_size,
        n_batch: args.batch_size.unwrap_or(DEFAULT_BATCH),
        n_outputs,
        kv_type: args.cache_type.into(),
    };
    Ok(Session::new(Arc::clone(model), params)?)
}
