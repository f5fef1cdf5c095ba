"""What the instruments' ophyd faces share: driver calls on a thread, reported through a Status.

ophyd's ``set()`` and ``trigger()`` must return at once with a Status that completes later; the
drivers are synchronous, so each face runs the driver call on a thread and settles the Status
from there — with the driver's own exception when it fails, so the plan fails with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ophyd import Device
from ophyd.status import DeviceStatus, StatusBase
from ophyd.utils import InvalidState

from drivers.errors import InstrumentBusy

log = logging.getLogger(__name__)


def settle(status: StatusBase, exc: BaseException | None = None) -> None:
    """Finish ``status`` or fail it with ``exc``, unless ``stop()`` already settled it (another thread)."""
    try:
        if exc is None:
            status.set_finished()
        else:
            status.set_exception(exc)
    except InvalidState:
        pass


class BackgroundAction:
    """Runs one driver call at a time for a device on a thread, reporting through a DeviceStatus.

    A second call while one is running fails its Status at once with ``InstrumentBusy`` rather
    than queueing: a plan that asks an instrument to do two things at once has a bug.
    """

    def __init__(self) -> None:
        self.busy = threading.Lock()

    def run(self, device: Device, work: Callable[[], None], what: str) -> DeviceStatus:
        status = DeviceStatus(device)
        if not self.busy.acquire(blocking=False):
            status.set_exception(InstrumentBusy(f"{device.name}: busy; cannot {what} now"))
            return status

        def target() -> None:
            try:
                work()
            except Exception as exc:
                log.warning("%s: %s failed: %s", device.name, what, exc)
                self.busy.release()
                settle(status, exc)
            else:
                self.busy.release()
                settle(status)

        threading.Thread(target=target, name=f"{device.name}-{what}", daemon=True).start()
        return status
