//! Calibrated quantization end to end on the trained fixture model:
//! activation-aware scaling preserves the float model's function, GPTQ and
//! scaling produce files that load and score, and the output is byte-identical
//! from run to run.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use gptq_convert::awq;
use gptq_convert::gptq::layerwise::{CalibOptions, LAYER_TENSORS, LayerF32};
use gptq_convert::{Calibration, ConvertOptions, OutType, convert};
use gptq_core::calibrate::BlockRunner;
use gptq_core::gguf::GgmlType;
use gptq_core::perplexity::perplexity_chunks;
use gptq_core::quant::WeightData;
use gptq_core::{Kernels, Model};

fn text(name: &str) -> String {
    std::fs::read_to_string(testdata().join("text").join(name)).unwrap()
}

/// Block `layer` of an F32 model as `LayerF32`.
fn layer_f32(model: &Model, layer: usize) -> LayerF32 {
    let b = model.block(layer);
    let m = |w: gptq_core::quant::Matrix<'_>| match w.data() {
        WeightData::F32(v) => v.to_vec(),
        _ => panic!("an F32 model"),
    };
    let vals: [Vec<f32>; 12] = [
        b.attn_norm_w.to_vec(),
        b.attn_norm_b.to_vec(),
        m(b.attn_qkv_w),
        b.attn_qkv_b.to_vec(),
        m(b.attn_out_w),
        b.attn_out_b.to_vec(),
        b.ffn_norm_w.to_vec(),
        b.ffn_norm_b.to_vec(),
        m(b.ffn_up_w),
        b.ffn_up_b.to_vec(),
        m(b.ffn_down_w),
        b.ffn_down_b.to_vec(),
    ];
    LayerF32 {
        t: LAYER_TENSORS
            .iter()
            .copied()
            .zip(vals)
            .collect::<HashMap<_, _>>(),
    }
}

/// Folding the scales changes the weights but not the function: every
/// block's output on real text is the same before and after.
#[test]
fn awq_scaling_preserves_the_float_model() {
    let model = model("trained-small", GgmlType::F32, Kernels::best());
    let hp = model.hparams().clone();
    let tokens = model.tokenizer().encode(&text("calibration-small.txt"));
    let seq = 128;
    let mut runner = BlockRunner::new(&hp, model.kernels(), seq).unwrap();
    let mut xs: Vec<Vec<f32>> = tokens
        .chunks_exact(seq)
        .take(4)
        .map(|t| model.embed(t).unwrap())
        .collect();
    let mut scaled_any = false;
    for layer in 0..hp.n_layer {
        let w = layer_f32(&model, layer);
        let mut stats = awq::InputStats::new(&hp);
        for x in &xs {
            let mut x = x.clone();
            runner
                .run(layer, &w.view(&hp).unwrap(), &mut x, Some(&mut stats))
                .unwrap();
        }
        let mut scaled = w.clone();
        let applied = awq::search_layer(
            &hp,
            &mut scaled,
            &stats,
            &|_| GgmlType::Q4_0,
            &HashMap::new(),
        )
        .unwrap();
        scaled_any |= !applied.is_empty();
        for x in &mut xs {
            let mut y = x.clone();
            runner.run(layer, &w.view(&hp).unwrap(), x, None).unwrap();
            runner
                .run(layer, &scaled.view(&hp).unwrap(), &mut y, None)
                .unwrap();
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "block {layer}: relative difference {worst}");
        }
    }
    assert!(scaled_any, "no block was rescaled: the test shows nothing");
}

fn convert_calibrated(out: &Path, ty: OutType, options: CalibOptions) {
    let opts = ConvertOptions {
        out_type: ty,
        progress: false,
        calibration: Some(Calibration {
            text: testdata().join("text").join("calibration-small.txt"),
            options,
        }),
        ..ConvertOptions::default()
    };
    convert(&checkpoint("trained-small"), out, &opts).unwrap();
}

/// GPTQ (with act-order) and GPTQ with scaling: the files load, score close
/// to the float model on held-out text, and the same inputs give the same
/// bytes.
#[test]
fn gptq_files_load_score_and_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let heldout = text("heldout-books.txt");
    let f32_model = model("trained-small", GgmlType::F32, Kernels::best());
    let tokens = f32_model.tokenizer().encode(&heldout);
    let ppl = |m: &Arc<Model>| {
        perplexity_chunks(m, &tokens, 256, Some(12), |_, _| {})
            .unwrap()
            .ppl
    };
    let base = ppl(&f32_model);
    let small = CalibOptions {
        tokens: 2048,
        ..CalibOptions::default()
    };
    for (name, options) in [
        (
            "gptq",
            CalibOptions {
                act_order: true,
                ..small.clone()
            },
        ),
        (
            "gptq-awq",
            CalibOptions {
                awq: true,
                ..small.clone()
            },
        ),
    ] {
        let a = tmp.path().join(format!("{name}-a.gguf"));
        let b = tmp.path().join(format!("{name}-b.gguf"));
        convert_calibrated(&a, GgmlType::Q4_0.into(), options.clone());
        convert_calibrated(&b, GgmlType::Q4_0.into(), options);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{name}"
        );
        let m = Arc::new(Model::load(&a).unwrap());
        let p = ppl(&m);
        eprintln!("{name}: ppl {p:.3} (F32 {base:.3}) over 12 chunks");
        assert!(p < base * 1.10, "{name}: {p} vs F32 {base}");
    }
}

/// GPTQ with importance weights on llama-quantize's Q4_K_M mix (K-quants,
/// Q5_K and Q6_K matrices, a Q6_K token embedding the calibration pass
/// expands): the file has the round-to-nearest mix's types and size, every
/// value is finite, and each matrix stays near its float weights.
#[test]
fn gptq_on_the_q4_k_m_mix_with_an_importance_matrix() {
    use gptq_core::gguf::{FileType, GgufFile, MappedFile};
    use gptq_core::quant::types::dequantize_row;

    let tmp = tempfile::tempdir().unwrap();
    let imatrix = read_importance(&testdata().join("llama-quantize/trained-small.imatrix"));
    let mix = OutType::Mix(FileType::from_name("Q4_K_M").unwrap());
    let write = |name: &str, calibration: Option<Calibration>| {
        let out = tmp.path().join(name);
        let opts = ConvertOptions {
            out_type: mix,
            imatrix: Some(imatrix.clone()),
            calibration,
            progress: false,
            ..ConvertOptions::default()
        };
        convert(&checkpoint("trained-small"), &out, &opts).unwrap();
        out
    };
    let rtn = write("rtn.gguf", None);
    let gptq = write(
        "gptq.gguf",
        Some(Calibration {
            text: testdata().join("text").join("calibration-small.txt"),
            options: CalibOptions {
                tokens: 1024,
                ..CalibOptions::default()
            },
        }),
    );
    let f32_path = tmp.path().join("f32.gguf");
    convert(
        &checkpoint("trained-small"),
        &f32_path,
        &ConvertOptions {
            out_type: GgmlType::F32.into(),
            progress: false,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let (a, b, f) = (
        MappedFile::open(&rtn).unwrap(),
        MappedFile::open(&gptq).unwrap(),
        MappedFile::open(&f32_path).unwrap(),
    );
    let (ga, gb, gf) = (
        GgufFile::parse(a.bytes()).unwrap(),
        GgufFile::parse(b.bytes()).unwrap(),
        GgufFile::parse(f.bytes()).unwrap(),
    );
    assert_eq!(a.bytes().len(), b.bytes().len(), "file sizes");
    let mut k_types = 0;
    for t in &ga.tensors {
        let u = gb.tensor(&t.name).unwrap();
        assert_eq!(t.ty, u.ty, "{}: type", t.name);
        if !t.name.starts_with("blk.") || t.ty == GgmlType::F32 {
            continue;
        }
        k_types += usize::from(t.ty.block_size() == 256);
        let want: &[f32] =
            gptq_core::gguf::cast_slice(gf.tensor_data(f.bytes(), gf.tensor(&t.name).unwrap()))
                .unwrap();
        let expand = |g: &GgufFile, bytes: &[u8]| {
            let mut v = vec![0.0f32; want.len()];
            dequantize_row(
                t.ty,
                g.tensor_data(bytes, g.tensor(&t.name).unwrap()),
                &mut v,
            )
            .unwrap();
            v
        };
        let err = |v: &[f32]| -> f64 {
            assert!(v.iter().all(|x| x.is_finite()), "{}: non-finite", t.name);
            v.iter()
                .zip(want)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum::<f64>()
        };
        let norm: f64 = want.iter().map(|y| f64::from(*y).powi(2)).sum();
        let (e_rtn, e_gptq) = (err(&expand(&ga, a.bytes())), err(&expand(&gb, b.bytes())));
        // GPTQ trades weight error for output error; it stays of RTN's order.
        assert!(
            e_gptq < 4.0 * e_rtn && e_gptq < 0.05 * norm,
            "{}: GPTQ weight error {e_gptq}, RTN {e_rtn}, |W|² {norm}",
            t.name
        );
    }
    assert!(k_types >= 8, "the mix has K-quant matrices");
}

/// llama-imatrix's file as llama-quantize reads it (sums ÷ calls).
fn read_importance(path: &Path) -> gptq_convert::Importance {
    let m = gptq_core::imatrix::Imatrix::read(path).unwrap();
    m.entries
        .iter()
        .map(|e| (e.name.clone(), e.importance()))
        .collect()
}
