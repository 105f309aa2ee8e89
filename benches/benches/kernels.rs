//! Kernel benchmarks: every matrix-product type (Q8_0, Q4_0, F16, F32) on every
//! kernel path this CPU supports, on GPT-2 124M's matrix shapes, for decode (one
//! token) and prefill (64 tokens), through the public `matmul` API. Throughput is
//! the weight bytes streamed per product, so criterion reports GB/s. Also the
//! activation quantizer.
//!
//! `cargo bench -p gptq-benches --bench kernels` (a filter such as `-- q8_0/decode`
//! narrows the run).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gptq_core::quant::{
    BlockQ4_0, BlockQ8_0, KernelPath, Kernels, MatmulScratch, Matrix, QK, WeightData, matmul,
};
use half::f16;

/// GPT-2 124M's products as (name, cols = inputs, rows = outputs).
const SHAPES: &[(&str, usize, usize)] = &[
    ("qkv_768x2304", 768, 2304),
    ("attn_out_768x768", 768, 768),
    ("ffn_up_768x3072", 768, 3072),
    ("ffn_down_3072x768", 3072, 768),
    ("lm_head_768x50257", 768, 50257),
];

/// Prefill batch.
const PREFILL: usize = 64;

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n).map(|_| lcg(&mut s)).collect()
}

/// One shape's weights in every stored type.
struct Weights {
    f32: Vec<f32>,
    f16: Vec<f16>,
    q8: Vec<BlockQ8_0>,
    q4: Vec<BlockQ4_0>,
}

fn weights(rows: usize, cols: usize) -> Weights {
    let f32 = random(rows * cols, (rows * 31 + cols) as u64);
    let f16 = f32.iter().map(|&v| f16::from_f32(v * 0.1)).collect();
    let mut q8 = vec![BlockQ8_0::ZERO; rows * cols / QK];
    let mut q4 = vec![BlockQ4_0::ZERO; rows * cols / QK];
    gptq_core::quant::types::q8_0::quantize_row_q8_0(&f32, &mut q8);
    gptq_core::quant::types::q4_0::quantize_row_q4_0(&f32, &mut q4);
    Weights { f32, f16, q8, q4 }
}

fn gemm(c: &mut Criterion) {
    let paths = KernelPath::available();
    for &(shape, cols, rows) in SHAPES {
        let w = weights(rows, cols);
        let x = random(PREFILL * cols, 99);
        let mut y = vec![0.0f32; PREFILL * rows];
        let mut scratch = MatmulScratch::new(PREFILL, cols);
        let types: [(&str, WeightData<'_>); 4] = [
            ("q8_0", WeightData::Q8_0(&w.q8)),
            ("q4_0", WeightData::Q4_0(&w.q4)),
            ("f16", WeightData::F16(&w.f16)),
            ("f32", WeightData::F32(&w.f32)),
        ];
        for (ty, data) in types {
            let m = Matrix::new(data, rows, cols).expect("matrix shape");
            for (mode, n_tok) in [("decode", 1), ("prefill64", PREFILL)] {
                let mut g = c.benchmark_group(format!("{ty}/{mode}/{shape}"));
                g.sample_size(10)
                    .warm_up_time(Duration::from_millis(300))
                    .measurement_time(Duration::from_secs(1))
                    .throughput(Throughput::Bytes(m.n_bytes() as u64));
                for &path in &paths {
                    let k = Kernels::new(path).expect("available path");
                    g.bench_function(BenchmarkId::from_parameter(path), |b| {
                        b.iter(|| {
                            matmul(&k, &m, black_box(&x), n_tok, &mut y, &mut scratch);
                            black_box(&y);
                        })
                    });
                }
                g.finish();
            }
        }
    }
}

fn quantize(c: &mut Criterion) {
    let cols = 3072;
    let x = random(PREFILL * cols, 5);
    let nb = PREFILL * cols / QK;
    let mut q = vec![BlockQ8_0::ZERO; nb];
    let mut s = vec![0i16; nb];
    let mut g = c.benchmark_group("quantize_acts/64x3072");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes((x.len() * 4) as u64));
    for path in KernelPath::available() {
        let k = Kernels::new(path).expect("available path");
        g.bench_function(BenchmarkId::from_parameter(path), |b| {
            b.iter(|| {
                k.quantize_acts(black_box(&x), &mut q, &mut s);
                black_box(&q);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, quantize, gemm);
criterion_main!(benches);
