//! `gptq imatrix`: llama-imatrix's importance matrix of a model over a text,
//! written in its `.dat` layout (which `llama-quantize --imatrix` and
//! `gptq-convert --imatrix` read).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use gptq_core::imatrix;

use crate::args::ModelArgs;
use crate::load;

/// Flags of `gptq imatrix`.
#[derive(Debug, Clone, Args)]
pub struct ImatrixArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Calibration text.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Output file.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "imatrix.dat"
    )]
    pub output: PathBuf,
    /// Use at most N chunks of the text.
    #[arg(long = "chunks", value_name = "N")]
    pub chunks: Option<usize>,
    /// Do not compute the perplexity of the text on the way.
    #[arg(long = "no-ppl")]
    pub no_ppl: bool,
}

/// Chunk length when `-c` is not given: llama-imatrix's default, capped at the
/// model's context.
const DEFAULT_CTX: usize = 512;

/// Runs `gptq imatrix`.
pub fn run(args: &ImatrixArgs) -> Result<()> {
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let tokens = model.tokenizer().encode(&text);
    let n_ctx = match args.model.ctx_size {
        0 => DEFAULT_CTX.min(model.hparams().n_ctx),
        c => c,
    };
    if n_ctx < 16 {
        bail!(
            "-c {n_ctx}: llama-imatrix ignores products of fewer than 16 tokens; use at least 16"
        );
    }
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!("output folder {} does not exist", dir.display());
    }
    eprintln!(
        "gptq: {}: {} tokens; chunks of {n_ctx}",
        args.file.display(),
        tokens.len()
    );
    let t = Instant::now();
    let mut err = std::io::stderr();
    let dataset = args.file.to_string_lossy();
    let r = imatrix::compute(
        model,
        &tokens,
        n_ctx,
        args.chunks,
        !args.no_ppl,
        &dataset,
        |c, ppl| {
            let _ = if ppl.is_nan() {
                write!(err, "[{}]", c + 1)
            } else {
                write!(err, "[{}]{ppl:.4},", c + 1)
            };
            let _ = err.flush();
        },
    )?;
    eprintln!();
    if let Some(p) = &r.perplexity {
        eprintln!("Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, p.ppl_err);
    }
    write_atomic(&args.output, &dir, |w| r.imatrix.write(w))?;
    eprintln!(
        "gptq: wrote {} entries over {} chunks to {} in {:.1} s",
        r.imatrix.entries.len(),
        r.imatrix.chunks,
        args.output.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `dest` through a temporary file in `dir` that is renamed into place
/// only when complete.
fn write_atomic(
    dest: &Path,
    dir: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".gptq-imatrix.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        write(&mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the file to {}", dest.display()))?;
    Ok(())
}
