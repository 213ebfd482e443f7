"""`kansrijk demo` wall time: the whole pipeline (city, keys, policies, four node agents, ingest, link, analysis
through the gate, report, ledger verification) at Rotterdam scale.

Scale "full": 150,000 persons, one reference year (what `make demo` runs); "small": 20,000 persons with the
plan's minimum positives lowered to 200 so the analysis still fits models. The reference in the same run is the
synthetic city's own generation time, so the ratio (demo / city) is comparable across machines. Each stage's time
is reported too, with the whole demo as its reference (the ratio is the stage's share).
Target (full): the whole demo in about two minutes on 2 cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kansrijk.demo import STAGES, DemoOptions, run_demo

SETTINGS = {"small": (20_000, 200), "full": (150_000, None)}
TARGET_SECONDS = 120.0


def _figure(name: str, value: float, reference_name: str, reference: float, target: str) -> dict:
    return {
        "name": name,
        "value": round(value, 2),
        "unit": "s",
        "reference_name": reference_name,
        "reference_value": round(reference, 2),
        "ratio": round(value / reference, 3) if reference else None,
        "target": target,
    }


def run(scale: str) -> list[dict]:
    persons, min_positives = SETTINGS[scale]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(DemoOptions(out=Path(tmp) / "demo-run", persons=persons, min_positives=min_positives))
    total = result.total_seconds
    city = result.seconds[STAGES[0]]
    figures = [
        _figure(
            f"kansrijk demo, {persons:,} persons (wall time)",
            total,
            "synthetic city generation in the same run",
            city,
            f"<= {TARGET_SECONDS:.0f} s on 2 cores" if scale == "full" else "",
        )
    ]
    figures += [_figure(f"demo stage: {stage}", result.seconds[stage], "whole demo", total, "") for stage in STAGES]
    return figures
