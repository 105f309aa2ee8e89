//! A streaming GGUF v3 writer: the header is built from the metadata and the
//! planned tensors, then the tensors' bytes are written one at a time in the
//! order they were added, each padded to the alignment (as ggml writes them,
//! so that llama.cpp, which expects the tensors back to back, reads the file).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use super::types::{GgmlType, MetaArray, MetaValue};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_ARRAY_DEPTH, MAX_DIMS,
    MAX_TENSOR_NAME_BYTES, align_up,
};
use crate::error::{Error, Result};

/// The name I/O errors carry: the writer does not know which file it writes to.
const OUTPUT_NAME: &str = "<GGUF output>";

fn io_error(e: std::io::Error) -> Error {
    Error::io(PathBuf::from(OUTPUT_NAME), e)
}

/// A tensor whose place in the data section is decided.
#[derive(Clone, Debug)]
struct Planned {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    /// Offset relative to the data section.
    rel_offset: u64,
    n_bytes: u64,
}

/// Collects metadata and tensor infos, then writes the file through
/// [`GgufWriter::begin`] and a [`TensorDataWriter`].
///
/// ```no_run
/// # use gptq_core::gguf::{GgufWriter, GgmlType, MetaValue, WRITE_ALIGNMENT};
/// # fn main() -> gptq_core::Result<()> {
/// let mut w = GgufWriter::new(WRITE_ALIGNMENT)?;
/// w.add_metadata("general.architecture", MetaValue::String("gpt2".into()))?;
/// w.add_tensor("output_norm.weight", &[768], GgmlType::F32)?;
/// let file = std::io::BufWriter::new(std::fs::File::create("out.gguf").unwrap());
/// let mut data = w.begin(file)?;
/// data.write_tensor("output_norm.weight", &[0u8; 768 * 4])?;
/// data.finish()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    keys: HashSet<String>,
    tensors: Vec<Planned>,
    names: HashSet<String>,
    /// Size of the data section so far, padding included.
    data_size: u64,
}

impl GgufWriter {
    /// A writer with this data alignment, a power of two that fits in a `u32`.
    /// `general.alignment` is put in the metadata (first) unless the alignment
    /// is ggml's default of 32.
    pub fn new(alignment: u64) -> Result<GgufWriter> {
        let Some(a32) = u32::try_from(alignment)
            .ok()
            .filter(|a| a.is_power_of_two())
        else {
            return Err(Error::InvalidArgument(format!(
                "GGUF alignment {alignment} is not a power of two that fits in a u32"
            )));
        };
        let mut w = GgufWriter {
            alignment,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            data_size: 0,
        };
        if alignment != DEFAULT_ALIGNMENT {
            w.add_metadata(ALIGNMENT_KEY, MetaValue::U32(a32))?;
        }
        Ok(w)
    }

    /// The data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Bytes the data section will take, padding included.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Adds a metadata entry; entries are written in the order they are added.
    /// Duplicate keys are refused (`general.alignment` is set by [`GgufWriter::new`]).
    pub fn add_metadata(&mut self, key: &str, value: MetaValue) -> Result<()> {
        if key.is_empty() || key.len() > u16::MAX as usize {
            return Err(Error::metadata(
                key,
                format!("keys must be 1 to {} bytes long", u16::MAX),
            ));
        }
        if self.keys.contains(key) {
            let why = if key == ALIGNMENT_KEY {
                "duplicate key: the alignment is set by GgufWriter::new"
            } else {
                "duplicate key"
            };
            return Err(Error::metadata(key, why));
        }
        if let MetaValue::Array(a) = &value {
            let depth = array_depth(a);
            if depth > MAX_ARRAY_DEPTH {
                return Err(Error::metadata(
                    key,
                    format!(
                        "arrays nested {depth} deep; at most {MAX_ARRAY_DEPTH} levels are allowed"
                    ),
                ));
            }
        }
        self.keys.insert(key.to_owned());
        self.metadata.push((key.to_owned(), value));
        Ok(())
    }

    /// Plans a tensor with ggml dims (`dims[0]` is the row length) and type.
    /// Its data must later be written in the order the tensors were added.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> Result<()> {
        let fail = |msg: String| Err(Error::tensor(name, msg));
        if name.is_empty() || name.len() >= MAX_TENSOR_NAME_BYTES {
            return fail(format!(
                "names must be 1 to {} bytes long for ggml to load them",
                MAX_TENSOR_NAME_BYTES - 1
            ));
        }
        if self.names.contains(name) {
            return fail("duplicate tensor name".into());
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return fail(format!(
                "{} dims given; a tensor has 1 to {MAX_DIMS}",
                dims.len()
            ));
        }
        if dims.contains(&0) {
            return fail(format!("dims {dims:?} contain a zero"));
        }
        let Some(n_elements) = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
        else {
            return fail(format!("element count of dims {dims:?} overflows"));
        };
        let block = ty.block_size() as u64;
        if !dims[0].is_multiple_of(block) {
            return fail(format!(
                "row length {} is not a multiple of the {ty} block size {block}",
                dims[0]
            ));
        }
        let n_bytes = (n_elements / block).checked_mul(ty.type_size() as u64);
        let rel_offset = align_up(self.data_size, self.alignment);
        let plan = n_bytes.zip(rel_offset).and_then(|(n_bytes, rel_offset)| {
            let end = rel_offset.checked_add(n_bytes)?;
            Some((n_bytes, rel_offset, end))
        });
        let Some((n_bytes, rel_offset, end)) = plan else {
            return fail("the data section size overflows".into());
        };
        self.names.insert(name.to_owned());
        self.tensors.push(Planned {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ty,
            rel_offset,
            n_bytes,
        });
        self.data_size = align_up(end, self.alignment).unwrap_or(end);
        Ok(())
    }

    /// The header, metadata, tensor infos and padding up to the data section.
    fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        put_u32(&mut out, GGUF_VERSION);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            put_u32(&mut out, value.meta_type() as u32);
            put_value(&mut out, value);
        }
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.ty.id());
            put_u64(&mut out, t.rel_offset);
        }
        let padded = align_up(out.len() as u64, self.alignment).unwrap_or(out.len() as u64);
        out.resize(usize::try_from(padded).unwrap_or(out.len()), 0);
        out
    }

    /// Writes the header, metadata, tensor infos and the padding that ends
    /// them; returns the offset of the data section (the bytes written).
    pub fn write_header<W: Write>(&self, w: &mut W) -> Result<u64> {
        let header = self.header_bytes();
        w.write_all(&header).map_err(io_error)?;
        Ok(header.len() as u64)
    }

    /// Writes the header to `w` and returns the writer for the tensor data.
    /// `w` should be buffered (a `BufWriter`).
    pub fn begin<W: Write>(self, mut w: W) -> Result<TensorDataWriter<W>> {
        let data_offset = self.write_header(&mut w)?;
        Ok(TensorDataWriter {
            w: Some(w),
            alignment: self.alignment,
            tensors: self.tensors,
            next: 0,
            data_offset,
            written: 0,
        })
    }
}

fn array_depth(a: &MetaArray) -> usize {
    match a {
        MetaArray::Array(inner) => 1 + inner.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => put_array(out, a),
    }
}

/// Element type, count, then the elements (an inner array is itself element
/// type, count and elements).
fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    put_u32(out, a.elem_type() as u32);
    put_u64(out, a.len() as u64);
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], enc: fn(T) -> [u8; N]) {
        out.reserve(v.len() * N);
        for &x in v {
            out.extend_from_slice(&enc(x));
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
        MetaArray::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}

/// Streams the tensor data after the header, one tensor at a time, in the
/// order the tensors were added to the [`GgufWriter`].
#[derive(Debug)]
pub struct TensorDataWriter<W> {
    /// `None` after an I/O error: the output is then incomplete and every
    /// further call fails.
    w: Option<W>,
    alignment: u64,
    tensors: Vec<Planned>,
    next: usize,
    data_offset: u64,
    /// Bytes of the data section written so far.
    written: u64,
}

impl<W: Write> TensorDataWriter<W> {
    /// Offset of the data section in the output.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Name, dims and type of the tensor whose data is expected next.
    pub fn next_tensor(&self) -> Option<(&str, &[u64], GgmlType)> {
        self.tensors
            .get(self.next)
            .map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty))
    }

    /// Writes the data of the next tensor (exactly its size in bytes), then
    /// zero padding up to the alignment.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(Error::tensor(
                name,
                format!(
                    "all {} planned tensors have already been written",
                    self.tensors.len()
                ),
            ));
        };
        if t.name != name {
            return Err(Error::tensor(
                name,
                format!(
                    "tensor '{}' was expected next: tensor data must be written in the order the tensors were added",
                    t.name
                ),
            ));
        }
        if data.len() as u64 != t.n_bytes {
            return Err(Error::tensor(
                name,
                format!(
                    "{} bytes of data given, but a {} tensor of dims {:?} takes {}",
                    data.len(),
                    t.ty,
                    t.dims,
                    t.n_bytes
                ),
            ));
        }
        debug_assert_eq!(self.written, t.rel_offset);
        let end = t.rel_offset + t.n_bytes;
        let padded = align_up(end, self.alignment).unwrap_or(end);
        let Some(w) = self.w.as_mut() else {
            return Err(Error::tensor(
                name,
                "an earlier write to the output failed; the file is incomplete",
            ));
        };
        const ZEROS: [u8; 64] = [0; 64];
        let mut result = w.write_all(data);
        let mut pad = padded - end;
        while result.is_ok() && pad > 0 {
            let n = pad.min(ZEROS.len() as u64) as usize;
            result = w.write_all(&ZEROS[..n]);
            pad -= n as u64;
        }
        if let Err(e) = result {
            self.w = None;
            return Err(io_error(e));
        }
        self.written = padded;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, flushes and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(Error::tensor(
                t.name.as_str(),
                format!(
                    "tensor data not written ({} of {} tensors missing)",
                    self.tensors.len() - self.next,
                    self.tensors.len()
                ),
            ));
        }
        let Some(mut w) = self.w.take() else {
            return Err(Error::InvalidArgument(
                "an earlier write to the GGUF output failed; the file is incomplete".into(),
            ));
        };
        w.flush().map_err(io_error)?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, WRITE_ALIGNMENT};

    #[test]
    fn tiny_file_layout_matches_ggml_byte_for_byte() {
        let mut w = GgufWriter::new(32).unwrap();
        w.add_metadata("k", MetaValue::U32(0x01020304)).unwrap();
        w.add_tensor("t", &[2], GgmlType::F32).unwrap();
        let mut data = w.begin(Vec::new()).unwrap();
        assert_eq!(data.data_offset(), 96);
        data.write_tensor("t", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let bytes = data.finish().unwrap();

        let mut want = Vec::new();
        want.extend_from_slice(&[0x47, 0x47, 0x55, 0x46]); // "GGUF"
        want.extend_from_slice(&[3, 0, 0, 0]); // version 3
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // 1 tensor
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // 1 kv (no alignment key at 32)
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b'k']); // key
        want.extend_from_slice(&[4, 0, 0, 0]); // GGUF_TYPE_UINT32
        want.extend_from_slice(&[4, 3, 2, 1]); // value
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b't']); // name
        want.extend_from_slice(&[1, 0, 0, 0]); // n_dims
        want.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]); // ne[0]
        want.extend_from_slice(&[0, 0, 0, 0]); // GGML_TYPE_F32
        want.extend_from_slice(&[0; 8]); // offset 0
        assert_eq!(want.len(), 74);
        want.resize(96, 0); // padding to 32
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.resize(128, 0); // trailing padding, as ggml writes it
        assert_eq!(bytes, want);

        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.data_offset, 96);
        assert_eq!(f.tensors[0].offset, 96);
        assert_eq!(
            f.tensor_data(&bytes, &f.tensors[0]),
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn alignment_key_written_only_when_not_default() {
        let w = GgufWriter::new(WRITE_ALIGNMENT).unwrap();
        let mut out = Vec::new();
        let off = w.write_header(&mut out).unwrap();
        assert_eq!(off, 64);
        assert_eq!(off as usize, out.len());
        let f = GgufFile::parse(&out).unwrap();
        assert_eq!(
            f.metadata,
            vec![(ALIGNMENT_KEY.to_string(), MetaValue::U32(64))]
        );
        assert_eq!(f.alignment, 64);

        let w = GgufWriter::new(32).unwrap();
        let mut out = Vec::new();
        w.write_header(&mut out).unwrap();
        assert!(GgufFile::parse(&out).unwrap().metadata.is_empty());

        for bad in [0u64, 3, 48, 1 << 32] {
            assert!(matches!(
                GgufWriter::new(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
        let mut w = GgufWriter::new(64).unwrap();
        let e = w
            .add_metadata(ALIGNMENT_KEY, MetaValue::U32(64))
            .unwrap_err();
        assert!(e.to_string().contains("set by GgufWriter::new"), "{e}");
    }

    #[test]
    fn refuses_bad_metadata_and_tensors() {
        let mut w = GgufWriter::new(64).unwrap();
        w.add_metadata("a", MetaValue::Bool(true)).unwrap();
        assert!(matches!(
            w.add_metadata("a", MetaValue::Bool(false)),
            Err(Error::Metadata { .. })
        ));
        assert!(w.add_metadata("", MetaValue::U8(0)).is_err());
        let mut deep = MetaArray::U8(vec![1]);
        for _ in 0..MAX_ARRAY_DEPTH {
            deep = MetaArray::Array(vec![deep]);
        }
        assert!(w.add_metadata("deep", MetaValue::Array(deep)).is_err());

        w.add_tensor("x", &[32, 3], GgmlType::Q4_0).unwrap();
        let tensor_msg = |r: Result<()>| match r {
            Err(Error::Tensor { msg, .. }) => msg,
            other => panic!("{other:?}"),
        };
        assert!(tensor_msg(w.add_tensor("x", &[32], GgmlType::F32)).contains("duplicate"));
        assert!(tensor_msg(w.add_tensor("y", &[33], GgmlType::Q8_0)).contains("block size 32"));
        assert!(tensor_msg(w.add_tensor("y", &[], GgmlType::F32)).contains("0 dims"));
        assert!(tensor_msg(w.add_tensor("y", &[1; 5], GgmlType::F32)).contains("5 dims"));
        assert!(tensor_msg(w.add_tensor("y", &[4, 0], GgmlType::F32)).contains("zero"));
        assert!(tensor_msg(w.add_tensor("y", &[1 << 40; 2], GgmlType::F32)).contains("overflows"));
        assert!(tensor_msg(w.add_tensor("y", &[1 << 62], GgmlType::F32)).contains("overflows"));
        let long = "n".repeat(MAX_TENSOR_NAME_BYTES);
        assert!(tensor_msg(w.add_tensor(&long, &[1], GgmlType::F32)).contains("bytes long"));
        w.add_tensor(&long[1..], &[1], GgmlType::F32).unwrap();
        assert_eq!(w.data_size(), 64 + 64);
    }

    #[test]
    fn data_must_come_in_order_with_exact_sizes() {
        let mut w = GgufWriter::new(64).unwrap();
        w.add_tensor("a", &[4], GgmlType::F32).unwrap();
        w.add_tensor("b", &[32], GgmlType::Q8_0).unwrap();
        let mut d = w.begin(Vec::new()).unwrap();
        assert_eq!(d.next_tensor(), Some(("a", &[4u64][..], GgmlType::F32)));
        assert!(d.write_tensor("b", &[0; 34]).is_err());
        assert!(d.write_tensor("a", &[0; 15]).is_err());
        d.write_tensor("a", &[0; 16]).unwrap();
        let mut d2 = GgufWriter::new(64).unwrap();
        d2.add_tensor("only", &[1], GgmlType::F32).unwrap();
        let d2 = d2.begin(Vec::new()).unwrap();
        match d2.finish() {
            Err(Error::Tensor { name, msg }) => {
                assert_eq!(name, "only");
                assert!(msg.contains("1 of 1 tensors missing"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        d.write_tensor("b", &[1; 34]).unwrap();
        assert!(d.write_tensor("c", &[]).is_err());
        let bytes = d.finish().unwrap();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(bytes.len() as u64, f.data_offset + 128);
        assert_eq!(f.tensor("b").unwrap().offset, f.data_offset + 64);
    }

    #[test]
    fn io_errors_poison_the_writer() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk full"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = GgufWriter::new(64).unwrap();
        w.add_tensor("a", &[64], GgmlType::F32).unwrap();
        w.add_tensor("b", &[64], GgmlType::F32).unwrap();
        assert!(matches!(w.clone().begin(Full(10)), Err(Error::Io { .. })));
        let mut d = w.begin(Full(200)).unwrap();
        assert!(matches!(
            d.write_tensor("a", &[0; 256]),
            Err(Error::Io { .. })
        ));
        assert!(d.write_tensor("a", &[0; 256]).is_err());
        assert!(d.finish().is_err());
    }
}
