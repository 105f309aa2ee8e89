//! An HTTP/1.1 client for `gptq serve` on loopback, written on raw sockets
//! so that tests see exactly what goes over the wire: a server started on a
//! free port, requests on fresh connections, chunked bodies, SSE payloads,
//! and `gptq complete`'s greedy output to compare with.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join("trained-small-q8_0.gguf")
}

/// A running `gptq serve`; killed when dropped.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gptq"))
            .env_remove("GPTQ_MODEL")
            .env_remove("GPTQ_KERNEL")
            .args(["serve", "--port", "0"])
            .args(if extra.contains(&"-t") {
                &[][..]
            } else {
                &["-t", "2"][..]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gptq serve starts");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("gptq serve exited before listening");
            }
            if let Some(at) = line.find("http://") {
                let rest = &line[at + 7..];
                let end = rest.find(' ').unwrap_or(rest.len());
                break rest[..end].trim().parse().expect("address");
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        Server { child, addr }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    /// One request on a fresh connection: status, headers (lower-case
    /// names), body (de-chunked).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut s = self.connect();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        parse_response(&all)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, b) = self.raw(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, _, b) = self.raw("GET", path, &[], b"");
        (status, String::from_utf8_lossy(&b).into_owned())
    }

    /// A streamed request: the `data:` payloads in order.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let (status, head, b) = self.raw(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
        assert!(head.contains("text/event-stream"), "{head}");
        sse_data(&String::from_utf8_lossy(&b))
    }

    pub fn health(&self) -> Value {
        serde_json::from_str(&self.get("/health").1).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_response(all: &[u8]) -> (u16, String, Vec<u8>) {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = all[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// `gptq complete`'s greedy text and ids.
pub fn complete(prompt: &str, n: usize) -> (String, Vec<u32>) {
    complete_with(prompt, n, &[])
}

/// [`complete`] with more flags.
pub fn complete_with(prompt: &str, n: usize, extra: &[&str]) -> (String, Vec<u32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_gptq"))
        .env_remove("GPTQ_MODEL")
        .env_remove("GPTQ_KERNEL")
        .args([
            "complete",
            "-t",
            "2",
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--temp",
            "0",
            "--print-ids",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stdout = stdout.strip_suffix('\n').unwrap();
    let (text, ids) = stdout.rsplit_once('\n').unwrap();
    let ids = ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (text.to_string(), ids)
}

/// A JSON array of token ids (`/completion`'s `tokens`).
pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Waits until `f` holds, for at most `secs` seconds.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The contexts a shifting server runs through (llama-server's and
/// ollama's rule, half of what follows the first `n_keep` tokens dropped
/// when the context is full) while it generates `generated` after
/// `prompt` in a context of `n_ctx`: for each shift, the index in
/// `generated` of the first token sampled after it, and the context then
/// (the kept tokens, the rest, the token that did not fit).
pub fn shifted_contexts(
    prompt: &[u32],
    generated: &[u32],
    n_ctx: usize,
    n_keep: usize,
) -> Vec<(usize, Vec<u32>)> {
    let mut ctx = prompt.to_vec();
    let mut shifts = Vec::new();
    for (j, &t) in generated.iter().enumerate() {
        if ctx.len() == n_ctx {
            let drop = (n_ctx - n_keep) / 2;
            let mut c = ctx[..n_keep].to_vec();
            c.extend_from_slice(&ctx[n_keep + drop..]);
            c.push(t);
            shifts.push((j + 1, c.clone()));
            ctx = c;
        } else {
            ctx.push(t);
        }
    }
    shifts
}
