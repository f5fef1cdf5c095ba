"""CurveZMQ key files and the allow-list of client keys with their roles.

Key files are pyzmq's own certificates (``zmq.auth.create_certificates``): ``NAME.key`` holds the public
key, ``NAME.key_secret`` the pair. The allow-list is a YAML file (``DATA_DIR/keys.yaml`` unless given)::

    keys:
      ana: {public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", role: operator}

The lab service reads it again whenever it changes on disk, so a key removed with ``sdl keys remove`` (or
through the API) is refused from its very next request, even on a connection opened before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
import zmq
import zmq.auth
from zmq.utils import z85

from sdl.access.roles import Role
from sdl.store.schema import now_iso

log = logging.getLogger(__name__)

KEYS_FILE = "keys.yaml"
SERVER_KEY_DIR = "keys"
SERVER_KEY_NAME = "server"
#: Environment variables the client reads when no option names its key or the service's public key.
KEY_ENV = "SDL_KEY"
SERVER_KEY_ENV = "SDL_SERVER_KEY"


class KeyFileError(ValueError):
    """A key file or the allow-list is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class KeyEntry:
    name: str
    public_key: str  # Z85, 40 characters
    role: Role
    added_at: str | None = None
    added_by: str | None = None


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``directory``; the secret is its owner's alone from the
    moment it exists (made in a private scratch directory, then moved in; never over an existing key)."""
    if not _valid_name(name):
        raise KeyFileError(f"{name!r}: a key name is letters, digits, '-', '_' or '.' (and not empty)")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = (directory / f"{name}.key"), (directory / f"{name}.key_secret")
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path}: already exists; remove it first or choose another name")
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=directory))  # mode 700
    try:
        made_public, made_secret = map(Path, zmq.auth.create_certificates(scratch, name))
        os.chmod(made_secret, 0o600)
        for made, path in ((made_secret, secret), (made_public, public)):
            try:
                os.link(made, path)  # unlike rename, never replaces a key another process just made
            except FileExistsError:
                raise KeyFileError(
                    f"{path}: already exists; remove it first or choose another name"
                ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return public, secret


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable and writable by its owner only (mode 600) from the start;
    readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask, and over a stale scratch file
        out.write(text)
    os.replace(temporary, path)


_warned: set[tuple[Path, int]] = set()


def check_private(path: Path, what: str) -> None:
    """Refuse a file that accounts other than its owner may change (they could make themselves admin or
    sign in as anyone), warn once about one they may read."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if mode & 0o022:
        raise KeyFileError(
            f"{path}: {what} may be changed by other accounts (mode {mode:o}); check it, then chmod 600 it"
        )
    if mode & 0o044 and (path, mode) not in _warned:
        _warned.add((path, mode))
        log.warning("%s: %s is readable by other accounts (mode %o); `chmod 600 %s`", path, what, mode, path)


def read_public(path: Path | str) -> str:
    """The Z85 public key in a key file (public or secret), or a Z85 key given directly."""
    text = str(path)
    if len(text) == 40 and not Path(text).exists():
        return _checked_z85(text, "the public key given")
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a CurveZMQ key file ({exc})") from None
    return _checked_z85(public.decode("ascii"), str(path))


def read_pair(path: Path | str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a CurveZMQ key file ({exc})") from None
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (give the NAME.key_secret file, not NAME.key)")
    return public, secret


def keys_directory(data_dir: Path) -> Path:
    """DATA_DIR/keys, made for its owner only (mode 700) if it does not exist."""
    directory = Path(data_dir) / SERVER_KEY_DIR
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    return directory


def server_pair(data_dir: Path) -> tuple[bytes, bytes, Path]:
    """The lab service's own key pair, made on first use in DATA_DIR/keys/server.key_secret."""
    directory = data_dir / SERVER_KEY_DIR
    secret_file = directory / f"{SERVER_KEY_NAME}.key_secret"
    if not secret_file.exists():
        generate(keys_directory(data_dir), SERVER_KEY_NAME)
    public, secret = read_pair(secret_file)
    return public, secret, directory / f"{SERVER_KEY_NAME}.key"


def _checked_z85(key: str, where: str) -> str:
    try:
        if len(z85.decode(key)) == 32:
            return key
    except (ValueError, KeyError):
        pass
    raise KeyFileError(f"{where}: {key!r} is not a Z85 CurveZMQ public key (40 characters)")


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")


#: Told the public keys a change of the allow-list removed (empty when it only added or changed roles).
KeysChanged = Callable[[frozenset[str]], None]


class KeyRing:
    """The allow-list, read again from disk whenever the file changes (cheap: one stat per lookup).

    Every change reaches the listeners (:meth:`on_change`) once, whatever noticed it first: a request's
    lookup, a handshake, the service's watcher of the file, or a change made through this object.

    ``owner``: the data directory owner's key (``sdl.access.owner``), an admin that is not in the file, so
    that the account running the service needs no setup; lookups find it, listings do not show it."""

    def __init__(self, path: Path, owner: KeyEntry | None = None) -> None:
        self.path = Path(path)
        self.owner = owner
        self._lock = threading.Lock()  # the documents proxy's authenticator runs on a thread of its own
        self._signature: tuple[int, int, int] | None = None
        self._entries: dict[str, KeyEntry] = {}
        self._by_key: dict[str, KeyEntry] = {}
        self._listeners: list[KeysChanged] = []

    def on_change(self, listener: KeysChanged) -> None:
        """Call ``listener`` after every change, on the thread that noticed it, outside the ring's lock."""
        self._listeners.append(listener)

    # -- reading ---------------------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def refresh(self) -> bool:
        """Read the file again if it changed; True if it did (and the listeners were told). A malformed
        file keeps the last good list."""
        with self._lock:
            signature = self._stat()
            if signature == self._signature:
                return False
            entries = load_entries(self.path) if signature is not None else {}
            removed = frozenset(self._by_key) - {e.public_key for e in entries.values()}
            self._signature = signature
            self._entries = entries
            self._by_key = {e.public_key: e for e in entries.values()}
        for listener in list(self._listeners):
            try:
                listener(removed)
            except Exception:
                log.exception("a listener to %s failed", self.path)
        return True

    def entries(self) -> dict[str, KeyEntry]:
        self.refresh()
        return dict(self._entries)

    def by_public_key(self, public_key: str) -> KeyEntry | None:
        if self.owner is not None and public_key == self.owner.public_key:
            return self.owner
        self.refresh()
        return self._by_key.get(public_key)

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self.entries().values())

    def __len__(self) -> int:
        return len(self.entries())

    # -- changing --------------------------------------------------------------------------------------

    def add(self, name: str, public_key: str, role: Role | str, *, by: str | None = None) -> KeyEntry:
        if not _valid_name(name):
            raise KeyFileError(f"{name!r}: a key name is letters, digits, '-', '_' or '.'")
        try:
            role = Role(role)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise KeyFileError(f"role {role!r} is not one of: {allowed}") from None
        public_key = _checked_z85(public_key, name)
        entries = load_entries(self.path) if self.path.exists() else {}
        same = next((e for e in entries.values() if e.public_key == public_key and e.name != name), None)
        if same is not None:
            raise KeyFileError(f"{self.path}: this public key is already allowed as {same.name!r}")
        entry = KeyEntry(name, public_key, role, now_iso(), by)
        entries[name] = entry
        self._write(entries)
        return entry

    def remove(self, name: str) -> KeyEntry:
        entries = load_entries(self.path) if self.path.exists() else {}
        entry = entries.pop(name, None)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none"
            raise KeyFileError(f"{self.path}: no key named {name!r} (allowed: {known})")
        self._write(entries)
        return entry

    def _write(self, entries: dict[str, KeyEntry]) -> None:
        data = {
            "keys": {
                e.name: {
                    "public_key": e.public_key,
                    "role": e.role.value,
                    **({"added_at": e.added_at} if e.added_at else {}),
                    **({"added_by": e.added_by} if e.added_by else {}),
                }
                for e in entries.values()
            }
        }
        write_private(
            self.path,
            "# Clients allowed to reach the lab service, each with a role (sdl keys add/remove/list).\n"
            + yaml.safe_dump(data, sort_keys=False),
        )
        self.refresh()


def load_entries(path: Path) -> dict[str, KeyEntry]:
    """Parse an allow-list file, or raise :class:`KeyFileError` naming the file and the entry at fault (or
    saying that other accounts may change it)."""
    check_private(path, "the allow-list")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeyFileError(f"{path}: cannot read the allow-list ({exc})") from None
    keys = data.get("keys", {}) if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise KeyFileError(f"{path}: expected a mapping 'keys: {{NAME: {{public_key, role}}}}'")
    out: dict[str, KeyEntry] = {}
    allowed = ", ".join(r.value for r in Role)
    for name, spec in keys.items():
        if not isinstance(spec, dict) or "public_key" not in spec or "role" not in spec:
            raise KeyFileError(f"{path}: keys.{name}: needs 'public_key' and 'role'")
        try:
            role = Role(spec["role"])
        except ValueError:
            raise KeyFileError(
                f"{path}: keys.{name}.role: {spec['role']!r} is not one of: {allowed}"
            ) from None
        public_key = _checked_z85(str(spec["public_key"]), f"{path}: keys.{name}.public_key")
        out[str(name)] = KeyEntry(str(name), public_key, role, spec.get("added_at"), spec.get("added_by"))
    return out
