"""The eraser file: a directory PEFT opens as a prompt-tuning adapter, plus our own sidecar.

adapter_config.json        PEFT PromptTuningConfig (peft_type PROMPT_TUNING, CAUSAL_LM)
adapter_model.safetensors  one tensor `prompt_embeddings`, (num_virtual_tokens, hidden), fp32
eraser.json                name, behavior, carrier fingerprint, training metrics, sha256 of
                           the safetensors bytes, creation time (ISO-8601 UTC)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from eraser_store.atomic import atomic_dir

FORMAT = "sft-eraser-eraser"
FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SIDECAR_FILE = "eraser.json"
FILES = (CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE)
TENSOR_KEY = "prompt_embeddings"
DTYPE = "float32"
# Names become directory names in the store, so they are kept to a safe, portable alphabet.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# Always `fullmatch`: `$` would also match before a trailing newline ("abc\n").
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

CARRIER_MANIFEST = "carrier.json"
CARRIER_FORMAT = "sft-eraser-carrier"

# adapter_config.json: keys we write and need; values we pin.
CONFIG_KEYS = {
    "peft_type": str,
    "task_type": str,
    "num_virtual_tokens": int,
    "token_dim": int,
    "num_transformer_submodules": int,
    "num_attention_heads": int,
    "num_layers": int,
    "prompt_tuning_init": str,
    "base_model_name_or_path": (str, type(None)),
    "inference_mode": bool,
    "revision": (str, type(None)),
    "tokenizer_name_or_path": (str, type(None)),
}
CONFIG_PINNED = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM"}
# Fields PEFT itself adds when it saves a PromptTuningConfig: a config re-saved by PEFT stays valid.
PEFT_OPTIONAL_KEYS = {
    "peft_version",
    "auto_mapping",
    "modules_to_save",
    "prompt_tuning_init_text",
    "tokenizer_kwargs",
}


class EraserFormatError(ValueError):
    """An eraser (or carrier) directory that is missing, malformed, inconsistent or corrupted."""


@dataclass(frozen=True)
class EraserMeta:
    name: str
    behavior: str
    carrier_fingerprint: str
    hidden_size: int
    num_virtual_tokens: int
    dtype: str
    channel_count: int
    # Free-form metrics; excluded from the hash so that the frozen dataclass stays hashable.
    training: dict = field(hash=False)
    sha256: str
    created: str


@dataclass
class Eraser:
    meta: EraserMeta
    embeddings: torch.Tensor  # (num_virtual_tokens, hidden_size), fp32, CPU


@dataclass(frozen=True)
class CarrierRef:
    """What an eraser must match in a carrier, read without loading its weights."""

    fingerprint: str
    hidden_size: int
    max_positions: int | None = None
    """The carrier's context length (config.json); None: not stated, not checked."""


SIDECAR_KEYS = {"format", "format_version"} | {f.name for f in fields(EraserMeta)}
META_TYPES = {
    "name": str,
    "behavior": str,
    "carrier_fingerprint": str,
    "hidden_size": int,
    "num_virtual_tokens": int,
    "dtype": str,
    "channel_count": int,
    "training": dict,
    "sha256": str,
    "created": str,
}


def write_eraser(out_dir: str | os.PathLike, embeddings: torch.Tensor, **meta) -> Path:
    """Write an eraser directory; it appears at `out_dir` complete or not at all. `meta`: the
    keywords of `eraser_files`."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    contents = eraser_files(out_dir, embeddings, **meta)
    with atomic_dir(out_dir) as tmp:
        for file_name, data in contents.items():
            (tmp / file_name).write_bytes(data)
    return out_dir


def eraser_files(
    out_dir: Path,
    embeddings: torch.Tensor,
    *,
    name: str,
    behavior: str,
    carrier_fingerprint: str,
    num_layers: int,
    num_attention_heads: int,
    channel_count: int,
    training: dict,
    base_model: str | None = None,
) -> dict[str, bytes]:
    """The files of an eraser directory, checked (`out_dir` names it in errors): for a caller
    that writes them into a directory of its own (a training run's output)."""
    emb = _check_embeddings(out_dir, embeddings)
    _check_name(out_dir, name)
    if not isinstance(behavior, str) or not behavior:
        raise EraserFormatError(f"{out_dir}: behavior must be a non-empty string")
    if not isinstance(carrier_fingerprint, str) or not carrier_fingerprint:
        raise EraserFormatError(f"{out_dir}: carrier_fingerprint must be a non-empty string")
    for key, value, low in (
        ("num_layers", num_layers, 1),
        ("num_attention_heads", num_attention_heads, 1),
        ("channel_count", channel_count, 0),
    ):
        if not _is_int(value) or value < low:
            raise EraserFormatError(f"{out_dir}: {key} must be an integer >= {low}, got {value!r}")
    n, d = emb.shape
    weights = save_safetensors({TENSOR_KEY: emb}, metadata={"format": "pt"})
    meta = EraserMeta(
        name=name,
        behavior=behavior,
        carrier_fingerprint=carrier_fingerprint,
        hidden_size=d,
        num_virtual_tokens=n,
        dtype=DTYPE,
        channel_count=channel_count,
        training=training,
        sha256=hashlib.sha256(weights).hexdigest(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": n,
        "token_dim": d,
        "num_transformer_submodules": 1,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": base_model,
        "inference_mode": True,
        "revision": None,
        "tokenizer_name_or_path": None,
    }
    try:
        sidecar = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(meta)})
    except (TypeError, ValueError) as e:
        raise EraserFormatError(
            f"{out_dir}: training metrics are not JSON-serializable ({e})"
        ) from None
    return {
        CONFIG_FILE: json.dumps(config, indent=2).encode(),
        WEIGHTS_FILE: weights,
        SIDECAR_FILE: sidecar.encode(),
    }


def read_eraser(path: str | os.PathLike) -> Eraser:
    """Load and fully validate an eraser directory (raises EraserFormatError)."""
    return parse_eraser(read_files(path), path)


def read_files(path: str | os.PathLike) -> dict[str, bytes]:
    """The bytes of an eraser directory's FILES, unchecked: parse_eraser checks them."""
    path = Path(path)
    if not path.is_dir():
        raise EraserFormatError(f"{path}: no such eraser directory")
    for file_name in FILES:
        if not (path / file_name).is_file():
            raise EraserFormatError(f"{path}: missing {file_name}")
    return {f: (path / f).read_bytes() for f in FILES}


def parse_eraser(files: Mapping[str, bytes], where: str | os.PathLike) -> Eraser:
    """Fully validate an eraser given as the bytes of its FILES; `where` (its directory, or
    where a database keeps it) names it in errors. The one reader of the format."""
    config = _parse_json(files[CONFIG_FILE], f"{where}/{CONFIG_FILE}")
    sidecar = _parse_json(files[SIDECAR_FILE], f"{where}/{SIDECAR_FILE}")
    meta = _check_sidecar(f"{where}/{SIDECAR_FILE}", sidecar)
    _check_config(f"{where}/{CONFIG_FILE}", config, meta)
    weights = files[WEIGHTS_FILE]
    weights_at = f"{where}/{WEIGHTS_FILE}"
    # Hash before parsing: a flipped byte anywhere reads as corruption, not as a parse error.
    digest = hashlib.sha256(weights).hexdigest()
    if digest != meta.sha256:
        raise EraserFormatError(
            f"{weights_at}: corrupted (sha256 {digest[:12]}…, "
            f"{SIDECAR_FILE} records {meta.sha256[:12]}…)"
        )
    try:
        tensors = load_safetensors(weights)
    except Exception as e:  # safetensors raises its own error types
        raise EraserFormatError(f"{weights_at}: not a safetensors file ({e})") from None
    if set(tensors) != {TENSOR_KEY}:
        raise EraserFormatError(
            f"{weights_at}: expected exactly one tensor {TENSOR_KEY!r}, found {sorted(tensors)}"
        )
    emb = tensors[TENSOR_KEY]
    if emb.dtype != torch.float32:
        raise EraserFormatError(f"{weights_at}: dtype {emb.dtype}, expected float32")
    expected = (meta.num_virtual_tokens, meta.hidden_size)
    if tuple(emb.shape) != expected:
        raise EraserFormatError(
            f"{weights_at}: shape {tuple(emb.shape)} does not match "
            f"(num_virtual_tokens, hidden_size) = {expected} of the config and sidecar"
        )
    if not torch.isfinite(emb).all():
        raise EraserFormatError(f"{weights_at}: non-finite values (NaN or inf)")
    return Eraser(meta=meta, embeddings=emb)


def carrier_ref(carrier_dir: str | os.PathLike) -> CarrierRef:
    """Fingerprint and hidden size of a carrier directory, from its JSON files only."""
    carrier_dir = Path(carrier_dir)
    manifest_path = carrier_dir / CARRIER_MANIFEST
    if not manifest_path.is_file():
        raise EraserFormatError(f"{carrier_dir}: not a carrier directory (no {CARRIER_MANIFEST})")
    manifest = _read_json(manifest_path)
    if manifest.get("format") != CARRIER_FORMAT:
        raise EraserFormatError(
            f"{manifest_path}: not a carrier manifest (format={manifest.get('format')!r})"
        )
    fp = manifest.get("fingerprint")
    if not isinstance(fp, str) or not fp:
        raise EraserFormatError(f"{manifest_path}: missing key 'fingerprint'")
    config_path = carrier_dir / "config.json"
    if not config_path.is_file():
        raise EraserFormatError(f"{carrier_dir}: not a model directory (no config.json)")
    config = _read_json(config_path)
    # GPT-2 configs name the width n_embd.
    hidden = config.get("hidden_size", config.get("n_embd"))
    if not _is_int(hidden) or hidden < 1:
        raise EraserFormatError(f"{config_path}: no integer hidden_size (or n_embd)")
    context = config.get("max_position_embeddings", config.get("n_positions"))
    context = context if _is_int(context) and context > 0 else None
    return CarrierRef(fingerprint=fp, hidden_size=hidden, max_positions=context)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(where: Path, name) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise EraserFormatError(f"{where}: bad eraser name {name!r} ({NAME_RULE})")


def _check_embeddings(where: Path, embeddings) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor):
        raise EraserFormatError(f"{where}: embeddings must be a torch.Tensor")
    if embeddings.dim() != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise EraserFormatError(
            f"{where}: embeddings must be 2-D (num_virtual_tokens >= 1, hidden >= 1), "
            f"got shape {tuple(embeddings.shape)}"
        )
    emb = embeddings.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(emb).all():
        raise EraserFormatError(f"{where}: embeddings have non-finite values (NaN or inf)")
    return emb


def _read_json(path: Path) -> dict:
    return _parse_json(path.read_bytes(), path)


def _parse_json(data: bytes, path: str | Path) -> dict:
    try:
        data = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EraserFormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:  # nesting deeper than the parser's stack: an upload can send it
        raise EraserFormatError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise EraserFormatError(f"{path}: expected a JSON object")
    return data


def _check_keys(path: str | Path, data: dict, required: set[str], allowed: set[str]) -> None:
    missing = sorted(required - data.keys())
    if missing:
        raise EraserFormatError(f"{path}: missing key(s) {', '.join(missing)}")
    extra = sorted(data.keys() - allowed)
    if extra:
        raise EraserFormatError(f"{path}: unexpected key(s) {', '.join(extra)}")


def _check_types(path: str | Path, data: dict, types: dict) -> None:
    for key, expected in types.items():
        value = data[key]
        # bool is an int subclass; a JSON true is never a valid count.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            raise EraserFormatError(f"{path}: {key} has the wrong type ({value!r})")


def _check_sidecar(path: str | Path, sidecar: dict) -> EraserMeta:
    if sidecar.get("format") != FORMAT:
        raise EraserFormatError(f"{path}: not an eraser sidecar (format={sidecar.get('format')!r})")
    if sidecar.get("format_version") != FORMAT_VERSION:
        raise EraserFormatError(
            f"{path}: unsupported format_version {sidecar.get('format_version')!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    _check_keys(path, sidecar, SIDECAR_KEYS, SIDECAR_KEYS)
    _check_types(path, sidecar, META_TYPES)
    meta = EraserMeta(**{k: sidecar[k] for k in META_TYPES})
    _check_name(path, meta.name)
    if not meta.behavior or not meta.carrier_fingerprint:
        raise EraserFormatError(f"{path}: behavior and carrier_fingerprint must be non-empty")
    if meta.dtype != DTYPE:
        raise EraserFormatError(f"{path}: dtype {meta.dtype!r}, expected {DTYPE!r}")
    if meta.num_virtual_tokens < 1 or meta.hidden_size < 1 or meta.channel_count < 0:
        raise EraserFormatError(f"{path}: sizes must be positive (channel_count >= 0)")
    if not re.fullmatch(r"[0-9a-f]{64}", meta.sha256):
        raise EraserFormatError(f"{path}: sha256 is not 64 lowercase hex digits")
    try:
        datetime.fromisoformat(meta.created)
    except ValueError:
        raise EraserFormatError(f"{path}: created is not an ISO-8601 time") from None
    return meta


def _check_config(path: str | Path, config: dict, meta: EraserMeta) -> None:
    if config.get("peft_type") != "PROMPT_TUNING":
        raise EraserFormatError(
            f"{path}: peft_type {config.get('peft_type')!r}, expected 'PROMPT_TUNING'"
        )
    _check_keys(path, config, set(CONFIG_KEYS), set(CONFIG_KEYS) | PEFT_OPTIONAL_KEYS)
    _check_types(path, config, CONFIG_KEYS)
    for key, value in CONFIG_PINNED.items():
        if config[key] != value:
            raise EraserFormatError(f"{path}: {key} {config[key]!r}, expected {value!r}")
    # PEFT builds num_virtual_tokens × num_transformer_submodules rows; a causal LM uses one.
    if config["num_transformer_submodules"] != 1:
        raise EraserFormatError(f"{path}: num_transformer_submodules must be 1")
    if (config["num_virtual_tokens"], config["token_dim"]) != (
        meta.num_virtual_tokens,
        meta.hidden_size,
    ):
        raise EraserFormatError(
            f"{path}: num_virtual_tokens/token_dim ({config['num_virtual_tokens']}, "
            f"{config['token_dim']}) do not match {SIDECAR_FILE} "
            f"({meta.num_virtual_tokens}, {meta.hidden_size})"
        )
