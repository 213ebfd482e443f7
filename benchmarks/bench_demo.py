"""`kansrijk demo` wall time and peak memory: the whole pipeline (city, keys, policies, four node agents, ingest,
link, analysis through the gate, report, ledger verification), each run in its own child process so that its
peak RSS (``ru_maxrss``) is its own.

Scales:

- "small": 20,000 persons with the plan's minimum positives lowered to 200 so the analysis still fits models
  (no target: the targets are for the sizes below);
- "full": Rotterdam, 150,000 persons, one reference year (what ``make demo`` runs; target: the whole demo in
  <= 2 minutes on 2 cores), then national scale, 4,500,000 persons (target: it finishes on a 24 GiB machine,
  i.e. its peak RSS stays below 24 GiB). The national run takes a long time on 2 cores (docs/benchmarks.md has
  the measured figures); ``python -m benchmarks.bench_demo national`` runs it alone and prints its figures.

The reference in the same run is the synthetic city's own generation time (the demo's first stage), so the ratio
(demo / city) is comparable across machines. Each stage's time is reported too, with the whole demo as its
reference (the ratio is the stage's share).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.run import figure as _figure
from kansrijk.cli.demo import STAGES

ROTTERDAM = 150_000
NATIONAL = 4_500_000
RUNS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "small": ((20_000, 200),),
    "full": ((ROTTERDAM, None), (NATIONAL, None)),
}
TARGET_SECONDS = 120.0
MACHINE_GIB = 24.0

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from kansrijk.cli.demo import DemoOptions, DemoProgress, run_demo

class Stages(DemoProgress):  # one line per stage on stderr, so a long run can be followed and a failure placed
    def stage(self, index, name):
        print(f"{time.strftime('%H:%M:%S')} demo stage {index + 1}: {name}", file=sys.stderr, flush=True)

out, persons, low = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
options = DemoOptions(out=out, persons=persons, min_positives=None if low == "-" else int(low))
result = run_demo(options, Stages())
rss_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": result.seconds, "total": result.total_seconds, "rss_kib": rss_kib,
                  "models": result.models, "released": result.released, "linked": result.linked_persons}))
"""


def run_demo_child(persons: int, min_positives: int | None) -> dict:
    """One ``kansrijk demo`` in a child process (a fresh temporary ``--out``); its stage times and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="kansrijk-bench-demo-") as tmp:
        # stderr is passed through: the stage lines, and the traceback if the demo fails
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(Path(tmp) / "demo-run"), str(persons), str(min_positives or "-")],
            stdout=subprocess.PIPE,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"kansrijk demo --persons {persons} failed (exit {done.returncode}); see stderr above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def figures_of(persons: int, measured: dict) -> list[dict]:
    """The figures of one demo run (wall time, peak RSS, every stage)."""
    total, seconds = measured["total"], measured["seconds"]
    city = seconds[STAGES[0]]
    rss_gib = measured["rss_kib"] / 2**20  # ru_maxrss is in KiB on Linux
    time_target = f"<= {TARGET_SECONDS:.0f} s on 2 cores" if persons == ROTTERDAM else ""
    rss_target = f"< {MACHINE_GIB:.0f} GiB (finishes on a 24 GiB machine)" if persons == NATIONAL else ""
    figures = [
        _figure(
            f"kansrijk demo, {persons:,} persons (wall time)", total, "s",
            "synthetic city generation in the same run", city, time_target, total <= TARGET_SECONDS,
        ),
        _figure(
            f"kansrijk demo, {persons:,} persons, peak RSS", rss_gib, "GiB", "machine memory (24 GiB class)",
            MACHINE_GIB, rss_target, rss_gib < MACHINE_GIB,
        ),
    ]  # fmt: skip
    figures += [
        _figure(f"demo {persons:,}, stage: {stage}", seconds[stage], "s", "whole demo", total, "") for stage in STAGES
    ]
    return figures


def run(scale: str) -> list[dict]:
    figures: list[dict] = []
    for persons, min_positives in RUNS[scale]:
        figures += figures_of(persons, run_demo_child(persons, min_positives))
    return figures


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "small"
    if which == "national":  # the 4.5M run alone (it is long): figures as JSON lines
        for fig in figures_of(NATIONAL, run_demo_child(NATIONAL, None)):
            print(json.dumps(fig), flush=True)
    else:
        for fig in run(which):
            print(fig)
