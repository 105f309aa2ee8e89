//! The kernel tables' products of the block types beyond Q8_0 and Q4_0
//! (the K-quants, IQ4_XS, Q4_1, Q5_0, Q5_1, IQ4_NL, BF16) against the scalar
//! twins, through the kernel harness: random, ragged and extreme data on
//! every table this CPU runs (a table it cannot run is named as skipped), and
//! each token's result bitwise the same alone or with others (decode batches).

use half::{bf16, f16};

use super::dispatch::table_names;
use super::harness::{self, GemmSuite, Gen, Rng, TestActs};
use super::table::{Gemm, VerifiedTable};
use super::tile::{OutTile, QuantActs, grouped_chunk_tokens};
use super::types::testkit::{blocks_from_bytes, scale_ranges};
use super::types::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1,
    BlockQ5K, BlockQ6K, QuantBlock,
};
// Only the x86 repack checks take these (NEON has no repack).
#[cfg(target_arch = "x86_64")]
use super::types::{BlockQ4_0, BlockQ8_0};
use crate::gguf::as_bytes;

/// A block of type `B` from `fill` bytes, its f16 scales set to `scale`.
fn block<B: QuantBlock>(fill: impl FnMut() -> u8, scale: f16) -> B {
    let mut fill = fill;
    let mut bytes: Vec<u8> = (0..std::mem::size_of::<B>()).map(|_| fill()).collect();
    for r in scale_ranges(B::TYPE) {
        bytes[r].copy_from_slice(&scale.to_le_bytes());
    }
    blocks_from_bytes::<B>(&bytes)[0]
}

macro_rules! test_data {
    ($($blk:ty),* $(,)?) => {$(
        impl Gen for $blk {
            fn random(rng: &mut Rng) -> Self {
                let d = f16::from_f32(rng.f() * 0.05);
                block(|| rng.byte(), d)
            }

            fn extremes() -> Vec<Self> {
                let mut out = Vec::new();
                for d in [
                    f16::ONE,
                    f16::from_f32(-1000.0),
                    f16::from_bits(0x8000 | 0x3ff),
                    f16::from_bits(1),
                    f16::ZERO,
                ] {
                    for fill in [0x00u8, 0xff, 0xaa, 0x5a] {
                        out.push(block::<$blk>(|| fill, d));
                    }
                }
                out
            }
        }
    )*};
}

test_data!(
    BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockIq4Nl, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K,
    BlockIq4Xs
);

/// Prompts: the x86 strips (from 32 tokens on, 64 for the K-quants and
/// IQ4_XS), with partial strips of rows and token groups.
const PREFILL: GemmSuite = GemmSuite {
    tokens: &[64, 72, 67],
    ragged_rows: &[1, 2, 7, 8, 9, 15, 16, 17, 33],
    ragged_tokens: &[64, 65, 66, 69],
    gpt2: &[(67, 64)],
    lm_head: None,
    extremes: (18, 65),
};

/// The same from 32 tokens: the 32-value types' strips at their threshold
/// (x86, `neon+dotprod` and `neon+i8mm`).
const PREFILL_32: GemmSuite = GemmSuite {
    tokens: &[32, 35],
    ragged_rows: &[1, 9, 17],
    ragged_tokens: &[32, 33],
    gpt2: &[(67, 32)],
    lm_head: None,
    extremes: (18, 33),
};

/// Every table's product of `W` against the scalar twin, decode and prefill,
/// and each token's decode result alone equal bitwise to its result among 9.
fn check<W: Gemm + Gen>(seed: u64)
where
    W::Partner: TestActs,
{
    for name in table_names() {
        let Some(t) = harness::table(name) else {
            continue;
        };
        GemmSuite::DEFAULT.run::<W>(t, seed);
        // The prefill suites reach the x86 strips (from 32 and 64 tokens) and
        // the `neon+dotprod` and `neon+i8mm` strips of the 32-value types
        // (from 32); the
        // other paths have no kernel that starts there, and under qemu the
        // larger suite costs minutes.
        let sums = <W::Partner as super::types::ActBlock>::SUMS;
        if cfg!(target_arch = "x86_64") {
            PREFILL.run::<W>(t, seed + 1);
        }
        let neon_strips = matches!(name, "neon+dotprod" | "neon+i8mm");
        if sums && (cfg!(target_arch = "x86_64") || neon_strips) {
            PREFILL_32.run::<W>(t, seed + 2);
        }
        decode_alone_equals_batched::<W>(t, seed);
    }
}

/// Tables `a` and `b`, or `None` (the test says it skipped) when this CPU
/// cannot run both.
#[cfg(target_arch = "x86_64")]
fn two_tables(a: &str, b: &str) -> Option<(VerifiedTable, VerifiedTable)> {
    let pair = harness::table(a).zip(harness::table(b));
    if pair.is_none() {
        eprintln!("skipped: needs the {a} and {b} tables on this CPU");
    }
    pair
}

/// The AVX2 and AVX-512 strips sum every type but Q2_K, Q3_K and Q6_K
/// (below) in the same order: the same bits.
#[cfg(target_arch = "x86_64")]
#[test]
fn strips_agree_across_paths() {
    let Some((x, y)) = two_tables("avx2", "avx512") else {
        return;
    };
    harness::check_same_prefill_bits::<BlockQ4_1>(x, y);
    harness::check_same_prefill_bits::<BlockQ5_0>(x, y);
    harness::check_same_prefill_bits::<BlockQ5_1>(x, y);
    harness::check_same_prefill_bits::<BlockIq4Nl>(x, y);
    harness::check_same_prefill_bits::<BlockQ4K>(x, y);
    harness::check_same_prefill_bits::<BlockQ5K>(x, y);
    harness::check_same_prefill_bits::<BlockIq4Xs>(x, y);
}

/// The AVX-VNNI strips are the AVX-512 strips at half the width, summed in
/// the same order: the same bits, for every type they take (the others run
/// the AVX2 table's kernels).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx_vnni_strips_equal_avx512_bits() {
    let Some((x, y)) = two_tables("avxvnni", "avx512") else {
        return;
    };
    harness::check_same_prefill_bits::<BlockQ8_0>(x, y);
    harness::check_same_prefill_bits::<BlockQ4_0>(x, y);
    harness::check_same_prefill_bits::<BlockQ4_1>(x, y);
    harness::check_same_prefill_bits::<BlockQ5_0>(x, y);
    harness::check_same_prefill_bits::<BlockQ5_1>(x, y);
    harness::check_same_prefill_bits::<BlockIq4Nl>(x, y);
    harness::check_same_prefill_bits::<BlockQ4K>(x, y);
    harness::check_same_prefill_bits::<BlockQ5K>(x, y);
}

/// Below the strips the `avxvnni` table's Q8_0 products (the decode walk's
/// pairs, from six tokens the batch octets) give the AVX2 table's bits, and
/// each token its bits alone.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx_vnni_small_q8_0_products_equal_avx2_bits() {
    let Some((x, y)) = two_tables("avxvnni", "avx2") else {
        return;
    };
    harness::check_same_few_token_bits::<BlockQ8_0>(x, y);
    harness::check_few_token_prefill_alone(x);
}

/// The x86 tables named that this CPU runs (a note on stderr when none).
#[cfg(target_arch = "x86_64")]
fn x86_tables(names: &[&str]) -> Vec<crate::quant::table::VerifiedTable> {
    let tables: Vec<_> = names.iter().copied().filter_map(harness::table).collect();
    if tables.is_empty() {
        eprintln!("skipped: needs one of the {names:?} tables on this CPU");
    }
    tables
}

/// The repack cache (`--repack`) changes no bits, on the x86 paths, for
/// every quantized type, and keeps the repacks `KernelPath::keeps_repack`
/// says it keeps.
#[cfg(target_arch = "x86_64")]
#[test]
fn repack_cache_changes_no_bits() {
    for t in x86_tables(&["avx2", "avxvnni", "avx512", "amx"]) {
        harness::check_repack_cache::<BlockQ8_0>(t);
        harness::check_repack_cache::<BlockQ4_0>(t);
        harness::check_repack_cache::<BlockQ5_1>(t);
        harness::check_repack_cache::<BlockQ4K>(t);
        harness::check_repack_cache::<BlockQ6K>(t);
        harness::check_repack_cache::<BlockQ4_1>(t);
        harness::check_repack_cache::<BlockQ5_0>(t);
        harness::check_repack_cache::<BlockIq4Nl>(t);
        harness::check_repack_cache::<BlockQ2K>(t);
        harness::check_repack_cache::<BlockQ3K>(t);
        harness::check_repack_cache::<BlockQ5K>(t);
        harness::check_repack_cache::<BlockIq4Xs>(t);
    }
}

/// With a kept repack (`--repack`) the 32-value types and the K-quants run
/// in strips (on the AMX path, its Q8_0 and Q4_0 on the tile unit) from
/// fewer tokens, with the strips' bits, on every x86 path.
#[cfg(target_arch = "x86_64")]
#[test]
fn kept_repack_runs_strips_from_fewer_tokens() {
    for t in x86_tables(&["avx2", "avxvnni", "avx512", "avx512+vbmi", "amx"]) {
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ8_0>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ4_0>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ5_1>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ4K>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ6K>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ4_1>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ5_0>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockIq4Nl>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ2K>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ3K>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockQ5K>(t);
        harness::check_kept_repack_strips_from_fewer_tokens::<BlockIq4Xs>(t);
    }
}

/// AVX2 sums each Q2_K, Q3_K and Q6_K super-block in integers, as the
/// scalar twins do (not in the AVX-512 strips' order): its strips give the
/// scalar bits, on random data and at the ends of the i16 and i32 ranges the
/// kernel relies on (every weight at its most negative value times the most
/// negative scale, Q2_K's largest values, scales and minimums, activations
/// ±127).
#[cfg(target_arch = "x86_64")]
#[test]
fn int_strips_equal_scalar_bits() {
    let Some(x) = harness::table("avx2") else {
        return;
    };
    let s = harness::scalar();
    harness::check_same_prefill_bits::<BlockQ2K>(x, s);
    harness::check_same_prefill_bits::<BlockQ3K>(x, s);
    harness::check_same_prefill_bits::<BlockQ6K>(x, s);
    let q2 = |fill: u8, scales: u8| BlockQ2K {
        scales: [scales; 16],
        qs: [fill; 64],
        d: f16::ONE,
        dmin: f16::from_f32(0.5),
    };
    extreme_prefill_bits(
        x,
        s,
        &[q2(0xff, 0xff), q2(0, 0xff), q2(0xff, 0x0f), q2(0x55, 0xf0)],
    );
    let q6 = |fill: u8, scale: i8| BlockQ6K {
        ql: [fill; 128],
        qh: [fill; 64],
        scales: [scale; 16],
        d: f16::ONE,
    };
    // Q3_K's 6-bit scales are stored +32: byte 0 is -32, 0xff is 31.
    let q3 = |fill: u8, scale: u8| BlockQ3K {
        hmask: [fill; 32],
        qs: [fill; 64],
        scales: [scale; 12],
        d: f16::ONE,
    };
    extreme_prefill_bits(
        x,
        s,
        &[q6(0, -128), q6(0xff, 127), q6(0, 127), q6(0xff, -128)],
    );
    extreme_prefill_bits(x, s, &[q3(0, 0), q3(0xff, 0xff), q3(0, 0xff), q3(0xff, 0)]);
}

/// `x` and `y` give the same bits for weights whose first blocks are
/// `extreme` (every row starts with them, in turn) and activations of scale 1
/// whose first and last tokens are all 127 and all -127.
#[cfg(target_arch = "x86_64")]
fn extreme_prefill_bits<W: Gemm<Partner = super::types::BlockQ8K> + Gen>(
    x: VerifiedTable,
    y: VerifiedTable,
    extreme: &[W],
) {
    let mut rng = Rng::new(0xe87);
    for (rows, nb, n_tok) in [(9, 3, 65), (17, 2, 64)] {
        let mut w: Vec<W> = rng.blocks(rows * nb);
        for r in 0..rows {
            w[r * nb] = extreme[r % extreme.len()];
        }
        let xs = rng.acts(n_tok * nb * W::ELEMS);
        let (mut a, sums) = harness::quantize_ref::<super::types::BlockQ8K>(&xs, n_tok);
        let last = a.len() - nb;
        a[..nb].iter_mut().for_each(|b| b.qs = [127; 256]);
        a[last..].iter_mut().for_each(|b| b.qs = [-127; 256]);
        for b in &mut a {
            b.d = 1.0;
            for (i, s) in b.bsums.iter_mut().enumerate() {
                *s = b.qs[16 * i..16 * i + 16]
                    .iter()
                    .map(|&v| i16::from(v))
                    .sum();
            }
        }
        let acts = QuantActs::new(&a, &sums, n_tok, nb);
        harness::assert_same_gemm_bits(x, y, &w, &acts, rows, "extremes");
    }
}

fn decode_alone_equals_batched<W: Gemm + Gen>(t: VerifiedTable, seed: u64)
where
    W::Partner: TestActs,
{
    // The second shape's tokens split into L1 chunks of grouped kernels
    // (`grouped_chunk_tokens`: four tokens of twelve Q8_K blocks per chunk);
    // the third's for either partner: two chunk edges, then a group of four
    // and a single token (28 tokens of 24 Q8_0 blocks per chunk, 4 of Q8_K).
    let nb = 24;
    let n_tok = 2 * grouped_chunk_tokens::<W::Partner>(nb, 4) + 5;
    for (rows, nb, n_tok) in [(5, 3, 9), (3, 12, 11), (2, nb, n_tok)] {
        alone_equals_batched::<W>(t, seed, rows, nb, n_tok);
    }
}

fn alone_equals_batched<W: Gemm + Gen>(
    t: VerifiedTable,
    seed: u64,
    rows: usize,
    nb: usize,
    n_tok: usize,
) where
    W::Partner: TestActs,
{
    let mut rng = Rng::new(seed);
    let w: Vec<W> = rng.blocks(rows * nb);
    let x = rng.acts(n_tok * nb * W::ELEMS);
    let (q, s) = harness::quantize_ref::<W::Partner>(&x, n_tok);
    let acts = QuantActs::new(&q, &s, n_tok, nb);
    let mut all = vec![f32::NAN; n_tok * rows];
    t.gemv(&w, &acts, &mut OutTile::whole(&mut all, n_tok, rows));
    for tok in 0..n_tok {
        let sums = if s.is_empty() {
            &s[..]
        } else {
            acts.row_sums(tok)
        };
        let one = QuantActs::new(acts.row(tok), sums, 1, nb);
        let mut y = vec![f32::NAN; rows];
        t.gemv(&w, &one, &mut OutTile::whole(&mut y, 1, rows));
        for (r, v) in y.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                all[tok * rows + r].to_bits(),
                "{} {:?}: token {tok} row {r}",
                t.name(),
                W::TYPE
            );
        }
    }
}

#[test]
fn q4_1() {
    check::<BlockQ4_1>(41);
}

#[test]
fn q5_0() {
    check::<BlockQ5_0>(50);
}

#[test]
fn q5_1() {
    check::<BlockQ5_1>(51);
}

#[test]
fn iq4_nl() {
    check::<BlockIq4Nl>(44);
}

#[test]
fn q2_k() {
    check::<BlockQ2K>(2);
}

#[test]
fn q3_k() {
    check::<BlockQ3K>(3);
}

#[test]
fn q4_k() {
    check::<BlockQ4K>(4);
}

#[test]
fn q5_k() {
    check::<BlockQ5K>(5);
}

#[test]
fn q6_k() {
    check::<BlockQ6K>(6);
}

#[test]
fn iq4_xs() {
    check::<BlockIq4Xs>(48);
}

#[test]
fn bf16_products() {
    for name in table_names() {
        if let Some(t) = harness::table(name) {
            harness::check_float_gemm::<bf16>(t, 16);
        }
    }
}

/// F32 and F16 weights on every table of the CPU (the AVX-512 tables have
/// their own float panels).
#[test]
fn float_products() {
    for name in table_names() {
        if let Some(t) = harness::table(name) {
            harness::check_float_gemm::<f32>(t, 17);
            harness::check_float_gemm::<f16>(t, 18);
        }
    }
}

impl harness::Float for bf16 {
    fn round(v: f32) -> bf16 {
        super::types::bf16::from_f32(v)
    }
    fn get(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

#[test]
fn random_blocks_round_trip_their_bytes() {
    let mut rng = Rng::new(1);
    let b = BlockQ6K::random(&mut rng);
    assert_eq!(as_bytes(&[b]).len(), 210);
}
