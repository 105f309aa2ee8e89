//! The PyTorch reader on raw bytes seeded with legacy (`torch < 1.6`)
//! checkpoints: five pickles back to back, then the storages.

#![no_main]

use std::path::Path;

use gptq_convert::checkpoint::PytorchFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-legacy.bin");
    if let Ok(file) = PytorchFile::from_bytes(path, data.to_vec()) {
        gptq_fuzz::read_all(&file);
    }
});
