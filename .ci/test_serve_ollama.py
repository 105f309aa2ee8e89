"""`gptq serve`'s ollama API driven by the official `ollama` Python client:
generate and chat (whole and streamed) equal to `gptq complete`, `context`
continuation, options, logprobs, list/show/ps, the client's errors for
refusals, several clients at once, and the API key through the client's
headers. Run by .ci/run after `cargo test` (which builds target/debug/gptq).
"""

from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest

from gptq_serve import Server, complete, complete_ids

MODEL = "trained-small-q8_0.gguf"
PROMPTS = [
    "The old house stood",
    "It was a dark and stormy night; the rain",
    "Hello, my dog is cute",
    "She opened the letter and",
]
GREEDY = {"temperature": 0, "num_predict": 20}


@pytest.fixture(scope="module")
def server():
    s = Server("-np", "2")
    yield s
    s.stop()


def client(server, **kw):
    return ollama.Client(host=server.base, timeout=120, **kw)


def test_generate_equals_gptq_complete_whole_and_streamed(server):
    c = client(server)
    for p in PROMPTS[:2]:
        text, ids = complete_ids(p, 20)
        r = c.generate(model=MODEL, prompt=p, options=GREEDY)
        assert r.response == text
        assert r.done and r.done_reason in ("stop", "length")
        assert r.eval_count == len(ids)
        assert list(r.context[-len(ids):]) == ids
        pieces = list(c.generate(model=MODEL, prompt=p, options=GREEDY, stream=True))
        assert "".join(x.response for x in pieces) == text
        assert pieces[-1].done and not any(x.done for x in pieces[:-1])
        assert pieces[-1].context == r.context


def test_context_continues_a_generation(server):
    c = client(server)
    p = PROMPTS[2]
    first = c.generate(model=MODEL, prompt=p, options={"temperature": 0, "num_predict": 10})
    more = c.generate(model=MODEL, prompt="", context=first.context,
                      options={"temperature": 0, "num_predict": 10})
    assert first.response + more.response == complete(p, 20)


def test_chat_whole_and_streamed(server):
    c = client(server)
    messages = [{"role": "system", "content": "A conversation."},
                {"role": "user", "content": "Where is the house?"}]
    want = complete("A conversation.\n\nUser: Where is the house?\nAssistant:", 20)
    want = want.split("\nUser:")[0].lstrip()
    r = c.chat(model=MODEL, messages=messages, options=GREEDY)
    assert r.message.role == "assistant"
    assert r.message.content == want
    pieces = list(c.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert "".join(x.message.content for x in pieces) == want
    assert pieces[-1].done_reason == r.done_reason


def test_options_and_logprobs(server):
    c = client(server)
    p = PROMPTS[3]
    # Penalties through ollama's options equal gptq complete's flags.
    text, _ = complete_ids(p, 20, "--presence-penalty", "0.6", "--frequency-penalty", "0.3")
    opts = dict(GREEDY, presence_penalty=0.6, frequency_penalty=0.3)
    assert c.generate(model=MODEL, prompt=p, options=opts).response == text
    stop = complete(p, 20)[5:9]
    r = c.generate(model=MODEL, prompt=p, options=dict(GREEDY, stop=[stop]))
    assert stop not in r.response and r.done_reason == "stop"
    r = c.generate(model=MODEL, prompt=p, options=GREEDY, logprobs=True, top_logprobs=2)
    assert len(r.logprobs) == r.eval_count
    assert all(len(lp.top_logprobs) == 2 and lp.top_logprobs[0].token == lp.token for lp in r.logprobs)


def test_list_show_ps(server):
    c = client(server)
    models = c.list().models
    assert [m.model for m in models] == [MODEL + ":latest"]
    assert models[0].details.format == "gguf" and models[0].details.quantization_level == "Q8_0"
    assert models[0].size > 0 and models[0].modified_at is not None
    s = c.show(MODEL)
    assert s.modelinfo["general.architecture"] == "gpt2"
    assert s.capabilities == ["completion"]
    ps = c.ps().models
    assert ps[0].name == MODEL + ":latest" and ps[0].context_length == 256


def test_refusals_raise_the_clients_error(server):
    c = client(server)
    cases = [
        (lambda: c.generate(model="llama3", prompt="x"), 404, "not found"),
        (lambda: c.generate(model=MODEL, prompt="x", options={"mirostat": 1}), 400, "mirostat"),
        (lambda: c.generate(model=MODEL, prompt="x", format="json"), 400, "format"),
        (lambda: c.chat(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[
            {"type": "function", "function": {"name": "f"}}]), 400, "tools"),
        (lambda: c.pull("gpt2"), 501, "pull"),
        (lambda: c.embed(model=MODEL, input="x"), 501, "embeddings"),
    ]
    for call, status, needle in cases:
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == status, e.value
        assert needle in e.value.error, e.value.error
    # The server is still up.
    assert c.generate(model=MODEL, prompt="x", options={"num_predict": 2}).done


def test_a_prompt_longer_than_the_context_is_cut_to_fit(server):
    # As ollama does: the start (num_keep tokens) and the end are kept, with
    # room for the answer; no error.
    c = client(server)
    r = c.generate(model=MODEL, prompt="word " * 300, options={"num_predict": 4, "temperature": 0})
    assert r.done and r.eval_count == 4 and r.prompt_eval_count == 256 - 4, r
    r = c.chat(model=MODEL, messages=[{"role": "user", "content": "word " * 300}],
               options={"num_ctx": 64, "num_predict": 4})
    assert r.done and r.prompt_eval_count == 60, r


def test_more_clients_than_slots_each_equal_solo(server):
    def one(p):
        return client(server).generate(model=MODEL, prompt=p, options=GREEDY).response

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(one, PROMPTS + PROMPTS[:2]))
    assert got == [complete(p, 20) for p in PROMPTS + PROMPTS[:2]]


def test_api_key_through_the_clients_headers():
    s = Server("-np", "1", "--api-key", "sekret")
    try:
        with pytest.raises(ollama.ResponseError) as e:
            client(s).generate(model=MODEL, prompt="x", options={"num_predict": 2})
        assert e.value.status_code == 401
        ok = client(s, headers={"Authorization": "Bearer sekret"})
        assert ok.generate(model=MODEL, prompt="x", options={"num_predict": 2}).done
    finally:
        s.stop()
