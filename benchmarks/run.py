"""`make bench`: run every benchmarks/bench_*.py module and write results.json and results.md (small scale) or
results-full.json and results-full.md (full scale), so a national-scale run never overwrites the small record
(``--only`` runs write ``results[-full]-partial.*``).

Each module exposes ``run(scale: str) -> list[dict]`` returning figures with the keys ``name``, ``value``,
``unit``, ``reference_name``, ``reference_value``, ``ratio`` and ``target``, plus a boolean ``met`` where a target
exists (a target the figure cannot judge at this scale has ``met: null``). Every figure is measured against a
reference in the same run, because machines are noisy: the ratio is the number to compare across machines.
The machine facts include the load average before the run and before each area, since the machine may be
shared; docs/benchmarks.md explains every figure.

Usage: ``python -m benchmarks.run [--scale small|full] [--only node,gate]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
KEYS = ("name", "value", "unit", "reference_name", "reference_value", "ratio", "target")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes); above the core count means contention."""
    return [round(x, 2) for x in os.getloadavg()]


def _mem_kib(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def check_figures(area: str, figures: object) -> list[dict]:
    """Refuse a module's answer that is not in the runner's format (a list of figures with every key)."""
    if not isinstance(figures, list) or not figures:
        raise TypeError(f"bench_{area}.run() must return a non-empty list of figures, got {type(figures).__name__}")
    for i, figure in enumerate(figures):
        missing = [k for k in KEYS if not isinstance(figure, dict) or k not in figure]
        if missing:
            raise TypeError(f"bench_{area}.run() figure {i}: missing keys {missing}")
        if "met" in figure and figure["met"] is not None and not isinstance(figure["met"], bool):
            raise TypeError(f"bench_{area}.run() figure {i} ({figure['name']}): 'met' must be true, false or null")
        if figure["target"] and "met" not in figure:
            figure["met"] = None  # a target the module does not judge
        if not figure["target"]:
            figure.pop("met", None)
    return figures


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def figure(
    name: str,
    value,
    unit: str,
    reference_name: str = "",
    reference_value=None,
    target: str = "",
    met: bool | None = None,
) -> dict:
    """One figure in the runner's format; ``met`` is kept only where there is a target to judge."""
    numeric = isinstance(value, int | float) and isinstance(reference_value, int | float)
    out = {
        "name": name,
        "value": round(value, 4) if isinstance(value, float) else value,
        "unit": unit,
        "reference_name": reference_name,
        "reference_value": round(reference_value, 4) if isinstance(reference_value, float) else reference_value,
        "ratio": round(value / reference_value, 4) if numeric and reference_value else None,
        "target": target,
    }
    if target:
        out["met"] = met
    return out


def machine_facts() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_kib("MemTotal") / 2**20, 1),
        "memory_available_gib": round(_mem_kib("MemAvailable") / 2**20, 1),
        "load_average_1_5_15_min": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _cell(text: object) -> str:
    """Text for a markdown table cell: a literal ``|`` would end the cell."""
    return str(text).replace("|", "\\|")


def write_markdown(results: dict, path: Path) -> None:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['started']} at scale `{results['scale']}` on {m['cores']} cores ({m['processor']}), "
        f"{m['memory_gib']} GiB, "
        f"Python {m['python']}; load average (1/5/15 min) {'/'.join(map(str, m['load_average_1_5_15_min']))} at "
        f"the start, {'/'.join(map(str, results.get('load_average_end', [])))} at the end. Regenerated by "
        "`make bench`; what each figure means is in docs/benchmarks.md."
        + (f" Only these areas were run: {', '.join(results['only'])}." if results.get("only") else ""),
        "",
        "| area | figure | value | unit | reference | reference value | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for area, figures in results["areas"].items():
        if "error" in figures:
            lines.append(f"| {area} | **failed**: {_cell(figures['error'])} | | | | | | | |")
            continue
        for f in figures["figures"]:
            lines.append(
                f"| {area} | {_cell(f['name'])} | {_fmt(f.get('value'))} | {_cell(f.get('unit', ''))} | "
                f"{_cell(f.get('reference_name') or '—')} | {_fmt(f.get('reference_value'))} | "
                f"{_fmt(f.get('ratio'))} | "
                f"{_cell(f.get('target') or '—')} | {_fmt(f.get('met')) if f.get('target') else ''} |"
            )
    verdicts = [
        (area, f) for area, figures in results["areas"].items() for f in figures.get("figures", []) if f.get("target")
    ]
    judged = [(a, f) for a, f in verdicts if f.get("met") is not None]
    missed = [f"{a}: {_cell(f['name'])}" for a, f in judged if not f["met"]]
    failed = [a for a, figures in results["areas"].items() if "error" in figures]
    lines += [
        "",
        f"Targets met: {len(judged) - len(missed)} of {len(judged)} judged ({len(verdicts) - len(judged)} not judged "
        f"at this scale or by their module)." + (f" Areas that failed: {', '.join(failed)}." if failed else ""),
    ]
    lines += [f"- not met: {m}" for m in missed]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "full"], default=os.environ.get("BENCH_SCALE", "small"))
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. node,gate")
    args = parser.parse_args(argv)
    wanted = {a for a in args.only.split(",") if a}
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    results = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": args.scale,
        "machine": machine_facts(),
        "areas": {},
    }
    failed = False
    for name in modules:
        area = name.removeprefix("bench_")
        if wanted and area not in wanted:
            continue
        print(f"== {area}", file=sys.stderr, flush=True)
        load = load_average()
        t0 = time.perf_counter()
        try:
            figures = check_figures(area, importlib.import_module(f"benchmarks.{name}").run(args.scale))
            results["areas"][area] = {
                "seconds": round(time.perf_counter() - t0, 2),
                "load_average_before": load,
                "figures": figures,
            }
        except Exception as exc:  # a failing area is recorded, the others still run
            traceback.print_exc()
            results["areas"][area] = {"error": f"{type(exc).__name__}: {exc}", "load_average_before": load}
            failed = True
    results["load_average_end"] = load_average()
    stem = "results" if args.scale == "small" else f"results-{args.scale}"
    if wanted:  # a partial run never overwrites the record of a whole run
        results["only"] = sorted(wanted)
        stem += "-partial"
    (HERE / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, HERE / f"{stem}.md")
    print(f"wrote {HERE / f'{stem}.json'} and {HERE / f'{stem}.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
