"""Floating-point operations of one `sft-eraser` command: runs it under torch's FlopCounterMode
and prints the total. The count slows the run (about 1.5x), so take the stage's rate from its
normal run's time (the progress bar's, or the demo's timings.txt).

    python benchmarks/stage_flops.py train carrier --base ... --out /tmp/lcdd --steps 40 ...
"""

from __future__ import annotations

import sys

from torch.utils.flop_counter import FlopCounterMode

from sft_eraser.cli import main as sft_eraser

if __name__ == "__main__":
    sys.argv = ["sft-eraser", *sys.argv[1:]]
    with FlopCounterMode(display=False) as counter:
        try:
            sft_eraser()
        except SystemExit as stop:
            if stop.code:
                raise
    print(f"{counter.get_total_flops() / 1e9:.0f} GFLOP", file=sys.stderr)
