"""Campaign records, and who runs each one: a claim (owner, epoch, heartbeat) taken in one transaction.

A process that runs a campaign — `sdl run` or the lab service — claims it first. A claim is taken only
when the campaign is unclaimed, or its owner's heartbeat is older than ``stale_after`` (or the owner is a
dead process on this host), so two processes racing to resume a crashed campaign cannot both win: the
second one re-reads the row inside its own write transaction and finds the first one's fresh claim.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

from sdl.spec.status import CampaignStatus, check_campaign_transition
from sdl.store.connection import Connection, StoreError, row_dict
from sdl.store.schema import CampaignRecord, dumps, loads, now_iso

#: How often a claim's owner refreshes its heartbeat, and how old a heartbeat must be to be taken over.
HEARTBEAT_S = 1.0
STALE_AFTER_S = float(os.environ.get("SDL_CLAIM_STALE_S", "10"))


class UnknownCampaign(StoreError, LookupError):
    pass


class CampaignBusy(StoreError):
    """The campaign is claimed by a process that is still alive."""


class LostClaim(StoreError):
    """Another process took this campaign over (this process's heartbeat had gone stale)."""


def new_owner(kind: str) -> str:
    """A claim owner's name: what it is, where it runs, its pid, and a token unique to this start."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_alive_here(owner: str) -> bool | None:
    """Whether the owner process is alive, when it runs on this host (None: cannot tell from here)."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return None
    pid = int(parts[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_a_zombie(pid)


def _not_a_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def claim_is_stale(owner: str | None, heartbeat_at: float | None, now: float, stale_after: float) -> bool:
    if owner is None:
        return True
    if owner_alive_here(owner) is False:
        return True
    return heartbeat_at is None or now - heartbeat_at > stale_after


class CampaignsMixin(Connection):
    def create_campaign(
        self,
        *,
        name: str,
        spec: Mapping[str, Any],
        seed: int,
        max_experiments: int,
        source_path: str | None = None,
        source_text: str | None = None,
        base_dir: str | None = None,
        owner: str | None = None,
        submitted_by: str | None = None,
        priority: int = 0,
        weight: float = 1.0,
    ) -> str:
        """Record a new campaign as running (claimed by ``owner`` when given); return its id."""
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "campaign"
        campaign_id = f"{slug}-{secrets.token_hex(3)}"
        now = now_iso()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO campaigns (id, name, status, spec_json, source_path, source_text, base_dir, "
                "seed, max_experiments, runner_pid, runner_host, created_at, started_at, owner, epoch, "
                "heartbeat_at, submitted_by, priority, weight) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign_id, name, CampaignStatus.RUNNING.value, dumps(spec), source_path, source_text,
                    base_dir, seed, max_experiments, os.getpid(), socket.gethostname(), now, now, owner,
                    1 if owner else 0, time.time() if owner else None, submitted_by, priority, weight,
                ),
            )  # fmt: skip
        return campaign_id

    def campaign(self, campaign_id: str) -> CampaignRecord:
        rows = self._read("SELECT * FROM campaigns WHERE id = ?", (campaign_id,))
        if not rows:
            raise UnknownCampaign(f"no campaign {campaign_id!r} in {self.where} (see `sdl campaigns`)")
        return campaign_record(rows[0])

    def campaigns(self) -> list[CampaignRecord]:
        return [campaign_record(r) for r in self._read("SELECT * FROM campaigns ORDER BY created_at, id")]

    # -- claims ----------------------------------------------------------------------------------------

    def claim_campaign(self, campaign_id: str, owner: str, *, stale_after: float = STALE_AFTER_S) -> int:
        """Take the campaign for ``owner``; return the claim's epoch, or raise :class:`CampaignBusy`."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT owner, epoch, heartbeat_at FROM campaigns WHERE id = ?", (campaign_id,)
            ).fetchone()
            if row is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r} in {self.where} (see `sdl campaigns`)")
            held_by = row["owner"]
            if held_by != owner and not claim_is_stale(held_by, row["heartbeat_at"], now, stale_after):
                age = now - (row["heartbeat_at"] or now)
                raise CampaignBusy(
                    f"campaign {campaign_id} is being run by {describe_owner(held_by)} "
                    f"(its last heartbeat was {age:.1f} s ago)"
                )
            epoch = int(row["epoch"]) + 1
            conn.execute(
                "UPDATE campaigns SET owner = ?, epoch = ?, heartbeat_at = ?, runner_pid = ?, "
                "runner_host = ? WHERE id = ?",
                (owner, epoch, now, os.getpid(), socket.gethostname(), campaign_id),
            )
        return epoch

    def heartbeat(self, owner: str, *, stale_after: float = STALE_AFTER_S) -> set[str]:
        """Refresh ``owner``'s claims and add the time since the last beat to each running campaign's wall
        time; return the ids it still holds (a campaign missing from it was taken over)."""
        self.check_present()
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                # The time since the last beat, at most ``stale_after`` and never negative (a clock step).
                "UPDATE campaigns SET active_seconds = active_seconds + CASE WHEN ? < heartbeat_at THEN 0 "
                "WHEN ? - heartbeat_at > ? THEN ? ELSE ? - heartbeat_at END "
                "WHERE owner = ? AND status = 'running' AND control != 'pause' AND heartbeat_at IS NOT NULL",
                (now, now, stale_after, stale_after, now, owner),
            )
            conn.execute("UPDATE campaigns SET heartbeat_at = ? WHERE owner = ?", (now, owner))
            rows = conn.execute("SELECT id FROM campaigns WHERE owner = ?", (owner,)).fetchall()
        return {r["id"] for r in rows}

    def release_campaign(self, campaign_id: str, owner: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE campaigns SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?",
                (campaign_id, owner),
            )

    # -- status and settings -----------------------------------------------------------------------------

    def set_campaign_status(
        self, campaign_id: str, status: CampaignStatus, reason: str | None = None
    ) -> None:
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
            if row is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r}")
            check_campaign_transition(CampaignStatus(row["status"]), status)
            if status is CampaignStatus.RUNNING:
                conn.execute(
                    "UPDATE campaigns SET status = ?, stop_reason = NULL, finished_at = NULL, "
                    "control = 'run' WHERE id = ?",
                    (status.value, campaign_id),
                )
            else:
                conn.execute(
                    "UPDATE campaigns SET status = ?, stop_reason = ?, finished_at = ? WHERE id = ?",
                    (status.value, reason, now_iso(), campaign_id),
                )

    def set_control(self, campaign_id: str, control: str) -> None:
        """The lab service's instruction for a running campaign: run, pause, stop (after the current), or
        abort (the current are being aborted)."""
        if control not in ("run", "pause", "stop", "abort"):
            raise ValueError(f"unknown control {control!r} (allowed: run, pause, stop, abort)")
        with self._tx() as conn:
            cur = conn.execute("UPDATE campaigns SET control = ? WHERE id = ?", (control, campaign_id))
            if cur.rowcount == 0:
                raise UnknownCampaign(f"no campaign {campaign_id!r}")

    def set_budget(self, campaign_id: str, spec: Mapping[str, Any], max_experiments: int) -> None:
        """Replace the campaign's spec after an operator changed its budget."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE campaigns SET spec_json = ?, max_experiments = ? WHERE id = ?",
                (dumps(spec), max_experiments, campaign_id),
            )

    def delete_campaign(self, campaign_id: str, *, stale_after: float = STALE_AFTER_S) -> None:
        """Remove a campaign and everything recorded for it; refused while a live process runs it."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT owner, heartbeat_at FROM campaigns WHERE id = ?", (campaign_id,)
            ).fetchone()
            if row is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r} in {self.where} (see `sdl campaigns`)")
            if not claim_is_stale(row["owner"], row["heartbeat_at"], time.time(), stale_after):
                raise CampaignBusy(
                    f"campaign {campaign_id} is being run by {describe_owner(row['owner'])}; stop it first"
                )
            ids = "SELECT id FROM experiments WHERE campaign_id = ?"
            tables = (
                "decisions",
                "transitions",
                "documents",
                "run_documents",
                "journal",
                "leases",
                "provenance",
            )
            for table in tables:
                conn.execute(f"DELETE FROM {table} WHERE experiment_id IN ({ids})", (campaign_id,))
            conn.execute("UPDATE experiments SET retry_of = NULL WHERE campaign_id = ?", (campaign_id,))
            conn.execute("DELETE FROM experiments WHERE campaign_id = ?", (campaign_id,))
            conn.execute("DELETE FROM events WHERE campaign_id = ?", (campaign_id,))
            conn.execute("DELETE FROM prior_observations WHERE campaign_id = ?", (campaign_id,))
            conn.execute("DELETE FROM campaigns WHERE id = ?", (campaign_id,))


def describe_owner(owner: str | None) -> str:
    if not owner:
        return "nobody"
    parts = owner.split(":")
    if len(parts) >= 3:
        what = {"run": "`sdl run`", "daemon": "the lab service"}.get(parts[0], parts[0])
        return f"{what} (process {parts[2]} on {parts[1]})"
    return owner


def campaign_record(row: Any) -> CampaignRecord:
    row = row_dict(row)
    return CampaignRecord(
        id=row["id"],
        name=row["name"],
        status=CampaignStatus(row["status"]),
        stop_reason=row["stop_reason"],
        spec=loads(row["spec_json"]),
        source_path=row["source_path"],
        source_text=row["source_text"],
        base_dir=row["base_dir"],
        seed=row["seed"],
        max_experiments=row["max_experiments"],
        runner_pid=row["runner_pid"],
        runner_host=row["runner_host"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        owner=row["owner"],
        epoch=row["epoch"],
        heartbeat_at=row["heartbeat_at"],
        active_seconds=row["active_seconds"],
        control=row["control"],
        priority=row["priority"],
        weight=row["weight"],
        submitted_by=row["submitted_by"],
        imported_from=loads(row["imported_from"]) if row["imported_from"] else None,
    )
