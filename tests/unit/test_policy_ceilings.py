"""Every number a release policy can set has a floor or a ceiling (or provably cannot loosen anything): a policy
past one does not validate, `policy check` and `policy sign` refuse it naming the key, and explain/diff say so."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.errors import PolicyError
from kansrijk.policy.release import (
    CEILING_DP_MODEL_EPSILON,
    CEILING_EPSILON_PER_RELEASE,
    CEILING_EPSILON_TOTAL,
    DP_CAPABLE,
    LIMITS,
    OUTPUT_KINDS,
    ROUNDED_KINDS,
    UNBOUNDED,
    ReleasePolicy,
    explain_release_policy,
    judge_change,
    limit_values,
)
from kansrijk.policy.signing import load_policy, signature_path

REPO = Path(__file__).resolve().parents[2]
BASE = 'kind = "release"\ntitle = "t"\ndataset = "d"\n'
# The attacker's policy: DP only (no output checking) with an epsilon that protects nobody.
HUGE_DP = (
    BASE + '[dp]\nepsilon_total = "1000000"\nepsilon_per_release_max = "1000000"\n'
    '[outputs.frequency_table]\nmethod = "dp"\nepsilon = "1000000"\n'
)


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_ceilings_are_the_documented_numbers():
    assert (CEILING_EPSILON_PER_RELEASE, CEILING_DP_MODEL_EPSILON, CEILING_EPSILON_TOTAL) == (1, 2, 10)


@pytest.mark.parametrize("name", ["sdc-only", "dp-sdc", "dp-models"])
def test_every_shipped_policy_is_within_every_limit(name):
    _, policy = load_policy(REPO / "policies" / "release" / f"{name}.toml")
    assert isinstance(policy, ReleasePolicy)
    assert all(limit.holds(value) for limit, _, value in limit_values(policy))


@pytest.mark.parametrize(
    ("snippet", "key", "value", "ceiling"),
    [
        ('[dp]\nepsilon_total = "11"\nepsilon_per_release_max = "1/2"\n', "dp.epsilon_total", "11", "10"),
        ('[dp]\nepsilon_total = "10"\nepsilon_per_release_max = "3/2"\n', "dp.epsilon_per_release_max", "3/2", "1"),
        (
            '[dp]\nepsilon_total = "10"\nepsilon_per_release_max = "1"\ndelta_total = "1/100"\n',
            "dp.delta_total",
            "1/100",
            "1/1000",
        ),
        (
            '[dp]\nepsilon_total = "10"\nepsilon_per_release_max = "1"\n[dp_model]\nmax_epsilon = "5/2"\n',
            "dp_model.max_epsilon",
            "5/2",
            "2",
        ),
        (
            '[dp]\nepsilon_total = "10"\nepsilon_per_release_max = "1"\n[outputs.histogram]\nmethod = "dp+sdc"\n'
            'epsilon = "2"\n',
            "outputs.histogram.epsilon",
            "2",
            "1",
        ),
        ("[sdc]\nmax_suppressed_share = 0.9\n", "sdc.max_suppressed_share", "0.9", "0.5"),
        ("[sdc.tree]\nrisky_max_depth = 12\n", "sdc.tree.risky_max_depth", "12", "7"),
        ("[sdc]\nnk_k = 0.95\n", "sdc.nk_k", "0.95", "0.85"),
    ],
    ids=["total", "per-release", "delta", "dp-model", "output-epsilon", "suppressed-share", "risky-depth", "nk"],
)
def test_a_policy_above_a_ceiling_is_refused_naming_file_key_value_and_ceiling(tmp_path, snippet, key, value, ceiling):
    path = write(tmp_path, BASE + snippet)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    line = next(x for x in str(exc.value).splitlines() if f": {key}:" in x)
    assert str(path) in line and value in line and ceiling in line, line


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[requesters]\nallowed = ["*"]\n', "requesters.allowed.0"),
        ('[requesters]\nallowed = ["analysis", "analysis"]\n', "requesters.allowed"),
        ("[requesters]\nallowed = []\n", "requesters.allowed"),
        ("[outputs.frequency_table]\nrounding = 5\n", "outputs.frequency_table"),
        (
            '[dp]\nepsilon_total = "1"\nepsilon_per_release_max = "1"\n[outputs.mean_table]\nmethod = "dp"\n'
            'epsilon = "1/2"\nrounding = 10\n',
            "outputs.mean_table.rounding",
        ),
        ("[outputs.frequency_table]\nrounding = 0\n", "outputs.frequency_table.rounding"),
        ("[sdc]\nmax_suppressed_share = 0.0\n", "sdc.max_suppressed_share"),
    ],
    ids=["wildcard", "duplicate", "nobody", "rounding-without-dp", "rounding-not-applied", "rounding-0", "share-0"],
)
def test_keys_that_would_mislead_or_loosen_are_refused(tmp_path, snippet, key):
    path = write(tmp_path, BASE + snippet)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert any(line.strip().startswith(f"{path}: ") and key in line for line in str(exc.value).splitlines())


def _full_policy() -> dict[str, Any]:
    """A policy with every section and key written out (defaults filled in), as JSON values."""
    _, policy = load_policy(REPO / "policies/release/dp-models.toml")
    return policy.model_dump(mode="json")


def _numbers(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_numbers(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(value, list | tuple):
        return {f"{prefix}.*": v for v in value if isinstance(v, int | float) and not isinstance(v, bool)}
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, int | float):
        return {prefix: value}
    try:
        return {prefix: Fraction(value)}  # exact numbers are dumped as strings
    except (ValueError, ZeroDivisionError):
        return {}


def _generic(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "outputs" and len(parts) == 3:
        return f"outputs.*.{parts[2]}"
    if key.startswith("dp_model.bin_edges."):
        return "dp_model.bin_edges.*"
    if parts[0] == "grids":  # per-variable grids (and the list of quantile levels) share one reason
        return f"grids.{parts[1]}.*"
    return key


def test_every_number_of_a_policy_has_a_limit_or_a_reason_it_needs_none():
    keys = {_generic(k) for k in _numbers(_full_policy())}
    limited = {limit.key for limit in LIMITS}
    assert keys - limited - set(UNBOUNDED) == set()
    assert limited <= keys | {"outputs.*.epsilon"} and not limited & set(UNBOUNDED)


def test_a_policy_exactly_at_every_floor_and_ceiling_validates():
    at: dict[str, Fraction] = {}
    for limit in LIMITS:
        if not limit.exclusive:
            at.setdefault(limit.key, limit.bound)
    sdc = {k.removeprefix("sdc."): v for k, v in at.items() if k.startswith("sdc.") and "tree." not in k}
    policy = ReleasePolicy.model_validate(
        {
            "kind": "release",
            "title": "t",
            "dataset": "d",
            "sdc": {
                **{
                    k: (float(v) if k in ("p_percent", "nk_k", "max_suppressed_share") else int(v))
                    for k, v in sdc.items()
                },
                "tree": {k.removeprefix("sdc.tree."): int(v) for k, v in at.items() if k.startswith("sdc.tree.")},
            },
            "dp": {"epsilon_total": str(at["dp.epsilon_total"]), "epsilon_per_release_max": "1", "delta_total": "0"},
            "dp_model": {"max_epsilon": str(at["dp_model.max_epsilon"])},
            "outputs": {"frequency_table": {"method": "dp", "epsilon": "1", "rounding": 1}},
        }
    )
    assert policy.dp is not None and policy.dp.epsilon_total == CEILING_EPSILON_TOTAL


# --- property: whatever a policy says, if it validates it is within every limit ------------------------------
def _range(key: str) -> tuple[Fraction, Fraction]:
    """The closed range the limits of ``key`` allow (an open end is a little inside; no ceiling: +50)."""
    lo, hi = Fraction(-50), None
    for limit in (x for x in LIMITS if x.key == key):
        step = (abs(limit.bound) / 10 or Fraction(1, 100)) * limit.exclusive
        edge = limit.bound + step if limit.side == "floor" else limit.bound - step
        if limit.side == "floor":
            lo = max(lo, edge)
        else:
            hi = edge if hi is None else min(hi, edge)
    return lo, (lo + 50 if hi is None else hi)


def _number(key: str) -> st.SearchStrategy[Any]:
    """Mostly values the limits allow, often the bounds themselves, sometimes anything (to cross them)."""
    lo, hi = _range(key)
    bounds = sorted({limit.bound for limit in LIMITS if limit.key == key} | {lo, hi})
    inside = st.fractions(min_value=lo, max_value=hi, max_denominator=10_000)
    anywhere = st.one_of(
        st.fractions(min_value=bounds[0] - 3, max_value=bounds[-1] + 3, max_denominator=10_000),
        st.fractions(min_value=-1, max_value=2_000_000, max_denominator=10),
    )
    value = st.integers(0, 9).flatmap(lambda i: inside if i < 8 else st.sampled_from(bounds) if i == 8 else anywhere)
    if key in _FLOATS:
        return value.map(float)
    if key.startswith("sdc.") or key.endswith(".rounding"):
        return value.map(int)
    return value.map(str)


_FLOATS = {"sdc.p_percent", "sdc.nk_k", "sdc.max_suppressed_share"}
_BOUND = {limit.key for limit in LIMITS}


def _section(keys: list[str], prefix: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k.removeprefix(prefix): _number(k) for k in keys})


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    sdc = draw(_section(sorted(k for k in _BOUND if k.startswith("sdc.") and "tree." not in k), "sdc."))
    sdc["tree"] = draw(_section(sorted(k for k in _BOUND if k.startswith("sdc.tree.")), "sdc.tree."))
    doc: dict[str, Any] = {"kind": "release", "title": "t", "dataset": "d", "sdc": sdc}
    if draw(st.integers(0, 3)):
        doc["dp"] = {
            "epsilon_total": draw(_number("dp.epsilon_total")),
            "epsilon_per_release_max": draw(_number("dp.epsilon_per_release_max")),
            **draw(st.fixed_dictionaries({}, optional={"delta_total": _number("dp.delta_total")})),
        }
    if draw(st.integers(0, 3 if "dp" in doc else 0)) >= 2:
        doc["dp_model"] = {"max_epsilon": draw(_number("dp_model.max_epsilon"))}
    outputs = {}
    for kind in draw(st.lists(st.sampled_from(OUTPUT_KINDS), unique=True, max_size=5)):
        method = draw(st.sampled_from(["dp", "dp+sdc", "sdc"] if kind in DP_CAPABLE else ["sdc"]))
        rule: dict[str, Any] = {"method": method}
        if method != "sdc" or not draw(st.integers(0, 9)):  # now and then an epsilon where it does not belong
            rule["epsilon"] = draw(_number("outputs.*.epsilon"))
        if not draw(st.integers(0, 2 if kind in ROUNDED_KINDS else 9)):
            rule["rounding"] = draw(_number("outputs.*.rounding"))
        outputs[kind] = rule
    doc["outputs"] = outputs
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_any_policy_that_validates_has_every_number_within_its_floor_or_ceiling(doc):
    try:
        policy = ReleasePolicy.model_validate(doc)
    except ValidationError:
        return
    for limit, key, value in limit_values(policy):
        assert limit.holds(value), (key, value, limit)
    if policy.dp is not None:  # and the caps compose: no release can take more than the persons' total
        assert policy.dp.epsilon_per_release_max <= policy.dp.epsilon_total <= CEILING_EPSILON_TOTAL


# --- the CLI: check and sign refuse, explain and diff say it ---------------------------------------------------
def test_policy_check_refuses_a_dp_only_policy_with_a_huge_epsilon(tmp_path):
    path = write(tmp_path, HUGE_DP)
    res = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert res.exit_code == PolicyError.exit_code != 0
    for key in ("dp.epsilon_total", "dp.epsilon_per_release_max", "outputs.frequency_table.epsilon"):
        assert f"{path}: {key}: " in res.output and "1000000 is above the ceiling" in res.output, res.output


def test_policy_sign_refuses_a_dp_only_policy_with_a_huge_epsilon_and_writes_no_signature(tmp_path, monkeypatch):
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", "correct horse")
    runner = CliRunner()
    assert runner.invoke(app, ["policy", "keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    path = write(tmp_path, HUGE_DP)
    res = runner.invoke(app, ["policy", "sign", str(path), "--key", str(tmp_path / "k/officer.key")])
    assert res.exit_code != 0 and not signature_path(path).exists()
    assert "outputs.frequency_table.epsilon" in str(res.exception) + res.output
    assert "above the ceiling 1" in str(res.exception) + res.output


def test_explain_says_the_ceilings_and_whose_budget_it_is():
    _, policy = load_policy(REPO / "policies/release/dp-models.toml")
    text = "\n".join(explain_release_policy(policy))
    assert "Floors and ceilings" in text
    assert "dp.epsilon_total at most 10" in text and "this policy: 8" in text
    assert "dp_model.max_epsilon at most 2" in text and "outputs.*.epsilon at most 1" in text
    assert "sdc.max_suppressed_share at most 0.5" in text and "sdc.min_persons_per_cell at least 10" in text
    assert "budget belongs to those persons" in text and "whatever its name" in text


def test_diff_judges_the_new_keys(tmp_path):
    assert judge_change("outputs.frequency_table.epsilon", "1/10", "1/5") == "looser"
    assert judge_change("outputs.histogram.rounding", 1, 5) == "stricter"
    assert judge_change("dp.max_persons", 10_000_000, 1_000) == "looser"
    assert judge_change("sdc.tree.small_class_count", "refuse", "suppress_counts") == "looser"
    assert judge_change("requesters.allowed", ["analysis"], ["analysis", "intruder"]) == "looser"
    assert judge_change("requesters.allowed", ["analysis", "coordinator"], ["analysis"]) == "stricter"
    assert judge_change("outputs.mean_table.method", "sdc", "dp+sdc") == "stricter"
    assert judge_change("outputs.mean_table.method", "dp+sdc", "dp") == "looser"
    assert judge_change("outputs.mean_table.method", "sdc", "dp") == ""
    before = REPO / "policies/release/dp-sdc.toml"
    after = tmp_path / "after.toml"
    shutil.copy(before, after)
    after.write_text(after.read_text().replace('epsilon_total = "4"', 'epsilon_total = "10"'))
    res = CliRunner().invoke(app, ["policy", "diff", str(before), str(after)])
    assert res.exit_code == 0 and "dp.epsilon_total" in res.output and "looser" in res.output


def test_a_signed_policy_cannot_be_raised_past_a_ceiling_even_by_its_officer(tmp_path):
    sk, _ = crypto.generate_signing_key()
    path = write(tmp_path, HUGE_DP)
    from kansrijk.policy.signing import sign_policy

    with pytest.raises(PolicyError, match="above the ceiling"):
        sign_policy(path, sk)
    assert not signature_path(path).exists()
