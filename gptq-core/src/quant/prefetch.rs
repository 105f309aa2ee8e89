//! Software prefetch hints for streaming reads (no-ops off x86-64).

/// A single sequential stream (decode's one-row walk over the weights) is
/// prefetched twice: into L1 `DECODE_L1_AHEAD` bytes ahead and into L2
/// `DECODE_L2_AHEAD` bytes ahead. Two rows ahead (the tile rule) is only
/// 1.2–6.5 KB on GPT-2's shapes, too short to hide the latency of a core
/// streaming from L3 or DRAM. Measured with `gptq bench -p 0 -n 64` on the
/// 124M Q8_0 shape, AVX-512 path, one run: two rows ahead 137–139 t/s, 8 KB
/// into L1 144–154, 4 KB into L1 plus 16 KB into L2 167–173 (2–8 KB plus
/// 12–32 KB all within noise of that).
pub const DECODE_L1_AHEAD: usize = 4096;
/// See [`DECODE_L1_AHEAD`].
pub const DECODE_L2_AHEAD: usize = 16384;

/// Hints the lines [`DECODE_L1_AHEAD`] bytes past `p` into L1 and
/// [`DECODE_L2_AHEAD`] past it into L2: call once per line or so of a
/// sequential read.
#[inline(always)]
pub fn stream<B>(p: &B) {
    hint::<B, 0>(p, DECODE_L1_AHEAD);
    hint::<B, 1>(p, DECODE_L2_AHEAD);
}

/// Hints the line `ahead` bytes past `p` into L1.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn ahead_l1<B>(p: &B, ahead: usize) {
    hint::<B, 0>(p, ahead);
}

/// Hints the line `ahead` bytes past `p` into L2.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn l2_at<B>(p: &B, ahead: usize) {
    hint::<B, 1>(p, ahead);
}

/// Hints the line `ahead` bytes past `p` into L1 (`LEVEL` 0) or L2 (1).
#[inline(always)]
fn hint<B, const LEVEL: u8>(p: &B, ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
        let addr = (p as *const B).cast::<i8>().wrapping_add(ahead);
        // SAFETY: a prefetch (SSE, part of every x86-64) is only a hint: it
        // never faults and makes no memory visible to the program, so an
        // address past the end of the data (computed with wrapping
        // arithmetic, never dereferenced) is harmless.
        unsafe {
            if LEVEL == 0 {
                _mm_prefetch::<_MM_HINT_T0>(addr)
            } else {
                _mm_prefetch::<_MM_HINT_T1>(addr)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, ahead);
}
