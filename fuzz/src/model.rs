//! A tiny GPT-2 GGUF file built from fuzzer input: hyper-parameters, tensor
//! types, shapes, metadata and weights are all chosen by the input, and then
//! the finished bytes may be patched or cut, so that the loader sees files
//! that are valid, subtly inconsistent, or broken at any byte.

use arbitrary::Arbitrary;
use gptq_core::HParams;
use gptq_core::gguf::{GgmlType, GgufWriter, MetaArray, MetaValue};
use gptq_core::model::layout::{TensorSpec, VocabData, gpt2_metadata, gpt2_tensors};
use gptq_core::quant::pack_rows;

use crate::vocab::VocabSpec;

/// Largest dimensions a generated model gets: big enough for two Q8_0/Q4_0
/// blocks per row, small enough for thousands of loads a second.
const MAX_EMBD: usize = 64;
const MAX_FF: usize = 96;
const MAX_CTX: usize = 12;
const MAX_LAYERS: usize = 3;
/// Distinct weight rows per generated tensor (the rest repeat them).
const DISTINCT_ROWS: usize = 4;

/// A tensor type as the input chooses it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum TypeChoice {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// ggml Q8_0 blocks.
    Q8_0,
    /// ggml Q4_0 blocks.
    Q4_0,
    /// Any ggml type id (most are not computable: the loader must say so).
    Id(u8),
}

impl TypeChoice {
    fn ggml(self) -> GgmlType {
        match self {
            TypeChoice::F32 => GgmlType::F32,
            TypeChoice::F16 => GgmlType::F16,
            TypeChoice::Q8_0 => GgmlType::Q8_0,
            TypeChoice::Q4_0 => GgmlType::Q4_0,
            TypeChoice::Id(id) => GgmlType::from_id(id.into()).unwrap_or(GgmlType::F32),
        }
    }
}

/// How the weights look.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Weights {
    /// Uniform in `[-a, a)` with `a = 2^(e/8 - 8)`: tiny to huge.
    Uniform(u8),
    /// Every value the same bit pattern (NaN, infinities, subnormals, ...).
    Constant(u32),
}

/// A metadata value the input may put under any key.
#[derive(Arbitrary, Debug, Clone)]
pub enum MetaChoice {
    /// A `u32`.
    U32(u32),
    /// A `u64`.
    U64(u64),
    /// An `i32`.
    I32(i32),
    /// An `f32`.
    F32(f32),
    /// A string.
    Str(String),
    /// An array of strings.
    Strings(Vec<String>),
    /// An array of `i32`.
    I32s(Vec<i32>),
    /// A bool.
    Bool(bool),
}

impl MetaChoice {
    fn value(&self) -> MetaValue {
        match self {
            MetaChoice::U32(v) => MetaValue::U32(*v),
            MetaChoice::U64(v) => MetaValue::U64(*v),
            MetaChoice::I32(v) => MetaValue::I32(*v),
            MetaChoice::F32(v) => MetaValue::F32(*v),
            MetaChoice::Str(s) => MetaValue::String(s.clone()),
            MetaChoice::Strings(v) => MetaValue::Array(MetaArray::String(v.clone())),
            MetaChoice::I32s(v) => MetaValue::Array(MetaArray::I32(v.clone())),
            MetaChoice::Bool(b) => MetaValue::Bool(*b),
        }
    }
}

/// A change to the metadata GPT-2 needs.
#[derive(Arbitrary, Debug, Clone)]
pub enum MetaEdit {
    /// Leave out the entry at this index (modulo the entries).
    Remove(u8),
    /// Replace the value of the entry at this index.
    Set(u8, MetaChoice),
    /// Add an entry (keys that already exist are skipped).
    Add(String, MetaChoice),
}

/// A change to the tensors GPT-2 needs.
#[derive(Arbitrary, Debug, Clone)]
pub enum TensorEdit {
    /// Leave out the tensor at this index (modulo the tensors).
    Remove(u8),
    /// Give the tensor at this index another shape (columns, rows; 0 reads as 1).
    Dims(u8, [u8; 3]),
    /// Give it another type.
    Type(u8, TypeChoice),
    /// Add a tensor with this name.
    Add(String, u8),
}

/// Everything a generated model is made of.
#[derive(Arbitrary, Debug, Clone)]
pub struct ModelSpec {
    /// Shape choices, reduced into small ranges.
    pub n_embd: u8,
    /// Attention heads (may not divide `n_embd`).
    pub n_head: u8,
    /// Blocks.
    pub n_layer: u8,
    /// MLP width.
    pub n_ff: u8,
    /// Positions.
    pub n_ctx: u8,
    /// Types of the token embedding, the position embedding and the four
    /// block matrices.
    pub types: [TypeChoice; 6],
    /// Type of the norms and biases.
    pub vector_type: TypeChoice,
    /// Write a separate `output.weight`.
    pub untied: bool,
    /// LayerNorm epsilon.
    pub ln_eps: f32,
    /// The weights' values.
    pub weights: Weights,
    /// Seed of the weights.
    pub seed: u64,
    /// The vocabulary.
    pub vocab: VocabSpec,
    /// Metadata changes.
    pub meta_edits: Vec<MetaEdit>,
    /// Tensor changes.
    pub tensor_edits: Vec<TensorEdit>,
    /// Data alignment `2^(5 + a % 4)`.
    pub alignment: u8,
    /// Bytes to overwrite in the finished file: `(position modulo the length, value)`.
    pub patches: Vec<(u32, u8)>,
    /// Cut the finished file to this length (modulo its length), if given.
    pub truncate: Option<u32>,
}

/// Most edits and patches applied, so one input stays cheap.
const MAX_EDITS: usize = 6;

impl ModelSpec {
    /// The hyper-parameters the spec describes.
    pub fn hparams(&self, n_vocab: usize) -> HParams {
        HParams {
            n_vocab,
            n_ctx: 1 + self.n_ctx as usize % MAX_CTX,
            n_embd: 1 + self.n_embd as usize % MAX_EMBD,
            n_ff: 1 + self.n_ff as usize % MAX_FF,
            n_layer: self.n_layer as usize % (MAX_LAYERS + 1),
            n_head: 1 + self.n_head as usize % 8,
            ln_eps: self.ln_eps,
        }
    }

    /// The GGUF file's bytes, or `None` when the writer refuses the spec (a
    /// combination it cannot write, which the reader then never sees).
    pub fn build(&self) -> Option<Vec<u8>> {
        let v = self.vocab.build();
        let hp = self.hparams(v.tokens.len());
        let vocab = VocabData {
            tokens: v.tokens,
            types: v.types,
            merges: v.merges,
            bos: v.eos.unwrap_or(0),
            eos: v.eos.unwrap_or(0),
        };
        let mut meta = gpt2_metadata(&hp, GgmlType::F32, "fuzz", &vocab)?;
        if v.eos.is_none() {
            meta.retain(|(k, _)| !k.ends_with("_token_id"));
        }
        self.edit_metadata(&mut meta);

        let mut tensors: Vec<(TensorSpec, GgmlType)> = gpt2_tensors(&hp, self.untied)
            .into_iter()
            .map(|t| {
                let ty = self.type_of(&t);
                (t, ty)
            })
            .collect();
        self.edit_tensors(&mut tensors);

        let alignment = 32u64 << (self.alignment % 4);
        let mut w = GgufWriter::new(alignment).ok()?;
        for (k, val) in meta {
            w.add_metadata(&k, val).ok()?;
        }
        let mut data: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, (t, ty)) in tensors.iter().enumerate() {
            let Some(bytes) = self.tensor_bytes(t, *ty, i as u64) else {
                continue;
            };
            if w.add_tensor(&t.name, &t.dims(), *ty).is_ok() {
                data.push((t.name.clone(), bytes));
            }
        }
        let mut out = w.begin(Vec::new()).ok()?;
        for (name, bytes) in &data {
            out.write_tensor(name, bytes).ok()?;
        }
        let mut bytes = out.finish().ok()?;
        self.damage(&mut bytes);
        Some(bytes)
    }

    fn type_of(&self, t: &TensorSpec) -> GgmlType {
        let pick = |i: usize| self.types[i].ggml();
        let ty = if t.is_vector() {
            self.vector_type.ggml()
        } else if t.name == "token_embd.weight" || t.name == "output.weight" {
            pick(0)
        } else if t.name == "position_embd.weight" {
            pick(1)
        } else if t.name.ends_with("attn_qkv.weight") {
            pick(2)
        } else if t.name.ends_with("attn_output.weight") {
            pick(3)
        } else if t.name.ends_with("ffn_up.weight") {
            pick(4)
        } else {
            pick(5)
        };
        // Rows that are not whole blocks cannot be written in that type.
        if t.cols.is_multiple_of(ty.block_size()) {
            ty
        } else {
            GgmlType::F32
        }
    }

    fn edit_metadata(&self, meta: &mut Vec<(String, MetaValue)>) {
        for edit in self.meta_edits.iter().take(MAX_EDITS) {
            let n = meta.len();
            match edit {
                MetaEdit::Remove(i) if n > 0 => {
                    meta.remove(*i as usize % n);
                }
                MetaEdit::Set(i, v) if n > 0 => meta[*i as usize % n].1 = v.value(),
                MetaEdit::Add(key, v) if !meta.iter().any(|(k, _)| k == key) => {
                    meta.push((key.clone(), v.value()));
                }
                _ => {}
            }
        }
    }

    fn edit_tensors(&self, tensors: &mut Vec<(TensorSpec, GgmlType)>) {
        for edit in self.tensor_edits.iter().take(MAX_EDITS) {
            let n = tensors.len();
            match edit {
                TensorEdit::Remove(i) if n > 0 => {
                    tensors.remove(*i as usize % n);
                }
                TensorEdit::Dims(i, dims) if n > 0 => {
                    let t = &mut tensors[*i as usize % n].0;
                    let [cols, rows, _] = dims.map(usize::from);
                    t.cols = cols.max(1);
                    t.rows = rows.max(1);
                }
                TensorEdit::Type(i, ty) if n > 0 => {
                    let (t, old) = &mut tensors[*i as usize % n];
                    let ty = ty.ggml();
                    if t.cols.is_multiple_of(ty.block_size()) {
                        *old = ty;
                    }
                }
                TensorEdit::Add(name, cols) => {
                    let spec = gpt2_tensors(&self.hparams(1), false)
                        .into_iter()
                        .find(|t| t.is_vector());
                    if let Some(mut spec) = spec {
                        spec.name = name.clone();
                        spec.cols = (*cols).max(1).into();
                        tensors.push((spec, GgmlType::F32));
                    }
                }
                _ => {}
            }
        }
    }

    /// The packed data of one tensor, or `None` when its type cannot be packed.
    fn tensor_bytes(&self, t: &TensorSpec, ty: GgmlType, index: u64) -> Option<Vec<u8>> {
        let n = t.rows.checked_mul(t.cols)?;
        // A reshaped tensor can ask for up to 255^3 values; a quarter of a
        // million keeps every input to milliseconds (the loader's handling of
        // big tensors is the same code at any size).
        if n > 1 << 18 {
            return None;
        }
        let mut state = self.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Up to four distinct rows, packed once and repeated: packing every
        // row through the (instrumented) quantizer took most of each
        // execution, and the loader and the kernels see the same bytes
        // whatever the rows hold.
        let distinct = t.rows.min(DISTINCT_ROWS);
        let m = distinct * t.cols;
        let values: Vec<f32> = match self.weights {
            Weights::Uniform(e) => {
                let a = (f32::from(e) / 8.0 - 8.0).exp2();
                (0..m)
                    .map(|_| ((next(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * a)
                    .collect()
            }
            Weights::Constant(bits) => vec![f32::from_bits(bits); m],
        };
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0 => {
                let packed = pack_rows(ty, &values, t.cols).ok()?;
                if distinct == 0 {
                    return Some(packed);
                }
                let row_len = packed.len() / distinct;
                Some(
                    packed
                        .chunks_exact(row_len.max(1))
                        .cycle()
                        .take(t.rows)
                        .flatten()
                        .copied()
                        .collect(),
                )
            }
            // Every other type: random bytes of the right size (any scale
            // bits, NaN and infinities included: the loader and the kernels
            // must give defined results on them).
            _ => {
                let len = ty.row_bytes(t.cols as u64)? as usize * t.rows;
                Some((0..len).map(|_| next(&mut state) as u8).collect())
            }
        }
    }

    /// Applies the byte patches and the truncation.
    fn damage(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        for &(at, value) in self.patches.iter().take(MAX_EDITS) {
            let at = at as usize % bytes.len();
            bytes[at] = value;
        }
        if let Some(len) = self.truncate {
            bytes.truncate(len as usize % bytes.len());
        }
    }
}

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
