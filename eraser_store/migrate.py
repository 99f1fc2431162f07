"""`erasers migrate`: copy a directory store into a PostgreSQL store, keeping version numbers.

Idempotent: a version already at the destination with the same sha256 is skipped, so a migration
can be run again after an interruption, or to bring over what was added since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eraser_store.pg_store import PgEraserStore
from eraser_store.store import EraserNotFound, EraserStore, EraserStoreError


@dataclass
class Migration:
    copied: list[str] = field(default_factory=list)  # refs
    skipped: list[str] = field(default_factory=list)  # refs already there, same bytes
    problems: list[str] = field(default_factory=list)  # one line each; those versions not copied


def migrate(src: EraserStore, dst: PgEraserStore) -> Migration:
    """Copy every version of `src` that `dst` lacks, under the same name and number. Erasers
    are not checked against a carrier: the source registered them already."""
    done = Migration()
    for rec in src.list(all_versions=True):
        try:
            there = dst.record(rec.name, rec.version)
        except EraserNotFound:
            there = None
        if there is not None:
            if there.sha256 == rec.sha256:
                done.skipped.append(rec.ref)
            else:
                done.problems.append(
                    f"{rec.ref}: {dst.location} holds other bytes under this number "
                    f"(sha256 {there.sha256[:12]}…, here {rec.sha256[:12]}…)"
                )
            continue
        try:
            src.get(rec.name, rec.version)  # the source's own sha256 check first
            dst.add(rec.path, name=rec.name, version=rec.version)
        except EraserStoreError as e:  # EraserCorrupted; a number given out and removed there
            done.problems.append(str(e))
            continue
        done.copied.append(rec.ref)
    return done
