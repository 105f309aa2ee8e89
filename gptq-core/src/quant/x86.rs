//! What the x86-64 kernel paths (AVX2, AVX-512, AMX) share.

pub(in crate::quant) mod driver;
pub mod repacked;
pub(in crate::quant) mod strip_words;
pub(in crate::quant) mod strips;
pub(in crate::quant) mod transpose;
