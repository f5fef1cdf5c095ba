"""The store's inventory and tasks (on SQLite and PostgreSQL): stocks change only by recorded transactions,
never go below zero, keep what happened since the lab file declared them; tasks move open -> acknowledged
-> done or cancelled and no other way. And the lab service's arithmetic of what an experiment may take."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sdl.cli import main
from sdl.daemon.stock import NeedsError, declared, needs_of, outlook, shortfalls
from sdl.daemon.usage import book_usage
from sdl.spec.campaign import Campaign
from sdl.spec.lab import load_lab
from sdl.spec.loading import load_campaign
from sdl.store import InventoryError, StockRecord, Store

RED = ("pumps_a", "red")
DECLARED = {RED: {"amount": 1000.0, "unit": "uL", "lot": "R-1", "capacity": 10000.0, "warn_below": 200.0}}


@pytest.fixture
def store(tmp_path: Path, backend):
    with Store(backend.bind(tmp_path)) as store:
        yield store


def usage(event: str, amount: float, **more: Any) -> dict[str, Any]:
    return {"event": event, "consumable": "red", "amount": amount, "unit": "uL", "lot": "R-1", **more}


def test_a_declared_stock_is_booked_down_by_what_was_used_and_up_by_a_refill(store: Store) -> None:
    assert store.declare_stocks(DECLARED, who="lab file") == ["pumps_a.red"]
    book_usage(store, None, "pumps_a", usage("dispensed", 150.0), "station_a", "syringe")
    book_usage(store, None, "pumps_a", usage("withdrawn", 20.0), "station_a", "syringe")  # back into it
    book_usage(store, None, "pumps_a", usage("wasted", 500.0), "station_a", "syringe")  # no change
    book_usage(store, None, "pumps_a", usage("dispensed", 90.0), "station_a", "reservoir")  # drawn already
    assert store.stock(*RED).amount == pytest.approx(870.0)  # type: ignore[union-attr]
    refilled = store.restock(*RED, "replace", 9000.0, lot="R-2", who="ann", why="new bottle")
    assert (refilled.amount, refilled.lot) == (9000.0, "R-2")
    changes = store.stock_changes()
    assert [(c.change, c.amount, c.after, c.lot, c.who) for c in changes] == [
        ("declare", 1000.0, 1000.0, "R-1", "lab file"),
        ("consume", 150.0, 850.0, "R-1", "station_a"),
        ("consume", -20.0, 870.0, "R-1", "station_a"),
        ("replace", 9000.0, 9000.0, "R-2", "ann"),
    ]


def test_a_waste_fills_with_what_was_placed_in_it_and_is_emptied(store: Store) -> None:
    waste = ("arm", "waste")
    store.declare_stocks(
        {waste: {"kind": "waste", "amount": 0, "capacity": 3, "unit": "vials"}}, who="lab file"
    )
    placed = {"event": "placed", "consumable": "waste", "amount": 1.0, "unit": "vials"}
    for _ in range(2):
        book_usage(store, None, "arm", placed, "station_a")
    full = store.stock(*waste)
    assert full is not None and (full.amount, full.available) == (2.0, 1.0)
    (short,) = shortfalls({waste: 2.0}, {waste: full}, {})  # two more vials: room for one
    assert (short.needed, short.left, short.never) == (2.0, 1.0, None)
    over = book_usage(store, None, "arm", {**placed, "amount": 2.0}, "station_a")
    assert over is not None and over.after == 3.0 and "overflowed: 4 put in what holds 3" in (over.why or "")
    emptied = store.restock(*waste, "empty", 0.0, who="ann", why="task 4")
    assert (emptied.amount, emptied.available, emptied.kind) == (0.0, 3.0, "waste")


def test_declaring_again_keeps_the_record_and_takes_the_files_other_fields(store: Store) -> None:
    store.declare_stocks(DECLARED, who="lab file")
    book_usage(store, None, "pumps_a", usage("dispensed", 400.0), "station_a", "syringe")
    again = {RED: {**DECLARED[RED], "amount": 5000.0, "lot": "R-9", "warn_below": 700.0}}
    assert store.declare_stocks(again, who="lab file") == []
    stock = store.stock(*RED)
    assert stock is not None and (stock.amount, stock.lot, stock.warn_below, stock.low) == (
        600.0,
        "R-1",
        700.0,
        True,
    )


def test_a_stock_never_goes_below_zero_and_says_what_was_reported(store: Store) -> None:
    store.declare_stocks(DECLARED, who="lab file")
    change = store.book_usage(None, *RED, 1200.0, lot="R-1", who="station_a", why="dispensed")
    assert (
        change is not None
        and change.after == 0.0
        and "reported 1200 with 1000 on record" in (change.why or "")
    )
    assert store.book_usage(None, "pumps_a", "untracked", 5.0, lot=None, who="w") is None


def test_restocks_are_checked(store: Store) -> None:
    store.declare_stocks(DECLARED, who="lab file")
    with pytest.raises(InventoryError, match="holds at most 10000 uL"):
        store.restock(*RED, "refill", 20000.0, who="ann")
    with pytest.raises(InventoryError, match="needs its new lot"):
        store.restock(*RED, "replace", 500.0, who="ann")
    with pytest.raises(InventoryError, match=r"no stock pumps_b\.red .*stocks: pumps_a\.red"):
        store.restock("pumps_b", "red", "refill", 500.0, who="ann")
    with pytest.raises(InventoryError, match="allowed: refill, replace, correct"):
        store.restock(*RED, "consume", 500.0, who="ann")
    assert [c.change for c in store.stock_changes()] == ["declare"]


def test_tasks_move_open_acknowledged_done_and_no_other_way(store: Store) -> None:
    task = store.open_task("refill", "refill pumps_a.red", who="lab service", instrument="pumps_a",
                           consumable="red", workcell="station_a")  # fmt: skip
    assert task.state == "open" and store.pending_task(*RED) == task
    acknowledged = store.acknowledge_task(task.id, "ann")
    assert (acknowledged.state, acknowledged.acknowledged_by) == ("acknowledged", "ann")
    with pytest.raises(InventoryError, match="cannot become acknowledged"):
        store.acknowledge_task(task.id, "bob")
    done = store.close_task(task.id, "done", "ann", {"lot": "R-2", "amount": 5000})
    assert (done.state, done.closed_by, done.outcome) == ("done", "ann", {"lot": "R-2", "amount": 5000})
    assert store.pending_task(*RED) is None and store.tasks(pending=True) == []
    with pytest.raises(InventoryError, match="is done"):
        store.close_task(task.id, "cancelled", "bob")
    with pytest.raises(InventoryError, match="no task 99"):
        store.acknowledge_task(99, "ann")
    with pytest.raises(InventoryError, match="done or cancelled"):
        store.close_task(task.id, "open", "ann")
    assert [t.id for t in store.tasks()] == [task.id]


def stock(amount: float) -> StockRecord:
    return StockRecord("pumps_a", "red", amount, "uL", None, None, None, None, "")


def test_what_experiments_in_flight_will_take_is_set_aside() -> None:
    needs = {RED: 300.0, ("arm", "feeder"): 1.0}
    assert shortfalls(needs, {RED: stock(500.0)}, {}) == []  # the feeder is not tracked: never short
    (short,) = shortfalls(needs, {RED: stock(500.0)}, {RED: 250.0})
    assert (short.needed, short.left) == (300.0, 250.0)
    assert short.describe() == "pumps_a.red: needs 300 uL, 250 uL left for it" and short.never is None
    small = dataclasses.replace(stock(100.0), capacity=200.0)
    (never,) = shortfalls(needs, {RED: small}, {})
    assert never.describe() == "pumps_a.red: needs 300 uL, more than it holds at most (200 uL)"


def test_a_campaigns_needs_are_mapped_to_the_workcells_instruments() -> None:
    campaign = Campaign.model_validate(
        {
            "name": "c",
            "parameters": [
                {"name": n, "type": "real", "low": 0, "high": 500} for n in ("yellow", "red", "blue")
            ],
            "objectives": [{"measurement": "distance"}],
            "budget": {"max_experiments": 5},
            "procedure": {
                "extractor": "experiments.color_matching.analysis:extract",
                "plan": "experiments.color_matching.procedure:color_match",
                "needs": "experiments.color_matching.procedure:needs",
                "options": {"total_volume_ul": 1500},
            },
        }
    )
    devices = {"dye_pumps": "pumps_b", "water_pump": "water_b", "arm": "arm", "spectrometer": "spectrometer"}
    needs = needs_of(campaign, {"yellow": 100.0, "red": 0.0, "blue": 50.0}, devices, {}, Path.cwd())
    assert needs == {("pumps_b", "yellow"): 100.0, ("pumps_b", "blue"): 50.0, ("water_b", "water"): 1350.0,
                     ("arm", "feeder"): 1.0, ("arm", "waste"): 1.0}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(0, 10000),
    events=st.lists(
        st.tuples(
            st.sampled_from(["dispensed", "withdrawn", "drawn", "wasted", "picked"]), st.floats(0, 3000)
        ),
        max_size=30,
    ),
)
def test_inventory_never_goes_negative_and_consumption_adds_up(
    tmp_path_factory: pytest.TempPathFactory, start: float, events: list[tuple[str, float]]
) -> None:
    with Store(tmp_path_factory.mktemp("inventory")) as store:
        store.declare_stocks({RED: {"amount": start, "unit": "uL"}}, who="lab file")
        expected = start
        for event, amount in events:
            book_usage(store, None, "pumps_a", usage(event, amount), "w", "syringe")
            sign = {"dispensed": 1, "withdrawn": -1}.get(event, 0)  # what changes a syringe
            expected = max(0.0, expected - sign * amount)
            held = store.stock(*RED)
            assert held is not None and held.amount >= 0
            assert held.amount == pytest.approx(expected, abs=1e-6)
        changes = store.stock_changes()
        assert all(c.after >= 0 for c in changes)


def test_the_outlook_at_submit_says_what_the_budget_will_take_and_what_can_never_fit() -> None:
    stations = Path(__file__).resolve().parents[1] / "experiments" / "two_stations"
    lab = load_lab(stations / "lab.yaml")
    campaign = load_campaign(stations / "campaign.yaml").campaign
    campaign = campaign.model_copy(
        update={"budget": campaign.budget.model_copy(update={"max_experiments": 300})}
    )
    stocks = declared(lab)
    notes = outlook(campaign, lab, ["station_a", "station_b"], stocks, stations)
    # 150 experiments a station, a mean of 250 uL of each dye (uniform over 0-500): 37.5 mL, 10 mL syringes.
    red = next(n for n in notes if n.startswith("pumps_a.red:"))
    assert "the budget of 300 will take about 3." in red and "expect about 3 refill(s) of 1e+04 uL" in red, (
        red
    )
    assert len(notes) == 6  # three dyes on two stations; water and vials are not kept
    small = {key: dataclasses.replace(s, capacity=400.0, amount=400.0) for key, s in stocks.items()}
    assert any("may need up to" in n and "more than it holds at most (400 uL)" in n for n in
               outlook(campaign, lab, ["station_a"], small, stations))  # fmt: skip
    broken = campaign.model_copy(
        update={"procedure": campaign.procedure.model_copy(update={"needs": "math:sqrt"})}
    )
    with pytest.raises(NeedsError, match=r"procedure\.needs 'math:sqrt' failed: TypeError"):
        outlook(broken, lab, ["station_a"], stocks, stations)


def test_sdl_validate_with_a_lab_says_what_the_budget_will_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    stations = Path(__file__).resolve().parents[1] / "experiments" / "two_stations"
    spec = yaml.safe_load((stations / "campaign.yaml").read_text())
    spec["budget"]["max_experiments"] = 300
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path), "--lab", str(stations / "lab.yaml")]) == 0
    out = capsys.readouterr().out
    assert "note: pumps_b.yellow: the budget of 300 will take about" in out and "refill(s)" in out
    spec["procedure"]["needs"] = "math:sqrt"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path), "--lab", str(stations / "lab.yaml")]) == 2
    assert "procedure.needs 'math:sqrt' failed: TypeError" in capsys.readouterr().err
