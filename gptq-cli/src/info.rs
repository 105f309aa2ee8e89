//! `gptq info`: a GGUF file's metadata and tensors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gptq_core::gguf::{FileType, GgufFile, MappedFile, MetaArray, MetaValue};
use gptq_core::{Kernels, Model};

/// Flags of `gptq info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// GGUF file (default: the model in models/).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Also the model flag, for symmetry with the other subcommands.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "FILE",
        conflicts_with = "file"
    )]
    pub model: Option<PathBuf>,
    /// Print arrays in full.
    #[arg(long)]
    pub full: bool,
}

/// Runs `gptq info`.
pub fn run(args: &InfoArgs) -> Result<()> {
    // Written with `?`, not println!, so a closed pipe (`| head`) ends the
    // command quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    let path = crate::model_path::resolve(args.file.as_deref().or(args.model.as_deref()))?;
    let file = MappedFile::open(&path)?;
    let gguf = GgufFile::parse(file.bytes()).with_context(|| format!("{}", path.display()))?;
    writeln!(out, "file: {}", path.display())?;
    writeln!(
        out,
        "GGUF v{}, {} bytes, alignment {}, data at byte {}",
        gguf.version,
        file.bytes().len(),
        gguf.alignment,
        gguf.data_offset
    )?;
    if let Some(ft) = gguf
        .get("general.file_type")
        .and_then(MetaValue::as_u64)
        .and_then(|v| u32::try_from(v).ok())
    {
        writeln!(out, "file type: {} (general.file_type {ft})", FileType(ft))?;
    }
    writeln!(out, "metadata ({} keys):", gguf.metadata.len())?;
    for (k, v) in &gguf.metadata {
        writeln!(out, "  {k} = {}", show(v, args.full))?;
    }
    writeln!(out, "tensors ({}):", gguf.tensors.len())?;
    let width = gguf.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut total = 0u64;
    for t in &gguf.tensors {
        total += t.n_bytes;
        writeln!(
            out,
            "  {:<width$}  {:<6} {:<16} {:>12} bytes  @ {}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.n_bytes,
            t.offset
        )?;
    }
    writeln!(
        out,
        "tensor data: {total} bytes ({:.1} MiB); types: {}",
        total as f64 / (1024.0 * 1024.0),
        type_counts(&gguf)
    )?;
    match Kernels::from_env() {
        Ok(k) => writeln!(out, "kernel path: {}", k.describe()),
        Err(e) => writeln!(out, "kernel path: {e}"),
    }?;
    match Model::load(&path) {
        Ok(m) => writeln!(
            out,
            "model: loads; {:.1} MB of weights read per decoded token",
            m.weight_bytes_per_token() as f64 / 1e6
        ),
        Err(e) => writeln!(out, "model: does not load: {e}"),
    }?;
    Ok(())
}

/// "12 × Q4_K, 2 × Q6_K, ...": how many tensors of each type, most common first.
fn type_counts(gguf: &GgufFile) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in &gguf.tensors {
        match counts.iter_mut().find(|c| c.0 == t.ty.name()) {
            Some(c) => c.1 += 1,
            None => counts.push((t.ty.name(), 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(name, n)| format!("{n} × {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: &MetaValue, full: bool) -> String {
    match v {
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::Array(a) => show_array(a, full),
        MetaValue::F32(x) => format!("{x}"),
        MetaValue::F64(x) => format!("{x}"),
        MetaValue::Bool(b) => format!("{b}"),
        other => other
            .as_u64()
            .map_or_else(|| format!("{other:?}"), |n| n.to_string()),
    }
}

fn show_array(a: &MetaArray, full: bool) -> String {
    const HEAD: usize = 8;
    let items: Vec<String> = match a {
        MetaArray::String(v) => v.iter().map(|s| format!("{s:?}")).collect(),
        MetaArray::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::U32(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::F32(v) => v.iter().map(|x| x.to_string()).collect(),
        other => vec![format!("{:?} x {}", other.elem_type(), other.len())],
    };
    let n = a.len();
    if full || n <= HEAD {
        format!("[{}]", items.join(", "))
    } else {
        format!(
            "[{}, ... ({n} items)]",
            items[..HEAD.min(items.len())].join(", ")
        )
    }
}
