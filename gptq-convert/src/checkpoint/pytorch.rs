//! `pytorch_model.bin`: PyTorch's zip format (torch >= 1.6) and, through
//! [`super::pytorch_legacy`], the legacy format before it.
//!
//! A zip checkpoint holds `<folder>/data.pkl` (the pickled state dict, whose
//! tensors are views of storages named by key) and `<folder>/data/<key>` (each
//! storage's raw bytes). Entries are normally stored uncompressed; they are read
//! straight out of the mapping. Deflated entries are decompressed when read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use zip::{CompressionMethod, ZipArchive};

use super::elements::{Endian, strided_to_f32};
use super::mmap::{FileBytes, map_file};
use super::pickle::{Pickle, TensorRef, state_dict_tensors};
use super::pytorch_legacy;
use super::{Checkpoint, DType, TensorMeta};

/// The file's bytes, shared between the reader and the zip archive that reads through them.
#[derive(Clone)]
struct SharedMap(Arc<FileBytes>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

type Archive = ZipArchive<Cursor<SharedMap>>;

/// Where a storage's bytes are.
#[derive(Clone, Debug)]
pub(super) enum StorageBytes {
    /// A byte range of the mapped file.
    Mapped(Range<usize>),
    /// A deflated zip entry: its index in the archive and its uncompressed size.
    Deflated { entry: usize, size: usize },
}

impl StorageBytes {
    fn len(&self) -> usize {
        match self {
            StorageBytes::Mapped(range) => range.len(),
            StorageBytes::Deflated { size, .. } => *size,
        }
    }
}

/// One storage of the file.
#[derive(Debug)]
struct Storage {
    /// Where the bytes come from, for messages (`archive/data/0`, `legacy storage '…'`).
    origin: String,
    bytes: StorageBytes,
}

/// A validated tensor view: `offset + Σ index[d]·stride[d]` elements into the
/// `region` bytes of its storage, every index checked to lie inside the region.
#[derive(Debug)]
struct View {
    storage: usize,
    region: Range<usize>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// One mapped `pytorch_model.bin` (zip or legacy format).
pub struct PytorchFile {
    path: PathBuf,
    map: SharedMap,
    /// The archive, kept for decompressing deflated entries (`None` for legacy files).
    archive: Option<Archive>,
    endian: Endian,
    tensors: Vec<TensorMeta>,
    views: Vec<View>,
    by_name: HashMap<String, usize>,
    storages: Vec<Storage>,
}

impl PytorchFile {
    /// Maps the file and parses its pickle; the storages stay in the mapping.
    /// Every tensor's view is checked against its storage here, so an opened file
    /// can read every float tensor it lists.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::from_file_bytes(path, map_file(path)?)
    }

    /// Parses a checkpoint held in memory (zip or legacy format); `path` names
    /// it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> anyhow::Result<Self> {
        Self::from_file_bytes(path, FileBytes::Owned(bytes))
    }

    fn from_file_bytes(path: &Path, bytes: FileBytes) -> anyhow::Result<Self> {
        let map = SharedMap(Arc::new(bytes));
        let bytes: &[u8] = map.as_ref();
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            open_zip(path, map)
        } else if bytes.first() == Some(&0x80) {
            let layout = pytorch_legacy::parse(path, bytes)?;
            let storages = layout
                .storages
                .into_iter()
                .map(|(key, range)| {
                    let storage = Storage {
                        origin: format!("legacy storage '{key}' at byte {}", range.start),
                        bytes: StorageBytes::Mapped(range),
                    };
                    (key, storage)
                })
                .collect();
            build(path, map, None, layout.endian, layout.tensors, storages)
        } else {
            let head = &bytes[..bytes.len().min(8)];
            bail!(
                "{}: not a PyTorch checkpoint: neither a zip archive (torch >= 1.6) nor a legacy \
                 pickle file (first bytes {head:02x?})",
                path.display()
            )
        }
    }

    /// The bytes of a storage: borrowed from the mapping, or decompressed.
    fn storage_bytes(&self, storage: &Storage) -> anyhow::Result<Cow<'_, [u8]>> {
        match &storage.bytes {
            StorageBytes::Mapped(range) => {
                let bytes: &[u8] = self.map.as_ref();
                bytes
                    .get(range.clone())
                    .map(Cow::Borrowed)
                    .with_context(|| {
                        format!("{}: bytes {range:?} lie outside the file", storage.origin)
                    })
            }
            StorageBytes::Deflated { entry, size } => {
                let archive = self
                    .archive
                    .as_ref()
                    .context("deflated storage without an archive")?;
                inflate(archive, *entry, *size, &storage.origin).map(Cow::Owned)
            }
        }
    }
}

impl Checkpoint for PytorchFile {
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> anyhow::Result<Vec<f32>> {
        let file = self.path.display();
        let &i = self
            .by_name
            .get(name)
            .with_context(|| format!("{file}: no tensor named '{name}'"))?;
        let (meta, view) = (&self.tensors[i], &self.views[i]);
        if !meta.dtype.is_float() {
            bail!(
                "{file}: tensor '{name}' has dtype {}; only F32, F16, BF16 and F64 can be read as f32",
                meta.dtype
            );
        }
        let storage = &self.storages[view.storage];
        let bytes = self
            .storage_bytes(storage)
            .map_err(|e| anyhow!("{file}: tensor '{name}': {e:#}"))?;
        let region = bytes.get(view.region.clone()).with_context(|| {
            format!(
                "{file}: tensor '{name}': bytes {:?} lie outside {}",
                view.region, storage.origin
            )
        })?;
        strided_to_f32(
            region,
            meta.dtype,
            self.endian,
            view.offset,
            &view.shape,
            &view.stride,
        )
        .map_err(|e| {
            anyhow!(
                "{file}: {} ({})",
                e.describe(name, meta.dtype),
                storage.origin
            )
        })
    }

    fn source(&self) -> &Path {
        &self.path
    }

    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

/// A zip entry's location.
#[derive(Clone, Copy, Debug)]
struct Entry {
    index: usize,
    data_start: u64,
    compressed: u64,
    size: u64,
    method: CompressionMethod,
}

fn open_zip(path: &Path, map: SharedMap) -> anyhow::Result<PytorchFile> {
    let file = path.display();
    let mut archive = ZipArchive::new(Cursor::new(map.clone()))
        .map_err(|e| anyhow!("{file}: not a readable zip archive: {e}"))?;
    let mut entries = HashMap::new();
    let mut names = Vec::new();
    for index in 0..archive.len() {
        let f = archive
            .by_index_raw(index)
            .map_err(|e| anyhow!("{file}: zip entry {index}: {e}"))?;
        let name = String::from_utf8_lossy(f.name_raw()).into_owned();
        let data_start = f
            .data_start()
            .with_context(|| format!("{file}: zip entry '{name}': no data offset"))?;
        let entry = Entry {
            index,
            data_start,
            compressed: f.compressed_size(),
            size: f.size(),
            method: f.compression(),
        };
        names.push(name.clone());
        entries.insert(name, entry);
    }

    // The pickle is `<folder>/data.pkl`; the folder's name varies.
    let pickles: Vec<&String> = names
        .iter()
        .filter(|n| matches!(n.rsplit_once('/'), Some((dir, "data.pkl")) if !dir.contains('/')))
        .collect();
    let pkl_name = match pickles.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
            bail!(
                "{file}: the zip archive has no '<folder>/data.pkl' entry, so it is not a PyTorch \
                 checkpoint (entries: {shown:?}{})",
                if names.len() > 5 { ", ..." } else { "" }
            );
        }
        many => bail!("{file}: the zip archive has several data.pkl entries: {many:?}"),
    };
    let folder = pkl_name.trim_end_matches("data.pkl").to_string();
    let bytes: &[u8] = map.as_ref();

    let endian = match entries.get(&format!("{folder}byteorder")) {
        None => Endian::Little,
        Some(entry) => {
            let name = format!("{folder}byteorder");
            let text = read_entry(bytes, &archive, entry, &name, path)?;
            match text.trim_ascii() {
                b"little" => Endian::Little,
                b"big" => Endian::Big,
                other => bail!(
                    "{file}: '{name}' says '{}', expected 'little' or 'big'",
                    String::from_utf8_lossy(other)
                ),
            }
        }
    };

    let pkl_entry = entries
        .get(&pkl_name)
        .with_context(|| format!("{file}: entry '{pkl_name}' vanished"))?;
    let pkl = read_entry(bytes, &archive, pkl_entry, &pkl_name, path)?;
    let pickle = Pickle::parse(&pkl, 0).map_err(|e| anyhow!("{file}: {pkl_name}: {e:#}"))?;
    let tensors = state_dict_tensors(&pickle).map_err(|e| anyhow!("{file}: {pkl_name}: {e:#}"))?;

    let mut storages = HashMap::new();
    for (name, tensor) in &tensors {
        let key = &tensor.storage.key;
        if storages.contains_key(key) {
            continue;
        }
        let entry_name = format!("{folder}data/{key}");
        let entry = entries.get(&entry_name).with_context(|| {
            format!(
                "{file}: storage '{key}' of tensor '{name}' is missing: no entry '{entry_name}'"
            )
        })?;
        let storage_bytes = entry_location(bytes.len(), entry, &entry_name, path)?;
        let storage = Storage {
            origin: format!("entry '{entry_name}'"),
            bytes: storage_bytes,
        };
        storages.insert(key.clone(), storage);
    }
    build(path, map, Some(archive), endian, tensors, storages)
}

/// Where an entry's uncompressed bytes are, checked against the file and the format.
fn entry_location(
    file_len: usize,
    entry: &Entry,
    name: &str,
    path: &Path,
) -> anyhow::Result<StorageBytes> {
    let file = path.display();
    let too_large = || anyhow!("{file}: entry '{name}' is larger than this machine can address");
    let size = usize::try_from(entry.size).map_err(|_| too_large())?;
    match entry.method {
        CompressionMethod::Stored => {
            let start = usize::try_from(entry.data_start).map_err(|_| too_large())?;
            let range = start
                .checked_add(size)
                .map(|end| start..end)
                .filter(|r| r.end <= file_len && entry.compressed == entry.size)
                .with_context(|| {
                    format!(
                        "{file}: entry '{name}' ({} bytes at byte offset {start}) lies outside the \
                         file of {file_len} bytes or has inconsistent sizes",
                        entry.size
                    )
                })?;
            Ok(StorageBytes::Mapped(range))
        }
        CompressionMethod::Deflated => {
            // Deflate cannot expand data more than about 1032:1; a larger claim is corrupt
            // (and would let a tiny file demand a huge allocation).
            let bound = entry.compressed.saturating_mul(1032).saturating_add(1024);
            let end = entry.data_start.checked_add(entry.compressed);
            if entry.size > bound || end.is_none_or(|e| e > file_len as u64) {
                bail!(
                    "{file}: deflated entry '{name}' at byte offset {} has inconsistent sizes \
                     ({} compressed, {} uncompressed)",
                    entry.data_start,
                    entry.compressed,
                    entry.size
                );
            }
            Ok(StorageBytes::Deflated {
                entry: entry.index,
                size,
            })
        }
        other => bail!(
            "{file}: entry '{name}' uses compression method {other}; only stored and deflated \
             entries are supported"
        ),
    }
}

/// An entry's bytes, borrowed from the mapping when stored, else decompressed.
fn read_entry<'m>(
    bytes: &'m [u8],
    archive: &Archive,
    entry: &Entry,
    name: &str,
    path: &Path,
) -> anyhow::Result<Cow<'m, [u8]>> {
    let file = path.display();
    match entry_location(bytes.len(), entry, name, path)? {
        StorageBytes::Mapped(range) => bytes
            .get(range)
            .map(Cow::Borrowed)
            .with_context(|| format!("{file}: entry '{name}' lies outside the file")),
        StorageBytes::Deflated { entry, size } => {
            inflate(archive, entry, size, &format!("{file}: entry '{name}'")).map(Cow::Owned)
        }
    }
}

/// Decompresses entry `index`, which must hold exactly `size` bytes (its CRC is checked).
fn inflate(archive: &Archive, index: usize, size: usize, origin: &str) -> anyhow::Result<Vec<u8>> {
    let mut archive = archive.clone();
    let mut reader = archive
        .by_index(index)
        .map_err(|e| anyhow!("{origin}: cannot read: {e}"))?;
    let mut out = Vec::new();
    // One byte more than expected reaches the end of the stream, where the CRC is checked.
    (&mut reader)
        .take(size as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| anyhow!("{origin}: cannot decompress: {e}"))?;
    if out.len() != size {
        bail!(
            "{origin}: decompressed to {} bytes, expected {size}",
            out.len()
        );
    }
    Ok(out)
}

/// Checks every tensor's view against its storage and assembles the reader.
fn build(
    path: &Path,
    map: SharedMap,
    archive: Option<Archive>,
    endian: Endian,
    tensors: Vec<(String, TensorRef)>,
    mut storages_by_key: HashMap<String, Storage>,
) -> anyhow::Result<PytorchFile> {
    let file = path.display();
    let mut storages = Vec::new();
    let mut storage_index: HashMap<String, usize> = HashMap::new();
    let mut metas = Vec::with_capacity(tensors.len());
    let mut views = Vec::with_capacity(tensors.len());
    let mut by_name = HashMap::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let key = &tensor.storage.key;
        let index = match storage_index.get(key) {
            Some(&i) => i,
            None => {
                let storage = storages_by_key.remove(key).with_context(|| {
                    format!("{file}: storage '{key}' of tensor '{name}' is missing")
                })?;
                storages.push(storage);
                storage_index.insert(key.clone(), storages.len() - 1);
                storages.len() - 1
            }
        };
        let view = validate_view(&name, &tensor, &storages[index], index)
            .map_err(|e| anyhow!("{file}: {e:#}"))?;
        by_name.insert(name.clone(), metas.len());
        metas.push(TensorMeta {
            name,
            dtype: tensor.dtype,
            shape: view.shape.clone(),
        });
        views.push(view);
    }
    Ok(PytorchFile {
        path: path.to_path_buf(),
        map,
        archive,
        endian,
        tensors: metas,
        views,
        by_name,
        storages,
    })
}

/// Checks that the view `tensor` stays within its storage (and legacy storage slice)
/// and holds no more elements than the storage region (an overlapping, expanded view
/// could otherwise ask for an allocation far beyond the file's size).
fn validate_view(
    name: &str,
    tensor: &TensorRef,
    storage: &Storage,
    storage_index: usize,
) -> anyhow::Result<View> {
    let key = &tensor.storage.key;
    let origin = &storage.origin;
    let err = |msg: String| anyhow!("tensor '{name}' (storage '{key}', {origin}): {msg}");
    let elem = tensor
        .dtype
        .size_in_bytes()
        .ok_or_else(|| err(format!("dtype {} has no known element size", tensor.dtype)))?;
    // The storage's declared size, in bytes.
    let storage_elem = tensor
        .storage
        .dtype
        .map_or(Some(1), DType::size_in_bytes)
        .unwrap_or(1);
    let overflow = || err("sizes overflow".to_string());
    let declared = tensor
        .storage
        .numel
        .checked_mul(storage_elem)
        .ok_or_else(overflow)?;
    let available = storage.bytes.len();
    if declared > available {
        return Err(err(format!(
            "the storage declares {declared} bytes but holds only {available}"
        )));
    }
    // A legacy storage may be a slice of its root storage.
    let region = match tensor.storage.view {
        None => 0..declared,
        Some(slice) => {
            let start = slice
                .offset
                .checked_mul(storage_elem)
                .ok_or_else(overflow)?;
            let len = slice.numel.checked_mul(storage_elem).ok_or_else(overflow)?;
            let end = start.checked_add(len).ok_or_else(overflow)?;
            if end > declared {
                return Err(err(format!(
                    "storage slice {start}..{end} (bytes) lies past the storage's {declared} bytes"
                )));
            }
            start..end
        }
    };
    let capacity = region.len() / elem;
    let numel = tensor
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    if numel > 0 {
        let mut last = tensor.offset;
        for (&d, &s) in tensor.shape.iter().zip(&tensor.stride) {
            let step = (d - 1).checked_mul(s).ok_or_else(overflow)?;
            last = last.checked_add(step).ok_or_else(overflow)?;
        }
        if last >= capacity {
            return Err(err(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last}, past the \
                 storage's {capacity} elements of {}",
                tensor.offset, tensor.shape, tensor.stride, tensor.dtype
            )));
        }
        if numel > capacity {
            return Err(err(format!(
                "view of {numel} elements overlaps itself in a storage of {capacity} \
                 (expanded views are not supported)"
            )));
        }
    }
    Ok(View {
        storage: storage_index,
        region,
        offset: tensor.offset,
        shape: tensor.shape.clone(),
        stride: tensor.stride.clone(),
    })
}
