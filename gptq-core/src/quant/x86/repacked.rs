//! The opt-in cache of the strips' repacked weights (`--repack`, like
//! ik_llama.cpp's `-rtr`): a prefill product repacks its weight rows into
//! strips on every call (`strips::repack`), which at 128-token prompts is
//! 8–15 % of the time. A model whose mapping is registered here keeps each
//! call's repack the first time it is made and reuses it after, at the cost
//! of the repacked copy's memory beside the mapping (reported by
//! [`repacked_bytes`]); the file stays as it is.
//!
//! A repack is found by where its weights start, how many rows and blocks it
//! covers and which unpacking made it, and only for weights inside a
//! registered range: a [`Registration`] evicts its range's entries when it
//! is dropped (before the model's mapping is), so an address reused by other
//! data never finds a stale repack, and products of weights nobody
//! registered (converters, tests) never use the cache.

use std::any::TypeId;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::strips::{Line, Scratch};

/// The weight side of one call's repack (the buffers `strips::repack` and
/// `repack_int` fill in a [`Scratch`]).
#[derive(Default)]
struct Packed {
    lines: Vec<Line>,
    dw: Vec<f32>,
    dm: Vec<f32>,
    isc: Vec<i32>,
    imin: Vec<i32>,
}

impl Packed {
    /// Swaps the weight-side buffers with the scratch's.
    fn swap(&mut self, s: &mut Scratch) {
        std::mem::swap(&mut self.lines, &mut s.lines);
        std::mem::swap(&mut self.dw, &mut s.dw);
        std::mem::swap(&mut self.dm, &mut s.dm);
        std::mem::swap(&mut self.isc, &mut s.isc);
        std::mem::swap(&mut self.imin, &mut s.imin);
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.lines.as_slice())
            + std::mem::size_of_val(self.dw.as_slice())
            + std::mem::size_of_val(self.dm.as_slice())
            + std::mem::size_of_val(self.isc.as_slice())
            + std::mem::size_of_val(self.imin.as_slice())
    }
}

/// What a repack is found by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    /// The address of the first weight block.
    at: usize,
    rows: usize,
    nb: usize,
    /// The unpacking function's type (one per block type and path variant).
    unpack: TypeId,
}

/// The registered ranges and the repacks made in them.
#[derive(Default)]
struct Cache {
    ranges: Vec<Range<usize>>,
    packed: HashMap<Key, Arc<Mutex<Packed>>>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Bytes held by every kept repack.
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// The cache, locked (a panic elsewhere while it was held leaves it usable:
/// every update below is complete before the lock is released).
fn cache() -> MutexGuard<'static, Option<Cache>> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of repacked weights kept by every registered model.
pub fn repacked_bytes() -> usize {
    BYTES.load(Ordering::Relaxed)
}

/// A range of weight memory whose prefill repacks are kept; dropping it
/// evicts them.
#[derive(Debug)]
pub struct Registration {
    range: Range<usize>,
}

/// Keeps the prefill repacks of weights inside `bytes` until the returned
/// registration is dropped (which must happen before `bytes` is freed).
pub fn register(bytes: &[u8]) -> Registration {
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    cache()
        .get_or_insert_with(Cache::default)
        .ranges
        .push(range.clone());
    Registration { range }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut guard = cache();
        let Some(c) = guard.as_mut() else { return };
        if let Some(i) = c.ranges.iter().position(|r| *r == self.range) {
            c.ranges.swap_remove(i);
        }
        c.packed.retain(|k, p| {
            let keep = !self.range.contains(&k.at);
            if !keep {
                let held = p.lock().unwrap_or_else(|e| e.into_inner()).bytes();
                BYTES.fetch_sub(held, Ordering::Relaxed);
            }
            keep
        });
    }
}

/// Whether a product of `n_tok` tokens of `w` reaches a kernel's threshold:
/// `kept` tokens where its repack is kept (`w` starts inside a registered
/// range, so the kernel pays no repack per call), else `unkept` (at least
/// `kept`). The registry, behind a lock, is consulted only between the two:
/// decode's one-token products and long prompts never take it.
pub(in crate::quant) fn reaches<W>(w: &[W], n_tok: usize, kept: usize, unkept: usize) -> bool {
    if n_tok >= unkept {
        return true;
    }
    if n_tok < kept {
        return false;
    }
    let at = w.as_ptr() as usize;
    cache()
        .as_ref()
        .is_some_and(|c| c.ranges.iter().any(|r| r.contains(&at)))
}

/// The type id of `_x`'s type.
fn type_id_of<T: 'static>(_x: &T) -> TypeId {
    TypeId::of::<T>()
}

/// Runs `f` with the weight-side buffers of `s` holding the repack of `rows`
/// rows of `nb` blocks at `w` made by `repack` (which fills them, with the
/// unpacking `unpack`): the kept repack when `w` lies in a registered range
/// (made and kept on the first call), else `repack` run into `s` as usual.
/// A repack another thread is using at the moment is made again into `s`.
pub(in crate::quant) fn with_repacked<W, U: 'static, R>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: &U,
    s: &mut Scratch,
    repack: impl FnOnce(&mut Scratch),
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    let at = w.as_ptr() as usize;
    let entry = {
        let mut guard = cache();
        match guard.as_mut() {
            Some(c) if c.ranges.iter().any(|r| r.contains(&at)) => {
                let key = Key {
                    at,
                    rows,
                    nb,
                    unpack: type_id_of(unpack),
                };
                Some(Arc::clone(c.packed.entry(key).or_default()))
            }
            _ => None,
        }
    };
    let Some(entry) = entry else {
        repack(s);
        return f(s);
    };
    let Ok(mut p) = entry.try_lock() else {
        repack(s);
        return f(s);
    };
    if p.lines.is_empty() {
        // Repack into empty buffers (the scratch's are grown to the largest
        // product so far), keep them, and give the scratch its own back.
        let mut own = Packed::default();
        own.swap(s);
        repack(s);
        p.swap(s);
        own.swap(s);
        BYTES.fetch_add(p.bytes(), Ordering::Relaxed);
    }
    p.swap(s);
    // Swapped back however `f` ends, so the kept repack is never lost to
    // the scratch.
    struct Back<'a, 'b>(&'a mut Packed, &'b mut Scratch);
    impl Drop for Back<'_, '_> {
        fn drop(&mut self) {
            self.0.swap(self.1);
        }
    }
    let back = Back(&mut p, s);
    let r = f(&mut *back.1);
    drop(back);
    r
}

/// Repacks kept for weights inside `range` (tests).
#[cfg(test)]
pub(in crate::quant) fn kept_in(range: std::ops::Range<usize>) -> usize {
    cache().as_ref().map_or(0, |c| {
        c.packed
            .iter()
            .filter(|(k, p)| range.contains(&k.at) && !p.lock().unwrap().lines.is_empty())
            .count()
    })
}
