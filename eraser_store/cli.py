"""`erasers` commands (list, add, remove, verify, gc, migrate), added to a host CLI's subparsers.

Errors are raised (EraserStoreError, EraserFormatError) for the host CLI to print as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eraser_store.backends import Store, is_url, open_store
from eraser_store.format import carrier_ref
from eraser_store.store import EraserRecord, EraserStore, EraserStoreError, parse_ref

HASH_CHARS = 19  # "sha256:" plus 12 hex digits: enough to tell carriers apart in a table


def add_commands(subparsers) -> None:
    """Add `erasers {list,add,remove,verify,gc,migrate}`; each parser gets func(args) -> exit
    code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        required=True,
        help="eraser store: a directory, or a PostgreSQL URL (postgresql://user@host/db)",
    )
    common.add_argument(
        "--carrier",
        type=Path,
        default=None,
        help="carrier directory to check erasers against (hidden size and fingerprint)",
    )
    group = subparsers.add_parser(
        "erasers", help="the eraser store: list, add, remove, verify, gc, migrate"
    ).add_subparsers(dest="sub", required=True)

    p = group.add_parser("list", parents=[common], help="registered erasers (latest versions)")
    p.add_argument("--all", action="store_true", help="every version, not just the latest")
    p.set_defaults(func=_cmd_list)

    p = group.add_parser("add", parents=[common], help="register an eraser as a new version")
    p.add_argument("path", type=Path, help="eraser directory")
    p.add_argument("--name", default=None, help="store name (default: the eraser's own name)")
    p.add_argument(
        "--force", action="store_true", help="register even if trained against another carrier"
    )
    p.set_defaults(func=_cmd_add)

    p = group.add_parser("remove", parents=[common], help="unregister NAME or one NAME@VERSION")
    p.add_argument("ref", help="NAME (all versions) or NAME@VERSION")
    p.set_defaults(func=_cmd_remove)

    p = group.add_parser(
        "verify", parents=[common], help="check every eraser's files; exit code 1 on problems"
    )
    p.set_defaults(func=_cmd_verify)

    p = group.add_parser(
        "gc", parents=[common], help="remove files left by interrupted adds or removes"
    )
    p.set_defaults(func=_cmd_gc)

    p = group.add_parser(
        "migrate",
        help="copy a directory store into a PostgreSQL store, keeping version numbers; "
        "versions already there are skipped; exit code 1 on problems",
    )
    p.add_argument(
        "--from", dest="src", metavar="DIR", type=Path, required=True, help="store directory"
    )
    p.add_argument(
        "--to", dest="dst", metavar="URL", required=True, help="postgresql://user@host/db"
    )
    p.set_defaults(func=_cmd_migrate)


def _open(args) -> Store:
    carrier = None if args.carrier is None else carrier_ref(args.carrier)
    return open_store(args.store, carrier=carrier)


def _cmd_list(args) -> int:
    store = _open(args)
    records = store.list(all_versions=args.all)
    if not records:
        print(f"no erasers in {store.location}")
        return 0
    print(_table(store, records))
    return 0


def _cmd_add(args) -> int:
    store = _open(args)
    rec = store.add(args.path, name=args.name, force=args.force)
    where = store.location if rec.path is None else rec.path
    print(f"added {rec.ref} (behavior {rec.behavior}, {rec.tokens} tokens) -> {where}")
    return 0


def _cmd_remove(args) -> int:
    name, version = parse_ref(args.ref)
    removed = _open(args).remove(name, version)
    print("removed " + ", ".join(f"{name}@{v}" for v in removed))
    return 0


def _cmd_verify(args) -> int:
    store = _open(args)
    problems = store.verify()
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"ok: {len(store.list(all_versions=True))} eraser versions verified")
    return 0


def _cmd_gc(args) -> int:
    removed = _open(args).gc()
    for path in removed:
        print(f"removed {path}")
    print(f"gc: {len(removed)} leftovers removed")
    return 0


def _cmd_migrate(args) -> int:
    from eraser_store.migrate import migrate
    from eraser_store.pg_store import PgEraserStore

    if not is_url(args.dst):
        raise EraserStoreError(f"--to must be a postgresql:// URL, not {args.dst!r}")
    if not args.src.is_dir():
        raise EraserStoreError(f"--from: no store directory {args.src}")
    done = migrate(EraserStore(args.src), PgEraserStore(args.dst))
    for ref in done.copied:
        print(f"copied {ref}")
    for line in done.problems:
        print(line)
    print(
        f"migrate: {len(done.copied)} copied, {len(done.skipped)} already there, "
        f"{len(done.problems)} problems"
    )
    return 1 if done.problems else 0


def _table(store: Store, records: list[EraserRecord]) -> str:
    header = ["NAME", "VERSION", "BEHAVIOR", "TOKENS", "HIDDEN", "CARRIER", "CREATED"]
    rows = [
        [
            r.name,
            str(r.version),
            r.behavior,
            str(r.tokens),
            str(r.hidden_size),
            r.carrier_fingerprint[:HASH_CHARS],
            r.created,
        ]
        for r in records
    ]
    if store.carrier is not None:
        header.append("FITS")
        for row, r in zip(rows, records, strict=True):
            mismatch = store.carrier_mismatch(r.hidden_size, r.carrier_fingerprint, r.tokens)
            row.append("yes" if mismatch is None else f"no: {mismatch.reason}")
    widths = [max(len(x) for x in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
