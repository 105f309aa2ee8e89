//! The safetensors reader on raw bytes: any input opens or is refused, and an
//! opened file gives every float tensor with exactly its shape's elements.

#![no_main]

use std::path::Path;

use gptq_convert::checkpoint::SafetensorsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let Ok(file) = SafetensorsFile::from_bytes(path, data.to_vec()) else {
        return;
    };
    gptq_fuzz::read_all(&file);
});
