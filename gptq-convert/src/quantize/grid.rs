//! Rounding values on blocks whose scales are already chosen, one value at a
//! time: what GPTQ-style error compensation needs. GPTQ quantizes a row column
//! by column and folds each column's rounding error into the columns not yet
//! quantized; the block structure fixes the groups, so each block's scales are
//! chosen by ggml's search (with or without importance weights, exactly as
//! [`super::quantize_row`] chooses them) and every value is then rounded to the
//! nearest value those stored scales can represent.
//!
//! ```
//! # use gptq_convert::quantize::grid::RowGrid;
//! # use gptq_core::gguf::GgmlType;
//! let row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut grid = RowGrid::choose(GgmlType::Q4_K, &row, None).unwrap();
//! let stored = grid.set(5, 0.123); // the value element 5 now decodes to
//! assert_eq!(grid.value(5), stored);
//! let bytes = grid.into_bytes(); // the row's Q4_K blocks
//! # assert_eq!(bytes.len(), 144);
//! ```
//!
//! To choose a block's scales from updated values (GPTQ's lazily chosen
//! groups), build a grid from the updated row and [`RowGrid::adopt_block`] it.

use anyhow::{Result, bail};
use gptq_core::gguf::{GgmlType, Pod, as_bytes, cast_slice};
use gptq_core::quant::types::iq4_nl::KVALUES;
use gptq_core::quant::types::q3_k::unpack_scales;
use gptq_core::quant::types::q4_k::scale_min;
use gptq_core::quant::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1,
    BlockQ5K, BlockQ6K,
};
use gptq_core::quant::{BlockQ4_0, BlockQ8_0};

use super::quantize_row;

/// A row's blocks, typed.
#[derive(Clone, Debug)]
enum Blocks {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q5_0(Vec<BlockQ5_0>),
    Q5_1(Vec<BlockQ5_1>),
    Q8_0(Vec<BlockQ8_0>),
    Q2K(Vec<BlockQ2K>),
    Q3K(Vec<BlockQ3K>),
    Q4K(Vec<BlockQ4K>),
    Q5K(Vec<BlockQ5K>),
    Q6K(Vec<BlockQ6K>),
    Iq4Nl(Vec<BlockIq4Nl>),
    Iq4Xs(Vec<BlockIq4Xs>),
}

/// One quantized row whose scales are fixed and whose levels can be set one
/// element at a time.
#[derive(Clone, Debug)]
pub struct RowGrid {
    ty: GgmlType,
    blocks: Blocks,
}

/// Copies stored bytes into typed blocks (the bytes may have any alignment).
fn typed<B: Pod>(bytes: &[u8]) -> Vec<B> {
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|w| u16::from_ne_bytes([w[0], w[1]]))
        .collect();
    cast_slice::<B>(as_bytes(&words)).unwrap_or(&[]).to_vec()
}

impl RowGrid {
    /// Chooses every block's scales for `row` with ggml's search for `ty`
    /// (the bytes [`quantize_row`] gives; the levels are its roundings).
    /// Types: the block types of [`super::QUANTIZABLE`] (not the float types).
    pub fn choose(ty: GgmlType, row: &[f32], imatrix: Option<&[f32]>) -> Result<RowGrid> {
        let bytes = quantize_row(ty, row, imatrix)?;
        RowGrid::from_bytes(ty, &bytes)
    }

    /// A grid over stored blocks of `ty`.
    pub fn from_bytes(ty: GgmlType, bytes: &[u8]) -> Result<RowGrid> {
        if !bytes.len().is_multiple_of(ty.type_size()) {
            bail!("{} bytes are not whole {ty} blocks", bytes.len());
        }
        let blocks = match ty {
            GgmlType::Q4_0 => Blocks::Q4_0(typed(bytes)),
            GgmlType::Q4_1 => Blocks::Q4_1(typed(bytes)),
            GgmlType::Q5_0 => Blocks::Q5_0(typed(bytes)),
            GgmlType::Q5_1 => Blocks::Q5_1(typed(bytes)),
            GgmlType::Q8_0 => Blocks::Q8_0(typed(bytes)),
            GgmlType::Q2_K => Blocks::Q2K(typed(bytes)),
            GgmlType::Q3_K => Blocks::Q3K(typed(bytes)),
            GgmlType::Q4_K => Blocks::Q4K(typed(bytes)),
            GgmlType::Q5_K => Blocks::Q5K(typed(bytes)),
            GgmlType::Q6_K => Blocks::Q6K(typed(bytes)),
            GgmlType::IQ4_NL => Blocks::Iq4Nl(typed(bytes)),
            GgmlType::IQ4_XS => Blocks::Iq4Xs(typed(bytes)),
            other => bail!("{other} has no blocks to round on"),
        };
        Ok(RowGrid { ty, blocks })
    }

    /// The row's type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The row's stored bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match &self.blocks {
            Blocks::Q4_0(b) => as_bytes(b).to_vec(),
            Blocks::Q4_1(b) => as_bytes(b).to_vec(),
            Blocks::Q5_0(b) => as_bytes(b).to_vec(),
            Blocks::Q5_1(b) => as_bytes(b).to_vec(),
            Blocks::Q8_0(b) => as_bytes(b).to_vec(),
            Blocks::Q2K(b) => as_bytes(b).to_vec(),
            Blocks::Q3K(b) => as_bytes(b).to_vec(),
            Blocks::Q4K(b) => as_bytes(b).to_vec(),
            Blocks::Q5K(b) => as_bytes(b).to_vec(),
            Blocks::Q6K(b) => as_bytes(b).to_vec(),
            Blocks::Iq4Nl(b) => as_bytes(b).to_vec(),
            Blocks::Iq4Xs(b) => as_bytes(b).to_vec(),
        }
    }

    /// Takes block `block` (scales and levels) from `other`, a grid of the same
    /// type and length.
    pub fn adopt_block(&mut self, block: usize, other: &RowGrid) {
        macro_rules! take {
            ($($v:ident),*) => {
                match (&mut self.blocks, &other.blocks) {
                    $((Blocks::$v(a), Blocks::$v(b)) => a[block] = b[block],)*
                    _ => panic!("adopt_block: grids of different types"),
                }
            };
        }
        take!(
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs
        );
    }

    /// The value element `col` decodes to.
    pub fn value(&self, col: usize) -> f32 {
        let (b, i) = (col / self.ty.block_size(), col % self.ty.block_size());
        self.decode(b, i, self.level(b, i))
    }

    /// Rounds `x` to the nearest value element `col`'s block can represent with
    /// its stored scales, stores that level and returns the value it decodes to
    /// (exactly what dequantization gives). On a tie the current level stays
    /// (else the lower one wins), so setting the value an element already
    /// decodes to changes no byte.
    pub fn set(&mut self, col: usize, x: f32) -> f32 {
        let (b, i) = (col / self.ty.block_size(), col % self.ty.block_size());
        let (lo, hi) = self.level_range();
        let (v_lo, v_hi) = (self.decode(b, i, lo), self.decode(b, i, hi));
        let guess = if v_hi != v_lo && v_hi.is_finite() && v_lo.is_finite() {
            // Levels are evenly spaced on the affine types: interpolate, then
            // look at the neighbours (and on the table types, everywhere).
            let t = (x - v_lo) / (v_hi - v_lo) * (hi - lo) as f32;
            (lo + t.round().clamp(0.0, (hi - lo) as f32) as i32).clamp(lo, hi)
        } else {
            self.level(b, i)
        };
        let candidates: Vec<i32> = if matches!(self.ty, GgmlType::IQ4_NL | GgmlType::IQ4_XS) {
            (lo..=hi).collect()
        } else {
            (guess - 1..=guess + 1)
                .filter(|q| (lo..=hi).contains(q))
                .collect()
        };
        let current = self.level(b, i);
        let mut best = (current, (self.decode(b, i, current) - x).abs());
        for q in candidates {
            let err = (self.decode(b, i, q) - x).abs();
            if err < best.1 || best.1.is_nan() {
                best = (q, err);
            }
        }
        self.put(b, i, best.0);
        self.decode(b, i, best.0)
    }

    /// The levels a block stores, as [`Self::decode`] takes them.
    fn level_range(&self) -> (i32, i32) {
        match self.ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => (0, 15),
            GgmlType::IQ4_NL | GgmlType::IQ4_XS => (0, 15),
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => (0, 31),
            GgmlType::Q8_0 => (-127, 127),
            GgmlType::Q2_K => (0, 3),
            GgmlType::Q3_K => (-4, 3),
            _ => (0, 63), // Q6_K
        }
    }

    /// The stored level of element `i` of block `b`.
    fn level(&self, b: usize, i: usize) -> i32 {
        let nib =
            |qs: &[u8], i: usize| i32::from(if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 });
        match &self.blocks {
            Blocks::Q4_0(v) => nib(&v[b].qs, i),
            Blocks::Q4_1(v) => nib(&v[b].qs, i),
            Blocks::Iq4Nl(v) => nib(&v[b].qs, i),
            Blocks::Q5_0(v) => i32::from(v[b].q(i)),
            Blocks::Q5_1(v) => i32::from(v[b].q(i)),
            Blocks::Q8_0(v) => i32::from(v[b].qs[i]),
            Blocks::Q2K(v) => i32::from(v[b].q(i)),
            Blocks::Q3K(v) => i32::from(v[b].q(i)),
            Blocks::Q4K(v) => i32::from(v[b].q(i)),
            Blocks::Q5K(v) => i32::from(v[b].q(i)),
            Blocks::Q6K(v) => i32::from(v[b].q(i)) + 32,
            Blocks::Iq4Xs(v) => i32::from(v[b].q(i)),
        }
    }

    /// What level `q` of element `i` of block `b` decodes to: the same
    /// arithmetic as the type's dequantization.
    fn decode(&self, b: usize, i: usize, q: i32) -> f32 {
        let qf = q as f32;
        match &self.blocks {
            Blocks::Q4_0(v) => (qf - 8.0) * v[b].d.to_f32(),
            Blocks::Q4_1(v) => qf * v[b].d.to_f32() + v[b].m.to_f32(),
            Blocks::Q5_0(v) => (qf - 16.0) * v[b].d.to_f32(),
            Blocks::Q5_1(v) => qf * v[b].d.to_f32() + v[b].m.to_f32(),
            Blocks::Q8_0(v) => qf * v[b].d.to_f32(),
            Blocks::Q2K(v) => {
                let sc = v[b].scales[i / 16];
                let dl = v[b].d.to_f32() * f32::from(sc & 15);
                let ml = v[b].dmin.to_f32() * f32::from(sc >> 4);
                dl * qf - ml
            }
            Blocks::Q3K(v) => {
                let sc = unpack_scales(&v[b].scales)[i / 16] as i8 - 32;
                v[b].d.to_f32() * f32::from(sc) * qf
            }
            Blocks::Q4K(v) => {
                let (sc, m) = scale_min(i / 32, &v[b].scales);
                v[b].d.to_f32() * f32::from(sc) * qf - v[b].dmin.to_f32() * f32::from(m)
            }
            Blocks::Q5K(v) => {
                let (sc, m) = scale_min(i / 32, &v[b].scales);
                v[b].d.to_f32() * f32::from(sc) * qf - v[b].dmin.to_f32() * f32::from(m)
            }
            Blocks::Q6K(v) => v[b].d.to_f32() * f32::from(v[b].scales[i / 16]) * (qf - 32.0),
            Blocks::Iq4Nl(v) => v[b].d.to_f32() * f32::from(KVALUES[q as usize & 15]),
            Blocks::Iq4Xs(v) => {
                let dl = v[b].d.to_f32() * f32::from(v[b].scale(i / 32));
                dl * f32::from(KVALUES[q as usize & 15])
            }
        }
    }

    /// Stores level `q` (in [`Self::level_range`]) for element `i` of block `b`.
    fn put(&mut self, b: usize, i: usize, q: i32) {
        fn set_nibble(qs: &mut [u8], i: usize, q: u8) {
            if i < 16 {
                qs[i] = (qs[i] & 0xf0) | q;
            } else {
                qs[i - 16] = (qs[i - 16] & 0x0f) | (q << 4);
            }
        }
        fn set_bit(bytes: &mut [u8], byte: usize, bit: usize, on: bool) {
            bytes[byte] = (bytes[byte] & !(1 << bit)) | (u8::from(on) << bit);
        }
        let u = q as u8;
        match &mut self.blocks {
            Blocks::Q4_0(v) => set_nibble(&mut v[b].qs, i, u),
            Blocks::Q4_1(v) => set_nibble(&mut v[b].qs, i, u),
            Blocks::Iq4Nl(v) => set_nibble(&mut v[b].qs, i, u),
            Blocks::Q5_0(v) => {
                set_nibble(&mut v[b].qs, i, u & 15);
                set_bit(&mut v[b].qh, i / 8, i % 8, u & 16 != 0);
            }
            Blocks::Q5_1(v) => {
                set_nibble(&mut v[b].qs, i, u & 15);
                set_bit(&mut v[b].qh, i / 8, i % 8, u & 16 != 0);
            }
            Blocks::Q8_0(v) => v[b].qs[i] = q as i8,
            Blocks::Q2K(v) => {
                let (byte, shift) = (32 * (i / 128) + i % 32, 2 * ((i % 128) / 32));
                v[b].qs[byte] = (v[b].qs[byte] & !(3 << shift)) | (u << shift);
            }
            Blocks::Q3K(v) => {
                let (byte, shift) = (32 * (i / 128) + i % 32, 2 * ((i % 128) / 32));
                let low = (q + 4) as u8 & 3;
                v[b].qs[byte] = (v[b].qs[byte] & !(3 << shift)) | (low << shift);
                // A set high bit means "level = low bits", a clear one "low - 4".
                set_bit(&mut v[b].hmask, i % 32, i / 32, q >= 0);
            }
            Blocks::Q4K(v) => {
                let byte = 32 * (i / 64) + i % 32;
                let qs = &mut v[b].qs[byte];
                *qs = if i % 64 < 32 {
                    (*qs & 0xf0) | u
                } else {
                    (*qs & 0x0f) | (u << 4)
                };
            }
            Blocks::Q5K(v) => {
                let byte = 32 * (i / 64) + i % 32;
                let low = u & 15;
                let qs = &mut v[b].qs[byte];
                *qs = if i % 64 < 32 {
                    (*qs & 0xf0) | low
                } else {
                    (*qs & 0x0f) | (low << 4)
                };
                set_bit(&mut v[b].qh, i % 32, i / 32, u & 16 != 0);
            }
            Blocks::Q6K(v) => {
                let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
                let ql = &mut v[b].ql[64 * half + l + 32 * (k % 2)];
                *ql = if k < 2 {
                    (*ql & 0xf0) | (u & 15)
                } else {
                    (*ql & 0x0f) | ((u & 15) << 4)
                };
                let qh = &mut v[b].qh[32 * half + l];
                *qh = (*qh & !(3 << (2 * k))) | ((u >> 4) << (2 * k));
            }
            Blocks::Iq4Xs(v) => {
                let byte = 16 * (i / 32) + i % 16;
                let qs = &mut v[b].qs[byte];
                *qs = if i % 32 < 16 {
                    (*qs & 0xf0) | u
                } else {
                    (*qs & 0x0f) | (u << 4)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gptq_core::quant::types::dequantize_row;

    const TYPES: [GgmlType; 12] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];

    fn row() -> Vec<f32> {
        (0..512)
            .map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.45) * 0.2)
            .collect()
    }

    #[test]
    fn set_values_are_what_dequantization_gives_and_nearest() {
        let x = row();
        for ty in TYPES {
            let mut grid = RowGrid::choose(ty, &x, None).unwrap();
            let (lo, hi) = grid.level_range();
            for col in (0..x.len()).step_by(7) {
                let target = x[(col * 31) % x.len()] * 0.9;
                let got = grid.set(col, target);
                let (b, i) = (col / ty.block_size(), col % ty.block_size());
                for q in lo..=hi {
                    assert!(
                        (grid.decode(b, i, q) - target).abs() >= (got - target).abs(),
                        "{ty} col {col}: level {q} is nearer"
                    );
                }
            }
            let values: Vec<f32> = (0..x.len()).map(|c| grid.value(c)).collect();
            let bytes = grid.clone().into_bytes();
            let mut deq = vec![0.0; x.len()];
            dequantize_row(ty, &bytes, &mut deq).unwrap();
            assert_eq!(values, deq, "{ty}: grid values differ from dequantization");
        }
    }

    #[test]
    fn setting_the_chosen_levels_again_changes_nothing() {
        let x = row();
        for ty in TYPES {
            let grid = RowGrid::choose(ty, &x, None).unwrap();
            let mut again = grid.clone();
            for col in 0..x.len() {
                let v = grid.value(col);
                assert_eq!(again.set(col, v), v, "{ty} col {col}");
            }
            assert_eq!(again.into_bytes(), grid.into_bytes(), "{ty}");
        }
    }
}
