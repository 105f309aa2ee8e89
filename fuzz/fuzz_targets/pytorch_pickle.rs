//! The unpickler and the state-dict reader, structure-aware: the input is the
//! `data.pkl` of a zip checkpoint whose storages `0`..`3` exist, so mutations
//! of the pickle reach the tensor views instead of failing at the container.

#![no_main]

use std::path::Path;

use gptq_convert::checkpoint::PytorchFile;
use gptq_fuzz::torch::{fixed_storages, zip_checkpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|pickle: &[u8]| {
    let storages = fixed_storages();
    let refs: Vec<(&str, &[u8])> = storages
        .iter()
        .map(|(k, b)| (k.as_str(), b.as_slice()))
        .collect();
    let bytes = zip_checkpoint(pickle, &refs);
    if let Ok(file) = PytorchFile::from_bytes(Path::new("fuzz.bin"), bytes) {
        gptq_fuzz::read_all(&file);
    }
});
