"""`from sdl.client import Client`: the lab service's Python client, kept importable here for users; it lives
in `sdl.api.client`."""

from __future__ import annotations

from sdl.api.client import Client, Credentials, ServiceUnavailable, address_for, service_info

__all__ = ["Client", "Credentials", "ServiceUnavailable", "address_for", "service_info"]
