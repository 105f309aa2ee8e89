//! A team of threads that shares the parallel loops of one decode step.
//!
//! A decode step is about sixty small parallel loops (the products of every
//! layer, each a few hundred microseconds or less, and the attention heads)
//! separated by short serial stretches (LayerNorm, residual adds). Handing each
//! loop to the rayon pool costs a microsecond or two, and a rayon worker that
//! finds no work for a few microseconds goes to sleep: waking it costs 15–20 µs
//! on these machines, and a decode step would pay that in many of its loops.
//! The team instead offers the pool one helper job per extra thread for the
//! whole step (nested `rayon::join`s); the helpers spin between loops, and
//! each loop is published to them as one atomic pointer and shared out by an
//! atomic counter. Measured with `gptq bench -p 0 -n 64`, Q4_0, 2 threads,
//! team against rayon's parallel iterators in one build, medians of 5 runs
//! alternated: 112.7 against 100.0 t/s on the 355M shape; on the 124M shape
//! the two were within noise (543 and 558).
//!
//! The calling thread never waits for a helper that has not taken work: it
//! runs every index nobody else claims, and only waits for indices another
//! thread has claimed and is running. So a step always finishes, even when
//! no helper ever starts (a busy pool, or several sessions decoding at once
//! on the same pool).

use std::hint::spin_loop;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use rayon::prelude::*;

/// One parallel loop: `f(i)` for every `i < n`, each index claimed once.
struct Job<'f> {
    f: &'f (dyn Fn(usize) + Sync),
    n: usize,
    /// The next unclaimed index.
    next: AtomicUsize,
    /// Indices finished (or unwound from).
    done: AtomicUsize,
    /// Set when some `f(i)` panicked.
    panicked: AtomicBool,
}

/// Counts an index as done when `f(i)` returns or unwinds, so that nobody
/// waits forever for an index that panicked.
struct Done<'a, 'f>(&'a Job<'f>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.panicked.store(true, Ordering::Relaxed);
        }
        // Release: the caller, which acquires `done`, sees `f(i)`'s writes.
        self.0.done.fetch_add(1, Ordering::Release);
    }
}

impl Job<'_> {
    /// Claims and runs indices until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            let _done = Done(self);
            (self.f)(i);
        }
    }
}

/// The shared state of a team; see the module documentation.
pub struct Team {
    /// The loop being shared, or null.
    job: AtomicPtr<Job<'static>>,
    /// Bumped at every loop published, so that a helper can tell a new loop
    /// from the last one (they often sit at the same stack address).
    epoch: AtomicUsize,
    /// Helpers inside a loop: the caller does not let the loop's `Job` go
    /// while any is.
    active: AtomicUsize,
    /// Set when the step is over: the helpers return.
    finished: AtomicBool,
    /// Threads that may help (including the caller's).
    threads: usize,
}

/// Spins before a waiting helper starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// Sets `finished` when the step's body returns or unwinds, so the helpers
/// always leave and the enclosing rayon scope can end.
struct FinishOnDrop<'a>(&'a Team);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::Release);
    }
}

impl Team {
    /// Runs `body` on a thread of the current rayon pool, with one helper job
    /// offered to the pool per other thread; `body` shares its loops out
    /// through [`Par::Team`].
    pub fn run<R: Send>(body: impl FnOnce(&Team) -> R + Send) -> R {
        let threads = rayon::current_num_threads().max(1);
        let team = Team {
            job: AtomicPtr::new(null_mut()),
            epoch: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
            threads,
        };
        team.run_with_helpers(threads - 1, body)
    }

    /// `body` beside `helpers` helper jobs, through nested `rayon::join`s:
    /// unlike a scope's spawns, a join's jobs live on the stack, so a decode
    /// step allocates nothing. A helper nobody steals runs after `body` on the
    /// same thread, sees the step finished and returns at once.
    fn run_with_helpers<R: Send>(&self, helpers: usize, body: impl FnOnce(&Team) -> R + Send) -> R {
        if helpers == 0 {
            let _finish = FinishOnDrop(self);
            return body(self);
        }
        rayon::join(|| self.run_with_helpers(helpers - 1, body), || self.help()).0
    }

    /// A helper's loop: waits for loops (spinning, then yielding) and works
    /// on each until the step is finished.
    fn help(&self) {
        let mut seen = 0;
        let mut idle = 0u32;
        while !self.finished.load(Ordering::Acquire) {
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch == seen {
                if idle < SPINS_BEFORE_YIELD {
                    idle += 1;
                    spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            seen = epoch;
            idle = 0;
            // Announce this helper before looking at the loop: the caller
            // clears `job` and then waits for `active` to drop to zero, so a
            // loop seen here stays alive until this helper leaves it.
            let _active = Active::enter(self);
            let p = self.job.load(Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: `p` was published by `for_each`, which keeps the Job
                // alive until it has cleared `job` and then seen `active` at
                // zero; this helper is counted in `active` (until `_active`
                // drops) and loaded `p` after being counted.
                unsafe { &*p }.work();
            }
        }
    }

    /// Runs `f(i)` for every `i < n` on the calling thread and any helper
    /// that joins, returning when every index has run.
    fn for_each(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n <= 1 || self.threads == 1 {
            (0..n).for_each(f);
            return;
        }
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let p: *const Job<'_> = &job;
        // SeqCst (a release): a helper that loads the pointer sees everything
        // this thread wrote before, such as the quantized activations.
        self.job.store(p.cast_mut().cast(), Ordering::SeqCst);
        let _unpublish = Unpublish(self, &job);
        self.epoch.fetch_add(1, Ordering::Release);
        job.work();
        while job.done.load(Ordering::Acquire) < n {
            spin_loop();
        }
        assert!(
            !job.panicked.load(Ordering::Relaxed),
            "a parallel task panicked"
        );
    }
}

/// Counts a helper in `active` while it may hold a published loop.
struct Active<'a>(&'a Team);

impl<'a> Active<'a> {
    fn enter(team: &'a Team) -> Active<'a> {
        team.active.fetch_add(1, Ordering::SeqCst);
        Active(team)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Withdraws a published loop when `for_each` returns or unwinds: no index
/// is claimed after it, and the `Job` outlives every helper still inside.
struct Unpublish<'a, 'f>(&'a Team, &'a Job<'f>);

impl Drop for Unpublish<'_, '_> {
    fn drop(&mut self) {
        self.1.next.store(self.1.n, Ordering::Relaxed);
        self.0.job.store(null_mut(), Ordering::SeqCst);
        while self.0.active.load(Ordering::SeqCst) != 0 {
            spin_loop();
        }
    }
}

/// Where a parallel loop runs: on the rayon pool, or on a decode step's
/// [`Team`].
#[derive(Clone, Copy)]
pub enum Par<'t> {
    /// Rayon's parallel iterators (prefill, and callers outside a step).
    Pool,
    /// The spinning team of a decode step.
    Team(&'t Team),
}

impl Par<'_> {
    /// Runs `f(i)` for every `i < n`, in parallel.
    pub fn for_each(self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        match self {
            Par::Pool => (0..n).into_par_iter().for_each(f),
            Par::Team(team) => team.for_each(n, f),
        }
    }

    /// Runs `f(i, a_i)` in parallel over the chunks `a_i` of `a` (`ca` long,
    /// the last maybe shorter).
    ///
    /// # Panics
    /// When `ca` is zero.
    pub fn for_each_chunks<A: Send>(
        self,
        a: &mut [A],
        ca: usize,
        f: impl Fn(usize, &mut [A]) + Sync,
    ) {
        assert!(ca > 0, "for_each_chunks: empty chunks");
        // A vector of `()` holds no memory: nothing is allocated.
        let mut units = vec![(); a.len().div_ceil(ca)];
        self.for_each_chunks2(a, ca, &mut units, 1, |i, ai, _| f(i, ai));
    }

    /// Runs `f(i, a_i, b_i)` in parallel over the chunks `a_i` of `a` (`ca`
    /// long, the last maybe shorter) and the matching chunks `b_i` of `b`
    /// (`cb` long).
    ///
    /// # Panics
    /// When a chunk length is zero or `b` has fewer chunks than `a`.
    pub fn for_each_chunks2<A: Send, B: Send>(
        self,
        a: &mut [A],
        ca: usize,
        b: &mut [B],
        cb: usize,
        f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
    ) {
        assert!(ca > 0 && cb > 0, "for_each_chunks2: empty chunks");
        let n = a.len().div_ceil(ca);
        assert!(b.len() >= n * cb, "for_each_chunks2: b too short");
        match self {
            Par::Pool => a
                .par_chunks_mut(ca)
                .zip(b.par_chunks_mut(cb))
                .enumerate()
                .for_each(|(i, (ai, bi))| f(i, ai, bi)),
            Par::Team(team) => {
                let (la, pa, pb) = (a.len(), SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
                team.for_each(n, &|i| {
                    let (sa, sb) = (i * ca, i * cb);
                    let len_a = ca.min(la - sa);
                    // SAFETY: `for_each` runs each `i < n` once, so the chunks
                    // `a[sa..sa + len_a]` and `b[sb..sb + cb]` (in bounds: `sa < la`
                    // and `sb + cb <= n·cb <= b.len()`) are each borrowed by one
                    // task only, and `a` and `b` stay borrowed mutably by this
                    // call until every task has finished.
                    let (ai, bi) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(pa.get().add(sa), len_a),
                            std::slice::from_raw_parts_mut(pb.get().add(sb), cb),
                        )
                    };
                    f(i, ai, bi);
                });
            }
        }
    }
}

/// A pointer to data that tasks on other threads borrow in disjoint parts.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

// SAFETY: only used by `for_each_chunks2`, whose tasks touch disjoint parts
// of `Send` data that outlives them.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper and
    /// not its field).
    fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every index runs exactly once, over many loops in a row, on the team
    /// and on the pool.
    #[test]
    fn every_index_runs_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let hits: Vec<AtomicU64> = (0..257).map(|_| AtomicU64::new(0)).collect();
            Team::run(|team| {
                for n in (0..257).chain([1, 0, 2, 256]) {
                    for par in [Par::Team(team), Par::Pool] {
                        par.for_each(n, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                }
            });
            let total: u64 = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
            let want: u64 = (0..257u64).chain([1, 0, 2, 256]).map(|n| 2 * n).sum();
            assert_eq!(total, want);
            for (i, h) in hits.iter().enumerate() {
                let want: u64 = (0..257u64)
                    .chain([1, 0, 2, 256])
                    .filter(|&n| n > i as u64)
                    .map(|_| 2)
                    .sum();
                assert_eq!(h.load(Ordering::Relaxed), want, "index {i}");
            }
        });
    }

    /// A step finishes when the pool has no thread free to help: two teams
    /// on a two-thread pool, each holding one thread.
    #[test]
    fn finishes_without_helpers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let sums: Vec<u64> = (0..2u64)
                .into_par_iter()
                .map(|k| {
                    Team::run(|team| {
                        let sum = AtomicU64::new(0);
                        for _ in 0..100 {
                            Par::Team(team).for_each(64, &|i| {
                                sum.fetch_add(i as u64 + k, Ordering::Relaxed);
                            });
                        }
                        sum.load(Ordering::Relaxed)
                    })
                })
                .collect();
            assert_eq!(sums, vec![100 * 2016, 100 * (2016 + 64)]);
        });
    }

    /// A panic inside a loop reaches the caller instead of hanging the
    /// helpers.
    #[test]
    fn a_panic_propagates() {
        let r = std::panic::catch_unwind(|| {
            Team::run(|team| {
                Par::Team(team).for_each(8, &|i| assert!(i != 5, "boom"));
            })
        });
        assert!(r.is_err());
    }
}
