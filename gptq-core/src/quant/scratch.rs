//! Activations a kernel prepares once per call (arranged for its weights'
//! layout): on the stack when they are few, as in every decode step, which
//! must not touch the heap; otherwise in a per-thread buffer that grows to
//! the largest product once. A per-thread buffer alone is not enough for
//! decode: which pool thread first runs which product depends on scheduling,
//! so a buffer could still grow many steps in.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

/// Runs `f` with the value in `key` (this thread's scratch), taken for the
/// call and put back after with whatever capacity it grew to: one borrow of
/// the thread-local for a whole kernel call, and no `RefCell` flag to check.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) fn with_taken<T: Default, R>(
    key: &'static LocalKey<Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut s = key.take();
    let r = f(&mut s);
    key.set(s);
    r
}

/// Runs `f` on the `n` values `make(0), make(1), …`, built in a stack array of
/// `N` when `n <= N`, else in `heap`'s per-thread buffer (taken for the call,
/// then put back with its capacity).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn with_prepared<T: Copy, R, const N: usize>(
    n: usize,
    heap: &'static LocalKey<Cell<Vec<T>>>,
    mut make: impl FnMut(usize) -> T,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    if n <= N {
        let mut buf = MaybeUninit::<[T; N]>::uninit();
        let p = buf.as_mut_ptr().cast::<T>();
        for i in 0..n {
            // SAFETY: `i < n <= N`, inside the array.
            unsafe { p.add(i).write(make(i)) };
        }
        // SAFETY: the first `n` values were written just above (`T: Copy`, so
        // an unwinding `make` leaves nothing to drop).
        f(unsafe { std::slice::from_raw_parts(p, n) })
    } else {
        let mut v = heap.take();
        v.clear();
        v.extend((0..n).map(make));
        let r = f(&v);
        heap.set(v);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static HEAP: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    }

    /// Both storages hand `f` exactly `make(0..n)`, on either side of `N`.
    #[test]
    fn values_on_the_stack_and_the_heap() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            let got =
                with_prepared::<u64, Vec<u64>, 8>(n, &HEAP, |i| 3 * i as u64 + 1, <[u64]>::to_vec);
            let want: Vec<u64> = (0..n as u64).map(|i| 3 * i + 1).collect();
            assert_eq!(got, want, "{n}");
        }
    }
}
