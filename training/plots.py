"""Training curves and per-layer density charts as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.models.roles import MASK_GROUPS  # noqa: E402

# (metric key, panel title); panels whose metric a run did not log are left out.
PANELS = (
    ("loss", "SFT loss (reply tokens)"),
    ("density", "active fraction of mask units"),
    ("lambda", "λ (penalty weight)"),
    ("target_density", "target density"),
)


def plot_curves(rows: list[dict], out: Path, title: str) -> None:
    panels = [(k, t) for k, t in PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True, squeeze=False
    )
    steps = [r["step"] for r in rows]
    for ax, (key, label) in zip(axes[:, 0], panels, strict=True):
        ax.plot(steps, [r.get(key, np.nan) for r in rows], lw=1, label=key)
        if key == "loss":
            for extra in ("ema", "budget"):
                if any(extra in r for r in rows):
                    ax.plot(steps, [r.get(extra, np.nan) for r in rows], lw=1, label=extra)
            ax.legend(loc="upper right", fontsize=8)
        if key == "lambda":
            ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_density(
    channels: list[dict[str, list[int]]], group_sizes: list[dict[str, int]], out: Path, title: str
) -> None:
    """Heatmap: active fraction per (mask group, layer)."""
    grid = np.array(
        [
            [len(channels[layer][g]) / group_sizes[layer][g] for layer in range(len(channels))]
            for g in MASK_GROUPS
        ]
    )
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(channels) + 2), 3.2))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(MASK_GROUPS)), MASK_GROUPS, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="active fraction")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
