//! `*.safetensors` files: a JSON header, then every tensor contiguous, little-endian.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use safetensors::{Dtype, SafeTensors};

use super::elements::{Endian, contiguous_to_f32};
use super::mmap::{FileBytes, map_file, release};
use super::{Checkpoint, DType, TensorMeta};

/// One mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: FileBytes,
    tensors: Vec<TensorMeta>,
    /// Byte range of each tensor's data in the mapping, parallel to `tensors`.
    ranges: Vec<Range<usize>>,
    by_name: HashMap<String, usize>,
}

impl SafetensorsFile {
    /// Maps the file and parses its header (the `safetensors` crate checks that
    /// every tensor's byte range matches its shape and lies within the file).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::from_file_bytes(path, map_file(path)?)
    }

    /// Parses a safetensors file held in memory; `path` names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> anyhow::Result<Self> {
        Self::from_file_bytes(path, FileBytes::Owned(bytes))
    }

    fn from_file_bytes(path: &Path, map: FileBytes) -> anyhow::Result<Self> {
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        // The data section starts after the 8-byte length and the JSON header.
        let data_start = header_len
            .checked_add(8)
            .with_context(|| format!("{}: header length overflows", path.display()))?;

        let names = metadata.offset_keys();
        let mut tensors = Vec::with_capacity(names.len());
        let mut ranges = Vec::with_capacity(names.len());
        let mut by_name = HashMap::with_capacity(names.len());
        for name in names {
            let info = metadata.info(&name).with_context(|| {
                format!(
                    "{}: tensor '{name}' listed without metadata",
                    path.display()
                )
            })?;
            let (begin, end) = info.data_offsets;
            let range = data_start
                .checked_add(begin)
                .zip(data_start.checked_add(end))
                .map(|(b, e)| b..e)
                .filter(|r| r.start <= r.end && r.end <= map.len())
                .with_context(|| {
                    format!(
                        "{}: tensor '{name}': data offsets {begin}..{end} lie outside the file",
                        path.display()
                    )
                })?;
            by_name.insert(name.clone(), tensors.len());
            tensors.push(TensorMeta {
                name,
                dtype: dtype_from_safetensors(info.dtype),
                shape: info.shape.clone(),
            });
            ranges.push(range);
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            tensors,
            ranges,
            by_name,
        })
    }
}

/// Our name for a safetensors element type.
fn dtype_from_safetensors(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U16 => DType::U16,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        Dtype::F8_E5M2 => DType::Other("F8_E5M2"),
        Dtype::F8_E4M3 => DType::Other("F8_E4M3"),
        Dtype::F8_E8M0 => DType::Other("F8_E8M0"),
        Dtype::F8_E4M3FNUZ => DType::Other("F8_E4M3FNUZ"),
        Dtype::F8_E5M2FNUZ => DType::Other("F8_E5M2FNUZ"),
        Dtype::F6_E2M3 => DType::Other("F6_E2M3"),
        Dtype::F6_E3M2 => DType::Other("F6_E3M2"),
        Dtype::F4 => DType::Other("F4"),
        Dtype::C64 => DType::Other("C64"),
        _ => DType::Other("unknown"),
    }
}

impl Checkpoint for SafetensorsFile {
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> anyhow::Result<Vec<f32>> {
        let file = self.path.display();
        let &i = self
            .by_name
            .get(name)
            .with_context(|| format!("{file}: no tensor named '{name}'"))?;
        let (meta, range) = (&self.tensors[i], &self.ranges[i]);
        let bytes = self.map.get(range.clone()).with_context(|| {
            format!("{file}: tensor '{name}': bytes {range:?} lie outside the file")
        })?;
        let values = contiguous_to_f32(bytes, meta.dtype, Endian::Little).map_err(|e| {
            anyhow!(
                "{file}: {} (byte offset {})",
                e.describe(name, meta.dtype),
                range.start
            )
        })?;
        release(&self.map, range.clone());
        Ok(values)
    }

    fn source(&self) -> &Path {
        &self.path
    }

    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}
