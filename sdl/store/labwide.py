"""The lab as a whole: instrument health, lab-wide facts (the daemon's claim, the e-stop), the events the
lab service published, and the audit log of who asked for what."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sdl.spec.status import InstrumentState
from sdl.store.campaigns import CampaignBusy, claim_is_stale, describe_owner, owner_alive_here
from sdl.store.connection import Connection
from sdl.store.schema import AuditRecord, EventRecord, InstrumentRecord, dumps, loads, now_iso

_NEW_INSTRUMENT = "INSERT INTO instruments (name, updated_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
#: The lab-state key prefix of a service standing by (`sdl daemon --standby`), followed by its owner name.
STANDBY = "standby:"
_SET_LAB_STATE = (
    "INSERT INTO lab_state (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


class LabwideMixin(Connection):
    # -- instrument health ---------------------------------------------------------------------------------

    def ensure_instruments(self, names: Iterable[str]) -> None:
        now = now_iso()
        with self._tx() as conn:
            conn.executemany(
                _NEW_INSTRUMENT,
                [(n, now) for n in names],
            )

    def instruments(self) -> dict[str, InstrumentRecord]:
        return {r["name"]: _instrument(r) for r in self._read("SELECT * FROM instruments ORDER BY name")}

    def instrument(self, name: str) -> InstrumentRecord | None:
        rows = self._read("SELECT * FROM instruments WHERE name = ?", (name,))
        return _instrument(rows[0]) if rows else None

    def set_instrument_state(
        self,
        name: str,
        state: InstrumentState | str,
        reason: str | None = None,
        *,
        auto_release: bool = False,
        fresh_start: bool = True,
    ) -> InstrumentRecord:
        """Set an instrument's state. Back to 'ok' with ``fresh_start`` (a release from quarantine) its run of
        faults starts over; without (recovered after one fault) it does not, so faults still add up."""
        if state not in set(InstrumentState):
            allowed = ", ".join(InstrumentState)
            raise ValueError(f"unknown instrument state {state!r} (allowed: {allowed})")
        state = InstrumentState(state)
        with self._tx() as conn:
            conn.execute(
                _NEW_INSTRUMENT,
                (name, now_iso()),
            )
            conn.execute(
                "UPDATE instruments SET state = ?, reason = ?, updated_at = ?, "
                "consecutive_faults = CASE WHEN ? THEN 0 ELSE consecutive_faults END, "
                "auto_releases = auto_releases + ? WHERE name = ?",
                (
                    state.value,
                    reason,
                    now_iso(),
                    state is InstrumentState.OK and fresh_start,
                    int(auto_release),
                    name,
                ),
            )
        record = self.instrument(name)
        assert record is not None
        return record

    def record_fault(self, name: str) -> InstrumentRecord:
        """Count one experiment lost to this instrument; return its record (the caller decides quarantine)."""
        with self._tx() as conn:
            conn.execute(
                _NEW_INSTRUMENT,
                (name, now_iso()),
            )
            conn.execute(
                "UPDATE instruments SET consecutive_faults = consecutive_faults + 1, faults = faults + 1, "
                "updated_at = ? WHERE name = ?",
                (now_iso(), name),
            )
        record = self.instrument(name)
        assert record is not None
        return record

    def record_success(self, names: Iterable[str]) -> None:
        """These instruments served an experiment to its end: their run of faults is over."""
        with self._tx() as conn:
            conn.executemany(
                "UPDATE instruments SET consecutive_faults = 0 WHERE name = ? AND consecutive_faults > 0",
                [(n,) for n in names],
            )

    def record_retries(self, name: str, count: int = 1) -> None:
        with self._tx() as conn:
            conn.execute(
                _NEW_INSTRUMENT,
                (name, now_iso()),
            )
            conn.execute("UPDATE instruments SET retries = retries + ? WHERE name = ?", (count, name))

    # -- lab-wide facts ------------------------------------------------------------------------------------

    def lab_state(self, key: str) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM lab_state WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else None

    def set_lab_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM lab_state WHERE key = ?", (key,))
            else:
                conn.execute(_SET_LAB_STATE, (key, dumps(value), now_iso()))

    def claim_lab(self, owner: str, *, stale_after: float) -> int:
        """One lab service per store: take its claim, or raise :class:`CampaignBusy` naming the holder.

        A holder whose heartbeat is fresh keeps the lab; so does one whose heartbeat went quiet while its
        process is still alive on this machine (stopped, or hung): two services must never drive one lab,
        so that one has to be ended first. The claim records when its process started, so a process that
        merely reuses a dead holder's pid is not taken for it."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM lab_state WHERE key = 'daemon'").fetchone()
            held: dict[str, Any] = json.loads(row["value"]) if row else {}
            holder = held.get("owner")
            if holder and holder != owner:
                fresh = not claim_is_stale(holder, held.get("heartbeat_at"), now, stale_after)
                if fresh or _still_running(holder, held.get("started")):
                    quiet = "" if fresh else _quiet_for(held.get("heartbeat_at"), now)
                    raise CampaignBusy(
                        f"the lab in {self.where} is run by {describe_owner(holder)}{quiet} "
                        "(one lab service per store)"
                    )
            epoch = int(held.get("epoch", 0)) + 1
            value = {"owner": owner, "epoch": epoch, "heartbeat_at": now, "started": process_started()}
            conn.execute(_SET_LAB_STATE, ("daemon", dumps(value), now_iso()))
        return epoch

    def lab_heartbeat(self, owner: str, **facts: Any) -> bool:
        """Refresh ``owner``'s claim on the lab; False if it does not hold it (any more)."""
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM lab_state WHERE key = 'daemon'").fetchone()
            held: dict[str, Any] = json.loads(row["value"]) if row else {}
            if held.get("owner") != owner:
                return False
            value = {**held, **facts, "heartbeat_at": time.time()}
            conn.execute(
                "UPDATE lab_state SET value = ?, updated_at = ? WHERE key = 'daemon'",
                (dumps(value), now_iso()),
            )
        return True

    def release_lab(self, owner: str) -> bool:
        """Give up ``owner``'s claim on the lab; False (and nothing changed) if another process holds it."""
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM lab_state WHERE key = 'daemon'").fetchone()
            if row is None or json.loads(row["value"]).get("owner") != owner:
                return False
            conn.execute("DELETE FROM lab_state WHERE key = 'daemon'")
        return True

    def stand_by(self, owner: str, host: str, pid: int) -> None:
        """Say that ``owner`` stands by to take the lab over (refreshed while it waits)."""
        value = {"owner": owner, "host": host, "pid": pid, "seen_at": time.time()}
        with self._tx() as conn:
            conn.execute(_SET_LAB_STATE, (f"{STANDBY}{owner}", dumps(value), now_iso()))

    def stand_down(self, owner: str) -> None:
        """``owner`` no longer stands by (it took the lab over, or it stopped)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM lab_state WHERE key = ?", (f"{STANDBY}{owner}",))

    def standbys(self, *, stale_after: float) -> list[dict[str, Any]]:
        """The services standing by whose last word is fresher than ``stale_after``, oldest first."""
        rows = self._read("SELECT value FROM lab_state WHERE key LIKE ?", (f"{STANDBY}%",))
        now = time.time()
        found = [json.loads(r["value"]) for r in rows]
        return sorted((s for s in found if now - s["seen_at"] <= stale_after), key=lambda s: s["seen_at"])

    # -- events --------------------------------------------------------------------------------------------

    def append_event(
        self,
        topic: str,
        body: Mapping[str, Any],
        campaign_id: str | None = None,
        *,
        seq: int | None = None,
        at: str | None = None,
    ) -> EventRecord:
        """Record an event under the next number (or ``seq``: one already published while the disk was full,
        recorded now with the number and time it went out with)."""
        at = at or now_iso()
        with self._tx() as conn:
            if seq is None:
                cur = conn.execute(
                    "INSERT INTO events (at, topic, campaign_id, body) VALUES (?, ?, ?, ?) RETURNING seq",
                    (at, topic, campaign_id, dumps(body)),
                )
                seq = int(cur.fetchone()[0])
            else:
                conn.execute(
                    "INSERT INTO events (seq, at, topic, campaign_id, body) VALUES (?, ?, ?, ?, ?)",
                    (seq, at, topic, campaign_id, dumps(body)),
                )
                self._numbered("events", "seq")
        return EventRecord(seq=seq, at=at, topic=topic, campaign_id=campaign_id, body=dict(body))

    def events_since(self, seq: int, limit: int = 1000, campaign_id: str | None = None) -> list[EventRecord]:
        where = "seq > ?"
        args: list[object] = [seq]
        if campaign_id is not None:
            where += " AND campaign_id = ?"
            args.append(campaign_id)
        rows = self._read(f"SELECT * FROM events WHERE {where} ORDER BY seq LIMIT ?", (*args, limit))
        return [
            EventRecord(
                seq=r["seq"],
                at=r["at"],
                topic=r["topic"],
                campaign_id=r["campaign_id"],
                body=loads(r["body"]),
            )
            for r in rows
        ]

    def last_event_seq(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    # -- audit ---------------------------------------------------------------------------------------------

    def audit(
        self,
        who: str,
        action: str,
        result: str,
        *,
        origin: str | None = None,
        target: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO audit (at, who, origin, action, target, arguments, result) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (now_iso(), who, origin, action, target, dumps(arguments) if arguments else None, result),
            )
            return int(cur.fetchone()[0])

    def audit_log(
        self,
        *,
        since_id: int = 0,
        limit: int = 1000,
        who: str | None = None,
        action: str | None = None,
        refused: bool | None = None,
        since: str | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        """Audit entries after ``since_id``, oldest first; ``action`` ending in '.' matches a prefix, and
        ``refused`` picks refusals (result 'refused: ...') or everything else."""
        where = ["id > ?"]
        args: list[object] = [since_id]
        if who is not None:
            where.append("who = ?")
            args.append(who)
        if action is not None and action.endswith("."):
            where.append("action LIKE ? ESCAPE '\\'")
            args.append(action.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%")
        elif action is not None:
            where.append("action = ?")
            args.append(action)
        if refused is not None:
            where.append("result LIKE 'refused:%'" if refused else "result NOT LIKE 'refused:%'")
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        rows = self._read(
            f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id {'DESC' if newest_first else ''} "
            "LIMIT ?",
            (*args, limit),
        )
        return [
            AuditRecord(
                id=r["id"], at=r["at"], who=r["who"], origin=r["origin"], action=r["action"],
                target=r["target"], arguments=json.loads(r["arguments"]) if r["arguments"] else None,
                result=r["result"],
            )
            for r in rows
        ]  # fmt: skip


def process_started(pid: int | None = None) -> int | None:
    """When a process on this machine started (clock ticks since boot, from /proc), None if unknown."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _still_running(owner: str, started: object) -> bool:
    """Whether the claim's process is alive on this machine: its pid runs, and it is the same process (it
    started when the claim says). A claim that does not say (an older service) is judged by heartbeat."""
    if owner_alive_here(owner) is not True or not isinstance(started, int):
        return False
    return process_started(int(owner.split(":")[2])) == started


def _quiet_for(heartbeat_at: object, now: float) -> str:
    age = now - heartbeat_at if isinstance(heartbeat_at, int | float) else None
    since = f"{age:.0f} s" if age is not None else "long"
    return f", alive but silent for {since} (stopped or hung? end it before starting another)"


def _instrument(r: Any) -> InstrumentRecord:
    return InstrumentRecord(
        name=r["name"],
        state=InstrumentState(r["state"]),
        reason=r["reason"],
        consecutive_faults=r["consecutive_faults"],
        faults=r["faults"],
        retries=r["retries"],
        auto_releases=r["auto_releases"],
        updated_at=r["updated_at"],
    )
