//! Test support for the block types: random blocks with finite scales, and
//! the check of a type's scalar dot against its dequantized values multiplied
//! out in f64.

use half::f16;

use super::BlockQ8_0;
use super::q8_0::{dequantize_row_q8_0, quantize_acts_q8_0};
use super::q8_k::{BlockQ8K, dequantize_row_q8_k, quantize_row_q8_k};
use super::validate::scale_offsets;
use crate::gguf::{GgmlType, Pod, as_bytes, cast_slice};

/// A small, fixed pseudo-random generator (64-bit LCG).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }

    /// Uniform in [-1, 1).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next() >> 24) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub(crate) fn byte(&mut self) -> u8 {
        (self.next() >> 8) as u8
    }
}

/// `n` blocks of type `ty` (block struct `B`) with random bytes, whose f16
/// scales are replaced by `scale(rng)`.
pub(crate) fn random_blocks<B: Pod>(
    ty: GgmlType,
    n: usize,
    rng: &mut Rng,
    mut scale: impl FnMut(&mut Rng) -> f32,
) -> Vec<B> {
    let size = ty.type_size();
    assert_eq!(size, std::mem::size_of::<B>());
    let mut bytes: Vec<u8> = (0..n * size).map(|_| rng.byte()).collect();
    for block in bytes.chunks_exact_mut(size) {
        for &o in scale_offsets(ty).unwrap_or(&[]) {
            block[o..o + 2].copy_from_slice(&f16::from_f32(scale(rng)).to_le_bytes());
        }
    }
    blocks_from_bytes(&bytes)
}

/// Blocks from their stored bytes (copied to an aligned buffer).
pub(crate) fn blocks_from_bytes<B: Pod>(bytes: &[u8]) -> Vec<B> {
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|w| u16::from_ne_bytes([w[0], w[1]]))
        .collect();
    cast_slice::<B>(as_bytes(&words))
        .expect("whole aligned blocks")
        .to_vec()
}

/// A typical scale: magnitude in [1e-3, 0.05], either sign.
pub(crate) fn typical_scale(rng: &mut Rng) -> f32 {
    let m = 1e-3 + 0.049 * (rng.f() * 0.5 + 0.5);
    if rng.byte() & 1 == 0 { m } else { -m }
}

/// Σ|w·a| and the f64 dot of two expanded rows.
fn exact(w: &[f32], a: &[f32]) -> (f64, f64) {
    w.iter().zip(a).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = f64::from(x) * f64::from(y);
        (s + p, m + p.abs())
    })
}

/// Checks `dot` (weights of type `ty` times Q8_0 activations) against the
/// dequantized weights and activations multiplied in f64, on random rows.
pub(crate) fn check_dot_q8_0<B: Pod>(ty: GgmlType, dot: fn(&[B], &[BlockQ8_0]) -> f32) {
    let mut rng = Rng(ty.id() as u64 * 77 + 1);
    for nb in [1, 2, 3, 8, 24, 96] {
        let w: Vec<B> = random_blocks(ty, nb, &mut rng, typical_scale);
        let x: Vec<f32> = (0..nb * 32).map(|_| 4.0 * rng.f()).collect();
        let mut a = vec![BlockQ8_0::ZERO; nb];
        quantize_acts_q8_0(&x, &mut a);
        let mut af = vec![0.0; nb * 32];
        dequantize_row_q8_0(&a, &mut af);
        let mut wf = vec![0.0; nb * 32];
        super::dequantize_row(ty, as_bytes(&w), &mut wf).unwrap();
        let (want, mag) = exact(&wf, &af);
        let got = dot(&w, &a);
        assert!(
            (f64::from(got) - want).abs() <= 2e-6 * mag + 1e-30,
            "{ty} nb {nb}: {got} vs {want} (Σ|terms| {mag})"
        );
    }
}

/// Checks `dot` (weights of type `ty` times Q8_K activations) as
/// [`check_dot_q8_0`].
pub(crate) fn check_dot_q8_k<B: Pod>(ty: GgmlType, dot: fn(&[B], &[BlockQ8K]) -> f32) {
    let mut rng = Rng(ty.id() as u64 * 77 + 2);
    for nb in [1, 2, 3, 12] {
        let w: Vec<B> = random_blocks(ty, nb, &mut rng, typical_scale);
        let x: Vec<f32> = (0..nb * 256).map(|_| 4.0 * rng.f()).collect();
        let mut a = vec![BlockQ8K::ZERO; nb];
        quantize_row_q8_k(&x, &mut a);
        let mut af = vec![0.0; nb * 256];
        dequantize_row_q8_k(&a, &mut af);
        let mut wf = vec![0.0; nb * 256];
        super::dequantize_row(ty, as_bytes(&w), &mut wf).unwrap();
        let (want, mag) = exact(&wf, &af);
        let got = dot(&w, &a);
        assert!(
            (f64::from(got) - want).abs() <= 2e-6 * mag + 1e-30,
            "{ty} nb {nb}: {got} vs {want} (Σ|terms| {mag})"
        );
    }
}

/// The byte ranges of the f16 scales in a block of `ty`.
pub(crate) fn scale_ranges(ty: GgmlType) -> Vec<std::ops::Range<usize>> {
    scale_offsets(ty)
        .unwrap_or(&[])
        .iter()
        .map(|&o| o..o + 2)
        .collect()
}
