//! Shared by the end-to-end tests: fixture paths, conversions cached per test
//! binary, and a reader for the reference `.npy` logits.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use gptq_convert::{ConvertOptions, convert};
use gptq_core::gguf::GgmlType;
use gptq_core::{Kernels, Model};

/// `testdata/` at the workspace root.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
}

/// A fixture checkpoint folder.
pub fn checkpoint(name: &str) -> PathBuf {
    testdata().join(name)
}

fn workdir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

/// The GGUF file of fixture `name` converted to `ty` (converted once per test
/// binary).
pub fn converted(name: &str, ty: GgmlType) -> PathBuf {
    static DONE: OnceLock<Mutex<HashMap<(String, GgmlType), PathBuf>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = done.get(&(name.to_string(), ty)) {
        return p.clone();
    }
    let out = workdir()
        .path()
        .join(format!("{name}-{}.gguf", ty.name().to_lowercase()));
    let opts = ConvertOptions {
        out_type: ty.into(),
        progress: false,
        ..ConvertOptions::default()
    };
    convert(&checkpoint(name), &out, &opts)
        .unwrap_or_else(|e| panic!("converting {name} to {ty}: {e:#}"));
    done.insert((name.to_string(), ty), out.clone());
    out
}

/// The model of fixture `name` converted to `ty`, with `kernels`.
pub fn model(name: &str, ty: GgmlType, kernels: Kernels) -> Arc<Model> {
    Arc::new(Model::load_with_kernels(converted(name, ty), kernels).expect("model loads"))
}

/// A float32 `.npy` array: its shape and values (C order).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an npy file");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f4'"),
        "expected little-endian f32: {header}"
    );
    assert!(header.contains("'fortran_order': False"));
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// A fixture's `reference/reference.json`.
pub fn reference_json(name: &str) -> serde_json::Value {
    let p = checkpoint(name).join("reference").join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The kernels to check: the scalar reference and the best this CPU has.
pub fn kernel_sets() -> Vec<Kernels> {
    let mut v = vec![Kernels::scalar()];
    let best = Kernels::best();
    if best.path() != Kernels::scalar().path() {
        v.push(best);
    }
    v
}
