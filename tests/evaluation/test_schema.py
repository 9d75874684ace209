"""brainmri.evaluation.schema: METRICS_SCHEMA and the errors of validate_metrics_block."""

from __future__ import annotations

import copy
import json
import re

import pytest

from brainmri import evaluation as ev


def test_corrupted_block_fails_with_path(make_block):
    block = make_block(15)
    bad = copy.deepcopy(block)
    bad["summary"]["per_class"]["glioma"]["recall"] = "high"
    with pytest.raises(ValueError, match=re.escape("/summary/per_class/glioma/recall")):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    del bad["calibration"]["ece"]
    with pytest.raises(ValueError, match=r"at /calibration: 'ece' is a required property"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["low"] = float("nan")  # undefined values must be null, not NaN
    with pytest.raises(ValueError, match="at /ci/accuracy/low: non-finite number nan"):
        ev.validate_metrics_block(bad)


def test_interval_schema_accepts_new_keys_and_old_blocks(tiny_class_case, evaluate):
    y, p = tiny_class_case()
    block = evaluate(y, p)
    ev.validate_metrics_block(block)
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    # A block written before the method and counts existed still validates.
    old = copy.deepcopy(block)
    old["ci"] = {
        key: {k: entry[k] for k in ("point", "low", "high")} for key, entry in old["ci"].items()
    }
    ev.validate_metrics_block(old)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["method"] = "wald"
    with pytest.raises(ValueError, match="at /ci/accuracy/method: 'wald' is not one of"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["n"] = -1
    with pytest.raises(ValueError, match="at /ci/accuracy/n"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["width"] = 0.1  # still closed to unknown keys
    with pytest.raises(ValueError, match="at /ci/accuracy"):
        ev.validate_metrics_block(bad)


def test_the_ood_record_schema_takes_old_records_and_the_guard():
    energy = {"score": "energy", "keep": 0.95, "threshold": 1.78, "flagged": {"validation": 0.05}}
    ev.validate_ood_record(energy)  # a run before the guard
    kind = {
        "group": "far", "n": 12, "flagged": 1.0, "auroc": 0.99, "gate": 1.0,
        "feature_auroc": 0.9, "energy_flagged": 1.0, "energy_auroc": 0.75,
    }  # fmt: skip
    guard = {
        "method": "knn", "k": 10, "threshold": 0.3, "keep": 0.95,
        "gate": {"low": {"contrast": 22.7}, "high": {"colour": 3.7}, "quantile": 0.001,
                 "n_images": 4798},
        "validation": {"n": 562, "kept": 0.95, "refused_by_gate": 0.0},
        "kinds": {"photograph": kind},
        "groups": {"far": {"n": 12, "flagged": 1.0, "auroc": 0.99},
                   "near": {"n": 0, "flagged": None, "auroc": None}},
        "headline_test": {"n": 1404, "flagged": 0.06},
        "file": {"name": "ood.npz", "sha256": "0" * 64},
    }  # fmt: skip
    ev.validate_ood_record({**energy, "guard": guard})
    bad = copy.deepcopy(guard)
    bad["kinds"]["photograph"]["group"] = "outer space"
    with pytest.raises(ValueError, match=re.escape("at /guard/kinds/photograph/group")):
        ev.validate_ood_record({**energy, "guard": bad})
    bad = copy.deepcopy(guard)
    bad["kinds"]["photograph"]["auroc"] = float("nan")
    with pytest.raises(ValueError, match="ood record does not match OOD_SCHEMA"):
        ev.validate_ood_record({**energy, "guard": bad})
