//! Writers of PyTorch checkpoints in memory: just enough of pickle protocol 2
//! to write a state dict the way `torch.save` does, the zip container of
//! torch 1.6 and later, and the legacy container. The `pytorch_pickle` target wraps the
//! fuzzer's bytes as `data.pkl` of a zip checkpoint with this; the seed
//! corpora are written with it.

use std::io::{Cursor, Write};

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// A pickle being written, opcode by opcode.
pub struct Pickle(Vec<u8>);

impl Default for Pickle {
    fn default() -> Pickle {
        Pickle::new()
    }
}

impl Pickle {
    /// `PROTO 2`.
    pub fn new() -> Pickle {
        Pickle(vec![0x80, 2])
    }

    fn op(&mut self, bytes: &[u8]) -> &mut Pickle {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `BINUNICODE`.
    pub fn str(&mut self, s: &str) -> &mut Pickle {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }

    /// `BININT`.
    pub fn int(&mut self, v: i32) -> &mut Pickle {
        self.op(b"J").op(&v.to_le_bytes())
    }

    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Pickle {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }

    /// A tuple of ints (`MARK ... TUPLE`).
    pub fn ints(&mut self, values: &[usize]) -> &mut Pickle {
        self.op(b"(");
        for &v in values {
            self.int(v as i32);
        }
        self.op(b"t")
    }

    /// `collections.OrderedDict()`.
    pub fn ordered_dict(&mut self) -> &mut Pickle {
        self.global("collections", "OrderedDict").op(b")R")
    }

    /// A tensor: `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    pub fn tensor(&mut self, t: &Tensor) -> &mut Pickle {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", t.class)
            .str(&t.key)
            .str("cpu")
            .int(t.storage_numel as i32)
            .op(b"tQ")
            .int(t.offset as i32)
            .ints(&t.shape)
            .ints(&t.stride)
            .op(&[0x89])
            .ordered_dict()
            .op(b"tR")
    }

    /// A state dict of `tensors` (an `OrderedDict` filled by `SETITEMS`).
    pub fn state_dict(tensors: &[Tensor]) -> Vec<u8> {
        let mut p = Pickle::new();
        p.ordered_dict().op(b"(");
        for t in tensors {
            p.str(&t.name).tensor(t);
        }
        p.op(b"u.");
        p.0
    }

    /// `STOP`, and the bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// One tensor of a state dict.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Key in the state dict.
    pub name: String,
    /// Storage class (`FloatStorage`, `HalfStorage`, ...).
    pub class: &'static str,
    /// Storage key (`data/<key>` in a zip).
    pub key: String,
    /// Declared storage length in elements.
    pub storage_numel: usize,
    /// View offset in elements.
    pub offset: usize,
    /// View shape.
    pub shape: Vec<usize>,
    /// View strides.
    pub stride: Vec<usize>,
}

/// A zip checkpoint: `archive/data.pkl`, `archive/byteorder`, and each
/// `(key, bytes)` storage as `archive/data/<key>`, all stored uncompressed.
pub fn zip_checkpoint(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| {
        zip.start_file(name, opts)
            .and_then(|()| zip.write_all(bytes).map_err(Into::into))
            .expect("writing to memory cannot fail");
    };
    entry("archive/data.pkl", pickle);
    entry("archive/byteorder", b"little");
    for (key, bytes) in storages {
        entry(&format!("archive/data/{key}"), bytes);
    }
    zip.finish()
        .expect("writing to memory cannot fail")
        .into_inner()
}

/// A legacy (`torch < 1.6`) checkpoint: magic number, protocol version,
/// `sys_info`, the state dict, the storage keys, then each storage as a u64
/// element count and its bytes.
pub fn legacy_checkpoint(state_dict: &[u8], storages: &[(&str, usize, &[u8])]) -> Vec<u8> {
    let mut out = Pickle::new();
    out.op(&[0x8a, 10])
        .op(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10])
        .op(b".");
    let mut bytes = out.0;
    bytes.extend(Pickle::new().int(1001).finish());
    bytes.extend(
        Pickle::new()
            .op(b"}")
            .str("little_endian")
            .op(&[0x88])
            .op(b"s")
            .finish(),
    );
    bytes.extend_from_slice(state_dict);
    let mut keys = Pickle::new();
    keys.op(b"(");
    for (key, ..) in storages {
        keys.str(key);
    }
    keys.op(b"l");
    bytes.extend(keys.finish());
    for (_, numel, data) in storages {
        bytes.extend_from_slice(&(*numel as u64).to_le_bytes());
        bytes.extend_from_slice(data);
    }
    bytes
}

/// The storages the `pytorch_pickle` target puts beside the fuzzed pickle:
/// keys `0`..`3`, 64 bytes each (16 f32 values).
pub fn fixed_storages() -> Vec<(String, Vec<u8>)> {
    (0..4)
        .map(|k| {
            let bytes: Vec<u8> = (0..16u32)
                .flat_map(|i| (i as f32 * 0.25 - 2.0).to_le_bytes())
                .collect();
            (k.to_string(), bytes)
        })
        .collect()
}

/// A two-tensor state dict over storage `0` (a 4×3 matrix and its transpose
/// view), the seed shape of the PyTorch targets.
pub fn seed_tensors() -> Vec<Tensor> {
    let t = |name: &str, shape: Vec<usize>, stride: Vec<usize>| Tensor {
        name: name.to_string(),
        class: "FloatStorage",
        key: "0".to_string(),
        storage_numel: 16,
        offset: 0,
        shape,
        stride,
    };
    vec![
        t("h.0.attn.c_attn.weight", vec![4, 3], vec![3, 1]),
        t("h.0.attn.c_proj.weight", vec![3, 4], vec![1, 3]),
    ]
}
