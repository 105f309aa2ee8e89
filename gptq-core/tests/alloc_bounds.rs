//! No input makes the GGUF reader (or the model loader behind it) allocate
//! more than a fixed multiple of its size: a peak-tracking global allocator
//! measures hostile files (counts, lengths and nesting that claim far more
//! than the file holds) and thousands of small random mutations of a valid
//! file. The stated cap: `GgufFile::parse` and `Model::from_bytes` of an
//! `n`-byte file allocate at most [`PER_BYTE`]` · n + `[`BASE`] bytes at once
//! (the model's one aligned copy of the file included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gptq_core::gguf::{GgmlType, GgufFile};
use gptq_core::model::HParams;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{Kernels, Model};

/// Bytes allocated per byte of input, at most (see the module doc).
const PER_BYTE: usize = 48;
/// Bytes allocated regardless of the input's size (tables, hashers, messages).
const BASE: usize = 256 << 10;

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
        // Old and new blocks may both be live while the data moves.
        grew(new_size);
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// Peak bytes allocated (above what was live before) while `f` runs.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

fn check(what: &str, bytes: &[u8], worst: &mut (f64, String)) {
    let peak = peak_of(|| {
        let _ = GgufFile::parse(bytes);
        let _ = Model::from_bytes(bytes, "bounds.gguf", Kernels::scalar());
    });
    let cap = PER_BYTE * bytes.len() + BASE;
    assert!(
        peak <= cap,
        "{what}: {peak} bytes allocated for a {}-byte file (cap {cap})",
        bytes.len()
    );
    let ratio = peak.saturating_sub(BASE / 4) as f64 / bytes.len().max(1) as f64;
    if ratio > worst.0 {
        *worst = (ratio, what.to_string());
    }
}

/// GGUF bytes written by hand.
struct Raw(Vec<u8>);

impl Raw {
    fn header(n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(3).u64(n_tensors).u64(n_kv);
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
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn pad(&mut self, len: usize) -> Vec<u8> {
        self.0.resize(len.max(self.0.len()), 0);
        std::mem::take(&mut self.0)
    }
}

/// Files that claim much more than they hold, each 1 KiB (or the size given).
fn hostile() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    v.push((
        "huge counts".into(),
        Raw::header(u64::MAX / 64, u64::MAX / 64).pad(1024),
    ));
    v.push(("counts just fitting".into(), Raw::header(31, 0).pad(1024)));
    let mut r = Raw::header(0, 1);
    r.str("k").u32(8).u64(1 << 40);
    v.push(("string length 2^40".into(), r.pad(1024)));
    let mut r = Raw::header(0, 1);
    r.str("k").u32(9).u32(0).u64(1 << 40);
    v.push(("u8 array of 2^40".into(), r.pad(1024)));
    // Many empty strings: the most entries a file of this size can hold.
    for size in [1024usize, 64 << 10] {
        let n = (size - 48) / 8;
        let mut r = Raw::header(0, 1);
        r.str("k").u32(9).u32(8).u64(n as u64);
        v.push((format!("{n} empty strings"), r.pad(size)));
        // Many empty nested arrays.
        let n = (size - 48) / 12;
        let mut r = Raw::header(0, 1);
        r.str("k").u32(9).u32(9).u64(n as u64);
        for _ in 0..n {
            r.u32(4).u64(0);
        }
        v.push((format!("{n} empty arrays"), r.pad(size)));
        // Many one-byte metadata entries with distinct keys.
        let n = (size - 24) / 17;
        let mut r = Raw::header(0, n as u64);
        for i in 0..n {
            r.u64(4).u32(i as u32).u32(0).0.push(1);
        }
        v.push((format!("{n} metadata entries"), r.pad(size)));
        // Many minimal tensor infos.
        let n = (size - 64) / 36;
        let mut r = Raw::header(n as u64, 0);
        for i in 0..n {
            r.u64(4).u32(i as u32).u32(1).u64(1).u32(0).u64(0);
        }
        v.push((format!("{n} tensor infos"), r.pad(size)));
    }
    v
}

#[test]
fn small_files_allocate_a_bounded_multiple_of_their_size() {
    let mut worst = (0.0, String::new());
    for (what, bytes) in hostile() {
        check(&what, &bytes, &mut worst);
    }

    // Random byte edits of a small valid model: every section, any value.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    let hp = HParams {
        n_vocab: 260,
        n_ctx: 8,
        n_embd: 32,
        n_ff: 32,
        n_layer: 1,
        n_head: 2,
        ln_eps: 1e-5,
    };
    write_synthetic(&path, &SyntheticSpec::new(hp, GgmlType::Q8_0)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header_end = GgufFile::parse(&good).unwrap().data_offset as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1500 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % header_end;
            bytes[at] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => 0x7f,
            };
        }
        check(&format!("mutation {i}"), &bytes, &mut worst);
    }
    eprintln!(
        "largest allocation per input byte: {:.1} ({}); cap {PER_BYTE} per byte + {BASE}",
        worst.0, worst.1
    );
}
