"""Build argparse flags from a dataclass: one `--flag` per field, help from the field docstring."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path


def field_docs(cls) -> dict[str, str]:
    """The string literal under each field of a dataclass (litgpt-style field docs)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(getattr(nxt, "value", None), ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    return docs


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        # `Path | None` and the like: parse as the non-None type.
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        # A mode (`Literal`): a string, checked by the config with a message naming the choices.
        if typing.get_origin(kind) is typing.Literal:
            kind = str
        # argparse %-formats help strings: a literal "%" in a docstring would break --help.
        help_text = docs.get(f.name, "").replace("%", "%%")
        required = f.default is dataclasses.MISSING
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        elif typing.get_origin(kind) is tuple:  # tuple[X, ...]: one or more values after the flag
            item = typing.get_args(kind)[0]
            parser.add_argument(
                flag,
                nargs="+",
                type=item,
                default=f.default,
                help=help_text + f" (default: {' '.join(map(str, f.default)) or 'none'})",
            )
        else:
            default = None if required else f.default
            # An empty default is "none", not a dangling "(default: )".
            shown = "none" if default == "" else default
            parser.add_argument(
                flag,
                type=Path if kind is Path else kind,
                required=required,
                default=default,
                help=help_text + ("" if required else f" (default: {shown})"),
            )


def dataclass_from_args(cls, args: argparse.Namespace):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
