//! The PyTorch reader on raw bytes (seeded with zip checkpoints): the zip
//! container, `byteorder`, the pickle and every storage view. An opened file
//! gives every float tensor with exactly its shape's elements.

#![no_main]

use std::path::Path;

use gptq_convert::checkpoint::PytorchFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.bin");
    if let Ok(file) = PytorchFile::from_bytes(path, data.to_vec()) {
        gptq_fuzz::read_all(&file);
    }
});
