//! Run-time choice of the kernels: the kernel paths, the kernel tables of
//! each (one per variant), the CPU features every table needs, and
//! [`Kernels`], the chosen table. This is the only place a
//! [`VerifiedTable`] is made, and only after its table's check passed.
//!
//! A path may have several variants, weakest first: the best one the CPU
//! runs is chosen once, when the kernels are made (AVX-512 takes the decode
//! kernels built on VBMI and GFNI where the CPU has them, NEON the `sdot`
//! products where it has dotprod and the `smmla` prompt strips where it
//! also has i8mm). `GPTQ_KERNEL` names a path (its best
//! variant) or one variant exactly: `avx512+vbmi`, `neon+dotprod`,
//! `neon+i8mm`, or a base
//! variant without its extension, `avx512-vbmi`, `neon-dotprod`.

use std::fmt;

use super::scalar;
use super::table::{KernelTable, VerifiedTable};
use super::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
};
use crate::error::{Error, Result};

/// A kernel path: an instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KernelPath {
    /// Portable scalar reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// The AVX2 kernels with prompts' quantized products on AVX-VNNI (the
    /// VEX `vpdpbusd`: Intel client cores since Alder Lake, which have no
    /// AVX-512).
    AvxVnni,
    /// x86-64 AVX-512 F/BW/VL/VNNI for the quantized products (the rest is
    /// AVX2); decode's products use VBMI and GFNI where the CPU has them
    /// (the `avx512+vbmi` variant).
    Avx512,
    /// x86-64 AMX-INT8 tile products for prefill's quantized products; the
    /// rest is the `avx512+vbmi` variant of [`KernelPath::Avx512`] (every CPU
    /// with AMX has VBMI and GFNI; this path requires them).
    Amx,
    /// aarch64 NEON; the quantized products use the dot-product instructions
    /// where the CPU has them (the `neon+dotprod` variant), and prompts'
    /// `smmla` strips where it also has the int8 matrix multiply
    /// (`neon+i8mm`).
    Neon,
}

impl KernelPath {
    /// Every path, best first.
    pub const ALL: &'static [KernelPath] = &[
        KernelPath::Amx,
        KernelPath::Avx512,
        KernelPath::AvxVnni,
        KernelPath::Avx2,
        KernelPath::Neon,
        KernelPath::Scalar,
    ];

    /// The name used by `GPTQ_KERNEL` and printed by the tools.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::AvxVnni => "avxvnni",
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

    /// Whether this CPU can run the path (at least its base variant).
    pub fn is_supported(self) -> bool {
        self.variants().first().is_some_and(|v| (v.supported)())
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

    /// Whether this path's kernels keep a repack of `t`'s weights where the model
    /// registers them (`--repack`): the x86 strips' copies that pay, which
    /// `quant::x86::transpose::Values::worth_keeping` decides per unpacking
    /// (the AMX tile unit's Q8_0 and Q4_0, every K-quant's, IQ4_XS's but
    /// as the AVX2 strips' i16 lines); never on the scalar and NEON
    /// paths nor for the float types.
    pub(crate) fn keeps_repack(self, t: crate::gguf::GgmlType) -> bool {
        use crate::gguf::GgmlType as G;
        let x86 = matches!(
            self,
            KernelPath::Avx2 | KernelPath::AvxVnni | KernelPath::Avx512 | KernelPath::Amx
        );
        x86 && match t {
            G::Q8_0 | G::Q4_0 => self == KernelPath::Amx,
            G::Q2_K | G::Q3_K | G::Q4_K | G::Q5_K | G::Q6_K => true,
            // The AVX-VNNI table takes IQ4_XS from the AVX2 one.
            G::IQ4_XS => !matches!(self, KernelPath::Avx2 | KernelPath::AvxVnni),
            _ => false,
        }
    }

    /// The path's variants, weakest first (none for a path of another
    /// architecture).
    fn variants(self) -> &'static [Variant] {
        VARIANTS
            .iter()
            .find(|(p, _)| *p == self)
            .map_or(&[][..], |&(_, v)| v)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel table and the check of the CPU features its entries are
/// compiled for. Each row below pairs a table with that check; a table is
/// verified (made callable) only when its check passes.
struct Variant {
    table: &'static KernelTable,
    /// Whether this CPU has every feature `table`'s entries need.
    supported: fn() -> bool,
    /// The `GPTQ_KERNEL` name that selects exactly this variant, where it
    /// differs from the path's name (which selects the best variant).
    alias: Option<&'static str>,
}

impl Variant {
    /// The table, when this CPU runs it.
    fn verify(&self) -> Option<VerifiedTable> {
        // SAFETY: each row of `VARIANTS` pairs a table with the check of
        // every feature its entries are compiled for (and the AMX grant), so
        // when `supported` returns true the table's entries may be called.
        (self.supported)().then(|| unsafe { VerifiedTable::new(self.table) })
    }
}

/// Every path's variants, weakest first.
static VARIANTS: &[(KernelPath, &[Variant])] = &[
    (
        KernelPath::Scalar,
        &[Variant {
            table: &SCALAR,
            supported: || true,
            alias: None,
        }],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        KernelPath::Avx2,
        &[Variant {
            table: &x86::AVX2,
            supported: x86::avx2,
            alias: None,
        }],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        KernelPath::AvxVnni,
        &[Variant {
            table: &x86::AVX_VNNI,
            supported: x86::avx_vnni,
            alias: None,
        }],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        KernelPath::Avx512,
        &[
            Variant {
                table: &x86::AVX512,
                supported: x86::avx512,
                alias: Some("avx512-vbmi"),
            },
            Variant {
                table: &x86::AVX512_VBMI,
                supported: x86::avx512_vbmi,
                alias: Some("avx512+vbmi"),
            },
        ],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        KernelPath::Amx,
        &[Variant {
            table: &x86::AMX,
            supported: x86::amx,
            alias: None,
        }],
    ),
    #[cfg(target_arch = "aarch64")]
    (
        KernelPath::Neon,
        &[
            Variant {
                table: &arm::NEON,
                supported: arm::neon,
                alias: Some("neon-dotprod"),
            },
            Variant {
                table: &arm::NEON_DOTPROD,
                supported: arm::neon_dotprod,
                alias: Some("neon+dotprod"),
            },
            Variant {
                table: &arm::NEON_I8MM,
                supported: arm::neon_i8mm,
                alias: Some("neon+i8mm"),
            },
        ],
    ),
];

/// The scalar reference: no CPU features. Every other table takes the
/// entries it has no kernel for from this one.
static SCALAR: KernelTable = KernelTable {
    name: "scalar",
    quantize_q8_0: scalar::quantize,
    quantize_q8_k: scalar::quantize,
    gemm_q8_0: scalar::gemm::<BlockQ8_0>,
    gemm_q4_0: scalar::gemm::<BlockQ4_0>,
    gemv_q8_0: scalar::gemm::<BlockQ8_0>,
    gemv_q4_0: scalar::gemm::<BlockQ4_0>,
    gemm_q4_1: scalar::gemm::<BlockQ4_1>,
    gemm_q5_0: scalar::gemm::<BlockQ5_0>,
    gemm_q5_1: scalar::gemm::<BlockQ5_1>,
    gemm_iq4_nl: scalar::gemm::<BlockIq4Nl>,
    gemv_q4_1: scalar::gemm::<BlockQ4_1>,
    gemv_q5_0: scalar::gemm::<BlockQ5_0>,
    gemv_q5_1: scalar::gemm::<BlockQ5_1>,
    gemv_iq4_nl: scalar::gemm::<BlockIq4Nl>,
    gemv_q2_k: scalar::gemm::<BlockQ2K>,
    gemv_q3_k: scalar::gemm::<BlockQ3K>,
    gemv_q4_k: scalar::gemm::<BlockQ4K>,
    gemv_q5_k: scalar::gemm::<BlockQ5K>,
    gemv_q6_k: scalar::gemm::<BlockQ6K>,
    gemv_iq4_xs: scalar::gemm::<BlockIq4Xs>,
    gemm_q2_k: scalar::gemm::<BlockQ2K>,
    gemm_q3_k: scalar::gemm::<BlockQ3K>,
    gemm_q4_k: scalar::gemm::<BlockQ4K>,
    gemm_q5_k: scalar::gemm::<BlockQ5K>,
    gemm_q6_k: scalar::gemm::<BlockQ6K>,
    gemm_iq4_xs: scalar::gemm::<BlockIq4Xs>,
    gemm_bf16: scalar::gemm_bf16,
    gemm_f16: scalar::gemm_f16,
    gemm_f32: scalar::gemm_f32,
    layer_norm: scalar::layer_norm,
    gelu: scalar::gelu,
    add: scalar::add,
    exp_sum: crate::perplexity::exp_sum::exp_sum,
    max_logit: crate::perplexity::exp_sum::max_logit,
    attend_f32: scalar::attend_f32,
    attend_f16: scalar::attend_f16,
    attend_head_f32: None,
};

/// The x86-64 tables and their feature checks (std caches the CPUID
/// results; each check runs once per [`Kernels`] made).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::is_x86_feature_detected as has;

    use super::KernelTable;
    use crate::quant::{amx, avx2, avx512, avxvnni};

    /// `avx2,fma,f16c`: every AVX2 kernel.
    pub(super) fn avx2() -> bool {
        has!("avx2") && has!("fma") && has!("f16c")
    }

    /// AVX2 and `avxvnni` (the VEX-encoded `vpdpbusd`).
    pub(super) fn avx_vnni() -> bool {
        avx2() && has!("avxvnni")
    }

    /// AVX2 and `avx512f,avx512bw,avx512vl,avx512vnni`: the AVX-512 kernels.
    pub(super) fn avx512() -> bool {
        avx2() && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
    }

    /// AVX-512 and `avx512vbmi,gfni`: the decode kernels of `avx512::vbmi`.
    pub(super) fn avx512_vbmi() -> bool {
        avx512() && has!("avx512vbmi") && has!("gfni")
    }

    /// AVX-512 with VBMI and GFNI, AMX-TILE and AMX-INT8, and the OS's grant
    /// of the tile state to this process.
    pub(super) fn amx() -> bool {
        avx512_vbmi() && amx::supported()
    }

    pub(super) static AVX2: KernelTable = KernelTable {
        name: "avx2",
        quantize_q8_0: avx2::quantize_q8_0,
        quantize_q8_k: avx2::quantize_q8_k,
        gemm_q8_0: avx2::gemm_q8_0,
        gemm_q4_0: avx2::gemm_q4_0,
        gemv_q8_0: avx2::gemv_q8_0::gemv_q8_0,
        gemv_q4_0: avx2::gemv::gemv_q4_0,
        gemm_f16: avx2::gemm_f16,
        gemm_f32: avx2::gemm_f32,
        layer_norm: avx2::layer_norm,
        gelu: avx2::gelu,
        add: avx2::add,
        exp_sum: avx2::exp_sum,
        max_logit: avx2::max_logit,
        attend_f32: avx2::attend_f32,
        attend_f16: avx2::attend_f16,
        attend_head_f32: Some(avx2::attend::attend_head_f32),
        gemm_q4_1: avx2::blocks::prefill_q4_1,
        gemm_q5_0: avx2::blocks::prefill_q5_0,
        gemm_q5_1: avx2::blocks::prefill_q5_1,
        gemm_iq4_nl: avx2::blocks::prefill_iq4_nl,
        gemv_q4_1: avx2::gemv::gemv_q4_1,
        gemv_q5_0: avx2::gemv::gemv_q5_0,
        gemv_q5_1: avx2::gemv::gemv_q5_1,
        gemv_iq4_nl: avx2::gemv::gemv_iq4_nl,
        gemm_q2_k: avx2::blocks::prefill_q2_k,
        gemm_q3_k: avx2::blocks::prefill_q3_k,
        gemm_q4_k: avx2::blocks::prefill_q4_k,
        gemm_q5_k: avx2::blocks::prefill_q5_k,
        gemm_q6_k: avx2::blocks::prefill_q6_k,
        gemm_iq4_xs: avx2::blocks::prefill_iq4_xs,
        gemv_q2_k: avx2::blocks::gemm_q2_k,
        gemv_q3_k: avx2::blocks::gemm_q3_k,
        gemv_q4_k: avx2::blocks::gemm_q4_k,
        gemv_q5_k: avx2::blocks::gemm_q5_k,
        gemv_q6_k: avx2::blocks::gemm_q6_k,
        gemv_iq4_xs: avx2::blocks::gemm_iq4_xs,
        gemm_bf16: avx2::blocks::gemm_bf16,
    };

    /// The AVX2 table with the 32-value types', Q4_K's and Q5_K's prompts in
    /// AVX-VNNI strips.
    pub(super) static AVX_VNNI: KernelTable = KernelTable {
        name: "avxvnni",
        gemm_q8_0: avxvnni::prefill_q8_0,
        gemm_q4_0: avxvnni::prefill_q4_0,
        gemm_q4_1: avxvnni::prefill_q4_1,
        gemm_q5_0: avxvnni::prefill_q5_0,
        gemm_q5_1: avxvnni::prefill_q5_1,
        gemm_iq4_nl: avxvnni::prefill_iq4_nl,
        gemm_q4_k: avxvnni::prefill_q4_k,
        gemm_q5_k: avxvnni::prefill_q5_k,
        ..AVX2
    };

    pub(super) static AVX512: KernelTable = KernelTable {
        name: "avx512",
        // Prefill: rows-in-lanes strips from 32 tokens on (their own order
        // of sums, as a prompt chunk may have), the register tiles below
        // that (the VBMI table's decode walk instead).
        gemm_q8_0: avx512::prefill_q8_0,
        gemm_q4_0: avx512::prefill_q4_0,
        // Decode: the tile walk computes every (row, token) alone: one token
        // or many, the same sums.
        gemv_q8_0: avx512::gemm_q8_0,
        gemv_q4_0: avx512::gemm_q4_0,
        attend_head_f32: Some(avx512::attend_head_f32),
        gemm_q2_k: avx512::blocks::prefill_q2_k,
        gemm_q3_k: avx512::blocks::prefill_q3_k,
        gemm_q4_k: avx512::blocks::prefill_q4_k,
        gemm_q5_k: avx512::blocks::prefill_q5_k,
        gemm_q6_k: avx512::blocks::prefill_q6_k,
        gemm_iq4_xs: avx512::blocks::prefill_iq4_xs,
        gemv_q2_k: avx512::blocks::gemm_q2_k,
        gemv_q3_k: avx512::blocks::gemm_q3_k,
        gemv_q4_k: avx512::blocks::gemm_q4_k,
        gemv_q5_k: avx512::blocks::gemm_q5_k,
        gemv_q6_k: avx512::blocks::gemm_q6_k,
        gemv_iq4_xs: avx2::blocks::gemm_iq4_xs,
        gemm_q4_1: avx512::prefill_q4_1,
        gemm_q5_0: avx512::prefill_q5_0,
        gemm_q5_1: avx512::prefill_q5_1,
        gemm_iq4_nl: avx512::prefill_iq4_nl,
        gemv_q4_1: avx512::gemm_q4_1,
        gemv_q5_0: avx512::gemm_q5_0,
        gemv_q5_1: avx512::gemm_q5_1,
        gemv_iq4_nl: avx512::gemm_iq4_nl,
        gemm_f32: avx512::gemm_f32,
        gemm_f16: avx512::gemm_f16,
        gelu: avx512::gelu,
        exp_sum: avx512::exp_sum,
        max_logit: avx512::max_logit,
        ..AVX2
    };

    pub(super) static AVX512_VBMI: KernelTable = KernelTable {
        name: "avx512+vbmi",
        gemm_q8_0: avx512::vbmi::gemm_q8_0,
        gemm_q4_0: avx512::vbmi::gemm_q4_0,
        gemv_q8_0: avx512::vbmi::gemv_q8_0,
        gemv_q4_0: avx512::vbmi::gemv_q4_0,
        ..AVX512
    };

    pub(super) static AMX: KernelTable = KernelTable {
        name: "amx",
        gemm_q8_0: amx::gemm_q8_0,
        gemm_q4_0: amx::gemm_q4_0,
        ..AVX512_VBMI
    };
}

/// The aarch64 tables and their feature checks.
#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::is_aarch64_feature_detected as has;

    use super::KernelTable;
    use crate::quant::neon;

    /// NEON: every aarch64 CPU (the target enables it).
    pub(super) fn neon() -> bool {
        has!("neon")
    }

    /// NEON and the dot-product instructions (`sdot`).
    pub(super) fn neon_dotprod() -> bool {
        neon() && has!("dotprod")
    }

    /// `neon+dotprod` and the int8 matrix multiply (`smmla`).
    pub(super) fn neon_i8mm() -> bool {
        neon_dotprod() && has!("i8mm")
    }

    pub(super) static NEON: KernelTable = KernelTable {
        name: "neon",
        quantize_q8_0: neon::quant::quantize_q8_0,
        quantize_q8_k: neon::quant::quantize_q8_k,
        gemm_q8_0: neon::quant::gemm_q8_0_widen,
        gemm_q4_0: neon::quant::gemm_q4_0_widen,
        // The tiles compute every (row, token) alone: any token count gives
        // each token the sums it gets alone.
        gemv_q8_0: neon::quant::gemm_q8_0_widen,
        gemv_q4_0: neon::quant::gemm_q4_0_widen,
        gemm_f16: neon::float::gemm_f16,
        gemm_f32: neon::float::gemm_f32,
        layer_norm: neon::float::layer_norm,
        gelu: neon::float::gelu,
        add: neon::float::add,
        // NEON is aarch64's baseline: the portable code is already vectorised.
        exp_sum: crate::perplexity::exp_sum::exp_sum,
        max_logit: crate::perplexity::exp_sum::max_logit,
        attend_f32: neon::float::attend_f32,
        attend_f16: neon::float::attend_f16,
        attend_head_f32: None,
        gemm_q4_1: neon::blocks::gemm_q4_1_widen,
        gemm_q5_0: neon::blocks::gemm_q5_0_widen,
        gemm_q5_1: neon::blocks::gemm_q5_1_widen,
        gemm_iq4_nl: neon::blocks::gemm_iq4_nl_widen,
        gemv_q4_1: neon::blocks::gemm_q4_1_widen,
        gemv_q5_0: neon::blocks::gemm_q5_0_widen,
        gemv_q5_1: neon::blocks::gemm_q5_1_widen,
        gemv_iq4_nl: neon::blocks::gemm_iq4_nl_widen,
        gemv_q2_k: neon::blocks::gemm_q2_k_widen,
        gemv_q3_k: neon::blocks::gemm_q3_k_widen,
        gemv_q4_k: neon::blocks::gemm_q4_k_widen,
        gemv_q5_k: neon::blocks::gemm_q5_k_widen,
        gemv_q6_k: neon::blocks::gemm_q6_k_widen,
        gemv_iq4_xs: neon::blocks::gemm_iq4_xs_widen,
        gemm_q2_k: neon::blocks::gemm_q2_k_widen,
        gemm_q3_k: neon::blocks::gemm_q3_k_widen,
        gemm_q4_k: neon::blocks::gemm_q4_k_widen,
        gemm_q5_k: neon::blocks::gemm_q5_k_widen,
        gemm_q6_k: neon::blocks::gemm_q6_k_widen,
        gemm_iq4_xs: neon::blocks::gemm_iq4_xs_widen,
        gemm_bf16: neon::blocks::gemm_bf16,
    };

    pub(super) static NEON_DOTPROD: KernelTable = KernelTable {
        name: "neon+dotprod",
        gemm_q8_0: neon::strip::prefill_q8_0,
        gemm_q4_0: neon::strip::prefill_q4_0,
        gemv_q8_0: neon::quant::gemm_q8_0_sdot,
        gemv_q4_0: neon::quant::gemm_q4_0_sdot,
        gemm_q4_1: neon::strip::prefill_q4_1,
        gemm_q5_0: neon::strip::prefill_q5_0,
        gemm_q5_1: neon::strip::prefill_q5_1,
        gemm_iq4_nl: neon::strip::prefill_iq4_nl,
        gemv_q4_1: neon::blocks::gemm_q4_1_sdot,
        gemv_q5_0: neon::blocks::gemm_q5_0_sdot,
        gemv_q5_1: neon::blocks::gemm_q5_1_sdot,
        gemv_iq4_nl: neon::blocks::gemm_iq4_nl_sdot,
        gemv_q2_k: neon::blocks::gemm_q2_k_sdot,
        gemv_q3_k: neon::blocks::gemm_q3_k_sdot,
        gemv_q4_k: neon::blocks::gemm_q4_k_sdot,
        gemv_q5_k: neon::blocks::gemm_q5_k_sdot,
        gemv_q6_k: neon::blocks::gemm_q6_k_sdot,
        gemv_iq4_xs: neon::blocks::gemm_iq4_xs_sdot,
        gemm_q2_k: neon::strip_k::prefill_q2_k,
        gemm_q3_k: neon::strip_k::prefill_q3_k,
        gemm_q4_k: neon::strip_k::prefill_q4_k,
        gemm_q5_k: neon::strip_k::prefill_q5_k,
        gemm_q6_k: neon::strip_k::prefill_q6_k,
        gemm_iq4_xs: neon::strip_k::prefill_iq4_xs,
        ..NEON
    };

    /// `neon+dotprod` with prompts in `smmla` strips.
    pub(super) static NEON_I8MM: KernelTable = KernelTable {
        name: "neon+i8mm",
        gemm_q8_0: neon::strip_mm::prefill_q8_0,
        gemm_q4_0: neon::strip_mm::prefill_q4_0,
        gemm_q4_1: neon::strip_mm::prefill_q4_1,
        gemm_q5_0: neon::strip_mm::prefill_q5_0,
        gemm_q5_1: neon::strip_mm::prefill_q5_1,
        gemm_iq4_nl: neon::strip_mm::prefill_iq4_nl,
        gemm_q2_k: neon::strip_k::prefill_q2_k_mm,
        gemm_q3_k: neon::strip_k::prefill_q3_k_mm,
        gemm_q4_k: neon::strip_k::prefill_q4_k_mm,
        gemm_q5_k: neon::strip_k::prefill_q5_k_mm,
        gemm_q6_k: neon::strip_k::prefill_q6_k_mm,
        gemm_iq4_xs: neon::strip_k::prefill_iq4_xs_mm,
        ..NEON_DOTPROD
    };
}

/// A chosen kernel table: the functions every computation goes through.
#[derive(Clone, Copy)]
pub struct Kernels {
    path: KernelPath,
    table: VerifiedTable,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels")
            .field("path", &self.path)
            .field("variant", &self.describe())
            .finish()
    }
}

impl Kernels {
    /// The best variant of `path` this CPU runs.
    pub fn new(path: KernelPath) -> Result<Kernels> {
        path.variants()
            .iter()
            .rev()
            .find_map(Variant::verify)
            .map(|table| Kernels { path, table })
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "kernel path '{path}' is not supported by this CPU (available: {})",
                    names(&KernelPath::available())
                ))
            })
    }

    /// The kernels `name` selects: a path's name (its best variant on this
    /// CPU) or a variant's (`avx512+vbmi`, `avx512-vbmi`, `neon+dotprod`,
    /// `neon-dotprod`). An unknown name, or one this CPU cannot run, is an
    /// error.
    pub fn from_name(name: &str) -> Result<Kernels> {
        let name = name.trim();
        if let Some(path) = KernelPath::from_name(name) {
            return Kernels::new(path);
        }
        let found = VARIANTS.iter().find_map(|&(path, variants)| {
            variants
                .iter()
                .find(|v| v.alias.is_some_and(|a| a.eq_ignore_ascii_case(name)))
                .map(|v| (path, v))
        });
        let Some((path, v)) = found else {
            let known: Vec<&str> = KernelPath::ALL
                .iter()
                .map(|p| p.name())
                .chain(
                    VARIANTS
                        .iter()
                        .flat_map(|(_, v)| v.iter().filter_map(|v| v.alias)),
                )
                .collect();
            return Err(Error::InvalidArgument(format!(
                "unknown kernel path '{name}' (known: {})",
                known.join(", ")
            )));
        };
        v.verify()
            .map(|table| Kernels { path, table })
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "kernel variant '{name}' is not supported by this CPU (available: {})",
                    names(&KernelPath::available())
                ))
            })
    }

    /// The scalar reference kernels.
    pub fn scalar() -> Kernels {
        Kernels::new(KernelPath::Scalar).expect("the scalar path needs no CPU feature")
    }

    /// The best kernels for this CPU.
    pub fn best() -> Kernels {
        Kernels::new(KernelPath::best()).unwrap_or_else(|_| Kernels::scalar())
    }

    /// The kernels named by the environment variable `GPTQ_KERNEL` (see
    /// [`Kernels::from_name`]), or the best ones when it is unset or empty.
    pub fn from_env() -> Result<Kernels> {
        match std::env::var("GPTQ_KERNEL") {
            Ok(name) if !name.trim().is_empty() => Kernels::from_name(&name).map_err(|e| match e {
                Error::InvalidArgument(msg) => {
                    Error::InvalidArgument(format!("GPTQ_KERNEL: {msg}"))
                }
                e => e,
            }),
            _ => Ok(Kernels::best()),
        }
    }

    /// Quantizes one row of activations (a whole number of 32-element blocks)
    /// to Q8_0 with the sums of each block, as [`matmul`](super::matmul::matmul) does before a
    /// quantized product. Exposed for benchmarks.
    ///
    /// # Panics
    /// When `q` and `sums` do not hold `x.len() / 32` entries each.
    pub fn quantize_acts(&self, x: &[f32], q: &mut [BlockQ8_0], sums: &mut [i16]) {
        self.table.quantize(x, q, sums)
    }

    /// `Σ exp(v − max)` over `logits` in f64, as
    /// [`perplexity::exp_sum::exp_sum`](crate::perplexity::exp_sum::exp_sum)
    /// computes it (the same bits) with this path's vectors.
    pub fn exp_sum(&self, logits: &[f32], max: f32) -> f64 {
        self.table.exp_sum(logits, max)
    }

    /// The largest of `logits` (NaN when one is NaN), as
    /// [`perplexity::exp_sum::max_logit`](crate::perplexity::exp_sum::max_logit).
    pub fn max_logit(&self, logits: &[f32]) -> f32 {
        self.table.max_logit(logits)
    }

    /// The path these kernels belong to.
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// The variant that runs, for tools to print: the path's name, or the
    /// variant's where a path has several (`avx512+vbmi`, `neon+dotprod`).
    pub fn describe(&self) -> &'static str {
        self.table.name()
    }

    /// The table to call the kernels through.
    pub(crate) fn table(&self) -> VerifiedTable {
        self.table
    }
}

/// Every table compiled for this architecture, by its exact name, with
/// whether this CPU runs it: for the kernel tests, which test every table
/// and say which they skip.
#[cfg(test)]
pub(crate) fn table_by_name(name: &str) -> Option<Option<VerifiedTable>> {
    VARIANTS
        .iter()
        .flat_map(|(_, v)| v.iter())
        .find(|v| v.table.name == name)
        .map(Variant::verify)
}

/// The exact names of the tables compiled for this architecture.
#[cfg(test)]
pub(crate) fn table_names() -> Vec<&'static str> {
    VARIANTS
        .iter()
        .flat_map(|(_, v)| v.iter().map(|v| v.table.name))
        .collect()
}

fn names(paths: &[KernelPath]) -> String {
    paths
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table names are distinct, every alias selects its own table, and
    /// every path's best variant is the one chosen.
    #[test]
    fn names_and_aliases_select_their_tables() {
        let names = table_names();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "duplicate table name {n}");
        }
        for &(path, variants) in VARIANTS {
            for v in variants {
                if let (Some(alias), Some(table)) = (v.alias, v.verify()) {
                    let k = Kernels::from_name(alias).unwrap();
                    assert!(k.table().same(table), "{alias}");
                    assert_eq!(k.path(), path);
                }
            }
            let best = variants.iter().rev().find_map(Variant::verify);
            match (Kernels::new(path), best) {
                (Ok(k), Some(t)) => assert!(k.table().same(t), "{path}"),
                (Err(_), None) => {}
                (k, t) => panic!("{path}: {k:?} vs {:?}", t.map(|t| t.name())),
            }
        }
        assert!(Kernels::from_name("avx9").is_err());
        assert_eq!(Kernels::scalar().describe(), "scalar");
        assert_eq!(Kernels::from_name(" Scalar ").unwrap().describe(), "scalar");
    }
}
