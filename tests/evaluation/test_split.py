"""brainmri.evaluation.split: the evaluation block of one split, checked before it is returned."""

from __future__ import annotations

import json

import jsonschema
import pytest

from brainmri import evaluation as ev
from brainmri.evaluation import split


def test_evaluate_split_refuses_to_return_an_off_schema_block(monkeypatch, make_block):
    """The block is validated at run time, before any caller writes it to metrics.json."""
    monkeypatch.setattr(split, "_jsonable", lambda block: {**block, "summary": {"n": -1}})
    with pytest.raises(ValueError, match="does not match METRICS_SCHEMA"):
        make_block(12)


def test_evaluate_split_validates_and_serialises(make_block):
    jsonschema.Draft202012Validator.check_schema(ev.METRICS_SCHEMA)
    for block in (
        make_block(12),
        make_block(13, temperature=None),
        make_block(14, missing_class=True),
    ):
        ev.validate_metrics_block(block)
        assert json.loads(json.dumps(block, allow_nan=False)) == block
    full = make_block(12)
    assert full["calibration"]["temperature"] == 1.7
    assert set(full["calibration"]["scaled"]) == {"ece", "brier", "nll", "reliability"}
    assert full["calibration"]["scaled"]["nll"] != full["calibration"]["nll"]
    assert make_block(13, temperature=None)["calibration"]["scaled"] is None
    assert make_block(14, missing_class=True)["summary"]["per_class"]["notumor"]["roc_auc"] is None
    wrong = [m["confidence"] for m in full["misclassified"]]
    n_wrong = full["summary"]["n"] - round(full["summary"]["accuracy"] * full["summary"]["n"])
    assert len(wrong) == n_wrong and wrong == sorted(wrong, reverse=True)
