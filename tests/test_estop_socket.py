"""The e-stop's own socket (issue 21, item 7): an e-stop that no flood of the API socket stands in front of.

In-process first, on real sockets: the API server's socket is flooded and not read at all, and the e-stop sent
to the e-stop's socket is answered before any of the flood reaches a handler — by the API server's own e-stop
path. Then through the real service: the client finds the socket in daemon.json, the e-stop it sends there is
recorded and announced as any e-stop, other methods are refused there, and a viewer's key cannot connect.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from test_api_limits import REPLY_S, Recorder, dealer, error_type, reply_to, serving, strict_json
from test_daemon import lab_file, service_process

from sdl.access.keys import KeyRing, generate, read_public
from sdl.api import models as m
from sdl.api.estop import EStopServer, limit_estop_socket
from sdl.api.models import ApiError
from sdl.client import Client, Credentials
from sdl.testing import wait_for


def estop_socket(address: str) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    """As the service opens it: a context of its own, the e-stop's limits."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    limit_estop_socket(socket)
    socket.bind(address)
    return context, socket


def test_an_e_stop_is_answered_while_the_api_socket_holds_a_flood_it_has_not_read() -> None:
    connections = 40

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, start=False) as (context, server, go):
            flood = [dealer(context) for _ in range(connections)]
            pad = "y" * (900 << 10)
            for socket in flood:
                request = {"method": "campaign.submit", "id": 1, "params": {"text": pad, "path": "/x"}}
                await socket.send_multipart([b"", json.dumps(request).encode()])
            own, sock = estop_socket("inproc://estop")
            stopper = EStopServer(sock, server.estop)
            serving_estops = asyncio.create_task(stopper.serve())
            operator = zmq.asyncio.Context.shadow(own.underlying).socket(zmq.DEALER)
            operator.setsockopt(zmq.LINGER, 0)
            operator.connect("inproc://estop")
            try:
                await operator.send_multipart([b"", b'{"method": "lab.estop", "id": 99}'])
                reply = strict_json((await reply_to(operator))[-1])
                assert reply == {"id": 99, "ok": True, "result": {"message": "stopped"}}, reply
                # Answered by the API server's e-stop path while the whole flood still waits in its socket.
                assert recorder.calls == ["lab.estop"]
                go.set()
                for socket in flood:
                    assert error_type(strict_json((await reply_to(socket))[-1])) == "not_found"
                assert recorder.calls[0] == "lab.estop" and len(recorder.calls) == connections + 1
            finally:
                serving_estops.cancel()
                await asyncio.gather(serving_estops, return_exceptions=True)
                operator.close(linger=0)
                sock.close(linger=0)
                own.destroy(linger=0)

    asyncio.run(scenario())


def test_the_e_stop_socket_takes_nothing_but_e_stops_one_at_a_time_per_connection() -> None:
    async def scenario() -> None:
        recorder = Recorder(hold=frozenset({"lab.estop"}))
        async with serving(recorder) as (_context, server, _go):
            own, sock = estop_socket("inproc://estop")
            stopper = EStopServer(sock, server.estop)
            serving_estops = asyncio.create_task(stopper.serve())
            client = zmq.asyncio.Context.shadow(own.underlying).socket(zmq.DEALER)
            client.setsockopt(zmq.LINGER, 0)
            client.connect("inproc://estop")
            try:

                async def ask(frames: list[bytes]) -> dict[str, object]:
                    await client.send_multipart(frames)
                    reply = strict_json((await asyncio.wait_for(client.recv_multipart(), REPLY_S))[-1])
                    assert isinstance(reply, dict)
                    return reply

                assert error_type(await ask([b"", b'{"method": "status", "id": 1}'])) == "bad_request"
                assert error_type(await ask([b""] * 8 + [b'{"method": "lab.estop", "id": 2}'])) == "too_large"
                await client.send_multipart([b"", b'{"method": "lab.estop", "id": 3}'])  # held by its handler
                assert error_type(await ask([b"", b'{"method": "lab.estop", "id": 4}'])) == "busy"
                recorder.release.set()
                reply = strict_json((await asyncio.wait_for(client.recv_multipart(), REPLY_S))[-1])
                assert reply == {"id": 3, "ok": True, "result": {"message": "stopped"}}, reply
                assert recorder.calls == ["lab.estop"]
            finally:
                serving_estops.cancel()
                await asyncio.gather(serving_estops, return_exceptions=True)
                client.close(linger=0)
                sock.close(linger=0)
                own.destroy(linger=0)

    asyncio.run(scenario())


# -- through the service ---------------------------------------------------------------------------------


def test_the_service_takes_e_stops_on_their_own_socket_recorded_and_announced_as_any(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    ring = KeyRing(keys / "keys.yaml")
    for name, role in {"oleg": "operator", "ana": "viewer"}.items():
        public, _ = generate(keys, name)
        ring.add(name, read_public(public), role)
    service = service_process(lab_file(tmp_path), tmp_path / "data", "--keys", str(keys / "keys.yaml"))
    service.start()
    try:
        info = json.loads((service.data_dir / "daemon.json").read_text())
        address = info["estop"]
        assert address and address != info["api"]
        server_key = service.data_dir / "keys" / "server.key"
        oleg = Credentials.load(keys / "oleg.key_secret", server_key)
        with Client(address, credentials=oleg, timeout=20) as stopper:
            assert stopper.call(m.EStop(reason="drill")).message.startswith("e-stop")
            with pytest.raises(ApiError) as refused:
                stopper.call(m.Status())
            assert refused.value.error.type == "bad_request"
        with service.client(timeout=20) as owner:
            assert owner.estop_address == address  # found in daemon.json: the owner's e-stops go there
            status = owner.call(m.Status())
            assert status.estop.active and status.estop.by == "oleg", status.estop
            events = owner.call(m.EventsSince(seq=0)).events
            [announced] = [e.body for e in events if e.topic == "lab.estop"]
            assert announced["by"] == "oleg" and announced["active"] is True, announced
            [entry] = owner.call(m.ListAudit(who="oleg", action="lab.estop")).entries
            assert entry.result == "ok"
            owner.call(m.ClearEStop())
            assert owner.call(m.EStop(reason="again")).message.startswith("e-stop")
            assert owner.call(m.Status()).estop.active
        # A viewer may not e-stop: its key does not get through the e-stop socket's handshake, and says so.
        ana = Credentials.load(keys / "ana.key_secret", server_key)
        with Client(address, credentials=ana, timeout=20) as viewer:
            with pytest.raises(ApiError) as refused:
                viewer.call(m.EStop(reason="not mine"))
            assert refused.value.error.type == "unauthenticated"
        with service.client() as owner:

            def audited() -> list[m.AuditEntry]:
                return owner.call(m.ListAudit(action="connect.estop")).entries

            [entry] = wait_for(audited, 30, "the viewer's refusal in the audit log")
            assert entry.who == "ana" and "needs operator" in entry.result, entry
    finally:
        assert service.stop() == 0, service.log_text()
        service.assert_nothing_left()
