"""Who may reach the lab: CurveZMQ key pairs, the allow-list of client keys with roles, dashboard tokens.

Loopback needs none of it (every local caller is an admin); on any other interface the lab service runs
CurveZMQ on every socket it serves (``sdl.access.curve``). See docs/access.md.
"""

from sdl.access.keys import KEY_ENV, KEYS_FILE, SERVER_KEY_ENV, KeyEntry, KeyFileError, KeyRing

__all__ = ["KEYS_FILE", "KEY_ENV", "SERVER_KEY_ENV", "KeyEntry", "KeyFileError", "KeyRing"]
