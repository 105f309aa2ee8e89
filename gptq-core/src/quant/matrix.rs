//! Typed, zero-copy views of weight matrices.

use half::f16;

use super::blocks::{BlockQ4_0, BlockQ8_0, QK};
use super::reference;

/// The elements of a weight matrix in their stored form, row after row.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum WeightData<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats.
    F16(&'a [f16]),
    /// ggml Q8_0 blocks.
    Q8_0(&'a [BlockQ8_0]),
    /// ggml Q4_0 blocks.
    Q4_0(&'a [BlockQ4_0]),
}

/// A `rows × cols` matrix whose row `r` holds output feature `r` (ggml order:
/// `cols` is `ne[0]`).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    data: WeightData<'a>,
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// A view of `data` as `rows × cols`; `None` when the sizes disagree or a
    /// quantized row is not a whole number of blocks.
    pub fn new(data: WeightData<'a>, rows: usize, cols: usize) -> Option<Matrix<'a>> {
        let n = rows.checked_mul(cols)?;
        let ok = match data {
            WeightData::F32(d) => d.len() == n,
            WeightData::F16(d) => d.len() == n,
            WeightData::Q8_0(d) => cols.is_multiple_of(QK) && d.len() == n / QK,
            WeightData::Q4_0(d) => cols.is_multiple_of(QK) && d.len() == n / QK,
        };
        ok.then_some(Matrix { data, rows, cols })
    }

    /// The stored elements.
    pub fn data(&self) -> WeightData<'a> {
        self.data
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features, the row length).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the matrix occupies in its stored form.
    pub fn n_bytes(&self) -> usize {
        match self.data {
            WeightData::F32(d) => std::mem::size_of_val(d),
            WeightData::F16(d) => std::mem::size_of_val(d),
            WeightData::Q8_0(d) => std::mem::size_of_val(d),
            WeightData::Q4_0(d) => std::mem::size_of_val(d),
        }
    }

    /// Expands row `r` into `out` (`cols` values). Used for embedding lookups.
    ///
    /// # Panics
    /// When `r >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols);
        let c = self.cols;
        match self.data {
            WeightData::F32(d) => out.copy_from_slice(&d[r * c..(r + 1) * c]),
            WeightData::F16(d) => reference::dequantize_row_f16(&d[r * c..(r + 1) * c], out),
            WeightData::Q8_0(d) => {
                let nb = c / QK;
                reference::dequantize_row_q8_0(&d[r * nb..(r + 1) * nb], out)
            }
            WeightData::Q4_0(d) => {
                let nb = c / QK;
                reference::dequantize_row_q4_0(&d[r * nb..(r + 1) * nb], out)
            }
        }
    }
}
