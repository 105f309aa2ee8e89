//! GGUF v3: the file format. A zero-copy reader over a memory mapping and a
//! streaming writer.

pub mod types;

pub use types::{GgmlType, MetaArray, MetaType, MetaValue};
