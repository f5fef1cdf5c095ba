"""Every simulator endpoint serves a new client after the previous one left, from another process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulators.testing import run_simulator

# One request per endpoint, and what its reply ends with (None: the endpoint never answers).
REQUESTS = {
    ("ne1000", "pump"): (b"0\r", b"\x03"),
    ("cavro", "pump"): (b"/1Q\r", b"\x03\r\n"),
    ("ur", "dashboard"): (b"robotmode\n", b"\n"),
    ("ur", "script"): (b'def sdl_probe():\n  textmsg("probe")\nend\n', None),
    ("ur", "gripper"): (b"GET STA\n", b"\n"),
    ("ocean-hdx", "obp"): (None, None),  # an OBP product-id request, built in the client
}

CLIENT = """
import sys
from drivers.transport import Transport
url, request, end = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
if not request:
    from drivers.ocean import codec
    request = codec.request(codec.MessageType.GET_PRODUCT_ID, regarding=7)
with Transport(url, timeout=5.0) as link:
    if end:
        reply = link.exchange(request, lambda t: t.read_until(end))
    else:
        link.write(request)
        reply = b""
print(reply.hex())
"""


def run_client(url: str, request: bytes | None, end: bytes | None) -> str:
    code = CLIENT
    if request is None:  # ocean: the request is built by the client, the reply ends its footer
        end = b"\xc5\xc4\xc3\xc2"
    args = [sys.executable, "-c", code, url, (request or b"").hex(), (end or b"").hex()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("link", ["tcp", "pty"])
@pytest.mark.parametrize(("kind", "endpoint"), list(REQUESTS), ids=[f"{k}.{e}" for k, e in REQUESTS])
def test_an_endpoint_serves_one_client_process_after_another(kind, endpoint, link):
    request, end = REQUESTS[(kind, endpoint)]
    with run_simulator(kind, link=link) as sim:
        url = sim.url(endpoint)
        replies = [run_client(url, request, end) for _ in range(2)]
        received = [r for r in sim.wire_log() if r.endpoint == endpoint]
    assert len(received) == 2, f"{kind}.{endpoint}: the second client's request was not served"
    if end is not None or request is None:
        assert replies[0] and replies[1], "the second client got no reply"
