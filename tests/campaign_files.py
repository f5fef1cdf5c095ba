"""Campaign files the lab-service tests submit: the two-parameter bowl, with a procedure of
`daemon_procedures` (imported by the service's workers)."""

from __future__ import annotations

from pathlib import Path

RANDOM = "{kind: random, seed: 5}"
BAYESIAN = "{kind: bayesian, initial_design: 3, seed: 1}"
#: A procedure that takes a while (``SLOW_BOWL % seconds``).
SLOW_BOWL = "{function: 'daemon_procedures:slow_bowl', options: {seconds: %s}}"


def bowl(
    path: Path, budget: int, procedure: str, *, optimizer: str = RANDOM, name: str = "bowl", extra: str = ""
) -> Path:
    """Write the bowl campaign to ``path`` (a directory: its ``bowl.yaml``) and return the file.
    ``procedure`` and ``optimizer`` are YAML mappings; ``extra``: more top-level YAML lines."""
    target = path / "bowl.yaml" if path.is_dir() else path
    target.write_text(
        f"name: {name}\nparameters:\n  - {{name: x, type: real, low: 0.0, high: 1.0}}\n"
        "  - {name: y, type: real, low: 0.0, high: 1.0}\nobjectives: [{measurement: loss}]\n"
        f"budget: {{max_experiments: {budget}}}\noptimizer: {optimizer}\n{extra}procedure: {procedure}\n"
    )
    return target
