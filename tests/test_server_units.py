"""Server parts on their own, no trained model: text streaming and stop strings, API keys, the
batch KV cache, sampling, and the engine's queue bound."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from server.auth import ApiKey, KeyFileError, KeyRing, bearer_token, token_matches
from server.detokenizer import TextStream
from server.engine import Engine
from server.engine_api import (
    Delta,
    EngineStopped,
    Failed,
    Finished,
    GenerationRequest,
    QueueFull,
)
from server.errors import APIError
from server.kv_batch import BatchCache
from server.sampling import SamplingParams, next_tokens
from server.serving import CHAT, Prepared, submit
from server.state import ServerState
from training.models.tiny import byte_tokenizer, tiny_model

# ---- TextStream


class CharTokenizer:
    """One token per character (id = code point); ids listed in `special` decode to nothing."""

    special = {0}

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i in self.special))


class PieceTokenizer:
    """Tokens are whole strings, to put a stop string inside one token or across several."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(self.pieces[i] for i in ids)


def feed(stream: TextStream, ids) -> list[tuple[str, bool]]:
    """Push ids until a stop string is reached; return what each push handed out."""
    out = []
    for i in ids:
        out.append(stream.push(i))
        if out[-1][1]:
            break
    return out


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_text_streams_token_by_token_without_stops():
    stream = TextStream(CharTokenizer())
    assert feed(stream, chars("hello")) == [(c, False) for c in "hello"]
    assert stream.push(0) == ("", False)  # a special token adds no text
    assert stream.flush() == ""


def test_text_is_cut_at_a_stop_string():
    stream = TextStream(CharTokenizer(), stop=["END"])
    out = feed(stream, chars("abcENDxyz"))
    assert [t for t, _ in out] == ["a", "b", "c", "", "", ""]
    assert [s for _, s in out] == [False] * 5 + [True]  # stopped at the "D", nothing after
    assert stream.flush() == ""
    assert stream.text == "abc"


def test_a_stop_string_prefix_is_held_back_then_released():
    stream = TextStream(CharTokenizer(), stop=["END"])
    assert feed(stream, chars("aEN")) == [("a", False), ("", False), ("", False)]
    assert stream.push(ord("x")) == ("ENx", False)  # "ENx" can no longer become "END"
    assert stream.push(ord("E")) == ("", False)
    assert stream.flush() == "E"  # the reply ended: what was held back is handed out
    assert stream.flush() == ""


def test_a_stop_string_across_tokens_and_inside_one():
    tok = PieceTokenizer(["ab", "cE", "ND", "zz", "xENDy"])
    stream = TextStream(tok, stop=["END"])
    assert feed(stream, [0, 1, 2, 3]) == [("ab", False), ("c", False), ("", True)]
    stream = TextStream(tok, stop=["END"])
    assert feed(stream, [4]) == [("x", True)]


@pytest.mark.parametrize("stops", [["cd", "bcd"], ["bcd", "cd"]])
def test_the_earliest_stop_string_wins(stops):
    tok = PieceTokenizer(["abcde"])
    stream = TextStream(tok, stop=stops)
    assert feed(stream, [0]) == [("a", True)]
    # One character at a time: "lo" completes before "world" could.
    stream = TextStream(CharTokenizer(), stop=["world", "lo"])
    out = feed(stream, chars("hello world"))
    assert "".join(t for t, _ in out) == "hel" and out[-1][1]


def test_an_incomplete_utf8_sequence_is_held_back():
    tok = byte_tokenizer()
    ids = tok.encode("aé!", add_special_tokens=False)
    assert len(ids) == 4  # "é" is two byte tokens
    stream = TextStream(tok)
    assert feed(stream, ids) == [("a", False), ("", False), ("é", False), ("!", False)]
    stream = TextStream(tok)
    feed(stream, ids[:2])
    assert "\ufffd" in stream.flush()  # a reply cut mid-character still hands out its text


def test_incremental_decoding_hands_out_exactly_the_whole_decode():
    """Window by window, the deltas add up to decoding the whole reply at once, multi-byte
    characters and invalid bytes included, while decoding each token O(1) times."""
    tok = byte_tokenizer()
    decoded = []
    real_decode = tok.decode

    def counting_decode(ids, **kw):
        decoded.append(len(ids))
        return real_decode(ids, **kw)

    tok.decode = counting_decode
    gen = torch.Generator().manual_seed(0)
    text_ids = tok.encode("Grüße, 世界! naïve café ", add_special_tokens=False) * 20
    noise = torch.randint(0, 256, (60,), generator=gen).tolist()  # bytes that may not decode
    for ids in (text_ids, noise + text_ids, text_ids + noise):
        stream = TextStream(tok)
        decoded.clear()
        out = "".join(stream.push(i)[0] for i in ids) + stream.flush()
        assert out == real_decode(ids, skip_special_tokens=True) == stream.text
        assert sum(decoded) < 12 * len(ids)  # the old whole-reply decode: len(ids)**2 / 2


def test_a_stop_string_ending_in_a_split_character_leaks_nothing():
    tok = byte_tokenizer()
    ids = tok.encode("a的人b", add_special_tokens=False)  # 人: three byte tokens
    stream = TextStream(tok, stop=["的人"])
    out = feed(stream, ids)
    assert "".join(t for t, _ in out) == "a" and out[-1][1]
    assert stream.text == "a"


# ---- API keys


def write_keys(tmp_path, keys) -> object:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


APP = {"name": "app", "key": "sk-app-0123456789", "erasers": ["b"]}
RED = {"name": "red", "key": "sk-red-0123456789", "erasers": "*"}


def test_key_file_loads_and_authenticates(tmp_path):
    ring = KeyRing.load(write_keys(tmp_path, [APP, RED, {"name": "none", "key": "k" * 8}]))
    app = ring.authenticate(APP["key"])
    assert isinstance(app, ApiKey) and app.name == "app"
    assert app.may_use("b") and not app.may_use("a")
    red = ring.authenticate(RED["key"])
    assert red.name == "red" and red.erasers is None and red.may_use("anything")
    assert not ring.authenticate("k" * 8).may_use("b")  # no erasers listed: none allowed
    for wrong in (None, "", "sk-app-012345678", APP["key"] + " ", APP["key"].upper()):
        assert ring.authenticate(wrong) is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not JSON"),
        ("[]", "expected"),
        ("{}", "expected"),
        ('{"keys": []}', "not empty"),
        ('{"keys": {"name": "x"}}', "expected"),
        (json.dumps({"keys": ["sk-app-0123456789"]}), "expected an object"),
        (json.dumps({"keys": [APP | {"role": "admin"}]}), "expected an object"),
        (json.dumps({"keys": [APP, RED | {"name": "app"}]}), "'name' must be a unique"),
        (json.dumps({"keys": [APP | {"name": ""}]}), "'name' must be a unique"),
        (json.dumps({"keys": [APP, RED | {"key": APP["key"]}]}), "same key appears twice"),
        (json.dumps({"keys": [APP | {"key": "short"}]}), "at least 8 characters"),
        (json.dumps({"keys": [APP | {"key": 12345678}]}), "at least 8 characters"),
        (json.dumps({"keys": [APP | {"erasers": "b"}]}), "'erasers' must be a list"),
        (json.dumps({"keys": [APP | {"erasers": [1]}]}), "'erasers' must be a list"),
        (json.dumps({"keys": [APP | {"erasers": {"b": True}}]}), "'erasers' must be a list"),
    ],
)
def test_bad_key_files_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message) as e:
        KeyRing.load(path)
    assert str(path) in str(e.value)
    assert APP["key"] not in str(e.value)  # a key never appears in an error message


def test_a_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read API key file .*nope.json"):
        KeyRing.load(tmp_path / "nope.json")


def test_a_bad_entry_is_named_by_its_index(tmp_path):
    path = write_keys(tmp_path, [APP, RED | {"key": "short"}])
    with pytest.raises(KeyFileError, match=r"keys\[1\]"):
        KeyRing.load(path)


@pytest.mark.parametrize(
    "header, token",
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("abc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_token_matches():
    assert token_matches("admin-secret", "admin-secret")
    assert not token_matches("admin-secre", "admin-secret")
    assert not token_matches(None, "admin-secret")
    assert not token_matches("", "admin-secret")


# ---- BatchCache


def random_kv(mask: torch.Tensor, layers=2, heads=2, head_dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (mask.shape[0], heads, mask.shape[1], head_dim)
    kv = []
    for _ in range(layers):
        # Padding slots hold zeros (after a real prefill they hold junk the mask hides): the
        # padding that a join adds is then easy to tell from real slots.
        k = torch.randn(shape, generator=g) * mask[:, None, :, None]
        v = torch.randn(shape, generator=g) * mask[:, None, :, None]
        kv.append((k, v))
    return kv


def cache(mask_rows, seed=0) -> BatchCache:
    mask = torch.tensor(mask_rows, dtype=torch.long)
    return BatchCache.from_kv(random_kv(mask, seed=seed), mask)


def test_a_batch_cache_holds_the_models_cache():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    kv = random_kv(mask, seed=5)
    c = BatchCache.from_kv(kv, mask)
    assert isinstance(c.cache, DynamicCache) and c.width == 3
    for (k, v), (k0, v0) in zip(c.kv, kv, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_join_left_pads_to_the_wider_cache():
    a = cache([[0, 1, 1], [1, 1, 1]], seed=1)
    b = cache([[0, 0, 1, 1, 1]], seed=2)
    joined = a.join(b)
    assert joined.width == 5
    assert joined.mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    for (k, v), (ka, va), (kb, vb) in zip(joined.kv, a.kv, b.kv, strict=True):
        assert k.shape == v.shape == (3, 2, 5, 3)
        assert torch.equal(k[:2, :, 2:], ka) and torch.equal(v[:2, :, 2:], va)
        assert not k[:2, :, :2].any() and not v[:2, :, :2].any()
        assert torch.equal(k[2:], kb) and torch.equal(v[2:], vb)
    # The other way round: the new rows come last, whichever is wider.
    assert b.join(a).mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]


def test_select_keeps_rows_in_order_and_trims_shared_padding():
    c = cache([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], seed=3)
    picked = c.select([2, 0])
    assert picked.mask.tolist() == [[1, 1, 1], [0, 1, 1]]  # two all-padding columns dropped
    for (k, v), (k0, v0) in zip(picked.kv, c.kv, strict=True):
        assert k.shape == v.shape == (2, 2, 3, 3)
        assert torch.equal(k[0], k0[2, :, 2:]) and torch.equal(k[1], k0[0, :, 2:])
        assert torch.equal(v[0], v0[2, :, 2:]) and torch.equal(v[1], v0[0, :, 2:])
    # Keeping the row that has no padding keeps the full width.
    kept = c.select([1, 0])
    assert kept.width == 5 and kept.mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]


def test_trimming_drops_only_leading_all_padding_columns():
    c = cache([[0, 0, 1, 0, 1], [0, 0, 0, 0, 1]], seed=4)
    t = c.select([0, 1])
    assert t.mask.tolist() == [[1, 0, 1], [0, 0, 1]]  # the inner all-padding column stays
    for (k, v), (k0, v0) in zip(t.kv, c.kv, strict=True):
        assert torch.equal(k, k0[:, :, 2:]) and torch.equal(v, v0[:, :, 2:])
    assert cache([[1, 1], [0, 1]]).select([0, 1]).mask.tolist() == [[1, 1], [0, 1]]


# ---- sampling


def logits(rows=3, vocab=50, seed=0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def draws(row_logits, params: SamplingParams, n: int = 40) -> list[int]:
    gen = params.generator()
    return [next_tokens(row_logits, [params], [gen])[0] for _ in range(n)]


def test_greedy_is_argmax():
    x = logits()
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    assert greedy.generator() is None
    tokens = next_tokens(x, [greedy] * 3, [None] * 3)
    assert tokens == x.argmax(-1).tolist()


def test_the_same_seed_draws_the_same_tokens():
    x = logits(rows=1)
    p = SamplingParams(max_tokens=1, temperature=1.5, seed=1234)
    first = draws(x, p)
    assert draws(x, p) == first
    assert len(set(first)) > 1  # it really samples
    assert draws(x, SamplingParams(max_tokens=1, temperature=1.5, seed=99)) != first


def test_a_rows_draws_do_not_depend_on_the_batch():
    x = logits(rows=2, seed=1)
    a = SamplingParams(max_tokens=1, temperature=1.0, seed=7)
    b = SamplingParams(max_tokens=1, temperature=1.0, seed=8)
    alone = draws(x[:1], a, n=20)
    ga, gb = a.generator(), b.generator()
    together = [next_tokens(x, [a, b], [ga, gb])[0] for _ in range(20)]
    assert together == alone


def test_a_batch_is_sampled_with_one_copy_to_the_host(monkeypatch):
    """Per-row .item()/.tolist() calls would each wait for the device (a CUDA sync per row)."""
    x = logits(rows=4, seed=3)
    params = [
        SamplingParams(max_tokens=1, temperature=0.0),
        SamplingParams(max_tokens=1, temperature=1.0, seed=1),
        SamplingParams(max_tokens=1, temperature=0.7, top_p=0.9, seed=2),
        SamplingParams(max_tokens=1, temperature=1.3, seed=3),
    ]
    generators = [p.generator() for p in params]
    copies = []
    for method in ("tolist", "item", "__int__", "__bool__", "__index__"):
        real = getattr(torch.Tensor, method)

        def counted(self, *a, _real=real, _name=method, **kw):
            copies.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, method, counted)
    tokens = next_tokens(x, params, generators)
    monkeypatch.undo()
    assert copies == ["tolist"]
    assert len(tokens) == 4 and tokens[0] == int(x[0].argmax())


def test_non_finite_logits_fall_back_to_the_argmax():
    x = logits(rows=2, seed=4)
    x[1, 5] = float("inf")
    p = SamplingParams(max_tokens=1, temperature=1.0, seed=1)
    assert next_tokens(x, [p, p], [p.generator(), p.generator()])[1] == 5


def test_a_tiny_top_p_keeps_only_the_top_token():
    x = logits(rows=1, seed=2)
    top = int(x.argmax())
    p = SamplingParams(max_tokens=1, temperature=2.0, top_p=1e-6, seed=3)
    assert set(draws(x, p, n=100)) == {top}


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    x = torch.tensor([[0.5, 0.3, 0.2]]).log()
    p = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.75, seed=5)
    assert set(draws(x, p, n=300)) == {0, 1}
    p = SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, seed=5)
    assert set(draws(x, p, n=300)) == {0, 1, 2}


# ---- engine: the queue bound and the drain count requests being admitted


class GatedModel:
    """The tiny model, with its first forward held until the test lets it go."""

    def __init__(self, model):
        self.model = model
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, **kwargs):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10), "the test did not release the forward"
        return self.model(**kwargs)


@pytest.fixture
def gated_engine():
    model, tok = tiny_model("llama")
    engine = Engine(
        model,
        tok,
        max_batch_size=1,
        max_queue=0,
        eos_ids=set(),
        max_positions=512,
    )
    gate = GatedModel(model)
    engine.model = gate
    engine.start()
    yield engine, gate
    gate.release.set()
    engine.shutdown(0)


def request(events: list, max_tokens: int = 3) -> GenerationRequest:
    return GenerationRequest([5, 6, 7], None, SamplingParams(max_tokens=max_tokens), events.append)


def test_a_request_being_prefilled_holds_its_slot(gated_engine):
    engine, gate = gated_engine
    first: list = []
    engine.submit(request(first))
    assert gate.entered.wait(10)  # taken off the queue, its prefill under way
    assert engine.waiting == 0
    with pytest.raises(QueueFull):
        engine.submit(request([]))
    gate.release.set()


def test_shutdown_lets_a_request_being_prefilled_finish(gated_engine):
    engine, gate = gated_engine
    events: list = []
    engine.submit(request(events))
    assert gate.entered.wait(10)
    done = threading.Thread(target=engine.shutdown, args=(10,))
    done.start()
    deadline = time.monotonic() + 10
    while engine._accepting:  # shutdown has begun (it now waits for the drain, or stopped)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.release.set()
    done.join(20)
    assert not done.is_alive()
    assert not any(isinstance(e, Failed) for e in events), events
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 3


# ---- engine: eraser prefixes' KV is computed once per key and gives the same tokens


class CountingModel:
    def __init__(self, model):
        self.model, self.prefix_forwards = model, 0

    def __call__(self, **kwargs):
        if "input_ids" not in kwargs and kwargs.get("attention_mask") is None:
            self.prefix_forwards += 1  # a prefix alone: embeddings, no mask
        return self.model(**kwargs)


def test_prefix_kv_cache_keeps_recent_sets_within_its_bytes():
    from server.prefix_cache import PrefixKVCache, kv_bytes

    def kv(tokens):  # 2 layers of (keys, values), 1 KiB a token
        return [(torch.zeros(1, 2, tokens, 32), torch.zeros(1, 2, tokens, 32))] * 2

    assert kv_bytes(kv(1)) == 1024
    cache = PrefixKVCache(max_bytes=10 * 1024)
    cache.put("a", kv(4))
    cache.put("b", kv(4))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", kv(4))  # 12 KiB: the least recent ("b") goes
    assert (cache.get("b"), len(cache), cache.bytes) == (None, 2, 8 * 1024)
    cache.put("huge", kv(11))  # over the budget alone: not kept, nothing evicted for it
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", kv(2))  # replaced, counted once
    assert cache.bytes == 6 * 1024


def test_prefix_kv_is_reused_per_key_and_changes_nothing():
    model, tok = tiny_model("llama")
    engine = Engine(model, tok, max_batch_size=4, max_queue=8, eos_ids=set(), max_positions=512)
    counting = CountingModel(model)
    engine.model = counting
    engine.start()
    prefix = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def tokens(prompt, key):
        events: list = []
        done = threading.Event()

        def sink(e):
            events.append(e)
            if not isinstance(e, Delta):
                done.set()

        params = SamplingParams(max_tokens=8)
        engine.submit(GenerationRequest(prompt, prefix, params, sink, prefix_key=key))
        assert done.wait(30)
        return "".join(e.text for e in events if isinstance(e, Delta))

    try:
        fresh = [tokens(p, None) for p in ([5, 6, 7], [9, 10, 11, 12])]
        assert counting.prefix_forwards == 2
        cached = [tokens(p, "k") for p in ([5, 6, 7], [9, 10, 11, 12])]
        assert counting.prefix_forwards == 3  # once for key "k"
        assert cached == fresh
        # The hit rate on /metrics: eraser tokens of keyed requests, and those found cached.
        counters = engine.counters()
        assert counters["prefix_cache_queried_tokens"] == 2 * 5
        assert counters["prefix_cache_hit_tokens"] == 5
    finally:
        engine.shutdown(0)


# ---- engine: a failing step, a cancelled waiting request


class FailingModel:
    def __init__(self, model):
        self.model, self.fail = model, True

    def __call__(self, **kwargs):
        if self.fail:
            raise RuntimeError("out of memory (simulated)")
        return self.model(**kwargs)


def test_a_failed_step_fails_its_rows_and_the_engine_serves_on():
    model, tok = tiny_model("llama")
    engine = Engine(model, tok, max_batch_size=4, max_queue=4, eos_ids=set(), max_positions=512)
    failing = FailingModel(model)
    engine.model = failing
    prefix = torch.zeros(2, model.config.hidden_size)
    first, second = [], []
    engine.start()
    try:
        # Two requests equal field by field (same prompt, equal prefix tensors): the failure
        # path must tell them apart without comparing tensors.
        for events in (first, second):
            engine.submit(
                GenerationRequest([5, 6], prefix.clone(), SamplingParams(2), events.append)
            )
        wait_for_events(first, second)
        assert isinstance(first[-1], Failed) and isinstance(second[-1], Failed)
        assert "see the server log" in first[-1].message  # no internals to the client
        assert engine.alive
        failing.fail = False
        third: list = []
        engine.submit(GenerationRequest([5, 6], None, SamplingParams(2), third.append))
        wait_for_events(third)
        assert isinstance(third[-1], Finished)
    finally:
        engine.shutdown(0)


def small_eraser(out, embeddings: torch.Tensor, name: str):
    """An eraser directory for the store tests (one layer, one head, no channels)."""
    from eraser_store import write_eraser

    return write_eraser(
        out,
        embeddings,
        name=name,
        behavior="b",
        carrier_fingerprint="sha256:" + "a" * 64,
        num_layers=1,
        num_attention_heads=1,
        channel_count=0,
        training={},
    )


@pytest.mark.parametrize("still_registered", [False, True])
def test_an_eraser_whose_files_vanish_during_its_first_read(tmp_path, still_registered):
    """Removed meanwhile (its record gone too): 404, as if never there. Files gone but still
    registered: a damaged eraser, 500."""
    from eraser_store import EraserStore
    from server.erasers import ErasersOnDevice

    store = EraserStore(tmp_path / "store")
    eraser = small_eraser(tmp_path / "e", torch.zeros(2, 8), "gone")
    store.add(eraser)

    def read_while_removed(name, version=None):
        if not still_registered:
            store.remove(name)
        raise FileNotFoundError(f"{name}: no such file")

    store.get = read_while_removed
    with pytest.raises(APIError) as refused:
        on_device = ErasersOnDevice(store, torch.device("cpu"), torch.float32, max_bytes=1 << 20)
        on_device.resolve(["gone"], None)
    want = (500, "eraser_corrupted") if still_registered else (404, "eraser_not_found")
    assert (refused.value.status, refused.value.code) == want


def test_the_device_cache_keeps_the_most_recently_used_versions(tmp_path):
    """An eraser registered again and again must not pile its versions up on the device, and
    versions in use stay cached, within the cache's bytes."""
    ENTRY = 2 * 8 * 4  # one (2, 8) fp32 eraser
    from eraser_store import EraserStore
    from server.erasers import ErasersOnDevice

    store = EraserStore(tmp_path / "store")
    for version in (1, 2, 3):
        store.add(small_eraser(tmp_path / f"e{version}", torch.full((2, 8), float(version)), "e"))
    on_device = ErasersOnDevice(store, torch.device("cpu"), torch.float32, max_bytes=2 * ENTRY)
    for ref, value, cached in (
        ("e@1", 1, [1]),
        ("e", 3, [1, 3]),
        ("e@1", 1, [3, 1]),  # a hit: now the most recent
        ("e@2", 2, [1, 2]),  # 3 was the least recently used
    ):
        (resolved,) = on_device.resolve([ref], None)
        assert torch.equal(resolved.embeddings, torch.full((2, 8), float(value)))
        assert [version for _, version, _ in on_device._cache] == cached
        assert on_device.cached_bytes == len(cached) * ENTRY


def test_an_eraser_removed_while_it_is_read_is_not_cached_again(tmp_path):
    """The request that was reading it still gets it (it resolved before the removal), but the
    cache must not keep a removed eraser's tensor."""
    from eraser_store import EraserStore
    from server.erasers import ErasersOnDevice

    store = EraserStore(tmp_path / "store")
    store.add(small_eraser(tmp_path / "e", torch.ones(2, 8), "e"))
    on_device = ErasersOnDevice(store, torch.device("cpu"), torch.float32, max_bytes=1 << 20)
    read = store.get

    def read_then_removed(name, version=None):
        eraser = read(name, version)
        store.remove(name)
        on_device.forget(name)  # what the admin route does once the store has removed it
        return eraser

    store.get = read_then_removed
    (resolved,) = on_device.resolve(["e"], None)
    assert torch.equal(resolved.embeddings, torch.ones(2, 8))
    assert not on_device._cache
    store.get = read
    store.add(small_eraser(tmp_path / "e2", torch.full((2, 8), 2.0), "e"))
    (resolved,) = on_device.resolve(["e"], None)  # registered again: cached as usual
    assert torch.equal(resolved.embeddings, torch.full((2, 8), 2.0))
    assert len(on_device._cache) == 1


def test_a_stream_dropped_before_its_first_chunk_cancels_its_job():
    """The client left before the response started: the stream's generator never runs (nor its
    `finally`), yet the job must be cancelled, or its row generates to the end."""
    from starlette.requests import ClientDisconnect

    from server.serving import JobStream

    cancelled, started = [], []
    job = SimpleNamespace(cancel=lambda: cancelled.append(True))

    async def content():
        started.append(True)
        yield "data: {}\n\n"

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise OSError("the client is gone")

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        asyncio.run(JobStream(job, content())(scope, receive, send))
    assert cancelled and not started


class FailsOnLongPrompts:
    """Prefills of prompts of 6+ tokens fail (out of memory on a long prompt); all else runs."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] >= 6:
            raise RuntimeError("out of memory (simulated)")
        return self.model(**kwargs)


@pytest.mark.parametrize("fails_in", ["forward", "join"])
def test_a_failed_prefill_fails_only_the_new_requests(monkeypatch, fails_in):
    """The running batch and its cache are untouched until a prefill and its join into the
    running cache succeed: a request already decoding finishes with the same text as alone."""
    model, tok = tiny_model("llama")
    if fails_in == "join":
        real_join = BatchCache.join

        def join(self, other):
            if other.mask.shape[1] >= 6:  # the long prompt's rows
                raise RuntimeError("out of memory (simulated)")
            return real_join(self, other)

        monkeypatch.setattr(BatchCache, "join", join)
    texts = []
    for crowded in (False, True):
        engine = Engine(model, tok, max_batch_size=4, max_queue=4, eos_ids=set(), max_positions=512)
        engine.model = FailsOnLongPrompts(model) if fails_in == "forward" else model
        running, failing = [], []
        engine.start()
        try:
            # Long enough that it is still decoding when the next request joins, however
            # late this thread runs again on a busy machine.
            engine.submit(GenerationRequest([5, 6, 7], None, SamplingParams(200), running.append))
            if crowded:
                while not running:  # decoding
                    time.sleep(0.01)
                engine.submit(GenerationRequest([5] * 8, None, SamplingParams(3), failing.append))
                wait_for_events(failing)
                assert len(failing) == 1 and isinstance(failing[0], Failed)
            wait_for_events(running)
        finally:
            engine.shutdown(0)
        assert isinstance(running[-1], Finished) and running[-1].completion_tokens == 200
        texts.append("".join(e.text for e in running if isinstance(e, Delta)))
    assert texts[0] == texts[1]


def wait_for_events(*lists, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(lst and not isinstance(lst[-1], Delta) for lst in lists):
        assert time.monotonic() < deadline, lists
        time.sleep(0.01)


def test_cancelling_a_waiting_request_frees_its_queue_place(gated_engine):
    engine, gate = gated_engine  # one slot, no queue beyond it
    engine.submit(request([]))
    assert gate.entered.wait(10)  # the slot is taken (its prefill is held)
    engine.max_queue = 1
    waiting = request([])
    engine.submit(waiting)
    with pytest.raises(QueueFull):
        engine.submit(request([]))
    engine.cancel(waiting)
    assert engine.waiting == 0
    engine.submit(request([]))  # its place is free again
    gate.release.set()


def test_a_failed_load_or_a_dead_engine_is_a_failure_loading_is_not():
    state = ServerState(settings=None, store=None, keyring=None, metrics=None)
    assert state.failure is None and not state.ready  # still loading
    state.engine = SimpleNamespace(alive=True)
    assert state.failure is None and state.ready
    state.engine = SimpleNamespace(alive=False)
    assert state.failure == "the engine thread has stopped" and not state.ready
    failed = ServerState(
        settings=None, store=None, keyring=None, metrics=None, load_error="OSError"
    )
    assert failed.failure == "OSError" and not failed.ready


def test_requests_to_a_process_that_cannot_serve_say_so_without_a_retry_hint():
    loading = ServerState(settings=None, store=None, keyring=None, metrics=None)
    with pytest.raises(APIError) as raised:
        loading.require_ready()
    assert raised.value.code == "not_ready" and raised.value.headers == {"Retry-After": "5"}
    dead = ServerState(settings=None, store=None, keyring=None, metrics=None)
    dead.engine = SimpleNamespace(alive=False)
    failed = ServerState(
        settings=None, store=None, keyring=None, metrics=None, load_error="OSError"
    )
    for state, cause in ((dead, "engine thread has stopped"), (failed, "failed to load: OSError")):
        with pytest.raises(APIError) as raised:
            state.require_ready()
        assert (raised.value.status, raised.value.code) == (503, "failed")
        assert cause in raised.value.message and raised.value.headers is None


def test_an_engine_that_dies_between_the_check_and_the_submit_is_a_failure():
    class DyingEngine:
        alive = True

        def submit(self, request):
            self.alive = False
            raise EngineStopped("the server is shutting down")

    state = ServerState(
        settings=SimpleNamespace(request_timeout_s=5), store=None, keyring=None, metrics=None
    )
    state.engine = DyingEngine()
    prepared = Prepared([], [1, 2], None, SamplingParams(max_tokens=1))

    async def submit_once():
        submit(state, prepared, CHAT)

    with pytest.raises(APIError) as raised:
        asyncio.run(submit_once())
    assert raised.value.code == "failed" and "engine thread" in raised.value.message


# ---- engine threads


def test_the_engine_runs_with_the_threads_it_was_given():
    """OpenMP keeps its thread count per calling thread: set where the model runs."""
    model, tok = tiny_model("llama")
    seen = []
    model.register_forward_pre_hook(
        lambda *_: seen.append((threading.current_thread().name, torch.get_num_threads()))
    )
    engine = Engine(
        model, tok, max_batch_size=2, max_queue=2, eos_ids=set(), max_positions=512, threads=1
    )
    engine.start()
    done = threading.Event()
    sink = lambda e: done.set() if not isinstance(e, Delta) else None  # noqa: E731
    engine.submit(GenerationRequest([1, 2, 3], None, SamplingParams(max_tokens=2), sink))
    assert done.wait(30)
    engine.shutdown(0)
    assert seen and set(seen) == {("engine", 1)}


@pytest.mark.parametrize("cores, want", [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_default_engine_threads_leave_a_core_free(monkeypatch, cores, want):
    from server.engines import engine_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert engine_threads(0) == want
    assert engine_threads(3) == 3


# ---- choosing the engine


@pytest.mark.parametrize(
    "choice, installed, want",
    [
        ("auto", False, "builtin"),
        ("auto", True, "vllm"),  # on CPU too: it measured faster there
        ("builtin", True, "builtin"),
        ("vllm", True, "vllm"),
    ],
)
def test_engine_choice(monkeypatch, choice, installed, want):
    from server import engines

    monkeypatch.setattr(engines, "vllm_installed", lambda: installed)
    assert engines.resolve(choice) == want


def test_vllm_asked_for_where_it_is_missing_is_a_clear_error(monkeypatch):
    from server import engines

    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    with pytest.raises(engines.EngineUnavailable, match="needs vLLM"):
        engines.resolve("vllm")


def test_vllm_settings_pass_through_the_command_line():
    import argparse

    from server.cli import add_command
    from server.settings import ServerSettings

    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(
        ["serve", "--carrier", "c", "--store", "s", "--engine", "vllm", "--max-num-seqs", "8"]
        + ["--prefix-caching", "false", "--tensor-parallel-size", "2", "--kv-cache-gb", "1.5"]
    )
    given = {k: v for k, v in vars(args).items() if k in ServerSettings.model_fields}
    settings = ServerSettings(**given)
    assert settings.engine == "vllm" and settings.max_batch_size == 8
    assert settings.prefix_caching is False and settings.tensor_parallel_size == 2
    assert settings.kv_cache_gb == 1.5
