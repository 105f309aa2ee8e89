#!/usr/bin/env python3
"""Aggregate decode throughput of an HTTP completion server under N
concurrent streams: the same client for `gptq serve` and llama-server.

Each of N clients sends one streamed `POST /completion` (llama-server's
native endpoint, which both servers speak) with its own prompt, greedy,
`ignore_eos`, `n_predict` tokens; the clients start together. Reported:
aggregate generated tokens/s (all tokens after each stream's first, over
the time from the first first-token to the last token), the mean time to
first token, and each stream's own tokens/s.

    python3 benches/serve_load.py --url http://127.0.0.1:8080 --clients 1 2 4 8 16
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

WORDS = ("the old house stood on the hill above the village and the rain came down "
         "over the fields while the children ran home from school").split()


def prompt(i):
    # Distinct prompts of the same length, so that no prefix is shared.
    return " ".join([f"Story {i}:"] + WORDS[i % 7:] + WORDS[: i % 7])


def one(url, i, n_predict, out):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"prompt": prompt(i), "n_predict": n_predict, "temperature": 0,
                       "ignore_eos": True, "stream": True, "cache_prompt": False})
    t0 = time.perf_counter()
    conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    times = []
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    d = json.loads(line[6:])
                    if d.get("stop"):
                        continue
                    times.append(time.perf_counter())
    conn.close()
    out[i] = (t0, times)


def run(url, n, n_predict):
    out = {}
    threads = [threading.Thread(target=one, args=(url, i, n_predict, out)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [out[i][1][0] for i in range(n)]
    lasts = [out[i][1][-1] for i in range(n)]
    tokens = sum(len(out[i][1]) - 1 for i in range(n))
    agg = tokens / (max(lasts) - min(firsts))
    ttft = statistics.mean(out[i][1][0] - out[i][0] for i in range(n))
    per = [(len(out[i][1]) - 1) / (out[i][1][-1] - out[i][1][0]) for i in range(n)]
    return {"clients": n, "tokens": tokens + n, "agg_tps": round(agg, 1), "ttft_ms": round(ttft * 1e3, 1),
            "stream_tps_min": round(min(per), 1), "stream_tps_mean": round(statistics.mean(per), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    run(a.url, 1, 8)  # warm-up
    for n in a.clients:
        r = run(a.url, n, a.n_predict)
        r["label"] = a.label
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
