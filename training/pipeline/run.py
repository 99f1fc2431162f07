"""Run a recipe's stages under a work directory: skip what is done, refuse a directory built with
other settings, print progress, record stage times; and say what is done (`pipeline status`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from eraser_store.atomic import write_atomic
from training.data.behaviors import Behavior, register_behavior
from training.data.scorers import make_scorer
from training.loop import RunError
from training.pipeline.recipe import Recipe
from training.pipeline.stages import Settings, Stage, plan, settings_of
from training.pipeline.steps import join_data, score

SETTINGS_FILE = "settings.txt"
TIMINGS_FILE = "timings.txt"
# What erasers leave in a work directory (a finished one, a partial one, the store, the scores).
ERASER_GLOBS = ("eraser_*", ".eraser_*", "store", "scores.json")
CARRIER_GLOBS = ("data", "data_made", "sft_*", "carrier_*")

RunCommand = Callable[[list[str]], int]
"""Runs one `sft-eraser` command line (without the program name); its exit code."""


def file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_problem(work: Path, settings: Settings) -> str | None:
    """Why `work` must not be used with these settings, or None. Cached stages are reused as they
    are, so a directory built with other settings is refused rather than mixed into this run;
    where only the eraser settings changed, its carriers are kept once its erasers are removed."""
    recorded = work / SETTINGS_FILE
    if recorded.exists():
        built = recorded.read_text().rstrip("\n")
        if built == settings.full:
            return None
        if not built.startswith(settings.carrier + " | "):
            return f"{work} was built with other settings ({built}); pass another --work"
        if _present(work, ERASER_GLOBS):
            leftovers = " ".join(f"{work}/{g}" for g in ERASER_GLOBS)
            return (
                f"{work} holds erasers trained with other settings "
                f"({built[len(settings.carrier) + 3 :]}); its carriers fit these: "
                f"rm -rf {leftovers} to train only the erasers again, or pass another --work"
            )
        return None
    if _present(work, CARRIER_GLOBS + ERASER_GLOBS):
        return f"{work} holds stages built without a settings record; pass another --work"
    return None


def _present(work: Path, globs) -> list[Path]:
    return [p for g in globs for p in work.glob(g)]


def is_done(stage: Stage) -> bool:
    if stage.kind != "register":
        return stage.output.exists()
    from eraser_store import EraserStore, read_eraser

    if not stage.output.exists() or not stage.eraser.exists():
        return False
    name = read_eraser(stage.eraser).meta.name
    return any(r.name == name for r in EraserStore(stage.output).list())


def read_timings(work: Path) -> dict[str, int]:
    """Seconds per stage name (the last run of it)."""
    path = work / TIMINGS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return {name: int(sec) for name, sec in (line.rsplit(" ", 1) for line in lines if line)}


def register_behaviors(recipe: Recipe) -> None:
    """Make the recipe's own behaviors known to scoring in this process."""
    for b in recipe.behaviors:
        if b.own:
            description = b.description or f"{b.name} (a recipe's own behavior)"
            register_behavior(Behavior(b.name, description, score=make_scorer(b.scorer)))


def run_pipeline(recipe: Recipe, work: Path, run_command: RunCommand) -> None:
    """Run every stage that is not done yet, in order."""
    settings = settings_of(recipe, file_sha)
    problem = settings_problem(work, settings)
    if problem:
        raise RunError(problem)
    work.mkdir(parents=True, exist_ok=True)
    write_atomic(work / SETTINGS_FILE, settings.full + "\n")
    register_behaviors(recipe)
    stages = plan(recipe, work)
    start = time.monotonic()
    for stage in stages:
        if is_done(stage):
            continue
        elapsed = int(time.monotonic() - start)
        print(f"\n[pipeline {elapsed // 60}m{elapsed % 60}s] {stage.message}", flush=True)
        t0 = time.monotonic()
        _execute(stage, recipe, work, stages, run_command)
        if stage.timed:
            with (work / TIMINGS_FILE).open("a") as f:
                f.write(f"{stage.name} {int(time.monotonic() - t0)}\n")
    print("\nstage times (s):")
    print((work / TIMINGS_FILE).read_text() if (work / TIMINGS_FILE).exists() else "", end="")


def _execute(stage: Stage, recipe: Recipe, work: Path, stages: list[Stage], run) -> None:
    if stage.kind == "join":
        join_data(recipe, work)
    elif stage.kind == "score":
        registered = [s for s in stages if s.kind == "register"]
        served = {s.behavior: s.eraser for s in registered}
        score(recipe, work, registered[0].flag("--carrier"), served)
    else:
        code = run(list(stage.argv))
        if code:
            raise RunError(f"stage {stage.name} failed (exit code {code}): {stage.command}")


def status_lines(recipe: Recipe, work: Path) -> list[str]:
    """One line per stage (done or to do, its time) under a line on the settings."""
    problem = settings_problem(work, settings_of(recipe, file_sha))
    if problem:
        head = f"refused: {problem}"
    elif (work / SETTINGS_FILE).exists():
        head = f"{work}: built with this recipe's settings"
    else:
        head = f"{work}: not started"
    timings = read_timings(work)
    lines = [head]
    for stage in plan(recipe, work):
        state = "done" if not problem and is_done(stage) else "to do"
        seconds = f"{timings[stage.name]:>6}s" if state == "done" and stage.name in timings else ""
        lines.append(f"{state:<6} {stage.name:<28} {seconds}".rstrip())
    return lines
