//! Converts Hugging Face GPT-2 checkpoints (`config.json`, `model.safetensors`
//! or `pytorch_model.bin`, `vocab.json` + `merges.txt` or `tokenizer.json`)
//! into one GGUF v3 file that llama.cpp and gptq both load.

pub mod awq;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod gptq;
pub mod names;
mod output;
pub mod quantize;
pub mod vocab;

pub use convert::{
    Calibration, ConvertOptions, ConvertReport, ImatrixSource, Importance, OutType, convert,
};
