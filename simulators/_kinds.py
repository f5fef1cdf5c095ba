"""Imports every built-in simulator so that it registers its kind."""

import importlib

for _module in ("simulators.ne1000", "simulators.cavro", "simulators.ur", "simulators.ocean"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise
