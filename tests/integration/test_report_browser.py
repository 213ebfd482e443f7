"""The report opened in a real headless browser (Debian's Chromium): no console errors, no network, every
section and plot rendered. A screenshot goes to tests/output/report.png for a person to look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from analysis_workspace import seeded_secret_keys

from kansrijk.demo import DemoOptions, run_demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "output"
LAUNCH_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECTIONS = ("linkage", "base-rates", "models", "importances", "woz", "factors", "refused", "privacy")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "run"
    with seeded_secret_keys(7):  # the same pseudonyms in every run
        result = run_demo(DemoOptions(out=out, persons=3_000, min_positives=30))
    return result.report


@pytest.fixture(scope="module")
def page(report: Path, tmp_path_factory: pytest.TempPathFactory):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: run `make browser` (apt-get install chromium) first")
    from playwright.sync_api import sync_playwright

    events: list[tuple[str, str]] = []
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        # A persistent context gives chromium a fresh --user-data-dir of our own; headless is playwright's flag.
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            pg = context.new_page()
            pg.on("console", lambda m: events.append((m.type, m.text)))
            pg.on("pageerror", lambda e: events.append(("pageerror", str(e))))
            pg.on("request", lambda r: events.append(("request", r.url)))
            pg.goto(report.as_uri(), wait_until="load")
            OUTPUT.mkdir(exist_ok=True)
            # Written aside and renamed into place: under xdist both workers may run this fixture, and the other
            # worker's test_screenshot_was_saved must never see a half-written file.
            part = OUTPUT / f".report.{os.getpid()}.png"
            try:
                pg.screenshot(path=str(part), full_page=True)
                os.replace(part, OUTPUT / "report.png")
            finally:
                part.unlink(missing_ok=True)
            yield pg, events
        finally:
            context.close()


def test_report_opens_without_console_errors(page) -> None:
    _, events = page
    problems = [e for e in events if e[0] in ("error", "warning", "pageerror")]
    assert problems == []


def test_report_makes_no_request_but_its_own_file(page, report: Path) -> None:
    _, events = page
    requests = [url for kind, url in events if kind == "request"]
    assert requests == [report.as_uri()]


def test_every_section_is_rendered_with_a_heading(page) -> None:
    pg, _ = page
    for section in SECTIONS:
        heading = pg.locator(f"#{section} h2")
        assert heading.count() == 1, section
        assert heading.is_visible() and heading.inner_text().strip()
        box = pg.locator(f"#{section}").bounding_box()
        assert box is not None and box["height"] > 50, section


def test_every_plot_is_drawn(page) -> None:
    pg, _ = page
    figures = pg.locator("figure.plot")
    assert figures.count() >= 4  # base rates, model comparison, importances, WOZ curve
    for i in range(figures.count()):
        svg = figures.nth(i).locator("svg")
        assert svg.count() == 1
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
        assert svg.locator("path, rect, line, circle").count() > 5  # marks, not an empty frame
    for section in ("base-rates", "models", "importances", "woz"):
        assert pg.locator(f"#{section} figure.plot svg").count() >= 1, section


def test_tables_are_accessible(page) -> None:
    pg, _ = page
    tables = pg.locator("table")
    assert tables.count() > 5
    for i in range(tables.count()):
        table = tables.nth(i)
        assert table.locator("caption").inner_text().strip()
        assert table.locator("thead th[scope=col]").count() >= 2


def test_screenshot_was_saved(page) -> None:
    shot = OUTPUT / "report.png"
    assert shot.is_file() and shot.stat().st_size > 10_000
