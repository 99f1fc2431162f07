"""The report's PNG charts: behavior matrix heatmap, KL bars, per-behavior density heatmaps."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.plots import plot_density  # noqa: E402

KL_BARS = (
    ("sft_carrier", "KL(SFT‖carrier)"),
    ("sft_carrier_eraser", "KL(SFT‖carrier+eraser)"),
    ("target_carrier", "KL(target‖carrier)"),
    ("target_carrier_eraser", "KL(target‖carrier+eraser)"),
)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def matrix_columns(behaviors: list[str]) -> list[tuple[str, str, str]]:
    """(section key, behavior, column title) of the matrix, rates first."""
    return [("rate", b, b) for b in behaviors] + [
        ("false_trigger", b, f"false: {b}") for b in behaviors
    ]


def plot_matrix(report: dict, out: Path) -> None:
    rows = report["matrix"]
    columns = matrix_columns(report["behaviors"])
    grid = np.array([[row[key][b] for key, b, _ in columns] for row in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 2.5, 0.45 * len(rows) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="magma", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(grid):
        color = "black" if value > 0.6 else "white"
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(columns)), [c[2] for c in columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["erasers"] for r in rows], fontsize=8)
    ax.set_xlabel("behavior rate on its prompts | false-trigger rate on benign prompts")
    ax.set_ylabel("eraser set")
    fig.colorbar(im, ax=ax, label="share of replies")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_kl(report: dict, out: Path) -> None:
    behaviors = list(report["kl"])
    width = 0.8 / len(KL_BARS)
    fig, ax = plt.subplots(figsize=(2 * len(behaviors) + 5, 3.2))
    top = 0.0
    for k, (key, label) in enumerate(KL_BARS):
        values = [report["kl"][b].get(key) for b in behaviors]
        values = [np.nan if v is None else v for v in values]
        top = max([top, *(v for v in values if np.isfinite(v))])
        ax.bar([i + k * width for i in range(len(behaviors))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(behaviors))], behaviors)
    ax.set_ylabel("nats per reply token")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, max(top, 1e-3) * 3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_densities(manifest: dict, files: dict[str, str], out_dir: Path) -> None:
    """One density heatmap per carrier behavior, into the file names `files` gives."""
    for entry in manifest["behaviors"]:
        title = f"{entry['name']}: active fraction per mask group and layer"
        out = out_dir / files[entry["name"]]
        plot_density(entry["channels"], manifest["group_sizes"], out, title)
