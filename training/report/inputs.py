"""What `eval report` is given, parsed and checked before any model is loaded.

Every problem found here ends the command with one `sft-eraser: error: ...` line: bad
`NAME=DIR` syntax (ConfigError), missing directories (ModelDirError), erasers that do not fit
the carrier (EraserFormatError, EraserRefused), behaviors the data lacks, a --prompts file
without its columns (DataError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eraser_store import Eraser, EraserRefused, carrier_ref, read_eraser
from training.carrier import behavior_entry, behavior_names, read_manifest
from training.checkpoint_io import ModelDirError
from training.configs import ConfigError
from training.data.schema import RETAIN, DataError, Example, load_jsonl, split_by_behavior
from training.report.external import LabelledPrompts, load_labelled


@dataclass
class ReportConfig:
    carrier: Path
    data: Path
    base: Path
    out: Path
    erasers: list[str]
    """`BEHAVIOR=ERASER_DIR`, each applied to the carrier, alone and in pairs."""
    sft: list[str] = field(default_factory=list)
    """`BEHAVIOR=SFT_MODEL_DIR`: the KL triple is measured on that model's greedy replies."""
    ablations: list[str] = field(default_factory=list)
    """`LABEL=ERASER_DIR[:MODEL_DIR]` (MODEL_DIR defaults to the carrier)."""
    prompts: Path | None = None
    """A labelled CSV or JSONL written elsewhere (e.g. XSTest): each behavior's rate per label."""
    text_column: str = "prompt"
    """The column of --prompts that holds the prompt."""
    label_column: str = "label"
    """The column of --prompts that holds the label."""
    max_new_tokens: int = 48
    batch_size: int = 16
    device: str = "auto"
    overwrite: bool = False


@dataclass
class Ablation:
    label: str
    eraser_dir: Path
    eraser: Eraser
    model_dir: Path
    on_carrier: bool

    @property
    def behavior(self) -> str:
        return self.eraser.meta.behavior


@dataclass
class ReportInputs:
    cfg: ReportConfig
    manifest: dict
    erasers: dict[str, Eraser]  # behavior -> eraser, in the order given
    eraser_dirs: dict[str, Path]
    sft: dict[str, Path]
    ablations: list[Ablation]
    behaviors: list[str]  # matrix columns: carrier behaviors with rows in the data
    triggers: dict[str, list[Example]]  # every behavior of the data
    benign: list[Example]
    external: LabelledPrompts | None  # --prompts


def parse_assignments(texts: list[str], flag: str, what: str = "NAME=DIR") -> dict[str, str]:
    """`["a=x", "b=y"]` -> `{"a": "x", "b": "y"}` in order; ConfigError on bad syntax or twice."""
    parsed: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {text!r}: expected {what}")
        if key in parsed:
            raise ConfigError(f"{flag} {key} given twice")
        parsed[key] = value
    return parsed


def split_model(value: str) -> tuple[Path, Path | None]:
    """`ERASER_DIR[:MODEL_DIR]`; a path that exists as given is taken whole (it may hold a ':')."""
    eraser, sep, model = value.rpartition(":")
    if Path(value).exists() or not sep:
        return Path(value), None
    if not eraser or not model:
        raise ConfigError(f"--ablation {value!r}: expected ERASER_DIR[:MODEL_DIR]")
    return Path(eraser), Path(model)


def require_model_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ModelDirError(f"{what} {path}: no such directory")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{what} {path}: not a model directory (no config.json)")
    return path


def hidden_size(model_dir: Path) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{model_dir / 'config.json'}: cannot read ({e})") from None
    return config.get("hidden_size", config.get("n_embd"))


def check_out(out: Path, overwrite: bool) -> None:
    """An output directory is written only where nothing would be lost without --overwrite."""
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace it)")


def _carrier_eraser(behavior: str, path: Path, manifest: dict, hidden: int) -> Eraser:
    behavior_entry(manifest, behavior)  # ModelDirError naming what the carrier holds
    eraser = read_eraser(path)
    if eraser.meta.behavior != behavior:
        raise ConfigError(
            f"--eraser {behavior}={path}: that eraser is for behavior {eraser.meta.behavior!r}"
        )
    if eraser.meta.carrier_fingerprint != manifest["fingerprint"]:
        raise EraserRefused(
            f"--eraser {behavior}={path}: trained for another model "
            f"({eraser.meta.carrier_fingerprint[:19]}…, carrier {manifest['fingerprint'][:19]}…); "
            "pass it as --ablation LABEL=DIR:MODEL_DIR"
        )
    if eraser.meta.hidden_size != hidden:
        raise EraserRefused(
            f"{path}: hidden size {eraser.meta.hidden_size}, the carrier's is {hidden}"
        )
    return eraser


def _ablation(label: str, value: str, carrier: Path, triggers: dict, data: Path) -> Ablation:
    eraser_dir, model_dir = split_model(value)
    eraser = read_eraser(eraser_dir)
    model_dir = require_model_dir(model_dir, f"--ablation {label}") if model_dir else carrier
    if eraser.meta.behavior not in triggers:
        present = ", ".join(sorted(triggers)) or "none"
        raise DataError(
            f"{data}: no rows for behavior {eraser.meta.behavior!r} of --ablation {label} "
            f"(present: {present})"
        )
    hidden = hidden_size(model_dir)
    if hidden is not None and hidden != eraser.meta.hidden_size:
        raise EraserRefused(
            f"--ablation {label}: eraser hidden size {eraser.meta.hidden_size}, "
            f"{model_dir} has {hidden}"
        )
    on_carrier = model_dir.resolve() == carrier.resolve()
    return Ablation(label, eraser_dir, eraser, model_dir, on_carrier)


def resolve_inputs(cfg: ReportConfig) -> ReportInputs:
    """Parse and check everything `cfg` names; raises the project's error types."""
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise ConfigError("--max-new-tokens and --batch-size must be at least 1")
    eraser_args = parse_assignments(cfg.erasers, "--eraser", "BEHAVIOR=DIR")
    sft_args = parse_assignments(cfg.sft, "--sft", "BEHAVIOR=DIR")
    ablation_args = parse_assignments(cfg.ablations, "--ablation", "LABEL=ERASER_DIR[:MODEL_DIR]")
    if not eraser_args:
        raise ConfigError("give at least one --eraser BEHAVIOR=DIR")
    for behavior in sft_args:
        if behavior not in eraser_args:
            raise ConfigError(f"--sft {behavior}: no --eraser given for that behavior")
    check_out(Path(cfg.out), cfg.overwrite)

    carrier = require_model_dir(Path(cfg.carrier), "--carrier")
    manifest = read_manifest(carrier)
    if manifest is None:
        raise ModelDirError(f"--carrier {carrier}: not a carrier (no carrier.json)")
    require_model_dir(Path(cfg.base), "--base")
    sft = {b: require_model_dir(Path(d), f"--sft {b}") for b, d in sft_args.items()}
    groups = split_by_behavior(load_jsonl(cfg.data))
    benign = groups.pop(RETAIN, [])
    if not benign:
        raise DataError(f"{cfg.data}: no {RETAIN!r} rows (benign prompts are needed)")

    hidden = carrier_ref(carrier).hidden_size
    erasers = {b: _carrier_eraser(b, Path(d), manifest, hidden) for b, d in eraser_args.items()}
    for behavior in erasers:
        if behavior not in groups:
            present = ", ".join(sorted(groups)) or "none"
            raise DataError(f"{cfg.data}: no rows for behavior {behavior!r} (present: {present})")
    ablations = [
        _ablation(label, value, carrier, groups, Path(cfg.data))
        for label, value in ablation_args.items()
    ]
    external = None
    if cfg.prompts is not None:
        external = load_labelled(Path(cfg.prompts), cfg.text_column, cfg.label_column)
    return ReportInputs(
        cfg=cfg,
        manifest=manifest,
        erasers=erasers,
        eraser_dirs={b: Path(d) for b, d in eraser_args.items()},
        sft=sft,
        ablations=ablations,
        behaviors=[b for b in behavior_names(manifest) if b in groups],
        triggers=groups,
        benign=benign,
        external=external,
    )
