//! `gptq perplexity`: llama-perplexity's method and output, including its
//! KL-divergence mode (`--kl-divergence-base FILE [--kl-divergence]`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use gptq_core::Model;
use gptq_core::perplexity::base_file::{self, Header};
use gptq_core::perplexity::kld::{self, Estimate, KldStats, KldSummary};
use gptq_core::perplexity::{NllSums, chunk_count, chunk_nlls, evaluate_chunks};
use rayon::prelude::*;

use crate::args::ModelArgs;
use crate::load;

/// Flags of `gptq perplexity`.
#[derive(Debug, Clone, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score (not with --kl-divergence, which scores the tokens
    /// stored in the base file).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        required_unless_present = "kld",
        conflicts_with = "kld"
    )]
    pub file: Option<PathBuf>,
    /// Score at most N chunks (llama-perplexity's --chunks).
    #[arg(long = "chunks", value_name = "N", conflicts_with = "kld")]
    pub chunks: Option<usize>,
    /// The base model's log-probabilities, in llama-perplexity's format:
    /// written by a plain run, read with --kl-divergence.
    #[arg(long = "kl-divergence-base", value_name = "FILE")]
    pub kld_base: Option<PathBuf>,
    /// Compare with the base file: KL divergence, Δp and same-top-token
    /// statistics, as llama-perplexity prints them.
    #[arg(long = "kl-divergence", requires = "kld_base")]
    pub kld: bool,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gptq perplexity`.
pub fn run(args: &PerplexityArgs) -> Result<()> {
    if args.kld {
        // clap has refused -f and --chunks: the tokens and chunks come from
        // the base file.
        return run_kld(args);
    }
    let Some(file) = &args.file else {
        bail!("no text to score: give -f FILE (or --kl-divergence with a base file)");
    };
    // Written with `?`, not println!, so a closed pipe (`| head`) ends the
    // command quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let t = Instant::now();
    let tokens = model.tokenizer().encode(&text);
    let n_ctx = match args.model.ctx_size {
        0 => model.hparams().n_ctx,
        c => c,
    };
    let n_chunks = chunk_count(tokens.len(), n_ctx, args.chunks)?;
    eprintln!(
        "gptq: tokenized {} in {:.0} ms: {} tokens; {n_chunks} chunks of {n_ctx}",
        file.display(),
        t.elapsed().as_secs_f64() * 1e3,
        tokens.len(),
    );
    let mut base = match &args.kld_base {
        Some(path) => Some(BaseWriter::create(
            path,
            Header {
                n_ctx,
                n_vocab: model.hparams().n_vocab,
                n_chunk: n_chunks,
                tokens: tokens[..n_chunks * n_ctx].to_vec(),
            },
        )?),
        None => None,
    };
    let t = Instant::now();
    let mut err = std::io::stderr();
    let mut sums = NllSums::default();
    evaluate_chunks(model, &tokens, n_ctx, n_chunks, |chunk| {
        let nlls = match &mut base {
            Some(w) => w
                .write_chunk(&chunk)
                .map_err(|source| gptq_core::Error::Io {
                    path: w.dest.clone(),
                    source,
                })?,
            None => chunk_nlls(&chunk),
        };
        for v in nlls {
            sums.add(v);
        }
        let _ = write!(err, "[{}]{:.4},", chunk.index + 1, sums.ppl());
        let _ = err.flush();
        Ok(())
    })?;
    eprintln!();
    if let (Some(w), Some(path)) = (base, &args.kld_base) {
        w.finish()?;
        eprintln!(
            "gptq: wrote the base log-probabilities to {}",
            path.display()
        );
    }
    let r = sums.result(n_chunks);
    eprintln!(
        "gptq: {} tokens scored in {:.2} s ({:.1} tokens/s evaluated)",
        r.tokens,
        t.elapsed().as_secs_f64(),
        (r.chunks * n_ctx) as f64 / t.elapsed().as_secs_f64()
    );
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "ppl": r.ppl, "ppl_err": r.ppl_err, "tokens": r.tokens, "chunks": r.chunks
            })
        )?;
    } else {
        writeln!(
            out,
            "Final estimate: PPL = {:.4} +/- {:.5}",
            r.ppl, r.ppl_err
        )?;
    }
    Ok(())
}

/// Writes a base file beside its destination and moves it into place only
/// when complete, so a failed run leaves no half-written file.
struct BaseWriter {
    file: BufWriter<tempfile::NamedTempFile>,
    dest: PathBuf,
    row: usize,
    rows: Vec<u16>,
}

impl BaseWriter {
    fn create(dest: &Path, header: Header) -> Result<BaseWriter> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".gptq-kld-base.")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        let mut file = BufWriter::with_capacity(1 << 20, tmp);
        header
            .write(&mut file)
            .with_context(|| format!("writing {}", dest.display()))?;
        let row = base_file::row_len(header.n_vocab);
        Ok(BaseWriter {
            file,
            dest: dest.to_path_buf(),
            row,
            rows: Vec::new(),
        })
    }

    /// Encodes and writes one chunk's rows; returns their NLLs.
    fn write_chunk(
        &mut self,
        chunk: &gptq_core::perplexity::ChunkLogits<'_>,
    ) -> std::io::Result<Vec<f64>> {
        let n = chunk.targets.len();
        self.rows.resize(n * self.row, 0);
        let nlls: Vec<f64> = self
            .rows
            .par_chunks_mut(self.row)
            .enumerate()
            .map(|(i, row)| base_file::encode_row(chunk.row(i), chunk.targets[i], row))
            .collect();
        base_file::write_rows(&mut self.file, &self.rows)?;
        Ok(nlls)
    }

    fn finish(self) -> Result<()> {
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.dest.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("writing {}", self.dest.display()))?;
        }
        tmp.persist(&self.dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot move the base file to {}", self.dest.display()))?;
        Ok(())
    }
}

fn run_kld(args: &PerplexityArgs) -> Result<()> {
    let path = args.kld_base.as_deref().expect("clap requires it");
    let mut out = std::io::stdout().lock();
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let header = Header::read(&mut input, len).with_context(|| format!("{}", path.display()))?;
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    check_base_fits(model, &header, args.model.ctx_size, path)?;
    let n_ctx = header.n_ctx;
    eprintln!(
        "gptq: {}: {} chunks of {n_ctx} tokens",
        path.display(),
        header.n_chunk
    );
    let nv = base_file::row_len(header.n_vocab);
    let mut rows = vec![0u16; base_file::rows_per_chunk(n_ctx) * nv];
    let mut stats = KldStats::default();
    let mut err = std::io::stderr();
    if !args.json {
        eprintln!(
            "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p"
        );
    }
    let t = Instant::now();
    evaluate_chunks(model, &header.tokens, n_ctx, header.n_chunk, |chunk| {
        base_file::read_rows(&mut input, &mut rows).map_err(|e| {
            gptq_core::Error::InvalidArgument(format!(
                "{}: cannot read the log-probabilities of chunk {}: {e}",
                path.display(),
                chunk.index + 1
            ))
        })?;
        stats.add(&kld::chunk_klds(
            chunk.logits,
            &rows,
            chunk.targets,
            chunk.n_vocab,
        ));
        if !args.json {
            let r = stats.running();
            let _ = writeln!(
                err,
                "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
                chunk.index + 1,
                r.ppl.value,
                r.ppl.err,
                r.ln_ppl_ratio.value,
                r.ln_ppl_ratio.err,
                r.kld.value,
                r.kld.err,
                100.0 * r.rms_dp.value,
                100.0 * r.rms_dp.err,
                100.0 * r.same_top.value,
                100.0 * r.same_top.err
            );
        }
        Ok(())
    })?;
    eprintln!(
        "gptq: {} positions compared in {:.2} s",
        stats.count(),
        t.elapsed().as_secs_f64()
    );
    let s = stats.summary().expect("at least one chunk");
    if args.json {
        writeln!(out, "{}", kld_json(&s))?;
    } else {
        if s.count < 100 {
            eprintln!(
                "gptq: note: llama-perplexity prints no final statistics for fewer than 100 positions ({})",
                s.count
            );
        }
        write_kld_report(&mut out, &s)?;
    }
    Ok(())
}

/// Refuses a base file made for another vocabulary or a longer context.
fn check_base_fits(model: &Model, h: &Header, ctx_flag: usize, path: &Path) -> Result<()> {
    let hp = model.hparams();
    if h.n_vocab != hp.n_vocab {
        bail!(
            "{}: the base model's vocabulary has {} tokens, this model's {}",
            path.display(),
            h.n_vocab,
            hp.n_vocab
        );
    }
    if h.n_ctx > hp.n_ctx {
        bail!(
            "{}: computed with a context of {}, longer than this model's {}",
            path.display(),
            h.n_ctx,
            hp.n_ctx
        );
    }
    if ctx_flag != 0 && ctx_flag != h.n_ctx {
        bail!(
            "{}: computed with a context of {}, but -c {ctx_flag} was given (leave -c out to use the file's)",
            path.display(),
            h.n_ctx
        );
    }
    Ok(())
}

fn pm(e: Estimate) -> String {
    format!("{:10.6} ± {:10.6}", e.value, e.err)
}

/// llama-perplexity's final KL-divergence report (its layout; per cent where
/// it prints per cent).
fn write_kld_report(out: &mut impl Write, s: &KldSummary) -> std::io::Result<()> {
    writeln!(out, "====== Perplexity statistics ======")?;
    writeln!(out, "Mean PPL(Q)                   : {}", pm(s.ppl))?;
    writeln!(out, "Mean PPL(base)                : {}", pm(s.ppl_base))?;
    writeln!(
        out,
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * s.ln_ppl_correlation
    )?;
    writeln!(
        out,
        "Mean ln(PPL(Q)/PPL(base))     : {}",
        pm(s.ln_ppl_ratio)
    )?;
    writeln!(out, "Mean PPL(Q)/PPL(base)         : {}", pm(s.ppl_ratio))?;
    writeln!(out, "Mean PPL(Q)-PPL(base)         : {}", pm(s.ppl_diff))?;
    writeln!(out)?;
    writeln!(out, "====== KL divergence statistics ======")?;
    writeln!(out, "Mean    KLD: {}", pm(s.kld))?;
    for (label, v) in &s.kld_percentiles {
        writeln!(out, "{label:<8}KLD: {v:10.6}")?;
    }
    writeln!(out)?;
    writeln!(out, "====== Token probability statistics ======")?;
    writeln!(
        out,
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * s.dp.value,
        100.0 * s.dp.err
    )?;
    for (label, v) in &s.dp_percentiles {
        writeln!(out, "{label:<8}Δp: {:6.3}%", 100.0 * v)?;
    }
    writeln!(
        out,
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * s.rms_dp.value,
        100.0 * s.rms_dp.err
    )?;
    writeln!(
        out,
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * s.same_top.value,
        100.0 * s.same_top.err
    )
}

/// The statistics as one JSON object; probabilities as fractions.
fn kld_json(s: &KldSummary) -> serde_json::Value {
    let mut v = serde_json::json!({
        "count": s.count,
        "ppl": s.ppl.value, "ppl_err": s.ppl.err,
        "ppl_base": s.ppl_base.value, "ppl_base_err": s.ppl_base.err,
        "ln_ppl_correlation": s.ln_ppl_correlation,
        "ln_ppl_ratio": s.ln_ppl_ratio.value, "ln_ppl_ratio_err": s.ln_ppl_ratio.err,
        "ppl_ratio": s.ppl_ratio.value, "ppl_ratio_err": s.ppl_ratio.err,
        "ppl_diff": s.ppl_diff.value, "ppl_diff_err": s.ppl_diff.err,
        "kld_mean": s.kld.value, "kld_mean_err": s.kld.err,
        "dp_mean": s.dp.value, "dp_mean_err": s.dp.err,
        "rms_dp": s.rms_dp.value, "rms_dp_err": s.rms_dp.err,
        "same_top_p": s.same_top.value, "same_top_p_err": s.same_top.err,
    });
    let obj = v.as_object_mut().expect("an object");
    for (l, x) in &s.kld_percentiles {
        obj.insert(format!("kld_{}", percentile_key(l)), (*x).into());
    }
    for (l, x) in &s.dp_percentiles {
        obj.insert(format!("dp_{}", percentile_key(l)), (*x).into());
    }
    v
}

/// JSON key of a percentile label: `max`, `p99_9`, `p99`, `median`, `p0_1`, ...
fn percentile_key(label: &str) -> String {
    match label.trim() {
        "Maximum" => "max".into(),
        "Minimum" => "min".into(),
        "Median" => "median".into(),
        l => format!(
            "p{}",
            l.trim_end_matches('%')
                .trim_end_matches(".0")
                .replace('.', "_")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::percentile_key;

    #[test]
    fn percentile_keys() {
        assert_eq!(percentile_key("99.9%"), "p99_9");
        assert_eq!(percentile_key("99.0%"), "p99");
        assert_eq!(percentile_key(" 5.0%"), "p5");
        assert_eq!(percentile_key(" 0.1%"), "p0_1");
        assert_eq!(percentile_key("Median"), "median");
        assert_eq!(percentile_key("Maximum"), "max");
    }
}
