//! Packing f32 rows into a tensor type's stored bytes (what a converter
//! writes), rows in parallel when the tensor is big enough to pay.

use half::f16;
use rayon::prelude::*;

use super::types::QuantBlock;
use super::types::q4_0::quantize_row_q4_0;
use super::types::q8_0::quantize_row_q8_0;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, as_bytes};

/// Values below which [`pack_rows`] packs on the calling thread: a few
/// microseconds of quantizing, about what a round trip through the pool costs.
const PARALLEL_MIN: usize = 1 << 14;

/// The types [`pack_rows`] can produce.
pub const PACKABLE: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0];

/// Converts `src` (rows of `row_len` values) into the bytes of type `ty`, as
/// GGUF stores them: little-endian floats, or ggml blocks quantized with
/// ggml's reference quantizers. Rows are processed in parallel, except in
/// tensors smaller than 16 Ki values (biases, norms, tiny test
/// models), where handing rows to the thread pool costs more than packing
/// them.
pub fn pack_rows(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>> {
    if row_len == 0 || !src.len().is_multiple_of(row_len) {
        return Err(Error::InvalidArgument(format!(
            "{} values do not form rows of {row_len}",
            src.len()
        )));
    }
    let row_bytes = ty
        .row_bytes(row_len as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a row of {row_len} values is not a whole number of {ty} blocks ({} values each)",
                ty.block_size()
            ))
        })?;
    if !PACKABLE.contains(&ty) {
        return Err(Error::InvalidArgument(format!(
            "cannot write tensors of type {ty}"
        )));
    }
    let n_rows = src.len() / row_len;
    let mut out = vec![0u8; n_rows * row_bytes];
    if src.len() < PARALLEL_MIN {
        for (dst, row) in out
            .chunks_exact_mut(row_bytes)
            .zip(src.chunks_exact(row_len))
        {
            pack_row(ty, row, dst);
        }
    } else {
        out.par_chunks_mut(row_bytes)
            .zip(src.par_chunks(row_len))
            .for_each(|(dst, row)| pack_row(ty, row, dst));
    }
    Ok(out)
}

fn pack_row(ty: GgmlType, row: &[f32], dst: &mut [u8]) {
    match ty {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(row) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(row) {
                d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => pack_blocks(row, dst, quantize_row_q8_0),
        GgmlType::Q4_0 => pack_blocks(row, dst, quantize_row_q4_0),
        _ => unreachable!("checked by pack_rows"),
    }
}

/// Quantizes `row` block by block with `quantize` into `dst`, the blocks'
/// bytes (their in-memory layout is the file's, little-endian).
fn pack_blocks<B: QuantBlock>(row: &[f32], dst: &mut [u8], quantize: fn(&[f32], &mut [B])) {
    let size = std::mem::size_of::<B>();
    for (d, x) in dst.chunks_exact_mut(size).zip(row.chunks_exact(B::ELEMS)) {
        let mut b = [B::ZERO];
        quantize(x, &mut b);
        d.copy_from_slice(as_bytes(&b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::types::BlockQ8_0;

    #[test]
    fn packs_every_type_with_the_block_layout() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 - 31.5).collect();
        assert_eq!(
            pack_rows(GgmlType::F32, &x, 32).unwrap()[4..8],
            (-30.5f32).to_le_bytes()
        );
        assert_eq!(pack_rows(GgmlType::F16, &x, 64).unwrap().len(), 128);
        let q8 = pack_rows(GgmlType::Q8_0, &x, 64).unwrap();
        assert_eq!(q8.len(), 68);
        let mut b = [BlockQ8_0::ZERO; 2];
        quantize_row_q8_0(&x, &mut b);
        assert_eq!(q8[..2], b[0].d.to_le_bytes());
        assert_eq!(q8[2] as i8, b[0].qs[0]);
        assert_eq!(q8[34 + 2 + 31] as i8, b[1].qs[31]);
        let q4 = pack_rows(GgmlType::Q4_0, &x, 32).unwrap();
        assert_eq!(q4.len(), 36);
        assert!(pack_rows(GgmlType::Q4_0, &x, 16).is_err());
        assert!(pack_rows(GgmlType::Q4_K, &x, 64).is_err());
        assert!(pack_rows(GgmlType::F32, &x, 5).is_err());
    }
}
