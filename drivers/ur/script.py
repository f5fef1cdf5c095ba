"""The UR secondary interface (TCP 30002): URScript programs in, a binary state stream out.

We only send. The real controller streams state packets to every client of this port about ten
times a second; we throw them away before each send so they never pile up in the socket buffer.
Whether a program ran is read from the Dashboard Server, not from that stream.
"""

from __future__ import annotations

import logging
from typing import Any

from drivers.errors import ConnectionLost
from drivers.transport import Transport

log = logging.getLogger(__name__)

DEFAULT_PORT = 30002


class URScriptClient:
    def __init__(self, transport: Transport):
        self.transport = transport
        self.programs_sent = 0

    @classmethod
    def connect(cls, url: str, **options: Any) -> URScriptClient:
        client = cls(Transport(url, **options))
        client.open()
        return client

    def open(self) -> URScriptClient:
        self.transport.open()
        return self

    def close(self) -> None:
        self.transport.close()

    def reconnect(self) -> None:
        self.transport.reconnect()

    def send_program(self, program: str) -> None:
        """Send a complete ``def …(): … end`` program; the controller starts it on receipt."""
        if not program.endswith("\n"):
            program += "\n"
        with self.transport.locked():
            if not self.transport.is_open:
                self.transport.open()
            try:
                self.transport.discard_input()  # drop streamed state packets
            except ConnectionLost:
                # The controller hung up since the last program; a program is safe to send on a new link.
                log.info("script: link to %s was closed; reconnecting", self.transport.url)
                self.transport.open()
            self.transport.write(program.encode("ascii"))
        self.programs_sent += 1
        log.debug("script: sent %d bytes", len(program))
