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
