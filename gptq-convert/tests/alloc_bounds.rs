//! No checkpoint makes the readers allocate more than a fixed multiple of its
//! size. A pickle can reference one object many times (`BINGET`), so readers
//! that copied what it references could be made to allocate quadratically:
//! a 64 KiB pickle asked for gigabytes before the unpickler's budget (see
//! `checkpoint/pickle`). A peak-tracking global allocator measures the
//! hostile cases; the stated cap is [`PER_BYTE`]` · n + `[`BASE`] bytes for an
//! `n`-byte file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use gptq_convert::checkpoint::{Checkpoint, PytorchFile, SafetensorsFile};

/// The unpickler's budget (256 bytes per byte) plus its uncharged stack and
/// memo, and the reader's copies of the tensor list.
const PER_BYTE: usize = 320;
/// Regardless of size: the unpickler's base budget (1 MiB) and small tables.
const BASE: usize = 2 << 20;

struct Peak;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are side effects that touch no allocated memory.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// Peak bytes allocated above what was live before, while `f` runs.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed).saturating_sub(base), out)
}

/// Opens `bytes` as a PyTorch file and reads every tensor, checking the peak.
fn check_pytorch(what: &str, bytes: Vec<u8>) -> Result<(), String> {
    let n = bytes.len();
    let (peak, result) = peak_of(move || {
        let file = PytorchFile::from_bytes(Path::new("hostile.bin"), bytes)
            .map_err(|e| format!("{e:#}"))?;
        for t in file.tensors() {
            let _ = file.read_f32(&t.name);
        }
        Ok(())
    });
    let cap = PER_BYTE * n + BASE;
    assert!(
        peak <= cap,
        "{what}: {peak} bytes for a {n}-byte file (cap {cap})"
    );
    eprintln!("{what}: {n} bytes, peak {peak} bytes: {result:?}");
    result
}

/// Pickle opcodes (protocol 2).
#[derive(Default)]
struct Pickler(Vec<u8>);

impl Pickler {
    fn new() -> Pickler {
        Pickler(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Pickler {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Pickler {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }
    fn put(&mut self, i: u32) -> &mut Pickler {
        self.op(b"r").op(&i.to_le_bytes())
    }
    fn get(&mut self, i: u32) -> &mut Pickler {
        self.op(b"j").op(&i.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Pickler {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// A tuple of `n` ones.
    fn ones(&mut self, n: usize) -> &mut Pickler {
        self.op(b"(");
        for _ in 0..n {
            self.op(&[b'K', 1]);
        }
        self.op(b"t")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// `torch.Size(t)` called again and again on one memoised tuple of `n`
/// ints: each call is 11 bytes of pickle and copied the whole tuple.
fn repeated_calls(n: usize, calls: usize) -> Vec<u8> {
    let mut p = Pickler::new();
    p.global("torch", "Size").put(0).ones(n).put(1).op(b"0(");
    for _ in 0..calls {
        p.get(0).get(1).op(&[0x85, b'R', b'0']);
    }
    p.op(b"1").op(b"N").stop()
}

/// A state dict of `names` entries that all name one tensor whose shape and
/// strides have `dims` entries: the reader copied the tensor for each name.
fn shared_tensor(dims: usize, names: usize) -> Vec<u8> {
    let mut sd = Pickler::new();
    sd.global("collections", "OrderedDict").op(b")R(");
    sd.str("n0")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"((")
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .op(&[b'K', 1])
        .op(b"tQ")
        .op(&[b'K', 0])
        .ones(dims)
        .ones(dims)
        .op(&[0x89])
        .op(b"N")
        .op(b"tR")
        .put(0);
    for i in 1..names {
        sd.str(&format!("n{i}")).get(0);
    }
    let state_dict = sd.op(b"u").stop();
    // The legacy container around it: magic, version, sys_info, state dict,
    // storage keys, the storage.
    let mut out = Pickler::new();
    out.op(&[0x8a, 10])
        .op(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10]);
    let mut bytes = out.stop();
    bytes.extend(Pickler::new().op(b"J").op(&1001i32.to_le_bytes()).stop());
    bytes.extend(Pickler::new().op(b"}").stop());
    bytes.extend(state_dict);
    bytes.extend(Pickler::new().op(b"(").str("0").op(b"l").stop());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(1.0f32.to_le_bytes());
    bytes
}

#[test]
fn hostile_checkpoints_allocate_a_bounded_multiple_of_their_size() {
    // 16 Ki ints referenced by 4 Ki calls: ~660 MB of copies unbounded.
    let err = check_pytorch("repeated calls", repeated_calls(16 << 10, 4 << 10)).unwrap_err();
    assert!(err.contains("expands without bound"), "{err}");
    // A modest version of the same pickle is fine.
    let err = check_pytorch("a few calls", repeated_calls(64, 16)).unwrap_err();
    assert!(err.contains("not a PyTorch checkpoint"), "{err}");

    // 8 Ki dims shared by 4 Ki names: ~540 MB of copies unbounded.
    let err = check_pytorch("shared tensor", shared_tensor(8 << 10, 4 << 10)).unwrap_err();
    assert!(err.contains("expands without bound"), "{err}");
    // Tied weights (two names, one tensor) are ordinary.
    check_pytorch("tied tensor", shared_tensor(2, 2)).unwrap();

    // A safetensors header that claims a huge tensor in a tiny file.
    let header =
        br#"{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.resize(1024, 0);
    let n = file.len();
    let (peak, r) =
        peak_of(|| SafetensorsFile::from_bytes(Path::new("h.safetensors"), file).is_err());
    assert!(r);
    assert!(peak <= PER_BYTE * n + BASE, "safetensors: {peak}");
}
