"""`make bench`: run every benchmarks/bench_*.py module and write results.json and results.md.

Each module exposes ``run(scale: str) -> list[dict]`` returning figures with the keys ``name``, ``value``,
``unit``, ``reference_name``, ``reference_value``, ``ratio`` and ``target``. Every figure is measured against a
reference in the same run, because machines are noisy: the ratio is the number to compare across machines.

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


def machine_facts() -> dict:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_markdown(results: dict, path: Path) -> None:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['started']} at scale `{results['scale']}` on {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}.",
        "",
        "| area | figure | value | unit | reference | reference value | ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for area, figures in results["areas"].items():
        if "error" in figures:
            lines.append(f"| {area} | **failed**: {figures['error']} | | | | | | |")
            continue
        for f in figures["figures"]:
            lines.append(
                f"| {area} | {f['name']} | {_fmt(f.get('value'))} | {f.get('unit', '')} | "
                f"{f.get('reference_name') or '—'} | {_fmt(f.get('reference_value'))} | {_fmt(f.get('ratio'))} | "
                f"{f.get('target') or '—'} |"
            )
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
        t0 = time.perf_counter()
        try:
            figures = importlib.import_module(f"benchmarks.{name}").run(args.scale)
            results["areas"][area] = {"seconds": round(time.perf_counter() - t0, 2), "figures": figures}
        except Exception as exc:  # a failing area is recorded, the others still run
            traceback.print_exc()
            results["areas"][area] = {"error": f"{type(exc).__name__}: {exc}"}
            failed = True
    (HERE / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, HERE / "results.md")
    print(f"wrote {HERE / 'results.json'} and {HERE / 'results.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
