//! Readers for the weights of a Hugging Face model folder: `model.safetensors`,
//! PyTorch's `pytorch_model.bin` (the zip format of torch >= 1.6 and the legacy
//! format before it), and their sharded forms (`*.index.json`).
//!
//! Every reader maps its file and parses only the headers when it opens; the
//! elements of one tensor are materialised (as f32) only when asked for, so
//! converting a model never needs memory near the size of its checkpoint.

mod elements;
mod mmap;
mod pickle;
mod pytorch;
mod pytorch_legacy;
mod safetensors;
mod sharded;

use std::fmt;
use std::path::Path;

use anyhow::bail;

pub use self::pytorch::PytorchFile;
pub use self::safetensors::SafetensorsFile;
pub use self::sharded::ShardedCheckpoint;

/// The element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// IEEE 754 double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 64-bit integer.
    U64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte per element.
    Bool,
    /// Any other type a file can declare (FP8 variants, complex, ...), by the file's name for it.
    Other(&'static str),
}

impl DType {
    /// Bytes per element, when the type has a whole-byte element size this crate knows.
    pub fn size_in_bytes(self) -> Option<usize> {
        match self {
            DType::F64 | DType::I64 | DType::U64 => Some(8),
            DType::F32 | DType::I32 | DType::U32 => Some(4),
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => Some(2),
            DType::I8 | DType::U8 | DType::Bool => Some(1),
            DType::Other(_) => None,
        }
    }

    /// Whether [`Checkpoint::read_f32`] can convert elements of this type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// The type's short name ("F32", "BF16", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
            DType::Other(name) => name,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Name, element type and shape of one tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// The tensor's key in the file (for example `transformer.h.0.attn.c_attn.weight`).
    pub name: String,
    /// The stored element type.
    pub dtype: DType,
    /// Dimensions, outermost first (PyTorch order); empty for a scalar.
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Number of elements (the product of the dimensions; 1 for a scalar). The
    /// readers only list shapes whose product fits; others saturate at `usize::MAX`.
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

/// One opened checkpoint (mapped, not read into memory).
pub trait Checkpoint: Send + Sync {
    /// Every tensor in the file, in a stable order (the file's order).
    fn tensors(&self) -> &[TensorMeta];

    /// The tensor's elements converted to f32, row-major (C order), whatever its
    /// stored dtype (F32/F16/BF16/F64; other dtypes are an error naming the tensor)
    /// and strides.
    fn read_f32(&self, name: &str) -> anyhow::Result<Vec<f32>>;

    /// The weights file (for messages and metadata); the index file of a sharded checkpoint.
    fn source(&self) -> &Path;

    /// The metadata of the tensor called `name`, if the checkpoint has one.
    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors().iter().find(|t| t.name == name)
    }
}

/// The files [`open_checkpoint`] looks for, in order of preference.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Opens the weights of a HF folder: `model.safetensors`, else
/// `model.safetensors.index.json` (sharded), else `pytorch_model.bin`, else
/// `pytorch_model.bin.index.json` (sharded); an error lists what was looked for.
pub fn open_checkpoint(dir: &Path) -> anyhow::Result<Box<dyn Checkpoint>> {
    if !dir.is_dir() {
        bail!(
            "{}: not a directory (expected a Hugging Face model folder)",
            dir.display()
        );
    }
    let Some(file) = WEIGHT_FILES.iter().find(|f| dir.join(f).is_file()) else {
        bail!(
            "{}: no model weights found; looked for {}",
            dir.display(),
            WEIGHT_FILES.join(", ")
        );
    };
    let path = dir.join(file);
    let checkpoint: Box<dyn Checkpoint> = match *file {
        "model.safetensors" => Box::new(SafetensorsFile::open(&path)?),
        "pytorch_model.bin" => Box::new(PytorchFile::open(&path)?),
        _ => Box::new(ShardedCheckpoint::open(&path)?),
    };
    Ok(checkpoint)
}

/// Opens one weights file, choosing the reader by its extension
/// (`.safetensors`, else PyTorch's format).
pub fn open_weights_file(path: &Path) -> anyhow::Result<Box<dyn Checkpoint>> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let checkpoint: Box<dyn Checkpoint> = if is_safetensors {
        Box::new(SafetensorsFile::open(path)?)
    } else {
        Box::new(PytorchFile::open(path)?)
    };
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_sizes_and_names() {
        assert_eq!(DType::BF16.size_in_bytes(), Some(2));
        assert_eq!(DType::F64.size_in_bytes(), Some(8));
        assert_eq!(DType::Other("F8_E4M3").size_in_bytes(), None);
        assert_eq!(DType::Bool.to_string(), "BOOL");
        assert!(DType::F16.is_float());
        assert!(!DType::I64.is_float());
    }

    #[test]
    fn numel_saturates() {
        let meta = |shape: Vec<usize>| TensorMeta {
            name: "t".into(),
            dtype: DType::F32,
            shape,
        };
        assert_eq!(meta(vec![]).numel(), 1);
        assert_eq!(meta(vec![3, 4]).numel(), 12);
        assert_eq!(meta(vec![usize::MAX, 2]).numel(), usize::MAX);
    }
}
