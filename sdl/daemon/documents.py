"""The 0MQ proxy the workers' RunEngines publish event-model documents to, the bluesky way.

Each worker's RunEngine is subscribed to bluesky's own ``bluesky.callbacks.zmq.Publisher``; any bluesky
consumer (``RemoteDispatcher``, live plots, a Tiled writer) subscribes to the proxy's output without
knowing sdl. The frames pass through unchanged. Unlike bluesky's ``Proxy``, this one can be stopped
cleanly from the lab service's own thread (a steerable proxy with a control socket).
"""

from __future__ import annotations

import threading

import zmq


class DocumentProxy:
    def __init__(self, out_address: str) -> None:
        self._context = zmq.Context()
        self._frontend = self._context.socket(zmq.SUB)
        self._frontend.setsockopt(zmq.SUBSCRIBE, b"")
        self._frontend.setsockopt(zmq.LINGER, 0)
        port = self._frontend.bind_to_random_port("tcp://127.0.0.1")
        self.in_address = f"127.0.0.1:{port}"  # what bluesky's Publisher is given
        self._backend = self._context.socket(zmq.PUB)
        self._backend.setsockopt(zmq.LINGER, 0)
        host, _, out_port = out_address.removeprefix("tcp://").rpartition(":")
        if out_port == "0":
            out_port = str(self._backend.bind_to_random_port(f"tcp://{host}"))
        else:
            self._backend.bind(f"tcp://{host}:{out_port}")
        self.out_address = f"tcp://{host}:{out_port}"
        self._control_address = f"inproc://documents-proxy-{id(self)}"
        self._control = self._context.socket(zmq.PAIR)
        self._control.bind(self._control_address)
        self._thread = threading.Thread(target=self._run, name="sdl-documents-proxy", daemon=True)

    def start(self) -> DocumentProxy:
        self._thread.start()
        return self

    def _run(self) -> None:
        control = self._context.socket(zmq.PAIR)
        control.connect(self._control_address)
        try:
            zmq.proxy_steerable(self._frontend, self._backend, None, control)
        finally:
            control.close(linger=0)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=5)
        for socket in (self._control, self._frontend, self._backend):
            socket.close(linger=0)
        self._context.term()
