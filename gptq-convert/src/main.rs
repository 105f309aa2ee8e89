//! `gptq-convert`: a Hugging Face GPT-2 folder → one GGUF v3 file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use gptq_convert::{ConvertOptions, convert};
use gptq_core::gguf::GgmlType;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<OutType> for GgmlType {
    fn from(t: OutType) -> GgmlType {
        match t {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Q8_0 => GgmlType::Q8_0,
            OutType::Q4_0 => GgmlType::Q4_0,
        }
    }
}

/// Convert a Hugging Face GPT-2 checkpoint (124M to 1.5B) into one GGUF v3 file.
#[derive(Debug, Parser)]
#[command(name = "gptq-convert", version)]
struct Args {
    /// Folder with config.json, model.safetensors or pytorch_model.bin, and
    /// vocab.json + merges.txt or tokenizer.json.
    hf_dir: PathBuf,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the weight matrices.
    #[arg(short = 't', long = "type", value_enum, default_value = "f16")]
    ty: OutType,
    /// Type of the token embedding / tied LM head (default: the matrices' type,
    /// q8_0 for q4_0 files).
    #[arg(long, value_enum)]
    token_embd_type: Option<OutType>,
    /// general.name (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Also write the LM head as a separate output.weight (a copy of the tied
    /// token embedding), as llama.cpp's converter does; llama.cpp needs it to
    /// load GPT-2 files.
    #[arg(long)]
    output_weight: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = ConvertOptions {
        out_type: args.ty.into(),
        token_embd_type: args.token_embd_type.map(Into::into),
        name: args.name,
        progress: !args.quiet,
        output_weight: args.output_weight,
    };
    match convert(&args.hf_dir, &args.output, &opts) {
        Ok(r) => {
            if !args.quiet {
                eprintln!(
                    "wrote {} ({} tensors, {:.1} MiB) in {:.2} s",
                    r.path.display(),
                    r.tensors,
                    r.bytes as f64 / (1024.0 * 1024.0),
                    r.elapsed.as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gptq-convert: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
