"""A `gptq serve` process for the tests driven by real clients
(test_serve_openai.py, test_serve_ollama.py), and `gptq complete`'s greedy
output to compare with. `cargo test` builds target/debug/gptq first."""

import json
import os
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPTQ = os.environ.get("GPTQ_BIN", os.path.join(ROOT, "target", "debug", "gptq"))


class Server:
    """`gptq serve -t 2 EXTRA...` on a free port; `base` is its URL."""

    def __init__(self, *extra):
        env = {k: v for k, v in os.environ.items() if k not in ("GPTQ_MODEL", "GPTQ_KERNEL")}
        self.proc = subprocess.Popen(
            [GPTQ, "serve", "--port", "0", *([] if "-t" in extra else ["-t", "2"]), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.time() + 60
        self.base = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("gptq serve exited before listening")
            if "http://" in line:
                self.base = "http://" + line.split("http://")[1].split()[0]
                break
        assert self.base, "no address"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def get_json(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return json.load(r)

    def get_text(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def complete_ids(prompt, n, *flags):
    """`gptq complete`'s greedy text and token ids, with more flags."""
    out = subprocess.run(
        [GPTQ, "complete", "-t", "2", "-p", prompt, "-n", str(n), "--temp", "0", "--print-ids", *flags],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout
    text, ids = out[:-1].rsplit("\n", 1)
    return text, [int(i) for i in ids.split(",") if i]


def complete(prompt, n):
    """`gptq complete`'s greedy text."""
    return complete_ids(prompt, n)[0]


def until(pred, secs=15):
    end = time.time() + secs
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False
