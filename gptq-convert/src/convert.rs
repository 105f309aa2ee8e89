//! The conversion: checkpoint folder → one GGUF v3 file, streamed tensor by
//! tensor into a temporary file that is renamed into place only when complete.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gptq_core::gguf::{FileType, GgmlType, GgufWriter, MetaValue};
use gptq_core::model::layout::{self, TensorSpec};
use gptq_core::quant::types::validate_row;
use gptq_core::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{Checkpoint, open_checkpoint};
use crate::config::GptConfig;
use crate::gptq::layerwise::{CalibOptions, Calibrator, LAYER_TENSORS, LayerF32};
use crate::names::{Mapping, map_name};
use crate::output::create_temp;
use crate::quantize::mix::{self, TensorSite};
use crate::quantize::{QUANTIZABLE, quantize_rows};
use crate::vocab::read_vocab;

/// Alignment of the tensor data in files we write: GGUF's default (32), so the
/// file carries no `general.alignment` key, exactly like llama.cpp's files.
/// (A file that declares another alignment breaks llama.cpp's `llama-quantize`,
/// which copies the key but lays the new file out at 32.)
pub const ALIGNMENT: u64 = gptq_core::gguf::DEFAULT_ALIGNMENT;

/// How the weight matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    /// Every matrix of this type (one of [`QUANTIZABLE`]); the token embedding
    /// (the tied LM head) is Q8_0 when the type has fewer bits than Q8_0. A
    /// matrix whose rows are not whole blocks falls back as in llama-quantize
    /// (Q2_K, Q3_K, IQ4_XS → IQ4_NL, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0),
    /// else to F16.
    Pure(GgmlType),
    /// llama-quantize's mix for this file type (`Q4_K_M`, ...): the type it
    /// picks for each tensor, so the file equals llama-quantize's output for
    /// the same F32 file, tensor by tensor (see [`crate::quantize::mix`]).
    Mix(FileType),
}

impl From<GgmlType> for OutType {
    fn from(t: GgmlType) -> OutType {
        OutType::Pure(t)
    }
}

impl OutType {
    /// The `general.file_type` llama.cpp reads for such a file.
    pub fn file_type(self) -> Result<FileType> {
        match self {
            OutType::Pure(t) => {
                if !QUANTIZABLE.contains(&t) {
                    bail!(
                        "unsupported output type {t}: choose one of {}",
                        QUANTIZABLE
                            .iter()
                            .map(|t| t.name().to_ascii_lowercase())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                FileType::for_type(t).with_context(|| format!("no llama.cpp file type for {t}"))
            }
            OutType::Mix(ft) => mix::main_type(ft).map(|_| ft),
        }
    }
}

/// Per-tensor importance weights (llama-imatrix's mean squared activations),
/// by GGUF tensor name, one value per column. Tensors missing here are
/// quantized without weights, as llama-quantize does.
pub type Importance = HashMap<String, Vec<f32>>;

/// What to produce.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// How the weight matrices are stored.
    pub out_type: OutType,
    /// Type of the token embedding (which is also the LM head) and of
    /// `output.weight`; by default as [`OutType`] says.
    pub token_embd_type: Option<GgmlType>,
    /// Importance weights for the scale searches (what llama-quantize's
    /// `--imatrix` does); `None` quantizes as llama-quantize does without one.
    pub imatrix: Option<Importance>,
    /// Where the importance matrix came from, recorded in the file's
    /// metadata as llama-quantize records it (`quantize.imatrix.*`).
    pub imatrix_source: Option<ImatrixSource>,
    /// Calibrated quantization of the block matrices (GPTQ and/or
    /// activation-aware scaling) on a calibration text.
    pub calibration: Option<Calibration>,
    /// `general.name`; by default the checkpoint folder's name.
    pub name: Option<String>,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Also write a tied checkpoint's LM head as a separate `output.weight` (a
    /// copy of the token embedding), as llama.cpp's converter does: llama.cpp
    /// (at least up to build c392e50) refuses GPT-2 files without it. Off by
    /// default, so the tied embedding is stored once.
    pub output_weight: bool,
}

/// A calibration text and what to do with it.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The text's file.
    pub text: PathBuf,
    /// Methods and sizes.
    pub options: CalibOptions,
}

/// What llama-quantize records of the importance matrix it used.
#[derive(Clone, Debug)]
pub struct ImatrixSource {
    /// The file's path.
    pub file: String,
    /// The calibration text's name the file records (may be empty).
    pub dataset: String,
    /// Entries in the file.
    pub entries: usize,
    /// Chunks of text the file was computed on.
    pub chunks: i32,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            out_type: OutType::Pure(GgmlType::F16),
            token_embd_type: None,
            imatrix: None,
            imatrix_source: None,
            calibration: None,
            name: None,
            progress: true,
            output_weight: false,
        }
    }
}

/// What a conversion wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// The file written.
    pub path: PathBuf,
    /// Number of tensors.
    pub tensors: usize,
    /// Size of the file.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// One tensor to write: where it comes from and what it becomes.
struct Plan {
    spec: TensorSpec,
    source: String,
    transpose: bool,
    ty: GgmlType,
}

/// Converts the Hugging Face GPT-2 folder `dir` into the GGUF file `out`.
pub fn convert(dir: &Path, out: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    let start = Instant::now();
    let file_type = opts.out_type.file_type()?;
    if let Some(t) = opts.token_embd_type
        && !QUANTIZABLE.contains(&t)
    {
        bail!("unsupported token embedding type {t}");
    }
    if out.is_dir() {
        bail!(
            "output path {} is a directory; give a file name",
            out.display()
        );
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("output folder {} does not exist", parent.display());
    }

    let config = GptConfig::read(dir)?;
    let ckpt = open_checkpoint(dir)?;
    // The plan checks config.json's sizes against the checkpoint's tensors, so
    // nothing below is sized from an unchecked number (the vocabulary's padding
    // is sized from `vocab_size`).
    let plans = plan(&config, ckpt.as_ref(), opts)?;
    let vocab = read_vocab(dir, config.n_vocab, config.bos, config.eos)?;

    let mut writer = GgufWriter::new(ALIGNMENT)?;
    let name = opts.name.clone().unwrap_or_else(|| folder_name(dir));
    let meta = layout::gpt2_metadata(&config.hparams(), GgmlType::F32, &name, &vocab)
        .context("a hyper-parameter is too large for a GGUF file")?;
    for (k, v) in meta {
        // The layout writes the file type of an all-F32 file; record ours (the
        // mix's, as llama-quantize does, or the pure type's).
        let v = if k == "general.file_type" {
            MetaValue::U32(file_type.0)
        } else {
            v
        };
        writer.add_metadata(&k, v)?;
    }
    if let Some(src) = &opts.imatrix_source {
        writer.add_metadata("quantize.imatrix.file", MetaValue::String(src.file.clone()))?;
        if !src.dataset.is_empty() {
            writer.add_metadata(
                "quantize.imatrix.dataset",
                MetaValue::String(src.dataset.clone()),
            )?;
        }
        writer.add_metadata(
            "quantize.imatrix.entries_count",
            MetaValue::I32(i32::try_from(src.entries).unwrap_or(i32::MAX)),
        )?;
        writer.add_metadata("quantize.imatrix.chunks_count", MetaValue::I32(src.chunks))?;
    }
    let mut calibrator = match &opts.calibration {
        Some(c) => {
            let text = std::fs::read(&c.text).with_context(|| {
                format!("cannot read the calibration text {}", c.text.display())
            })?;
            let tok = Tokenizer::new(
                &vocab.tokens,
                &vocab.merges,
                Some(&vocab.types),
                Some(vocab.bos),
                Some(vocab.eos),
            )?;
            let cal = Calibrator::new(
                &config.hparams(),
                &tok,
                &String::from_utf8_lossy(&text),
                c.options.clone(),
                opts.imatrix.clone(),
            )?;
            if opts.progress {
                eprintln!(
                    "calibrating on {} tokens of {}",
                    cal.n_tokens(),
                    c.text.display()
                );
            }
            Some(cal)
        }
        None => None,
    };
    let types: HashMap<String, GgmlType> =
        plans.iter().map(|p| (p.spec.name.clone(), p.ty)).collect();
    let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
    for p in &plans {
        writer.add_tensor(&p.spec.name, &p.spec.dims(), p.ty)?;
    }

    let tmp = create_temp(out, &parent)?;
    let total: u64 = plans
        .iter()
        .map(|p| p.spec.rows as u64 * p.spec.cols as u64 * 4)
        .sum();
    let bar = progress_bar(opts.progress, total);
    let mut data = writer.begin(BufWriter::with_capacity(1 << 20, tmp.as_file()))?;
    let read = |p: &Plan| -> Result<Vec<f32>> {
        let values = ckpt.read_f32(&p.source)?;
        // Conv1D weights are stored [in = cols][out = rows].
        Ok(if p.transpose {
            transpose(&values, p.spec.cols, p.spec.rows)
        } else {
            values
        })
    };
    for p in &plans {
        let (name, rows, cols) = (&p.spec.name, p.spec.rows, p.spec.cols);
        bar.set_message(name.clone());
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, _)| l.parse::<usize>().ok());
        let bytes = match (&mut calibrator, layer) {
            // A calibrated block: all its tensors at once, when its first
            // tensor comes up; the others wait in `pending`.
            (Some(cal), Some(layer)) => {
                if !pending.contains_key(name) {
                    let mut t = HashMap::new();
                    for suffix in LAYER_TENSORS {
                        let full = format!("blk.{layer}.{suffix}");
                        let plan = plans
                            .iter()
                            .find(|q| q.spec.name == full)
                            .with_context(|| format!("missing {full}"))?;
                        t.insert(suffix, read(plan)?);
                    }
                    bar.set_message(format!("calibrating blk.{layer}"));
                    let ty = |suffix: &str| types[&format!("blk.{layer}.{suffix}")];
                    let out = cal
                        .layer(layer, LayerF32 { t }, &ty)
                        .with_context(|| format!("block {layer}"))?;
                    for (suffix, bytes) in out {
                        pending.insert(format!("blk.{layer}.{suffix}"), bytes);
                    }
                }
                pending.remove(name).expect("the block was just processed")
            }
            _ => {
                let values = read(p)?;
                let imatrix = importance(opts.imatrix.as_ref(), name, cols)?;
                let bytes = quantize_rows(p.ty, &values, cols, imatrix)
                    .with_context(|| format!("tensor {name}"))?;
                if let Some(cal) = &mut calibrator {
                    match name.as_str() {
                        "token_embd.weight" => cal.set_token_embd(p.ty, &bytes),
                        "position_embd.weight" => cal.set_position_embd(&values),
                        _ => {}
                    }
                }
                bytes
            }
        };
        // As llama-quantize: never write a NaN or infinite scale or value.
        validate_row(p.ty, &bytes).with_context(|| {
            format!("tensor {name}: the checkpoint holds non-finite or out-of-range weights")
        })?;
        data.write_tensor(name, &bytes)?;
        bar.inc(rows as u64 * cols as u64 * 4);
    }
    let mut buf = data.finish()?;
    buf.flush()
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    drop(buf);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let bytes = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    // A temporary file is created private (0600); the model file is an
    // ordinary, world-readable output like any other tool's.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    }
    tmp.persist(out).map_err(|e| {
        anyhow::anyhow!(
            "cannot move the finished file to {}: {}",
            out.display(),
            e.error
        )
    })?;
    bar.finish_and_clear();
    Ok(ConvertReport {
        path: out.to_path_buf(),
        tensors: plans.len(),
        bytes,
        elapsed: start.elapsed(),
    })
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gpt2".to_string())
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta} left) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Matches the checkpoint's tensors to the GGUF layout and picks each type.
fn plan(c: &GptConfig, ckpt: &dyn Checkpoint, opts: &ConvertOptions) -> Result<Vec<Plan>> {
    let src = ckpt.source().display().to_string();
    check_sizes(c, ckpt, &src)?;
    let mut found: HashMap<String, (String, bool, Vec<usize>)> = HashMap::new();
    for t in ckpt.tensors() {
        let (gguf, transpose) = match map_name(&t.name) {
            Some(Mapping::Tensor { name, transpose }) => (name, transpose),
            Some(Mapping::LmHead) if c.tied => continue,
            Some(Mapping::LmHead) => ("output.weight".to_string(), false),
            Some(Mapping::Skip) => continue,
            None => bail!(
                "{src}: unexpected tensor '{}': not part of a GPT-2 checkpoint",
                t.name
            ),
        };
        if let Some((prev, ..)) =
            found.insert(gguf.clone(), (t.name.clone(), transpose, t.shape.clone()))
        {
            bail!(
                "{src}: tensors '{prev}' and '{}' both map to '{gguf}'",
                t.name
            );
        }
    }
    let untied = !c.tied || opts.output_weight;
    if c.tied
        && opts.output_weight
        && let Some(embd) = found.get("token_embd.weight").cloned()
    {
        found.insert("output.weight".to_string(), embd);
    }
    let mut plans = Vec::new();
    for spec in layout::gpt2_tensors(&c.hparams(), untied) {
        let (gguf, rows, cols) = (spec.name.as_str(), spec.rows, spec.cols);
        let (source, transpose, shape) = found
            .remove(gguf)
            .with_context(|| format!("{src}: missing tensor for '{gguf}'"))?;
        let want: Vec<usize> = match (spec.is_vector(), transpose) {
            (true, _) => vec![cols],
            (false, true) => vec![cols, rows],
            (false, false) => vec![rows, cols],
        };
        if shape != want {
            bail!(
                "{src}: tensor '{source}' has shape {shape:?}, but config.json implies {want:?} (n_embd {}, n_ff {}, n_ctx {}, vocab {})",
                c.n_embd,
                c.n_ff,
                c.n_ctx,
                c.n_vocab
            );
        }
        let ty = if spec.is_vector() || gguf == "position_embd.weight" {
            GgmlType::F32
        } else {
            matrix_type(opts, c, gguf, cols, untied)?
        };
        plans.push(Plan {
            spec,
            source,
            transpose,
            ty,
        });
    }
    if let Some((gguf, (source, ..))) = found.iter().min_by(|a, b| a.0.cmp(b.0)) {
        bail!(
            "{src}: tensor '{source}' ({gguf}) does not fit the shape config.json describes (n_layer {})",
            c.n_layer
        );
    }
    Ok(plans)
}

/// The stored type of the weight matrix `name` (rows of `cols` values).
fn matrix_type(
    opts: &ConvertOptions,
    c: &GptConfig,
    name: &str,
    cols: usize,
    has_output: bool,
) -> Result<GgmlType> {
    let embedding = name == "token_embd.weight" || name == "output.weight";
    if embedding && let Some(t) = opts.token_embd_type {
        return Ok(mix::fit_rows(t, cols));
    }
    Ok(match opts.out_type {
        OutType::Pure(t) => {
            let more_bits_than_q8 = matches!(
                t,
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
            );
            let t = if embedding && !more_bits_than_q8 {
                GgmlType::Q8_0
            } else {
                t
            };
            mix::fit_rows(t, cols)
        }
        OutType::Mix(ft) => mix::tensor_type(
            ft,
            &TensorSite {
                name,
                row_len: cols,
                n_layer: c.n_layer,
                has_output,
                has_imatrix: opts.imatrix.is_some(),
            },
        )?,
    })
}

/// The importance weights for tensor `name`, as llama-quantize picks them: none
/// when the matrix has no entry; an error when the entry's length is not the
/// row length, except for the token embedding (llama-imatrix never sees it).
pub(crate) fn importance<'a>(
    imatrix: Option<&'a Importance>,
    name: &str,
    cols: usize,
) -> Result<Option<&'a [f32]>> {
    let Some(w) = imatrix.and_then(|m| m.get(name)) else {
        return Ok(None);
    };
    if w.len() == cols {
        return Ok(Some(w));
    }
    if name == "token_embd.weight" {
        return Ok(None);
    }
    bail!(
        "the importance matrix has {} values for tensor {name}, whose rows have {cols}",
        w.len()
    )
}

/// Bounds config.json's sizes by the checkpoint before the layout is built
/// from them: no dimension exceeds the largest tensor's element count and no
/// more blocks than tensors, so a hostile `n_layer` or `n_embd` cannot make
/// the tensor list (12 entries per block) huge or its shapes (`3 · n_embd`)
/// overflow. The exact shapes are checked tensor by tensor afterwards.
fn check_sizes(c: &GptConfig, ckpt: &dyn Checkpoint, src: &str) -> Result<()> {
    let largest = ckpt.tensors().iter().map(|t| t.numel()).max().unwrap_or(0);
    for (key, v) in [
        ("vocab_size", c.n_vocab),
        ("n_positions", c.n_ctx),
        ("n_embd", c.n_embd),
        ("n_inner", c.n_ff),
    ] {
        if v > largest {
            bail!(
                "config.json: {key} = {v} is larger than any tensor of {src} ({largest} elements)"
            );
        }
    }
    let n_tensors = ckpt.tensors().len();
    if c.n_layer > n_tensors {
        bail!(
            "config.json: n_layer = {} blocks, but {src} holds only {n_tensors} tensors",
            c.n_layer
        );
    }
    Ok(())
}

/// A `rows × cols` matrix → its `cols × rows` transpose.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), rows * cols);
    let mut y = vec![0.0f32; x.len()];
    for (i, row) in x.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            y[j * rows + i] = v;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_in_out_to_out_in() {
        // [in=2, out=3] -> [out=3, in=2]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transpose(&x, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
