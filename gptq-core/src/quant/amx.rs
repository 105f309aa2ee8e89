//! The x86-64 AMX-INT8 kernel path for prefill's quantized products: Intel's
//! tile matrix unit multiplies a 16-token × 32-byte activation tile by a
//! 32 × 16-row weight tile in one `tdpbssd` (8192 exact i8 products summed
//! into 16 × 16 i32). Decode (fewer than [`MIN_TOKENS`] tokens) and every
//! other table entry are the `avx512+vbmi` table's functions.
//!
//! Per kernel call, the weight rows are first repacked into a per-thread
//! buffer in the tile unit's VNNI order (the AVX-512 strips' layout,
//! `x86::strips`: for each block 8 lines of 16 rows × 4 bytes, Q4_0 nibbles
//! widened to `q - 8`) with f32 scales beside; that cost is shared by every
//! token of the call, or, with `--repack`, by every call (`x86::repacked`;
//! Q8_0 shares the AVX-512 strips' kept repack, Q4_0 keeps its own). Then for each tile of 16 tokens (read
//! in place from the quantized activations, one row per token) and each strip
//! of 16 weight rows, every block's integer tile is scaled by
//! `d_w · d_a` into sixteen f32 registers with AVX-512, one per token.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline
//! `asm!`. Linux grants a process the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`supported`] asks once. The
//! products are `unsafe fn`s that need that grant beside their CPU
//! features; the `amx` kernel table, reached only after `dispatch` checked
//! both, is their only caller.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::OnceLock;

use super::prefetch;
use super::tile::{OutTile, QuantActs};
use super::types::{BlockQ4_0, BlockQ8_0, QK};
use super::x86::repacked::reaches;
use super::x86::strips::{Line, Unpack, q4_0_signed, q8_0_signed, store_sums16, with_strips};

/// Tokens per activation tile, and weight rows per weight tile.
const TILE: usize = 16;

/// Products of fewer tokens than this run the AVX-512 VBMI table's kernels
/// (its decode walk below 24 or 32 tokens, its strips from there): repacking the
/// weights into tiles costs more than the tile unit saves. Measured on the
/// 124M shape, Q8_0, 2 threads (`gptq bench -p N -n 0`, the AVX-512 path and
/// this one alternated): the AVX-512 kernels were ahead at 8–64 tokens
/// (pp8 626–694 against 321–340 t/s, pp32 1174–1303 against 932–1035, pp64
/// 1734–1798 against 1611–1613), even from 96 on.
pub(super) const MIN_TOKENS: usize = 64;

/// Where the weights' repack is kept (`--repack`), the tile unit leads from
/// fewer tokens: from 8 for Q8_0 and from 16 for Q4_0, whose decode walk is
/// the quicker at 8. 124M, 2 threads, `gptq bench -p N -n 0 --repack`, the
/// tile unit from 8 tokens against from [`MIN_TOKENS`] (alternated): Q8_0
/// pp8 1.09–1.12×, pp12 1.22–1.51×, pp16 1.17×, pp25 0.98–1.14×, pp48
/// 1.02–1.11× (from 2 tokens instead, pp2–pp6 0.79–0.94×); Q4_0 pp8
/// 0.82–0.87× against from 16, pp16 1.11–1.15× against from 64.
const MIN_TOKENS_KEPT_Q8_0: usize = 8;

/// See [`MIN_TOKENS_KEPT_Q8_0`].
const MIN_TOKENS_KEPT_Q4_0: usize = 16;

/// Bytes of one weight block's tile: 8 lines of 16 rows × 4 bytes.
const LINES_PER_BLOCK: usize = QK / 4;

/// Whether the CPU has AMX-TILE and AMX-INT8 and the OS lets this process use
/// the tile registers (asked once; the grant lasts for the process).
pub(super) fn supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| cpu_has_amx_int8() && request_tile_data())
}

/// CPUID leaf 7, sub-leaf 0: EDX bit 24 is AMX-TILE, bit 25 AMX-INT8.
fn cpu_has_amx_int8() -> bool {
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

/// Asks Linux for the AMX tile-data state component (`XFEATURE_XTILEDATA`);
/// without the grant the first tile instruction raises SIGILL.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request takes two integers and touches no
    // memory of ours; failure (an old kernel, a sandbox) is a return value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Tiles for `m` tokens: `tmm0`/`tmm1` activations (`m` × 32 bytes),
    /// `tmm2`/`tmm3` weights (8 × 64 bytes), `tmm4`/`tmm5` products (`m` × 16
    /// i32). Two of each, so that consecutive blocks use different tiles.
    fn new(m: usize) -> TileConfig {
        debug_assert!((1..=TILE).contains(&m));
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for i in 0..2 {
            (c.colsb[i], c.rows[i]) = (QK as u16, m as u8);
            (c.colsb[2 + i], c.rows[2 + i]) = (64, LINES_PER_BLOCK as u8);
            (c.colsb[4 + i], c.rows[4 + i]) = (64, m as u8);
        }
        c
    }

    /// Loads this configuration into the calling thread's tile unit.
    ///
    /// # Safety
    /// The CPU must have AMX-TILE and the OS must have granted tile data
    /// ([`supported`] returned true).
    #[inline]
    unsafe fn load(&self) {
        // SAFETY: the caller guarantees AMX is usable; `self` is a valid
        // 64-byte palette-1 configuration (rows ≤ 16, colsb ≤ 64).
        unsafe { asm!("ldtilecfg [{}]", in(reg) self, options(nostack, readonly)) }
    }
}

/// Returns the tile unit to its initial state (cheaper context switches).
///
/// # Safety
/// As for [`TileConfig::load`].
#[inline]
unsafe fn tile_release() {
    // SAFETY: the caller guarantees AMX is usable.
    unsafe { asm!("tilerelease", options(nostack, nomem)) }
}

/// One product tile: 16 tokens × 16 rows of i32.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ProductTile([[i32; TILE]; TILE]);

thread_local! {
    /// Each thread's activation scales of the current token tile, `nb × 16`,
    /// block-major (zero for padding tokens), grown once to the largest.
    static DA: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y[t][r] = Σ_b d_w[r][b]·d_a[t][b]·Σ_k w[r][b][k]·a[t][b][k]` over the
/// tile unit, with the weights in the strips' layout (`x86::strips`, the
/// tile unit's VNNI order) as `unpack` makes them: repacked per call, or
/// kept between calls where the model's repacks are (`--repack`).
///
/// # Safety
/// AMX must be usable ([`supported`]) and the CPU must have AVX-512 F, AVX2,
/// FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_impl<W: 'static>(
    w: &[W],
    unpack: impl Unpack<W, QK, 1> + 'static,
    a: &QuantActs<'_>,
    out: &mut OutTile<'_>,
) {
    let (nb, rows, n_tok) = (a.nb, out.rows(), a.n_tok);
    assert!(w.len() >= rows * nb, "amx gemm: weights too short");
    assert!(
        a.blocks.len() >= n_tok * nb,
        "amx gemm: activations too short"
    );
    let strips = rows.div_ceil(TILE);
    let mut da = DA.take();
    da.clear();
    da.resize(nb * TILE, 0.0);
    with_strips::<_, 32, 1, _>(w, rows, nb, unpack, |st| {
        let mut configured = 0;
        for t0 in (0..n_tok).step_by(TILE) {
            let m = TILE.min(n_tok - t0);
            if m != configured {
                // SAFETY: the caller guarantees AMX is usable.
                unsafe { TileConfig::new(m).load() };
                configured = m;
            }
            for t in 0..TILE {
                for b in 0..nb {
                    da[b * TILE + t] = if t < m {
                        a.blocks[(t0 + t) * nb + b].d.to_f32()
                    } else {
                        0.0
                    };
                }
            }
            let acts = &a.blocks[t0 * nb..(t0 + m) * nb];
            for strip in 0..strips {
                let at = strip * nb;
                // SAFETY: the tiles are configured for `m` tokens and `acts`
                // holds exactly `m` tokens' blocks; the caller guarantees the
                // features.
                let acc = unsafe {
                    strip_product(
                        acts,
                        nb,
                        &st.lines[at * LINES_PER_BLOCK..(at + nb) * LINES_PER_BLOCK],
                        &st.dw[at * TILE..(at + nb) * TILE],
                        &da,
                    )
                };
                let r0 = strip * TILE;
                let nr = TILE.min(rows - r0);
                for (t, v) in acc.iter().take(m).enumerate() {
                    store_sums16(out, t0 + t, r0, nr, *v);
                }
            }
        }
        if configured != 0 {
            // SAFETY: the caller guarantees AMX is usable.
            unsafe { tile_release() };
        }
    });
    DA.set(da);
}

/// One block's product on the tiles named: activations `$ta` from `$a`
/// (rows `$sa` bytes apart), weights `$tb` from `$b` (8 lines of 64 bytes),
/// the zeroed product `$tc` stored to `$c` (rows of 64 bytes). Consecutive
/// blocks alternate between two sets of tiles so that one block's product
/// overlaps the previous one's scaling.
macro_rules! block_product {
    ($ta:literal, $tb:literal, $tc:literal, $a:expr, $sa:expr, $b:expr, $c:expr) => {
        asm!(
            concat!("tileloadd ", $ta, ", [{a} + {sa}*1]"),
            concat!("tileloadd ", $tb, ", [{b} + {sb}*1]"),
            concat!("tilezero ", $tc),
            concat!("tdpbssd ", $tc, ", ", $ta, ", ", $tb),
            concat!("tilestored [{c} + {sb}*1], ", $tc),
            a = in(reg) $a,
            sa = in(reg) $sa,
            b = in(reg) $b,
            sb = in(reg) 64usize,
            c = in(reg) $c,
            options(nostack),
        )
    };
}

/// One token tile times one weight strip over all `nb` blocks: register `t`
/// holds token `t`'s sixteen row sums (tokens past the tile's `m` are zero
/// because their scales are).
///
/// # Safety
/// AMX must be usable and configured (by [`TileConfig::load`]) for
/// `m = acts.len() / nb` tokens, and the CPU must have AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn strip_product(
    acts: &[BlockQ8_0],
    nb: usize,
    lines: &[Line],
    dw: &[f32],
    da: &[f32],
) -> [__m512; TILE] {
    assert!(lines.len() == nb * LINES_PER_BLOCK && dw.len() == nb * TILE);
    assert!(da.len() == nb * TILE && acts.len() >= nb && acts.len().is_multiple_of(nb));
    let stride = nb * size_of::<BlockQ8_0>();
    let qs_offset = std::mem::offset_of!(BlockQ8_0, qs);
    let base = acts.as_ptr().cast::<u8>();
    let mut c = [ProductTile([[0; TILE]; TILE]); 2];
    let mut acc = [_mm512_setzero_ps(); TILE];
    for b in 0..nb {
        // Token `t`'s block `b` starts `t · stride` bytes past block `b` of the
        // tile's first token.
        let ap = base.wrapping_add(b * size_of::<BlockQ8_0>() + qs_offset);
        let bp = lines[b * LINES_PER_BLOCK..].as_ptr();
        // The weight tile's load waits for its lines: where the repack is
        // kept (`--repack`) they come from memory, not from the call's
        // freshly written strips, and each is read once per token tile.
        for line in &lines[b * LINES_PER_BLOCK..(b + 1) * LINES_PER_BLOCK] {
            prefetch::stream(line);
        }
        let ct = &mut c[b & 1];
        let cp = ct.0.as_mut_ptr();
        // SAFETY: the activation tile reads `m` rows of 32 bytes at `ap +
        // t·stride`, each the `qs` of token `t`'s block `b`, inside `acts` (`m`
        // tokens of `nb` blocks); the weight tile reads 8 lines of 64 bytes,
        // the block's lines; the product tile writes `m` rows of 64 bytes into
        // `ct`, which holds 16. The caller guarantees AMX is usable and
        // configured.
        unsafe {
            if b & 1 == 0 {
                block_product!("tmm0", "tmm2", "tmm4", ap, stride, bp, cp);
            } else {
                block_product!("tmm1", "tmm3", "tmm5", ap, stride, bp, cp);
            }
        }
        // SAFETY: `dw` holds 16 scales for block `b` (asserted above).
        let wd = unsafe { _mm512_loadu_ps(dw.as_ptr().add(b * TILE)) };
        let ad = &da[b * TILE..(b + 1) * TILE];
        for t in 0..TILE {
            // SAFETY: row `t` of the product tile is 16 aligned i32.
            let q = unsafe { _mm512_load_si512(ct.0[t].as_ptr().cast()) };
            let scale = _mm512_mul_ps(wd, _mm512_set1_ps(ad[t]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), scale, acc[t]);
        }
    }
    acc
}

/// Q8_0 weights times Q8_0 activations: the tile unit for prefill, the
/// `avx512+vbmi` kernels for fewer than [`MIN_TOKENS`] tokens
/// ([`MIN_TOKENS_KEPT_Q8_0`] with a kept repack).
///
/// # Safety
/// AMX must be usable ([`supported`]); the CPU features are those enabled
/// here.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(in crate::quant) unsafe fn gemm_q8_0(
    w: &[BlockQ8_0],
    a: &QuantActs<'_>,
    out: &mut OutTile<'_>,
) {
    if !reaches(w, a.n_tok, MIN_TOKENS_KEPT_Q8_0, MIN_TOKENS) {
        return super::avx512::vbmi::gemm_q8_0(w, a, out);
    }
    // SAFETY: AMX is usable (this function's contract); the CPU features
    // `gemm_impl` needs are enabled here.
    unsafe { gemm_impl(w, q8_0_signed, a, out) }
}

/// Q4_0 weights times Q8_0 activations, as [`gemm_q8_0`].
///
/// # Safety
/// As [`gemm_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(in crate::quant) unsafe fn gemm_q4_0(
    w: &[BlockQ4_0],
    a: &QuantActs<'_>,
    out: &mut OutTile<'_>,
) {
    if !reaches(w, a.n_tok, MIN_TOKENS_KEPT_Q4_0, MIN_TOKENS) {
        return super::avx512::vbmi::gemm_q4_0(w, a, out);
    }
    // SAFETY: as in `gemm_q8_0`.
    unsafe { gemm_impl(w, q4_0_signed, a, out) }
}

#[cfg(test)]
mod tests;
