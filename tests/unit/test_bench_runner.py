"""The benchmark runner's format: every figure has the seven keys and a boolean (or null) ``met`` where it has a
target; the markdown record shows failures, verdicts and the machine's load. Nothing here times anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as runner


def figure(**over: object) -> dict:
    base = {
        "name": "x",
        "value": 1.0,
        "unit": "s",
        "reference_name": "y",
        "reference_value": 2.0,
        "ratio": 0.5,
        "target": "",
    }
    return {**base, **over}


def test_a_figure_missing_a_key_is_refused_with_the_area_and_key() -> None:
    bad = figure()
    del bad["reference_value"]
    with pytest.raises(TypeError, match=r"bench_node.*reference_value"):
        runner.check_figures("node", [bad])


def test_an_empty_or_non_list_answer_is_refused() -> None:
    with pytest.raises(TypeError):
        runner.check_figures("gate", [])
    with pytest.raises(TypeError):
        runner.check_figures("gate", {"name": "x"})


def test_met_must_be_a_boolean_or_null() -> None:
    with pytest.raises(TypeError, match="met"):
        runner.check_figures("gate", [figure(target="<= 2 s", met="yes")])


def test_a_target_without_a_verdict_gets_met_null_and_no_target_drops_met() -> None:
    checked = runner.check_figures("gate", [figure(target="<= 2 s"), figure(met=True)])
    assert checked[0]["met"] is None
    assert "met" not in checked[1]


def test_machine_facts_carry_cores_memory_and_load_average() -> None:
    facts = runner.machine_facts()
    assert facts["cores"] >= 1
    assert facts["memory_gib"] > 0
    assert len(facts["load_average_1_5_15_min"]) == 3


def test_markdown_shows_failures_verdicts_and_load(tmp_path: Path) -> None:
    results = {
        "started": "2026-01-01T00:00:00+00:00",
        "scale": "small",
        "machine": runner.machine_facts(),
        "load_average_end": [1.0, 1.0, 1.0],
        "areas": {
            "gate": {"figures": [figure(target="<= 2 s", met=False), figure(name="info")]},
            "node": {"error": "KeyError: 'x'"},
        },
    }
    out = tmp_path / "results.md"
    runner.write_markdown(results, out)
    text = out.read_text()
    assert "| node | **failed**: KeyError: 'x' |" in text
    assert "| <= 2 s | **no** |" in text
    assert "load average" in text
    json.dumps(results)  # the record stays JSON-serialisable


def test_a_pipe_in_a_figure_does_not_break_the_markdown_table(tmp_path: Path) -> None:
    results = {
        "started": "2026-01-01T00:00:00+00:00",
        "scale": "small",
        "machine": runner.machine_facts(),
        "areas": {"synth": {"figures": [figure(target="within error (|z| <= 3)", met=True)]}},
    }
    out = tmp_path / "results.md"
    runner.write_markdown(results, out)
    row = next(line for line in out.read_text().splitlines() if line.startswith("| synth |"))
    assert row.replace("\\|", "").count("|") == 10  # nine cells
