"""Who may reach the lab: CurveZMQ key pairs, the allow-list of client keys with roles, dashboard tokens.

The lab service runs CurveZMQ on every socket it serves, loopback included (``sdl.access.curve``); the
account that owns the data directory needs no setup (``sdl.access.owner``). See docs/access.md.
"""

from sdl.access.keys import KEY_ENV, KEYS_FILE, SERVER_KEY_ENV, KeyEntry, KeyFileError, KeyRing

__all__ = ["KEYS_FILE", "KEY_ENV", "SERVER_KEY_ENV", "KeyEntry", "KeyFileError", "KeyRing"]
