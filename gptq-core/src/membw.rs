//! The machine's streaming-read bandwidth: the bound that decoding (which
//! reads every weight byte once per token) is measured against.

use std::time::Instant;

use rayon::prelude::*;

/// Sums `buf` on the rayon pool, each worker streaming one contiguous part
/// with eight independent accumulators, so the loop is limited by memory
/// loads rather than by the dependency chain of one sum. Each 64 bytes read
/// get the same software prefetch hints as decode's weight stream
/// (`quant::prefetch::stream`), so the two are measured alike.
pub fn stream_read(buf: &[u64]) -> u64 {
    let chunk = buf.len().div_ceil(rayon::current_num_threads() * 8).max(8);
    buf.par_chunks(chunk)
        .map(|c| {
            let mut acc = [0u64; 8];
            for block in c.chunks_exact(8) {
                crate::quant::prefetch::stream(&block[0]);
                for (a, &x) in acc.iter_mut().zip(block) {
                    *a = a.wrapping_add(x);
                }
            }
            let tail = c.chunks_exact(8).remainder();
            tail.iter()
                .chain(&acc)
                .fold(0u64, |x, &y| x.wrapping_add(y))
        })
        .reduce(|| 0, u64::wrapping_add)
}

/// A buffer for timed streaming reads, filled once (so that its pages are
/// touched before any read is timed) and read, whole or a leading part of
/// it, as often as asked: one buffer serves references of several sizes
/// without holding each at once.
pub struct StreamBuf(Vec<u64>);

impl StreamBuf {
    /// A buffer of `bytes` (rounded down to whole `u64`s); choose it far
    /// larger than the caches to measure the memory bound.
    pub fn new(bytes: usize) -> Self {
        StreamBuf((0..bytes / 8).map(|i| i as u64).collect())
    }

    /// One timed [`stream_read`] of the buffer's first `bytes` (at most all
    /// of it), in GB/s (10⁹ bytes per second).
    pub fn read_gbps(&self, bytes: usize) -> f64 {
        let part = &self.0[..(bytes / 8).min(self.0.len())];
        let t = Instant::now();
        std::hint::black_box(stream_read(part));
        (part.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_reads_at_a_positive_finite_rate() {
        let buf = StreamBuf::new(1 << 20);
        for bytes in [1 << 20, 4096, 1 << 30] {
            let gbps = buf.read_gbps(bytes);
            assert!(gbps.is_finite() && gbps > 0.0, "{bytes}: {gbps}");
        }
    }

    #[test]
    fn sums_every_element() {
        for n in [0usize, 1, 7, 8, 9, 1000, 4097] {
            let v: Vec<u64> = (0..n as u64).collect();
            assert_eq!(stream_read(&v), v.iter().sum::<u64>(), "{n}");
        }
    }
}
