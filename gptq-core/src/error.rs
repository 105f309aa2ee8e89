//! Typed errors of the library.

use std::path::PathBuf;

/// Every failure the library reports. Each variant says what went wrong and where
/// (the key, the tensor, the byte offset), so that a front end can print it as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The bytes of a GGUF file do not follow the format.
    #[error("GGUF format error at byte {offset}: {msg}")]
    Format {
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        msg: String,
    },

    /// A file other than a GGUF (a llama-perplexity logits file, an importance
    /// matrix) does not follow its format.
    #[error("{kind}, byte {offset}: {msg}")]
    FileFormat {
        /// What kind of file it should be.
        kind: &'static str,
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        msg: String,
    },

    /// A metadata key is missing or holds a value of the wrong type or range.
    #[error("metadata key '{key}': {msg}")]
    Metadata {
        /// The GGUF key.
        key: String,
        /// What is wrong.
        msg: String,
    },

    /// A tensor is missing, has the wrong shape or type, or lies outside the file.
    #[error("tensor '{name}': {msg}")]
    Tensor {
        /// The tensor's name in the file.
        name: String,
        /// What is wrong.
        msg: String,
    },

    /// A tensor type id this build cannot compute with.
    #[error(
        "tensor '{name}': unsupported tensor type {type_name} (id {type_id}); gptq runs {}",
        crate::gguf::GgmlType::computable_names()
    )]
    UnsupportedType {
        /// The tensor's name.
        name: String,
        /// The ggml type id found in the file.
        type_id: u32,
        /// ggml's name for that type, or "unknown".
        type_name: &'static str,
    },

    /// More tokens than the session's context can hold.
    #[error("context overflow: {needed} tokens do not fit in a context of {capacity}")]
    ContextOverflow {
        /// Tokens the operation would need in the context.
        needed: usize,
        /// The context size.
        capacity: usize,
    },

    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    InvalidToken {
        /// The offending id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },

    /// The tokenizer data in the file is inconsistent.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A caller passed an argument outside its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Memory for a buffer could not be allocated.
    #[error("out of memory: cannot allocate {bytes} bytes for the {what}")]
    OutOfMemory {
        /// What the buffer was for.
        what: String,
        /// Bytes requested.
        bytes: usize,
    },

    /// The operation was cancelled through a session's cancellation flag.
    #[error("cancelled")]
    Cancelled,
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn format(offset: u64, msg: impl Into<String>) -> Self {
        Error::Format {
            offset,
            msg: msg.into(),
        }
    }

    pub(crate) fn file_format(kind: &'static str, offset: u64, msg: impl Into<String>) -> Self {
        Error::FileFormat {
            kind,
            offset,
            msg: msg.into(),
        }
    }

    pub(crate) fn metadata(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Metadata {
            key: key.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
