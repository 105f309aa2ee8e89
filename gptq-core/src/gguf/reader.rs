//! Parsing and validation of a whole GGUF file held in memory (normally a
//! read-only mapping): header, metadata, tensor infos and the data layout.
//!
//! Nothing here trusts a count or a length from the file: each one is checked
//! against the bytes that remain before anything is allocated for it, and all
//! arithmetic on file values is checked.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::types::{GgmlType, MetaArray, MetaType, MetaValue};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, align_up};
use crate::error::{Error, Result};

/// Fewest bytes one metadata entry can take: key length, value type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes one tensor info can take: name length, `n_dims`, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Upper bound on capacity reserved up front from a count in the file; beyond
/// it, vectors grow as entries are actually read.
const MAX_PREALLOC: usize = 4096;

/// One tensor of a GGUF file: where its data is and how it is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_qkv.weight`, ...).
    pub name: String,
    /// ggml's `ne`: `dims[0]` is the row length (the fastest-varying dimension).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the dims; saturates at `u64::MAX`,
    /// which never happens for a parsed tensor).
    pub fn n_elements(&self) -> u64 {
        checked_product(&self.dims).unwrap_or(u64::MAX)
    }

    /// Elements per row: `dims[0]`.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .get(1..)
            .and_then(checked_product)
            .unwrap_or(u64::MAX)
    }
}

/// A parsed and validated GGUF file. It does not hold the bytes: tensor data is
/// fetched with [`GgufFile::tensor_data`] from the buffer that was parsed.
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Data alignment in bytes (a power of two).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Position of each key in `metadata`.
    key_index: HashMap<String, usize>,
    /// Position of each name in `tensors`.
    tensor_index: HashMap<String, usize>,
    /// Length of the parsed buffer.
    file_len: u64,
}

impl GgufFile {
    /// Parses and validates the whole structure of a GGUF v2/v3 file: header,
    /// metadata, tensor infos, alignment, and that every tensor's data lies in
    /// the file without overlapping another. Any problem is an error naming the
    /// byte offset, key or tensor; nothing here panics on any input.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        check_magic(bytes)?;
        let mut c = Cursor { bytes, pos: 4 };
        let version = read_version(&mut c)?;
        let n_tensors = c.u64(&|| "the tensor count".into())?;
        let n_kv = c.u64(&|| "the metadata count".into())?;
        check_counts(n_tensors, n_kv, c.remaining())?;

        let (metadata, key_index) = read_metadata(&mut c, n_kv)?;
        let alignment = read_alignment(&metadata, &key_index)?;
        let raw = read_tensor_infos(&mut c, n_tensors)?;

        let data_offset = align_up(c.offset(), alignment).ok_or_else(|| {
            Error::format(
                c.offset(),
                "the data section offset overflows a 64-bit integer",
            )
        })?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for r in raw {
            let info = r.locate(data_offset, alignment, file_len)?;
            tensor_index.insert(info.name.clone(), tensors.len());
            tensors.push(info);
        }
        check_overlaps(&tensors)?;

        Ok(GgufFile {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
            key_index,
            tensor_index,
            file_len,
        })
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key)
            .ok_or_else(|| Error::metadata(key, "missing from the file"))
    }

    /// A non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            let why = match v {
                MetaValue::I8(_) | MetaValue::I16(_) | MetaValue::I32(_) | MetaValue::I64(_) => {
                    "expected a non-negative integer, found a negative value".to_string()
                }
                other => format!(
                    "expected an unsigned integer, found {}",
                    describe_type(other)
                ),
            };
            Error::metadata(key, why)
        })
    }

    /// A float of either width (an `f64` is rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| {
            Error::metadata(key, format!("expected a float, found {}", describe_type(v)))
        })
    }

    /// A string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| {
            Error::metadata(
                key,
                format!("expected a string, found {}", describe_type(v)),
            )
        })
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::String(v)) => Ok(v),
            other => Err(Error::metadata(
                key,
                format!(
                    "expected an array of strings, found {}",
                    describe_type(other)
                ),
            )),
        }
    }

    /// An array of `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::I32(v)) => Ok(v),
            other => Err(Error::metadata(
                key,
                format!("expected an array of i32, found {}", describe_type(other)),
            )),
        }
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .filter(|t| t.name == name)
    }

    /// The data of tensor `t` in `bytes`, which must be the buffer this file was
    /// parsed from (then the range is known to be in bounds). Given another
    /// buffer, the result is empty when the range does not fit in it.
    pub fn tensor_data<'a>(&self, bytes: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        debug_assert_eq!(
            bytes.len() as u64,
            self.file_len,
            "tensor_data called with a buffer other than the parsed one"
        );
        let range = usize::try_from(t.offset).ok().and_then(|start| {
            let len = usize::try_from(t.n_bytes).ok()?;
            Some(start..start.checked_add(len)?)
        });
        range.and_then(|r| bytes.get(r)).unwrap_or(&[])
    }
}

/// A short description of a value's type for error messages (`u32`, `array of string`, ...).
fn describe_type(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => format!("an array of {}", type_name(a.elem_type())),
        other => type_name(other.meta_type()).to_string(),
    }
}

fn type_name(t: MetaType) -> &'static str {
    match t {
        MetaType::U8 => "u8",
        MetaType::I8 => "i8",
        MetaType::U16 => "u16",
        MetaType::I16 => "i16",
        MetaType::U32 => "u32",
        MetaType::I32 => "i32",
        MetaType::F32 => "f32",
        MetaType::Bool => "bool",
        MetaType::String => "string",
        MetaType::Array => "array",
        MetaType::U64 => "u64",
        MetaType::I64 => "i64",
        MetaType::F64 => "f64",
    }
}

fn checked_product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// A description of what is being read, built only when an error needs it.
type What<'w> = &'w dyn Fn() -> String;

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    /// The next `n` bytes, or a truncation error.
    fn take(&mut self, n: u64, what: What) -> Result<&'a [u8]> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| Some(self.pos..self.pos.checked_add(n)?))
            .and_then(|r| self.bytes.get(r));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(Error::format(
                self.offset(),
                format!(
                    "file truncated: needed {n} bytes at offset {} while reading {}, but only {} remain",
                    self.offset(),
                    what(),
                    self.remaining()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: What) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: What) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: `u64` length and that many bytes of UTF-8.
    fn string(&mut self, what: What) -> Result<String> {
        let at = self.offset();
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > self.remaining() {
            return Err(Error::format(
                at,
                format!(
                    "string length {len} of {} exceeds the {} bytes left in the file",
                    what(),
                    self.remaining()
                ),
            ));
        }
        let raw = self.take(len, what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Error::format(
                at + 8 + e.valid_up_to() as u64,
                format!("invalid UTF-8 in {}: {e}", what()),
            )),
        }
    }
}

fn check_magic(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::format(0, "the file is empty, not a GGUF file"));
    }
    let head = &bytes[..bytes.len().min(4)];
    if head == &GGUF_MAGIC[..head.len()] {
        if head.len() < 4 {
            return Err(Error::format(
                0,
                format!(
                    "file truncated: needed 4 bytes at offset 0 while reading the magic, but only {} remain",
                    head.len()
                ),
            ));
        }
        return Ok(());
    }
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let hint = match head {
        b"lmgg" | b"fmgg" | b"tjgg" => " (a legacy GGML/GGMF/GGJT file: convert it to GGUF)",
        [b'P', b'K', 3, 4] => " (a zip archive, such as a PyTorch checkpoint: convert it first)",
        _ => "",
    };
    Err(Error::format(
        0,
        format!(
            "not a GGUF file: starts with bytes {} ({:?}), expected 47 47 55 46 (\"GGUF\"){hint}",
            hex.join(" "),
            String::from_utf8_lossy(head)
        ),
    ))
}

fn read_version(c: &mut Cursor) -> Result<u32> {
    let at = c.offset();
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => Ok(version),
        v if v > 0xffff && (1..=3).contains(&v.swap_bytes()) => Err(Error::format(
            at,
            format!(
                "version reads as {v:#010x}: this is a big-endian GGUF file (version {}), \
                 only little-endian files are supported",
                v.swap_bytes()
            ),
        )),
        1 => Err(Error::format(
            at,
            "unsupported GGUF version 1 (an early draft with 32-bit counts): re-convert the model",
        )),
        v => Err(Error::format(
            at,
            format!("unsupported GGUF version {v} (versions 2 and 3 are supported)"),
        )),
    }
}

fn check_counts(n_tensors: u64, n_kv: u64, remaining: u64) -> Result<()> {
    let need = n_tensors
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .zip(n_kv.checked_mul(MIN_KV_BYTES))
        .and_then(|(a, b)| a.checked_add(b));
    match need {
        Some(need) if need <= remaining => Ok(()),
        _ => Err(Error::format(
            8,
            format!(
                "the header declares {n_tensors} tensors and {n_kv} metadata entries, which need at \
                 least {} bytes, but only {remaining} bytes follow the header",
                need.map_or_else(|| "2^64 or more".to_string(), |n| n.to_string())
            ),
        )),
    }
}

type Metadata = (Vec<(String, MetaValue)>, HashMap<String, usize>);

fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let cap = usize::try_from(n_kv)
        .unwrap_or(usize::MAX)
        .min(MAX_PREALLOC);
    let mut metadata = Vec::with_capacity(cap);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(cap);
    let mut first_seen: Vec<u64> = Vec::with_capacity(cap);
    for i in 0..n_kv {
        let at = c.offset();
        let key = c.string(&|| format!("the key of metadata entry {i}"))?;
        let type_at = c.offset();
        let type_id = c.u32(&|| format!("the value type of metadata key '{key}'"))?;
        let ty = MetaType::from_id(type_id).ok_or_else(|| {
            Error::format(
                type_at,
                format!("metadata key '{key}': unknown value type {type_id}"),
            )
        })?;
        let value = read_value(c, ty, &key)?;
        match index.entry(key) {
            Entry::Occupied(e) => {
                let first = first_seen.get(*e.get()).copied().unwrap_or(0);
                return Err(Error::metadata(
                    e.key().clone(),
                    format!("duplicate key (entries at bytes {first} and {at})"),
                ));
            }
            Entry::Vacant(e) => {
                metadata.push((e.key().clone(), value));
                first_seen.push(at);
                e.insert(metadata.len() - 1);
            }
        }
    }
    Ok((metadata, index))
}

fn read_value(c: &mut Cursor, ty: MetaType, key: &str) -> Result<MetaValue> {
    let what = || format!("the value of metadata key '{key}'");
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(u8::from_le_bytes(c.array(&what)?)),
        MetaType::I8 => MetaValue::I8(i8::from_le_bytes(c.array(&what)?)),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(c.array(&what)?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(c.array(&what)?)),
        MetaType::U32 => MetaValue::U32(u32::from_le_bytes(c.array(&what)?)),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(c.array(&what)?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(c.array(&what)?)),
        MetaType::U64 => MetaValue::U64(u64::from_le_bytes(c.array(&what)?)),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(c.array(&what)?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(c.array(&what)?)),
        MetaType::Bool => {
            let at = c.offset();
            let [b] = c.array(&what)?;
            MetaValue::Bool(parse_bool(b, at, key)?)
        }
        MetaType::String => MetaValue::String(c.string(&what)?),
        MetaType::Array => MetaValue::Array(read_array(c, key, 1)?),
    })
}

fn parse_bool(b: u8, at: u64, key: &str) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::format(
            at,
            format!("metadata key '{key}': bool value {b} is neither 0 nor 1"),
        )),
    }
}

/// Decodes `raw` (a whole number of `N`-byte little-endian scalars).
fn scalars<T, const N: usize>(raw: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
    let (chunks, _) = raw.as_chunks::<N>();
    chunks.iter().map(|&c| decode(c)).collect()
}

/// An array value: element type, count, elements. `depth` is 1 for a value
/// that is an array, 2 for an array inside it, and so on.
fn read_array(c: &mut Cursor, key: &str, depth: usize) -> Result<MetaArray> {
    let at = c.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(Error::format(
            at,
            format!("metadata key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
        ));
    }
    let type_id = c.u32(&|| format!("the element type of array metadata key '{key}'"))?;
    let ty = MetaType::from_id(type_id).ok_or_else(|| {
        Error::format(
            at,
            format!("metadata key '{key}': unknown array element type {type_id}"),
        )
    })?;
    let count_at = c.offset();
    let n = c.u64(&|| format!("the length of array metadata key '{key}'"))?;
    // Smallest encoding of one element: scalars their size, strings a length,
    // arrays an element type and a count.
    let min_elem = match ty.scalar_size() {
        Some(s) => s as u64,
        None if ty == MetaType::String => 8,
        None => 12,
    };
    let need = n.checked_mul(min_elem).filter(|&b| b <= c.remaining());
    let Some(need) = need else {
        return Err(Error::format(
            count_at,
            format!(
                "metadata key '{key}': an array of {n} {} elements does not fit in the {} bytes left in the file",
                type_name(ty),
                c.remaining()
            ),
        ));
    };
    // `n` elements fit in the file, so it is bounded by the file size.
    let len = usize::try_from(n).unwrap_or(usize::MAX);
    let what = || format!("the elements of array metadata key '{key}'");
    Ok(match ty {
        MetaType::U8 => MetaArray::U8(c.take(need, &what)?.to_vec()),
        MetaType::I8 => MetaArray::I8(scalars(c.take(need, &what)?, i8::from_le_bytes)),
        MetaType::U16 => MetaArray::U16(scalars(c.take(need, &what)?, u16::from_le_bytes)),
        MetaType::I16 => MetaArray::I16(scalars(c.take(need, &what)?, i16::from_le_bytes)),
        MetaType::U32 => MetaArray::U32(scalars(c.take(need, &what)?, u32::from_le_bytes)),
        MetaType::I32 => MetaArray::I32(scalars(c.take(need, &what)?, i32::from_le_bytes)),
        MetaType::F32 => MetaArray::F32(scalars(c.take(need, &what)?, f32::from_le_bytes)),
        MetaType::U64 => MetaArray::U64(scalars(c.take(need, &what)?, u64::from_le_bytes)),
        MetaType::I64 => MetaArray::I64(scalars(c.take(need, &what)?, i64::from_le_bytes)),
        MetaType::F64 => MetaArray::F64(scalars(c.take(need, &what)?, f64::from_le_bytes)),
        MetaType::Bool => {
            let start = c.offset();
            let raw = c.take(need, &what)?;
            let mut out = Vec::with_capacity(len);
            for (j, &b) in raw.iter().enumerate() {
                out.push(parse_bool(b, start + j as u64, key)?);
            }
            MetaArray::Bool(out)
        }
        MetaType::String => {
            let mut out = Vec::with_capacity(len.min(MAX_PREALLOC));
            for j in 0..n {
                out.push(c.string(&|| format!("element {j} of array metadata key '{key}'"))?);
            }
            MetaArray::String(out)
        }
        MetaType::Array => {
            let mut out = Vec::with_capacity(len.min(MAX_PREALLOC));
            for _ in 0..n {
                out.push(read_array(c, key, depth + 1)?);
            }
            MetaArray::Array(out)
        }
    })
}

fn read_alignment(metadata: &[(String, MetaValue)], index: &HashMap<String, usize>) -> Result<u64> {
    let Some((_, value)) = index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match *value {
        MetaValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetaValue::U32(a) => Err(Error::metadata(
            ALIGNMENT_KEY,
            format!("alignment {a} is not a power of two"),
        )),
        ref other => Err(Error::metadata(
            ALIGNMENT_KEY,
            format!("expected a u32, found {}", describe_type(other)),
        )),
    }
}

/// A tensor info as read, before its data is located.
struct RawInfo {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    rel_offset: u64,
    /// Where the info starts in the file, for error messages.
    at: u64,
}

fn read_tensor_infos(c: &mut Cursor, n_tensors: u64) -> Result<Vec<RawInfo>> {
    let cap = usize::try_from(n_tensors)
        .unwrap_or(usize::MAX)
        .min(MAX_PREALLOC);
    let mut infos = Vec::with_capacity(cap);
    let mut seen: HashMap<String, u64> = HashMap::with_capacity(cap);
    for i in 0..n_tensors {
        let at = c.offset();
        let name = c.string(&|| format!("the name of tensor info {i}"))?;
        if let Some(&first) = seen.get(&name) {
            return Err(Error::tensor(
                name,
                format!("duplicate tensor name (tensor infos at bytes {first} and {at})"),
            ));
        }
        let what = || format!("the tensor info of '{name}' (at byte {at})");
        let n_dims = c.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(Error::tensor(
                name,
                format!("tensor info at byte {at}: n_dims {n_dims} is outside 1..={MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let dim = c.u64(&what)?;
            if dim == 0 {
                return Err(Error::tensor(
                    name,
                    format!("tensor info at byte {at}: dimension {d} is zero"),
                ));
            }
            dims.push(dim);
        }
        let type_id = c.u32(&what)?;
        let rel_offset = c.u64(&what)?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(Error::UnsupportedType {
                name,
                type_id,
                type_name: GgmlType::name_of_id(type_id),
            });
        };
        seen.insert(name.clone(), at);
        infos.push(RawInfo {
            name,
            dims,
            ty,
            rel_offset,
            at,
        });
    }
    Ok(infos)
}

impl RawInfo {
    /// Checks the shape against the type and places the data in the file.
    fn locate(self, data_offset: u64, alignment: u64, file_len: u64) -> Result<TensorInfo> {
        let RawInfo {
            name,
            dims,
            ty,
            rel_offset,
            at,
        } = self;
        let fail =
            |msg: String| Error::tensor(name.as_str(), format!("tensor info at byte {at}: {msg}"));
        let n_elements = checked_product(&dims)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| fail(format!("element count of dims {dims:?} overflows")))?;
        let row_len = dims.first().copied().unwrap_or(1);
        let block = ty.block_size() as u64;
        if !row_len.is_multiple_of(block) {
            return Err(fail(format!(
                "row length {row_len} is not a multiple of the {ty} block size {block}"
            )));
        }
        let n_bytes = (n_elements / block)
            .checked_mul(ty.type_size() as u64)
            .ok_or_else(|| fail(format!("byte size of {n_elements} {ty} elements overflows")))?;
        if !rel_offset.is_multiple_of(alignment) {
            return Err(fail(format!(
                "data offset {rel_offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let offset = data_offset.checked_add(rel_offset);
        let end = offset.and_then(|o| o.checked_add(n_bytes));
        match (offset, end) {
            (Some(offset), Some(end)) if end <= file_len => Ok(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_bytes,
            }),
            _ => Err(fail(format!(
                "data ({n_bytes} bytes at data offset {rel_offset}, absolute {}) extends past the \
                 end of the file ({file_len} bytes)",
                offset.map_or_else(|| "overflowing".to_string(), |o| o.to_string())
            ))),
        }
    }
}

/// Tensors may appear in any order, but their byte ranges must not intersect.
fn check_overlaps(tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| (t.offset, t.n_bytes));
    for pair in order.windows(2) {
        let [a, b] = pair else { continue };
        let a_end = a.offset + a.n_bytes;
        if b.offset < a_end {
            return Err(Error::tensor(
                b.name.as_str(),
                format!(
                    "data at bytes {}..{} overlaps tensor '{}' at bytes {}..{a_end}",
                    b.offset,
                    b.offset + b.n_bytes,
                    a.name,
                    a.offset
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds raw GGUF bytes by hand, to make files the writer refuses to make.
    #[derive(Default)]
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
            let mut r = Raw(b"GGUF".to_vec());
            r.u32(version).u64(n_tensors).u64(n_kv);
            r
        }
        fn u32(&mut self, v: u32) -> &mut Raw {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Raw {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Raw {
            self.0.extend_from_slice(b);
            self
        }
        fn str(&mut self, s: &str) -> &mut Raw {
            self.u64(s.len() as u64).bytes(s.as_bytes())
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
            self.str(key).u32(4).u32(v)
        }
        fn info(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        /// Pads to `align` and appends `n` data bytes.
        fn data(&mut self, align: usize, n: usize) -> &mut Raw {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self.0.extend(std::iter::repeat_n(0xabu8, n));
            self
        }
        fn parse(&self) -> Result<GgufFile> {
            GgufFile::parse(&self.0)
        }
    }

    fn format_err<T: std::fmt::Debug>(r: Result<T>) -> (u64, String) {
        match r {
            Err(Error::Format { offset, msg }) => (offset, msg),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    fn tensor_err<T: std::fmt::Debug>(r: Result<T>) -> (String, String) {
        match r {
            Err(Error::Tensor { name, msg }) => (name, msg),
            other => panic!("expected a tensor error, got {other:?}"),
        }
    }

    fn metadata_err<T: std::fmt::Debug>(r: Result<T>) -> (String, String) {
        match r {
            Err(Error::Metadata { key, msg }) => (key, msg),
            other => panic!("expected a metadata error, got {other:?}"),
        }
    }

    /// One f32 tensor of 8 elements and one metadata entry.
    fn small() -> Raw {
        let mut r = Raw::header(3, 1, 1);
        r.kv_u32("a.b", 7).info("t", &[8], 0, 0).data(32, 32);
        r
    }

    #[test]
    fn parses_a_hand_made_file() {
        let r = small();
        let f = r.parse().unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.get_u64("a.b").unwrap(), 7);
        let t = f.tensor("t").unwrap();
        assert_eq!(t.offset, f.data_offset);
        assert_eq!(f.data_offset % 32, 0);
        assert_eq!(t.n_bytes, 32);
        assert_eq!(f.tensor_data(&r.0, t), &[0xab; 32][..]);
    }

    #[test]
    fn empty_and_short_files() {
        let (off, msg) = format_err(GgufFile::parse(b""));
        assert_eq!(off, 0);
        assert!(msg.contains("empty"), "{msg}");
        let (_, msg) = format_err(GgufFile::parse(b"GG"));
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn wrong_magic() {
        let mut r = small();
        r.0[..4].copy_from_slice(b"GGML");
        let (off, msg) = format_err(r.parse());
        assert_eq!(off, 0);
        assert!(msg.contains("not a GGUF file"), "{msg}");
        assert!(msg.contains("47 47 4d 4c"), "{msg}");
        let (_, msg) = format_err(GgufFile::parse(b"PK\x03\x04rest"));
        assert!(msg.contains("zip"), "{msg}");
    }

    #[test]
    fn versions() {
        let mut r = small();
        r.0[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(r.parse().unwrap().version, 2);
        for (v, want) in [
            (1u32, "unsupported GGUF version 1"),
            (4, "unsupported GGUF version 4"),
            (0x0300_0000, "big-endian"),
        ] {
            r.0[4..8].copy_from_slice(&v.to_le_bytes());
            let (off, msg) = format_err(r.parse());
            assert_eq!(off, 4);
            assert!(msg.contains(want), "{v}: {msg}");
        }
    }

    #[test]
    fn unknown_value_type() {
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(13).u32(0);
        let (off, msg) = format_err(r.parse());
        assert_eq!(off, 24 + 8 + 1);
        assert!(msg.contains("unknown value type 13"), "{msg}");
        assert!(msg.contains("'k'"), "{msg}");

        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(9).u32(77).u64(0);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("unknown array element type 77"), "{msg}");
    }

    #[test]
    fn bad_string_lengths() {
        let mut r = Raw::header(3, 0, 1);
        r.u64(u64::MAX).bytes(b"key").u32(4).u32(0);
        let (off, msg) = format_err(r.parse());
        assert_eq!(off, 24);
        assert!(msg.contains("string length"), "{msg}");

        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(8).u64(1 << 40).bytes(b"abcdef");
        let (off, msg) = format_err(r.parse());
        assert_eq!(off, 24 + 9 + 4);
        assert!(msg.contains("string length 1099511627776"), "{msg}");

        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(8).str("ab\u{e9}").0.pop();
        r.bytes(b"\xff");
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("invalid UTF-8"), "{msg}");
    }

    #[test]
    fn hostile_counts() {
        let r = Raw::header(3, u64::MAX, 0);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("tensors"), "{msg}");
        let mut r = Raw::header(3, 1000, 1);
        r.kv_u32("a", 1).info("t", &[8], 0, 0).data(32, 32);
        let (off, msg) = format_err(r.parse());
        assert_eq!(off, 8);
        assert!(msg.contains("1000 tensors"), "{msg}");
        let r = Raw::header(3, 0, u64::MAX / 2);
        format_err(r.parse());
        // An array count far beyond the file.
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(9).u32(8).u64(u64::MAX / 4).u64(0);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("does not fit"), "{msg}");
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(9).u32(4).u64(1 << 61).u64(0);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("does not fit"), "{msg}");
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(9);
        for _ in 0..MAX_ARRAY_DEPTH + 1 {
            r.u32(9).u64(1);
        }
        r.u32(4).u64(0);
        // pad so that the count check passes
        r.bytes(&[0; 64]);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("nested deeper"), "{msg}");

        let mut r = Raw::header(3, 0, 1);
        r.str("ok").u32(9);
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            r.u32(9).u64(1);
        }
        r.u32(4).u64(1).u32(5);
        let f = r.parse().unwrap();
        let mut a = f.get("ok").unwrap().as_array().unwrap();
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            let MetaArray::Array(inner) = a else { panic!() };
            a = &inner[0];
        }
        assert_eq!(a, &MetaArray::U32(vec![5]));
    }

    #[test]
    fn bools_must_be_zero_or_one() {
        let mut r = Raw::header(3, 0, 1);
        r.str("b").u32(7).bytes(&[2]);
        let (_, msg) = format_err(r.parse());
        assert!(msg.contains("bool"), "{msg}");
    }

    #[test]
    fn duplicate_key() {
        let mut r = Raw::header(3, 0, 2);
        r.kv_u32("x", 1).kv_u32("x", 2);
        let (key, msg) = metadata_err(r.parse());
        assert_eq!(key, "x");
        assert!(
            msg.contains("duplicate key (entries at bytes 24 and 41)"),
            "{msg}"
        );
    }

    #[test]
    fn alignment_key() {
        for (v, want) in [(48u32, "not a power of two"), (0, "not a power of two")] {
            let mut r = Raw::header(3, 0, 1);
            r.kv_u32(ALIGNMENT_KEY, v);
            let (key, msg) = metadata_err(r.parse());
            assert_eq!(key, ALIGNMENT_KEY);
            assert!(msg.contains(want), "{msg}");
        }
        let mut r = Raw::header(3, 0, 1);
        r.str(ALIGNMENT_KEY).u32(10).u64(64);
        let (_, msg) = metadata_err(r.parse());
        assert!(msg.contains("expected a u32, found u64"), "{msg}");

        let mut r = Raw::header(3, 1, 1);
        r.kv_u32(ALIGNMENT_KEY, 128)
            .info("t", &[4], 0, 0)
            .data(128, 16);
        let f = r.parse().unwrap();
        assert_eq!(f.alignment, 128);
        assert_eq!(f.data_offset, 128);
    }

    #[test]
    fn duplicate_tensor_name() {
        let mut r = Raw::header(3, 2, 0);
        r.info("w", &[8], 0, 0).info("w", &[8], 0, 32).data(32, 64);
        let (name, msg) = tensor_err(r.parse());
        assert_eq!(name, "w");
        assert!(msg.contains("duplicate tensor name"), "{msg}");
    }

    #[test]
    fn unknown_tensor_type() {
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8], 4, 0).data(32, 64);
        match r.parse() {
            Err(Error::UnsupportedType {
                name,
                type_id,
                type_name,
            }) => {
                assert_eq!((name.as_str(), type_id, type_name), ("w", 4, "unknown"));
            }
            other => panic!("{other:?}"),
        }
        // Known to ggml but not computable here: still listed.
        let mut r = Raw::header(3, 1, 0);
        r.info("k", &[256], GgmlType::Q6_K.id(), 0).data(32, 210);
        let f = r.parse().unwrap();
        assert_eq!(f.tensors[0].ty, GgmlType::Q6_K);
        assert_eq!(f.tensors[0].n_bytes, 210);
    }

    #[test]
    fn bad_dims() {
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8, 1, 1, 1, 1], 0, 0).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("n_dims 5"), "{msg}");
        assert!(msg.contains("at byte 24"), "{msg}");
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[], 0, 0).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("n_dims 0"), "{msg}");
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8, 0], 0, 0).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("dimension 1 is zero"), "{msg}");
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[1 << 32, 1 << 32], 0, 0).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("overflows"), "{msg}");
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[1 << 62], 0, 0).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("overflows"), "{msg}");
    }

    #[test]
    fn row_not_divisible_by_block() {
        let mut r = Raw::header(3, 1, 0);
        r.info("q", &[48, 2], GgmlType::Q8_0.id(), 0).data(32, 200);
        let (name, msg) = tensor_err(r.parse());
        assert_eq!(name, "q");
        assert!(
            msg.contains("row length 48 is not a multiple of the Q8_0 block size 32"),
            "{msg}"
        );
    }

    #[test]
    fn offset_unaligned() {
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8], 0, 4).data(32, 64);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("not a multiple of the alignment 32"), "{msg}");
    }

    #[test]
    fn data_out_of_bounds() {
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8], 0, 0).data(32, 31);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("past the end of the file"), "{msg}");
        let mut r = Raw::header(3, 1, 0);
        r.info("w", &[8], 0, u64::MAX - 31).data(32, 32);
        let (_, msg) = tensor_err(r.parse());
        assert!(msg.contains("past the end"), "{msg}");
    }

    #[test]
    fn overlapping_tensors() {
        let mut r = Raw::header(3, 2, 0);
        r.info("a", &[16], 0, 0).info("b", &[8], 0, 32).data(32, 96);
        let (name, msg) = tensor_err(r.parse());
        assert_eq!(name, "b");
        assert!(msg.contains("overlaps tensor 'a'"), "{msg}");
        // Out of order but disjoint is fine.
        let mut r = Raw::header(3, 2, 0);
        r.info("a", &[8], 0, 32).info("b", &[8], 0, 0).data(32, 64);
        let f = r.parse().unwrap();
        assert!(f.tensors[0].offset > f.tensors[1].offset);
    }

    #[test]
    fn typed_getters() {
        let mut r = Raw::header(3, 0, 6);
        r.kv_u32("u", 5);
        r.str("neg").u32(5).u32(-3i32 as u32);
        r.str("f").u32(12).bytes(&1.5f64.to_le_bytes());
        r.str("s").u32(8).str("hi");
        r.str("sa").u32(9).u32(8).u64(2).str("x").str("yz");
        r.str("ia").u32(9).u32(5).u64(2).u32(1).u32(-1i32 as u32);
        let f = r.parse().unwrap();
        assert_eq!(f.get_u64("u").unwrap(), 5);
        assert!(metadata_err(f.get_u64("neg")).1.contains("negative"));
        assert!(metadata_err(f.get_u64("s")).1.contains("string"));
        assert!(metadata_err(f.get_u64("nope")).1.contains("missing"));
        assert_eq!(f.get_f32("f").unwrap(), 1.5);
        assert!(f.get_f32("u").is_err());
        assert_eq!(f.get_str("s").unwrap(), "hi");
        assert!(f.get_str("u").is_err());
        assert_eq!(f.get_str_array("sa").unwrap(), ["x", "yz"]);
        let (_, msg) = metadata_err(f.get_str_array("ia"));
        assert!(msg.contains("an array of i32"), "{msg}");
        assert_eq!(f.get_i32_array("ia").unwrap(), [1, -1]);
        assert!(f.get_i32_array("sa").is_err());
        assert!(f.tensor("none").is_none());
    }

    #[test]
    // About 1,000 parses: 90 s under Miri; the fuzz target covers it there.
    #[cfg_attr(miri, ignore)]
    fn truncation_everywhere_and_byte_flips_never_panic() {
        let mut r = Raw::header(3, 2, 3);
        r.kv_u32("a", 7)
            .str("s")
            .u32(9)
            .u32(8)
            .u64(2)
            .str("x")
            .str("yz")
            .str("n")
            .u32(9)
            .u32(9)
            .u64(1)
            .u32(5)
            .u64(1)
            .u32(3)
            .info("t", &[8], 0, 0)
            .info("q", &[32, 2], GgmlType::Q8_0.id(), 32)
            .data(32, 32 + 68);
        let bytes = r.0;
        GgufFile::parse(&bytes).unwrap();
        for len in 0..bytes.len() {
            assert!(
                GgufFile::parse(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        let header_end = bytes.len() - 100;
        let mut b = bytes.clone();
        for i in 0..header_end {
            for x in [0xffu8, 0x01, 0x80] {
                b[i] ^= x;
                let _ = GgufFile::parse(&b);
                b[i] ^= x;
            }
        }
    }
}
