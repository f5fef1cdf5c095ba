"""The web dashboard in headless Chromium: time to first render and time to apply one live event, for a
campaign of 2,000 experiments against a baseline of 20 measured in the same run; and the screenshots in
docs/images.

    python benchmarks/dashboard.py                       # the render table (about 1 minute)
    python benchmarks/dashboard.py --screenshots docs/images   # also the screenshots (two-station lab)

Figures come from the page's own Performance API (``performance.now()`` in `window.sdl.metrics`).
First render: from navigation start to the first complete render with every experiment loaded (median
of three loads, after a warm-up page). Apply one event: from the arrival of the oldest event a frame
shows to the end of that frame's rendering, style and layout, over the live events of the campaign
while it runs 20 more experiments with the page open.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests")]  # the drivers package, not benchmarks/drivers.py

from sdl.access.keys import KeyRing, generate, read_public  # noqa: E402
from sdl.access.tokens import TokenFile  # noqa: E402
from sdl.api import models as m  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def compute_lab(directory: Path) -> Path:
    path = directory / "lab.yaml"
    path.write_text("name: compute\nworkcells:\n  w1: {}\n  w2: {}\n")
    return path


def campaign(directory: Path, name: str, budget: int, procedure: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "parameters:\n"
        "  - {name: x, type: real, low: 0.0, high: 1.0}\n"
        "  - {name: y, type: real, low: 0.0, high: 1.0}\n"
        "  - {name: z, type: real, low: 0.0, high: 1.0}\n"
        "objectives: [{measurement: loss}]\n"
        f"budget: {{max_experiments: {budget}}}\n"
        "optimizer: {kind: random, seed: 1}\n"
        f"procedure:\n  function: {procedure}\n"
    )
    return path


def url_of(service: LabServiceProcess) -> str:
    return str(json.loads((service.data_dir / "daemon.json").read_text())["http"])


def finished(service: LabServiceProcess, campaign_id: str) -> None:
    wait_for(
        lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running",
        1200,
        f"{campaign_id} to end",
    )


def open_page(driver: Any, url: str) -> dict[str, Any]:
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), 120, "the page")
    return dict(driver.execute_script("return window.sdl.metrics"))


def measure(driver: Any, service: LabServiceProcess, campaign_id: str, more: int) -> dict[str, float]:
    """First render of the campaign's page (the median of three loads), then the apply time of the live
    events while it runs ``more`` experiments."""
    first = statistics.median(
        open_page(driver, f"{url_of(service)}/?campaign={campaign_id}")["firstRender"] for _ in range(3)
    )
    rows = driver.execute_script(
        f"return window.sdl.state.experiments.get({json.dumps(campaign_id)}).rows.length"
    )
    budget = service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.budget
    service.call(m.SetBudget(campaign_id=campaign_id, max_experiments=budget + more))
    finished(service, campaign_id)
    wait_for(
        lambda: (
            driver.execute_script(
                f"return window.sdl.state.experiments.get({json.dumps(campaign_id)}).rows.length"
            )
            >= rows + more
        ),
        60,
        "the page to show the new experiments",
    )
    applied = driver.execute_script("return window.sdl.metrics.applyMs")
    return {
        "experiments": rows,
        "first_render_ms": first,
        "apply_median_ms": statistics.median(applied),
        "apply_p95_ms": sorted(applied)[int(0.95 * (len(applied) - 1))],
        "frames": len(applied),
    }


def render_table(quick: bool) -> list[str]:
    large = 500 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        service = LabServiceProcess(
            compute_lab(directory), directory / "data", "--http", "127.0.0.1:0", pythonpath=[HERE]
        ).start()
        driver = browser(1400, 1000)
        try:
            with service.client() as client:
                small_id = client.submit(
                    campaign(directory, "small", 20, "_daemon_procedures:instant")
                ).campaign_id
                finished(service, small_id)
                large_id = client.submit(
                    campaign(directory, "large", large, "_daemon_procedures:instant")
                ).campaign_id
                finished(service, large_id)
            # sign in as the service's owner, with the URL it printed (this also warms the browser up: its
            # first page pays for its own start)
            open_page(driver, service.sign_in_url())
            results = {"baseline (20)": measure(driver, service, small_id, 20)}
            results[f"large ({large})"] = measure(driver, service, large_id, 20)
        finally:
            driver.quit()
            service.stop()
    base = results["baseline (20)"]
    lines = [
        "| campaign | experiments | first render (ms) | ratio | apply one event, median (ms) | p95 (ms) "
        "| ratio | frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['experiments']} | {r['first_render_ms']:.0f} | "
            f"{r['first_render_ms'] / base['first_render_ms']:.2f} | {r['apply_median_ms']:.1f} | "
            f"{r['apply_p95_ms']:.1f} | {r['apply_median_ms'] / base['apply_median_ms']:.2f} | "
            f"{r['frames']} |"
        )
    return lines


def screenshots(out: Path) -> None:
    from test_daemon_lab import colour_campaign, lab_file

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        data = directory / "data"
        public, secret = generate(directory, "oleg")
        KeyRing(data / "keys.yaml").add("oleg", read_public(public), "operator")
        token = TokenFile(data / "tokens.yaml").issue("oleg-laptop", secret)
        service = LabServiceProcess(
            lab_file(directory), data, "--http", "127.0.0.1:0", "--anonymous-viewers",  # the wall screen
            pythonpath=[ROOT / "tests", ROOT],
        ).start()  # fmt: skip
        try:
            with service.client() as client:
                campaign_id = client.submit(colour_campaign(directory, "colour-matching", 60)).campaign_id
                wait_for(
                    lambda: client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.spent >= 24,
                    600,
                    "progress",
                )
                client.call(m.QuarantineInstrument(name="water_b", reason="leaking seal on the valve"))
                client.call(m.PauseCampaign(campaign_id=campaign_id))
                client.call(m.ResumeCampaign(campaign_id=campaign_id))
            laptop = browser(1440, 1000)
            try:
                open_page(laptop, url_of(service))
                laptop.find_element("id", "token").send_keys(token)
                laptop.find_element("id", "signin").click()
                wait_for(lambda: "oleg" in laptop.find_element("id", "who").text, 30, "signed in")
                wait_for(
                    lambda: laptop.execute_script("return document.body.dataset.ready === '1'"), 60, "ready"
                )
                time.sleep(1.5)  # let the plots settle for the picture (not a test)
                laptop.save_screenshot(str(out / "dashboard-operator.png"))
                laptop.delete_all_cookies()
                open_page(laptop, url_of(service))
                time.sleep(1.5)
                laptop.save_screenshot(str(out / "dashboard-viewer.png"))
            finally:
                laptop.quit()
            wall = browser(2560, 1440)
            try:
                open_page(wall, f"{url_of(service)}/?wall")
                time.sleep(1.5)
                wall.save_screenshot(str(out / "dashboard-wall.png"))
            finally:
                wall.quit()
            with service.client() as client:
                client.call(m.ReleaseInstrument(name="water_b", check=False))
                client.call(m.AbortCampaign(campaign_id=campaign_id))
        finally:
            service.stop()
    print(f"screenshots in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500 experiments instead of 2,000")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="also take the screenshots into DIR")
    parser.add_argument("--no-table", action="store_true", help="only the screenshots")
    args = parser.parse_args()
    if not args.no_table:
        print("\n".join(render_table(args.quick)))
    if args.screenshots:
        screenshots(args.screenshots)


if __name__ == "__main__":
    main()
