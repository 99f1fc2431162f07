"""The training loop shared by SFT and LCDD: progress bar, metrics JSONL, resumable checkpoints.

A run keeps its state in a work directory beside its output (`.NAME.partial`). Started again
with the same settings, it resumes from the last checkpoint; with other settings it refuses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from eraser_store.atomic import atomic_file, write_atomic


class Job(Protocol):
    def train_step(self, step: int, batch: dict) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class RunError(ValueError):
    pass


# Flags that change what happens after training, not the run itself: a resume may differ in them.
OUTPUT_ONLY_FLAGS = ("overwrite", "register", "keep")


def run_settings(kind: str, cfg, **extra) -> dict:
    """What must match for a run to resume: the job kind, its config, the content of its data
    file (regenerated at the same path, it is other data) and `extra` facts."""
    settings = {"job": kind, **dataclasses.asdict(cfg), **extra}
    data = getattr(cfg, "data", None)
    if data is not None and Path(data).is_file():
        settings["data_sha256"] = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    for flag in OUTPUT_ONLY_FLAGS:
        settings.pop(flag, None)
    return settings


def work_dir_for(out: Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _save_state(work: Path, step: int, job: Job) -> None:
    state = {"step": step, "job": job.state_dict(), "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_initialized():  # a CPU run on a GPU machine starts no CUDA context here
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_file(work / "state.pt") as tmp:
        torch.save(state, tmp)


def _load_state(work: Path, job: Job) -> int:
    """Restore job and RNG state from state.pt; the step to resume at. Loaded to the CPU first:
    the job moves its tensors to its device, so a run saved on a GPU resumes on a CPU."""
    state = torch.load(work / "state.pt", map_location="cpu", weights_only=False)
    job.load_state_dict(state["job"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.device_count() == len(state["cuda_rng"]):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


def _truncate_metrics(path: Path, start: int) -> None:
    """Keep only rows of steps before `start` (later rows came after the last checkpoint; a
    torn last line, from a kill during its write, goes too)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] < start:
            kept.append(line)
    write_atomic(path, "".join(r + "\n" for r in kept))


@contextmanager
def ctrl_c_at_step_end() -> Iterator[list]:
    """Hold a Ctrl-C (SIGINT) until the step in flight ends: a step stopped half-way (after its
    optimizer update, say) would leave a state that is no whole number of steps, and the resume
    would repeat or skip part of it. Yields a list that is non-empty once Ctrl-C was pressed; a
    second Ctrl-C stops at once. Outside the main thread signals cannot be caught: nothing held."""
    pressed: list = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if previous in (signal.SIG_IGN, None):  # ignored (a background job), or set outside Python
        yield pressed
        return

    def hold(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        tqdm.write("stopping after this step (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, hold)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_loop(
    job: Job,
    batch_at,
    total_steps: int,
    work: Path,
    settings: dict,
    *,
    save_every: int = 25,
    desc: str = "train",
) -> list[dict]:
    """Run `job` for `total_steps` (batch_at(step) gives each batch); return all metric rows."""
    work.mkdir(parents=True, exist_ok=True)
    settings_file = work / "settings.json"
    settings_json = json.dumps(settings, sort_keys=True, default=str)
    if settings_file.exists() and settings_file.read_text() != settings_json:
        raise RunError(
            f"{work} holds a partial run with other settings (or other data, or from an earlier "
            "version of sft-eraser); rerun its command to resume it, or delete that directory "
            "to start over"
        )
    write_atomic(settings_file, settings_json)

    start = _load_state(work, job) if (work / "state.pt").exists() else 0
    metrics_file = work / "metrics.jsonl"
    _truncate_metrics(metrics_file, start)

    # `done` steps are in the job's state and the log; `saved` of them are in state.pt.
    done = saved = start
    in_step = False
    bar = tqdm(total=total_steps, initial=start, desc=desc, dynamic_ncols=True)
    try:
        with metrics_file.open("a") as log, ctrl_c_at_step_end() as pressed:
            for step in range(start, total_steps):
                if pressed:
                    raise KeyboardInterrupt
                in_step = True
                row = {"step": step, **job.train_step(step, batch_at(step))}
                log.write(json.dumps(row) + "\n")
                log.flush()
                done, in_step = step + 1, False
                bar.update(1)
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in row.items() if k in ("loss", "density", "lambda")}
                )
                if done % save_every == 0 and done < total_steps:
                    _save_state(work, done, job)
                    saved = done
            if pressed:  # during the last step: saved below; a rerun only writes the output
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        # Keep what was done: the same command resumes from here. Stopped inside a step (a second
        # Ctrl-C, or one outside the main thread), the job's state may hold part of that step:
        # the last checkpoint stands.
        if not in_step:
            _save_state(work, done, job)
            saved = done
        bar.write(f"interrupted; rerun the same command to resume from step {saved}")
        raise
    finally:
        bar.close()
    return read_metrics(metrics_file)


def finish_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
