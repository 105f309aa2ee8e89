//! ggml's quantizers, written from ggml-quants.c (llama.cpp c392e50) so that
//! gptq-convert writes the bytes llama-quantize writes for the same values.
//!
//! Two paths, as in ggml:
//! - without importance weights (`imatrix = None`): the reference rounding and
//!   scale searches llama-quantize uses when run without `--imatrix`;
//! - with them (`Some(w)`, one weight per column of the row, as llama-imatrix
//!   computes them): the weighted searches (`quantize_row_<type>_impl`) that
//!   llama-quantize uses with `--imatrix`. Q8_0 and the float types ignore them.
//!
//! [`quantize_row`] quantizes one row; [`quantize_rows`] a matrix, rows in
//! parallel. Both check their arguments and return the stored bytes.
//! [`mix`] holds llama-quantize's choice of type per tensor; [`grid`] rounds values
//! one at a time on blocks whose scales are chosen (for GPTQ).

// Index loops here mirror ggml's, which keeps the order of every floating-point
// operation (the thing byte identity rests on) easy to compare line by line.
#![allow(clippy::needless_range_loop)]

mod float;
pub mod grid;
mod iq4;
mod k_quants;
mod legacy;
pub mod mix;
pub mod rounding;
pub mod search;

use anyhow::{Result, bail};
use gptq_core::gguf::{GgmlType, Pod, as_bytes};
use gptq_core::quant::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1,
    BlockQ5K, BlockQ6K,
};
use gptq_core::quant::{BlockQ4_0, BlockQ8_0};
use rayon::prelude::*;

/// Every type gptq-convert can write.
pub const QUANTIZABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Quantizes one row of `src.len()` values (a whole number of `ty`'s blocks)
/// into `ty`'s stored bytes. `imatrix`, when given, holds one importance
/// weight per value (llama-imatrix's mean squared activation of that column)
/// and selects ggml's weighted scale search.
pub fn quantize_row(ty: GgmlType, src: &[f32], imatrix: Option<&[f32]>) -> Result<Vec<u8>> {
    let row_bytes = check(ty, src.len(), src.len(), imatrix)?;
    let mut out = vec![0u8; row_bytes];
    row_into(ty, src, imatrix, &mut out);
    Ok(out)
}

/// Quantizes `src`, rows of `row_len` values, into `ty`'s stored bytes, rows in
/// parallel (the bytes do not depend on the thread count). `imatrix` has
/// `row_len` weights, shared by every row, as llama-quantize applies it.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let row_bytes = check(ty, src.len(), row_len, imatrix)?;
    let mut out = vec![0u8; src.len() / row_len * row_bytes];
    out.par_chunks_mut(row_bytes)
        .zip(src.par_chunks(row_len))
        .for_each(|(dst, row)| row_into(ty, row, imatrix, dst));
    Ok(out)
}

/// Checks the arguments and returns the bytes of one row.
fn check(ty: GgmlType, n: usize, row_len: usize, imatrix: Option<&[f32]>) -> Result<usize> {
    if !QUANTIZABLE.contains(&ty) {
        bail!(
            "cannot write tensors of type {ty}; gptq-convert writes {}",
            QUANTIZABLE
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if row_len == 0 || !n.is_multiple_of(row_len) {
        bail!("{n} values do not form rows of {row_len}");
    }
    let Some(row_bytes) = ty
        .row_bytes(row_len as u64)
        .and_then(|b| usize::try_from(b).ok())
    else {
        bail!(
            "a row of {row_len} values is not a whole number of {ty} blocks ({} values each)",
            ty.block_size()
        );
    };
    if let Some(w) = imatrix
        && w.len() != row_len
    {
        bail!(
            "the importance matrix has {} values for rows of {row_len}",
            w.len()
        );
    }
    Ok(row_bytes)
}

/// Quantizes one checked row into `dst`.
fn row_into(ty: GgmlType, x: &[f32], w: Option<&[f32]>, dst: &mut [u8]) {
    match ty {
        GgmlType::F32 => float::f32_into(x, dst),
        GgmlType::F16 => float::f16_into(x, dst),
        GgmlType::BF16 => float::bf16_into(x, dst),
        GgmlType::Q8_0 => blocks(x, dst, BlockQ8_0::ZERO, legacy::quantize_q8_0),
        GgmlType::Q4_0 => blocks(x, dst, BlockQ4_0::ZERO, |x, y| {
            legacy::quantize_q4_0(x, y, w)
        }),
        GgmlType::Q4_1 => blocks(x, dst, BlockQ4_1::ZERO, |x, y| {
            legacy::quantize_q4_1(x, y, w)
        }),
        GgmlType::Q5_0 => blocks(x, dst, BlockQ5_0::ZERO, |x, y| {
            legacy::quantize_q5_0(x, y, w)
        }),
        GgmlType::Q5_1 => blocks(x, dst, BlockQ5_1::ZERO, |x, y| {
            legacy::quantize_q5_1(x, y, w)
        }),
        GgmlType::Q2_K => blocks(x, dst, BlockQ2K::ZERO, |x, y| {
            k_quants::q2_k::quantize(x, y, w)
        }),
        GgmlType::Q3_K => blocks(x, dst, BlockQ3K::ZERO, |x, y| {
            k_quants::q3_k::quantize(x, y, w)
        }),
        GgmlType::Q4_K => blocks(x, dst, BlockQ4K::ZERO, |x, y| {
            k_quants::q4_k::quantize(x, y, w)
        }),
        GgmlType::Q5_K => blocks(x, dst, BlockQ5K::ZERO, |x, y| {
            k_quants::q5_k::quantize(x, y, w)
        }),
        GgmlType::Q6_K => blocks(x, dst, BlockQ6K::ZERO, |x, y| {
            k_quants::q6_k::quantize(x, y, w)
        }),
        GgmlType::IQ4_NL => blocks(x, dst, BlockIq4Nl::ZERO, |x, y| {
            iq4::quantize_iq4_nl(x, y, w)
        }),
        GgmlType::IQ4_XS => blocks(x, dst, BlockIq4Xs::ZERO, |x, y| {
            iq4::quantize_iq4_xs(x, y, w)
        }),
        _ => unreachable!("checked by check()"),
    }
}

/// Runs a block quantizer on a row and copies the blocks' bytes to `dst`.
fn blocks<B: Pod>(x: &[f32], dst: &mut [u8], zero: B, f: impl FnOnce(&[f32], &mut [B])) {
    let mut y = vec![zero; dst.len() / size_of::<B>()];
    f(x, &mut y);
    dst.copy_from_slice(as_bytes(&y));
}
