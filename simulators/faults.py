"""Injectable faults, by schedule or by probability.

A fault spec is a comma-separated list of entries, the same on the command line
(``--faults "stall@3,garble%0.01"``) and in a lab file (``faults: "stall@3"``):

- ``NAME@N``  fire at the N-th opportunity for that fault (1-based), once;
- ``NAME%P``  fire with probability P (0–1) at every opportunity;
- ``NAME``    fire at every opportunity.

``NAME`` may also be a group: ``link`` stands for each link fault (``link%0.05`` is
``drop%0.05,garble%0.05,partial%0.05,silent%0.05``) and ``instrument`` for each of the instrument's
own faults. Probabilities are drawn from a generator seeded per instrument (a lab's ``faults_seed``
mixed with the instrument's name), so a run with the same seed sees the same faults.

What counts as an opportunity is the simulator's choice and is documented with the fault
(a ``stall`` opportunity is a RUN command; a ``garble`` opportunity is a reply). A test can also
inject a fault at the next opportunity: ``plan.inject("garble")`` (on the simulator's loop, e.g.
through ``BackgroundLab.inject``).
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

#: Group names a spec may use for several faults at once.
GROUPS = ("link", "instrument")

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
            if name in GROUPS:
                names = [n for n in allowed if (n in LINK_FAULTS) == (name == "link")]
            elif name in allowed:
                names = [name]
            else:
                choices = ", ".join([*sorted(allowed), *GROUPS])
                raise FaultSpecError(f"unknown fault {name!r}; allowed: {choices}")
            at = int(match["at"]) if match["at"] else None
            probability = float(match["p"]) if match["p"] else None
            if at is not None and at < 1:
                raise FaultSpecError(f"fault entry {entry!r}: N counts from 1")
            if probability is not None and not 0.0 <= probability <= 1.0:
                raise FaultSpecError(f"fault entry {entry!r}: P must be between 0 and 1")
            rules += [FaultRule(each, at, probability) for each in names]
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

    def inject(self, name: str, times: int = 1, *, skip: int = 0) -> None:
        """Fire ``name`` at ``times`` opportunities in a row, after ``skip`` more have passed.

        Besides whatever the rules say; ``inject("garble")`` spoils the next reply.
        """
        if times < 1 or skip < 0:
            raise ValueError(f"need times >= 1 and skip >= 0, not {times} and {skip}")
        first = self._opportunities[name] + skip + 1
        self.rules += [FaultRule(name, at=first + n) for n in range(times)]

    def opportunities(self, name: str) -> int:
        """Opportunities for ``name`` so far."""
        return self._opportunities[name]
