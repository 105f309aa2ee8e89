//! Decoding a token performs no heap allocation: every buffer a session needs
//! is allocated when it is made. A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gptq_core::gguf::GgmlType;
use gptq_core::model::HParams;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{Batch, BatchParams, KernelPath, Kernels, KvType, Model, Session, SessionParams};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a side effect that touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: the tests take turns, or one would count the
/// other's set-up.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn decode_steps_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let hp = HParams {
        n_vocab: 1000,
        n_ctx: 256,
        n_embd: 128,
        n_ff: 512,
        n_layer: 2,
        n_head: 4,
        ln_eps: 1e-5,
    };
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let path = dir.path().join(format!("{ty}.gguf"));
        write_synthetic(&path, &SyntheticSpec::new(hp.clone(), ty)).unwrap();
        for (kp, kv) in KernelPath::available()
            .into_iter()
            .flat_map(|p| [(p, KvType::F32), (p, KvType::F16)])
        {
            let kernels = Kernels::new(kp).unwrap();
            let model = Arc::new(Model::load_with_kernels(&path, kernels).unwrap());
            let params = SessionParams {
                kv_type: kv,
                ..SessionParams::default()
            };
            let mut s = Session::new(model, params).unwrap();
            s.feed(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            // The first step may warm lazily-initialised runtime state (the
            // thread pool's registry); from then on, nothing is allocated.
            s.step(9).unwrap();
            // Called from a thread of the rayon pool (as the CLI runs): nothing.
            let n = rayon::scope(|_| {
                ALLOCS.store(0, Ordering::Relaxed);
                COUNTING.store(true, Ordering::Relaxed);
                for i in 0..50u32 {
                    s.step(10 + i).unwrap();
                }
                COUNTING.store(false, Ordering::Relaxed);
                ALLOCS.load(Ordering::Relaxed)
            });
            assert_eq!(
                n, 0,
                "{kp} kernels, {ty} weights, {kv:?} cache: decode steps allocated"
            );
            // Called from any other thread, each step enters the pool once, and
            // rayon's injector queue allocates one block per 63 entries: at most
            // one allocation per 63 steps, none of it ours.
            ALLOCS.store(0, Ordering::Relaxed);
            COUNTING.store(true, Ordering::Relaxed);
            for i in 0..50u32 {
                s.step(60 + i).unwrap();
            }
            COUNTING.store(false, Ordering::Relaxed);
            let n = ALLOCS.load(Ordering::Relaxed);
            assert!(
                n <= 1,
                "{kp} kernels, {ty} weights, {kv:?} cache: {n} allocations in 50 steps"
            );
        }
    }
}

/// A batch's decode steps allocate nothing either, whatever the number of
/// sessions in them: only a sequence joining (its prompt chunk's products
/// may grow per-thread buffers once) may allocate.
#[test]
fn batched_decode_steps_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let hp = HParams {
        n_vocab: 1000,
        n_ctx: 256,
        n_embd: 128,
        n_ff: 512,
        n_layer: 2,
        n_head: 4,
        ln_eps: 1e-5,
    };
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0] {
        let path = dir.path().join(format!("{ty}.gguf"));
        write_synthetic(&path, &SyntheticSpec::new(hp.clone(), ty)).unwrap();
        for kp in KernelPath::available() {
            let kernels = Kernels::new(kp).unwrap();
            let model = Arc::new(Model::load_with_kernels(&path, kernels).unwrap());
            // Eight sessions: steps of six tokens and more take other kernels
            // on some paths (AVX2's Q8_0 octets) than smaller ones.
            let params = BatchParams {
                max_seqs: 8,
                max_tokens: 64,
                n_ctx: 0,
            };
            let mut batch = Batch::new(Arc::clone(&model), params).unwrap();
            let mut s: Vec<Session> = (0..8)
                .map(|_| Session::new(Arc::clone(&model), SessionParams::default()).unwrap())
                .collect();
            let n = rayon::scope(|_| {
                let [a, b, c, d, e, f, g, h] = &mut s[..] else {
                    unreachable!()
                };
                // Joining: prompts, then one step of each size to warm up.
                batch
                    .eval(&mut [(&mut *a, &[1, 2, 3][..]), (&mut *b, &[4, 5][..])])
                    .unwrap();
                batch
                    .eval(&mut [
                        (&mut *a, &[6][..]),
                        (&mut *b, &[7][..]),
                        (&mut *c, &[8, 9, 10, 11][..]),
                    ])
                    .unwrap();
                batch.eval(&mut [(&mut *d, &[12; 20][..])]).unwrap();
                batch
                    .eval(&mut [
                        (&mut *e, &[14][..]),
                        (&mut *f, &[15, 16][..]),
                        (&mut *g, &[17][..]),
                        (&mut *h, &[18, 19, 20][..]),
                    ])
                    .unwrap();
                for k in 1..=8 {
                    let mut items: Vec<(&mut Session, &[u32])> = Vec::new();
                    let all = [
                        &mut *a, &mut *b, &mut *c, &mut *d, &mut *e, &mut *f, &mut *g, &mut *h,
                    ];
                    for (i, x) in all.into_iter().enumerate() {
                        if i < k {
                            items.push((x, &[13][..]));
                        }
                    }
                    batch.eval(&mut items).unwrap();
                }
                ALLOCS.store(0, Ordering::Relaxed);
                COUNTING.store(true, Ordering::Relaxed);
                for i in 0..20u32 {
                    // Sessions leave and come back between steps.
                    let t = [20 + i];
                    match i % 4 {
                        0 => batch.eval(&mut [
                            (&mut *a, &t[..]),
                            (&mut *b, &t[..]),
                            (&mut *c, &t[..]),
                            (&mut *d, &t[..]),
                            (&mut *e, &t[..]),
                            (&mut *f, &t[..]),
                            (&mut *g, &t[..]),
                            (&mut *h, &t[..]),
                        ]),
                        1 => batch.eval(&mut [(&mut *d, &t[..]), (&mut *b, &t[..])]),
                        2 => batch.eval(&mut [(&mut *c, &t[..])]),
                        _ => batch.eval(&mut [
                            (&mut *c, &t[..]),
                            (&mut *g, &t[..]),
                            (&mut *e, &t[..]),
                            (&mut *a, &t[..]),
                            (&mut *h, &t[..]),
                            (&mut *f, &t[..]),
                        ]),
                    }
                    .unwrap();
                }
                COUNTING.store(false, Ordering::Relaxed);
                ALLOCS.load(Ordering::Relaxed)
            });
            assert_eq!(
                n, 0,
                "{kp} kernels, {ty} weights: batched decode steps allocated"
            );
        }
    }
}
