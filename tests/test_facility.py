"""Two labs of a facility in one PostgreSQL database, a schema each (the URL's search_path), each with its
own lab service: both campaigns complete, neither record sees the other's, and the first start makes the
schema."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import psycopg
import pytest
from campaign_files import SLOW_BOWL, bowl

from sdl.api import models as m
from sdl.store import Store, bind_store
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


def in_schema(url: str, schema: str) -> str:
    return f"{url}?options={urllib.parse.quote(f'-csearch_path={schema}')}"


def test_two_labs_share_one_database_in_schemas_of_their_own(tmp_path: Path, postgres) -> None:
    url = postgres.database()
    services: list[LabServiceProcess] = []
    try:
        for lab_name, budget in (("north", 4), ("south", 6)):
            lab = tmp_path / f"{lab_name}.yaml"
            lab.write_text(f"name: {lab_name}\nworkcells:\n  w1: {{}}\n  w2: {{}}\n")
            data = tmp_path / lab_name
            bind_store(data, in_schema(url, lab_name))
            service = LabServiceProcess(lab, data, pythonpath=[TESTS, ROOT]).start()
            services.append(service)
            spec = bowl(tmp_path / f"{lab_name}-campaign.yaml", budget, SLOW_BOWL % 0.2,
                        optimizer="{kind: random, seed: 1}", name=f"{lab_name}-bowl")  # fmt: skip
            with service.client() as client:
                client.submit(spec)
        for service, budget in zip(services, (4, 6), strict=True):
            [campaign] = service.call(m.ListCampaigns()).campaigns
            done = wait_for(
                lambda s=service, c=campaign.id: (
                    (r := s.call(m.ShowCampaign(campaign_id=c)).campaign).status != "running" and r
                ),
                120,
                f"{campaign.name} to finish",
            )
            assert done.status == "completed" and done.spent == budget, done
            assert service.call(m.Status()).lab == service.lab.stem
        for service in services:
            assert service.stop() == 0, service.log_text()
    finally:
        for service in services:
            if service.process is not None and service.process.poll() is None:
                service.kill9()
    for lab_name in ("north", "south"):
        with Store(tmp_path / lab_name, read_only=True) as store:
            assert [c.name for c in store.campaigns()] == [f"{lab_name}-bowl"]
    with psycopg.connect(url) as conn:
        schemas = {
            row[0]
            for row in conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'experiments'"
            )
        }
    assert schemas == {"north", "south"}
