"""The UR Dashboard Server (TCP 29999): power, brakes, program and safety state, protective stops.

One request line, one reply line. The server greets each new TCP connection; pyserial flushes
input while it opens a ``socket://`` link, so the greeting may or may not still be there. We do
not wait for it: the first exchange discards whatever arrived before it, and a greeting that
arrives late is skipped when it is read in place of a reply (no command is ever answered so).
"""

from __future__ import annotations

import logging
from typing import Any

from drivers.errors import CommandRejected, ProtocolError
from drivers.transport import Transport
from drivers.ur import codec
from drivers.ur.codec import ProgramState, RobotMode, SafetyStatus
from drivers.ur.errors import RemoteControlRequired, UnlockRefused

log = logging.getLogger(__name__)

DEFAULT_PORT = 29999


class URDashboard:
    def __init__(self, transport: Transport, *, reply_timeout: float | None = 0.5):
        self.transport = transport
        if reply_timeout is not None:
            transport.reply_timeout = reply_timeout  # the ceiling: the transport learns the round trip
        self._has_safetystatus = True
        self._has_remote_query = True

    @classmethod
    def connect(cls, url: str, **options: Any) -> URDashboard:
        dashboard = cls(Transport(url), **options)
        dashboard.open()
        return dashboard

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> URDashboard:
        self.transport.open()
        log.info("dashboard connected at %s", self.transport.url)
        return self

    def close(self) -> None:
        self.transport.close()

    def reconnect(self) -> None:
        """Open a fresh connection (after a dropped link or a garbled reply)."""
        log.info("dashboard: reconnecting to %s", self.transport.url)
        with self.transport.locked():
            self.transport.close()
            self.open()

    # -- raw -------------------------------------------------------------------------------
    def request(self, command: str) -> str:
        """Send one command and return its reply line (without the line end)."""
        raw = self.transport.exchange(codec.encode_command(command), self._read_reply)
        reply = codec.decode_line(raw)
        log.debug("dashboard %r -> %r", command, reply)
        return reply

    def _read_reply(self, transport: Transport) -> bytes:
        line = transport.read_until(b"\n")
        if line.rstrip(b"\r\n") == codec.GREETING.encode():
            line = transport.read_until(b"\n")
        return line

    def _command(self, command: str, expected: str) -> str:
        reply = self.request(command)
        if reply.lower().startswith(expected.lower()):
            return reply
        if reply.startswith("Command is not allowed due to safety reasons"):
            raise RemoteControlRequired(
                f"{command!r} refused: the robot is in local control; switch to Remote Control on the pendant"
            )
        if reply.lower().startswith("cannot unlock protective stop"):
            raise UnlockRefused(f"{command!r} refused by the controller: {reply}")
        if reply.lower().startswith(("failed to execute", "file not found", "error")):
            raise CommandRejected(f"{command!r} refused: {reply}")
        raise ProtocolError(f"{command!r}: expected {expected!r}, got {reply!r}")

    # -- queries ---------------------------------------------------------------------------
    def robot_mode(self) -> RobotMode:
        """The cheapest round trip: one short line each way."""
        return codec.parse_robot_mode(self.request("robotmode"))

    def safety_status(self) -> SafetyStatus:
        """``safetystatus`` on e-Series 5.4+, falling back to ``safetymode`` where it is unknown (CB3)."""
        if self._has_safetystatus:
            reply = self.request("safetystatus")
            if not codec.is_unknown_command(reply):
                return codec.parse_safety(reply)
            self._has_safetystatus = False
        return codec.parse_safety(self.request("safetymode"))

    def is_running(self) -> bool:
        return codec.parse_running(self.request("running"))

    def program_state(self) -> ProgramState:
        return codec.parse_program_state(self.request("programState"))

    def is_in_remote_control(self) -> bool:
        """e-Series 5.6+; a CB3 has no local/remote mode, so it always takes remote commands."""
        if not self._has_remote_query:
            return True
        reply = self.request("is in remote control")
        if codec.is_unknown_command(reply):
            self._has_remote_query = False
            return True
        return codec.parse_bool(reply)

    def polyscope_version(self) -> str:
        return self.request("PolyscopeVersion")

    # -- commands --------------------------------------------------------------------------
    def power_on(self) -> None:
        log.info("dashboard: power on")
        self._command("power on", codec.POWERING_ON)

    def power_off(self) -> None:
        log.info("dashboard: power off")
        self._command("power off", codec.POWERING_OFF)

    def brake_release(self) -> None:
        log.info("dashboard: brake release")
        self._command("brake release", codec.BRAKE_RELEASING)

    def unlock_protective_stop(self) -> None:
        """UnlockRefused within 5 s of the stop: the controller enforces that rule itself."""
        log.info("dashboard: unlock protective stop")
        self._command("unlock protective stop", codec.PROTECTIVE_STOP_RELEASING)

    def close_safety_popup(self) -> None:
        self._command("close safety popup", codec.CLOSING_SAFETY_POPUP)

    def close_popup(self) -> None:
        self._command("close popup", codec.CLOSING_POPUP)

    def stop(self) -> None:
        """Stop the running program (the arm decelerates and stays where it stops)."""
        log.info("dashboard: stop")
        self._command("stop", codec.STOPPED)
