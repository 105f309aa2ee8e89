//! Typed, zero-copy views of weight matrices.

use half::{bf16, f16};

use super::types::float::dequantize_row_f16;
use super::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, QuantBlock,
};
use crate::gguf::{GgmlType, cast_slice};

/// The elements of a weight matrix in their stored form, row after row.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum WeightData<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats.
    F16(&'a [f16]),
    /// bfloat16 values.
    BF16(&'a [bf16]),
    /// ggml Q8_0 blocks.
    Q8_0(&'a [BlockQ8_0]),
    /// ggml Q4_0 blocks.
    Q4_0(&'a [BlockQ4_0]),
    /// ggml Q4_1 blocks.
    Q4_1(&'a [BlockQ4_1]),
    /// ggml Q5_0 blocks.
    Q5_0(&'a [BlockQ5_0]),
    /// ggml Q5_1 blocks.
    Q5_1(&'a [BlockQ5_1]),
    /// ggml IQ4_NL blocks.
    IQ4_NL(&'a [BlockIq4Nl]),
    /// ggml Q2_K super-blocks.
    Q2_K(&'a [BlockQ2K]),
    /// ggml Q3_K super-blocks.
    Q3_K(&'a [BlockQ3K]),
    /// ggml Q4_K super-blocks.
    Q4_K(&'a [BlockQ4K]),
    /// ggml Q5_K super-blocks.
    Q5_K(&'a [BlockQ5K]),
    /// ggml Q6_K super-blocks.
    Q6_K(&'a [BlockQ6K]),
    /// ggml IQ4_XS super-blocks.
    IQ4_XS(&'a [BlockIq4Xs]),
}

/// The one match over the weight types: evaluates `$float` or `$quant` with
/// `$d` bound to the stored slice. Each arm is type-checked on its own, so
/// the expressions may be generic over the element type (`Element` for
/// both, [`QuantBlock`] for the quantized side).
macro_rules! match_weights {
    ($data:expr, $d:ident => float: $float:expr, quant: $quant:expr $(,)?) => {
        match $data {
            $crate::quant::WeightData::F32($d) => $float,
            $crate::quant::WeightData::F16($d) => $float,
            $crate::quant::WeightData::BF16($d) => $float,
            $crate::quant::WeightData::Q8_0($d) => $quant,
            $crate::quant::WeightData::Q4_0($d) => $quant,
            $crate::quant::WeightData::Q4_1($d) => $quant,
            $crate::quant::WeightData::Q5_0($d) => $quant,
            $crate::quant::WeightData::Q5_1($d) => $quant,
            $crate::quant::WeightData::IQ4_NL($d) => $quant,
            $crate::quant::WeightData::Q2_K($d) => $quant,
            $crate::quant::WeightData::Q3_K($d) => $quant,
            $crate::quant::WeightData::Q4_K($d) => $quant,
            $crate::quant::WeightData::Q5_K($d) => $quant,
            $crate::quant::WeightData::Q6_K($d) => $quant,
            $crate::quant::WeightData::IQ4_XS($d) => $quant,
        }
    };
    ($data:expr, $d:ident => $any:expr) => {
        match_weights!($data, $d => float: $any, quant: $any)
    };
}
pub(crate) use match_weights;

impl<'a> WeightData<'a> {
    /// `bytes` (a tensor's data as a file stores it) viewed as elements of
    /// type `ty`; `None` when this crate cannot compute with `ty`, or the
    /// bytes are not a whole number of elements or misaligned for them.
    pub fn from_bytes(ty: GgmlType, bytes: &'a [u8]) -> Option<WeightData<'a>> {
        Some(match ty {
            GgmlType::F32 => WeightData::F32(cast_slice(bytes)?),
            GgmlType::F16 => WeightData::F16(cast_slice(bytes)?),
            GgmlType::Q8_0 => WeightData::Q8_0(cast_slice(bytes)?),
            GgmlType::Q4_0 => WeightData::Q4_0(cast_slice(bytes)?),
            GgmlType::BF16 => WeightData::BF16(cast_slice(bytes)?),
            GgmlType::Q4_1 => WeightData::Q4_1(cast_slice(bytes)?),
            GgmlType::Q5_0 => WeightData::Q5_0(cast_slice(bytes)?),
            GgmlType::Q5_1 => WeightData::Q5_1(cast_slice(bytes)?),
            GgmlType::IQ4_NL => WeightData::IQ4_NL(cast_slice(bytes)?),
            GgmlType::Q2_K => WeightData::Q2_K(cast_slice(bytes)?),
            GgmlType::Q3_K => WeightData::Q3_K(cast_slice(bytes)?),
            GgmlType::Q4_K => WeightData::Q4_K(cast_slice(bytes)?),
            GgmlType::Q5_K => WeightData::Q5_K(cast_slice(bytes)?),
            GgmlType::Q6_K => WeightData::Q6_K(cast_slice(bytes)?),
            GgmlType::IQ4_XS => WeightData::IQ4_XS(cast_slice(bytes)?),
            _ => return None,
        })
    }

    /// Whether this crate can compute with tensors of type `ty`.
    pub fn is_computable(ty: GgmlType) -> bool {
        WeightData::from_bytes(ty, &[]).is_some()
    }

    /// The ggml type of the elements.
    pub fn ty(&self) -> GgmlType {
        match_weights!(*self, d => elem_type(d))
    }
}

/// An element type of stored weights: a float, or a block of quantized
/// values.
pub(crate) trait Element: Copy {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Values per element (1 for floats).
    const ELEMS: usize;
    /// Expands elements into `y` (`ELEMS` values each).
    fn dequantize(x: &[Self], y: &mut [f32]);
}

impl Element for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    fn dequantize(x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x)
    }
}

impl Element for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    fn dequantize(x: &[f16], y: &mut [f32]) {
        dequantize_row_f16(x, y)
    }
}

impl Element for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    fn dequantize(x: &[bf16], y: &mut [f32]) {
        super::types::bf16::dequantize_row(x, y)
    }
}

impl<B: QuantBlock> Element for B {
    const TYPE: GgmlType = <B as QuantBlock>::TYPE;
    const ELEMS: usize = <B as QuantBlock>::ELEMS;
    fn dequantize(x: &[B], y: &mut [f32]) {
        <B as QuantBlock>::dequantize(x, y)
    }
}

fn elem_type<E: Element>(_: &[E]) -> GgmlType {
    E::TYPE
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
        fn fits<E: Element>(d: &[E], rows: usize, cols: usize) -> bool {
            cols.is_multiple_of(E::ELEMS)
                && rows
                    .checked_mul(cols / E::ELEMS)
                    .is_some_and(|n| d.len() == n)
        }
        match_weights!(data, d => fits(d, rows, cols)).then_some(Matrix { data, rows, cols })
    }

    /// A view of a tensor's stored bytes (as in a GGUF file) of type `ty` as
    /// `rows × cols`; `None` for a type the kernels do not compute with, a
    /// size that disagrees, or bytes misaligned for the type's elements.
    pub fn from_bytes(
        ty: GgmlType,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Option<Matrix<'a>> {
        Matrix::new(WeightData::from_bytes(ty, bytes)?, rows, cols)
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
        match_weights!(self.data, d => std::mem::size_of_val(d))
    }

    /// Expands row `r` into `out` (`cols` values). Used for embedding lookups.
    ///
    /// # Panics
    /// When `r >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        fn row<E: Element>(d: &[E], r: usize, out: &mut [f32]) {
            let n = out.len() / E::ELEMS;
            E::dequantize(&d[r * n..(r + 1) * n], out)
        }
        assert!(r < self.rows && out.len() == self.cols);
        match_weights!(self.data, d => row(d, r, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::as_bytes;

    #[test]
    fn views_check_shapes_and_types() {
        let blocks = [BlockQ8_0::ZERO; 6];
        let bytes = as_bytes(&blocks);
        let d = WeightData::from_bytes(GgmlType::Q8_0, bytes).unwrap();
        assert_eq!(d.ty(), GgmlType::Q8_0);
        assert!(Matrix::new(d, 2, 96).is_some());
        assert!(Matrix::new(d, 3, 64).is_some());
        assert!(Matrix::new(d, 2, 64).is_none());
        assert!(Matrix::new(d, 1, 190).is_none());
        assert_eq!(Matrix::new(d, 2, 96).unwrap().n_bytes(), 6 * 34);
        assert!(WeightData::from_bytes(GgmlType::Q8_0, &bytes[..33]).is_none());
        assert!(WeightData::from_bytes(GgmlType::IQ2_XXS, &[]).is_none());
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
            assert!(WeightData::is_computable(ty), "{ty}");
        }
        assert!(!WeightData::is_computable(GgmlType::Q8_K));
        let f = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = Matrix::new(WeightData::F32(&f), 3, 2).unwrap();
        let mut row = [0.0; 2];
        m.dequantize_row(2, &mut row);
        assert_eq!(row, [5.0, 6.0]);
        assert!(Matrix::new(WeightData::F32(&f), usize::MAX, 2).is_none());
    }
}
