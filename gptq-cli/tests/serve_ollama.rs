//! `gptq serve`'s ollama API over raw HTTP/1.1 on loopback: greedy equality
//! of `/api/generate` and `/api/chat` with `gptq complete` (whole and as a
//! newline-delimited stream), `context` continuation, log-probabilities, the
//! model listing, and ollama's `{"error"}` bodies for every refusal.

mod http;

use http::{Server, complete, eventually, shifted_contexts};
use serde_json::{Value, json};

const MODEL: &str = "trained-small-q8_0.gguf";

/// A request to an ollama endpoint: status and the body's JSON objects, one
/// per line (one for a whole response).
fn ollama(server: &Server, path: &str, body: &Value) -> (u16, String, Vec<Value>) {
    let (status, head, b) = server.raw(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let text = String::from_utf8(b).unwrap();
    let objects = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    (status, head, objects)
}

/// A whole `/api/generate` answer to `base` with the fields of `extra`
/// added (status 200 asserted).
fn generate(server: &Server, base: &Value, extra: Value) -> Value {
    let mut body = base.clone();
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, _, r) = ollama(server, "/api/generate", &body);
    assert_eq!(status, 200, "{body}: {r:?}");
    r[0].clone()
}

/// The token ids of `text`.
fn tokens(server: &Server, text: &str) -> Vec<u32> {
    let (status, r) = server.post("/tokenize", &json!({"content": text}));
    assert_eq!(status, 200);
    r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn generate_equals_gptq_complete_whole_streamed_and_continued() {
    let server = Server::start(&["-np", "2"]);
    let prompt = "The old house stood";
    let (text, ids) = complete(prompt, 20);
    let opts = json!({"num_predict": 20, "temperature": 0});
    // Whole.
    let (status, head, r) = ollama(
        &server,
        "/api/generate",
        &json!({"model": MODEL, "prompt": prompt, "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{r:?}");
    assert!(head.contains("application/json"), "{head}");
    let r = &r[0];
    assert_eq!(r["response"], text);
    assert_eq!(r["done"], true);
    assert_eq!(r["model"], MODEL);
    let reason = if ids.len() == 20 { "length" } else { "stop" };
    assert_eq!(r["done_reason"], reason);
    assert_eq!(r["eval_count"], ids.len());
    let prompt_ids = tokens(&server, prompt);
    assert_eq!(r["prompt_eval_count"], prompt_ids.len());
    let mut context = prompt_ids.clone();
    context.extend(&ids);
    assert_eq!(r["context"], json!(context));
    for k in ["total_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(r[k].as_u64().is_some_and(|n| n > 0), "{k}: {r}");
    }
    assert!(r["created_at"].as_str().unwrap().ends_with('Z'));
    // Streamed (the default): one object per line, the pieces concatenate to
    // the whole text, the last carries the totals and the context.
    let (status, head, lines) = ollama(
        &server,
        "/api/generate",
        &json!({"model": format!("{MODEL}:latest"), "prompt": prompt, "options": opts}),
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/x-ndjson"), "{head}");
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces.iter().all(|l| l["done"] == false));
    let streamed: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text);
    assert_eq!(last["done"], true);
    assert_eq!(last["context"], json!(context));
    assert_eq!(last["model"], format!("{MODEL}:latest"));
    // `context` goes before the prompt: the continuation equals the
    // completion of the same tokens.
    let (status, _, r) = ollama(
        &server,
        "/api/generate",
        &json!({"model": MODEL, "context": context, "prompt": "", "stream": false,
                "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(status, 200, "{r:?}");
    let (all, _) = complete(prompt, 28);
    assert_eq!(format!("{text}{}", r[0]["response"].as_str().unwrap()), all);
    // A prompt-less request only "loads" the model.
    let (status, _, r) = ollama(
        &server,
        "/api/generate",
        &json!({"model": MODEL, "stream": false}),
    );
    assert_eq!((status, &r[0]["done_reason"]), (200, &json!("load")));
}

#[test]
fn chat_answers_as_the_transcript_continues_whole_or_streamed() {
    let server = Server::start(&["-np", "2"]);
    let messages = json!([
        {"role": "system", "content": "A conversation."},
        {"role": "user", "content": "Where is the house?"}
    ]);
    let opts = json!({"num_predict": 20, "temperature": 0});
    let (status, _, r) = ollama(
        &server,
        "/api/chat",
        &json!({"model": MODEL, "messages": messages, "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{r:?}");
    let (text, _) = complete(
        "A conversation.\n\nUser: Where is the house?\nAssistant:",
        20,
    );
    let want = text.split("\nUser:").next().unwrap().trim_start();
    assert_eq!(r[0]["message"]["role"], "assistant");
    assert_eq!(r[0]["message"]["content"], want);
    let (status, _, lines) = ollama(
        &server,
        "/api/chat",
        &json!({"model": MODEL, "messages": messages, "options": opts}),
    );
    assert_eq!(status, 200);
    let streamed: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, want);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert_eq!(lines.last().unwrap()["done_reason"], r[0]["done_reason"]);
}

#[test]
fn logprobs_come_per_token_with_their_alternatives() {
    let server = Server::start(&["-np", "1"]);
    let body = json!({"model": MODEL, "prompt": "Hello, my dog is cute", "stream": false,
                      "logprobs": true, "top_logprobs": 3,
                      "options": {"num_predict": 6, "temperature": 0}});
    let (status, _, r) = ollama(&server, "/api/generate", &body);
    assert_eq!(status, 200, "{r:?}");
    let lps = r[0]["logprobs"].as_array().unwrap();
    assert_eq!(lps.len(), r[0]["eval_count"].as_u64().unwrap() as usize);
    for lp in lps {
        let top = lp["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], lp["token"]);
        assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (_, _, lines) = ollama(&server, "/api/generate", &streamed);
    let n: usize = lines
        .iter()
        .filter_map(|l| l["logprobs"].as_array().map(Vec::len))
        .sum();
    assert_eq!(n, lps.len());
}

#[test]
fn listing_showing_and_refusals_speak_ollama() {
    let server = Server::start(&["-np", "1", "-c", "128"]);
    let tags: Value = serde_json::from_str(&server.get("/api/tags").1).unwrap();
    let m = &tags["models"][0];
    assert_eq!(m["name"], format!("{MODEL}:latest"));
    assert_eq!(m["details"]["format"], "gguf");
    assert_eq!(m["details"]["family"], "gpt2");
    assert_eq!(m["details"]["quantization_level"], "Q8_0");
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    let ps: Value = serde_json::from_str(&server.get("/api/ps").1).unwrap();
    assert_eq!(ps["models"][0]["context_length"], 128);
    let v: Value = serde_json::from_str(&server.get("/api/version").1).unwrap();
    assert!(v["version"].is_string());
    let (status, show) = server.post("/api/show", &json!({"model": MODEL}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["model_info"]["gpt2.context_length"], 256);
    assert!(show["model_info"].get("tokenizer.ggml.tokens").is_none());
    assert_eq!(show["capabilities"], json!(["completion"]));
    // Every refusal is ollama's {"error": "..."} with its status.
    let generate = |extra: Value| {
        let mut body = json!({"model": MODEL, "prompt": "x", "stream": false});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let long = "word ".repeat(200);
    for (path, body, want_status, needle) in [
        (
            "/api/generate",
            json!({"prompt": "x"}),
            400,
            "model is required",
        ),
        (
            "/api/generate",
            json!({"model": "llama3", "prompt": "x"}),
            404,
            "not found",
        ),
        ("/api/show", json!({"model": "llama3"}), 404, "not found"),
        (
            "/api/generate",
            generate(json!({"options": {"mirostat": 2}})),
            400,
            "mirostat",
        ),
        (
            "/api/generate",
            generate(json!({"options": {"no_such_option": 1}})),
            400,
            "no_such_option",
        ),
        (
            "/api/generate",
            generate(json!({"format": "json"})),
            400,
            "format",
        ),
        (
            "/api/generate",
            generate(json!({"system": "Be nice."})),
            400,
            "system",
        ),
        (
            "/api/generate",
            generate(json!({"think": true})),
            400,
            "think",
        ),
        (
            "/api/generate",
            generate(json!({"context": [1, 99999999]})),
            400,
            "context",
        ),
        (
            "/api/generate",
            generate(json!({"prompt": long, "truncate": false})),
            400,
            "exceeds the context length",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": long}], "truncate": false}),
            400,
            "truncate",
        ),
        (
            "/api/generate",
            generate(json!({"options": {"num_ctx": 1}})),
            400,
            "num_ctx",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
            400,
            "images",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}),
            400,
            "role",
        ),
        ("/api/pull", json!({"model": "gpt2"}), 501, "/api/pull"),
        ("/api/embed", json!({"model": MODEL}), 501, "embeddings"),
        ("/api/generate", json!("not an object"), 400, "JSON"),
    ] {
        let (status, _, r) = ollama(&server, path, &body);
        let msg = r[0]["error"].as_str().unwrap_or_default();
        assert_eq!(status, want_status, "{path} {body}: {r:?}");
        assert!(msg.contains(needle), "{path} {body}: {msg:?}");
    }
    // num_predict past the context ends there ("length"), as in ollama.
    let (status, _, r) = ollama(
        &server,
        "/api/generate",
        &generate(json!({"options": {"num_predict": 100000, "num_ctx": 16, "temperature": 0}})),
    );
    assert_eq!(status, 200, "{r:?}");
    assert_eq!(r[0]["done_reason"], "length");
    assert_eq!(r[0]["eval_count"], 15);
    assert!(eventually(10, || server.health()["slots_processing"] == 0));
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains("endpoint=\"/api\""), "{metrics}");
}

/// With `--context-shift`, ollama's routes cut a long prompt as ollama
/// does (the first `num_keep` tokens and the end, to the whole context but
/// one token) and shift a full context while generating (within the
/// request's `num_ctx`, smaller than a slot here): a limit past the context
/// is generated in full, and each stretch after a shift is exactly (tokens
/// and log-probabilities) what a fresh request for the shifted context gives.
#[test]
fn with_context_shift_generation_goes_past_num_ctx_as_in_ollama() {
    const N_CTX: usize = 32;
    const KEEP: usize = 4;
    let server = Server::start(&["-np", "1", "-b", "8", "--context-shift"]);
    let base = json!({"model": MODEL, "stream": false, "logprobs": true, "top_logprobs": 2});
    let generate = |extra: Value| generate(&server, &base, extra);
    let opts = |n: usize| json!({"num_ctx": N_CTX, "num_predict": n, "temperature": 0});
    let long: String = (0..40).map(|i| format!(" word{i}")).collect();
    let ids = tokens(&server, &long);
    assert!(ids.len() > N_CTX);
    let r = generate(json!({"prompt": long, "options": opts(40)}));
    let mut cut = ids[..KEEP].to_vec();
    cut.extend(&ids[ids.len() - (N_CTX - 1 - KEEP)..]);
    assert_eq!(r["prompt_eval_count"], N_CTX - 1, "{r}");
    assert_eq!(r["eval_count"], 40, "{r}");
    assert_eq!(r["done_reason"], "length");
    let context: Vec<u32> = serde_json::from_value(r["context"].clone()).unwrap();
    assert_eq!(context[..N_CTX - 1], cut[..]);
    let g = &context[N_CTX - 1..];
    let lps = r["logprobs"].as_array().unwrap();
    assert_eq!((g.len(), lps.len()), (40, 40));
    // The server's contexts, replayed with ollama's num_keep (4).
    let shifts = shifted_contexts(&cut, g, N_CTX, KEEP);
    assert!(shifts.len() >= 2, "{shifts:?}");
    for (at, c) in &shifts[..2] {
        let n = (N_CTX + 1 - c.len()).min(g.len() - at);
        let fresh = generate(json!({"context": c, "options": opts(n)}));
        let fresh_ids: Vec<u32> = serde_json::from_value(fresh["context"].clone()).unwrap();
        assert_eq!(
            fresh_ids[c.len()..],
            g[*at..at + n],
            "after the shift at {at}"
        );
        assert_eq!(
            fresh["logprobs"].as_array().unwrap()[..],
            lps[*at..at + n],
            "log-probabilities after the shift at {at}"
        );
    }
}

#[test]
fn long_prompts_are_cut_to_fit_as_ollama_cuts_them() {
    let server = Server::start(&["-np", "1"]);
    let base = json!({"model": MODEL, "stream": false});
    let generate = |extra: Value| generate(&server, &base, extra);
    let long: String = (0..40).map(|i| format!(" word{i}")).collect();
    let ids = tokens(&server, &long);
    assert!(ids.len() > 32);
    // num_ctx 32, 8 tokens asked: the first num_keep (4) tokens and the
    // last 20, so that the 8 fit.
    let opts = json!({"num_ctx": 32, "num_predict": 8, "temperature": 0});
    let r = generate(json!({"prompt": long, "options": opts}));
    let mut cut = ids[..4].to_vec();
    cut.extend(&ids[ids.len() - 20..]);
    assert_eq!(r["prompt_eval_count"], 24, "{r}");
    assert_eq!(r["eval_count"], 8, "{r}");
    let context: Vec<u32> = serde_json::from_value(r["context"].clone()).unwrap();
    assert_eq!(context[..24], cut[..]);
    // The answer is the cut prompt's: fed as a context, the same text.
    let again = generate(json!({"context": cut, "options": opts}));
    assert_eq!(again["response"], r["response"]);
    // num_keep 0 and no limit: the last half of the context.
    let opts = json!({"num_ctx": 32, "num_keep": 0, "num_predict": -1, "temperature": 0});
    let r = generate(json!({"prompt": long, "options": opts}));
    assert_eq!(r["prompt_eval_count"], 16, "{r}");
    let context: Vec<u32> = serde_json::from_value(r["context"].clone()).unwrap();
    assert_eq!(context[..16], ids[ids.len() - 16..]);
    // A prompt that fits is not cut (and runs until the context is full).
    let r = generate(json!({"context": ids[..30], "options": opts}));
    assert_eq!(
        (r["prompt_eval_count"].as_u64(), r["eval_count"].as_u64()),
        (Some(30), Some(2))
    );
    // Chat drops the oldest messages first, keeping the system message: the
    // answer is that of the conversation without them.
    let chat = |messages: Value| {
        let body = json!({"model": MODEL, "stream": false, "messages": messages,
                          "options": {"num_ctx": 48, "num_predict": 4, "temperature": 0}});
        let (status, _, r) = ollama(&server, "/api/chat", &body);
        assert_eq!(status, 200, "{body}: {r:?}");
        r[0].clone()
    };
    let m = |role: &str, text: &str| json!({"role": role, "content": text});
    let old = "an old message that will not fit any more ".repeat(3);
    let all = chat(json!([
        m("system", "Be brief."),
        m("user", &old),
        m("assistant", &old),
        m("user", "Hello there"),
        m("assistant", "Hi"),
        m("user", "How are you?")
    ]));
    let kept = chat(json!([
        m("system", "Be brief."),
        m("user", "Hello there"),
        m("assistant", "Hi"),
        m("user", "How are you?")
    ]));
    assert_eq!(all["message"], kept["message"]);
    assert_eq!(all["prompt_eval_count"], kept["prompt_eval_count"]);
    assert!(kept["prompt_eval_count"].as_u64().unwrap() <= 44, "{kept}");
}
