"""DP quantiles (``kansrijk.gate.dp``): real OpenDP over a public candidate grid, put in order per group."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kansrijk.gate.dp as dp_module
from kansrijk.gate.dp import measure, monotone_quantiles
from kansrijk.gate.requests import QuantileRequest

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def _request(n: int, seed: int) -> QuantileRequest:
    rng = np.random.default_rng(seed)
    data = pl.DataFrame(
        {"sex": rng.choice(["M", "F"], n).tolist(), "woz_eur": rng.uniform(100_000, 400_000, n).round()}
    )
    return QuantileRequest(
        name="woz_quantiles", data=data, value="woz_eur", quantiles=LEVELS, by=("sex",),
        keys={"sex": ("F", "M")}, bounds=(0.0, 1_000_000.0),
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(10))
def test_noisy_quantiles_of_a_small_group_are_monotone_and_within_the_bounds(seed: int) -> None:
    """A small group at a small epsilon: OpenDP's answers per level are noisy enough to cross; the released ones
    never do, and stay within the public bounds."""
    result = measure(_request(60, seed), Fraction(1, 10), max_persons=1_000)
    values = result.table.select([f"q{q:g}" for q in LEVELS]).to_numpy()
    assert (np.diff(values, axis=1) >= 0).all(), values
    assert ((values >= 0) & (values <= 1_000_000)).all()


def test_without_the_rearrangement_the_same_answers_cross(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: OpenDP's own answers at this epsilon cross in some repetition."""
    monkeypatch.setattr(dp_module, "monotone_quantiles", lambda table, levels: table)
    crossed = 0
    for seed in range(10):
        values = measure(_request(60, seed), Fraction(1, 10), max_persons=1_000).table
        crossed += int((np.diff(values.select([f"q{q:g}" for q in LEVELS]).to_numpy(), axis=1) < 0).any())
    assert crossed > 0


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=3, max_size=3), min_size=1, max_size=8)
)
def test_rearrangement_sorts_every_complete_row_and_keeps_missing_ones(rows: list[list[float | None]]) -> None:
    table = pl.DataFrame({"q0.25": [r[0] for r in rows], "q0.5": [r[1] for r in rows], "q0.75": [r[2] for r in rows]},
                         schema={"q0.25": pl.Float64, "q0.5": pl.Float64, "q0.75": pl.Float64})  # fmt: skip
    out = monotone_quantiles(table, (0.75, 0.25, 0.5))
    for before, after in zip(table.rows(), out.rows(), strict=True):
        if any(v is None for v in before):
            assert after == before
        else:
            assert list(after) == sorted(before)
