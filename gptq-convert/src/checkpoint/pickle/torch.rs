//! The torch side of the unpickler: the whitelist of globals, what calling them
//! builds (dicts, tensor views), and torch's persistent ids for storages.

use std::collections::HashMap;

use anyhow::bail;

use super::{Id, Machine, Object, Pickle, Step};
use crate::checkpoint::DType;

/// A storage named by a persistent id `('storage', storage_type, key, location, numel[, view])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// The storage's key: the entry `data/<key>` of a zip checkpoint, or the root
    /// storage's key in a legacy one.
    pub key: String,
    /// The storage class's element type; `None` for `torch.UntypedStorage` (bytes).
    pub dtype: Option<DType>,
    /// Device the storage was saved from (`cpu`, `cuda:0`, ...).
    pub location: String,
    /// Declared length in elements of `dtype` (bytes when untyped).
    pub numel: usize,
    /// Legacy format only: this storage is a slice of the root storage `key`.
    pub view: Option<StorageView>,
}

impl StorageRef {
    /// Heap bytes the storage reference owns (its key and location).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.key.len() + self.location.len()
    }
}

/// A slice of a legacy root storage: `root[offset .. offset + numel]` in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StorageView {
    /// First element of the slice in the root storage.
    pub offset: usize,
    /// Elements in the slice.
    pub numel: usize,
}

/// A tensor rebuilt by `torch._utils._rebuild_tensor_v2`/`_v3`: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    /// The storage holding the elements.
    pub storage: StorageRef,
    /// The tensor's element type.
    pub dtype: DType,
    /// First element of the view, in elements of `dtype` from the storage's start.
    pub offset: usize,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Step in elements for each dimension.
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// Heap bytes the tensor reference owns (its storage's strings, its shape
    /// and strides).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.storage.heap_bytes()
            + (self.shape.len() + self.stride.len()) * std::mem::size_of::<usize>()
    }
}

/// A whitelisted global (class or function) a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `builtins.set` / `frozenset` (held as a list).
    Set,
    /// `torch.Size` (held as a tuple).
    Size,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3` (takes the dtype explicitly).
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter` and `_rebuild_parameter_with_state`.
    RebuildParameter,
    /// A storage class: `torch.FloatStorage`, ... (`None` for `torch.UntypedStorage`).
    Storage(Option<DType>),
    /// A dtype object such as `torch.float32`.
    Dtype(DType),
}

impl Machine<'_> {
    /// `callable(*args)` for a whitelisted callable.
    pub(super) fn call(&mut self, callable: Id, args: Id) -> Step<Object> {
        let Object::Global(global) = *self.object(callable)? else {
            return Err(format!("cannot call a {}", self.object(callable)?.kind()));
        };
        let copied = std::mem::size_of_val(self.items(args, "the argument list")?);
        self.charge(copied)?;
        let args = self.items(args, "the argument list")?.to_vec();
        match global {
            Global::OrderedDict => match args.as_slice() {
                [] => Ok(Object::Dict(Vec::new())),
                [items] => {
                    let mut entries = Vec::new();
                    for &pair in self.items(*items, "OrderedDict's argument")? {
                        match self.items(pair, "an OrderedDict item")? {
                            &[k, v] => entries.push((k, v)),
                            _ => return Err("an OrderedDict item is not a pair".to_string()),
                        }
                    }
                    Ok(Object::Dict(entries))
                }
                _ => Err(format!(
                    "OrderedDict takes 0 or 1 arguments, not {}",
                    args.len()
                )),
            },
            Global::Set => match args.as_slice() {
                [] => Ok(Object::List(Vec::new())),
                [items] => Ok(Object::List(self.items(*items, "set's argument")?.to_vec())),
                _ => Err(format!("set takes 0 or 1 arguments, not {}", args.len())),
            },
            Global::Size => match args.as_slice() {
                [] => Ok(Object::Tuple(Vec::new())),
                [items] => Ok(Object::Tuple(
                    self.items(*items, "Size's argument")?.to_vec(),
                )),
                _ => Err(format!(
                    "torch.Size takes 0 or 1 arguments, not {}",
                    args.len()
                )),
            },
            Global::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    return Err(format!(
                        "_rebuild_tensor_v2 takes 6 or 7 arguments, not {}",
                        args.len()
                    ));
                }
                self.rebuild_tensor(&args, None).map(Object::Tensor)
            }
            Global::RebuildTensorV3 => {
                if !(7..=8).contains(&args.len()) {
                    return Err(format!(
                        "_rebuild_tensor_v3 takes 7 or 8 arguments, not {}",
                        args.len()
                    ));
                }
                let dtype = match self.object(args[6])? {
                    Object::Global(Global::Dtype(d)) => *d,
                    other => {
                        return Err(format!(
                            "_rebuild_tensor_v3's dtype is a {}, not a torch dtype",
                            other.kind()
                        ));
                    }
                };
                self.rebuild_tensor(&args, Some(dtype)).map(Object::Tensor)
            }
            Global::RebuildParameter => match args.first().map(|&a| self.object(a)) {
                Some(Ok(tensor @ Object::Tensor(_))) => Ok(tensor.clone()),
                Some(Ok(other)) => Err(format!(
                    "_rebuild_parameter's data is a {}, not a tensor",
                    other.kind()
                )),
                Some(Err(e)) => Err(e),
                None => Err("_rebuild_parameter needs arguments".to_string()),
            },
            Global::Storage(_) | Global::Dtype(_) => {
                Err("storage classes and dtypes cannot be called".to_string())
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`
    /// (v3 adds the dtype after `backward_hooks`).
    fn rebuild_tensor(&self, args: &[Id], dtype: Option<DType>) -> Step<TensorRef> {
        let storage = match self.object(args[0])? {
            Object::Storage(s) => s.clone(),
            other => {
                return Err(format!(
                    "the tensor's storage is a {}, not a storage",
                    other.kind()
                ));
            }
        };
        let offset = self.usize_of(args[1], "storage_offset")?;
        let shape = self.usize_tuple(args[2], "size")?;
        let stride = self.usize_tuple(args[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(format!(
                "size {shape:?} and stride {stride:?} have different lengths"
            ));
        }
        let dtype = dtype.or(storage.dtype).ok_or_else(|| {
            format!(
                "tensor on the untyped storage '{}' has no dtype",
                storage.key
            )
        })?;
        Ok(TensorRef {
            storage,
            dtype,
            offset,
            shape,
            stride,
        })
    }

    /// torch's `persistent_load`: `('storage', storage_type, key, location, numel[, view_metadata])`.
    pub(super) fn persistent_load(&self, pid: Id) -> Step<StorageRef> {
        let items = self.items(pid, "the persistent id")?;
        let tag = items.first().map(|&t| self.object(t)).transpose()?;
        if !matches!(tag, Some(Object::Str(s)) if s == "storage") {
            return Err("persistent id is not a ('storage', ...) tuple".to_string());
        }
        if !(5..=6).contains(&items.len()) {
            return Err(format!(
                "storage persistent id has {} fields, not 5 or 6",
                items.len()
            ));
        }
        let dtype = match self.object(items[1])? {
            Object::Global(Global::Storage(d)) => *d,
            other => {
                return Err(format!(
                    "storage type is a {}, not a storage class",
                    other.kind()
                ));
            }
        };
        let key = self.str_of(items[2], "storage key")?;
        let location = self.str_of(items[3], "storage location")?;
        let numel = self.usize_of(items[4], "storage size")?;
        let view = match items.get(5).map(|&v| self.object(v)).transpose()? {
            None | Some(Object::None) => None,
            Some(Object::Tuple(view)) => match view.as_slice() {
                &[_view_key, offset, size] => Some(StorageView {
                    offset: self.usize_of(offset, "storage view offset")?,
                    numel: self.usize_of(size, "storage view size")?,
                }),
                _ => return Err("storage view metadata is not a 3-tuple".to_string()),
            },
            Some(other) => {
                return Err(format!(
                    "storage view metadata is a {}, not a tuple",
                    other.kind()
                ));
            }
        };
        Ok(StorageRef {
            key,
            dtype,
            location,
            numel,
            view,
        })
    }
}

/// The whitelist of names a pickle may refer to.
pub(super) fn resolve_global(module: &str, name: &str) -> Step<Global> {
    let global = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
        ("torch", "Size") => Global::Size,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Global::RebuildParameter
        }
        ("torch" | "torch.storage", "UntypedStorage") => Global::Storage(None),
        ("torch", storage) if storage.ends_with("Storage") => match storage_dtype(storage) {
            Some(dtype) => Global::Storage(Some(dtype)),
            None => return Err(format!("storage class 'torch.{storage}' is not supported")),
        },
        ("torch", dtype) => match torch_dtype(dtype) {
            Some(dtype) => Global::Dtype(dtype),
            None => return Err(not_allowed(module, name)),
        },
        _ => return Err(not_allowed(module, name)),
    };
    Ok(global)
}

fn not_allowed(module: &str, name: &str) -> String {
    format!(
        "global '{module}.{name}' is not allowed (only the names torch.save uses for tensors are recognised)"
    )
}

/// The element type of a typed storage class (`FloatStorage` → F32).
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// The `(name, tensor)` entries of the pickled state dict, in insertion order
/// (a repeated key keeps its first position and its last value, as in Python).
/// Entries whose value is not a tensor (counters, `None`, nested objects) are skipped.
pub(crate) fn state_dict_tensors(pickle: &Pickle) -> anyhow::Result<Vec<(String, TensorRef)>> {
    let root = pickle.get(pickle.root());
    let Some(Object::Dict(entries)) = root else {
        bail!(
            "the pickled object is a {}, not a state dict",
            root.map_or("nothing", Object::kind)
        );
    };
    let mut out: Vec<(String, TensorRef)> = Vec::new();
    let mut position = HashMap::new();
    // Entries may share one tensor object (tied weights do); each copy is
    // charged, so that a dict of many names for one tensor with a huge shape
    // cannot copy it without bound.
    let budget = pickle.budget();
    let mut spent = 0usize;
    for &(key, value) in entries {
        let Some(Object::Str(name)) = pickle.get(key) else {
            continue;
        };
        let Some(Object::Tensor(tensor)) = pickle.get(value) else {
            continue;
        };
        spent = spent.saturating_add(name.len() + tensor.heap_bytes());
        if spent > budget {
            bail!(
                "the state dict's tensors take more than {budget} bytes to list (the budget for a \
                 pickle of {} bytes): refusing a pickle that expands without bound",
                pickle.end()
            );
        }
        match position.get(name) {
            Some(&i) => out[i] = (name.clone(), tensor.clone()),
            None => {
                position.insert(name.clone(), out.len());
                out.push((name.clone(), tensor.clone()));
            }
        }
    }
    Ok(out)
}

/// The element type of a dtype object (`torch.float32` → F32).
fn torch_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "float32" | "float" => DType::F32,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" | "double" => DType::F64,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "uint64" => DType::U64,
        "bool" => DType::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, root, unicode};
    use super::super::{Object, Pickle};
    use super::*;

    #[test]
    fn ordered_dict_with_items() {
        // OrderedDict() then SETITEMS {'a': 1, 'b': 'x'}, plus a SETITEM, BUILD with a state.
        let mut bytes = vec![0x80, 2];
        bytes.extend_from_slice(b"ccollections\nOrderedDict\nq\x00)R");
        bytes.push(b'(');
        bytes.extend(unicode("a"));
        bytes.extend_from_slice(&[b'K', 1]);
        bytes.extend(unicode("b"));
        bytes.extend(unicode("x"));
        bytes.push(b'u');
        bytes.extend(unicode("c"));
        bytes.extend_from_slice(&[0x89, b's']);
        bytes.extend_from_slice(b"}b.");
        let p = parse(&bytes).unwrap();
        let Object::Dict(entries) = root(&p) else {
            panic!()
        };
        let keys: Vec<_> = entries
            .iter()
            .map(|(k, _)| match p.get(*k) {
                Some(Object::Str(s)) => s.as_str(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(p.get(entries[1].1), Some(&Object::Str("x".into())));
        assert_eq!(p.get(entries[2].1), Some(&Object::Bool(false)));
    }

    #[test]
    fn stack_global_and_frames() {
        // Protocol 4: FRAME, SHORT_BINUNICODE module/name, STACK_GLOBAL, EMPTY_TUPLE, NEWOBJ.
        let mut bytes = vec![0x80, 4, 0x95];
        bytes.extend_from_slice(&100u64.to_le_bytes());
        bytes.extend_from_slice(&[0x8c, 11]);
        bytes.extend_from_slice(b"collections");
        bytes.extend_from_slice(&[0x8c, 11]);
        bytes.extend_from_slice(b"OrderedDict");
        bytes.extend_from_slice(&[0x93, 0x94, b')', 0x81, b'.']);
        let p = parse(&bytes).unwrap();
        assert_eq!(root(&p), &Object::Dict(vec![]));
    }

    fn tensor_pickle(storage_class: &str, size: &[u8], stride: &[u8]) -> Vec<u8> {
        // {'w': _rebuild_tensor_v2(('storage', torch.<class>, '0', 'cpu', 6), 0, size, stride, False, OrderedDict())}
        let mut b = vec![0x80, 2, b'}', b'q', 0];
        b.extend(unicode("w"));
        b.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n");
        b.push(b'(');
        b.push(b'(');
        b.extend(unicode("storage"));
        b.extend_from_slice(format!("ctorch\n{storage_class}\n").as_bytes());
        b.extend(unicode("0"));
        b.extend(unicode("cpu"));
        b.extend_from_slice(&[b'K', 6, b't', b'Q', b'K', 0]);
        b.extend_from_slice(size);
        b.extend_from_slice(stride);
        b.push(0x89);
        b.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        b.extend_from_slice(b"tRs.");
        b
    }

    fn only_tensor(p: &Pickle) -> TensorRef {
        let Object::Dict(entries) = root(p) else {
            panic!()
        };
        match p.get(entries[0].1) {
            Some(Object::Tensor(t)) => t.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transposed_half_tensor() {
        // size (3, 2), stride (1, 3): the transpose of a 2x3 matrix.
        let bytes = tensor_pickle(
            "HalfStorage",
            &[b'K', 3, b'K', 2, 0x86],
            &[b'K', 1, b'K', 3, 0x86],
        );
        let p = parse(&bytes).unwrap();
        let t = only_tensor(&p);
        assert_eq!(t.dtype, DType::F16);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.stride, [1, 3]);
        assert_eq!(t.storage.key, "0");
        assert_eq!(t.storage.numel, 6);
        assert_eq!(t.storage.location, "cpu");
        assert_eq!(p.storages().len(), 1);
    }

    #[test]
    fn mismatched_size_and_stride() {
        let bytes = tensor_pickle("FloatStorage", &[b'K', 3, b'K', 2, 0x86], &[b'K', 1, 0x85]);
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("different lengths") && err.contains("REDUCE"),
            "{err}"
        );
    }

    #[test]
    fn disallowed_global_is_named() {
        let mut bytes = vec![0x80, 2];
        bytes.extend_from_slice(b"cos\nsystem\n");
        bytes.extend(unicode("echo hi"));
        bytes.extend_from_slice(&[0x85, b'R', b'.']);
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.contains("'os.system'"), "{err}");
        assert!(err.contains("byte 2"), "{err}");

        let mut bytes = vec![0x80, 4, 0x8c, 8];
        bytes.extend_from_slice(b"builtins");
        bytes.extend_from_slice(&[0x8c, 4]);
        bytes.extend_from_slice(b"eval");
        bytes.push(0x93);
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.contains("'builtins.eval'"), "{err}");

        let bytes = b"\x80\x02ctorch\nload\n.";
        let err = parse(bytes).unwrap_err().to_string();
        assert!(err.contains("'torch.load'"), "{err}");
    }
}
