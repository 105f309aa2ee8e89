//! Converts Hugging Face GPT-2 checkpoints into one GGUF v3 file.
pub mod checkpoint;
