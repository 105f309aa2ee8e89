//! Random GPT-2 models of any shape, written as GGUF files: for tests,
//! benchmarks and memory work at the real sizes (124M to 1.5B) without real
//! weights. The numbers are random; the files are complete and load like
//! converted ones.

use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter};
use crate::model::HParams;
use crate::model::layout::{VocabData, gpt2_metadata, gpt2_tensors};
use crate::quant::pack_rows;

/// The shape and types of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Hyper-parameters.
    pub hparams: HParams,
    /// Type of the block matrices.
    pub ty: GgmlType,
    /// Type of the token embedding (and of `output.weight` when written).
    pub embd_ty: GgmlType,
    /// Write a separate `output.weight` (as llama.cpp's converter does).
    pub untied_output: bool,
    /// Seed of the weights.
    pub seed: u64,
}

impl SyntheticSpec {
    /// GPT-2's shapes by parameter count: "124M", "355M", "774M", "1.5B"
    /// (vocabulary 50,257, 1,024 positions).
    pub fn gpt2(size: &str, ty: GgmlType) -> Option<SyntheticSpec> {
        let (n_embd, n_layer, n_head) = match size {
            "124M" | "small" => (768, 12, 12),
            "355M" | "medium" => (1024, 24, 16),
            "774M" | "large" => (1280, 36, 20),
            "1.5B" | "1558M" | "xl" => (1600, 48, 25),
            _ => return None,
        };
        Some(SyntheticSpec::new(
            HParams {
                n_vocab: 50257,
                n_ctx: 1024,
                n_embd,
                n_ff: 4 * n_embd,
                n_layer,
                n_head,
                ln_eps: 1e-5,
            },
            ty,
        ))
    }

    /// A spec with the given shape, `ty` for the matrices and the embedding
    /// (Q8_0 for the embedding of Q4_0 models, as the converter does).
    pub fn new(hparams: HParams, ty: GgmlType) -> SyntheticSpec {
        SyntheticSpec {
            hparams,
            ty,
            embd_ty: if ty == GgmlType::Q4_0 {
                GgmlType::Q8_0
            } else {
                ty
            },
            untied_output: false,
            seed: 1,
        }
    }
}

/// SplitMix64: a tiny, fast generator, plenty for random weights.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform values in `[-a, a)` (standard deviation `a / sqrt(3)`), generated
/// in parallel with a stream per row so the result does not depend on threads.
fn random(n: usize, row: usize, a: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    v.par_chunks_mut(row.max(1))
        .enumerate()
        .for_each(|(r, chunk)| {
            let mut s = seed ^ (r as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
            for x in chunk {
                let u = (splitmix(&mut s) >> 40) as f32 / (1u64 << 24) as f32;
                *x = (2.0 * u - 1.0) * a;
            }
        });
    v
}

/// A vocabulary that the tokenizer accepts: the 256 byte tokens, then
/// padding, with `<|endoftext|>` as the last id; no merges.
fn vocab(n_vocab: usize) -> Result<VocabData> {
    if n_vocab < 257 {
        return Err(Error::InvalidArgument(
            "a synthetic model needs a vocabulary of at least 257 tokens".into(),
        ));
    }
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| crate::tokenizer::bytes::encode_spelling(&[b]))
        .collect();
    let mut types = vec![1; 256];
    for i in 256..n_vocab - 1 {
        tokens.push(format!("[PAD{i}]"));
        types.push(5);
    }
    tokens.push("<|endoftext|>".into());
    types.push(3);
    let eos = (n_vocab - 1) as u32;
    Ok(VocabData {
        tokens,
        types,
        merges: Vec::new(),
        bos: eos,
        eos,
    })
}

/// Writes a random model of `spec` to `path`, one tensor at a time.
pub fn write_synthetic(path: &Path, spec: &SyntheticSpec) -> Result<()> {
    let hp = &spec.hparams;
    let v = vocab(hp.n_vocab)?;
    let mut w = GgufWriter::new(crate::gguf::DEFAULT_ALIGNMENT)?;
    let meta = gpt2_metadata(hp, spec.ty, "synthetic", &v).ok_or_else(|| {
        Error::InvalidArgument(format!("cannot write metadata for {:?}", spec.ty))
    })?;
    for (k, val) in meta {
        w.add_metadata(&k, val)?;
    }
    let tensors = gpt2_tensors(hp, spec.untied_output);
    let type_of = |name: &str, vector: bool| {
        if vector || name == "position_embd.weight" {
            GgmlType::F32
        } else if name == "token_embd.weight" || name == "output.weight" {
            spec.embd_ty
        } else {
            spec.ty
        }
    };
    for t in &tensors {
        w.add_tensor(&t.name, &t.dims(), type_of(&t.name, t.is_vector()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut data = w.begin(BufWriter::with_capacity(1 << 20, file))?;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.rows * t.cols;
        let seed = spec.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ i as u64;
        // Scales like a trained GPT-2: small weights, unit norms, small biases.
        let values = if t.name.ends_with("norm.weight") {
            random(n, t.cols, 0.1, seed)
                .into_iter()
                .map(|x| x + 1.0)
                .collect()
        } else if t.is_vector() {
            random(n, t.cols, 0.02, seed)
        } else {
            random(n, t.cols, 0.035, seed)
        };
        let bytes = pack_rows(type_of(&t.name, t.is_vector()), &values, t.cols)?;
        data.write_tensor(&t.name, &bytes)?;
    }
    let mut out = data.finish()?;
    out.flush().map_err(|e| Error::io(path, e))?;
    Ok(())
}
