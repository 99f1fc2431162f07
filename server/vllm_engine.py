"""The engine on vLLM (`serve --engine vllm`): vLLM's async engine behind GenerationEngine.

Each request's input is built here, never by the client: its erasers' stacked embeddings, then
the embedding rows of its templated prompt's tokens, the layout of eraser_store.prompting
(positions count from the first eraser row; vLLM has no padding). vLLM runs the model in its
own processes; this module runs vLLM's asyncio client on one thread with its own event loop,
and each request is a task there that feeds the tokens vLLM returns through `Reply`, the same
end-of-reply rules as the built-in engine (EOS, stop strings, max_tokens, the context). vLLM
is imported only when this engine starts: without it the rest of the server works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
from pathlib import Path

import torch

from server.engine_api import EngineStopped, Failed, GenerationRequest, QueueFull, Reply
from server.settings import ServerSettings

log = logging.getLogger(__name__)

# How often the loop checks that vLLM's engine process still lives (see _watch).
WATCH_S = 0.5
DEAD = "the engine has stopped; restart the server"
SHUT_DOWN = "the server shut down before the request finished"

# KV cache on CPU when --kv-cache-gb is unset: vLLM's own default there is a share of all the
# machine's memory (--gpu-memory-utilization), which fails beside any other busy process.
CPU_KV_CACHE_GB = 4.0


def engine_args(settings: ServerSettings, dtype: torch.dtype, on_cuda: bool):
    """vLLM's AsyncEngineArgs from the server's settings."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    kv_gb = settings.kv_cache_gb or (None if on_cuda else CPU_KV_CACHE_GB)
    return AsyncEngineArgs(
        model=str(settings.carrier),
        dtype=str(dtype).removeprefix("torch."),
        enable_prompt_embeds=True,
        enable_prefix_caching=settings.prefix_caching,
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        data_parallel_size=settings.data_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_batch_size,
        kv_cache_memory_bytes=None if kv_gb is None else int(kv_gb * (1 << 30)),
        disable_log_stats=True,  # its periodic log lines; _Stats still receives the figures
    )


class VllmEngine:
    def __init__(
        self,
        args,
        tokenizer,
        embeddings: torch.Tensor,
        *,
        eos_ids: set[int],
        max_positions: int,
        max_batch_size: int,
        max_queue: int,
    ):
        self.args, self.tokenizer, self.embeddings = args, tokenizer, embeddings
        self.eos_ids, self.max_positions = eos_ids, max_positions
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self._llm = None
        self._watcher: asyncio.Task | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm", daemon=True)
        self._tasks: dict[GenerationRequest, asyncio.Task] = {}  # touched on the loop only
        self._lock = threading.Lock()
        self._in_flight = 0  # submitted, not yet ended: submit's bound, the drain's wait
        self._accepting = True
        self._stopped = False
        self.prefix_queried_tokens = self.prefix_hit_tokens = 0  # from vLLM's scheduler stats

    # ---- called from other threads

    def start(self) -> None:
        """Start vLLM (loads the model; a minute or more): raises if it cannot."""
        self._thread.start()
        try:
            self._llm = asyncio.run_coroutine_threadsafe(self._create(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    async def _create(self):
        from vllm.v1.engine.async_llm import AsyncLLM

        # Created on the loop that will run its output handler.
        llm = AsyncLLM.from_engine_args(self.args, stat_loggers=[self._stats_logger])
        self._watcher = self._loop.create_task(self._watch(llm))
        return llm

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if not self._accepting or not self.alive:
                raise EngineStopped("the server is shutting down")
            if self._in_flight >= self.max_batch_size + self.max_queue:
                raise QueueFull
            self._in_flight += 1
        self._loop.call_soon_threadsafe(self._start_task, request)

    def has_room(self) -> bool:
        return self._in_flight < self.max_batch_size + self.max_queue

    def cancel(self, request: GenerationRequest) -> None:
        request.cancelled = True
        self._loop.call_soon_threadsafe(self._cancel_task, request)  # a stopped loop: no-op

    @property
    def alive(self) -> bool:
        llm = self._llm
        return self._thread.is_alive() and llm is not None and not llm.errored

    @property
    def running(self) -> int:
        """Requests handed to vLLM, up to its batch size (vLLM schedules them)."""
        return min(self._in_flight, self.max_batch_size)

    @property
    def waiting(self) -> int:
        return max(0, self._in_flight - self.max_batch_size)

    def counters(self) -> dict[str, float]:
        return {
            "prefix_cache_queried_tokens": self.prefix_queried_tokens,
            "prefix_cache_hit_tokens": self.prefix_hit_tokens,
        }

    def shutdown(self, drain_timeout_s: float) -> None:
        with self._lock:
            self._accepting = False
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + drain_timeout_s
        while self._in_flight and time.monotonic() < deadline and self.alive:
            time.sleep(0.05)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._fail_all(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    # ---- the loop's thread

    def _start_task(self, request: GenerationRequest) -> None:
        if request.cancelled:
            self._ended()
            return
        task = self._loop.create_task(self._generate(request))
        self._tasks[request] = task
        task.add_done_callback(lambda _: (self._tasks.pop(request, None), self._ended()))

    def _ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _cancel_task(self, request: GenerationRequest) -> None:
        task = self._tasks.get(request)
        if task is not None:
            task.cancel()  # vLLM's generate() aborts the request when cancelled

    async def _fail_all(self) -> None:
        """What the drain left: cancelled (aborted in vLLM), answered 503; then vLLM stops."""
        self._watcher.cancel()
        await self._fail_tasks(SHUT_DOWN, code=None)
        self._llm.shutdown()

    async def _fail_tasks(self, message: str, code: str | None) -> None:
        left = {r: t for r, t in self._tasks.items() if not t.done()}
        for task in left.values():
            task.cancel()
        await asyncio.gather(*left.values(), return_exceptions=True)
        for request in left:
            request.sink(Failed(message, status=503, code=code))

    async def _watch(self, llm) -> None:
        """Once vLLM's engine process has died (killed, out of memory), fail what still waits on
        it: vLLM fails the requests it holds then, but one it took in after that would wait for
        ever."""
        while True:
            await asyncio.sleep(WATCH_S)
            if llm.errored:
                await self._fail_tasks(DEAD, code="failed")

    async def _generate(self, request: GenerationRequest) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        position = request.prefix_len + len(request.prompt_ids)  # of the first reply token
        reply = Reply(request, self.tokenizer, self.eos_ids, position)
        try:
            remaining = request.deadline - time.monotonic()
            async with asyncio.timeout(None if math.isinf(request.deadline) else remaining):
                await self._run(request, reply)
        except TimeoutError:
            request.sink(Failed("the request ran past its time limit", status=504))
        except EngineDeadError:
            request.sink(Failed(DEAD, 503, "failed"))
        except asyncio.CancelledError:
            raise  # the client went away, or _fail_tasks answers it
        except Exception:
            log.exception("generation failed")
            request.sink(Failed("generation failed; see the server log"))

    async def _run(self, request: GenerationRequest, reply: Reply) -> None:
        ids = torch.tensor(request.prompt_ids)
        embeds = self.embeddings[ids]
        if request.prefix is not None:
            embeds = torch.cat([request.prefix.to(embeds.dtype), embeds])
        stream = self._llm.generate(
            {"prompt_embeds": embeds}, self._sampling(request), uuid.uuid4().hex
        )
        # Closing the stream early (a stop string, or cancelled) aborts the request in vLLM.
        async with contextlib.aclosing(stream):
            async for out in stream:
                for token in out.outputs[0].token_ids:
                    if reply.take(token, self.max_positions):
                        return
                if out.finished:  # vLLM stopped where Reply did not (not expected): say so
                    reply.end("stop" if out.outputs[0].finish_reason == "stop" else "length")
                    return

    def _sampling(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        return SamplingParams(
            temperature=0.0 if p.greedy else p.temperature,
            top_p=1.0 if p.greedy else p.top_p,
            seed=p.seed,
            max_tokens=p.max_tokens,
            ignore_eos=p.ignore_eos,
            # Reply decides where the reply ends; vLLM only stops at the same tokens.
            stop_token_ids=[] if p.ignore_eos else sorted(self.eos_ids),
            detokenize=False,  # Reply's TextStream makes the text, as in the built-in engine
            output_kind=RequestOutputKind.DELTA,
        )

    def _stats_logger(self, vllm_config, engine_index: int = 0):
        """A vLLM stat logger (its StatLoggerFactory signature) that counts the prefix cache."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        engine = self

        class Stats(StatLoggerBase):
            def __init__(self, *_):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
                if scheduler_stats is not None:
                    cache = scheduler_stats.prefix_cache_stats
                    engine.prefix_queried_tokens += cache.queries
                    engine.prefix_hit_tokens += cache.hits

            def log_engine_initialized(self):
                pass

        return Stats()


def build(settings: ServerSettings):
    """(LoadedModel, VllmEngine) for these settings, vLLM not started yet."""
    from server.model_loader import load_front, load_input_embeddings, pick_dtype

    on_cuda = torch.cuda.is_available()
    dtype = pick_dtype(settings.dtype, torch.device("cuda" if on_cuda else "cpu"))
    carrier = Path(settings.carrier)
    loaded = load_front(carrier, dtype, settings.max_model_len)
    engine = VllmEngine(
        engine_args(settings, dtype, on_cuda),
        loaded.tokenizer,
        load_input_embeddings(carrier, dtype),
        eos_ids=loaded.eos_ids,
        max_positions=loaded.max_positions,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
    )
    return loaded, engine
