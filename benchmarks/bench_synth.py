"""Synthetic city: generation speed, and the planted effects' accuracy figures.

- generate: ``kansrijk.synth.generate_city`` at Rotterdam scale (150,000 persons, one year) against the I/O floor,
  a plain polars re-read and re-write of the very files it produced. Target: <= 10 s on 2 cores.
- national ("full" only): 4.5M persons in a child process; wall time and peak memory. Target: fits in 24 GiB.
- linear test: logistic regression of psychosocial risk on WOZ alone (CJG children with a Gemeente row) at 150k,
  seed 7: p must be > 0.05, while a WOZ-decile model is highly significant (reference).
- learnability: a depth-8 decision tree's held-out AUC for psychosocial risk against the Bayes-optimal AUC (the
  true probability). Target: within 0.02.
- base rates: each outcome's realised rate against its documented target.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import polars as pl
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from benchmarks.run import figure as _figure
from kansrijk.synth.city import CityPaths, generate_city

ROTTERDAM = 150_000
NATIONAL = 4_500_000


def _io_floor(paths: CityPaths, scratch: Path) -> float:
    start = time.perf_counter()
    for (partner, _year), path in paths.extracts.items():
        if partner == "cbs":
            pl.read_parquet(path).write_parquet(scratch / path.name)
        else:
            sep = ";" if partner == "gemeente" else ","
            pl.read_csv(path, separator=sep, infer_schema=False).write_csv(scratch / path.name, separator=sep)
    pl.read_parquet(paths.persons).write_parquet(scratch / "persons.parquet")
    return time.perf_counter() - start


def _linear_and_binned(truth: pl.DataFrame) -> tuple[float, float]:
    cjg = truth.filter(pl.col("in_cjg") & pl.col("in_gemeente"))
    y = cjg["psychosocial_risk"].to_numpy().astype(float)
    woz = cjg["woz_eur"].to_numpy() / 100_000.0
    linear = sm.Logit(y, sm.add_constant(woz)).fit(disp=0)
    bins = pd.get_dummies(pd.qcut(woz, 10, labels=False), drop_first=True).to_numpy().astype(float)
    binned = sm.Logit(y, sm.add_constant(bins)).fit(disp=0)
    return float(linear.pvalues[1]), float(binned.llr_pvalue)


def _tree_gap(truth: pl.DataFrame) -> tuple[float, float]:
    cjg = truth.filter(pl.col("in_cjg"))
    x = cjg.select(
        "woz_eur",
        "low_income",
        "youth_care",
        "parenting_concerns",
        "social_assistance",
        "debt_assistance",
        pl.col("household_type") == "single_parent",
        pl.col("sex") == "M",
        "age",
    ).to_numpy()
    y = cjg["psychosocial_risk"].to_numpy().astype(int)
    p = cjg["p_psychosocial_risk"].to_numpy()
    x_tr, x_te, y_tr, y_te, _p_tr, p_te = train_test_split(x, y, p, test_size=0.3, random_state=0)
    tree = DecisionTreeClassifier(max_depth=8, min_samples_leaf=100, random_state=0).fit(x_tr, y_tr)
    return float(roc_auc_score(y_te, tree.predict_proba(x_te)[:, 1])), float(roc_auc_score(y_te, p_te))


def _national(scratch: Path) -> tuple[float, float]:
    code = (
        "import resource, sys, time; from pathlib import Path; from kansrijk.synth.city import generate_city; "
        "t = time.perf_counter(); "
        f"generate_city(Path(sys.argv[1]), persons={NATIONAL}, seed=7); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(scratch / "national")], check=True, capture_output=True, text=True
    )
    # measured in the child (RUSAGE_SELF): RUSAGE_CHILDREN here would be the largest of every child this
    # process ever ran, other benchmarks' included
    seconds, rss_kib = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(rss_kib) / 2**20


def run(scale: str) -> list[dict]:
    figures: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        paths = generate_city(scratch / "city", persons=ROTTERDAM, seed=7)
        wall = time.perf_counter() - start
        (scratch / "io").mkdir()
        floor = _io_floor(paths, scratch / "io")
        figures.append(
            _figure(
                "generate 150k persons (1 year)",
                wall,
                "s",
                "polars re-read + re-write of its files",
                floor,
                "<= 10 s on 2 cores",
                wall <= 10.0,
            )
        )
        truth = pl.read_parquet(paths.persons)
        p_linear, p_binned = _linear_and_binned(truth)
        figures.append(
            _figure(
                "linear test WOZ -> psychosocial risk, p (150k, seed 7)",
                p_linear,
                "p",
                "WOZ-decile model, p",
                p_binned,
                "linear p > 0.05, binned p < 1e-10",
                p_linear > 0.05 and p_binned < 1e-10,
            )
        )
        tree_auc, bayes_auc = _tree_gap(truth)
        figures.append(
            _figure(
                "depth-8 tree AUC, psychosocial risk (held out)",
                tree_auc,
                "AUC",
                "Bayes-optimal AUC",
                bayes_auc,
                "within 0.02 of Bayes",
                bayes_auc - tree_auc <= 0.02,
            )
        )
        effects = json.loads(paths.effects.read_text())
        for name, rate in effects["base_rates"]["2023"].items():
            if name == "covariates":
                continue
            figures.append(
                _figure(
                    f"base rate {name} (n={rate['population']})",
                    rate["rate"],
                    "share",
                    "documented target",
                    rate["target"],
                    "within sampling error of the target (|z| <= 3)",
                    abs(rate["rate"] - rate["target"])
                    <= 3 * (rate["target"] * (1 - rate["target"]) / rate["population"]) ** 0.5,
                )
            )
        if scale == "full":
            seconds, peak = _national(scratch)
            figures.append(
                _figure(
                    "generate 4.5M persons (national scale)",
                    seconds,
                    "s",
                    "150k run x 30",
                    wall * 30,
                    "",
                )
            )
            figures.append(
                _figure("peak memory, 4.5M persons", peak, "GiB", "machine memory", 24.0, "< 24 GiB", peak < 24.0)
            )
    return figures


if __name__ == "__main__":
    for fig in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(fig)
