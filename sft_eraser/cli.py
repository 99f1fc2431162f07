"""Entry point of the `sft-eraser` console script."""

from __future__ import annotations

import sys
from collections.abc import Callable

from training.cli import main as offline_main

PROJECT = ("server", "training", "eraser_store", "sft_eraser")


def serve_commands() -> list[Callable]:
    """`serve`, where the server's dependencies (the `[serve]` extra) are installed."""
    try:
        from server.cli import add_command
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] in PROJECT:
            raise  # a module of this project missing is a broken install, not a choice
        return []
    return [add_command]


def main(argv: list[str] | None = None) -> int:
    return offline_main(argv, extra_commands=serve_commands())


if __name__ == "__main__":
    sys.exit(main())
