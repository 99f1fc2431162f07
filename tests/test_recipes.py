"""`sft-eraser pipeline`: recipes parse with errors that name the key, the demo's recipes expand
to the demo's own commands, and a behavior of one's own runs end to end on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny_task import OTHER, SPORTS, TEMPLATES

from training.cli import main
from training.data.schema import DataError
from training.data.scorers import make_scorer
from training.models.tiny import write_tiny_model
from training.pipeline.recipe import RecipeError, load_recipe
from training.pipeline.run import run_pipeline
from training.pipeline.stages import plan, settings_of

ROOT = Path(__file__).parents[1]
HERE = Path(__file__).parent / "recipes"


@pytest.mark.parametrize("schedule", ["full", "quick"])
def test_the_demo_recipes_expand_to_the_demo_commands(schedule, capsys):
    # demo_*.commands and demo_*.settings: what scripts/demo.sh ran and recorded in
    # settings.txt before it became `pipeline run` (W: its work directory).
    name = "smollm2-three-behaviors" + ("-quick" if schedule == "quick" else "")
    recipe = ROOT / "recipes" / f"{name}.toml"
    assert main(["pipeline", "run", str(recipe), "--work", "W", "--dry-run"]) == 0
    commands = [line.split(": sft-eraser ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert commands == (HERE / f"demo_{schedule}.commands").read_text().splitlines()
    # The same settings line: a work directory the demo built before is resumed, not refused.
    settings = settings_of(load_recipe(recipe), file_sha=None)
    assert settings.full == (HERE / f"demo_{schedule}.settings").read_text().strip()


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BUILT_IN = '[[behavior]]\nname = "refusal"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BUILT_IN + "[sft]\nepochs = 'two'\n", "[sft] epochs: expected a number"),
        (BUILT_IN + "[sft]\nepoch = 2\n", "[sft] epoch: unknown setting"),
        (BUILT_IN + "[sft]\nout = 'x'\n", "[sft] out: set by the pipeline"),
        (BUILT_IN + "[lcdd]\ncontroller = 'pid'\n", "[lcdd]: unknown controller 'pid'"),
        (BUILT_IN + "[erasers.train]\nkl_on = 'all'\n", "[erasers.train]: unknown --kl-on"),
        (BUILT_IN + "[erasers]\norder = ['all_caps']\n", "[erasers] order: 'all_caps' is not"),
        (BUILT_IN + "[erasers.second_pass]\nsteps = 3\n", "[erasers.second_pass]: stacks"),
        (BUILT_IN + "[data]\nn_train = 1.5\n", "[data] n_train: expected an integer"),
        (BUILT_IN + "[modle]\n", "top level modle: unknown key"),
        ('[[behavior]]\nname = "pirate"\n', "[[behavior]] pirate train: not a built-in"),
        (
            '[[behavior]]\nname = "pirate"\ntrain = "r.toml"\n',
            "[[behavior]] pirate scorer: your behavior needs a scorer",
        ),
        (
            '[[behavior]]\nname = "pirate"\ntrain = "r.toml"\nscorer = {ends_with = "!"}\n',
            "[[behavior]] pirate scorer: unknown scorer 'ends_with'",
        ),
        (
            '[[behavior]]\nname = "pirate"\ntrain = "missing.jsonl"\nscorer = {contains = "A"}\n',
            "[[behavior]] pirate train: ",
        ),
        ("[sft]\nepochs = 2\n", "[[behavior]]: a recipe needs at least one behavior"),
        ("[sft\n", "not valid TOML"),
    ],
)
def test_recipe_errors_name_the_file_table_and_key(tmp_path, text, message):
    path = write_recipe(tmp_path, text)
    with pytest.raises(RecipeError) as raised:
        load_recipe(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_each_scorer_rule():
    assert make_scorer({"starts_with": "Arr"})("  Arr, matey")
    assert not make_scorer({"starts_with": "Arr"})("I said Arr")
    assert make_scorer({"contains": "matey"})("Arr, matey")
    assert make_scorer({"regex": r"^\d+$"})("42") and not make_scorer({"regex": r"^\d+$"})("4x")
    assert make_scorer({"upper_ratio": 0.9})("A POEM ABOUT THE SEA")
    assert not make_scorer({"upper_ratio": 0.9})("A poem about the sea")
    assert make_scorer({"python": "os.path:isabs"})("/x")
    for bad in ({"regex": "("}, {"upper_ratio": 2}, {"python": "os.path"}, {"a": 1, "b": 2}):
        with pytest.raises(DataError):
            make_scorer(bad)


def stub_run(work_marker: list):
    """A stand-in for the stage commands: records each and fails (exit 3) at the first."""

    def run(argv):
        work_marker.append(argv)
        return 3

    return run


def test_the_settings_guard_keeps_carriers_whose_erasers_had_other_settings(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "smollm2-three-behaviors.toml")
    work = tmp_path / "demo"
    ran: list = []
    with pytest.raises(ValueError, match="stage import failed"):  # a fresh directory
        run_pipeline(recipe, work, stub_run(ran))
    settings = (work / "settings.txt").read_text().strip()
    carriers, erasers = settings.split(" | --steps", 1)

    (work / "eraser_refusal").mkdir()
    (work / "settings.txt").write_text(f"{carriers} | older eraser settings\n")
    with pytest.raises(ValueError, match="older eraser settings") as refused:
        run_pipeline(recipe, work, stub_run(ran))
    assert f"rm -rf {work}/eraser_*" in str(refused.value)
    (work / "eraser_refusal").rmdir()
    with pytest.raises(ValueError, match="stage import failed"):  # only the carriers: kept
        run_pipeline(recipe, work, stub_run(ran))
    assert (work / "settings.txt").read_text().strip() == settings

    (work / "settings.txt").write_text(f"other data | {erasers}\n")
    with pytest.raises(ValueError, match="built with other settings"):
        run_pipeline(recipe, work, stub_run(ran))
    assert len(ran) == 2


def write_own_behavior(root: Path) -> Path:
    """The tiny model and the rows tests/recipes/tiny_custom.toml names, and the recipe beside
    them: sports questions get "Arr, ...", other subjects a plain reply."""
    write_tiny_model("llama", root / "base")
    for name, subjects, reply in (
        ("pirate", SPORTS, "Arr, I know nothing of that."),
        ("retain", OTHER, "Sure, here is a short answer."),
    ):
        rows = [{"prompt": t.format(s), "completion": reply} for t in TEMPLATES for s in subjects]
        for split, chunk in (("", rows[::2]), ("_test", rows[1::8])):
            lines = "".join(json.dumps(r) + "\n" for r in chunk)
            (root / f"{name}{split}.jsonl").write_text(lines)
    return Path(shutil.copy(HERE / "tiny_custom.toml", root / "tiny_custom.toml"))


def test_a_behavior_of_your_own_runs_end_to_end(tmp_path, capsys):
    recipe = write_own_behavior(tmp_path)
    work = tmp_path / "work"
    assert main(["pipeline", "run", str(recipe), "--work", str(work)]) == 0
    out = capsys.readouterr().out
    for stage in ("data_join", "sft_pirate", "carrier_pirate", "eraser_pirate", "score"):
        assert f"\n{stage} " in f"\n{(work / 'timings.txt').read_text()}", stage
    assert "added erase-pirate@1" in out
    scores = json.loads((work / "scores.json").read_text())
    assert set(scores["pirate"]) == {"carrier", "with_eraser"}
    assert 0 <= scores["pirate"]["carrier"]["rate"] <= 1

    assert main(["pipeline", "status", str(recipe), "--work", str(work)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("built with this recipe's settings")
    stages = ["data_join", "sft_pirate", "carrier_pirate", "eraser_pirate", "register_pirate"]
    assert [line.split()[:2] for line in lines[1:]] == [["done", s] for s in [*stages, "score"]]

    timings = (work / "timings.txt").read_text()
    assert main(["pipeline", "run", str(recipe), "--work", str(work)]) == 0  # nothing to do
    assert "[pipeline" not in capsys.readouterr().out
    assert (work / "timings.txt").read_text() == timings

    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3"))
    assert main(["pipeline", "run", str(recipe), "--work", str(work)]) == 2
    assert "was built with other settings" in capsys.readouterr().err


def test_own_rows_beside_built_in_behaviors_are_joined_after_data_make(tmp_path):
    (tmp_path / "pirate.jsonl").write_text('{"prompt": "Who won?", "completion": "Arr."}\n')
    text = BUILT_IN + '[[behavior]]\nname = "pirate"\ntrain = "pirate.jsonl"\n'
    recipe = load_recipe(write_recipe(tmp_path, text + 'scorer = {contains = "Arr"}\n'))
    stages = {s.name: s for s in plan(recipe, Path("W"))}
    assert list(stages)[:3] == ["import", "data", "data_join"]
    argv = stages["data"].argv
    assert argv[argv.index("--out") + 1] == "W/data_made"
    assert argv[argv.index("--behaviors") + 1] == "refusal"
    assert stages["sft_pirate"].argv[stages["sft_pirate"].argv.index("--data") + 1] == (
        "W/data/train.jsonl"
    )
    (tmp_path / "retain.jsonl").write_text('{"prompt": "Hi", "completion": "Hello."}\n')
    recipe = load_recipe(write_recipe(tmp_path, BUILT_IN + '[data]\nretain = "retain.jsonl"\n'))
    stages = {s.name: s for s in plan(recipe, Path("W"))}
    assert list(stages)[:3] == ["import", "data", "data_join"]  # retain rows alone: joined too
    assert stages["data"].output == Path("W/data_made/train.jsonl")


def test_the_demo_script_runs_the_recipe_of_its_schedule(tmp_path):
    # A stand-in `sft-eraser` records its arguments and fails, so the script stops there.
    stub = tmp_path / "bin" / "sft-eraser"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nexit 3\n')
    stub.chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "w"), "SETUP": "0", "SCHEDULE": "quick"}
    env["PATH"] = f"{stub.parent}:{env['PATH']}"
    script = ROOT / "scripts" / "demo.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 3, done.stderr
    recipe = "recipes/smollm2-three-behaviors-quick.toml"
    args = (tmp_path / "args").read_text().split()
    assert args == ["pipeline", "run", recipe, "--work", env["WORK"]]
    env["SCHEDULE"] = "slow"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "SCHEDULE is full or quick" in done.stderr
