//! `gptq bench`: llama-bench's prompt-processing (pp) and text-generation (tg)
//! figures, plus the weight bandwidth decoding reaches and the machine's
//! streaming-read bandwidth to compare it with.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use gptq_core::membw::StreamBuf;
use gptq_core::sample::Rng;
use gptq_core::{Session, SessionParams};

use crate::args::ModelArgs;
use crate::load;

/// Flags of `gptq bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens evaluated in one batch (pp test; 0 = skip). Several
    /// values, comma-separated or repeated as llama-bench takes them
    /// (`-p 16,128,512`), run one test each.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N",
        value_delimiter = ',',
        default_values_t = [512]
    )]
    pub n_prompt: Vec<usize>,
    /// Tokens generated one at a time from an empty context (tg test; 0 =
    /// skip); several values as for `-p`.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "N",
        value_delimiter = ',',
        default_values_t = [128]
    )]
    pub n_gen: Vec<usize>,
    /// Generation after a prompt (ik_llama.cpp's `-gp`): `PP,TG` reads a
    /// PP-token prompt (not timed), then times TG tokens generated one at a
    /// time at that depth, where attention over the cache adds to the weight
    /// stream; reported as `tgTG@ppPP`. Repeat the flag for several.
    #[arg(long = "gp", value_name = "PP,TG", value_parser = parse_pair)]
    pub gp: Vec<(usize, usize)>,
    /// Repetitions of each test.
    #[arg(
        short = 'r',
        long = "repetitions",
        value_name = "N",
        default_value_t = 5
    )]
    pub repetitions: usize,
    /// Skip measuring the machine's streaming-read bandwidth.
    #[arg(long)]
    pub no_membw: bool,
    /// Size of the streaming-read buffer in MiB: choose it well above the
    /// last-level cache (servers' L3 can hold hundreds of MiB), or set it to
    /// the model's weight size to measure the bound on that working set.
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub membw_mib: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The median of `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// One timed tg repetition's decode bandwidth and the two streaming reads
/// timed right after it, in GB/s.
#[derive(Clone, Copy)]
struct Paired {
    decode: f64,
    big: f64,
    weights: f64,
}

/// Decode against a streaming read over the repetitions: the mean read, and
/// the median, least and greatest of each repetition's decode / read ratio,
/// in percent.
fn against(p: &[Paired], read: impl Fn(&Paired) -> f64) -> (f64, f64, f64, f64) {
    let pct: Vec<f64> = p.iter().map(|x| 100.0 * x.decode / read(x)).collect();
    let mean = p.iter().map(&read).sum::<f64>() / p.len() as f64;
    let (lo, hi) = pct
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    (mean, median(&pct), lo, hi)
}

/// `PP,TG` of `--gp`: two positive counts.
fn parse_pair(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected PP,TG (two counts), got {s:?}"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("expected PP,TG with both counts at least 1, got {s:?}"))
    };
    Ok((num(a)?, num(b)?))
}

/// The tests a `-p` or `-n` list asks for: its non-zero values, in order.
fn sizes(list: &[usize]) -> Vec<usize> {
    list.iter().copied().filter(|&n| n > 0).collect()
}

/// Runs `gptq bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    let (pps, tgs) = (sizes(&args.n_prompt), sizes(&args.n_gen));
    if pps.is_empty() && tgs.is_empty() && args.gp.is_empty() {
        bail!("nothing to measure: both -p and -n are 0 (and no --gp)");
    }
    if args.model.repack && pps.is_empty() {
        bail!("--repack speeds up prompt processing only: with -p 0 it would change nothing");
    }
    if args.json && (pps.len() > 1 || tgs.len() > 1) {
        bail!("--json reports one -p and one -n value: run it once per value");
    }
    if args.json && !args.gp.is_empty() {
        bail!("--json reports -p and -n only: run --gp without --json");
    }
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let hp = model.hparams();
    let max_pp = pps.iter().copied().max().unwrap_or(0);
    let max_tg = tgs.iter().copied().max().unwrap_or(0);
    if max_pp.max(max_tg) > hp.n_ctx {
        bail!(
            "-p {max_pp} / -n {max_tg} do not fit the model's context of {} tokens",
            hp.n_ctx
        );
    }
    if let Some(&(pp, tg)) = args.gp.iter().find(|(pp, tg)| pp + tg > hp.n_ctx) {
        bail!(
            "--gp {pp},{tg} does not fit the model's context of {} tokens",
            hp.n_ctx
        );
    }
    let gp_pp = args.gp.iter().map(|g| g.0).max().unwrap_or(0);
    let need = args
        .gp
        .iter()
        .map(|(pp, tg)| pp + tg)
        .fold(max_pp.max(max_tg), usize::max);
    let params = SessionParams {
        n_ctx: need,
        n_batch: args.model.batch_size.unwrap_or(max_pp.max(gp_pp).max(1)),
        n_outputs: 1,
        kv_type: args.model.cache_type.into(),
    };
    let mut session = Session::new(Arc::clone(model), params)?;
    // Random tokens, as llama-bench uses: the figures do not depend on text.
    let mut rng = Rng::new(1234);
    let vocab = hp.n_vocab as u64;
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let threads = rayon::current_num_threads();
    let kernel = model.kernels().describe();
    let bytes_per_token = model.weight_bytes_per_token() as f64;

    // Warm-up, as llama-bench's: one untimed run of the longest prompt (every
    // weight page, the KV cache and the scratch buffers touched, the thread
    // pool started; with --repack it makes every product's repack, as
    // `-rtr` repacks at load) and one untimed token. With only a few warm-up
    // tokens the first timed prompt paid the first touch of the cache pages
    // the rest of it writes.
    session.feed(&tokens(max_pp.max(gp_pp).max(1)))?;
    session.reset();
    if !tgs.is_empty() || !args.gp.is_empty() {
        session.step(tokens(1)[0])?;
        session.reset();
    }

    // (test name, tokens, mean t/s, sd) per test, the prompts first.
    let mut results: Vec<(String, usize, f64, f64)> = Vec::new();
    for &n in &pps {
        let prompt = tokens(n);
        let mut v = Vec::with_capacity(args.repetitions);
        for _ in 0..args.repetitions {
            session.reset();
            let t = Instant::now();
            session.feed(&prompt)?;
            v.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let (m, sd) = mean_sd(&v);
        results.push((format!("pp{n}"), n, m, sd));
    }
    // Two references for decode: a read beyond the caches (the memory bound),
    // and a re-read of the weights' size, which decode re-reads every token:
    // where the last-level cache holds much of that, decode can beat the
    // first. Both are leading parts of one buffer (no more memory than the
    // larger), read right after every timed tg repetition (the second once
    // untimed first, as decode's previous token read its weights), so that
    // decode and its bound are measured alternately at the same moment
    // of a shared machine: 355M Q4_K_M, `-n 64 -r 5`, four runs of each
    // alternated on a shared Intel host, read once after all repetitions
    // (best of five) 72-91 %, paired (median ratio) 81-87 %.
    let (big_bytes, weight_bytes) = ((args.membw_mib as usize) << 20, bytes_per_token as usize);
    let refs =
        (!args.no_membw && !tgs.is_empty()).then(|| StreamBuf::new(big_bytes.max(weight_bytes)));
    // Generation from an empty context (tg), then after an untimed prompt
    // (--gp): each repetition starts from a reset session; with `refs`, each
    // is followed by the two streaming reads.
    let mut generation = |prompt: &[u32],
                          gen_tokens: &[u32],
                          refs: Option<&StreamBuf>|
     -> Result<((f64, f64), Vec<Paired>)> {
        let mut v = Vec::with_capacity(args.repetitions);
        let mut paired = Vec::new();
        for _ in 0..args.repetitions {
            session.reset();
            if !prompt.is_empty() {
                session.feed(prompt)?;
            }
            // The steps run on the pool, as `gptq complete`'s do (see
            // `on_pool`).
            let t = Instant::now();
            gptq_core::on_pool(|| -> Result<()> {
                for &id in gen_tokens {
                    session.step(id)?;
                }
                Ok(())
            })?;
            let tps = gen_tokens.len() as f64 / t.elapsed().as_secs_f64();
            v.push(tps);
            if let Some(buf) = refs {
                let big = buf.read_gbps(big_bytes);
                buf.read_gbps(weight_bytes);
                paired.push(Paired {
                    decode: tps * bytes_per_token / 1e9,
                    big,
                    weights: buf.read_gbps(weight_bytes),
                });
            }
        }
        Ok((mean_sd(&v), paired))
    };
    let mut tg_paired: Vec<Vec<Paired>> = Vec::new();
    for &n in &tgs {
        let ((m, sd), paired) = generation(&[], &tokens(n), refs.as_ref())?;
        results.push((format!("tg{n}"), n, m, sd));
        tg_paired.push(paired);
    }
    let mut gp_results: Vec<(String, usize, f64, f64)> = Vec::new();
    for &(pp, tg) in &args.gp {
        let ((m, sd), _) = generation(&tokens(pp), &tokens(tg), None)?;
        gp_results.push((format!("tg{tg}@pp{pp}"), tg, m, sd));
    }
    let (pp_results, tg_results) = results.split_at(pps.len());
    let repacked_mib = gptq_core::quant::repacked_bytes() as f64 / 1048576.0;
    // Per tg test (in `tg_results`' order), decode against each reference
    // (see `against`); none without the reads.
    let membw: Vec<_> = tg_paired
        .iter()
        .map(|p| (!p.is_empty()).then(|| (against(p, |x| x.big), against(p, |x| x.weights))))
        .collect();
    let file_mib = std::fs::metadata(model.path()).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let name = model.name().unwrap_or("gpt2").to_string();

    // Written with `?`, not println!, so a closed pipe ends the command quietly.
    let mut out = std::io::stdout().lock();
    if args.json {
        let one =
            |r: &[(String, usize, f64, f64)]| r.first().map_or((0, 0.0, 0.0), |x| (x.1, x.2, x.3));
        let ((n_prompt, pp_m, pp_sd), (n_gen, tg_m, tg_sd)) = (one(pp_results), one(tg_results));
        let mut v = serde_json::json!({
            "model": name,
            "file_mib": file_mib,
            "kernel": kernel,
            "threads": threads,
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "repetitions": args.repetitions,
            "pp_tps": pp_m,
            "pp_sd": pp_sd,
            "tg_tps": tg_m,
            "tg_sd": tg_sd,
            "tg_gbps": tg_m * bytes_per_token / 1e9,
            "weight_bytes_per_token": bytes_per_token,
        });
        if let Some(&Some((big, weights))) = membw.first() {
            v["membw_gbps"] = big.0.into();
            v["membw_weights_gbps"] = weights.0.into();
            v["tg_membw_pct"] = big.1.into();
            v["tg_membw_weights_pct"] = weights.1.into();
        }
        if args.model.repack {
            v["repacked_mib"] = repacked_mib.into();
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(
        out,
        "| model | size | kernel | threads | test | t/s |\n| --- | ---: | --- | ---: | ---: | ---: |"
    )?;
    for (test, _, m, sd) in results.iter().chain(&gp_results) {
        writeln!(
            out,
            "| {name} | {file_mib:.2} MiB | {kernel} | {threads} | {test} | {m:.2} ± {sd:.2} |"
        )?;
    }
    if args.model.repack {
        write!(
            out,
            "\nrepacked weights (made by one untimed prompt first): {repacked_mib:.1} MiB beside \
             the {file_mib:.1} MiB mapping"
        )?;
        if tg_results.is_empty() {
            writeln!(out)?;
        }
    }
    for (i, (test, _, tg_m, _)) in tg_results.iter().enumerate() {
        let tg_gbps = tg_m * bytes_per_token / 1e9;
        // One tg test keeps the line as it always read; several name theirs.
        let what = if tg_results.len() == 1 {
            "tg".to_string()
        } else {
            test.clone()
        };
        if i == 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{what} weight bandwidth: {tg_gbps:.2} GB/s ({:.1} MB of weights per token)",
            bytes_per_token / 1e6
        )?;
        if let Some(&Some(((bw, pct, lo, hi), (bw_w, pct_w, lo_w, hi_w)))) = membw.get(i) {
            writeln!(
                out,
                "streaming read on {threads} threads of {} MiB, read after each timed repetition: \
                 {bw:.2} GB/s, so decode runs at {pct:.0} % of it (median of the repetitions' \
                 ratios, {lo:.0}-{hi:.0} %); of the weights' {:.0} MiB (re-read like decode's, \
                 partly cache-resident if the last-level cache is large): {bw_w:.2} GB/s, \
                 {pct_w:.0} % ({lo_w:.0}-{hi_w:.0} %)",
                args.membw_mib,
                bytes_per_token / 1048576.0,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn decode_against_each_repetitions_own_read() {
        // The read moved by 2x between repetitions; each ratio uses its own.
        let p = [
            Paired {
                decode: 9.0,
                big: 10.0,
                weights: 12.0,
            },
            Paired {
                decode: 18.0,
                big: 20.0,
                weights: 24.0,
            },
            Paired {
                decode: 8.0,
                big: 10.0,
                weights: 10.0,
            },
        ];
        let (mean, med, lo, hi) = against(&p, |x| x.big);
        assert!((mean - 40.0 / 3.0).abs() < 1e-12);
        assert!((med - 90.0).abs() < 1e-9 && (lo - 80.0).abs() < 1e-9 && (hi - 90.0).abs() < 1e-9);
        let (_, med_w, lo_w, hi_w) = against(&p, |x| x.weights);
        assert!((med_w - 75.0).abs() < 1e-9 && (lo_w - 75.0).abs() < 1e-9);
        assert!((hi_w - 80.0).abs() < 1e-9);
    }
}
