"""Step-level batching: one thread runs the model; requests join and leave the batch at any step.

Each step admits waiting requests (one prefill forward for all of them, giving their first
token), joins their KV cache to the running batch, then decodes one token for every running row.
A row is `[pad][eraser embeddings...][prompt][reply so far]` with explicit positions, so its
greedy output is the same whatever else shares the batch. Results go back through each request's
`sink`, called on the engine thread.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from eraser_store.prompting import positions, prefixed_rows
from server.engine_api import EngineStopped, Failed, GenerationRequest, QueueFull, Reply
from server.kv_batch import KV, BatchCache
from server.prefix_cache import PrefixKVCache
from server.sampling import next_tokens

log = logging.getLogger(__name__)


@dataclass
class _Row:
    reply: Reply
    generator: torch.Generator | None
    last_token: int = -1

    @property
    def request(self) -> GenerationRequest:
        return self.reply.request


class Engine:
    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch_size: int,
        max_queue: int,
        eos_ids: set[int],
        max_positions: int,
        prefix_cache_bytes: int = 256 << 20,
        threads: int | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.eos_ids, self.max_positions = eos_ids, max_positions
        self.device = model.device
        self.threads = threads  # None: torch's default
        self._embed = model.get_input_embeddings()
        # Only the last position's logits are needed; older transformers lack the argument.
        params = inspect.signature(model.forward).parameters
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers 5.24 renamed `past_key_values` to `cache`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._waiting: deque[GenerationRequest] = deque()
        self._rows: list[_Row] = []
        # Taken off the queue, prefill under way: in neither _waiting nor _rows, yet they hold
        # batch slots (submit's bound) and are in flight (shutdown's drain).
        self._admitting = 0
        self._cache: BatchCache | None = None
        self.prefix_kv = PrefixKVCache(prefix_cache_bytes)
        self.decode_steps = self.decode_rows = self.prefills = 0  # for /metrics
        # Eraser tokens of requests with a prefix key, and those whose KV was cached.
        self.prefix_queried_tokens = self.prefix_hit_tokens = 0
        self._cv = threading.Condition()
        self._accepting = True
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)

    # ---- called from other threads

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        with self._cv:
            if not self._accepting or not self._thread.is_alive():
                raise EngineStopped("the server is shutting down")
            if self._full():
                raise QueueFull
            self._waiting.append(request)
            self._cv.notify()

    def has_room(self) -> bool:
        """Whether `submit` would queue a request now: lets a caller refuse one before paying
        for its tokenizing (submit still decides)."""
        with self._cv:
            return not self._full()

    def _full(self) -> bool:
        free_slots = self.max_batch_size - len(self._rows) - self._admitting
        return len(self._waiting) >= self.max_queue + max(0, free_slots)

    def cancel(self, request: GenerationRequest) -> None:
        request.cancelled = True
        with self._cv:
            if request in self._waiting:  # frees its queue place now, not when a slot frees
                self._waiting.remove(request)
            self._cv.notify()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._rows)

    def counters(self) -> dict[str, float]:
        return {
            "decode_steps": self.decode_steps,
            "decode_rows": self.decode_rows,
            "prefills": self.prefills,
            "prefix_cache_queried_tokens": self.prefix_queried_tokens,
            "prefix_cache_hit_tokens": self.prefix_hit_tokens,
        }

    def shutdown(self, drain_timeout_s: float) -> None:
        """Stop taking requests, let those in flight finish for up to `drain_timeout_s`, stop."""
        with self._cv:
            self._accepting = False
            deadline = time.monotonic() + drain_timeout_s
            while (self._rows or self._waiting or self._admitting) and time.monotonic() < deadline:
                self._cv.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            self._stop = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join()
        # Taken under the lock: the server's drain timer and the lifespan may both stop the
        # engine, and each request gets one 503.
        with self._cv:
            left = [r.request for r in self._rows] + list(self._waiting)
            self._rows, self._waiting = [], deque()
        for request in left:
            request.sink(Failed("the server shut down before the request finished", status=503))

    # ---- the engine thread

    def _loop(self) -> None:
        if self.threads is not None:
            # Set on this thread: OpenMP keeps the thread count per calling thread.
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self._cv:
                    self._cv.notify_all()  # wakes shutdown() waiting for the drain
                    while not (self._stop or self._waiting or self._rows):
                        self._cv.wait()
                    if self._stop:
                        return
                    admitted = []
                    while self._waiting and len(self._rows) + len(admitted) < self.max_batch_size:
                        request = self._waiting.popleft()
                        if not request.cancelled:
                            admitted.append(request)
                    self._admitting = len(admitted)
                try:
                    self._step(admitted)
                except Exception:  # keep serving: fail only the requests of this batch
                    log.exception("engine step failed")
                    running = [row.request for row in self._rows]
                    new = [r for r in admitted if r not in running and not r.cancelled]
                    for request in running + new:
                        request.sink(Failed("generation failed; see the server log"))
                    self._rows, self._cache = [], None
                    with self._cv:
                        self._admitting = 0

    def _step(self, admitted: list[GenerationRequest]) -> None:
        now = time.monotonic()
        for row in self._rows:
            if row.request.deadline <= now and not row.request.cancelled:
                row.request.cancelled = True
                row.request.sink(Failed("the request ran past its time limit", status=504))
        self._drop_rows([i for i, row in enumerate(self._rows) if row.request.cancelled])
        if admitted:
            try:
                rows, new, logits = self._prefill(admitted)
                # join() builds a new cache (the running rows padded to the new width): where a
                # long prompt runs out of memory too, so it is guarded with the prefill.
                joined = new if self._cache is None else self._cache.join(new)
            except Exception:
                # Out of memory on a long prompt, say: the running rows and their cache are
                # untouched until _admit, so only the new requests fail.
                log.exception("prefill failed")
                for request in admitted:
                    request.cancelled = True  # answered: not failed again below
                    request.sink(Failed("generation failed; see the server log"))
                with self._cv:
                    self._admitting = 0
            else:
                self._admit(rows, joined, logits)
        if self._rows:
            self._decode()

    def _prefill(
        self, requests: list[GenerationRequest]
    ) -> tuple[list[_Row], BatchCache, torch.Tensor]:
        """One forward over the new rows' prompts, on top of their erasers' cached KV: their
        rows, cache and last logits, for _admit (the running batch is not touched).

        Rows are `[pad][eraser][pad][prompt]`: the prefix KV (computed alone at positions
        0..n-1, which is what it is inside any sequence, attention being causal) is left-padded
        to the longest prefix, the prompts to the longest prompt; the mask hides both paddings
        and each prompt's positions continue from its own prefix.
        """
        prefix_lens = [r.prefix_len for r in requests]
        cache, prefix_mask = self._stacked_prefixes(requests, max(prefix_lens))
        prompts = [self._embed(torch.tensor(r.prompt_ids, device=self.device)) for r in requests]
        embeds, prompt_mask, prompt_pos = prefixed_rows(prompts, [None] * len(requests))
        mask = torch.cat([prefix_mask, prompt_mask], dim=1)
        offsets = torch.tensor(prefix_lens, device=self.device).unsqueeze(1)
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=prompt_pos + offsets,
            use_cache=True,
            **{self._cache_arg: cache},
            **self._last_logits,
        )
        rows = [
            _Row(Reply(r, self.tokenizer, self.eos_ids, n), r.params.generator(self.device))
            for r, n in zip(requests, mask.sum(1).tolist(), strict=True)
        ]
        self.prefills += 1
        return rows, BatchCache(cache, mask), out.logits[:, -1]  # the forward filled the cache

    def _admit(self, rows: list[_Row], joined: BatchCache, logits: torch.Tensor) -> None:
        """Take the prefilled rows into the running batch (`joined`: its cache with theirs) and
        emit their first tokens."""
        self._cache = joined
        with self._cv:
            self._rows += rows
            self._admitting = 0
        self._emit(rows, logits)

    def _stacked_prefixes(
        self, requests: list[GenerationRequest], width: int
    ) -> tuple[DynamicCache, torch.Tensor]:
        mask = torch.zeros(len(requests), width, dtype=torch.long, device=self.device)
        if width == 0:
            return DynamicCache(), mask
        kvs = [self._prefix_kv_of(r) for r in requests]
        template = next(kv for kv in kvs if kv is not None)
        stacked = []
        for layer, (k0, v0) in enumerate(template):
            k = k0.new_zeros(len(requests), k0.shape[1], width, k0.shape[3])
            v = v0.new_zeros(len(requests), v0.shape[1], width, v0.shape[3])
            for i, kv in enumerate(kvs):
                if kv is not None:
                    n = kv[layer][0].shape[2]
                    k[i, :, width - n :] = kv[layer][0][0]
                    v[i, :, width - n :] = kv[layer][1][0]
            stacked.append((k, v))
        for i, r in enumerate(requests):
            if r.prefix_len:
                mask[i, width - r.prefix_len :] = 1
        return DynamicCache(ddp_cache_data=stacked), mask

    def _prefix_kv_of(self, request: GenerationRequest) -> KV | None:
        if request.prefix is None:
            return None
        key = request.prefix_key
        n = request.prefix_len
        cached = None if key is None else self.prefix_kv.get(key)
        if key is not None:
            self.prefix_queried_tokens += n
        if cached is not None:
            self.prefix_hit_tokens += n
            return cached
        cache = DynamicCache()
        self.model(
            inputs_embeds=request.prefix.unsqueeze(0),
            position_ids=torch.arange(n, device=self.device).unsqueeze(0),
            use_cache=True,
            **{self._cache_arg: cache},
            **self._last_logits,
        )
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if key is not None:
            self.prefix_kv.put(key, kv)
        return kv

    def _decode(self) -> None:
        input_ids = torch.tensor([[row.last_token] for row in self._rows], device=self.device)
        batch = self._cache
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(self._rows), 1)], dim=1)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions(mask)[:, -1:],
            use_cache=True,
            **{self._cache_arg: batch.cache},  # appended to in place
            **self._last_logits,
        )
        batch.mask = mask
        self.decode_steps += 1
        self.decode_rows += len(self._rows)
        self._emit(self._rows, out.logits[:, -1])

    def _emit(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample each row's next token, hand out its text, and retire rows that are done."""
        # Rows are the last len(rows) of the batch: prefilled rows were appended to it.
        offset = len(self._rows) - len(rows)
        tokens = next_tokens(logits, [r.request.params for r in rows], [r.generator for r in rows])
        done = []
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.last_token = token
            if row.reply.take(token, self.max_positions):
                done.append(offset + i)
        self._drop_rows(done)

    def _drop_rows(self, indices: list[int]) -> None:
        if not indices:
            return
        gone = set(indices)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        self._cache = self._cache.select(keep) if keep else None
