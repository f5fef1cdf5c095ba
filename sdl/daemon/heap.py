"""Long-lived processes and their heap: the cyclic garbage collector, and glibc's allocator.

What a process has imported and built by the time it is ready (modules, models, a RunEngine) lives as long
as the process. Left to the collector, every full collection walks all of it again: on the lab service's heap
that was a stall of about 100 ms on its event loop, that is, on every API client's request in flight.
Freezing it once, when the process is ready, takes it out of every later collection; what the process makes
afterwards is collected as usual.

Memory a client made the service take (a message of 15 MB frames, refused) must go back to the system when
it is freed. glibc serves a large block with a mapping of its own, unmapped when freed, but by default it
raises that threshold to the size of the largest block freed so far (up to 32 MB): after one 15 MB frame,
the next ones came from its heaps, which it keeps. Measured: one message of 40 × 15 MB frames left the
service at 135 MB instead of 70 MB; with the threshold fixed and the heaps trimmed after large refusals, it
comes back (tests/test_hostile_client.py). Elsewhere than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

#: Blocks of at least this size get a mapping of their own (glibc's initial default, kept fixed).
MMAP_THRESHOLD = 128 << 10
_M_MMAP_THRESHOLD = -3


def freeze_startup_heap() -> None:
    """Collect what startup left as garbage, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def fix_mmap_threshold() -> bool:
    """Keep glibc from raising its mmap threshold (call early: it applies to blocks allocated after it)."""
    libc = _libc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def return_free_memory() -> bool:
    """Give the free pages of glibc's heaps back to the system (``malloc_trim(0)``: a few milliseconds)."""
    libc = _libc()
    return libc is not None and libc.malloc_trim(0) == 1
