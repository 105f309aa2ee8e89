//! Element decoding: stored elements (F32/F16/BF16/F64, either byte order) read
//! as f32, for contiguous runs and for strided views.

use half::{bf16, f16};

use super::DType;

/// Byte order of the stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endian {
    /// Least significant byte first (every modern writer).
    Little,
    /// Most significant byte first (checkpoints saved on big-endian machines).
    Big,
}

/// Converts one element's bytes (exactly the element size) to f32.
type ElementFn = fn(&[u8]) -> f32;

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes(array(b))
}
fn f32_be(b: &[u8]) -> f32 {
    f32::from_be_bytes(array(b))
}
fn f16_le(b: &[u8]) -> f32 {
    f16::from_le_bytes(array(b)).to_f32()
}
fn f16_be(b: &[u8]) -> f32 {
    f16::from_be_bytes(array(b)).to_f32()
}
fn bf16_le(b: &[u8]) -> f32 {
    bf16::from_le_bytes(array(b)).to_f32()
}
fn bf16_be(b: &[u8]) -> f32 {
    bf16::from_be_bytes(array(b)).to_f32()
}
// Narrowing f64 to f32 rounds to nearest; values beyond f32's range become ±inf.
#[allow(clippy::cast_possible_truncation)]
fn f64_le(b: &[u8]) -> f32 {
    f64::from_le_bytes(array(b)) as f32
}
#[allow(clippy::cast_possible_truncation)]
fn f64_be(b: &[u8]) -> f32 {
    f64::from_be_bytes(array(b)) as f32
}

/// The element converter and element size for a float dtype; `None` for other dtypes.
fn element_fn(dtype: DType, endian: Endian) -> Option<(ElementFn, usize)> {
    let little = endian == Endian::Little;
    let f: ElementFn = match dtype {
        DType::F32 if little => f32_le,
        DType::F32 => f32_be,
        DType::F16 if little => f16_le,
        DType::F16 => f16_be,
        DType::BF16 if little => bf16_le,
        DType::BF16 => bf16_be,
        DType::F64 if little => f64_le,
        DType::F64 => f64_be,
        _ => return None,
    };
    Some((f, dtype.size_in_bytes()?))
}

/// Why a conversion could not be done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ElementError {
    /// The dtype is not a float type.
    NotFloat,
    /// An element lies outside the bytes given (the caller's validation missed it).
    OutOfBounds {
        /// Element index that was out of range.
        element: usize,
    },
}

impl ElementError {
    /// A message for the error, naming the tensor and its dtype.
    pub(crate) fn describe(&self, name: &str, dtype: DType) -> String {
        match self {
            ElementError::NotFloat => format!(
                "tensor '{name}' has dtype {dtype}; only F32, F16, BF16 and F64 can be read as f32"
            ),
            ElementError::OutOfBounds { element } => {
                format!("tensor '{name}': element {element} lies outside its storage")
            }
        }
    }
}

/// Converts every element of `bytes` (a whole number of `dtype` elements) to f32.
pub(crate) fn contiguous_to_f32(
    bytes: &[u8],
    dtype: DType,
    endian: Endian,
) -> Result<Vec<f32>, ElementError> {
    let (f, size) = element_fn(dtype, endian).ok_or(ElementError::NotFloat)?;
    if !bytes.len().is_multiple_of(size) {
        return Err(ElementError::OutOfBounds {
            element: bytes.len() / size,
        });
    }
    Ok(bytes.chunks_exact(size).map(f).collect())
}

/// Gathers the view `offset + Σ index[d]·stride[d]` (in elements of `dtype`) of
/// `storage` into a row-major f32 vector of `shape`'s element count.
///
/// The caller has checked that every index lies in the storage and that the
/// element count fits; out-of-range elements still give an error, never a panic.
pub(crate) fn strided_to_f32(
    storage: &[u8],
    dtype: DType,
    endian: Endian,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Result<Vec<f32>, ElementError> {
    let (f, size) = element_fn(dtype, endian).ok_or(ElementError::NotFloat)?;
    let element = |index: usize| -> Result<f32, ElementError> {
        let start = index.checked_mul(size);
        let bytes = start.and_then(|s| storage.get(s..s.checked_add(size)?));
        bytes
            .map(f)
            .ok_or(ElementError::OutOfBounds { element: index })
    };
    let run = |out: &mut Vec<f32>, first: usize, count: usize| -> Result<(), ElementError> {
        let bytes = first
            .checked_mul(size)
            .and_then(|s| Some((s, count.checked_mul(size)?)))
            .and_then(|(s, n)| storage.get(s..s.checked_add(n)?))
            .ok_or(ElementError::OutOfBounds {
                element: first.saturating_add(count),
            })?;
        out.extend(bytes.chunks_exact(size).map(f));
        Ok(())
    };

    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(ElementError::OutOfBounds {
            element: usize::MAX,
        })?;
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return Ok(out);
    }
    let (Some(&inner_len), Some(&inner_stride)) = (shape.last(), stride.last()) else {
        // A scalar: one element at the offset.
        out.push(element(offset)?);
        return Ok(out);
    };
    let outer_dims = shape.len() - 1;
    let mut index = vec![0usize; outer_dims];
    let mut base = offset;
    loop {
        if inner_stride == 1 {
            run(&mut out, base, inner_len)?;
        } else {
            for k in 0..inner_len {
                let at = k
                    .checked_mul(inner_stride)
                    .and_then(|o| o.checked_add(base))
                    .ok_or(ElementError::OutOfBounds {
                        element: usize::MAX,
                    })?;
                out.push(element(at)?);
            }
        }
        // Advance the outer index like an odometer, innermost outer dimension first.
        let mut d = outer_dims;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            index[d] += 1;
            base = base.wrapping_add(stride[d]);
            if index[d] < shape[d] {
                break;
            }
            base = base.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn contiguous_types() {
        let v = [1.5f32, -2.0, 0.25];
        assert_eq!(
            contiguous_to_f32(&f32_bytes(&v), DType::F32, Endian::Little).unwrap(),
            v
        );
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(contiguous_to_f32(&be, DType::F32, Endian::Big).unwrap(), v);
        let h: Vec<u8> = v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(
            contiguous_to_f32(&h, DType::F16, Endian::Little).unwrap(),
            v
        );
        let b: Vec<u8> = v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(
            contiguous_to_f32(&b, DType::BF16, Endian::Little).unwrap(),
            v
        );
        let d: Vec<u8> = v.iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect();
        assert_eq!(
            contiguous_to_f32(&d, DType::F64, Endian::Little).unwrap(),
            v
        );
        assert_eq!(
            contiguous_to_f32(&[0; 8], DType::I64, Endian::Little),
            Err(ElementError::NotFloat)
        );
        assert!(contiguous_to_f32(&[0; 5], DType::F32, Endian::Little).is_err());
    }

    #[test]
    fn transposed_view() {
        // Storage holds a 2x3 row-major matrix; the view is its 3x2 transpose.
        let storage = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let got =
            strided_to_f32(&storage, DType::F32, Endian::Little, 0, &[3, 2], &[1, 3]).unwrap();
        assert_eq!(got, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn offsets_scalars_and_empty() {
        let storage = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let got = strided_to_f32(&storage, DType::F32, Endian::Little, 2, &[2, 2], &[2, 1]);
        assert_eq!(got.unwrap(), [2.0, 3.0, 4.0, 5.0]);
        let got = strided_to_f32(&storage, DType::F32, Endian::Little, 4, &[], &[]);
        assert_eq!(got.unwrap(), [4.0]);
        let got = strided_to_f32(&storage, DType::F32, Endian::Little, 0, &[0, 3], &[3, 1]);
        assert!(got.unwrap().is_empty());
        let got = strided_to_f32(
            &storage,
            DType::F32,
            Endian::Little,
            0,
            &[2, 2, 1],
            &[3, 1, 1],
        );
        assert_eq!(got.unwrap(), [0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        let storage = f32_bytes(&[0.0, 1.0]);
        let got = strided_to_f32(&storage, DType::F32, Endian::Little, 1, &[2], &[1]);
        assert!(matches!(got, Err(ElementError::OutOfBounds { .. })));
        let got = strided_to_f32(&storage, DType::F32, Endian::Little, 0, &[2], &[5]);
        assert!(matches!(got, Err(ElementError::OutOfBounds { .. })));
    }
}
