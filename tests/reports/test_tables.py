"""brainmri.reports.tables: the report tables of evaluation blocks and the run comparison."""

from __future__ import annotations

import numpy as np
import pytest

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES
from brainmri.reports import tables

K = len(CLASS_NAMES)


def _block(seed: int, temperature: float | None = 1.7) -> dict:
    """The evaluation block of 150 cases of a mediocre classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=150)
    logits = rng.normal(size=(150, K)) * 3 + 2.5 * np.eye(K)[y]
    return ev.evaluate_split(
        y, ev.softmax(logits), logits, [f"img{i}.jpg" for i in range(150)],
        n_resamples=200, seed=0, n_bins=10, temperature=temperature,
    )  # fmt: skip


def test_report_tables_read_the_blocks():
    blocks = {"official": _block(12), "dedup": _block(13)}
    head = tables.headline_table(blocks)
    assert list(head.columns) == ["official", "dedup"]
    assert head.loc["accuracy", "dedup"] == blocks["dedup"]["summary"]["accuracy"]
    low, high = (
        blocks["official"]["ci"]["accuracy"]["low"],
        blocks["official"]["ci"]["accuracy"]["high"],
    )
    assert head.loc["accuracy 95% CI", "official"] == f"{low:.4f} to {high:.4f}"
    per_class = tables.per_class_table(blocks)
    assert list(per_class.index) == list(CLASS_NAMES)
    assert (
        per_class[("dedup", "recall")]["glioma"]
        == (blocks["dedup"]["summary"]["per_class"]["glioma"]["recall"])
    )
    cal = tables.calibration_table({"official": blocks["official"], "unscaled": _block(14, None)})
    assert cal.loc["ECE scaled", "official"] == blocks["official"]["calibration"]["scaled"]["ece"]
    assert cal["unscaled"].isna()["ECE scaled"] and not cal["unscaled"].isna()["ECE"]


def test_format_interval_shows_what_the_entry_holds():
    assert (
        tables.format_interval({"point": 0.9, "low": 0.85, "high": 0.95}) == "0.900 (0.850-0.950)"
    )
    assert tables.format_interval({"point": 0.9, "low": None, "high": None}, 4) == "0.9000"
    assert tables.format_interval({"point": None}) == "-" and tables.format_interval(None) == "-"


def test_paired_table_has_a_row_per_class_then_overall():
    # old: glioma 4/4, meningioma 2/4, notumor 2/2; new: 2/4, 4/4, 0/2; no pituitary images.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    probs = {
        name: np.where(np.eye(K)[pred] == 1, 0.7, 0.1)
        for name, pred in (
            ("old", [0, 0, 0, 0, 1, 1, 0, 3, 2, 2]),
            ("new", [0, 0, 1, 3, 1, 1, 1, 1, 0, 3]),
        )
    }
    out = ev.paired_comparison(y, probs["old"], probs["new"], names=("old", "new"))
    table = tables.paired_table(out)
    assert list(table.index) == [*CLASS_NAMES, "overall"]
    assert list(table.columns) == [
        "n",
        "accuracy old",
        "accuracy new",
        "only old right",
        "only new right",
        "McNemar p",
    ]
    assert table.loc["overall", "only old right"] == 4
    assert table.loc["meningioma", "only new right"] == 2
    assert table.loc["overall", "McNemar p"] == pytest.approx(44 / 64)
    assert table.loc["pituitary", "n"] == 0 and np.isnan(table.loc["pituitary", "McNemar p"])
    shown = tables.p_values_as_text(table.assign(**{"McNemar p": [3.6e-5, 0.5, 1.0, None, 0.6875]}))
    assert shown["McNemar p"].tolist() == ["< 0.0001", "0.5000", "1.0000", "", "0.6875"]


def test_compare_runs_shows_differences_and_missing_values():
    a = {"evaluate": {"official": _block(16)}}
    b = {"evaluate": {"official": _block(17), "dedup": _block(18)}}
    table = tables.compare_runs(a, b, "baseline", "tuned")
    acc_a = a["evaluate"]["official"]["summary"]["accuracy"]
    acc_b = b["evaluate"]["official"]["summary"]["accuracy"]
    official_acc = next(
        line for line in table.splitlines() if "official" in line and "accuracy" in line
    )
    assert f"{acc_a:.4f}" in official_acc and f"{acc_b:.4f}" in official_acc
    assert f"{acc_b - acc_a:+.4f}" in official_acc
    dedup_acc = next(line for line in table.splitlines() if "dedup" in line and "accuracy" in line)
    assert dedup_acc.split()[-3:] == [
        "-",
        f"{b['evaluate']['dedup']['summary']['accuracy']:.4f}",
        "-",
    ]
    assert "tuned - baseline" in table.splitlines()[0]
    for name in CLASS_NAMES:
        assert f"sensitivity {name}" in table
    assert "MCC" in table and "Cohen kappa" in table and "ECE" in table


def test_the_ood_table_has_a_row_per_kind_then_per_group():
    kind = {
        "group": "far", "n": 12, "flagged": 1.0, "auroc": 0.99, "gate": 0.5,
        "feature_auroc": 0.9, "energy_flagged": 0.5, "energy_auroc": 0.75,
    }  # fmt: skip
    guard = {
        "kinds": {"photograph": kind, "rotated 90°": {**kind, "group": "near", "flagged": 0.2}},
        "groups": {"far": {"n": 12, "flagged": 1.0, "auroc": 0.99},
                   "near": {"n": 12, "flagged": 0.2, "auroc": 0.7}},
    }  # fmt: skip
    table = tables.ood_table(guard)
    assert table.index.tolist() == ["photograph", "rotated 90°", "all far", "all near"]
    assert table.loc["rotated 90°", "flagged"] == 0.2 and table.loc["all far", "AUROC"] == 0.99
    assert table.loc["photograph", "gate"] == 0.5 and np.isnan(table.loc["all near", "gate"])
