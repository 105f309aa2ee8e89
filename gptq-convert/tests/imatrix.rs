//! The importance matrix: a file llama-imatrix wrote (testdata/imatrix/,
//! F32 trained-small, `-c 64 --chunks 4` over calibration-small.txt) reads,
//! writes back byte for byte, and agrees with gptq's own computation on the
//! same model, text and settings.

mod common;

use common::*;
use gptq_core::Kernels;
use gptq_core::gguf::GgmlType;
use gptq_core::imatrix::{Imatrix, compute};

#[test]
fn llama_imatrix_file_round_trip_and_agreement() {
    let path = testdata().join("imatrix").join("trained-small-f32-c64.dat");
    let bytes = std::fs::read(&path).unwrap();
    let theirs = Imatrix::parse(&bytes).unwrap();
    let mut back = Vec::new();
    theirs.write(&mut back).unwrap();
    assert_eq!(back, bytes, "written back byte for byte");
    assert_eq!(theirs.entries.len(), 16);
    assert_eq!(theirs.chunks, 4);

    let model = model("trained-small", GgmlType::F32, Kernels::best());
    let text =
        std::fs::read_to_string(testdata().join("text").join("calibration-small.txt")).unwrap();
    let tokens = model.tokenizer().encode(&text);
    let ours = compute(
        &model,
        &tokens,
        64,
        Some(4),
        false,
        "calibration-small.txt",
        |_, _| {},
    )
    .unwrap()
    .imatrix;
    assert_eq!(ours.entries.len(), 16);
    for e in &ours.entries {
        let t = theirs
            .get(&e.name)
            .unwrap_or_else(|| panic!("{} missing from llama-imatrix's file", e.name));
        assert_eq!(e.ncall, t.ncall, "{}", e.name);
        assert_eq!(e.values.len(), t.values.len(), "{}", e.name);
        let worst = e
            .values
            .iter()
            .zip(&t.values)
            .map(|(a, b)| (a - b).abs() / (1e-6 + b.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{}: relative difference {worst}", e.name);
    }
}
