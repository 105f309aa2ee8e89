//! `gptq bench`: llama-bench's prompt-processing (pp) and text-generation (tg)
//! figures, plus the weight bandwidth decoding reaches and the machine's
//! streaming-read bandwidth to compare it with.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use gptq_core::membw::stream_read_gbps;
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
    // Generation from an empty context (tg), then after an untimed prompt
    // (--gp): each repetition starts from a reset session.
    let mut generation = |prompt: &[u32], gen_tokens: &[u32]| -> Result<(f64, f64)> {
        let mut v = Vec::with_capacity(args.repetitions);
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
            v.push(gen_tokens.len() as f64 / t.elapsed().as_secs_f64());
        }
        Ok(mean_sd(&v))
    };
    for &n in &tgs {
        let (m, sd) = generation(&[], &tokens(n))?;
        results.push((format!("tg{n}"), n, m, sd));
    }
    let mut gp_results: Vec<(String, usize, f64, f64)> = Vec::new();
    for &(pp, tg) in &args.gp {
        let (m, sd) = generation(&tokens(pp), &tokens(tg))?;
        gp_results.push((format!("tg{tg}@pp{pp}"), tg, m, sd));
    }
    let (pp_results, tg_results) = results.split_at(pps.len());
    let repacked_mib = gptq_core::quant::repacked_bytes() as f64 / 1048576.0;
    let bytes_per_token = model.weight_bytes_per_token() as f64;
    // Two references: a buffer beyond the caches (the memory bound), and one
    // the size of the weights, which decode re-reads every token: where the
    // last-level cache holds much of that, decode can beat the first.
    let membw = (!args.no_membw && !tgs.is_empty()).then(|| {
        (
            stream_read_gbps((args.membw_mib as usize) << 20, 5),
            stream_read_gbps(bytes_per_token as usize, 5),
        )
    });
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
        if let Some((bw, bw_weights)) = membw {
            v["membw_gbps"] = bw.into();
            v["membw_weights_gbps"] = bw_weights.into();
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
        if let Some((bw, bw_weights)) = membw {
            writeln!(
                out,
                "streaming read on {threads} threads of {} MiB: {bw:.2} GB/s, so decode runs at {:.0} % of it; \
                 of the weights' {:.0} MiB (re-read like decode's, partly cache-resident if the \
                 last-level cache is large): {bw_weights:.2} GB/s, {:.0} %",
                args.membw_mib,
                100.0 * tg_gbps / bw,
                bytes_per_token / 1048576.0,
                100.0 * tg_gbps / bw_weights
            )?;
        }
    }
    Ok(())
}
