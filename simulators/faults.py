"""Injectable faults, by schedule or by probability.

A fault spec is a comma-separated list of entries, the same on the command line
(``--faults "stall@3,garble%0.01"``) and in a lab file (``faults: "stall@3"``):

- ``NAME@N``  fire at the N-th opportunity for that fault (1-based), once;
- ``NAME%P``  fire with probability P (0–1) at every opportunity;
- ``NAME``    fire at every opportunity.

What counts as an opportunity is the simulator's choice and is documented with the fault
(a ``stall`` opportunity is a RUN command; a ``garble`` opportunity is a reply).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

# Faults every byte-level simulator supports, because they live in the shared stream layer.
LINK_FAULTS: dict[str, str] = {
    "drop": "close the connection instead of replying (TCP; on a pty the reply is lost)",
    "garble": "corrupt one byte of a reply",
    "partial": "send only the first half of a reply",
    "silent": "swallow a reply (the client times out)",
}

_ENTRY = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)(?:@(?P<at>\d+)|%(?P<p>[0-9.]+))?$")


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed or names a fault the simulator does not have."""


@dataclass(frozen=True)
class FaultRule:
    name: str
    at: int | None = None
    probability: float | None = None


class FaultPlan:
    """Decides, opportunity by opportunity, whether a named fault fires."""

    def __init__(self, rules: list[FaultRule] | None = None, *, seed: int = 0):
        self.rules = list(rules or [])
        self._rng = random.Random(seed)
        self._opportunities: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()

    @classmethod
    def parse(cls, spec: str | None, allowed: Mapping[str, str], *, seed: int = 0) -> FaultPlan:
        rules = []
        for raw in (spec or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            match = _ENTRY.match(entry)
            if match is None:
                raise FaultSpecError(f"fault entry {entry!r} is not NAME, NAME@N or NAME%P")
            name = match["name"]
            if name not in allowed:
                raise FaultSpecError(f"unknown fault {name!r}; allowed: {', '.join(sorted(allowed))}")
            at = int(match["at"]) if match["at"] else None
            probability = float(match["p"]) if match["p"] else None
            if at is not None and at < 1:
                raise FaultSpecError(f"fault entry {entry!r}: N counts from 1")
            if probability is not None and not 0.0 <= probability <= 1.0:
                raise FaultSpecError(f"fault entry {entry!r}: P must be between 0 and 1")
            rules.append(FaultRule(name, at, probability))
        return cls(rules, seed=seed)

    def fires(self, name: str) -> bool:
        """Count one opportunity for ``name`` and say whether the fault happens now."""
        self._opportunities[name] += 1
        count = self._opportunities[name]
        for rule in self.rules:
            if rule.name != name:
                continue
            if rule.at is not None:
                hit = rule.at == count
            elif rule.probability is not None:
                hit = self._rng.random() < rule.probability
            else:
                hit = True
            if hit:
                self.fired[name] += 1
                return True
        return False

    def has(self, name: str) -> bool:
        return any(rule.name == name for rule in self.rules)
