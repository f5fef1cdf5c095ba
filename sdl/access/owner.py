"""The data directory's owner needs no setup, and nobody else gets in without a secret (as Jupyter does on
localhost): the lab service keeps, in ``DATA_DIR/keys/`` and readable only by the account that owns it,

- ``owner.key_secret``: a CurveZMQ key pair that the service admits as an **admin** without it being on
  the allow-list; the CLI and ``sdl.client.Client`` find it there, so the owner's commands just work, while
  another account on the same machine cannot read it and is refused like any stranger;
- ``owner.token``: a sign-in token for the web dashboard, printed at start as a sign-in URL
  (``http://127.0.0.1:8080/?token=…``), which the page exchanges for a cookie.

Both are made on first use and kept (delete them to make new ones). A file is made private from its first byte
(``sdl.access.keys.write_private``, ``generate``), and the keys directory is made for its owner only.
"""

from __future__ import annotations

import getpass
import hmac
import os
import secrets
from pathlib import Path

from sdl.access.keys import (
    SERVER_KEY_DIR,
    KeyEntry,
    KeyFileError,
    check_private,
    generate,
    keys_directory,
    read_pair,
    write_private,
)
from sdl.access.roles import Role
from sdl.access.tokens import PREFIX

OWNER_KEY_NAME = "owner"
OWNER_TOKEN_FILE = "owner.token"


def owner_key_file(data_dir: Path | str) -> Path:
    return Path(data_dir) / SERVER_KEY_DIR / f"{OWNER_KEY_NAME}.key_secret"


def owner_name() -> str:
    """Who the owner's key speaks for in the audit log: the account that runs the service."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"local:uid {os.getuid()}"


def owner_entry(data_dir: Path) -> KeyEntry:
    """The owner's key as the lab service admits it (made on first use)."""
    path = owner_key_file(data_dir)
    if not path.exists():
        generate(keys_directory(data_dir), OWNER_KEY_NAME)
    check_private(path, "the owner's key")
    public, _ = read_pair(path)
    return KeyEntry(owner_name(), public.decode("ascii"), Role.ADMIN)


def readable_owner_key(data_dir: Path | str) -> Path | None:
    """The owner's key file if this process may read it (the owner's account, or root), else None."""
    path = owner_key_file(data_dir)
    return path if os.access(path, os.R_OK) else None


def owner_token(data_dir: Path) -> str:
    """The dashboard's sign-in token for the owner (made on first use)."""
    path = Path(data_dir) / SERVER_KEY_DIR / OWNER_TOKEN_FILE
    if not path.exists():
        keys_directory(data_dir)
        write_private(path, PREFIX + secrets.token_urlsafe(32) + "\n")
    check_private(path, "the owner's sign-in token")
    token = path.read_text(encoding="utf-8").strip()
    if not token.startswith(PREFIX) or len(token) < len(PREFIX) + 32:
        raise KeyFileError(f"{path}: not a sign-in token; delete it and a new one is made at the next start")
    return token


def same_token(given: str, expected: str) -> bool:
    """Compare tokens in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())
