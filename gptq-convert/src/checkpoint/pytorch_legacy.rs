//! The legacy `torch.save` format (torch < 1.6, and `_use_new_zipfile_serialization=False`),
//! in which the original 2019 hub `gpt2` checkpoint is stored.
//!
//! Layout: five pickles back to back — the magic number `0x1950a86a20f9469cfc6c`,
//! the protocol version 1001, a `sys_info` dict (byte order, type sizes), the state
//! dict (storages as persistent ids), the list of storage keys — then, for each key
//! in that list, the storage as a u64 element count followed by its raw elements.
//! torch wrote the elements little-endian whatever the machine; the count is in the
//! writer's byte order, which `sys_info` records.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::DType;
use super::elements::Endian;
use super::pickle::{Object, Pickle, TensorRef, state_dict_tensors};

/// The first pickle of a legacy file.
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The second pickle: the legacy format's version.
const PROTOCOL_VERSION: i128 = 1001;

/// What a legacy file holds: its tensors, and where each root storage's bytes are.
pub(super) struct LegacyLayout {
    /// The state dict's tensors in order.
    pub tensors: Vec<(String, TensorRef)>,
    /// Root storage key → byte range in the file.
    pub storages: Vec<(String, Range<usize>)>,
    /// Byte order of the storages' elements.
    pub endian: Endian,
}

/// Parses the legacy format's pickles and locates its storages.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<LegacyLayout> {
    let file = path.display();
    let mut pos = 0usize;
    let mut next = |what: &str| -> anyhow::Result<Pickle> {
        let rest = bytes.get(pos..).unwrap_or_default();
        let pickle = Pickle::parse(rest, pos)
            .map_err(|e| anyhow!("{file}: legacy PyTorch file: {what}: {e:#}"))?;
        pos += pickle.end();
        Ok(pickle)
    };

    let magic = next("magic number")?;
    if magic.get(magic.root()) != Some(&Object::Int(MAGIC)) {
        bail!("{file}: not a PyTorch checkpoint: a pickle, but without torch's magic number");
    }
    let version = next("protocol version")?;
    match version.get(version.root()) {
        Some(Object::Int(PROTOCOL_VERSION)) => {}
        other => bail!(
            "{file}: legacy PyTorch file: unsupported protocol version {other:?} (expected 1001)"
        ),
    }
    let sys_info = next("sys_info")?;
    let count_order = match dict_get(&sys_info, "little_endian") {
        Some(Object::Bool(false)) => Endian::Big,
        _ => Endian::Little,
    };
    let state = next("state dict")?;
    let tensors = state_dict_tensors(&state)
        .map_err(|e| anyhow!("{file}: legacy PyTorch file: state dict: {e:#}"))?;
    let keys_pickle = next("storage keys")?;
    let keys = string_list(&keys_pickle)
        .map_err(|e| anyhow!("{file}: legacy PyTorch file: storage keys: {e:#}"))?;

    // The element type of each root storage, from the persistent ids that name it.
    let mut dtypes: HashMap<&str, DType> = HashMap::new();
    for storage in state.storages() {
        if let Some(dtype) = storage.dtype {
            dtypes.entry(storage.key.as_str()).or_insert(dtype);
        }
    }

    let mut storages = Vec::with_capacity(keys.len().min(bytes.len()));
    for key in keys {
        let dtype = dtypes.get(key.as_str()).copied().with_context(|| {
            format!("{file}: legacy storage '{key}' at byte {pos}: no storage type names it")
        })?;
        let elem = dtype.size_in_bytes().unwrap_or(1);
        let header = bytes
            .get(pos..)
            .and_then(|rest| rest.get(..8))
            .with_context(|| {
                format!("{file}: legacy storage '{key}': file ends at byte {pos} before its size")
            })?;
        let mut count = [0u8; 8];
        count.copy_from_slice(header);
        let numel = match count_order {
            Endian::Little => u64::from_le_bytes(count),
            Endian::Big => u64::from_be_bytes(count),
        };
        let start = pos + 8;
        let range = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem))
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= bytes.len())
            .map(|end| start..end)
            .with_context(|| {
                format!(
                    "{file}: legacy storage '{key}' at byte {pos}: {numel} elements of {dtype} \
                     run past the end of the file ({} bytes)",
                    bytes.len()
                )
            })?;
        pos = range.end;
        storages.push((key, range));
    }
    Ok(LegacyLayout {
        tensors,
        storages,
        endian: Endian::Little,
    })
}

/// The value of `key` in a pickled dict root, if any.
fn dict_get<'p>(pickle: &'p Pickle, key: &str) -> Option<&'p Object> {
    let Some(Object::Dict(entries)) = pickle.get(pickle.root()) else {
        return None;
    };
    entries
        .iter()
        .rev()
        .find(|(k, _)| matches!(pickle.get(*k), Some(Object::Str(s)) if s == key))
        .and_then(|(_, v)| pickle.get(*v))
}

/// The root object as a list of strings.
fn string_list(pickle: &Pickle) -> anyhow::Result<Vec<String>> {
    let items = match pickle.get(pickle.root()) {
        Some(Object::List(items) | Object::Tuple(items)) => items,
        other => bail!(
            "a {}, not a list of keys",
            other.map_or("nothing", Object::kind)
        ),
    };
    items
        .iter()
        .map(|&id| match pickle.get(id) {
            Some(Object::Str(s)) => Ok(s.clone()),
            other => bail!(
                "a key is a {}, not a str",
                other.map_or("nothing", Object::kind)
            ),
        })
        .collect()
}
