//! GGUF v3: the file format. A zero-copy reader over a memory mapping and a
//! streaming writer.
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count,
//! `u64` metadata count; the metadata key/values; the tensor infos (name,
//! `n_dims`, `ne[0..n_dims]`, ggml type id, offset relative to the data
//! section); zero padding up to `general.alignment` (32 when absent); then the
//! tensor data, every tensor starting at a multiple of the alignment.
//!
//! [`GgufFile::parse`] validates the whole structure before any tensor is
//! touched; [`MappedFile`] maps a file read-only and [`cast_slice`] views a
//! tensor's bytes as `f32`, `f16` or quantized blocks without copying.
//! [`GgufWriter`] writes the header, then streams one tensor at a time.

pub mod file_type;
mod mmap;
mod reader;
pub mod types;
mod writer;

pub use file_type::FileType;
pub use mmap::{MappedFile, Pod, as_bytes, cast_slice, cast_slice_mut};
pub use reader::{GgufFile, TensorInfo};
pub use types::{GgmlType, MetaArray, MetaType, MetaValue};
pub use writer::{GgufWriter, TensorDataWriter};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The format version this crate writes. Versions 2 and 3 are read (they only
/// differ in that version 3 allows big-endian files, which are rejected).
pub const GGUF_VERSION: u32 = 3;

/// The metadata key that sets the data alignment (a `u32` power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The alignment of a file without [`ALIGNMENT_KEY`].
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The alignment of the files this crate writes (cache-line sized, so every
/// tensor, and each row of most tensors, starts on its own cache line).
pub const WRITE_ALIGNMENT: u64 = 64;

/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

/// Deepest nesting of metadata arrays (an array of arrays is depth 2) that is
/// read or written. ggml itself does not read nested arrays at all.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// ggml's `GGML_MAX_NAME`: tensor names must be shorter than this many bytes
/// for llama.cpp to load the file. The writer enforces it; the reader does not.
pub const MAX_TENSOR_NAME_BYTES: usize = 64;

/// Rounds `x` up to a multiple of the power of two `align`; `None` on overflow
/// or when `align` is not a power of two.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    if !align.is_power_of_two() {
        return None;
    }
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}
