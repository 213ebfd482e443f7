"""`kansrijk synth city` end to end through the root CLI app."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kansrijk.cli import app
from kansrijk.errors import InputError, OutputExists
from kansrijk.synth.city import generate_city, load_city

runner = CliRunner()


def test_synth_city_writes_extracts_and_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "city"
    result = runner.invoke(app, ["synth", "city", "--persons", "600", "--seed", "3", "--out", str(out),
                                 "--years", "2022,2023", "--fault-rate", "0.01"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "city.json").is_file()
    for partner, ext in (("cbs", "parquet"), ("gemeente", "csv"), ("cjg", "csv"), ("duo", "csv")):
        for year in (2022, 2023):
            assert (out / "extracts" / partner / f"{partner}_{year}.{ext}").is_file()
    truth = pl.read_parquet(out / "ground_truth" / "persons.parquet")
    assert truth.height == 1_200 and set(truth["year"]) == {2022, 2023}
    assert "ground truth" in result.output


def test_synth_city_refuses_a_non_empty_out_dir_and_says_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "city"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["synth", "city", "--persons", "300", "--out", str(out)])
    assert result.exit_code == OutputExists.exit_code
    assert "exists and is not empty" in result.output and "--force" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_force_replaces_the_city_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "city"
    assert runner.invoke(app, ["synth", "city", "--persons", "300", "--seed", "1", "--out", str(out)]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    first = (out / "extracts" / "cbs" / "cbs_2023.parquet").read_bytes()
    result = runner.invoke(app, ["synth", "city", "--persons", "300", "--seed", "2", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "extracts" / "cbs" / "cbs_2023.parquet").read_bytes() != first
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--years", "2023,abc"], "comma-separated list of years"),
        (["--years", "2023,2023"], "distinct years"),
        (["--fault-rate", "0.5"], "outside 0..0.2"),
        (["--persons", "10"], "too small"),
    ],
)
def test_synth_city_rejects_bad_options_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["synth", "city", "--out", str(tmp_path / "c"), *args])
    assert result.exit_code == InputError.exit_code
    assert message in result.output


def test_synth_city_help_has_an_example() -> None:
    result = runner.invoke(app, ["synth", "city", "--help"])
    assert result.exit_code == 0
    assert "kansrijk synth city --persons 150000" in result.output


def test_load_city_refuses_an_interrupted_city(tmp_path: Path) -> None:
    paths = generate_city(tmp_path / "c", persons=300, seed=1)
    assert load_city(paths.root).extracts == paths.extracts
    paths.marker.unlink()
    with pytest.raises(InputError, match=r"city\.json is missing"):
        load_city(paths.root)
