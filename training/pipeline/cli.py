"""`pipeline run` and `pipeline status`, added to the `sft-eraser` subparsers."""

from __future__ import annotations

from pathlib import Path


def add_commands(commands) -> None:
    group = commands.add_parser(
        "pipeline", help="a recipe end to end: data, SFT, LCDD, erasers, the store"
    ).add_subparsers(dest="sub", required=True)
    for name, help_text, func in (
        ("run", "run every stage not done yet (docs/recipes.md)", _cmd_run),
        ("status", "which stages are done, and their times", _cmd_status),
    ):
        p = group.add_parser(name, help=help_text)
        p.add_argument("recipe", type=Path, help="recipe file (TOML)")
        p.add_argument(
            "--work",
            type=Path,
            default=None,
            help="work directory every stage is cached in (default: runs/<recipe name>)",
        )
        if name == "run":
            p.add_argument(
                "--dry-run", action="store_true", help="print each stage's command; run nothing"
            )
        p.set_defaults(func=func)


def _work(args) -> Path:
    return args.work if args.work is not None else Path("runs") / args.recipe.stem


def _cmd_run(args) -> None:
    from training.pipeline.recipe import load_recipe
    from training.pipeline.run import run_pipeline
    from training.pipeline.stages import plan

    recipe = load_recipe(args.recipe)
    if args.dry_run:
        for stage in plan(recipe, _work(args)):
            print(f"{stage.name}: {stage.command}")
        return
    run_pipeline(recipe, _work(args), _run_command)


def _run_command(argv: list[str]) -> int:
    """One stage: the `sft-eraser` command itself, in this process."""
    from training.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args) or 0


def _cmd_status(args) -> None:
    from training.pipeline.recipe import load_recipe
    from training.pipeline.run import status_lines

    print("\n".join(status_lines(load_recipe(args.recipe), _work(args))))
