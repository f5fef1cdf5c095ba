"""Sign-in tokens for the web dashboard, each mapped to a CurveZMQ key.

A token is ``sdl_`` and 43 random URL-safe characters (256 bits, ``secrets.token_urlsafe(32)``), shown once by
``sdl keys token NAME --key FILE``; the tokens file keeps only its SHA-256::

    tokens:
      ana-laptop: {sha256: 9f86d0…, public_key: "rq:rM>…", secret_key_file: /home/ana/ana.key_secret}

Whoever signs in with a token acts as its key: the role is the key's on the lab service's allow-list (the
service served by ``sdl daemon --http`` looks it up; ``sdl dashboard`` calls the service with the key's
secret, so the service itself decides). Tokens travel only between the browser and the dashboard (an
HttpOnly cookie or an ``Authorization: Bearer`` header), never on the 0MQ side.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from sdl.access.keys import KeyFileError, check_private, read_pair, read_public, write_private
from sdl.store.schema import now_iso

TOKENS_FILE = "tokens.yaml"
PREFIX = "sdl_"


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    public_key: str
    secret_key_file: str | None = None
    issued_at: str | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """The tokens file, read again whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._by_digest: dict[str, TokenEntry] = {}

    def _read(self) -> dict[str, TokenEntry]:
        if not self.path.exists():
            return {}
        check_private(self.path, "the tokens file")
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KeyFileError(f"{self.path}: cannot read the tokens file ({exc})") from None
        tokens = data.get("tokens", {}) if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            raise KeyFileError(f"{self.path}: expected a mapping 'tokens: {{NAME: {{sha256, public_key}}}}'")
        out = {}
        for name, spec in tokens.items():
            if not isinstance(spec, dict) or not {"sha256", "public_key"} <= set(spec):
                raise KeyFileError(f"{self.path}: tokens.{name}: needs 'sha256' and 'public_key'")
            out[str(name)] = TokenEntry(
                str(name),
                str(spec["sha256"]),
                str(spec["public_key"]),
                spec.get("secret_key_file"),
                spec.get("issued_at"),
            )
        return out

    def lookup(self, token: str) -> TokenEntry | None:
        if not token.startswith(PREFIX):
            return None
        with self._lock:
            try:
                st = self.path.stat()
                signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
            except FileNotFoundError:
                signature = None
            if signature != self._signature:
                entries = self._read()
                self._by_digest = {e.sha256: e for e in entries.values()}
                self._signature = signature
            return self._by_digest.get(digest(token))

    def issue(self, name: str, key_file: Path) -> str:
        """A new token for the key in ``key_file``; returns the token (stored only as its digest)."""
        public_key = read_public(key_file)
        secret_file = None
        if str(key_file).endswith(".key_secret"):
            read_pair(key_file)  # it must really hold the secret
            secret_file = str(Path(key_file).resolve())
        entries = self._read()
        token = PREFIX + secrets.token_urlsafe(32)
        entries[name] = TokenEntry(name, digest(token), public_key, secret_file, now_iso())
        self._write(entries)
        return token

    def revoke(self, name: str) -> None:
        entries = self._read()
        if entries.pop(name, None) is None:
            raise KeyFileError(
                f"{self.path}: no token named {name!r} (known: {', '.join(entries) or 'none'})"
            )
        self._write(entries)

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        data = {
            "tokens": {
                e.name: {
                    "sha256": e.sha256,
                    "public_key": e.public_key,
                    **({"secret_key_file": e.secret_key_file} if e.secret_key_file else {}),
                    **({"issued_at": e.issued_at} if e.issued_at else {}),
                }
                for e in entries.values()
            }
        }
        write_private(
            self.path,
            "# Web dashboard sign-in tokens (sdl keys token/revoke): SHA-256 of each token, and its key.\n"
            + yaml.safe_dump(data, sort_keys=False),
        )
