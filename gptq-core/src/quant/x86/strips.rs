//! The strip layout the x86-64 prefill kernels with rows in the vector lanes
//! share (`avx512::strip`, `avx2::strip`): a call's weight rows repacked into
//! strips of 16 rows, each block as eight 64-byte lines of 16 rows × 4 bytes
//! (the layout the AMX tile unit reads), with the scales as f32 beside, and
//! the activations' scales and offset corrections as plain arrays. A 512-bit
//! register holds a whole line; a 256-bit register half of one (8 rows).
//!
//! Repacking is one pass over the call's weights with no `target_feature`:
//! every token of the call shares it.

use std::cell::Cell;

use crate::quant::tile::QuantActs;
use crate::quant::types::iq4_nl::KVALUES;
use crate::quant::types::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};

/// Weight rows per strip.
pub(in crate::quant) const STRIP: usize = 16;

/// Lines (four values of each of the strip's rows) per block.
pub(in crate::quant) const LINES: usize = QK / 4;

/// Products of fewer tokens go through the register tiles: the repack would
/// cost more than it saves.
pub(in crate::quant) const MIN_TOKENS: usize = 8;

/// One line of a strip: four weight bytes of each of 16 rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(in crate::quant) struct Line(pub(in crate::quant) [u8; 64]);

/// A thread's repacked weights and prepared activations, kept between calls
/// so that once grown to the largest product a call allocates nothing.
#[derive(Default)]
pub(in crate::quant) struct Scratch {
    /// `strips × nb × LINES` lines: block `b` of strip `s` at `(s·nb + b)·LINES`.
    pub(in crate::quant) lines: Vec<Line>,
    /// Weight scales, `strips × nb × 16`, in the lines' order (zero for the
    /// padding rows of a last partial strip).
    pub(in crate::quant) dw: Vec<f32>,
    /// Weight minimums in the same order (Q4_1, Q5_1; zero for the others).
    pub(in crate::quant) dm: Vec<f32>,
    /// The activations' scales as f32, token-major (`n_tok × nb`).
    pub(in crate::quant) da: Vec<f32>,
    /// The activations' offset corrections `-off·Σa`, token-major.
    pub(in crate::quant) corr: Vec<i32>,
    /// `d_a·Σa`, the factor of a block's minimum, token-major.
    pub(in crate::quant) dasa: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const {
        Cell::new(Scratch {
            lines: Vec::new(),
            dw: Vec::new(),
            dm: Vec::new(),
            da: Vec::new(),
            corr: Vec::new(),
            dasa: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's scratch (taken for the call, put back after).
pub(in crate::quant) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.take();
    let r = f(&mut s);
    SCRATCH.set(s);
    r
}

/// A block's scale, minimum (zero for the types without one) and 32 values
/// as the kernel wants their bytes.
pub(in crate::quant) type Unpack<W> = fn(&W) -> (f32, f32, [u8; QK]);

/// 16 packed bytes as 32 nibbles in element order.
fn nibbles(qs: &[u8; 16]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &byte) in qs.iter().enumerate() {
        q[j] = byte & 0x0f;
        q[j + QK / 2] = byte >> 4;
    }
    q
}

/// Nibbles plus 16 where the element's bit of `qh` is set (Q5_0, Q5_1).
fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> [u8; QK] {
    let (mut q, h) = (nibbles(qs), u32::from_le_bytes(qh));
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((h >> j) & 1) as u8) << 4;
    }
    q
}

/// Q8_0 as unsigned bytes `w + 128` (for `vpdpbusd`).
pub(in crate::quant) fn q8_0_unsigned(b: &BlockQ8_0) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), 0.0, b.qs.map(|v| (v as u8) ^ 0x80))
}

/// Q8_0's signed bytes as stored.
pub(in crate::quant) fn q8_0_signed(b: &BlockQ8_0) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), 0.0, b.qs.map(|v| v as u8))
}

/// Q4_0's nibbles `q = w + 8` as bytes 0..=15.
pub(in crate::quant) fn q4_0_unsigned(b: &BlockQ4_0) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), 0.0, nibbles(&b.qs))
}

/// Q4_1's values `u` (0..=15; the element is `d·u + m`).
pub(in crate::quant) fn q4_1_unsigned(b: &BlockQ4_1) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), b.m.to_f32(), nibbles(&b.qs))
}

/// Q5_0's values as stored, `q = w + 16` (0..=31).
pub(in crate::quant) fn q5_0_unsigned(b: &BlockQ5_0) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), 0.0, five_bits(&b.qs, b.qh))
}

/// Q5_1's values `u` (0..=31; the element is `d·u + m`).
pub(in crate::quant) fn q5_1_unsigned(b: &BlockQ5_1) -> (f32, f32, [u8; QK]) {
    (b.d.to_f32(), b.m.to_f32(), five_bits(&b.qs, b.qh))
}

/// IQ4_NL's table values offset to unsigned bytes `v + 128` (1..=241).
pub(in crate::quant) fn iq4_nl_unsigned(b: &BlockIq4Nl) -> (f32, f32, [u8; QK]) {
    let q = nibbles(&b.qs).map(|i| (i16::from(KVALUES[usize::from(i)]) + 128) as u8);
    (b.d.to_f32(), 0.0, q)
}

/// IQ4_NL's signed table values (-127..=113).
pub(in crate::quant) fn iq4_nl_signed(b: &BlockIq4Nl) -> (f32, f32, [u8; QK]) {
    let q = nibbles(&b.qs).map(|i| KVALUES[usize::from(i)] as u8);
    (b.d.to_f32(), 0.0, q)
}

/// Repacks `rows` rows of `nb` blocks into strip order: line `k` of a block
/// holds values `4k..4k + 4` of each of its strip's 16 rows.
pub(in crate::quant) fn repack<W>(
    w: &[W],
    rows: usize,
    nb: usize,
    unpack: Unpack<W>,
    s: &mut Scratch,
) {
    let strips = rows.div_ceil(STRIP);
    s.lines.clear();
    s.lines.resize(strips * nb * LINES, Line([0; 64]));
    s.dw.clear();
    s.dw.resize(strips * nb * STRIP, 0.0);
    s.dm.clear();
    s.dm.resize(strips * nb * STRIP, 0.0);
    for (r, row) in w[..rows * nb].chunks_exact(nb).enumerate() {
        let (strip, n) = (r / STRIP, r % STRIP);
        for (b, blk) in row.iter().enumerate() {
            let (d, m, u) = unpack(blk);
            let at = strip * nb + b;
            let lines = &mut s.lines[at * LINES..(at + 1) * LINES];
            for (line, quad) in lines.iter_mut().zip(u.chunks_exact(4)) {
                line.0[4 * n..4 * n + 4].copy_from_slice(quad);
            }
            s.dw[at * STRIP + n] = d;
            s.dm[at * STRIP + n] = m;
        }
    }
}

/// The activations' scales as f32, their corrections `-off·Σa` and the
/// minimums' factors `d_a·Σa` (from the exact block sums), token-major.
pub(in crate::quant) fn prepare_acts(a: &QuantActs<'_>, off: i32, s: &mut Scratch) {
    let n = a.n_tok * a.nb;
    assert!(
        a.blocks.len() >= n && a.sums.len() >= n,
        "strips: activations or their sums too short"
    );
    s.da.clear();
    s.da.extend(a.blocks[..n].iter().map(|b| b.d.to_f32()));
    s.corr.clear();
    s.corr
        .extend(a.sums[..n].iter().map(|&v| -off * i32::from(v)));
    s.dasa.clear();
    s.dasa.extend(
        s.da.iter()
            .zip(&a.sums[..n])
            .map(|(&d, &v)| d * f32::from(v)),
    );
}

/// One strip's repacked blocks, scales and minimums.
pub(in crate::quant) struct Strip<'s> {
    pub(in crate::quant) lines: &'s [Line],
    pub(in crate::quant) dw: &'s [f32],
    pub(in crate::quant) dm: &'s [f32],
}

impl Scratch {
    /// Strip `i` of the repacked weights (`nb` blocks per row).
    pub(in crate::quant) fn strip(&self, i: usize, nb: usize) -> Strip<'_> {
        let at = i * nb;
        Strip {
            lines: &self.lines[at * LINES..(at + nb) * LINES],
            dw: &self.dw[at * STRIP..(at + nb) * STRIP],
            dm: &self.dm[at * STRIP..(at + nb) * STRIP],
        }
    }
}
