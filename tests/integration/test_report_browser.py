"""The demo's report opened in a real headless browser (Debian's Chromium) at 1400 and at 800 px wide: no console
errors, no network, every section, plot and tree rendered, every ledger entry listed, and a clean layout checked
with the boxes the browser laid out (a header's text fits its cell and no word of it is split over two lines; axis
tick labels do not overlap; tree texts stay in their boxes; the page never scrolls sideways). Screenshots go to
tests/output/report-<width>.png for a person to look at."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from analysis_workspace import seeded_secret_keys

from kansrijk.cli.demo import DemoOptions, run_demo

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
WIDTHS = (1400, 800)
SECTIONS = (
    "findings",
    "linkage",
    "base-rates",
    "models",
    "importances",
    "trees",
    "association",
    "factors",
    "refusals",
    "privacy",
)

# Every header cell: does its text fit the cell, and is every word on one line? A word split over two lines
# ("metho" / "d") has two client rectangles.
HEADERS_JS = """
() => {
  const bad = [];
  for (const th of document.querySelectorAll('thead th')) {
    if (th.scrollWidth > th.clientWidth + 1) bad.push(['overflows', th.textContent, th.scrollWidth, th.clientWidth]);
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g;
      let m;
      while ((m = re.exec(node.data)) !== null) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
        if (lines.size > 1) bad.push(['split word', m[0], th.textContent]);
      }
    }
  }
  return {count: document.querySelectorAll('thead th').length, bad};
}
"""

# Every axis of every plot: the visible tick labels must not intersect, and no category label (a row or band name)
# is dropped to avoid an overlap (Vega may drop a number on a crowded value axis; never a name).
TICKS_JS = """
() => {
  const bad = [], dropped = [];
  let axes = 0, labels = 0;
  for (const group of document.querySelectorAll('figure.plot svg g.role-axis-label')) {
    axes += 1;
    const texts = Array.from(group.querySelectorAll('text')).filter(t => t.textContent.trim() !== '');
    for (const t of texts) {
      if (t.getAttribute('opacity') === '0' && !/^[\\u2212\\-]?[0-9.,]+%?$/.test(t.textContent.trim())) {
        dropped.push(t.textContent);
      }
    }
    const boxes = texts.filter(t => t.getAttribute('opacity') !== '0')
      .map(t => [t.textContent, t.getBoundingClientRect()]);
    labels += boxes.length;
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const [ta, a] = boxes[i], [tb, b] = boxes[j];
        const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (dx > 0.5 && dy > 0.5) bad.push([ta, tb]);
      }
    }
  }
  return {axes, labels, bad, dropped};
}
"""

# Every node of every drawn tree: its texts lie inside its box.
TREES_JS = """
() => {
  const bad = [];
  let nodes = 0;
  for (const g of document.querySelectorAll('figure.tree svg g.node')) {
    nodes += 1;
    const box = g.querySelector('rect').getBoundingClientRect();
    for (const t of g.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1) {
        bad.push([t.textContent, g.getAttribute('data-node')]);
      }
    }
  }
  return {trees: document.querySelectorAll('figure.tree svg').length, nodes, bad};
}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "run"
    with seeded_secret_keys(7):  # the same pseudonyms in every run
        run_demo(DemoOptions(out=out, persons=3_000, min_positives=30))
    return out


@pytest.fixture(scope="module")
def pages(demo: Path, tmp_path_factory: pytest.TempPathFactory):
    """The report opened at each width: {width: (page, console and network events)}."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: run `make browser` (apt-get install chromium) first")
    from playwright.sync_api import sync_playwright

    report = demo / "report.html"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        # A persistent context gives chromium a fresh --user-data-dir of our own; headless is playwright's flag.
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=LAUNCH_FLAGS
        )
        try:
            opened = {}
            OUTPUT.mkdir(exist_ok=True)
            for width in WIDTHS:
                events: list[tuple[str, str]] = []
                pg = context.new_page()
                pg.set_viewport_size({"width": width, "height": 1000})
                pg.on("console", lambda m, ev=events: ev.append((m.type, m.text)))
                pg.on("pageerror", lambda e, ev=events: ev.append(("pageerror", str(e))))
                pg.on("request", lambda r, ev=events: ev.append(("request", r.url)))
                pg.goto(report.as_uri(), wait_until="load")
                # Written aside and renamed into place: under xdist another worker may read the file.
                part = OUTPUT / f".report-{width}.{os.getpid()}.png"
                try:
                    pg.screenshot(path=str(part), full_page=True)
                    os.replace(part, OUTPUT / f"report-{width}.png")
                finally:
                    part.unlink(missing_ok=True)
                opened[width] = (pg, events)
            yield opened
        finally:
            context.close()


def _released(demo: Path) -> list[dict]:
    released = demo / "coordinator" / "released"
    return [json.loads(p.read_text()) for p in sorted(released.glob("*.json")) if p.name != "LEDGER-HEAD.json"]


@pytest.mark.parametrize("width", WIDTHS)
def test_report_opens_without_console_errors_or_requests(pages, demo: Path, width: int) -> None:
    _, events = pages[width]
    assert [e for e in events if e[0] in ("error", "warning", "pageerror")] == []
    assert [url for kind, url in events if kind == "request"] == [(demo / "report.html").as_uri()]


def test_every_section_is_rendered_with_a_heading(pages) -> None:
    pg, _ = pages[1400]
    for section in SECTIONS:
        heading = pg.locator(f"#{section} h2")
        assert heading.count() == 1, section
        assert heading.is_visible() and heading.inner_text().strip()
        box = pg.locator(f"#{section}").bounding_box()
        assert box is not None and box["height"] > 50, section


def test_every_plot_is_drawn(pages) -> None:
    pg, _ = pages[1400]
    figures = pg.locator("figure.plot")
    assert figures.count() >= 4
    for i in range(figures.count()):
        svg = figures.nth(i).locator("svg")
        assert svg.count() == 1
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
        assert svg.locator("path, rect, line, circle").count() > 5  # marks, not an empty frame
    for section in ("base-rates", "models", "importances", "association"):
        assert pg.locator(f"#{section} figure.plot svg").count() >= 1, section


def test_every_released_tree_is_drawn_with_its_rules(pages, demo: Path) -> None:
    pg, _ = pages[1400]
    trees = [d for d in _released(demo) if d["kind"] == "tree_structure"]
    assert trees, "the demo released no tree"
    drawn = pg.evaluate(TREES_JS)
    assert drawn["trees"] == len(trees) and drawn["nodes"] >= 3 * len(trees)
    assert pg.locator("#trees table.rules").count() == len(trees)
    for i in range(pg.locator("figure.tree svg").count()):
        box = pg.locator("figure.tree svg").nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50  # a tree of one leaf is one box


def test_findings_are_written_per_modelled_outcome(pages, demo: Path) -> None:
    pg, _ = pages[1400]
    metrics = [d for d in _released(demo) if d["kind"] == "model_metrics" and "labels" not in d["spec"]]
    modelled = {(tuple(d["spec"]["years"]), d["spec"]["outcome"]) for d in metrics}
    assert modelled
    items = pg.locator("#findings article")
    assert items.count() >= len(modelled)
    assert pg.locator("#findings p.finding", has_text="ROC AUC").count() >= len(modelled)


def test_every_ledger_entry_and_every_refusal_is_listed(pages, demo: Path) -> None:
    pg, _ = pages[1400]
    head = json.loads((demo / "coordinator" / "released" / "LEDGER-HEAD.json").read_text())
    rows = pg.locator("#ledger tbody tr")
    assert rows.count() == head["seq"]
    ids = [rows.nth(i).get_attribute("id") for i in range(rows.count())]
    assert ids == [f"ledger-L{i:06d}" for i in range(1, head["seq"] + 1)]
    documents = {d["ledger_entry"] for d in _released(demo)}
    refused = [i for i in ids if i.removeprefix("ledger-") not in documents]
    assert refused, "the demo has a refused linkage table"
    for row_id in refused:
        assert "refused" in pg.locator(f"#{row_id}").inner_text()
        assert pg.locator(f"#refusals a[href='#{row_id}']").count() == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_header_text_fits_its_cell_and_no_word_is_split(pages, width: int) -> None:
    pg, _ = pages[width]
    result = pg.evaluate(HEADERS_JS)
    assert result["count"] > 20
    assert result["bad"] == []


@pytest.mark.parametrize("width", WIDTHS)
def test_axis_labels_do_not_overlap_and_no_name_is_dropped(pages, width: int) -> None:
    pg, _ = pages[width]
    result = pg.evaluate(TICKS_JS)
    assert result["axes"] >= 8 and result["labels"] >= 30
    assert result["bad"] == [] and result["dropped"] == []


@pytest.mark.parametrize("width", WIDTHS)
def test_every_band_of_the_association_curve_keeps_its_label(pages, demo: Path, width: int) -> None:
    """Overlap removal must not be what keeps the labels apart on the binned curve: every band is named."""
    pg, _ = pages[width]
    curve = next(d for d in _released(demo) if d["kind"] == "mean_table" and d["spec"].get("by"))
    bands = len(curve["values"]["rows"])
    axes = pg.locator("#association figure.plot").first.locator("g.role-axis-label")
    shown = [axes.nth(i).locator("text:not([opacity='0'])").count() for i in range(axes.count())]
    assert bands in shown, shown  # the band axis shows every band; the other axis its ticks


@pytest.mark.parametrize("width", WIDTHS)
def test_tree_texts_stay_in_their_boxes(pages, width: int) -> None:
    pg, _ = pages[width]
    result = pg.evaluate(TREES_JS)
    assert result["nodes"] > 0 and result["bad"] == []


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_never_scrolls_sideways(pages, width: int) -> None:
    pg, _ = pages[width]
    scroll = pg.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll[0] <= scroll[1]
    # wide tables and trees scroll inside their own box instead
    for selector in ("main", "#privacy", "#trees"):
        box = pg.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, selector


def test_tables_are_accessible(pages) -> None:
    pg, _ = pages[1400]
    tables = pg.locator("table")
    assert tables.count() > 5
    for i in range(tables.count()):
        table = tables.nth(i)
        assert table.locator("caption").inner_text().strip()
        assert table.locator("thead th[scope=col]").count() >= 2


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshot_was_saved(pages, width: int) -> None:
    shot = OUTPUT / f"report-{width}.png"
    assert shot.is_file() and shot.stat().st_size > 10_000
