"""Where each carrier keeps its behavior: per-group and per-layer densities of its last behavior's
masks, and how much two carriers' kept units overlap (Jaccard over (layer, group, unit)).

    python benchmarks/carrier_densities.py refusal_learned10=runs/grid/carrier_refusal_learned10 \\
        fixed_response_learned10=runs/grid/carrier_fixed_response_learned10 --out densities.json

Prints a Markdown table; --out writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

from training.carrier import read_manifest
from training.models.roles import MASK_GROUPS


def kept_units(entry: dict) -> set[tuple[int, str, int]]:
    return {(i, g, u) for i, layer in enumerate(entry["channels"]) for g in layer for u in layer[g]}


def describe(carrier: Path) -> dict:
    manifest = read_manifest(carrier)
    if manifest is None:
        raise SystemExit(f"{carrier} is not a carrier (no carrier.json)")
    entry = manifest["behaviors"][-1]
    sizes = manifest["group_sizes"]
    per_layer = [
        sum(len(layer[g]) for g in MASK_GROUPS) / sum(sizes[i][g] for g in MASK_GROUPS)
        for i, layer in enumerate(entry["channels"])
    ]
    return {
        "behavior": entry["name"],
        "density": entry["density"],
        "group_density": entry["group_density"],
        "layer_density": per_layer,
        "units": kept_units(entry),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("carriers", nargs="+", help="LABEL=CARRIER_DIR")
    ap.add_argument("--out", type=Path, help="JSON file for the figures")
    args = ap.parse_args()
    found = {}
    for item in args.carriers:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"expected LABEL=CARRIER_DIR, got {item!r}")
        found[label] = describe(Path(path))
    header = ["carrier", "density", *MASK_GROUPS, "layers min-max"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label, d in found.items():
        layers = d["layer_density"]
        row = [label, f"{d['density']:.3f}", *(f"{d['group_density'][g]:.3f}" for g in MASK_GROUPS)]
        print("| " + " | ".join([*row, f"{min(layers):.3f}-{max(layers):.3f}"]) + " |")
    overlap = {}
    for a, b in combinations(found, 2):
        ua, ub = found[a]["units"], found[b]["units"]
        overlap[f"{a} vs {b}"] = len(ua & ub) / len(ua | ub)
        print(f"\nkept-unit overlap (Jaccard) {a} vs {b}: {overlap[f'{a} vs {b}']:.3f}", end="")
    print()
    if args.out:
        figures = {k: {n: v for n, v in d.items() if n != "units"} for k, d in found.items()}
        args.out.write_text(json.dumps({"carriers": figures, "overlap": overlap}, indent=2) + "\n")


if __name__ == "__main__":
    main()
