"""A recipe expanded into its stages: what each writes under the work directory, and the
`sft-eraser` command that writes it (the same commands scripts/demo.sh ran one by one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from training.pipeline.recipe import Flags, Recipe

StageKind = Literal["command", "join", "register", "score"]


@dataclass(frozen=True)
class Stage:
    name: str
    """Its line in timings.txt (and in `pipeline status`)."""
    message: str
    """What it does, printed when it starts."""
    output: Path
    """What it writes; the stage is done once this exists (jobs write atomically)."""
    argv: tuple[str, ...] = ()
    """The `sft-eraser` command it runs; empty for an in-process step (`kind`)."""
    kind: StageKind = "command"
    """command; join (own rows into one data directory), score: in-process steps; register: a
    command done once its eraser is in the store."""
    behavior: str = ""
    """The behavior a register stage registers."""
    timed: bool = True
    """Recorded in timings.txt (registration takes no time worth a line)."""

    @property
    def command(self) -> str:
        return "sft-eraser " + " ".join(self.argv) if self.argv else f"({self.kind})"

    def flag(self, name: str) -> Path:
        """The path after `name` in the command (`--carrier` of a register stage)."""
        return Path(self.argv[self.argv.index(name) + 1])

    @property
    def eraser(self) -> Path:
        """The eraser directory a register stage adds (`erasers add DIR ...`)."""
        return Path(self.argv[2])


def format_value(value: object) -> str:
    """A flag value as a person writes it: floats under 0.1 as 1e-4, others as they are."""
    if isinstance(value, float) and value != 0 and abs(value) < 0.1:
        mantissa, exponent = f"{value:.15e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def to_flags(table: Flags) -> list[str]:
    """A job table as command-line flags, in the table's order (a false switch is left out)."""
    flags: list[str] = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, format_value(value)]
    return flags


@dataclass(frozen=True)
class Settings:
    """What a work directory was built with, in demo.sh's settings.txt form: a directory of
    other settings is refused rather than mixed, except that the erasers alone may be retrained
    on carriers built with these `carrier` settings."""

    carrier: str
    full: str


def settings_of(recipe: Recipe, file_sha: Callable[[Path], str]) -> Settings:
    """The settings lines; "cut marked, look-alike splits" name the data version (answers cut at
    the length cap trained without an end token; benign look-alikes, splits held out by filler).
    Own data files count by content (`file_sha`)."""
    model = recipe.model
    parts = []
    if model.path is not None or model.gguf:
        parts.append(f"model: {model.path or model.gguf}")
    if model.chat_template != "model":
        parts.append(f"chat template: {model.chat_template}")
    data = []
    if any(not b.own for b in recipe.behaviors):
        data += [*to_flags(recipe.data.make), "cut marked, look-alike splits"]
    own = [(b.name, b.train) for b in recipe.behaviors if b.own]
    own += [(f"{b.name}_test", b.test) for b in recipe.behaviors if b.test]
    own += [("retain", recipe.data.retain), ("retain_test", recipe.data.retain_test)]
    own = [(name, path) for name, path in own if path]
    if own:
        data[-1:] = [", ".join([*data[-1:], "own rows:"])]
        data += [f"{name}={file_sha(path)[:16]}" for name, path in own]
    data = " ".join(data)
    parts += [
        " ".join(recipe.names),
        data,
        " ".join(to_flags(recipe.sft)),
        " ".join(to_flags(recipe.lcdd)),
    ]
    carrier = " | ".join(parts)
    e = recipe.erasers
    train = " ".join(to_flags(e.train))
    if e.stack_with_earlier:
        train += " --stack-with the earlier erasers, in stack order"
    full = [carrier, train, "order: " + " ".join(e.order), "last: " + " ".join(to_flags(e.last))]
    if e.second_pass is not None:
        full.append(
            "the first eraser again, stacked with the others, from its first pass: "
            + " ".join(to_flags(e.second_pass))
        )
    return Settings(carrier, " | ".join(full))


def plan(recipe: Recipe, work: Path) -> list[Stage]:
    """Every stage, in order: base model, data, SFT then LCDD per behavior, erasers, their second
    pass, registration, scores."""
    w = str(work)
    stages: list[Stage] = []
    model = recipe.model
    if model.path is None:
        argv = ["model", "import-gguf", "--out", f"{w}/base"]
        if model.gguf:
            argv += ["--gguf", model.gguf]
        if model.chat_template != "model":
            argv += ["--chat-template", model.chat_template]
        what = model.gguf or "SmolLM2-135M-Instruct"
        stages.append(Stage("import", f"import {what}", work / "base", tuple(argv)))
        base = f"{w}/base"
    else:
        base = str(model.path)

    built_in = [b.name for b in recipe.behaviors if not b.own]
    own = [b for b in recipe.behaviors if b.own]
    # Rows of your own are joined with data make's into data/: make writes beside it then.
    joined = bool(own or recipe.data.retain or recipe.data.retain_test)
    made = f"{w}/data_made" if joined else f"{w}/data"
    if built_in:
        argv = ["data", "make", "--model", base, "--out", made, "--behaviors", ",".join(built_in)]
        message = (
            "data: train/dev/test splits, the base model's answers for benign and creative prompts"
        )
        stages.append(
            Stage("data", message, Path(made) / "train.jsonl", (*argv, *to_flags(recipe.data.make)))
        )
    if joined:
        names = ", ".join(b.name for b in own) or "retain"
        stages.append(
            Stage(
                "data_join",
                f"data: your rows ({names}) into {w}/data",
                work / "data" / "train.jsonl",
                kind="join",
            )
        )
    data = f"{w}/data/train.jsonl"

    # Behavior k is fine-tuned and made sparse on top of the carrier holding behaviors 1..k-1.
    prev = base
    sft_flags, lcdd_flags = to_flags(recipe.sft), to_flags(recipe.lcdd)
    ramp = recipe.lcdd.get("controller") == "ramp"
    density = recipe.lcdd.get("final_density", 0.1)
    for b in recipe.names:
        sft_out, carrier_out = f"{w}/sft_{b}", f"{w}/carrier_{b}"
        argv = ["train", "sft", "--base", prev, "--data", data, "--behavior", b, "--out", sft_out]
        stages.append(
            Stage(f"sft_{b}", f"{b}: phase 1, SFT from {prev}", Path(sft_out), (*argv, *sft_flags))
        )
        argv = [
            "train",
            "carrier",
            "--base",
            prev,
            "--sft",
            sft_out,
            "--data",
            data,
            "--behavior",
            b,
            "--out",
            carrier_out,
        ]
        message = f"{b}: phase 2, LCDD" + (
            f" (density ramp to {format_value(density)})" if ramp else ""
        )
        stages.append(Stage(f"carrier_{b}", message, Path(carrier_out), (*argv, *lcdd_flags)))
        prev = carrier_out
    carrier = prev

    def eraser_job(behavior: str, out: str) -> list[str]:
        return [
            "train",
            "eraser",
            "--carrier",
            carrier,
            "--behavior",
            behavior,
            "--data",
            data,
            "--out",
            out,
        ]

    e = recipe.erasers
    eraser_flags = to_flags(e.train)
    earlier: list[str] = []
    for b in e.order:
        extra = ["--stack-with", *earlier] if earlier and e.stack_with_earlier else []
        if b == e.order[-1]:
            extra += to_flags(e.last)
        out = f"{w}/eraser_{b}"
        message = f"{b}: eraser against the carrier" + (f" ({' '.join(extra)})" if extra else "")
        argv = (*eraser_job(b, out), *eraser_flags, *extra)
        stages.append(Stage(f"eraser_{b}", message, Path(out), argv))
        earlier.append(out)
    served = {b: f"{w}/eraser_{b}" for b in e.order}
    if e.second_pass is not None:
        first, others = e.order[0], earlier[1:]
        out = f"{w}/eraser_{first}_2"
        argv = eraser_job(first, out)
        argv += [
            *eraser_flags,
            *to_flags(e.second_pass),
            "--init-from",
            earlier[0],
            "--stack-with",
            *others,
        ]
        message = f"{first}: second pass, stacked with the others (--stack-with {' '.join(others)})"
        stages.append(Stage(f"eraser_{first}_2", message, Path(out), tuple(argv)))
        served[first] = out
    for b in e.order:
        argv = ("erasers", "add", served[b], "--store", f"{w}/store", "--carrier", carrier)
        stages.append(
            Stage(
                f"register_{b}",
                f"{b}: register {served[b]}",
                work / "store",
                argv,
                kind="register",
                behavior=b,
                timed=False,
            )
        )
    if recipe.score is not None:
        stages.append(
            Stage(
                "score",
                "scores: each behavior on its test rows, with and without its eraser",
                work / "scores.json",
                kind="score",
            )
        )
    return stages
