//! `gptq-convert`: a Hugging Face GPT-2 folder → one GGUF v3 file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use gptq_convert::gptq::layerwise::CalibOptions;
use gptq_convert::{Calibration, ConvertOptions, ImatrixSource, Importance, OutType, convert};
use gptq_core::gguf::{FileType, GgmlType};
use gptq_core::imatrix::Imatrix;

/// How the block matrices are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Round to nearest (llama-quantize's quantizers).
    Rtn,
    /// GPTQ error compensation on a calibration text (--calib).
    Gptq,
}

/// The names `--type` accepts: ggml's tensor types, and llama-quantize's mixes
/// whose names are not also a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[allow(non_camel_case_types)]
enum TypeName {
    #[value(name = "f32")]
    F32,
    #[value(name = "f16")]
    F16,
    #[value(name = "bf16")]
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    #[value(name = "q5_0")]
    Q5_0,
    #[value(name = "q5_1")]
    Q5_1,
    #[value(name = "q2_k")]
    Q2_K,
    #[value(name = "q3_k")]
    Q3_K,
    #[value(name = "q4_k")]
    Q4_K,
    #[value(name = "q5_k")]
    Q5_K,
    #[value(name = "q6_k")]
    Q6_K,
    #[value(name = "iq4_nl")]
    Iq4_nl,
    #[value(name = "iq4_xs")]
    Iq4_xs,
    #[value(name = "q3_k_s")]
    Q3_K_S,
    #[value(name = "q3_k_m")]
    Q3_K_M,
    #[value(name = "q3_k_l")]
    Q3_K_L,
    #[value(name = "q4_k_s")]
    Q4_K_S,
    #[value(name = "q4_k_m")]
    Q4_K_M,
    #[value(name = "q5_k_s")]
    Q5_K_S,
    #[value(name = "q5_k_m")]
    Q5_K_M,
}

impl TypeName {
    /// The llama-quantize name (`Q4_K_M`, `IQ4_XS`, ...).
    fn upper(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// The tensor type of that name, unless the name is only a mix's.
    fn tensor_type(self) -> Option<GgmlType> {
        GgmlType::from_name(&self.upper())
    }

    /// What the name asks for, with or without `--mix`.
    fn out_type(self, mix: bool) -> Result<OutType, String> {
        match (self.tensor_type(), mix) {
            (Some(t), false) => Ok(OutType::Pure(t)),
            (Some(t), true) => match FileType::for_type(t) {
                Some(ft) if gptq_convert::quantize::mix::main_type(ft).is_ok() => {
                    Ok(OutType::Mix(ft))
                }
                _ => Err(format!(
                    "--mix: llama-quantize has no mix for {}; its files are {} throughout",
                    self.upper().to_ascii_lowercase(),
                    t
                )),
            },
            (None, false) => FileType::from_name(&self.upper())
                .map(OutType::Mix)
                .ok_or_else(|| format!("unknown type {}", self.upper())),
            (None, true) => Err(format!(
                "--mix: {} is already llama-quantize's mix; drop --mix",
                self.upper().to_ascii_lowercase()
            )),
        }
    }
}

/// Convert a Hugging Face GPT-2 checkpoint (124M to 1.5B) into one GGUF v3 file.
///
/// `--type` names either one tensor type for every weight matrix (a "pure"
/// file: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl
/// iq4_xs), or one of llama-quantize's mixes (q3_k_s q3_k_m q3_k_l q4_k_s
/// q4_k_m q5_k_s q5_k_m), which give some tensors more bits exactly as
/// llama-quantize does. `--mix` asks for llama-quantize's mix of a type name
/// (`--type q2_k --mix`, `--type q6_k --mix`, `--type q4_0 --mix`, ...): the
/// same file llama-quantize makes from an F32 file with that type argument.
///
/// Quality: `--imatrix FILE` (llama-imatrix's .dat or `gptq imatrix`'s)
/// weights the quantizers' scale searches as `llama-quantize --imatrix` does;
/// `--method gptq --calib TEXT` compensates rounding errors (GPTQ) and
/// `--awq --calib TEXT` folds activation-aware scales into the LayerNorms.
/// They combine; the files stay standard ggml blocks of the same types.
#[derive(Debug, Parser)]
#[command(name = "gptq-convert", version)]
struct Args {
    /// Folder with config.json, model.safetensors or pytorch_model.bin, and
    /// vocab.json + merges.txt or tokenizer.json.
    hf_dir: PathBuf,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the weight matrices (a tensor type), or a llama-quantize mix.
    #[arg(short = 't', long = "type", value_enum, default_value = "f16")]
    ty: TypeName,
    /// Use llama-quantize's per-tensor mix for --type (output.weight Q6_K,
    /// bumped attention and ffn_down layers, llama.cpp's fallbacks).
    #[arg(long)]
    mix: bool,
    /// Type of the token embedding / tied LM head (default: q8_0 when the
    /// matrices have fewer bits than q8_0, else the matrices' type; for a mix,
    /// llama-quantize's choice).
    #[arg(long, value_enum)]
    token_embd_type: Option<TypeName>,
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
    /// Quantization method of the block matrices.
    #[arg(long, value_enum, default_value = "rtn")]
    method: Method,
    /// Calibration text (for --method gptq and --awq). Never evaluate on it.
    #[arg(long, value_name = "TEXT")]
    calib: Option<PathBuf>,
    /// Calibration tokens to use (whole sequences of up to 256 positions).
    #[arg(long, value_name = "N", default_value_t = 8192)]
    calib_tokens: usize,
    /// GPTQ: quantize input features by decreasing activation (act-order).
    #[arg(long)]
    act_order: bool,
    /// GPTQ: damping, a fraction of the Hessian's mean diagonal.
    #[arg(long, value_name = "F", default_value_t = 0.01)]
    damp: f64,
    /// Activation-aware scaling folded into the preceding LayerNorm and
    /// value projection before quantizing (needs --calib).
    #[arg(long)]
    awq: bool,
    /// Importance matrix (llama-imatrix's .dat, or `gptq imatrix`'s) for the
    /// quantizers' scale searches, as llama-quantize's --imatrix.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
}

/// Types whose quantizers take no importance weights (as in ggml).
const UNWEIGHTED: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0];

impl Args {
    /// The calibration and importance options, with flags that would do
    /// nothing refused.
    fn methods(
        &self,
        out_type: OutType,
    ) -> Result<(
        Option<Calibration>,
        Option<Importance>,
        Option<ImatrixSource>,
    )> {
        let quantized = !matches!(
            out_type,
            OutType::Pure(GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
        );
        let gptq = self.method == Method::Gptq;
        if (gptq || self.awq) && !quantized {
            bail!(
                "--method gptq and --awq quantize: choose a quantized --type (q4_0, q4_k_m, q8_0, ...)"
            );
        }
        if self.act_order && !gptq {
            bail!("--act-order is a GPTQ option: add --method gptq");
        }
        if !(self.damp > 0.0 && self.damp < 10.0) {
            bail!(
                "--damp {}: use a small positive fraction such as 0.01",
                self.damp
            );
        }
        let calibrated = gptq || self.awq;
        let calibration = match (&self.calib, calibrated) {
            (Some(text), true) => Some(Calibration {
                text: text.clone(),
                options: CalibOptions {
                    gptq,
                    awq: self.awq,
                    act_order: self.act_order,
                    damp: self.damp,
                    tokens: self.calib_tokens,
                    ..CalibOptions::default()
                },
            }),
            (None, true) => bail!("--method gptq and --awq need a calibration text: --calib FILE"),
            (Some(_), false) => bail!("--calib is used by --method gptq or --awq; add one of them"),
            (None, false) => None,
        };
        let Some(path) = &self.imatrix else {
            return Ok((calibration, None, None));
        };
        if let OutType::Pure(t) = out_type
            && UNWEIGHTED.contains(&t)
        {
            bail!(
                "--imatrix: {} takes no importance weights (neither in llama-quantize); drop --imatrix",
                t.name().to_ascii_lowercase()
            );
        }
        let m = Imatrix::read(path).with_context(|| format!("--imatrix {}", path.display()))?;
        let importance: Importance = m
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.importance()))
            .collect();
        let source = ImatrixSource {
            file: path.display().to_string(),
            dataset: m.dataset.clone(),
            entries: m.entries.len(),
            chunks: m.chunks,
        };
        Ok((calibration, Some(importance), Some(source)))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let out_type = match args.ty.out_type(args.mix) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let token_embd_type = match args.token_embd_type.map(|t| (t, t.tensor_type())) {
        None => None,
        Some((_, Some(t))) => Some(t),
        Some((t, None)) => {
            return fail(&format!(
                "--token-embd-type: {} is a mix, not a tensor type",
                t.upper().to_ascii_lowercase()
            ));
        }
    };
    let (calibration, imatrix, imatrix_source) = match args.methods(out_type) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e:#}")),
    };
    let opts = ConvertOptions {
        out_type,
        token_embd_type,
        imatrix,
        imatrix_source,
        calibration,
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
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("gptq-convert: error: {msg}");
    ExitCode::FAILURE
}
