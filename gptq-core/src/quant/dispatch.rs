//! Run-time choice of the kernel path: the best one the CPU supports, or the one
//! `GPTQ_KERNEL` names.

use std::fmt;

use half::f16;

use super::blocks::{BlockQ4_0, BlockQ8_0};
use super::scalar;
use super::tile::{FloatActs, OutTile, QuantActs};
use crate::error::{Error, Result};

/// An implementation of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KernelPath {
    /// Portable scalar reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/VNNI (quantized products; the rest is AVX2).
    Avx512,
    /// x86-64 AMX-INT8 tile products for prefill's quantized products; the
    /// rest is [`KernelPath::Avx512`].
    Amx,
    /// aarch64 NEON with widening multiplies.
    Neon,
}

impl KernelPath {
    /// Every path, best first.
    pub const ALL: &'static [KernelPath] = &[
        KernelPath::Amx,
        KernelPath::Avx512,
        KernelPath::Avx2,
        KernelPath::Neon,
        KernelPath::Scalar,
    ];

    /// The name used by `GPTQ_KERNEL` and printed by the tools.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Amx => "amx",
            KernelPath::Neon => "neon",
        }
    }

    /// The path with that name.
    pub fn from_name(name: &str) -> Option<KernelPath> {
        KernelPath::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Amx => KernelPath::Avx512.is_supported() && super::amx::supported(),
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The paths this CPU supports, best first.
    pub fn available() -> Vec<KernelPath> {
        KernelPath::ALL
            .iter()
            .copied()
            .filter(|p| p.is_supported())
            .collect()
    }

    /// The best path this CPU supports.
    pub fn best() -> KernelPath {
        KernelPath::ALL
            .iter()
            .copied()
            .find(|p| p.is_supported())
            .unwrap_or(KernelPath::Scalar)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `layer_norm(x, weight, bias, eps, out)`.
pub(crate) type LayerNormFn = fn(&[f32], &[f32], &[f32], f32, &mut [f32]);

/// `attend(q, k, v, stride, n, scale, scores, out)`: one query's attention
/// over `n` cached positions of one head, whose key and value of position `p`
/// are `k[p·stride ..][..hd]` and `v[p·stride ..][..hd]` (`hd = out.len()`).
pub(crate) type AttendFn = fn(&[f32], &[f32], &[f32], usize, usize, f32, &mut [f32], &mut [f32]);

/// [`AttendFn`] over an f16 cache.
pub(crate) type AttendF16Fn = fn(&[f32], &[f16], &[f16], usize, usize, f32, &mut [f32], &mut [f32]);

/// The queries of one head for a run of consecutive positions, and that
/// head's f32 key and value cache.
// Only the x86-64 paths have a head kernel that reads these.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct HeadQueries<'a> {
    /// Query `i` is `q[i·q_stride ..][..hd]`.
    pub q: &'a [f32],
    pub q_stride: usize,
    /// The key and value of position `p` are `k[p·kv_stride ..][..hd]` and
    /// `v[p·kv_stride ..][..hd]`.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub kv_stride: usize,
    /// Query `i` sits at position `pos0 + i` and attends to `0..=pos0 + i`.
    pub pos0: usize,
    pub n: usize,
    pub hd: usize,
    pub scale: f32,
}

/// `attend_head(queries, out)`: every query of `queries`, written to
/// `out[i·hd ..][..hd]`.
pub(crate) type AttendHeadFn = fn(&HeadQueries<'_>, &mut [f32]);

pub(crate) struct KernelTable {
    pub quantize_acts: fn(&[f32], &mut [BlockQ8_0], &mut [i16]),
    pub gemm_q8_0: fn(&[BlockQ8_0], &QuantActs<'_>, &mut OutTile<'_>),
    pub gemm_q4_0: fn(&[BlockQ4_0], &QuantActs<'_>, &mut OutTile<'_>),
    /// Decode products for any number of tokens (sessions decoding together):
    /// each token's row is bitwise what `gemm_q8_0` gives it alone, one pass
    /// over the weights serving all. (Float weights need no twin: every
    /// path's float products compute each token alone.)
    pub gemv_q8_0: fn(&[BlockQ8_0], &QuantActs<'_>, &mut OutTile<'_>),
    /// [`KernelTable::gemv_q8_0`] for Q4_0 weights.
    pub gemv_q4_0: fn(&[BlockQ4_0], &QuantActs<'_>, &mut OutTile<'_>),
    pub gemm_f16: fn(&[f16], &FloatActs<'_>, &mut OutTile<'_>),
    pub gemm_f32: fn(&[f32], &FloatActs<'_>, &mut OutTile<'_>),
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub dot_f16: fn(&[f16], &[f32]) -> f32,
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
    pub layer_norm: LayerNormFn,
    pub gelu: fn(&mut [f32]),
    pub add: fn(&[f32], &mut [f32]),
    pub softmax: fn(&mut [f32]),
    /// A fused attention over an f32 cache, where a path has one; otherwise
    /// the forward pass composes `dot_f32`, `softmax` and `axpy_f32`.
    pub attend_f32: Option<AttendFn>,
    /// The same over an f16 cache.
    pub attend_f16: Option<AttendF16Fn>,
    /// Many queries of one head at once over an f32 cache (prefill), where a
    /// path has it; otherwise each query is attended alone.
    pub attend_head_f32: Option<AttendHeadFn>,
}

static SCALAR: KernelTable = KernelTable {
    quantize_acts: scalar::quantize_acts,
    gemm_q8_0: scalar::gemm_q8_0,
    gemm_q4_0: scalar::gemm_q4_0,
    gemv_q8_0: scalar::gemm_q8_0,
    gemv_q4_0: scalar::gemm_q4_0,
    gemm_f16: scalar::gemm_f16,
    gemm_f32: scalar::gemm_f32,
    dot_f32: scalar::dot_f32,
    dot_f16: scalar::dot_f16,
    axpy_f32: scalar::axpy_f32,
    axpy_f16: scalar::axpy_f16,
    layer_norm: scalar::layer_norm,
    gelu: scalar::gelu,
    add: scalar::add,
    softmax: scalar::softmax,
    attend_f32: None,
    attend_f16: None,
    attend_head_f32: None,
};

#[cfg(target_arch = "x86_64")]
static AVX2: KernelTable = KernelTable {
    quantize_acts: super::avx2::quantize_acts,
    gemm_q8_0: super::avx2::gemm_q8_0,
    gemm_q4_0: super::avx2::gemm_q4_0,
    gemv_q8_0: super::avx2::gemv_q8_0,
    gemv_q4_0: super::avx2::gemv_q4_0,
    gemm_f16: super::avx2::gemm_f16,
    gemm_f32: super::avx2::gemm_f32,
    dot_f32: super::avx2::dot_f32,
    dot_f16: super::avx2::dot_f16,
    axpy_f32: super::avx2::axpy_f32,
    axpy_f16: super::avx2::axpy_f16,
    layer_norm: super::avx2::layer_norm,
    gelu: super::avx2::gelu,
    add: super::avx2::add,
    softmax: super::avx2::softmax,
    attend_f32: Some(super::avx2::attend_f32),
    attend_f16: Some(super::avx2::attend_f16),
    attend_head_f32: None,
};

#[cfg(target_arch = "x86_64")]
static AVX512: KernelTable = KernelTable {
    gemm_q8_0: super::avx512::gemm_q8_0,
    gemm_q4_0: super::avx512::gemm_q4_0,
    gemv_q8_0: super::avx512::gemv_q8_0,
    gemv_q4_0: super::avx512::gemv_q4_0,
    attend_head_f32: Some(super::avx512::attend_head_f32),
    ..AVX2
};

#[cfg(target_arch = "x86_64")]
static AMX: KernelTable = KernelTable {
    gemm_q8_0: super::amx::gemm_q8_0,
    gemm_q4_0: super::amx::gemm_q4_0,
    ..AVX512
};

/// A chosen kernel path: the functions every computation goes through.
#[derive(Clone, Copy)]
pub struct Kernels {
    path: KernelPath,
    pub(crate) table: &'static KernelTable,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("path", &self.path).finish()
    }
}

impl Kernels {
    /// The kernels of `path`, when this CPU supports it.
    pub fn new(path: KernelPath) -> Result<Kernels> {
        if !path.is_supported() {
            return Err(Error::InvalidArgument(format!(
                "kernel path '{path}' is not supported by this CPU (available: {})",
                names(&KernelPath::available())
            )));
        }
        let table = match path {
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => super::neon::best_table(),
            KernelPath::Scalar => &SCALAR,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => &AVX2,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => &AVX512,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Amx => &AMX,
            // Filled in by the SIMD paths; until then they run the reference.
            _ => &SCALAR,
        };
        Ok(Kernels { path, table })
    }

    /// The scalar reference kernels.
    pub fn scalar() -> Kernels {
        Kernels {
            path: KernelPath::Scalar,
            table: &SCALAR,
        }
    }

    /// The best kernels for this CPU.
    pub fn best() -> Kernels {
        Kernels::new(KernelPath::best()).unwrap_or_else(|_| Kernels::scalar())
    }

    /// The path named by the environment variable `GPTQ_KERNEL`, or the best one
    /// when it is unset or empty. An unknown or unsupported name is an error.
    pub fn from_env() -> Result<Kernels> {
        match std::env::var("GPTQ_KERNEL") {
            Ok(name) if !name.trim().is_empty() => {
                let path = KernelPath::from_name(&name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "GPTQ_KERNEL={name}: unknown kernel path (known: {})",
                        names(KernelPath::ALL)
                    ))
                })?;
                Kernels::new(path)
            }
            _ => Ok(Kernels::best()),
        }
    }

    /// Quantizes one row of activations (a whole number of 32-element blocks)
    /// to Q8_0 with the sums of each block, as [`super::matmul`] does before a
    /// quantized product. Exposed for benchmarks.
    ///
    /// # Panics
    /// When `q` and `sums` do not hold `x.len() / 32` entries each.
    pub fn quantize_acts(&self, x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
        (self.table.quantize_acts)(x, q, sums)
    }

    /// The path these kernels belong to.
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// The variant that runs, for tools to print: the path's name, refined
    /// where a path has several tables (`neon+dotprod` or `neon`).
    pub fn describe(&self) -> &'static str {
        #[cfg(target_arch = "aarch64")]
        if let Some(v) = super::neon::variant(self.table) {
            return v;
        }
        self.path.name()
    }
}

fn names(paths: &[KernelPath]) -> String {
    paths
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}
