"""The claim grid (training/claim_grid.py): erasers on learned and magnitude-pruned carriers and on
the plain SFT model, per objective, arm and seed, at one budget; scored on the test split and on an
external labelled set. Resumable: rerun the same command to continue.

    python benchmarks/claim_grid.py --work runs/grid --base runs/grid/base --data runs/grid/data \\
        --external ../shared/data/xstest_prompts.csv --out docs/results/claim
"""

from __future__ import annotations

import argparse

from training.argparse_dataclass import add_dataclass_args, dataclass_from_args
from training.claim_grid import GridConfig, run_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_args(parser, GridConfig)
    summary = run_grid(dataclass_from_args(GridConfig, parser.parse_args()))
    print(f"{len(summary['cells'])} cells scored")


if __name__ == "__main__":
    main()
