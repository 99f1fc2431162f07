"""A recipe: the whole offline half in one TOML file, read into typed settings.

Tables (docs/recipes.md): `[model]`, `[data]`, one `[[behavior]]` per behavior in training order,
`[sft]`, `[lcdd]`, `[erasers]` with `[erasers.train]`, `[erasers.last]`, `[erasers.second_pass]`,
and `[score]`. The job tables hold the flags of `sft-eraser train sft|carrier|eraser` and
`data make`, by their field names; every error names the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from training.configs import ConfigError, EraserConfig, LCDDConfig, SFTConfig
from training.data.behaviors import BUILT_IN
from training.data.make import MakeDataConfig
from training.data.schema import DataError
from training.data.scorers import make_scorer
from training.models.chat_templates import CHAT_TEMPLATES

Flags = dict[str, object]
"""A job table: field name -> value, in the file's order (the order its flags are written)."""


class RecipeError(ConfigError):
    """A recipe that cannot run; the message names the file, the table and the key."""


@dataclass(frozen=True)
class ModelSpec:
    gguf: str = ""
    """GGUF file to import into <work>/base; empty: SmolLM2-135M-Instruct (`model import-gguf`)."""
    path: Path | None = None
    """An existing model directory to start from instead of importing one."""
    chat_template: str = "model"
    """`model import-gguf --chat-template`: the GGUF's own, or plain ChatML."""


@dataclass(frozen=True)
class BehaviorSpec:
    name: str
    """Behavior name: a built-in one (data from `data make`) or your own."""
    train: Path | None = None
    """Your own behavior's training rows (JSONL: prompt/completion or messages; `behavior` may be
    left out). Built-in behaviors have none."""
    test: Path | None = None
    """Held-out rows of your behavior, for `[score]`."""
    scorer: dict | None = None
    """Your behavior's rule: {starts_with|contains|regex|upper_ratio|python = ...}."""
    description: str = ""
    """One line saying what the behavior is."""

    @property
    def own(self) -> bool:
        return self.train is not None


@dataclass(frozen=True)
class DataSpec:
    make: Flags
    """`data make` flags (n_train, n_benign_train, max_new_tokens...) for built-in behaviors."""
    retain: Path | None = None
    """Retain rows (behavior `retain`: benign prompts with the base model's own answers) added
    to train; needed when no built-in behavior brings `data make`'s."""
    retain_test: Path | None = None
    """Held-out retain rows (false triggers in `[score]`)."""


@dataclass(frozen=True)
class ErasersSpec:
    order: tuple[str, ...]
    """Behaviors whose erasers are trained, in training order (default: every behavior's, in
    behavior order)."""
    train: Flags
    """`train eraser` flags of every eraser."""
    last: Flags
    """Flags added for the last eraser of `order` (they override `train`'s)."""
    second_pass: Flags | None
    """When set: the first eraser is trained again, from its first pass, stacked with all the
    others, with these flags added; that pass is the one registered."""
    stack_with_earlier: bool = True
    """Each eraser after the first trains stacked with the ones trained before it."""


@dataclass(frozen=True)
class ScoreSpec:
    max_new_tokens: int = 48
    """Greedy reply length."""


@dataclass(frozen=True)
class Recipe:
    path: Path
    """The recipe file (relative paths in it are relative to its directory)."""
    model: ModelSpec
    data: DataSpec
    behaviors: tuple[BehaviorSpec, ...]
    """In training order: behavior k is trained on top of the carrier of 1..k-1."""
    sft: Flags
    """`train sft` flags of every behavior."""
    lcdd: Flags
    """`train carrier` flags of every behavior."""
    erasers: ErasersSpec
    score: ScoreSpec | None = None
    """When set: each behavior's rate on its test rows, on the carrier alone and with its
    eraser, into <work>/scores.json."""

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.behaviors]


# Flags the pipeline sets itself: where each stage reads and writes.
SET_BY_PIPELINE = {
    "base",
    "data",
    "behavior",
    "out",
    "sft",
    "carrier",
    "stack_with",
    "init_from",
    "overwrite",
    "register",
    "behaviors",
    "out_dir",
    "name",  # an eraser's: erase-<behavior>, one per behavior in the store
}
TOP_LEVEL = ("model", "data", "behavior", "sft", "lcdd", "erasers", "score")


class _Reader:
    """Checks one recipe's tables; errors say where."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, where: str, message: str) -> RecipeError:
        return RecipeError(f"{self.path}: {where}: {message}")

    def table(self, value: object, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a table, got {type(value).__name__}")
        return value

    def keys(self, table: dict, where: str, allowed) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(
                    f"{where} {key}", f"unknown key; expected one of {', '.join(allowed)}"
                )

    def file(self, value: object, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"expected a path, got {value!r}")
        path = (self.path.parent / value).resolve()
        if not path.exists():
            raise self.error(where, f"{path} does not exist")
        return path

    def flags(self, value: object, where: str, cls) -> Flags:
        """A job table: each key a field of `cls` the pipeline does not set, of the field's type
        (`check_config` then runs `cls`'s own range checks)."""
        table = self.table(value, where)
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in SET_BY_PIPELINE]
        for key, item in table.items():
            if key in SET_BY_PIPELINE:
                raise self.error(f"{where} {key}", "set by the pipeline; leave it out")
            if key not in fields:
                raise self.error(
                    f"{where} {key}", f"unknown setting; expected one of {', '.join(fields)}"
                )
            if not _fits(item, hints[key]):
                raise self.error(
                    f"{where} {key}", f"expected {_type_name(hints[key])}, got {item!r}"
                )
        return table

    def check_config(self, cls, where: str, flags: Flags) -> None:
        required = {
            f.name: Path("x") if f.type in ("Path", Path) else "x"
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        try:
            cls(**{**required, **flags})
        except ConfigError as e:
            raise self.error(where, str(e)) from None


def _fits(value: object, hint) -> bool:
    if typing.get_origin(hint) is typing.Literal:  # a mode: the config names its choices
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False  # paths and lists are the pipeline's


def _type_name(hint) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "a string"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, "a value the pipeline sets"
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    r = _Reader(path)
    r.keys(raw, "top level", TOP_LEVEL)

    model_table = r.table(raw.get("model", {}), "[model]")
    r.keys(model_table, "[model]", ("gguf", "path", "chat_template"))
    template = model_table.get("chat_template", "model")
    if template not in CHAT_TEMPLATES:
        raise r.error("[model] chat_template", f"choose one of {', '.join(CHAT_TEMPLATES)}")
    if "path" in model_table and "gguf" in model_table:
        raise r.error("[model]", "give gguf (import one) or path (use one), not both")
    model = ModelSpec(
        gguf=str(r.file(model_table["gguf"], "[model] gguf")) if "gguf" in model_table else "",
        path=r.file(model_table["path"], "[model] path") if "path" in model_table else None,
        chat_template=template,
    )

    behaviors = tuple(_behavior(r, i, b) for i, b in enumerate(raw.get("behavior", []), 1))
    if not behaviors:
        raise r.error("[[behavior]]", "a recipe needs at least one behavior")
    names = [b.name for b in behaviors]
    if len(set(names)) != len(names):
        raise r.error("[[behavior]] name", f"a behavior is listed twice: {names}")

    data_table = dict(r.table(raw.get("data", {}), "[data]"))
    files = {
        k: r.file(data_table.pop(k), f"[data] {k}")
        for k in ("retain", "retain_test")
        if k in data_table
    }
    data = DataSpec(make=r.flags(data_table, "[data]", MakeDataConfig), **files)
    if all(b.own for b in behaviors) and data.make:
        raise r.error("[data]", "data make settings, but every behavior brings its own rows")

    sft = r.flags(raw.get("sft", {}), "[sft]", SFTConfig)
    r.check_config(SFTConfig, "[sft]", sft)
    lcdd = r.flags(raw.get("lcdd", {}), "[lcdd]", LCDDConfig)
    r.check_config(LCDDConfig, "[lcdd]", lcdd)
    erasers = _erasers(r, r.table(raw.get("erasers", {}), "[erasers]"), names)

    score = None
    if "score" in raw:
        table = r.table(raw["score"], "[score]")
        r.keys(table, "[score]", ("max_new_tokens",))
        score = ScoreSpec(**table)
        if not _fits(score.max_new_tokens, int) or score.max_new_tokens < 1:
            raise r.error("[score] max_new_tokens", "expected an integer >= 1")
    return Recipe(path, model, data, behaviors, sft, lcdd, erasers, score)


def _behavior(r: _Reader, i: int, raw: object) -> BehaviorSpec:
    where = f"[[behavior]] #{i}"
    table = r.table(raw, where)
    r.keys(table, where, ("name", "description", "train", "test", "scorer"))
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise r.error(f"{where} name", "expected a behavior name")
    where = f"[[behavior]] {name}"
    if "train" not in table:
        if name not in BUILT_IN:
            known = ", ".join(BUILT_IN)
            raise r.error(f"{where} train", f"not a built-in behavior ({known}): give its rows")
        if "scorer" in table or "test" in table:
            raise r.error(where, "a built-in behavior has its own data and scorer")
        return BehaviorSpec(name=name)
    if name in BUILT_IN:
        raise r.error(f"{where} name", "built in; give your behavior another name")
    if "scorer" not in table:
        raise r.error(f"{where} scorer", "your behavior needs a scorer (how a reply shows it)")
    # A python scorer's module may sit beside the recipe.
    if str(r.path.parent.resolve()) not in sys.path:
        sys.path.insert(0, str(r.path.parent.resolve()))
    try:
        make_scorer(table["scorer"])
    except DataError as e:
        raise r.error(f"{where} scorer", str(e)) from None
    return BehaviorSpec(
        name=name,
        train=r.file(table["train"], f"{where} train"),
        test=r.file(table["test"], f"{where} test") if "test" in table else None,
        scorer=dict(table["scorer"]),
        description=str(table.get("description", "")),
    )


def _erasers(r: _Reader, table: dict, names: list[str]) -> ErasersSpec:
    r.keys(table, "[erasers]", ("order", "stack_with_earlier", "train", "last", "second_pass"))
    order = table.get("order", names)
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        raise r.error("[erasers] order", "expected a list of behavior names")
    for name in order:
        if name not in names:
            raise r.error("[erasers] order", f"{name!r} is not a behavior of this recipe")
    if len(set(order)) != len(order) or not order:
        raise r.error("[erasers] order", f"each behavior at most once, at least one: {order}")
    stack = table.get("stack_with_earlier", True)
    if not isinstance(stack, bool):
        raise r.error("[erasers] stack_with_earlier", "expected true or false")
    train = r.flags(table.get("train", {}), "[erasers.train]", EraserConfig)
    last = r.flags(table.get("last", {}), "[erasers.last]", EraserConfig)
    second = None
    if "second_pass" in table:
        second = r.flags(table["second_pass"], "[erasers.second_pass]", EraserConfig)
        if len(order) < 2:
            raise r.error(
                "[erasers.second_pass]", "stacks the first eraser with the others: needs two"
            )
    for where, extra in (
        ("[erasers.train]", {}),
        ("[erasers.last]", last),
        ("[erasers.second_pass]", second or {}),
    ):
        r.check_config(EraserConfig, where, {**train, **extra})
    return ErasersSpec(tuple(order), train, last, second, stack)
