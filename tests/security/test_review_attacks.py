"""The review route for refused outputs, attacked: an approval only ever releases the one refused output an officer
of this workspace approved, once, unchanged, never through the DP budget. Real keys, real signatures, a real
ledger; every refusal leaves the budget, released/ and the ledger's released names as they were."""

from __future__ import annotations

import base64
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy, write_dataset

from kansrijk import crypto
from kansrijk.errors import ApprovalInvalid, NotReviewable
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate
from kansrijk.gate.requests import RequestInvalid
from kansrijk.gate.review import (
    OFFICER_REVIEW,
    ApprovedRelease,
    apply_decision,
    get_review,
    request_review,
    sign_decision,
    verify_reviews,
)
from kansrijk.gate.specs import CountSpec, where

JUSTIFICATION = "district counts for the youth plan; small districts are shown together with the city"


def _frame(extra: int = 0) -> pl.DataFrame:
    """300 persons in one district (plus ``extra``) and 5 in each of 20 small ones."""
    wijk = ["WK059901"] * (300 + extra) + [f"WK0599{10 + i:02d}" for i in range(20) for _ in range(5)]
    rng = np.random.default_rng(11)
    return pl.DataFrame(
        {
            "wijk_code": wijk,
            "sex": rng.choice(["M", "F"], len(wijk)).tolist(),
            "age_years": rng.integers(0, 24, len(wijk)).tolist(),
        }
    )


@pytest.fixture
def site(tmp_path: Path) -> dict:
    ws = gate_workspace(tmp_path, _frame())
    policy, officer_pub, officer_sk = signed_policy(tmp_path, "sdc-only")
    with Gate.open(ws, policy, [officer_pub]) as gate:
        refused = gate.release(CountSpec(name="by_wijk", years=(2023,), by=("wijk_code",)), requested_by="analysis")
    assert refused.outcome == "refused" and any("max_suppressed_share" in r for r in refused.reasons)
    return {"ws": ws, "policy": policy, "pub": officer_pub, "sk": officer_sk, "entry": refused.entry_id,
            "tmp": tmp_path}  # fmt: skip


def _released(ws: Path) -> set[str]:
    return {p.name for p in (ws / "released").iterdir()}


def _request(site: dict, entry: str | None = None) -> str:
    with Gate.open(site["ws"], site["policy"], [site["pub"]]) as gate:
        return request_review(gate, entry or site["entry"], justification=JUSTIFICATION).review_id


def _apply(site: dict, decision: Path, keys: list[Path] | None = None):
    with Gate.open(site["ws"], site["policy"], [site["pub"]]) as gate:
        return apply_decision(gate, decision, keys or [site["pub"]])


def test_an_approved_review_releases_the_refused_output_with_the_approval_in_the_ledger(site, tally) -> None:
    review_id = _request(site)
    review = get_review(site["ws"], review_id)
    assert [v["rule"] for v in review.refused] == ["max_suppressed_share"]
    assert review.released_form["columns"][0] == "wijk_code"  # the officer sees the numbers it would release
    decision = site["tmp"] / "approve.json"
    sign_decision(site["ws"], review_id, site["sk"], approve=True, note="suppressed cells stay withheld", out=decision)
    applied = _apply(site, decision)
    assert applied.result is not None and applied.result.outcome == "suppressed"  # small cells stay withheld
    document = json.loads((site["ws"] / "released" / "by_wijk.json").read_text())
    approval = [v for v in document["verdicts"] if v["rule"] == OFFICER_REVIEW]
    assert len(approval) == 1 and f"review {review_id} approved by privacy officer" in approval[0]["reason"]
    assert document["epsilon_spent"] == "0" and not document["noisy"]
    assert verify_ledger(site["ws"]).entries == 2 and verify_reviews(site["ws"]) == 1
    tally.attack("approved review released once, approval in the ledger", True)


def test_a_replayed_approval_is_refused(site, tally) -> None:
    review_id = _request(site)
    decision = site["tmp"] / "approve.json"
    sign_decision(site["ws"], review_id, site["sk"], approve=True, note="", out=decision)
    _apply(site, decision)
    before = _released(site["ws"])
    with pytest.raises(ApprovalInvalid, match="released already; a decision is used once"):
        _apply(site, decision)
    assert _released(site["ws"]) == before and verify_ledger(site["ws"]).entries == 2
    tally.attack("approval applied a second time", True)


def test_an_approval_for_another_request_is_refused(site, tally) -> None:
    first = _request(site)
    with Gate.open(site["ws"], site["policy"], [site["pub"]]) as gate:
        other = gate.release(CountSpec(name="by_wijk_sex", years=(2023,), by=("wijk_code", "sex")),
                             requested_by="analysis")  # fmt: skip
    second = _request(site, other.entry_id)
    decision = site["tmp"] / "approve.json"
    sign_decision(site["ws"], first, site["sk"], approve=True, note="", out=decision)
    # the officer's valid approval of the first request, re-labelled (and re-signed by the officer) for the second
    doc = json.loads(decision.read_text())
    doc["review"] = second
    forged = site["tmp"] / "forged.json"
    from kansrijk.gate.review import read_decision

    body = read_decision(decision)
    import dataclasses

    relabelled = dataclasses.replace(body, review_id=second)
    doc["signature"] = base64.b64encode(crypto.sign(site["sk"], relabelled.signed_message())).decode()
    forged.write_text(json.dumps(doc))
    before = _released(site["ws"])
    with pytest.raises(ApprovalInvalid, match="decides on another request"):
        _apply(site, forged)
    assert _released(site["ws"]) == before and get_review(site["ws"], second).status == "requested"
    tally.attack("approval of one request used for another", True)


def test_an_altered_or_untrusted_decision_is_refused(site, tally) -> None:
    review_id = _request(site)
    rejection = site["tmp"] / "reject.json"
    sign_decision(site["ws"], review_id, site["sk"], approve=False, note="cells of five persons", out=rejection)
    flipped = site["tmp"] / "flipped.json"
    flipped.write_text(rejection.read_text().replace('"rejected"', '"approved"'))
    with pytest.raises(ApprovalInvalid, match="signature does not verify"):
        _apply(site, flipped)
    intruder_sk, intruder_pk = crypto.generate_signing_key()
    intruder_pub = site["tmp"] / "intruder.pub"
    crypto.write_public_key(intruder_pub, "ed25519-signing", intruder_pk, label="intruder")
    own = site["tmp"] / "own.json"
    sign_decision(site["ws"], review_id, intruder_sk, approve=True, note="", out=own)
    with pytest.raises(ApprovalInvalid, match="not a trusted privacy-officer key"):
        _apply(site, own)
    assert "by_wijk.json" not in _released(site["ws"])
    applied = _apply(site, rejection)  # the real decision is still good, and rejects
    assert applied.result is None and applied.review.status == "rejected" and "by_wijk.json" not in _released(
        site["ws"])  # fmt: skip
    assert verify_reviews(site["ws"]) == 1
    tally.attack("altered decision; decision of an untrusted key", True, count=2)


def test_an_approval_from_another_workspace_is_refused(site, tmp_path, tally) -> None:
    other_ws = gate_workspace(tmp_path / "other", _frame())
    policy, pub, _ = signed_policy(tmp_path / "other", "sdc-only")
    with Gate.open(other_ws, policy, [pub]) as gate:
        entry = gate.release(CountSpec(name="by_wijk", years=(2023,), by=("wijk_code",)), requested_by="analysis")
        request_review(gate, entry.entry_id, justification=JUSTIFICATION)  # its own R000001
    own_id = _request(site)
    assert own_id == "R000001"
    elsewhere = tmp_path / "elsewhere.json"
    sign_decision(other_ws, "R000001", site["sk"], approve=True, note="", out=elsewhere)  # same officer key
    with pytest.raises(ApprovalInvalid, match="decides on another request"):
        _apply(site, elsewhere)
    tally.attack("approval made in another workspace", True)


def test_an_output_that_changed_since_the_review_is_not_released(site, tally) -> None:
    review_id = _request(site)
    decision = site["tmp"] / "approve.json"
    sign_decision(site["ws"], review_id, site["sk"], approve=True, note="", out=decision)
    write_dataset(site["ws"], _frame(extra=1))  # one more person in the large district: another released count
    with pytest.raises(NotReviewable, match="no longer what the officer approved"):
        _apply(site, decision)
    assert "by_wijk.json" not in _released(site["ws"]) and get_review(site["ws"], review_id).status == "requested"
    tally.attack("data changed between approval and release", True)


def test_a_differencing_refusal_is_not_reviewable(site, tally) -> None:
    with Gate.open(site["ws"], site["policy"], [site["pub"]]) as gate:
        assert gate.release(CountSpec(name="by_sex", years=(2023,), by=("sex",)), requested_by="analysis").outcome == (
            "released")  # fmt: skip
        but_one_district = (where("wijk_code", "!=", "WK059910"),)
        near = gate.release(
            CountSpec(name="by_sex_near", years=(2023,), by=("sex",), population=but_one_district),
            requested_by="analysis",
        )
        assert near.outcome == "refused" and any(r.startswith("differencing") for r in near.reasons)
        with pytest.raises(NotReviewable, match="refused by differencing, which a review never lifts"):
            request_review(gate, near.entry_id, justification=JUSTIFICATION)
    tally.attack("review of a differencing refusal", True)


def test_a_dp_budget_refusal_is_never_reviewed_or_released(tmp_path, tally) -> None:
    text = (Path(__file__).resolve().parents[2] / "policies/release/dp-sdc.toml").read_text()
    text = text.replace('epsilon_total = "4"', 'epsilon_total = "0.3"').replace(
        'epsilon_per_release_max = "0.5"', 'epsilon_per_release_max = "0.2"'
    )  # room for three count tables at 0.1
    ws = gate_workspace(tmp_path, _frame())
    policy, pub, _ = signed_policy(tmp_path, "dp-sdc", text=text)
    with Gate.open(ws, policy, [pub]) as gate:
        for i in range(3):
            gate.release(CountSpec(name=f"t{i}", years=(2023,), by=("sex",), population=(where("age_years", ">=", i),)),
                         requested_by="analysis")  # fmt: skip
        spent = gate.budget()
        refused = gate.release(CountSpec(name="second", years=(2023,), by=("age_years",)), requested_by="analysis")
        assert refused.outcome == "refused" and any(r.startswith("dp_budget") for r in refused.reasons)
        with pytest.raises(NotReviewable, match="refused by dp_budget, which a review never lifts"):
            request_review(gate, refused.entry_id, justification=JUSTIFICATION)
        # even a hand-made approval handed straight to the gate's hook is refused, and spends nothing
        forged = ApprovedRelease("R999999", CountSpec(name="second", years=(2023,), by=("age_years",)), "analysis",
                                 (), {"columns": [], "rows": []}, None)  # fmt: skip
        with pytest.raises(RequestInvalid, match="never releases a DP output"):
            gate.release_reviewed(forged)
        assert gate.budget() == spent and spent is not None and spent.epsilon_spent == Fraction(3, 10)
    assert not (ws / "released" / "second.json").exists()
    tally.attack("review of a DP budget refusal; forged approval to the gate", True, count=2)


def test_a_request_edited_in_the_database_cannot_show_the_officer_other_numbers(site, tally) -> None:
    import sqlite3

    from kansrijk.gate.ledger import LedgerCorrupted

    review_id = _request(site)
    conn = sqlite3.connect(site["ws"] / "ledger.sqlite")
    form = json.loads(conn.execute("SELECT released_form FROM reviews").fetchone()[0])
    form["rows"] = form["rows"][:1]  # a harmless-looking table for the officer to approve
    conn.execute("UPDATE reviews SET released_form = ?", (json.dumps(form),))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupted, match="numbers were edited"):
        get_review(site["ws"], review_id)
    with pytest.raises(LedgerCorrupted):
        sign_decision(site["ws"], review_id, site["sk"], approve=True, note="", out=site["tmp"] / "d.json")
    assert not (site["tmp"] / "d.json").exists()
    tally.attack("review request edited before the officer reads it", True)
