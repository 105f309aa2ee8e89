//! The checkpoint readers against the fixtures in `testdata/` and against
//! hand-built PyTorch files (zip and legacy), including corrupt ones.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gptq_convert::checkpoint::{
    Checkpoint, DType, PytorchFile, SafetensorsFile, ShardedCheckpoint, open_checkpoint,
};
use half::{bf16, f16};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

// ---------------------------------------------------------------- fixtures

#[test]
fn safetensors_and_bin_hold_the_same_weights() {
    let st = SafetensorsFile::open(&testdata("tiny-scaled/model.safetensors")).unwrap();
    let pt = PytorchFile::open(&testdata("tiny-scaled/pytorch_model.bin")).unwrap();
    assert_eq!(st.tensors().len(), 28);
    assert_eq!(pt.tensors().len(), st.tensors().len() + 1);
    for meta in st.tensors() {
        let other = pt
            .meta(&meta.name)
            .unwrap_or_else(|| panic!("{} missing from the .bin", meta.name));
        assert_eq!(other.shape, meta.shape, "{}", meta.name);
        assert_eq!((meta.dtype, other.dtype), (DType::F32, DType::F32));
        let (a, b) = (
            st.read_f32(&meta.name).unwrap(),
            pt.read_f32(&meta.name).unwrap(),
        );
        assert_eq!(a.len(), meta.numel());
        assert!(bits(&a) == bits(&b), "{} differs", meta.name);
    }
    // lm_head.weight shares transformer.wte.weight's storage.
    let head = pt.meta("lm_head.weight").unwrap();
    assert_eq!(head.shape, [50257, 64]);
    let wte = pt.read_f32("transformer.wte.weight").unwrap();
    assert!(bits(&pt.read_f32("lm_head.weight").unwrap()) == bits(&wte));
    // The .bin lists tensors in its pickle's order.
    assert_eq!(pt.tensors()[0].name, "transformer.wte.weight");
    assert_eq!(pt.tensors().last().unwrap().name, "lm_head.weight");
    assert!(pt.source().ends_with("tiny-scaled/pytorch_model.bin"));
}

#[test]
fn hub_style_safetensors_opens() {
    let hub = SafetensorsFile::open(&testdata("tiny-scaled-hubstyle/model.safetensors")).unwrap();
    let names: Vec<&str> = hub.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"wte.weight") && names.contains(&"h.1.mlp.c_proj.bias"));
    assert!(!names.iter().any(|n| n.starts_with("transformer.")));
    assert_eq!(hub.meta("h.0.attn.bias").unwrap().shape, [1, 1, 128, 128]);
    let masked = hub.meta("h.0.attn.masked_bias").unwrap();
    assert!(masked.shape.is_empty());
    assert_eq!(hub.read_f32("h.0.attn.masked_bias").unwrap().len(), 1);
    // The same weights as tiny-scaled, under other names.
    let st = SafetensorsFile::open(&testdata("tiny-scaled/model.safetensors")).unwrap();
    let a = st.read_f32("transformer.h.1.attn.c_attn.weight").unwrap();
    assert!(bits(&a) == bits(&hub.read_f32("h.1.attn.c_attn.weight").unwrap()));
    let err = hub
        .read_f32("transformer.wte.weight")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no tensor named 'transformer.wte.weight'"),
        "{err}"
    );
}

#[test]
fn open_checkpoint_prefers_safetensors() {
    let ckpt = open_checkpoint(&testdata("tiny-scaled")).unwrap();
    assert!(ckpt.source().ends_with("model.safetensors"));
    assert_eq!(ckpt.tensors().len(), 28);
    let hub = open_checkpoint(&testdata("tiny-scaled-hubstyle")).unwrap();
    assert!(hub.meta("wte.weight").is_some());
}

#[test]
fn open_checkpoint_lists_what_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = open_checkpoint(dir.path()).err().unwrap().to_string();
    for name in [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ] {
        assert!(err.contains(name), "{err}");
    }
    let missing = dir.path().join("nope");
    let err = open_checkpoint(&missing).err().unwrap().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

// ---------------------------------------------------------------- sharded

#[test]
fn sharded_safetensors() {
    let st = SafetensorsFile::open(&testdata("tiny-scaled/model.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut weight_map = serde_json::Map::new();
    let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for meta in st.tensors() {
        let bytes = st
            .read_f32(&meta.name)
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        data.push((meta.name.clone(), bytes, meta.shape.clone()));
    }
    for (shard, part) in data.chunks(15).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|(name, bytes, shape)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .unwrap();
                (name.clone(), view)
            })
            .collect();
        for (name, _) in &views {
            weight_map.insert(name.clone(), file.clone().into());
        }
        safetensors::serialize_to_file(views, None, &dir.path().join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    let index_path = dir.path().join("model.safetensors.index.json");
    fs::write(&index_path, index.to_string()).unwrap();

    let ckpt = open_checkpoint(dir.path()).unwrap();
    assert_eq!(ckpt.source(), index_path);
    assert_eq!(ckpt.tensors().len(), st.tensors().len());
    for meta in st.tensors() {
        assert_eq!(ckpt.meta(&meta.name).unwrap().shape, meta.shape);
        let (a, b) = (
            st.read_f32(&meta.name).unwrap(),
            ckpt.read_f32(&meta.name).unwrap(),
        );
        assert!(bits(&a) == bits(&b), "{}", meta.name);
    }

    // A weight map naming a tensor its shard lacks is an error naming both.
    weight_map.insert(
        "ghost.weight".into(),
        "model-00001-of-00002.safetensors".into(),
    );
    let index = serde_json::json!({ "weight_map": weight_map });
    fs::write(&index_path, index.to_string()).unwrap();
    let err = ShardedCheckpoint::open(&index_path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("'ghost.weight'") && err.contains("model-00001"),
        "{err}"
    );

    // Shards must be files beside the index.
    let index = serde_json::json!({ "weight_map": { "a": "../elsewhere.safetensors" } });
    fs::write(&index_path, index.to_string()).unwrap();
    let err = ShardedCheckpoint::open(&index_path)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a file beside the index"), "{err}");

    // A shard that does not exist is named.
    let index = serde_json::json!({ "weight_map": { "a": "missing.safetensors" } });
    fs::write(&index_path, index.to_string()).unwrap();
    let err = format!("{:#}", ShardedCheckpoint::open(&index_path).err().unwrap());
    assert!(err.contains("missing.safetensors"), "{err}");
}

#[test]
fn sharded_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let a = TorchFile::new()
        .storage("0", "FloatStorage", &f32_bytes(&[1.0, 2.0]))
        .tensor("a", "0", 2, 0, &[2], &[1]);
    let b = TorchFile::new()
        .storage("0", "FloatStorage", &f32_bytes(&[3.0, 4.0, 5.0]))
        .tensor("b", "0", 3, 0, &[3], &[1]);
    a.write_zip(&dir.path().join("pytorch_model-00001-of-00002.bin"));
    b.write_zip(&dir.path().join("pytorch_model-00002-of-00002.bin"));
    let index = serde_json::json!({ "weight_map": {
        "a": "pytorch_model-00001-of-00002.bin",
        "b": "pytorch_model-00002-of-00002.bin",
    }});
    fs::write(
        dir.path().join("pytorch_model.bin.index.json"),
        index.to_string(),
    )
    .unwrap();
    let ckpt = open_checkpoint(dir.path()).unwrap();
    let names: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(ckpt.read_f32("b").unwrap(), [3.0, 4.0, 5.0]);
    assert_eq!(ckpt.read_f32("a").unwrap(), [1.0, 2.0]);
}

#[test]
fn open_checkpoint_falls_back_to_pytorch_bin() {
    let dir = tempfile::tempdir().unwrap();
    TorchFile::new()
        .storage("0", "FloatStorage", &f32_bytes(&[1.0]))
        .tensor("x", "0", 1, 0, &[1], &[1])
        .write_zip(&dir.path().join("pytorch_model.bin"));
    let ckpt = open_checkpoint(dir.path()).unwrap();
    assert!(ckpt.source().ends_with("pytorch_model.bin"));
    assert_eq!(ckpt.read_f32("x").unwrap(), [1.0]);
}

// ---------------------------------------------------------------- hand-built pickles

/// Writes pickle opcodes (protocol 2).
struct Pickler(Vec<u8>);

impl Pickler {
    fn new() -> Self {
        Pickler(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=255 => self.op(&[b'K', v as u8]),
            256..=65535 => self.op(b"M").op(&(v as u16).to_le_bytes()),
            _ if i32::try_from(v).is_ok() => self.op(b"J").op(&(v as i32).to_le_bytes()),
            _ => self.op(&[0x8a, 8]).op(&v.to_le_bytes()),
        }
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn ints(&mut self, values: &[usize]) -> &mut Self {
        self.op(b"(");
        for &v in values {
            self.int(v as i64);
        }
        self.op(b"t")
    }
    fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(b")R")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

#[derive(Clone)]
struct TensorSpec {
    name: String,
    key: String,
    storage_numel: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
    /// `Some(dtype)`: `_rebuild_tensor_v3` with this torch dtype name.
    v3_dtype: Option<&'static str>,
    /// Wrap in `_rebuild_parameter`.
    parameter: bool,
    /// Legacy storage slice `(view key, offset, size)`.
    legacy_view: Option<(&'static str, usize, usize)>,
}

/// A PyTorch checkpoint to build: storages and the tensors over them.
#[derive(Clone)]
struct TorchFile {
    storages: Vec<(String, String, Vec<u8>)>,
    tensors: Vec<TensorSpec>,
    raw_pickle: Option<Vec<u8>>,
    byteorder: &'static str,
    deflate: bool,
}

impl TorchFile {
    fn new() -> Self {
        TorchFile {
            storages: Vec::new(),
            tensors: Vec::new(),
            raw_pickle: None,
            byteorder: "little",
            deflate: false,
        }
    }
    fn storage(mut self, key: &str, class: &str, bytes: &[u8]) -> Self {
        self.storages
            .push((key.into(), class.into(), bytes.to_vec()));
        self
    }
    fn tensor(
        mut self,
        name: &str,
        key: &str,
        storage_numel: usize,
        offset: usize,
        size: &[usize],
        stride: &[usize],
    ) -> Self {
        self.tensors.push(TensorSpec {
            name: name.into(),
            key: key.into(),
            storage_numel,
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
            v3_dtype: None,
            parameter: false,
            legacy_view: None,
        });
        self
    }
    fn last(mut self, edit: impl FnOnce(&mut TensorSpec)) -> Self {
        edit(self.tensors.last_mut().unwrap());
        self
    }
    fn class_of(&self, key: &str) -> String {
        self.storages
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or("FloatStorage".into(), |(_, c, _)| c.clone())
    }

    /// The state dict pickle: OrderedDict() then SETITEMS of every tensor.
    fn pickle(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw_pickle {
            return raw.clone();
        }
        let mut p = Pickler::new();
        p.ordered_dict().op(b"q\x00(");
        for t in &self.tensors {
            p.str(&t.name);
            if t.parameter {
                p.global("torch._utils", "_rebuild_parameter").op(b"(");
            }
            let v3 = t.v3_dtype.is_some();
            let rebuild = if v3 {
                "_rebuild_tensor_v3"
            } else {
                "_rebuild_tensor_v2"
            };
            p.global("torch._utils", rebuild).op(b"((");
            p.str("storage")
                .global("torch", &self.class_of(&t.key))
                .str(&t.key)
                .str("cpu");
            p.int(t.storage_numel as i64);
            if let Some((view_key, offset, size)) = t.legacy_view {
                p.op(b"(")
                    .str(view_key)
                    .int(offset as i64)
                    .int(size as i64)
                    .op(b"t");
            }
            p.op(b"tQ")
                .int(t.offset as i64)
                .ints(&t.size)
                .ints(&t.stride);
            p.op(&[0x89]).ordered_dict();
            if let Some(dtype) = t.v3_dtype {
                p.global("torch", dtype);
            }
            p.op(b"tR");
            if t.parameter {
                p.op(&[0x89]).ordered_dict().op(b"tR");
            }
        }
        p.op(b"u").stop()
    }

    fn write_zip(&self, path: &Path) {
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            ("archive/data.pkl".into(), self.pickle()),
            (
                "archive/byteorder".into(),
                self.byteorder.as_bytes().to_vec(),
            ),
        ];
        for (key, _, bytes) in &self.storages {
            entries.push((format!("archive/data/{key}"), bytes.clone()));
        }
        entries.push(("archive/version".into(), b"3\n".to_vec()));
        let method = if self.deflate {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        write_zip(path, &entries, method);
    }

    /// The legacy (torch < 1.6) layout: five pickles, then each storage.
    fn write_legacy(&self, path: &Path) {
        let mut out = Pickler::new()
            .op(&[0x8a, 10])
            .op(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10])
            .stop();
        out.extend(Pickler::new().int(1001).stop());
        out.extend(
            Pickler::new()
                .op(b"}(")
                .str("protocol_version")
                .int(1001)
                .str("little_endian")
                .op(&[0x88])
                .op(b"u")
                .stop(),
        );
        out.extend(self.pickle());
        let mut keys = Pickler::new();
        keys.op(b"(");
        for (key, _, _) in &self.storages {
            keys.str(key);
        }
        out.extend(keys.op(b"l").stop());
        for (_, class, bytes) in &self.storages {
            let elem = match class.as_str() {
                "DoubleStorage" | "LongStorage" => 8,
                "HalfStorage" | "BFloat16Storage" => 2,
                _ => 4,
            };
            out.extend_from_slice(&((bytes.len() / elem) as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        fs::write(path, out).unwrap();
    }
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)], method: CompressionMethod) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Storages of several dtypes and views of them.
fn mixed_file() -> TorchFile {
    let six = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let half: Vec<u8> = [0.5f32, -1.0, 2.0, 65504.0]
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    let brain: Vec<u8> = [1.0f32, -2.5, 3.0]
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    let double: Vec<u8> = [0.125f64, 1e300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let long: Vec<u8> = [7i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    TorchFile::new()
        .storage("0", "FloatStorage", &six)
        .storage("1", "HalfStorage", &half)
        .storage("2", "BFloat16Storage", &brain)
        .storage("3", "DoubleStorage", &double)
        .storage("4", "LongStorage", &long)
        // The 3x2 transpose of the 2x3 matrix in storage 0.
        .tensor("transposed", "0", 6, 0, &[3, 2], &[1, 3])
        // The second row of that matrix, sharing the storage.
        .tensor("row", "0", 6, 3, &[3], &[1])
        .tensor("half", "1", 4, 0, &[2, 2], &[2, 1])
        .tensor("brain", "2", 3, 1, &[2], &[1])
        .last(|t| t.parameter = true)
        .tensor("double", "3", 2, 0, &[2], &[1])
        .tensor("long", "4", 2, 0, &[2], &[1])
        .tensor("scalar", "0", 6, 5, &[], &[])
}

fn check_mixed(ckpt: &dyn Checkpoint) {
    let names: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "transposed",
            "row",
            "half",
            "brain",
            "double",
            "long",
            "scalar"
        ]
    );
    assert_eq!(ckpt.meta("transposed").unwrap().shape, [3, 2]);
    assert_eq!(
        ckpt.read_f32("transposed").unwrap(),
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    assert_eq!(ckpt.read_f32("row").unwrap(), [3.0, 4.0, 5.0]);
    assert_eq!(ckpt.meta("half").unwrap().dtype, DType::F16);
    assert_eq!(ckpt.read_f32("half").unwrap(), [0.5, -1.0, 2.0, 65504.0]);
    assert_eq!(ckpt.meta("brain").unwrap().dtype, DType::BF16);
    assert_eq!(ckpt.read_f32("brain").unwrap(), [-2.5, 3.0]);
    assert_eq!(ckpt.read_f32("double").unwrap(), [0.125, f32::INFINITY]);
    assert_eq!(ckpt.meta("long").unwrap().dtype, DType::I64);
    let err = ckpt.read_f32("long").unwrap_err().to_string();
    assert!(err.contains("'long'") && err.contains("I64"), "{err}");
    assert!(ckpt.meta("scalar").unwrap().shape.is_empty());
    assert_eq!(ckpt.read_f32("scalar").unwrap(), [5.0]);
    let err = ckpt.read_f32("nothing").unwrap_err().to_string();
    assert!(err.contains("'nothing'"), "{err}");
}

#[test]
fn zip_views_dtypes_and_shared_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.bin");
    mixed_file().write_zip(&path);
    check_mixed(&PytorchFile::open(&path).unwrap());
}

#[test]
fn deflated_entries_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deflated.bin");
    let mut file = mixed_file();
    file.deflate = true;
    file.write_zip(&path);
    check_mixed(&PytorchFile::open(&path).unwrap());
}

#[test]
fn legacy_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.bin");
    let file = mixed_file()
        // A legacy storage slice: elements 2..6 of storage 0, the tensor at offset 1 step 2.
        .tensor("sliced", "0", 6, 1, &[2], &[2])
        .last(|t| t.legacy_view = Some(("99", 2, 4)));
    file.write_legacy(&path);
    let ckpt = PytorchFile::open(&path).unwrap();
    assert_eq!(ckpt.read_f32("sliced").unwrap(), [3.0, 5.0]);
    let without_slice = mixed_file();
    without_slice.write_legacy(&path);
    check_mixed(&PytorchFile::open(&path).unwrap());

    // Truncated anywhere, it is an error.
    without_slice.write_legacy(&path);
    let full = fs::read(&path).unwrap();
    for len in 0..full.len() {
        fs::write(&path, &full[..len]).unwrap();
        assert!(
            PytorchFile::open(&path).is_err(),
            "legacy file truncated to {len} opened"
        );
    }
}

#[test]
fn untyped_storage_with_v3_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.bin");
    let half: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    TorchFile::new()
        .storage("0", "UntypedStorage", &half)
        .tensor("h", "0", 6, 1, &[2], &[1])
        .last(|t| t.v3_dtype = Some("float16"))
        .write_zip(&path);
    let ckpt = PytorchFile::open(&path).unwrap();
    assert_eq!(ckpt.meta("h").unwrap().dtype, DType::F16);
    assert_eq!(ckpt.read_f32("h").unwrap(), [2.0, 3.0]);

    // The same untyped storage without a dtype is an error naming the storage.
    TorchFile::new()
        .storage("0", "UntypedStorage", &half)
        .tensor("h", "0", 6, 0, &[3], &[1])
        .write_zip(&path);
    let err = format!("{:#}", PytorchFile::open(&path).err().unwrap());
    assert!(err.contains("untyped storage '0'"), "{err}");
}

#[test]
fn big_endian_storages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("be.bin");
    let be: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let mut file =
        TorchFile::new()
            .storage("0", "FloatStorage", &be)
            .tensor("x", "0", 2, 0, &[2], &[1]);
    file.byteorder = "big";
    file.write_zip(&path);
    assert_eq!(
        PytorchFile::open(&path).unwrap().read_f32("x").unwrap(),
        [1.5, -2.0]
    );
}

// ---------------------------------------------------------------- corrupt input

fn open_err(path: &Path) -> String {
    match PytorchFile::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn disallowed_global_in_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.bin");
    let mut file = TorchFile::new();
    file.raw_pickle = Some(
        Pickler::new()
            .global("os", "system")
            .str("touch /tmp/pwned")
            .op(&[0x85])
            .op(b"R")
            .stop(),
    );
    file.write_zip(&path);
    let err = open_err(&path);
    assert!(
        err.contains("'os.system'") && err.contains("data.pkl"),
        "{err}"
    );
}

#[test]
fn garbage_data_pkl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.bin");
    let mut file = TorchFile::new();
    file.raw_pickle = Some(b"this is not a pickle at all".to_vec());
    file.write_zip(&path);
    let err = open_err(&path);
    assert!(
        err.contains("archive/data.pkl") && err.contains("pickle byte 0"),
        "{err}"
    );

    // A valid pickle of something other than a dict.
    file.raw_pickle = Some(Pickler::new().int(5).stop());
    file.write_zip(&path);
    let err = open_err(&path);
    assert!(err.contains("not a state dict"), "{err}");
}

#[test]
fn missing_storage_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.bin");
    TorchFile::new()
        .storage("0", "FloatStorage", &f32_bytes(&[1.0]))
        .tensor("a", "0", 1, 0, &[1], &[1])
        .tensor("b", "7", 1, 0, &[1], &[1])
        .write_zip(&path);
    let err = open_err(&path);
    assert!(
        err.contains("storage '7'") && err.contains("'b'") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn views_past_the_storage_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("past.bin");
    let four = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let cases: &[(usize, usize, &[usize], &[usize])] = &[
        // (storage numel, offset, size, stride)
        (4, 1, &[4], &[1]),
        (4, 0, &[2, 2], &[3, 1]),
        (4, 4, &[], &[]),
        (5, 0, &[5], &[1]),
        (4, 0, &[usize::MAX / 2, 4], &[4, 1]),
        (4, 0, &[8], &[0]),
        (4, usize::MAX / 2, &[1], &[1]),
    ];
    for &(numel, offset, size, stride) in cases {
        TorchFile::new()
            .storage("0", "FloatStorage", &four)
            .tensor("w", "0", numel, offset, size, stride)
            .write_zip(&path);
        let err = open_err(&path);
        assert!(err.contains("'w'"), "{size:?}/{stride:?}: {err}");
    }
}

#[test]
fn not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8 | 1
        })
        .collect();
    fs::write(&path, &random).unwrap();
    assert!(open_err(&path).contains("not a PyTorch checkpoint"));
    fs::write(&path, b"").unwrap();
    assert!(open_err(&path).contains("not a PyTorch checkpoint"));
    fs::write(&path, b"\x80\x02K\x05.").unwrap();
    assert!(open_err(&path).contains("magic number"));
    // A zip without data.pkl.
    write_zip(
        &path,
        &[("x/readme".into(), b"hi".to_vec())],
        CompressionMethod::Stored,
    );
    assert!(open_err(&path).contains("data.pkl"));
    // A safetensors file that is not one.
    let st = dir.path().join("random.safetensors");
    fs::write(&st, &random).unwrap();
    let err = SafetensorsFile::open(&st).err().unwrap().to_string();
    assert!(err.contains("random.safetensors"), "{err}");
    assert!(PytorchFile::open(&dir.path().join("absent.bin")).is_err());
}

#[test]
fn truncated_bin_is_an_error() {
    // Every length of a small hand-built file...
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.bin");
    mixed_file().write_zip(&path);
    let full = fs::read(&path).unwrap();
    for len in 0..full.len() {
        fs::write(&path, &full[..len]).unwrap();
        assert!(
            PytorchFile::open(&path).is_err(),
            "truncated to {len} opened"
        );
    }
    // ...and many lengths of the fixture, shrinking one copy in place.
    let copy = dir.path().join("fixture.bin");
    fs::copy(testdata("tiny-scaled/pytorch_model.bin"), &copy).unwrap();
    let size = fs::metadata(&copy).unwrap().len();
    let mut lengths: Vec<u64> = (1..=300).map(|k| size - k).collect();
    lengths.extend((1..40).map(|k| size * k / 40));
    lengths.extend([4200, 4100, 4000, 1000, 100, 30, 4, 0]);
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    let file = OpenOptions::new().write(true).open(&copy).unwrap();
    for len in lengths {
        file.set_len(len).unwrap();
        assert!(
            PytorchFile::open(&copy).is_err(),
            "fixture truncated to {len} opened"
        );
    }
}

#[test]
fn mutated_pickles_never_panic() {
    // Flip bytes of the fixture's data.pkl in place (stored entries are not
    // CRC-checked) and of a hand-built file: each open either fails or yields
    // tensors that read without panicking.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fixture.bin");
    fs::copy(testdata("tiny-scaled/pytorch_model.bin"), &copy).unwrap();
    let original = fs::read(&copy).unwrap();
    let (pkl_start, pkl_len) = {
        let mut archive = zip::ZipArchive::new(File::open(&copy).unwrap()).unwrap();
        let index = archive.index_for_name("pytorch_model/data.pkl").unwrap();
        let entry = archive.by_index_raw(index).unwrap();
        (entry.data_start().unwrap() as usize, entry.size())
    };
    assert_eq!(original[pkl_start], 0x80);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Mutate one copy in place and restore it, rather than rewriting 13 MB each time.
    let mut file = OpenOptions::new().write(true).open(&copy).unwrap();
    let mut poke = |at: usize, byte: u8| {
        file.seek(SeekFrom::Start(at as u64)).unwrap();
        file.write_all(&[byte]).unwrap();
    };
    let mut opened = 0;
    for _ in 0..400 {
        let changed: Vec<usize> = (0..1 + next() % 3)
            .map(|_| pkl_start + (next() % pkl_len) as usize)
            .collect();
        for &at in &changed {
            poke(at, next() as u8);
        }
        if let Ok(ckpt) = PytorchFile::open(&copy) {
            opened += 1;
            for meta in ckpt.tensors().iter().take(3) {
                let _ = ckpt.read_f32(&meta.name);
            }
        }
        for &at in &changed {
            poke(at, original[at]);
        }
    }
    // Some mutations only touch names or values and still open.
    assert!(opened > 0);

    let small = dir.path().join("small.bin");
    mixed_file().write_zip(&small);
    let original = fs::read(&small).unwrap();
    for _ in 0..2000 {
        let mut bytes = original.clone();
        let at = (next() % bytes.len() as u64) as usize;
        bytes[at] = next() as u8;
        fs::write(&small, &bytes).unwrap();
        if let Ok(ckpt) = PytorchFile::open(&small) {
            for meta in ckpt.tensors() {
                let _ = ckpt.read_f32(&meta.name);
            }
        }
    }
}

#[test]
fn safetensors_non_float_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ints.safetensors");
    let longs: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let halves: Vec<u8> = [1.0f32, -0.5]
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    let views = HashMap::from([
        (
            "ids".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &longs).unwrap(),
        ),
        (
            "h".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 1], &halves)
                .unwrap(),
        ),
    ]);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let st = SafetensorsFile::open(&path).unwrap();
    assert_eq!(st.meta("ids").unwrap().dtype, DType::I64);
    let err = st.read_f32("ids").unwrap_err().to_string();
    assert!(err.contains("'ids'") && err.contains("I64"), "{err}");
    assert_eq!(st.read_f32("h").unwrap(), [1.0, -0.5]);

    let full = fs::read(&path).unwrap();
    for len in 0..full.len() {
        fs::write(&path, &full[..len]).unwrap();
        assert!(
            SafetensorsFile::open(&path).is_err(),
            "truncated to {len} opened"
        );
    }
}
