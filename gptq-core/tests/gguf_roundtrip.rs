//! Write → map → parse round trips of the GGUF writer and reader.

use std::io::{BufWriter, Write};

use gptq_core::Error;
use gptq_core::gguf::{
    ALIGNMENT_KEY, GgmlType, GgufFile, GgufWriter, MappedFile, MetaArray, MetaValue,
    WRITE_ALIGNMENT, cast_slice,
};
use gptq_core::quant::{BlockQ4_0, BlockQ8_0};
use half::f16;

/// Deterministic filler bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn every_value_type() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("t.u8", MetaValue::U8(250)),
        ("t.i8", MetaValue::I8(-5)),
        ("t.u16", MetaValue::U16(65000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.f32", MetaValue::F32(-1.25e-5)),
        ("t.bool", MetaValue::Bool(true)),
        ("t.string", MetaValue::String("héllo, ☃ world".into())),
        ("t.empty_string", MetaValue::String(String::new())),
        ("t.u64", MetaValue::U64(u64::MAX - 1)),
        ("t.i64", MetaValue::I64(i64::MIN + 3)),
        ("t.f64", MetaValue::F64(std::f64::consts::PI)),
        ("a.u8", MetaValue::Array(MetaArray::U8(vec![0, 1, 255]))),
        ("a.i8", MetaValue::Array(MetaArray::I8(vec![-128, 0, 127]))),
        ("a.u16", MetaValue::Array(MetaArray::U16(vec![1, 65535]))),
        ("a.i16", MetaValue::Array(MetaArray::I16(vec![-1, 2]))),
        ("a.u32", MetaValue::Array(MetaArray::U32(vec![7; 5]))),
        ("a.i32", MetaValue::Array(MetaArray::I32(vec![1, -2, 3]))),
        (
            "a.f32",
            MetaValue::Array(MetaArray::F32(vec![0.5, -0.0, 1e30])),
        ),
        (
            "a.bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
        ),
        (
            "a.string",
            MetaValue::Array(MetaArray::String(vec![
                "Ġthe".into(),
                String::new(),
                "<|endoftext|>".into(),
            ])),
        ),
        ("a.u64", MetaValue::Array(MetaArray::U64(vec![u64::MAX]))),
        ("a.i64", MetaValue::Array(MetaArray::I64(vec![i64::MIN, 0]))),
        ("a.f64", MetaValue::Array(MetaArray::F64(vec![1e-300, 2.0]))),
        ("a.empty", MetaValue::Array(MetaArray::F32(vec![]))),
        (
            "a.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::String(vec!["x".into(), "yz".into()]),
                MetaArray::Array(vec![MetaArray::Bool(vec![false]), MetaArray::U8(vec![])]),
                MetaArray::Array(vec![]),
            ])),
        ),
    ]
}

fn tensors() -> Vec<(&'static str, Vec<u64>, GgmlType)> {
    vec![
        ("f32.1d", vec![7], GgmlType::F32),
        ("f32.4d", vec![3, 2, 2, 2], GgmlType::F32),
        ("f16.2d", vec![5, 3], GgmlType::F16),
        ("f16.3d", vec![2, 3, 4], GgmlType::F16),
        ("q8.2d", vec![64, 3], GgmlType::Q8_0),
        ("q8.1d", vec![32], GgmlType::Q8_0),
        ("q4.3d", vec![96, 2, 2], GgmlType::Q4_0),
        ("q4.4d", vec![32, 1, 1, 3], GgmlType::Q4_0),
    ]
}

/// Writes the full test file; returns its bytes and each tensor's data.
fn build(alignment: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new(alignment).unwrap();
    for (k, v) in every_value_type() {
        w.add_metadata(k, v).unwrap();
    }
    let mut datas = Vec::new();
    for (i, (name, dims, ty)) in tensors().into_iter().enumerate() {
        w.add_tensor(name, &dims, ty).unwrap();
        let n: u64 = dims.iter().product();
        let bytes = ty.row_bytes(dims[0]).unwrap() * (n / dims[0]);
        datas.push(noise(bytes as usize, i as u64));
    }
    let mut out = w.begin(Vec::new()).unwrap();
    for ((name, _, _), data) in tensors().iter().zip(&datas) {
        out.write_tensor(name, data).unwrap();
    }
    (out.finish().unwrap(), datas)
}

fn check(f: &GgufFile, bytes: &[u8], datas: &[Vec<u8>], alignment: u64) {
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, alignment);
    assert_eq!(f.data_offset % alignment, 0);
    let mut want: Vec<(String, MetaValue)> = Vec::new();
    if alignment != 32 {
        want.push((ALIGNMENT_KEY.into(), MetaValue::U32(alignment as u32)));
    }
    want.extend(
        every_value_type()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    assert_eq!(f.metadata, want, "metadata in insertion order");
    for (k, v) in every_value_type() {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    assert_eq!(f.tensors.len(), datas.len());
    for ((info, (name, dims, ty)), data) in f.tensors.iter().zip(tensors()).zip(datas) {
        assert_eq!(info.name, name);
        assert_eq!(info.dims, dims);
        assert_eq!(info.ty, ty);
        assert_eq!(info.row_len(), dims[0]);
        assert_eq!(info.n_rows(), dims[1..].iter().product::<u64>());
        assert_eq!(info.n_elements(), dims.iter().product::<u64>());
        assert_eq!(info.n_bytes, data.len() as u64);
        assert_eq!(info.offset % alignment, 0);
        assert_eq!(f.tensor(name), Some(info));
        assert_eq!(f.tensor_data(bytes, info), &data[..], "{name}");
    }
    let end = f.tensors.last().map(|t| t.offset + t.n_bytes).unwrap();
    assert_eq!(bytes.len() as u64, end.next_multiple_of(alignment));
}

#[test]
fn round_trip_in_memory_at_several_alignments() {
    for alignment in [32, 64, 128, 4096] {
        let (bytes, datas) = build(alignment);
        let f = GgufFile::parse(&bytes).unwrap();
        check(&f, &bytes, &datas, alignment);
    }
}

#[test]
fn round_trip_through_a_mapped_file_with_typed_views() {
    let (bytes, datas) = build(WRITE_ALIGNMENT);
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        w.write_all(&bytes).unwrap();
        w.flush().unwrap();
    }
    let m = MappedFile::open(tmp.path()).unwrap();
    assert_eq!(m.bytes(), &bytes[..]);
    let f = GgufFile::parse(m.bytes()).unwrap();
    check(&f, m.bytes(), &datas, WRITE_ALIGNMENT);

    let view = |name: &str| f.tensor_data(m.bytes(), f.tensor(name).unwrap());
    let x: &[f32] = cast_slice(view("f32.4d")).unwrap();
    assert_eq!(x.len(), 24);
    assert_eq!(x[5].to_bits().to_le_bytes(), datas[1][20..24]);
    let h: &[f16] = cast_slice(view("f16.2d")).unwrap();
    assert_eq!(h.len(), 15);
    let q8: &[BlockQ8_0] = cast_slice(view("q8.2d")).unwrap();
    assert_eq!(q8.len(), 6);
    assert_eq!(q8[1].d.to_bits().to_le_bytes(), datas[4][34..36]);
    let q4: &[BlockQ4_0] = cast_slice(view("q4.3d")).unwrap();
    assert_eq!(q4.len(), 12);
    assert_eq!(q4[11].qs[15], datas[6][12 * 18 - 1]);
}

#[test]
fn streaming_to_a_file_matches_the_in_memory_bytes() {
    let (bytes, datas) = build(WRITE_ALIGNMENT);
    let mut w = GgufWriter::new(WRITE_ALIGNMENT).unwrap();
    for (k, v) in every_value_type() {
        w.add_metadata(k, v).unwrap();
    }
    for (name, dims, ty) in tensors() {
        w.add_tensor(name, &dims, ty).unwrap();
    }
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let file = std::fs::File::create(tmp.path()).unwrap();
    let mut out = w.begin(BufWriter::new(file)).unwrap();
    for ((name, _, _), data) in tensors().iter().zip(&datas) {
        out.write_tensor(name, data).unwrap();
    }
    drop(out.finish().unwrap());
    assert_eq!(std::fs::read(tmp.path()).unwrap(), bytes);
}

#[test]
fn every_prefix_fails_and_header_corruption_never_panics() {
    let (bytes, _) = build(WRITE_ALIGNMENT);
    let f = GgufFile::parse(&bytes).unwrap();
    // The padding after the last tensor is written (as ggml does) but not required.
    let data_end = f
        .tensors
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for len in 0..data_end {
        assert!(
            GgufFile::parse(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    assert!(GgufFile::parse(&bytes[..data_end]).is_ok());
    let mut b = bytes.clone();
    for i in 0..f.data_offset as usize {
        for x in [0xffu8, 0x01, 0x10, 0x80] {
            b[i] ^= x;
            match GgufFile::parse(&b) {
                Ok(g) => {
                    // A surviving flip must still describe in-bounds tensors.
                    for t in &g.tensors {
                        assert!(t.offset + t.n_bytes <= b.len() as u64);
                    }
                }
                Err(
                    Error::Format { .. }
                    | Error::Metadata { .. }
                    | Error::Tensor { .. }
                    | Error::UnsupportedType { .. },
                ) => {}
                Err(other) => panic!("unexpected error kind at byte {i}: {other}"),
            }
            b[i] ^= x;
        }
    }
}
