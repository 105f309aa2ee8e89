//! Decoding a token performs no heap allocation: every buffer a session needs
//! is allocated when it is made. A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gptq_core::gguf::GgmlType;
use gptq_core::model::HParams;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{KernelPath, Kernels, KvType, Model, Session, SessionParams};

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

#[test]
fn decode_steps_allocate_nothing() {
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
