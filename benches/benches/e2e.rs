//! End to end on the GPT-2 124M shape (random weights, generated here and not
//! kept): decode tokens/s at several positions (the attention over the KV cache
//! grows with the position), prefill, and the machine's streaming-read
//! bandwidth, the bound decode is measured against.
//!
//! `cargo bench -p gptq-benches --bench e2e`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gptq_core::gguf::GgmlType;
use gptq_core::membw::stream_read;
use gptq_core::synthetic::{SyntheticSpec, write_synthetic};
use gptq_core::{Model, Session, SessionParams};

fn model(dir: &std::path::Path, ty: GgmlType) -> Arc<Model> {
    let path = dir.join(format!("gpt2-124m-{}.gguf", ty.name().to_lowercase()));
    write_synthetic(&path, &SyntheticSpec::gpt2("124M", ty).unwrap()).unwrap();
    Arc::new(Model::load(&path).unwrap())
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + 13) % 50000).collect()
}

fn e2e(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
        let m = model(dir.path(), ty);
        let bytes = m.weight_bytes_per_token() as u64;
        let mut s = Session::new(Arc::clone(&m), SessionParams::default()).unwrap();

        let mut g = c.benchmark_group(format!("decode-124M-{ty}"));
        g.sample_size(10).measurement_time(Duration::from_secs(3));
        // Weight bytes streamed per token: criterion's GB/s is the decode's
        // effective weight bandwidth.
        g.throughput(Throughput::Bytes(bytes));
        for pos in [64usize, 512, 1023] {
            s.reset();
            s.feed(&tokens(pos)).unwrap();
            g.bench_with_input(BenchmarkId::new("step-at-position", pos), &pos, |b, _| {
                b.iter(|| {
                    s.step(42).unwrap();
                    s.rewind(1).unwrap();
                })
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("prefill-124M-{ty}"));
        g.sample_size(10).measurement_time(Duration::from_secs(5));
        g.throughput(Throughput::Elements(128));
        let prompt = tokens(128);
        g.bench_function("pp128", |b| {
            b.iter(|| {
                s.reset();
                s.feed(&prompt).unwrap();
            })
        });
        g.finish();
    }
}

/// A parallel streaming read of a buffer far larger than the caches.
fn membw(c: &mut Criterion) {
    const BYTES: usize = 256 << 20;
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("membw");
    g.sample_size(10)
        .throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function(
        format!("stream-read-{}-threads", rayon::current_num_threads()),
        |b| b.iter(|| stream_read(&buf)),
    );
    g.finish();
}

criterion_group!(benches, e2e, membw);
criterion_main!(benches);
