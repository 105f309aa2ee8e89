//! `gptq serve` end to end over raw HTTP/1.1 on loopback: greedy equality
//! with `gptq complete`, streaming, chat, logprobs against the library, every
//! error class, the API key, a dropped stream, a full queue, concurrent
//! clients against their solo runs, and SIGTERM in the middle of a stream.

mod http;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Server, complete, complete_with, default_model, eventually, ids_of, shifted_contexts};
use serde_json::{Value, json};

const PROMPTS: [&str; 4] = [
    "The old house stood",
    "It was a dark and stormy night; the rain",
    "Hello, my dog is cute",
    "She opened the letter and",
];

#[test]
fn greedy_text_equals_gptq_complete_streamed_or_not() {
    let server = Server::start(&["-np", "2"]);
    for prompt in &PROMPTS[..2] {
        let (text, ids) = complete(prompt, 24);
        let (status, r) = server.post(
            "/completion",
            &json!({"prompt": prompt, "n_predict": 24, "temperature": 0, "return_tokens": true}),
        );
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            ids_of(&r["tokens"]),
            ids,
            "/completion tokens for {prompt:?}"
        );
        assert_eq!(r["content"], text);
        let (status, r) = server.post(
            "/v1/completions",
            &json!({"model": "x", "prompt": prompt, "max_tokens": 24, "temperature": 0}),
        );
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["object"], "text_completion");
        assert_eq!(r["choices"][0]["text"], text, "{prompt:?}");
        assert_eq!(r["usage"]["completion_tokens"], ids.len());
        let want_reason = if ids.len() == 24 { "length" } else { "stop" };
        assert_eq!(r["choices"][0]["finish_reason"], want_reason);
        // Streamed: the pieces concatenate to the same text; [DONE] ends it;
        // the usage chunk comes last when asked for.
        let data = server.stream(
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "stream": true,
                    "stream_options": {"include_usage": true}}),
        );
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).and_then(|c| c["text"].as_str()))
            .collect();
        assert_eq!(streamed, text);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], ids.len());
        // llama-server's stream: content pieces, then stop: true.
        let data = server.stream(
            "/completion",
            &json!({"prompt": prompt, "n_predict": 24, "temperature": 0, "stream": true}),
        );
        let items: Vec<Value> = data
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let streamed: String = items.iter().filter_map(|c| c["content"].as_str()).collect();
        assert_eq!(streamed, text);
        assert_eq!(items.last().unwrap()["stop"], true);
    }
}

/// `--context-shift`: a generation goes on past a full context as
/// llama-server's does (the first `n_keep` tokens kept, half of the rest
/// dropped), and each stretch after a shift is exactly what a fresh request
/// for the shifted context gives (GPT-2's learned positions: the kept tokens
/// are read again, never moved in the cache). A prompt longer than the
/// context is cut into llama-server's blocks and answered as its cut form;
/// the OpenAI endpoint takes a budget past the context too.
#[test]
fn context_shift_goes_on_as_a_fresh_request_for_the_shifted_context() {
    const N_CTX: usize = 32;
    let server = Server::start(&["-np", "1", "-c", "32", "-b", "8", "--context-shift"]);
    let tokenize = |text: &str| {
        let (status, r) = server.post("/tokenize", &json!({ "content": text }));
        assert_eq!(status, 200, "{r}");
        ids_of(&r["tokens"])
    };
    let greedy = |prompt: &[u32], n: usize, n_keep: usize| {
        let (status, r) = server.post(
            "/completion",
            &json!({"prompt": prompt, "n_predict": n, "temperature": 0, "ignore_eos": true,
                    "return_tokens": true, "n_keep": n_keep, "n_probs": 3}),
        );
        assert_eq!(status, 200, "{r}");
        r
    };
    let p = tokenize(PROMPTS[1]);
    assert!(p.len() < N_CTX / 2);
    for n_keep in [4usize, 8] {
        let r = greedy(&p, 48, n_keep);
        let g = ids_of(&r["tokens"]);
        assert_eq!(g.len(), 48, "{r}");
        assert_eq!(r["truncated"], true);
        let shifts = shifted_contexts(&p, &g, N_CTX, n_keep);
        assert!(shifts.len() >= 2, "{shifts:?}");
        // Tokens and their log-probabilities (and the alternatives'), bit
        // for bit: this small model's greedy text cycles, so equal tokens
        // alone would not tell a wrong shift from the right one.
        let probs = r["completion_probabilities"].as_array().unwrap();
        for (at, c) in &shifts[..2] {
            let n = (N_CTX + 1 - c.len()).min(g.len() - at);
            let fresh = greedy(c, n, n_keep);
            assert_eq!(
                ids_of(&fresh["tokens"]),
                g[*at..at + n],
                "n_keep {n_keep}: after {at}"
            );
            assert_eq!(
                fresh["completion_probabilities"].as_array().unwrap()[..],
                probs[*at..at + n],
                "n_keep {n_keep}: log-probabilities after the shift at {at}"
            );
        }
    }
    // A prompt past the context: the first 4 tokens, then the tail without
    // whole blocks of (32 - 4) / 2.
    let long = tokenize(&PROMPTS.join(" and then ").repeat(2));
    assert!(long.len() > N_CTX + 14, "{}", long.len());
    let erased = (long.len() - 4 - 14) / 14;
    let mut cut = long[..4].to_vec();
    cut.extend_from_slice(&long[4 + 14 * erased..]);
    let r = greedy(&long, 8, 4);
    assert_eq!(r["truncated"], true);
    assert_eq!(r["tokens_evaluated"], cut.len());
    let fresh = greedy(&cut, 8, 4);
    assert_eq!(ids_of(&r["tokens"]), ids_of(&fresh["tokens"]));
    assert_eq!(
        r["completion_probabilities"],
        fresh["completion_probabilities"]
    );
    let (status, r) = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPTS[1], "max_tokens": 40, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 40);
    assert_eq!(r["choices"][0]["finish_reason"], "length");
}

/// OpenAI's presence and frequency penalties and logit bias (and
/// llama.cpp's list form of the bias) give what `gptq complete` gives with
/// the same flags, and a banned token never comes.
#[test]
fn penalties_and_logit_bias_equal_gptq_complete_with_the_same_flags() {
    let server = Server::start(&["-np", "1"]);
    let prompt = PROMPTS[2];
    let (_, plain) = complete(prompt, 24);
    let (first, second) = (plain[0], plain[1]);
    let ban = format!("{first}-inf");
    let boost = format!("{second}+1.5");
    let flags = [
        "--presence-penalty",
        "0.8",
        "--frequency-penalty",
        "0.4",
        "-l",
        &ban,
        "-l",
        &boost,
    ];
    let (text, ids) = complete_with(prompt, 24, &flags);
    assert_ne!(ids, plain, "the settings change the greedy text");
    assert!(!ids.contains(&first), "a banned token came: {ids:?}");
    let bias_map = json!({first.to_string(): -100, second.to_string(): 1.5});
    let (status, r) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 24, "temperature": 0,
                "presence_penalty": 0.8, "frequency_penalty": 0.4, "logit_bias": bias_map}),
    );
    assert_eq!(status, 200, "{r}");
    // -100 is not -inf, but enough here: the same text.
    assert_eq!(r["choices"][0]["text"], text);
    let (status, r) = server.post(
        "/completion",
        &json!({"prompt": prompt, "n_predict": 24, "temperature": 0, "return_tokens": true,
                "presence_penalty": 0.8, "frequency_penalty": 0.4,
                "logit_bias": [[first, false], [second, 1.5]]}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(ids_of(&r["tokens"]), ids);
    // The server's own defaults come from the same flags.
    drop(server);
    let server = Server::start(&[&["-np", "1"][..], &flags].concat());
    let (status, r) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["text"], text);
    // llama-server's /props shows them (a ban's -inf as null, as there).
    let (status, props) = server.get("/props");
    assert_eq!(status, 200);
    let props: Value = serde_json::from_str(&props).unwrap();
    let params = &props["default_generation_settings"]["params"];
    assert_eq!(params["presence_penalty"], 0.8);
    assert_eq!(params["frequency_penalty"], 0.4);
    assert_eq!(
        params["logit_bias"],
        json!([{"token": first, "bias": null}, {"token": second, "bias": 1.5}])
    );
    assert_eq!(props["total_slots"], 1);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 256);
    assert_eq!(props["eos_token"], "<|endoftext|>");
}

#[test]
fn chat_renders_the_transcript_and_streams_the_same_answer() {
    let server = Server::start(&["-np", "2"]);
    let messages = json!([
        {"role": "system", "content": "A conversation."},
        {"role": "user", "content": "Where is the house?"}
    ]);
    let (status, r) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 20, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let answer = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let (text, _) = complete(
        "A conversation.\n\nUser: Where is the house?\nAssistant:",
        20,
    );
    let want = text.split("\nUser:").next().unwrap().trim_start();
    assert_eq!(answer, want);
    let data = server.stream(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 20, "temperature": 0, "stream": true}),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, answer);
    // llama-server's /apply-template gives the transcript the chat fed.
    let (status, r) = server.post("/apply-template", &json!({"messages": messages}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["prompt"],
        "A conversation.\n\nUser: Where is the house?\nAssistant:"
    );
    let (status, r) = server.post("/apply-template", &json!({}));
    assert_eq!((status, &r["error"]["param"]), (400, &json!("messages")));
}

#[test]
fn logprobs_are_the_log_softmax_of_the_library_logits() {
    let server = Server::start(&["-np", "1"]);
    let prompt = PROMPTS[2];
    let (status, r) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 3}),
    );
    assert_eq!(status, 200, "{r}");
    let lp = &r["choices"][0]["logprobs"];
    let got: Vec<f64> = lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(lp["top_logprobs"].as_array().unwrap().len(), got.len());
    let model = Arc::new(gptq_core::Model::load(default_model()).unwrap());
    let tok = model.tokenizer();
    let mut s = gptq_core::Session::new(Arc::clone(&model), Default::default()).unwrap();
    let mut logits = s.feed(&tok.encode(prompt)).unwrap().to_vec();
    for (i, &want_lp) in got.iter().enumerate() {
        let id = gptq_core::sample::argmax(&logits);
        let lib = log_prob(&logits, id);
        assert!(
            (lib - want_lp).abs() < 1e-4,
            "token {i}: server {want_lp}, library {lib}"
        );
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 3);
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (best - want_lp).abs() < 1e-6,
            "greedy picks the most likely token"
        );
        logits = s.step(id).unwrap().to_vec();
    }
    // Chat's shape.
    let (status, r) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0,
                "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(status, 200, "{r}");
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty());
    for c in content {
        assert!(c["logprob"].as_f64().unwrap() <= 0.0);
        assert!(c["bytes"].is_array());
        assert_eq!(c["top_logprobs"].as_array().unwrap().len(), 2);
    }
}

/// `echo` with `logprobs` scores the prompt (how evaluation harnesses use
/// the completions API): every prompt token after the first gets the
/// log-softmax of the library's logits at the position before it, across
/// prompt chunks (`-b 8`), the same when the prompt is cached already, and
/// the completion follows the echoed prompt, whole or streamed.
#[test]
fn echo_scores_the_prompt_as_the_library_does() {
    let server = Server::start(&["-np", "1", "-b", "8"]);
    let prompt =
        "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals";
    let model = Arc::new(gptq_core::Model::load(default_model()).unwrap());
    let ids = model.tokenizer().encode(prompt);
    assert!(ids.len() > 16, "three chunks of -b 8");
    // The library reading the prompt in the server's chunks (-b 8): chunks
    // of another size round the quantized activations differently.
    let params = gptq_core::SessionParams {
        n_batch: 8,
        n_outputs: 64,
        ..Default::default()
    };
    let mut s = gptq_core::Session::new(Arc::clone(&model), params).unwrap();
    let mut want = Vec::new();
    s.feed_logits(&ids, 0..ids.len() - 1, |k, logits| {
        want.push(log_prob(logits, ids[k + 1]));
    })
    .unwrap();
    let body = json!({"prompt": prompt, "echo": true, "logprobs": 1, "max_tokens": 0});
    for round in 0..2 {
        let (status, r) = server.post("/v1/completions", &body);
        assert_eq!(status, 200, "{r}");
        let c = &r["choices"][0];
        assert_eq!(c["text"], prompt);
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(r["usage"]["completion_tokens"], 0);
        let lp = &c["logprobs"];
        let got = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(got.len(), ids.len());
        assert!(got[0].is_null() && lp["top_logprobs"][0].is_null());
        for (k, w) in want.iter().enumerate() {
            let g = got[k + 1].as_f64().unwrap();
            assert!(
                (g - w).abs() < 1e-4,
                "round {round} token {}: server {g}, library {w}",
                k + 1
            );
        }
        let tokens: String = lp["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens, prompt);
    }
    // Echo and a completion: the prompt, then the greedy text; offsets run
    // on past the prompt; the stream's pieces concatenate to the same.
    let (text, gen_ids) = complete(prompt, 3);
    let body =
        json!({"prompt": prompt, "echo": true, "logprobs": 0, "max_tokens": 3, "temperature": 0});
    let (status, r) = server.post("/v1/completions", &body);
    assert_eq!(status, 200, "{r}");
    let c = &r["choices"][0];
    assert_eq!(c["text"], format!("{prompt}{text}"));
    let offsets = c["logprobs"]["text_offset"].as_array().unwrap();
    assert_eq!(offsets.len(), ids.len() + gen_ids.len());
    assert_eq!(offsets[ids.len()], prompt.len());
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let data = server.stream("/v1/completions", &streamed);
    let pieces: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(pieces, format!("{prompt}{text}"));
    // max_tokens 0 without echo is still refused.
    let (status, r) = server.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 0}));
    assert_eq!((status, &r["error"]["param"]), (400, &json!("max_tokens")));
}

#[test]
fn every_bad_request_gets_a_json_error_and_the_server_stays_up() {
    let server = Server::start(&["-np", "1", "--max-body", "4096"]);
    let check = |status: u16, body: &[u8], want: u16, kind: &str| {
        assert_eq!(status, want, "{}", String::from_utf8_lossy(body));
        let v: Value = serde_json::from_slice(body).expect("a JSON error body");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    let post = |path: &str, body: &[u8]| {
        server.raw("POST", path, &[("Content-Type", "application/json")], body)
    };
    let (s, _, b) = post("/v1/completions", b"{not json");
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/v1/completions", b"");
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/v1/completions", br#"{"prompt": 5}"#);
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post(
        "/v1/completions",
        br#"{"prompt": "x", "temperature": "hot"}"#,
    );
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post(
        "/v1/completions",
        br#"{"prompt": "x", "max_tokens": 100000}"#,
    );
    check(s, &b, 400, "invalid_request_error");
    assert!(String::from_utf8_lossy(&b).contains("context_length_exceeded"));
    let (s, _, b) = post("/v1/completions", br#"{"prompt": [1, 99999999]}"#);
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/v1/completions", br#"{"prompt": "x", "n": 1000}"#);
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/v1/completions", br#"{"prompt": "x", "logprobs": 99}"#);
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/v1/completions", br#"{"prompt": "x", "top_p": 7}"#);
    check(s, &b, 400, "invalid_request_error");
    for body in [
        &br#"{"prompt": "x", "presence_penalty": 3}"#[..],
        br#"{"prompt": "x", "frequency_penalty": -9}"#,
        br#"{"prompt": "x", "logit_bias": {"hello": 1}}"#,
        br#"{"prompt": "x", "logit_bias": {"99999999": 1}}"#,
        br#"{"prompt": "x", "logit_bias": {"11": 1000}}"#,
    ] {
        let (s, _, b) = post("/v1/completions", body);
        check(s, &b, 400, "invalid_request_error");
    }
    let (s, _, b) = post("/v1/chat/completions", br#"{"messages": []}"#);
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "robot", "content": "x"}]}"#,
    );
    check(s, &b, 400, "invalid_request_error");
    let (s, _, b) = post("/detokenize", br#"{"tokens": [-1]}"#);
    check(s, &b, 400, "invalid_request_error");
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(10_000));
    let (s, _, b) = post("/v1/completions", big.as_bytes());
    check(s, &b, 413, "invalid_request_error");
    let (s, _, b) = server.raw("GET", "/nowhere", &[], b"");
    check(s, &b, 404, "not_found_error");
    let (s, _, b) = server.raw("GET", "/v1/completions", &[], b"");
    check(s, &b, 405, "invalid_request_error");
    // Garbage that is not HTTP at all: the connection is closed, nothing more.
    let mut c = server.connect();
    c.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    // Still serving.
    assert_eq!(server.health()["status"], "ok");
    let (s, r) = server.post(
        "/tokenize",
        &json!({"content": "Hello world", "with_pieces": true}),
    );
    assert_eq!(s, 200);
    assert_eq!(r["tokens"][1]["piece"], " world");
    let ids: Vec<Value> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    let (s, r) = server.post("/detokenize", &json!({"tokens": ids}));
    assert_eq!((s, r["content"].as_str()), (200, Some("Hello world")));
    let (s, models) = server.get("/v1/models");
    assert_eq!(s, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "trained-small-q8_0.gguf");
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains("gptq_requests_errors_total"), "{metrics}");
}

#[test]
fn the_api_key_guards_all_but_health_and_models() {
    let server = Server::start(&["-np", "1", "--api-key", "sekret"]);
    let body = br#"{"prompt": "x", "max_tokens": 1}"#;
    let (s, _, b) = server.raw("POST", "/v1/completions", &[], body);
    assert_eq!(s, 401, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let (s, _, _) = server.raw(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer wrong")],
        body,
    );
    assert_eq!(s, 401);
    let (s, _, _) = server.raw(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sekret")],
        body,
    );
    assert_eq!(s, 200);
    for path in ["/metrics", "/props"] {
        let (s, _, _) = server.raw("GET", path, &[], b"");
        assert_eq!(s, 401, "{path}");
    }
    let (s, _, _) = server.raw("GET", "/props", &[("Authorization", "Bearer sekret")], b"");
    assert_eq!(s, 200);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.get("/v1/models").0, 200);
}

/// Starts a long streamed request and returns its connection once the first
/// token has arrived.
fn start_long_stream(server: &Server) -> TcpStream {
    let mut c = server.connect();
    // To the end of the context, with 20 alternatives per token: long enough
    // (hundreds of ms) that what the tests do meanwhile lands while it runs.
    let body =
        json!({"prompt": "Once upon a time", "n_predict": -1, "ignore_eos": true, "stream": true,
                      "temperature": 0, "n_probs": 20})
        .to_string();
    write!(
        c,
        "POST /completion HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("data:") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    c
}

#[test]
fn a_dropped_stream_frees_its_slot_and_a_full_queue_is_503() {
    let server = Server::start(&["-np", "1", "--max-queue", "1"]);
    let c = start_long_stream(&server);
    assert_eq!(server.health()["slots_processing"], 1);
    // One waits in the queue, the next is refused.
    let queued = {
        let mut q = server.connect();
        let body = json!({"prompt": "x", "max_tokens": 2}).to_string();
        write!(
            q,
            "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        q
    };
    assert!(eventually(10, || server.health()["queue"] == 1));
    let (s, r) = server.post("/v1/completions", &json!({"prompt": "y", "max_tokens": 2}));
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["error"]["type"], "unavailable_error");
    // The client goes away: its slot is freed, the queued request runs.
    drop(c);
    let mut queued = queued;
    queued
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&all).contains("\"finish_reason\"") {
        let n = queued.read(&mut buf).unwrap();
        assert!(n > 0, "the queued request never ran");
        all.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert!(eventually(10, || server.health()["slots_processing"] == 0));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("gptq_requests_cancelled_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gptq_requests_rejected_total 1"),
        "{metrics}"
    );
}

#[test]
fn concurrent_clients_beyond_the_slots_each_get_their_solo_result() {
    let server = Arc::new(Server::start(&["-np", "2"]));
    let solo: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let (s, r) = server.post(
                "/v1/completions",
                &json!({"prompt": p, "max_tokens": 16, "temperature": 0, "cache_prompt": false}),
            );
            assert_eq!(s, 200);
            r["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let p = PROMPTS[i % PROMPTS.len()];
                let (s, r) = server.post(
                    "/v1/completions",
                    &json!({"prompt": p, "max_tokens": 16, "temperature": 0}),
                );
                assert_eq!(s, 200, "{r}");
                (i, r["choices"][0]["text"].as_str().unwrap().to_string())
            })
        })
        .collect();
    for t in threads {
        let (i, text) = t.join().unwrap();
        assert_eq!(text, solo[i % PROMPTS.len()], "client {i}");
    }
}

#[cfg(unix)]
#[test]
fn sigterm_ends_streams_and_exits_zero() {
    let mut server = Server::start(&["-np", "1", "-t", "1"]);
    let mut c = start_long_stream(&server);
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    // The stream ends (an error item saying why), the connection closes.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("shutting down"), "{rest}");
    let end = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit status {code:?}");
}

/// Token `id`'s log-probability under `logits` (log-softmax in f64).
fn log_prob(logits: &[f32], id: u32) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits[id as usize] as f64 - lse
}
