"""Release policy files: the examples validate, nothing looser than sdc-rules.md passes, and explain/diff say
what changed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from kansrijk.errors import PolicyError
from kansrijk.policy.diff import diff_policy_files
from kansrijk.policy.release import ReleasePolicy, explain_release_policy, judge_change
from kansrijk.policy.signing import load_policy

REPO = Path(__file__).resolve().parents[2]
BASE = 'kind = "release"\ntitle = "t"\ndataset = "d"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["sdc-only", "dp-sdc", "dp-models"])
def test_example_policies_validate(name):
    kind, policy = load_policy(REPO / "policies" / "release" / f"{name}.toml")
    assert kind == "release" and isinstance(policy, ReleasePolicy)


def test_defaults_are_the_strictest_rows():
    p = ReleasePolicy.model_validate({"kind": "release", "title": "t", "dataset": "d"})
    s = p.sdc
    assert (s.min_persons_per_cell, s.p_percent, s.nk_n, s.nk_k, s.min_dof) == (10, 0.10, 2, 0.85, 10)
    assert (s.tree.min_samples_leaf_training, s.tree.min_leaf_persons, s.tree.min_class_count) == (5, 10, 10)
    assert s.zeros_are_disclosive and not s.allow_extremes and s.negative_values == "refuse"


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("[sdc]\nmin_persons_per_cell = 5\n", "sdc.min_persons_per_cell"),
        ("[sdc]\nnk_k = 0.9\n", "sdc.nk_k"),
        ("[sdc]\np_percent = 0.05\n", "sdc.p_percent"),
        ("[sdc]\nmin_dof = 3\n", "sdc.min_dof"),
        ("[sdc]\nzeros_are_disclosive = false\n", "sdc.zeros_are_disclosive"),
        ("[sdc]\nallow_extremes = true\n", "sdc.allow_extremes"),
        ("[sdc.tree]\nmin_leaf_persons = 4\n", "sdc.tree.min_leaf_persons"),
        ("[sdc]\nmin_person_per_cell = 10\n", "sdc.min_person_per_cell"),
        ('[dp]\nepsilon_total = 1.0\nepsilon_per_release_max = "0.5"\n', "dp.epsilon_total"),
    ],
    ids=["threshold", "nk", "p", "dof", "zeros", "extremes", "leaf", "typo", "float-epsilon"],
)
def test_a_policy_looser_than_the_floor_or_misspelt_is_rejected_naming_the_key(tmp_path, snippet, key):
    path = write(tmp_path, BASE + snippet)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert str(path) in str(exc.value) and key in str(exc.value)


def test_dp_method_needs_a_budget_and_a_dp_capable_kind(tmp_path):
    with pytest.raises(PolicyError, match="needs a \\[dp\\] section"):
        load_policy(write(tmp_path, BASE + '[outputs.frequency_table]\nmethod = "dp"\nepsilon = "0.1"\n'))
    dp = '[dp]\nepsilon_total = "1"\nepsilon_per_release_max = "0.5"\n'
    with pytest.raises(PolicyError, match="not available for tree_structure"):
        load_policy(write(tmp_path, BASE + dp + '[outputs.tree_structure]\nmethod = "dp"\nepsilon = "0.1"\n'))


def test_unknown_kind_is_named(tmp_path):
    with pytest.raises(PolicyError, match="unknown policy kind 'sharingg'"):
        load_policy(write(tmp_path, 'kind = "sharingg"\n'))


def test_explain_says_where_we_are_stricter_than_acro():
    _, policy = load_policy(REPO / "policies/release/dp-sdc.toml")
    text = "\n".join(explain_release_policy(policy))
    assert "instead of ACRO's 0.90" in text and "Differencing" in text and "epsilon 4" in text


def test_diff_is_semantic_and_judges_direction(tmp_path):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text(BASE)
    b.write_text(BASE + "[sdc]\nmin_persons_per_cell = 10\nnk_k = 0.8\n")  # 10 is the default: no change
    changes = diff_policy_files(a, b).changes
    assert [c.key for c in changes] == ["sdc.nk_k"]
    assert judge_change("sdc.nk_k", 0.85, 0.8) == "stricter"
    assert judge_change("dp.epsilon_total", "4", "8") == "looser"
    assert Fraction("1/10") == Fraction("1/10")
