//! A minimal, safe unpickler for what `torch.save` writes (pickle protocols 2–5).
//!
//! It executes nothing. A `GLOBAL` is only a name looked up in a small whitelist
//! (`collections.OrderedDict`, torch's tensor-rebuilding functions, storage classes
//! and dtypes); any other name is an error that names it. Persistent ids become
//! storage references and `_rebuild_tensor_v2` calls become tensor views; the
//! caller resolves those against the storages in the file.
//!
//! Objects live in an arena and the stack, the memo and containers hold indices
//! into it, so `BINGET` shares an object rather than copying it (as Python does).
//! What is copied (the items of a call's argument tuple, a storage's key, a
//! tensor's shape) is charged to a budget that grows with the bytes read: after
//! `n` bytes of a pickle, its objects and copies may take at most
//! [`BUDGET_PER_BYTE`]` · n + `[`BUDGET_BASE`] bytes, so neither memory nor work
//! can grow faster than linearly in the pickle's length, whatever it references.

mod torch;

use std::collections::HashMap;

use self::torch::resolve_global;
pub(crate) use self::torch::{Global, StorageRef, TensorRef, state_dict_tensors};

/// Index of an object in a [`Pickle`]'s arena.
pub(crate) type Id = usize;

/// Bytes of objects (and copies) a pickle may build per byte read. torch's
/// pickles build about 35 (one object of ~130 bytes every 3–4 bytes).
pub(crate) const BUDGET_PER_BYTE: usize = 256;

/// Bytes of objects a pickle may build regardless of its length.
pub(crate) const BUDGET_BASE: usize = 1 << 20;

/// A value built by the unpickler.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Object {
    /// Python `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (LONG1 values up to 16 bytes).
    Int(i128),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A bytes or bytearray object.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list (also sets).
    List(Vec<Id>),
    /// A dict or OrderedDict, entries in insertion order (later duplicates win on lookup).
    Dict(Vec<(Id, Id)>),
    /// A whitelisted class or function.
    Global(Global),
    /// A storage from a persistent id.
    Storage(StorageRef),
    /// A tensor view.
    Tensor(TensorRef),
}

impl Object {
    /// A short description of the object's type for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool(_) => "bool",
            Object::Int(_) => "int",
            Object::Float(_) => "float",
            Object::Str(_) => "str",
            Object::Bytes(_) => "bytes",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Global(_) => "global",
            Object::Storage(_) => "storage",
            Object::Tensor(_) => "tensor",
        }
    }

    /// Bytes the object takes: its own size and what it owns on the heap.
    pub(crate) fn footprint(&self) -> usize {
        let id = std::mem::size_of::<Id>();
        std::mem::size_of::<Object>()
            + match self {
                Object::Str(s) => s.len(),
                Object::Bytes(b) => b.len(),
                Object::Tuple(items) | Object::List(items) => items.len() * id,
                Object::Dict(entries) => entries.len() * 2 * id,
                Object::Storage(storage) => storage.heap_bytes(),
                Object::Tensor(tensor) => tensor.heap_bytes(),
                Object::None
                | Object::Bool(_)
                | Object::Int(_)
                | Object::Float(_)
                | Object::Global(_) => 0,
            }
    }
}

/// A parsed pickle: the object arena and the root object.
#[derive(Debug)]
pub(crate) struct Pickle {
    objects: Vec<Object>,
    root: Id,
    end: usize,
    storages: Vec<StorageRef>,
}

impl Pickle {
    /// Parses one pickle at the start of `data`, up to and including its STOP.
    /// `base` is where `data` starts in its file, for the byte positions in errors.
    pub(crate) fn parse(data: &[u8], base: usize) -> anyhow::Result<Pickle> {
        let mut machine = Machine {
            data,
            pos: 0,
            objects: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: Vec::new(),
            spent: 0,
        };
        loop {
            let at = machine.pos;
            let Some(&op) = data.get(at) else {
                anyhow::bail!(
                    "pickle ends at byte {} without a STOP opcode",
                    base.saturating_add(at)
                );
            };
            machine.pos += 1;
            match machine.step(op) {
                Ok(None) => {}
                Ok(Some(root)) => {
                    return Ok(Pickle {
                        objects: machine.objects,
                        root,
                        end: machine.pos,
                        storages: machine.storages,
                    });
                }
                Err(msg) => anyhow::bail!(
                    "pickle byte {}, opcode {} (0x{op:02x}): {msg}",
                    base.saturating_add(at),
                    opcode_name(op)
                ),
            }
        }
    }

    /// The object the pickle describes.
    pub(crate) fn root(&self) -> Id {
        self.root
    }

    /// The object with index `id` (`None` for an index this pickle never made).
    pub(crate) fn get(&self, id: Id) -> Option<&Object> {
        self.objects.get(id)
    }

    /// Bytes of the input the pickle occupies (the position after its STOP).
    pub(crate) fn end(&self) -> usize {
        self.end
    }

    /// Every storage named by a persistent id, in the order met.
    pub(crate) fn storages(&self) -> &[StorageRef] {
        &self.storages
    }

    /// Bytes that readers of this pickle may build from it (copies of its
    /// objects included): the unpickler's own budget for the pickle's length.
    pub(crate) fn budget(&self) -> usize {
        self.end
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE)
    }
}

/// The pickle virtual machine's state. Errors are plain messages; `Pickle::parse`
/// adds the byte position and opcode.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    objects: Vec<Object>,
    stack: Vec<Id>,
    /// Stack lengths at each MARK still open.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    storages: Vec<StorageRef>,
    /// Bytes charged so far (see [`Machine::charge`]).
    spent: usize,
}

type Step<T> = Result<T, String>;

impl Machine<'_> {
    /// Executes one opcode (already consumed); `Some(root)` at STOP.
    fn step(&mut self, op: u8) -> Step<Option<Id>> {
        match op {
            0x80 => {
                let version = self.u8()?;
                if version > 5 {
                    return Err(format!("pickle protocol {version} is newer than 5"));
                }
            }
            // FRAME only groups opcodes for buffered reading; the contents follow inline.
            0x95 => {
                self.take(8)?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.stack.len() > self.floor() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            b'N' => self.push(Object::None)?,
            0x88 => self.push(Object::Bool(true))?,
            0x89 => self.push(Object::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Object::Int(v.into()))?;
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Object::Int(v.into()))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Object::Int(v.into()))?;
            }
            0x8a => {
                let n = usize::from(self.u8()?);
                let v = self.long(n)?;
                self.push(Object::Int(v))?;
            }
            0x8b => {
                let n = self.length_i32()?;
                let v = self.long(n)?;
                self.push(Object::Int(v))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Object::Float(v))?;
            }
            b'X' => {
                let n = u32::from_le_bytes(self.array()?) as usize;
                let s = self.utf8(n)?;
                self.push(Object::Str(s))?;
            }
            0x8c => {
                let n = usize::from(self.u8()?);
                let s = self.utf8(n)?;
                self.push(Object::Str(s))?;
            }
            0x8d => {
                let n = self.length_u64()?;
                let s = self.utf8(n)?;
                self.push(Object::Str(s))?;
            }
            b'T' => {
                let n = self.length_i32()?;
                let s = self.utf8(n)?;
                self.push(Object::Str(s))?;
            }
            b'U' => {
                let n = usize::from(self.u8()?);
                let s = self.utf8(n)?;
                self.push(Object::Str(s))?;
            }
            b'B' => {
                let n = u32::from_le_bytes(self.array()?) as usize;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b))?;
            }
            b'C' => {
                let n = usize::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b))?;
            }
            0x8e | 0x96 => {
                let n = self.length_u64()?;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b))?;
            }
            b'}' => self.push(Object::Dict(Vec::new()))?,
            b']' | 0x8f => self.push(Object::List(Vec::new()))?,
            b')' => self.push(Object::Tuple(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(&items)?;
                self.push(Object::Dict(pairs))?;
            }
            b'l' | 0x91 => {
                let items = self.pop_mark()?;
                self.push(Object::List(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = self.floor();
                if self.stack.len() < floor.saturating_add(n) {
                    return Err(format!("needs {n} items on the stack"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Object::Tuple(items))?;
            }
            b'q' => {
                let i = self.u8()?;
                self.put(i.into())?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.array()?);
                self.put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo is full".to_string())?;
                self.put(i)?;
            }
            b'h' => {
                let i = self.u8()?;
                self.get(i.into())?;
            }
            b'j' => {
                let i = u32::from_le_bytes(self.array()?);
                self.get(i)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let global = resolve_global(&module, &name)?;
                self.push(Object::Global(global))?;
            }
            0x93 => {
                let name = self.pop_str("STACK_GLOBAL name")?;
                let module = self.pop_str("STACK_GLOBAL module")?;
                let global = resolve_global(&module, &name)?;
                self.push(Object::Global(global))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.call(callable, args)?;
                self.push(result)?;
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                match self.object(kwargs)? {
                    Object::Dict(entries) if entries.is_empty() => {}
                    other => {
                        return Err(format!(
                            "keyword arguments ({}) are not supported",
                            other.kind()
                        ));
                    }
                }
                let result = self.call(class, args)?;
                self.push(result)?;
            }
            // BUILD sets an object's state (`__setstate__` or `__dict__`); the state
            // of dicts (`_metadata`) and tensors carries nothing a reader needs.
            b'b' => {
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.charge(std::mem::size_of::<StorageRef>() + storage.heap_bytes())?;
                self.storages.push(storage.clone());
                self.push(Object::Storage(storage))?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.extend_dict(dict, &[key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let dict = self.top()?;
                self.extend_dict(dict, &items)?;
            }
            b'a' => {
                let value = self.pop()?;
                let list = self.top()?;
                self.extend_list(list, &[value])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.extend_list(list, &items)?;
            }
            _ => return Err("opcode not supported".to_string()),
        }
        Ok(None)
    }

    // ---- budget ----

    /// Charges `bytes` of objects or copies to the budget, which allows
    /// [`BUDGET_PER_BYTE`] per byte read so far plus [`BUDGET_BASE`].
    fn charge(&mut self, bytes: usize) -> Step<()> {
        self.spent = self.spent.saturating_add(bytes);
        let allowed = self
            .pos
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE);
        if self.spent > allowed {
            return Err(format!(
                "the pickle builds more than {allowed} bytes of objects from its first {} bytes \
                 (at most {BUDGET_PER_BYTE} per byte): refusing a pickle that expands without bound",
                self.pos
            ));
        }
        Ok(())
    }

    // ---- input ----

    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let remaining = self.data.len() - self.pos.min(self.data.len());
        if n > remaining {
            return Err(format!(
                "needs {n} more bytes but the pickle has only {remaining} left"
            ));
        }
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn length_i32(&mut self) -> Step<usize> {
        let n = i32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    fn length_u64(&mut self) -> Step<usize> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("length {n} is too large"))
    }

    /// A little-endian two's-complement integer of `n` bytes (at most 16).
    fn long(&mut self, n: usize) -> Step<i128> {
        if n > 16 {
            return Err(format!("integer of {n} bytes is too large"));
        }
        let bytes = self.take(n)?;
        let mut buf = match bytes.last() {
            Some(&b) if b & 0x80 != 0 => [0xffu8; 16],
            _ => [0u8; 16],
        };
        buf[..n].copy_from_slice(bytes);
        Ok(i128::from_le_bytes(buf))
    }

    fn utf8(&mut self, n: usize) -> Step<String> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("string is not valid UTF-8: {e}"))
    }

    /// A text line of a GLOBAL opcode, without its newline.
    fn line(&mut self) -> Step<String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| "unterminated line".to_string())?;
        let text = self.utf8(len)?;
        self.pos += 1;
        Ok(text)
    }

    // ---- stack, marks, memo ----

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, object: Object) -> Step<()> {
        self.charge(object.footprint())?;
        self.objects.push(object);
        self.stack.push(self.objects.len() - 1);
        Ok(())
    }

    fn pop(&mut self) -> Step<Id> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&self) -> Step<Id> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".to_string());
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| "no MARK to pop to".to_string())?;
        if mark > self.stack.len() {
            return Err("stack underflow below MARK".to_string());
        }
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, index: u32) -> Step<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u32) -> Step<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo index {index} was never set"))?;
        self.stack.push(id);
        Ok(())
    }

    fn object(&self, id: Id) -> Step<&Object> {
        self.objects
            .get(id)
            .ok_or_else(|| format!("object {id} does not exist"))
    }

    fn pop_str(&mut self, what: &str) -> Step<String> {
        let id = self.pop()?;
        match self.object(id)? {
            Object::Str(s) => Ok(s.clone()),
            other => Err(format!("{what} is a {}, not a str", other.kind())),
        }
    }

    fn extend_dict(&mut self, dict: Id, items: &[Id]) -> Step<()> {
        let new = pairs(items)?;
        match self.objects.get_mut(dict) {
            Some(Object::Dict(entries)) => {
                entries.extend(new);
                Ok(())
            }
            Some(other) => Err(format!("cannot set items on a {}", other.kind())),
            None => Err(format!("object {dict} does not exist")),
        }
    }

    fn extend_list(&mut self, list: Id, items: &[Id]) -> Step<()> {
        match self.objects.get_mut(list) {
            Some(Object::List(values)) => {
                values.extend_from_slice(items);
                Ok(())
            }
            Some(other) => Err(format!("cannot append to a {}", other.kind())),
            None => Err(format!("object {list} does not exist")),
        }
    }

    // ---- values ----

    fn items(&self, id: Id, what: &str) -> Step<&[Id]> {
        match self.object(id)? {
            Object::Tuple(items) | Object::List(items) => Ok(items),
            other => Err(format!("{what} is a {}, not a tuple", other.kind())),
        }
    }

    fn usize_of(&self, id: Id, what: &str) -> Step<usize> {
        match self.object(id)? {
            Object::Int(v) => {
                usize::try_from(*v).map_err(|_| format!("{what} {v} is negative or too large"))
            }
            other => Err(format!("{what} is a {}, not an int", other.kind())),
        }
    }

    fn str_of(&self, id: Id, what: &str) -> Step<String> {
        match self.object(id)? {
            Object::Str(s) => Ok(s.clone()),
            other => Err(format!("{what} is a {}, not a str", other.kind())),
        }
    }

    fn usize_tuple(&self, id: Id, what: &str) -> Step<Vec<usize>> {
        self.items(id, what)?
            .iter()
            .map(|&item| self.usize_of(item, what))
            .collect()
    }
}

/// Groups a flat `[k0, v0, k1, v1, ...]` list into pairs.
fn pairs(items: &[Id]) -> Step<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of items ({}) for key/value pairs",
            items.len()
        ));
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// The opcode's name in Python's `pickletools`, for messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'.' => "STOP",
        b'(' => "MARK",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'N' => "NONE",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'M' => "BININT2",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'G' => "BINFLOAT",
        b'X' => "BINUNICODE",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        0x96 => "BYTEARRAY8",
        b'}' => "EMPTY_DICT",
        b']' => "EMPTY_LIST",
        0x8f => "EMPTY_SET",
        b')' => "EMPTY_TUPLE",
        b'd' => "DICT",
        b'l' => "LIST",
        0x91 => "FROZENSET",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'b' => "BUILD",
        b'Q' => "BINPERSID",
        b'P' => "PERSID",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        0x90 => "ADDITEMS",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'p' => "PUT",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(bytes: &[u8]) -> anyhow::Result<Pickle> {
        Pickle::parse(bytes, 0)
    }

    pub(super) fn root(p: &Pickle) -> &Object {
        p.get(p.root()).unwrap()
    }

    pub(super) fn ints(p: &Pickle, ids: &[Id]) -> Vec<i128> {
        ids.iter()
            .map(|&i| match p.get(i).unwrap() {
                Object::Int(v) => *v,
                other => panic!("not an int: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn scalars() {
        // PROTO 2, LONG1 of 10 bytes (torch's legacy magic number), STOP.
        let mut bytes = vec![0x80, 2, 0x8a, 10];
        bytes.extend_from_slice(&0x1950a86a20f9469cfc6c_i128.to_le_bytes()[..10]);
        bytes.push(b'.');
        let p = parse(&bytes).unwrap();
        assert_eq!(root(&p), &Object::Int(0x1950a86a20f9469cfc6c));
        assert_eq!(p.end(), bytes.len());

        // Negative LONG1, BININT, BINFLOAT inside a tuple.
        let mut bytes = vec![0x80, 2, b'(', 0x8a, 1, 0xff, b'J'];
        bytes.extend_from_slice(&(-5i32).to_le_bytes());
        bytes.push(b'G');
        bytes.extend_from_slice(&1.5f64.to_be_bytes());
        bytes.extend_from_slice(&[b'M', 0x34, 0x12, 0x88, b'N', b't', b'.']);
        let p = parse(&bytes).unwrap();
        let Object::Tuple(items) = root(&p) else {
            panic!()
        };
        assert_eq!(ints(&p, &items[..2]), [-1, -5]);
        assert_eq!(p.get(items[2]), Some(&Object::Float(1.5)));
        assert_eq!(p.get(items[3]), Some(&Object::Int(0x1234)));
        assert_eq!(p.get(items[4]), Some(&Object::Bool(true)));
        assert_eq!(p.get(items[5]), Some(&Object::None));
    }

    #[test]
    fn nested_tuples_and_memo() {
        // ((1, 2), (3,), ()) with the inner (1, 2) memoised and fetched again:
        // PROTO 2 MARK K1 K2 TUPLE2 BINPUT0 K3 TUPLE1 EMPTY_TUPLE BINGET0 TUPLE STOP
        let bytes = [
            0x80, 2, b'(', b'K', 1, b'K', 2, 0x86, b'q', 0, b'K', 3, 0x85, b')', b'h', 0, b't',
            b'.',
        ];
        let p = parse(&bytes).unwrap();
        let Object::Tuple(outer) = root(&p) else {
            panic!()
        };
        assert_eq!(outer.len(), 4);
        let Some(Object::Tuple(first)) = p.get(outer[0]) else {
            panic!()
        };
        assert_eq!(ints(&p, first), [1, 2]);
        let Some(Object::Tuple(second)) = p.get(outer[1]) else {
            panic!()
        };
        assert_eq!(ints(&p, second), [3]);
        assert_eq!(p.get(outer[2]), Some(&Object::Tuple(vec![])));
        // BINGET shares the memoised object.
        assert_eq!(outer[3], outer[0]);
    }

    #[test]
    fn memo_sees_later_mutation() {
        // EMPTY_LIST MEMOIZE, then APPEND to it, then a tuple of (BINGET 0,)
        let bytes = [
            0x80, 4, b']', 0x94, b'K', 7, b'a', b'0', b'h', 0, 0x85, b'.',
        ];
        let p = parse(&bytes).unwrap();
        let Object::Tuple(outer) = root(&p) else {
            panic!()
        };
        let Some(Object::List(list)) = p.get(outer[0]) else {
            panic!()
        };
        assert_eq!(ints(&p, list), [7]);
    }

    pub(super) fn unicode(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn malformed_pickles_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02",
            b"\x80\x09.",
            b"\x80\x02.",
            b"\x80\x02t.",
            b"\x80\x02K\x01\x86.",
            b"\x80\x02h\x05.",
            b"\x80\x02X\xff\xff\xff\xff.",
            b"\x80\x02\x8b\x00\x00\x00\x80.",
            b"\x80\x02\x8a\x20.",
            b"\x80\x02K\x01K\x02s.",
            b"\x80\x02]K\x01K\x02s.",
            b"\x80\x02K\x01)R.",
            b"\x80\x02ccollections\nOrderedDict",
            b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
            b"\x80\x02(K\x01Q.",
            b"\x80\x02K\x01Q.",
            b"\x80\x02\xff.",
            b"\x80\x02(K\x01(\x31\x31.",
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(parse(case).is_err(), "case {i} parsed");
        }
    }

    /// `torch.Size(t)` on one memoised tuple of 4096 ints, called 4096
    /// times: 6 bytes of pickle per call, and each call copied the tuple
    /// (128 MiB in all from a 33 KiB pickle). The budget stops it.
    #[test]
    fn references_cannot_multiply_memory() {
        let mut bytes = b"\x80\x02ctorch\nSize\nq\x00(".to_vec();
        bytes.extend([b'K', 1].repeat(4096));
        bytes.extend(b"tq\x010(");
        for _ in 0..4096 {
            bytes.extend(b"h\x00h\x01\x85R0");
        }
        bytes.extend(b"1N.");
        let e = format!("{:#}", parse(&bytes).unwrap_err());
        assert!(e.contains("expands without bound"), "{e}");
        // The same with a few calls is an ordinary pickle.
        let mut bytes = b"\x80\x02ctorch\nSize\nq\x00(K\x01K\x02tq\x010(".to_vec();
        for _ in 0..8 {
            bytes.extend(b"h\x00h\x01\x85R0");
        }
        bytes.extend(b"1N.");
        assert_eq!(root(&parse(&bytes).unwrap()), &Object::None);
    }

    #[test]
    fn pop_below_mark_is_an_error() {
        // K1 MARK TUPLE1: TUPLE1 may not take the item below the mark.
        assert!(parse(b"\x80\x02K\x01(\x85.").is_err());
        // K1 MARK STOP: the stack above the mark is empty.
        assert!(parse(b"\x80\x02K\x01(.").is_err());
    }
}
