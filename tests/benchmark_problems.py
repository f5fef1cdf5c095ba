"""The optimizer benchmarks' test problems (benchmarks/_problems.py), for the optimizer's tests.

benchmarks/ is a folder of scripts, not a package, and it cannot simply go on ``sys.path``: its ``drivers.py``
would shadow the ``drivers`` package. So the one module the tests need is loaded from its file, under the
name the benchmark scripts import it by (``_problems``), so both share one copy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_problems.py"


def _load() -> ModuleType:
    loaded = sys.modules.get("_problems")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("_problems", PATH)
    assert spec is not None and spec.loader is not None, PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules["_problems"] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


problems = _load()
