"""Entry point of the `sft-eraser` console script."""

from __future__ import annotations

import sys

from server.cli import add_command as add_serve
from training.cli import main as offline_main


def main(argv: list[str] | None = None) -> int:
    return offline_main(argv, extra_commands=[add_serve])


if __name__ == "__main__":
    sys.exit(main())
