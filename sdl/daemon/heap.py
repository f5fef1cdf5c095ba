"""Long-lived processes and the cyclic garbage collector.

What a process has imported and built by the time it is ready (modules, models, a RunEngine) lives as long
as the process. Left to the collector, every full collection walks all of it again: on the lab service's heap
that was a stall of about 100 ms on its event loop, that is, on every API client's request in flight.
Freezing it once, when the process is ready, takes it out of every later collection; what the process makes
afterwards is collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what startup left as garbage, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()
