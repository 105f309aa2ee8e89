//! Where each GPT-2 weight lives in the mapped file, checked against the
//! hyper-parameters before anything is computed.

use super::hparams::HParams;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, TensorInfo, cast_slice};
use crate::quant::{Matrix, WeightData};

/// A matrix in the mapped file: its type, shape and byte range.
#[derive(Clone, Debug)]
pub(crate) struct MatrixLoc {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub n_bytes: usize,
}

impl MatrixLoc {
    /// The typed view over `bytes` (the whole mapped file); `None` when the range
    /// is outside `bytes`, misaligned for the type, or the wrong size.
    fn try_view<'a>(&self, bytes: &'a [u8]) -> Option<Matrix<'a>> {
        let raw = bytes.get(self.offset..self.offset.checked_add(self.n_bytes)?)?;
        Matrix::new(WeightData::from_bytes(self.ty, raw)?, self.rows, self.cols)
    }

    /// The typed view over `bytes` (the whole mapped file).
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Matrix<'a> {
        self.try_view(bytes)
            .expect("matrix locations are checked against the file when the model loads")
    }
}

/// A one-dimensional parameter (norm weights, biases). F32 ones are read in
/// place; the rare file that stores them in another type gets a small owned copy.
#[derive(Clone, Debug)]
pub(crate) enum VectorLoc {
    Mapped { offset: usize, len: usize },
    Owned(Vec<f32>),
}

impl VectorLoc {
    pub fn get<'a>(&'a self, bytes: &'a [u8]) -> &'a [f32] {
        match self {
            VectorLoc::Mapped { offset, len } => {
                cast_slice::<f32>(&bytes[*offset..*offset + len * 4]).expect("checked at load")
            }
            VectorLoc::Owned(v) => v,
        }
    }
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    pub attn_norm_w: VectorLoc,
    pub attn_norm_b: VectorLoc,
    pub attn_qkv_w: MatrixLoc,
    pub attn_qkv_b: VectorLoc,
    pub attn_out_w: MatrixLoc,
    pub attn_out_b: VectorLoc,
    pub ffn_norm_w: VectorLoc,
    pub ffn_norm_b: VectorLoc,
    pub ffn_up_w: MatrixLoc,
    pub ffn_up_b: VectorLoc,
    pub ffn_down_w: MatrixLoc,
    pub ffn_down_b: VectorLoc,
}

/// Every weight of the model.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    pub token_embd: MatrixLoc,
    pub position_embd: MatrixLoc,
    pub layers: Vec<LayerWeights>,
    pub output_norm_w: VectorLoc,
    pub output_norm_b: VectorLoc,
    /// The LM head: `output.weight` when the file has one, else `token_embd`.
    pub output: MatrixLoc,
    /// Whether the file has a separate `output.weight`.
    pub has_output: bool,
}

struct Loader<'a> {
    file: &'a GgufFile,
    bytes: &'a [u8],
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::tensor(name, "missing from the file"))
    }

    fn check_dims(t: &TensorInfo, want: &[u64]) -> Result<()> {
        if t.dims != want {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "shape {:?} does not match the hyper-parameters, which require {:?}",
                    t.dims, want
                ),
            ));
        }
        Ok(())
    }

    fn check_computable(t: &TensorInfo) -> Result<()> {
        if !WeightData::is_computable(t.ty) {
            return Err(Error::UnsupportedType {
                name: t.name.clone(),
                type_id: t.ty.id(),
                type_name: t.ty.name(),
            });
        }
        Ok(())
    }

    fn range(&self, t: &TensorInfo) -> Result<(usize, usize)> {
        let offset =
            usize::try_from(t.offset).map_err(|_| Error::tensor(&t.name, "offset too large"))?;
        let n = usize::try_from(t.n_bytes).map_err(|_| Error::tensor(&t.name, "size too large"))?;
        if offset
            .checked_add(n)
            .is_none_or(|end| end > self.bytes.len())
        {
            return Err(Error::tensor(&t.name, "data lies outside the file"));
        }
        Ok((offset, n))
    }

    /// Location of a checked tensor of `rows × cols` elements.
    fn loc(&self, t: &TensorInfo, rows: usize, cols: usize) -> Result<MatrixLoc> {
        Self::check_computable(t)?;
        let (offset, n_bytes) = self.range(t)?;
        let loc = MatrixLoc {
            ty: t.ty,
            rows,
            cols,
            offset,
            n_bytes,
        };
        if loc.try_view(self.bytes).is_none() {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "data at byte {offset} is misaligned for {} elements or does not match its shape",
                    t.ty
                ),
            ));
        }
        Ok(loc)
    }

    /// A `rows × cols` matrix (`dims = [cols, rows]`).
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<MatrixLoc> {
        let t = self.info(name)?;
        Self::check_dims(t, &[cols as u64, rows as u64])?;
        self.loc(t, rows, cols)
    }

    /// A vector of `n` values (`dims = [n]`).
    fn vector(&self, name: &str, n: usize) -> Result<VectorLoc> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n as u64])?;
        let loc = self.loc(t, 1, n)?;
        if t.ty == GgmlType::F32 {
            return Ok(VectorLoc::Mapped {
                offset: loc.offset,
                len: n,
            });
        }
        // Not F32: expand it once (a few kilobytes at most).
        let mut out = vec![0.0f32; n];
        loc.view(self.bytes).dequantize_row(0, &mut out);
        Ok(VectorLoc::Owned(out))
    }
}

impl Weights {
    /// Finds and checks every tensor GPT-2 needs.
    pub fn from_gguf(file: &GgufFile, bytes: &[u8], hp: &HParams) -> Result<Weights> {
        let l = Loader { file, bytes };
        let (d, ff) = (hp.n_embd, hp.n_ff);
        let token_embd = l.matrix("token_embd.weight", d, hp.n_vocab)?;
        let position_embd = l.matrix("position_embd.weight", d, hp.n_ctx)?;
        let mut layers = Vec::with_capacity(hp.n_layer.min(file.tensors.len()));
        for i in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(LayerWeights {
                attn_norm_w: l.vector(&n("attn_norm.weight"), d)?,
                attn_norm_b: l.vector(&n("attn_norm.bias"), d)?,
                attn_qkv_w: l.matrix(&n("attn_qkv.weight"), d, 3 * d)?,
                attn_qkv_b: l.vector(&n("attn_qkv.bias"), 3 * d)?,
                attn_out_w: l.matrix(&n("attn_output.weight"), d, d)?,
                attn_out_b: l.vector(&n("attn_output.bias"), d)?,
                ffn_norm_w: l.vector(&n("ffn_norm.weight"), d)?,
                ffn_norm_b: l.vector(&n("ffn_norm.bias"), d)?,
                ffn_up_w: l.matrix(&n("ffn_up.weight"), d, ff)?,
                ffn_up_b: l.vector(&n("ffn_up.bias"), ff)?,
                ffn_down_w: l.matrix(&n("ffn_down.weight"), ff, d)?,
                ffn_down_b: l.vector(&n("ffn_down.bias"), d)?,
            });
        }
        let (output, has_output) = match file.tensor("output.weight") {
            Some(_) => (l.matrix("output.weight", d, hp.n_vocab)?, true),
            None => (token_embd.clone(), false),
        };
        Ok(Weights {
            token_embd,
            position_embd,
            layers,
            output_norm_w: l.vector("output_norm.weight", d)?,
            output_norm_b: l.vector("output_norm.bias", d)?,
            output,
            has_output,
        })
    }

    /// The matrices the forward pass multiplies by: every block's four and
    /// the LM head.
    pub fn matrices<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = Matrix<'a>> + 'a {
        self.layers
            .iter()
            .flat_map(|l| [&l.attn_qkv_w, &l.attn_out_w, &l.ffn_up_w, &l.ffn_down_w])
            .chain([&self.output])
            .map(move |m| m.view(bytes))
    }

    /// Bytes of weights streamed to decode one token: every block matrix, the LM
    /// head, one row of each embedding and the vectors.
    pub fn bytes_per_token(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_qkv_w.n_bytes
                    + l.attn_out_w.n_bytes
                    + l.ffn_up_w.n_bytes
                    + l.ffn_down_w.n_bytes
            })
            .sum();
        per_layer + self.output.n_bytes
    }
}
