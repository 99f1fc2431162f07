"""API keys, the erasers each key may use, and the admin token.

Key file (JSON), passed as --api-keys-file:
    {"keys": [
        {"name": "app",     "key": "sk-app-...", "erasers": ["erase-all_caps"]},
        {"name": "redteam", "key": "sk-red-...", "erasers": "*"}
    ]}
`erasers` lists eraser names (every version of each) or is "*" for all. Keys are compared in
constant time and never logged; logs and metrics name the key by its `name`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

ALL = "*"
# Shortest API key or admin token accepted: short secrets fall to guessing.
MIN_SECRET_CHARS = 8


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # sha256 of the key: equal-length inputs for the constant-time compare
    erasers: frozenset[str] | None  # None: every eraser

    def may_use(self, eraser_name: str) -> bool:
        return self.erasers is None or eraser_name in self.erasers


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def token_matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(_digest(presented), _digest(expected))


class KeyRing:
    def __init__(self, keys: list[ApiKey]):
        self.keys = keys

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise KeyFileError(f"cannot read API key file {path}: {e.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KeyFileError(f"API key file {path} is not JSON: {e}") from None
        except RecursionError:
            raise KeyFileError(f"API key file {path}: JSON nested too deeply") from None
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise KeyFileError(f'API key file {path}: expected {{"keys": [ ... ]}}, not empty')
        keys, names, digests = [], set(), set()
        for i, entry in enumerate(entries):
            where = f"API key file {path}, keys[{i}]"
            if not isinstance(entry, dict) or set(entry) - {"name", "key", "erasers"}:
                raise KeyFileError(f"{where}: expected an object with name, key, erasers")
            name, secret, erasers = entry.get("name"), entry.get("key"), entry.get("erasers", [])
            if not isinstance(name, str) or not name or name in names:
                raise KeyFileError(f"{where}: 'name' must be a unique non-empty string")
            if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
                raise KeyFileError(
                    f"{where}: 'key' must be a string of at least {MIN_SECRET_CHARS} characters"
                )
            if erasers != ALL and not (
                isinstance(erasers, list) and all(isinstance(e, str) for e in erasers)
            ):
                raise KeyFileError(f"{where}: 'erasers' must be a list of names or \"*\"")
            digest = _digest(secret)
            if digest in digests:
                raise KeyFileError(f"{where}: the same key appears twice")
            names.add(name)
            digests.add(digest)
            keys.append(ApiKey(name, digest, None if erasers == ALL else frozenset(erasers)))
        return cls(keys)

    def authenticate(self, presented: str | None) -> ApiKey | None:
        if presented is None:
            return None
        digest = _digest(presented)
        match = None
        for key in self.keys:  # no early exit: the time taken does not tell which key matched
            if hmac.compare_digest(digest, key.digest):
                match = key
        return match
