"""A throwaway PostgreSQL for tests: `initdb` and `pg_ctl` in a temporary directory, listening on
a free loopback port, stopped and deleted at the end. PostgreSQL refuses to run as root, so as
root (CI) its commands run as the unprivileged user `nobody`."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

BIN_ENV = "SFT_ERASER_PG_BIN"  # a directory holding initdb and pg_ctl
RUN_AS = "nobody"


def find_bindir() -> Path | None:
    """$SFT_ERASER_PG_BIN, else the PATH's pg_ctl, else Debian's newest /usr/lib/postgresql."""
    candidates = [os.environ.get(BIN_ENV), shutil.which("pg_ctl")]
    candidates = [str(Path(c).parent) if c and c.endswith("pg_ctl") else c for c in candidates]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _version(bindir: str) -> int:
    name = Path(bindir).parent.name
    return int(name) if name.isdigit() else 0


class PostgresServer:
    """One cluster; `start`/`stop` may be called again (tests stop it during traffic)."""

    def __init__(self, bindir: Path, port: int):
        self.bindir, self.port = bindir, port
        # Under /tmp, not pytest's tmp_path: `nobody` must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="sft-eraser-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, RUN_AS)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(self._command(tool, *args), capture_output=True, text=True)
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{tail}")
