"""`gptq serve` driven by the official `openai` Python client (and plain
HTTP where the client has no call): greedy equality with `gptq complete`,
streaming, chat, logprobs, errors, the API key, a dropped stream, a bounded
load test with more clients than slots, and SIGTERM in the middle of a
stream. Run by .ci/run after `cargo test` (which builds target/debug/gptq).
"""

import json
import math
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

import gptq_serve
from gptq_serve import complete, complete_ids, until

PROMPTS = [
    "The old house stood",
    "It was a dark and stormy night; the rain",
    "Hello, my dog is cute",
    "She opened the letter and",
    "In the morning the village",
    "He looked at the sea",
]


class Server(gptq_serve.Server):
    """The server, and an `openai` client of it."""

    def client(self, key="none", **kw):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


@pytest.fixture(scope="module")
def server():
    s = Server("-np", "2", "--max-queue", "32")
    yield s
    s.stop()


def test_greedy_completion_equals_gptq_complete(server):
    c = server.client()
    for p in PROMPTS[:2]:
        r = c.completions.create(model="gptq", prompt=p, max_tokens=20, temperature=0)
        assert r.object == "text_completion"
        assert r.choices[0].text == complete(p, 20)
        assert r.usage.completion_tokens <= 20 and r.usage.prompt_tokens > 0


def test_penalties_and_logit_bias_equal_gptq_complete(server):
    """OpenAI's presence_penalty, frequency_penalty and logit_bias, through
    the client, give what `gptq complete` gives with the same flags (a bias
    of -100 against -inf: the token is out either way)."""
    c = server.client()
    p = PROMPTS[3]
    _, plain = complete_ids(p, 20)
    first, second = plain[0], plain[1]
    text, ids = complete_ids(p, 20, "--presence-penalty", "0.6", "--frequency-penalty", "0.3",
                             "-l", f"{first}-inf", "-l", f"{second}+2")
    assert first not in ids and ids != plain
    for chat in (False, True):
        kw = dict(model="gptq", max_tokens=20, temperature=0, presence_penalty=0.6,
                  frequency_penalty=0.3, logit_bias={str(first): -100, str(second): 2})
        if chat:
            r = c.chat.completions.create(messages=[{"role": "user", "content": p}], **kw)
            assert r.choices[0].message.content
        else:
            r = c.completions.create(prompt=p, **kw)
            assert r.choices[0].text == text
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="gptq", prompt=p, max_tokens=4, logit_bias={"not-an-id": 1})
    assert "logit_bias" in str(e.value)


def test_streamed_pieces_concatenate_to_the_text(server):
    c = server.client()
    p = PROMPTS[2]
    whole = c.completions.create(model="gptq", prompt=p, max_tokens=24, temperature=0).choices[0].text
    pieces, usage = [], None
    for chunk in c.completions.create(model="gptq", prompt=p, max_tokens=24, temperature=0, stream=True,
                                      stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == whole
    assert usage is not None and usage.completion_tokens > 0


def test_chat_and_its_stream(server):
    c = server.client()
    msgs = [{"role": "system", "content": "A conversation."}, {"role": "user", "content": "Where is the house?"}]
    r = c.chat.completions.create(model="gptq", messages=msgs, max_tokens=20, temperature=0)
    answer = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant"
    want = complete("A conversation.\n\nUser: Where is the house?\nAssistant:", 20).split("\nUser:")[0].lstrip()
    assert answer == want
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model="gptq", messages=msgs, max_tokens=20, temperature=0, stream=True)
        if ch.choices
    )
    assert streamed == answer
    # n choices with a seed: reproducible.
    a = c.chat.completions.create(model="gptq", messages=msgs, max_tokens=8, temperature=1.0, seed=7, n=2)
    b = c.chat.completions.create(model="gptq", messages=msgs, max_tokens=8, temperature=1.0, seed=7, n=2)
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    assert len(a.choices) == 2


def test_logprobs_shapes_and_consistency(server):
    c = server.client()
    r = c.completions.create(model="gptq", prompt=PROMPTS[3], max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 3
        assert abs(max(top.values()) - chosen) < 1e-6  # greedy takes the most likely
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5
    # The same log-probabilities from llama-server's endpoint.
    req = urllib.request.Request(
        server.base + "/completion",
        data=json.dumps({"prompt": PROMPTS[3], "n_predict": 5, "temperature": 0, "n_probs": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        probs = json.load(resp)["completion_probabilities"]
    assert [round(p["logprob"], 5) for p in probs] == [round(v, 5) for v in lp.token_logprobs]
    r = c.chat.completions.create(model="gptq", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                  temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_echo_scores_the_prompt_as_evaluation_harnesses_ask(server):
    """lm-evaluation-harness's loglikelihood request (echo, logprobs=1,
    max_tokens=0 or 1, token ids as the prompt): the prompt comes back with
    each token's log-probability; scoring a greedy continuation gives the
    log-probabilities its generation reported, and greedy tokens are the
    top alternative."""
    c = server.client()
    text, ids = complete_ids(PROMPTS[1], 8)
    gen = c.completions.create(model="gptq", prompt=PROMPTS[1], max_tokens=8, temperature=0, logprobs=1)
    gen_lps = gen.choices[0].logprobs.token_logprobs
    req = urllib.request.Request(server.base + "/tokenize", data=json.dumps({"content": PROMPTS[1]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        prompt_ids = json.load(resp)["tokens"]
    for max_tokens in (0, 1):
        r = c.completions.create(model="gptq", prompt=prompt_ids + ids, echo=True, logprobs=1,
                                 max_tokens=max_tokens, temperature=0)
        ch = r.choices[0]
        assert ch.text.startswith(PROMPTS[1] + text)
        lp = ch.logprobs
        assert len(lp.token_logprobs) == len(prompt_ids) + len(ids) + max_tokens
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        scored = lp.token_logprobs[len(prompt_ids):len(prompt_ids) + len(ids)]
        # Read as one prompt instead of token by token, the 8-bit quantized
        # activations round a little differently (2e-3 seen here).
        assert all(abs(a - b) < 1e-2 for a, b in zip(scored, gen_lps)), [a - b for a, b in zip(scored, gen_lps)]
        for k in range(len(prompt_ids), len(prompt_ids) + len(ids)):
            top = lp.top_logprobs[k]
            assert max(top, key=top.get) == lp.tokens[k]
    assert r.usage.completion_tokens == 1
    # A batch of token-id prompts, as the harness sends them: one choice each.
    r = c.completions.create(model="gptq", prompt=[prompt_ids, ids], echo=True, logprobs=1,
                             max_tokens=1, temperature=0)
    assert [ch.text.startswith(t) for ch, t in zip(r.choices, (PROMPTS[1], text))] == [True, True]
    assert [len(ch.logprobs.tokens) for ch in r.choices] == [len(prompt_ids) + 1, len(ids) + 1]


def test_errors_are_openai_errors(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="gptq", prompt="x", max_tokens=100000)
    assert e.value.status_code == 400 and "context" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="gptq", prompt="x", temperature=-3)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gptq", messages=[])
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="gptq", prompt="x", logprobs=50)
    with pytest.raises(openai.NotFoundError):
        c.get("/nowhere", cast_to=object)
    assert server.get_json("/health")["status"] == "ok"


def test_models_and_metrics(server):
    models = server.client().models.list()
    assert models.data[0].id == "trained-small-q8_0.gguf"
    text = server.get_text("/metrics")
    for name in ("gptq_requests_total", "gptq_tokens_predicted_total", "gptq_predicted_tokens_seconds",
                 "gptq_slots_busy", "gptq_requests_deferred"):
        assert name in text


def test_a_dropped_stream_frees_its_slot(server):
    c = server.client()
    stream = c.completions.create(model="gptq", prompt="Once upon a time", max_tokens=250, temperature=0,
                                  stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    assert server.get_json("/health")["slots_processing"] >= 1
    stream.close()
    assert until(lambda: server.get_json("/health")["slots_processing"] == 0)


def test_load_more_clients_than_slots_each_equal_solo(server):
    c = server.client()
    solo = {p: c.completions.create(model="gptq", prompt=p, max_tokens=16, temperature=0,
                                    extra_body={"cache_prompt": False}).choices[0].text for p in PROMPTS}
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(12)]

    def one(p):
        return p, c.completions.create(model="gptq", prompt=p, max_tokens=16, temperature=0).choices[0].text

    start = time.time()
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, jobs))
    assert time.time() - start < 120
    for p, text in results:
        assert text == solo[p], p


def test_context_shift_takes_prompts_and_budgets_past_the_context():
    """With --context-shift, a prompt longer than the context is cut and a
    budget past it is generated in full (llama-server's behaviour), through
    the client, streamed or not alike; without it both are refused."""
    long_prompt = " ".join(PROMPTS) * 3
    extra = {"ignore_eos": True, "n_keep": 4}
    s = Server("-np", "1", "-c", "64", "--context-shift")
    try:
        c = s.client()
        r = c.completions.create(model="gptq", prompt=long_prompt, max_tokens=150, temperature=0, extra_body=extra)
        assert r.usage.completion_tokens == 150
        assert r.choices[0].finish_reason == "length"
        assert 0 < r.usage.prompt_tokens < 64
        pieces = c.completions.create(
            model="gptq", prompt=long_prompt, max_tokens=150, temperature=0, stream=True, extra_body=extra
        )
        assert "".join(ch.choices[0].text for ch in pieces if ch.choices) == r.choices[0].text
    finally:
        s.stop()
    s = Server("-np", "1", "-c", "64")
    try:
        c = s.client()
        for prompt, n in [(long_prompt, 8), (PROMPTS[0], 150)]:
            with pytest.raises(openai.BadRequestError) as e:
                c.completions.create(model="gptq", prompt=prompt, max_tokens=n, temperature=0)
            assert e.value.code == "context_length_exceeded"
    finally:
        s.stop()


def test_api_key():
    s = Server("-np", "1", "--api-key", "sekret")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").completions.create(model="gptq", prompt="x", max_tokens=1)
        r = s.client("sekret").completions.create(model="gptq", prompt="x", max_tokens=1)
        assert len(r.choices) == 1
        assert s.get_json("/health")["status"] == "ok"
    finally:
        s.stop()


def test_sigterm_mid_stream_ends_it_and_exits_zero():
    # One thread and 20 alternatives per token: the stream lasts long enough
    # (hundreds of ms) that the signal lands while it runs.
    s = Server("-np", "1", "-t", "1")
    try:
        stream = s.client().completions.create(model="gptq", prompt="Once upon a time", max_tokens=250,
                                               temperature=0, stream=True, logprobs=20,
                                               extra_body={"ignore_eos": True})
        it = iter(stream)
        next(it)
        s.proc.send_signal(signal.SIGTERM)
        with pytest.raises(openai.APIError):
            for _ in it:
                pass
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.stop()
